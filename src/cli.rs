//! The command line: flags and subcommands as clap types, and nothing else.
//!
//! Parsing yields [`Cli`]; `commands` turns it into work. Global flags apply to every command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "devloop",
    version,
    about = "Local Kubernetes development: build, load, deploy, forward, watch",
    long_about = "devloop builds your images, loads them into a local kind or minikube cluster, \
applies the persistent tier once, deploys a profile, forwards ports and watches the source.\n\n\
A project is a directory with a devloop.yaml; profiles live in profiles/<name>.yaml.",
    after_help = "Docs: docs/configuration.md in the devloop repository. Exit codes: 0 ok, 1 failed, \
2 usage, 3 invalid input, 4 environment (Docker or cluster) unavailable, 130 interrupted (Ctrl+C \
during a backup, or a second Ctrl+C)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Run as if started in DIR (the project is found there or above)
    #[arg(short = 'C', long = "dir", global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Profile to use: profiles/NAME.yaml [default: dev]
    #[arg(
        short,
        long,
        global = true,
        env = "DEVLOOP_PROFILE",
        value_name = "NAME"
    )]
    pub profile: Option<String>,

    /// Kube context to use [default: the current context]
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,

    /// Namespace for objects that name none (overrides devloop.yaml and the profile)
    #[arg(short, long, global = true, value_name = "NAME")]
    pub namespace: Option<String>,

    /// More detail (-vv for debug logs)
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors and requested output
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// When to colour output
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true, value_name = "WHEN")]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build, load, apply the persistent tier once, deploy the profile, forward ports; Ctrl+C removes the profile
    Up(UpArgs),
    /// Remove the profile tier (`--all`: the persistent tier too, after confirmation)
    Down(DownArgs),
    /// What is deployed per tier and profile, pod health, forwards, last backup
    Status(StatusArgs),
    /// Back up the project's database now, list the backups, or restore one
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Build the profile's images (only what changed) and load them into the local cluster
    Build(BuildArgs),
    /// Print the fully resolved manifests of a profile, in apply order
    Render(RenderArgs),
    /// Create devloop.yaml, manifests and profiles for a project here
    Init(InitArgs),
    /// Check Docker, the kube context and local ports, and say how to fix what is missing
    Doctor(DoctorArgs),
    /// Print a shell completion script
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Deploy, wait for the rollout and exit with its status (for CI)
    #[arg(long)]
    pub once: bool,

    /// On Ctrl+C, leave the profile running instead of removing it
    #[arg(long)]
    pub keep: bool,

    /// Apply the persistent tier's files even where the cluster differs (never deletes)
    #[arg(long)]
    pub reapply_infra: bool,

    /// Seconds to wait for the rollout before failing
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,

    /// Build even when an image with the same inputs exists
    #[arg(long)]
    pub force: bool,

    /// When a forward's local port is taken, use the next free one (and say so) instead of failing
    #[arg(long)]
    pub port_fallback: bool,

    /// Do not stream the pods' logs
    #[arg(long)]
    pub no_logs: bool,

    /// Deploy once and keep forwards and logs running, without watching the source
    #[arg(long)]
    pub no_watch: bool,

    /// Watch by polling the tree instead of OS notifications (network filesystems, exhausted
    /// inotify watches)
    #[arg(long)]
    pub poll: bool,

    /// Quiet period after a change before acting on it
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub debounce_ms: u64,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also delete the persistent tier (volumes, secrets, the backup CronJob) — after confirmation
    #[arg(long)]
    pub all: bool,

    /// Confirm `--all` without asking
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build only; do not load the images into the cluster
    #[arg(long)]
    pub no_load: bool,

    /// Build even when an image with the same inputs exists (the engine's layer cache still applies)
    #[arg(long)]
    pub force: bool,

    /// Print what was built and loaded as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Print Secret values instead of masking them
    #[arg(long)]
    pub show_secrets: bool,

    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,

    /// Which tier to print
    #[arg(long, value_enum, default_value_t = TierChoice::All)]
    pub tier: TierChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Yaml,
    /// A JSON list of objects
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TierChoice {
    All,
    /// The persistent tier (manifests.infra and secrets)
    Infra,
    /// The profile tier (manifests.app and the profile's manifests)
    App,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Project name [default: the directory's name]
    #[arg(long)]
    pub name: Option<String>,

    /// Name of the app image devloop builds [default: the project name]
    #[arg(long)]
    pub image: Option<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the checks as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Run the backup CronJob (devloop.yaml `backup.cronJob`) now, wait, report the file
    Now(BackupNowArgs),
    /// List the backups on the backup volume, newest first
    List(BackupListArgs),
    /// Restore a backup (after a safety backup of the current data)
    ///
    /// Runs the restore Job (devloop.yaml `backup.restoreJob`) with BACKUP_FILE set to the chosen
    /// backup, after taking a safety backup as `backup now` does. `latest` is the newest backup
    /// before the safety backup. Asks for confirmation on a terminal; elsewhere needs `--yes`.
    Restore(BackupRestoreArgs),
}

#[derive(Debug, Args)]
pub struct BackupNowArgs {
    /// Print the Job and the file it wrote as JSON on stdout
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for the backup Job before giving up (it keeps running)
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct BackupListArgs {
    /// Print the backups as JSON on stdout
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for the pod that reads the backup volume
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct BackupRestoreArgs {
    /// `latest` or a file name from `devloop backup list`
    #[arg(default_value = "latest", value_name = "latest|NAME")]
    pub backup: String,

    /// Restore without asking (required when stdin is not a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Print what was restored and the safety backup as JSON on stdout
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for each Job (safety backup, restore) before giving up
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub timeout: u64,
}
