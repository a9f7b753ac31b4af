//! devloop: local Kubernetes development — build images, load them into a local cluster,
//! deploy a profile, forward ports and watch the source.
//!
//! The binary is a thin wrapper around [`run`]; everything lives in this library so tests can
//! drive it. Module map: `cli` (flags) → `commands` (one per subcommand) → `config` (the project
//! model), `deploy` (manifests to objects; apply, prune, rollout), `build` (contexts, tags, Docker
//! builds), `cluster` (which cluster; loading images into it), `forward` (local ports to pods),
//! `logs` (pod logs), `watch` (file changes → change sets), `sync` (files into running
//! containers), `backup` (backup Jobs), `engine` (Docker), `session` (cancellation), `outage`
//! (waiting for Docker or the API server to return); `output` prints, `error` maps failures to
//! exit codes.

pub mod backup;
pub mod build;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod defaults;
pub mod deploy;
pub mod diagnostic;
pub mod engine;
pub mod error;
pub mod forward;
pub mod logs;
pub mod outage;
pub mod output;
pub mod session;
pub mod sync;
pub mod tarstream;
pub mod watch;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use error::{Error, ExitStatus};
use output::Printer;

/// Parse `args` and run the command; the exit code says how it went.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = err.print();
            return if err.use_stderr() {
                ExitStatus::Usage.into()
            } else {
                ExitStatus::Success.into()
            };
        }
    };
    let printer = Printer::new(cli.global.quiet, cli.global.verbose, cli.global.color);
    init_tracing(cli.global.verbose);

    match dispatch(&cli, &printer) {
        Ok(()) => ExitStatus::Success.into(),
        Err(err) => {
            let hint = err.hint();
            printer.error(&err.message(), &err.causes(), hint.as_deref());
            err.exit_status().into()
        }
    }
}

fn dispatch(cli: &Cli, printer: &Printer) -> Result<(), Error> {
    let global = &cli.global;
    match &cli.command {
        Command::Render(args) => commands::render::run(global, args, printer),
        Command::Init(args) => commands::init::run(global, args, printer),
        Command::Completions(args) => {
            commands::completions(args, printer);
            Ok(())
        }
        Command::Doctor(args) => block_on(commands::doctor::run(global, args, printer)),
        Command::Build(args) => block_on(commands::build::run(global, args, printer)),
        Command::Up(args) => block_on(commands::up::run(global, args, printer)),
        Command::Down(args) => block_on(commands::down::run(global, args, printer)),
        Command::Status(args) => block_on(commands::status::run(global, args, printer)),
        Command::Backup(command) => block_on(commands::backup::run(global, command, printer)),
    }
}

/// Run a command to its end on a runtime of its own.
fn block_on<T>(command: impl std::future::Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the OS can start a tokio runtime");
    let result = runtime.block_on(command);
    // The command has joined what it runs. What is left is a blocking read of the terminal that
    // Ctrl+C abandoned (a prompt): waiting for it would wait for an Enter nobody will press.
    runtime.shutdown_background();
    result
}

/// `-v` is for the user's story; `-vv` (or `RUST_LOG`) turns on diagnostics.
fn init_tracing(verbose: u8) {
    // Libraries' own logs (kube's retries, hyper's connection errors) are diagnostics: the user
    // hears about failures from devloop's messages, so they stay off unless asked for.
    let default = match verbose {
        0 | 1 => "off",
        2 => "devloop=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
