//! `devloop backup now|list|restore`: back up the project's database through its backup
//! CronJob, list what is on the backup volume, and restore a backup after taking a safety backup.
//!
//! The work is in `crate::backup`; this turns flags into it, asks for confirmation and prints.

use std::io::IsTerminal;
use std::time::Duration;

use serde::Serialize;

use crate::backup::{self, BackupError, BackupReport, Backups, Choice, RestoreReport, files};
use crate::cli::{BackupCommand, BackupListArgs, BackupNowArgs, BackupRestoreArgs, GlobalArgs};
use crate::cluster;
use crate::config::{self, Project};
use crate::error::Error;
use crate::output::Printer;
use crate::session::Session;
use tokio_util::sync::CancellationToken;

pub async fn run(
    global: &GlobalArgs,
    command: &BackupCommand,
    printer: &Printer,
) -> Result<(), Error> {
    let project = config::load(&super::selection(global))?;
    // Said before anything touches the cluster: without `backup:` there is nothing to do.
    backup::settings(&project)?;
    let session = Session::new();
    session.handle_signals(*printer);
    match command {
        BackupCommand::Now(args) => now(global, &project, args, printer, &session).await,
        BackupCommand::List(args) => list(global, &project, args, printer, &session).await,
        BackupCommand::Restore(args) => restore(global, &project, args, printer, &session).await,
    }
}

async fn connect<'p>(
    global: &GlobalArgs,
    project: &'p Project,
    timeout: u64,
) -> Result<Backups<'p>, Error> {
    let context = cluster::chosen_context(global.context.as_deref())?;
    let client = cluster::client(&context).await?;
    Ok(Backups::new(project, client, Duration::from_secs(timeout))?)
}

async fn now(
    global: &GlobalArgs,
    project: &Project,
    args: &BackupNowArgs,
    printer: &Printer,
    session: &Session,
) -> Result<(), Error> {
    let backups = connect(global, project, args.timeout).await?;
    let applied = backups.applied().await?;
    let report = backups.now(&applied, printer, &session.cancel).await?;
    if args.json {
        print_json(printer, &report);
    }
    Ok(())
}

async fn list(
    global: &GlobalArgs,
    project: &Project,
    args: &BackupListArgs,
    printer: &Printer,
    session: &Session,
) -> Result<(), Error> {
    let backups = connect(global, project, args.timeout).await?;
    let applied = backups.applied().await?;
    let listing = backups.list(&applied, printer, &session.cancel).await?;
    if args.json {
        print_json(printer, &listing);
    } else if listing.backups.is_empty() {
        printer.info(&format!(
            "no backups in {} on PVC `{}` in namespace `{}`; take one with `devloop backup now`",
            listing.dir, listing.claim, listing.namespace
        ));
    } else {
        printer.data(&files::table(&listing.backups, unix_now()));
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct RestoreOutput {
    restored: RestoreReport,
    safety_backup: BackupReport,
}

async fn restore(
    global: &GlobalArgs,
    project: &Project,
    args: &BackupRestoreArgs,
    printer: &Printer,
    session: &Session,
) -> Result<(), Error> {
    let settings = backup::settings(project)?;
    if settings.restore_job.is_none() {
        return Err(BackupError::NoRestoreJob {
            file: config::shown(&project.file),
        }
        .into());
    }
    // Refuse before touching the cluster: a script must not hang on a question nobody sees.
    let interactive = std::io::stdin().is_terminal();
    if !args.yes && !interactive {
        return Err(BackupError::NotConfirmed.into());
    }
    let backups = connect(global, project, args.timeout).await?;
    // A broken template is reported before the safety backup and the question.
    let template = backups.restore_template()?;
    let applied = backups.applied().await?;
    let listing = backups.list(&applied, printer, &session.cancel).await?;
    // `latest` is resolved now, before the safety backup becomes the newest file.
    let chosen = backups
        .choose(&listing, &Choice::parse(Some(&args.backup)))?
        .clone();
    let described = format!(
        "{} ({}, {}, {})",
        chosen.name,
        files::human_size(chosen.size),
        files::human_time(chosen.modified_unix),
        files::age(chosen.modified_unix, unix_now())
    );
    if !args.yes {
        let question = format!(
            "Restore {described} into namespace `{}`? This replaces the current data (a safety backup is taken first).",
            backups.namespace()
        );
        match ask(printer, &question, &session.cancel).await {
            Some(true) => {}
            Some(false) => return Err(BackupError::Declined.into()),
            None => {
                return Err(BackupError::InterruptedBeforeStart {
                    what: "restore",
                    namespace: backups.namespace().to_string(),
                }
                .into());
            }
        }
    }
    printer.info(&format!(
        "restore: {described}; first a safety backup of the current data"
    ));
    let safety = backups.now(&applied, printer, &session.cancel).await?;
    let restored = backups
        .restore(&applied, &template, &chosen, printer, &session.cancel)
        .await?;
    if let Some(file) = &safety.file {
        printer.info(&format!(
            "restore: the data before the restore is in {}: `devloop backup restore {}` brings it back",
            file.name, file.name
        ));
    }
    if args.json {
        print_json(
            printer,
            &RestoreOutput {
                restored,
                safety_backup: safety,
            },
        );
    }
    Ok(())
}

/// Ask a yes/no question on the terminal; anything but `y`/`yes` is no, and Ctrl+C while it
/// waits is `None`. The question is shown even with `--quiet`: a prompt nobody sees would hang.
async fn ask(printer: &Printer, question: &str, cancel: &CancellationToken) -> Option<bool> {
    let (printer, question) = (*printer, format!("{question} [y/N]"));
    // The read blocks its thread until Enter; the process does not wait for it on the way out.
    let answer = tokio::task::spawn_blocking(move || printer.ask(&question));
    tokio::select! {
        // Ctrl+C first: pressed during the question, it is the answer.
        biased;
        () = cancel.cancelled() => None,
        answer = answer => Some(
            answer
                .ok()
                .flatten()
                .is_some_and(|a| matches!(a.to_ascii_lowercase().as_str(), "y" | "yes")),
        ),
    }
}

fn print_json(printer: &Printer, value: &impl Serialize) {
    printer.data(&(serde_json::to_string_pretty(value).expect("reports serialize") + "\n"));
}

fn unix_now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}
