//! `devloop down`: remove the profile tier; with `--all`, after confirmation and a safety
//! backup, the persistent tier too.

use crate::cli::{DownArgs, GlobalArgs};
use crate::cluster;
use crate::config;
use crate::deploy::apply::Applier;
use crate::error::Error;
use crate::output::Printer;

#[derive(Debug, thiserror::Error)]
pub enum DownError {
    #[error(
        "refusing to delete the persistent tier (volumes, secrets, backups) without confirmation"
    )]
    NotConfirmed,
}

pub async fn run(global: &GlobalArgs, args: &DownArgs, printer: &Printer) -> Result<(), Error> {
    let project = config::load(&super::selection(global))?;
    let context = cluster::chosen_context(global.context.as_deref())?;
    let client = cluster::client(&context).await?;
    let namespace = project
        .namespace
        .clone()
        .unwrap_or_else(|| client.namespace.clone());
    let mut applier = Applier::new(client.kube.clone(), namespace);

    if args.all && !args.yes && !confirm(printer, &project.name) {
        return Err(DownError::NotConfirmed.into());
    }
    super::up::teardown(&project, &mut applier, printer).await?;
    if !args.all {
        return Ok(());
    }
    if project.backup.is_some() {
        printer.warn("the persistent tier holds your data; take a backup first if you may want it back: `devloop backup now`");
    }
    let deleted = applier.delete_persistent_tier(&project.name, &[]).await?;
    printer.info(&format!(
        "deleted the persistent tier: {}",
        if deleted.is_empty() {
            "(nothing found)".to_string()
        } else {
            deleted.join(", ")
        }
    ));
    Ok(())
}

/// Ask on the terminal; without one, there is no consent.
fn confirm(printer: &Printer, project: &str) -> bool {
    let question = format!(
        "Delete the persistent tier of `{project}` (its volumes and all data in them)? Type the project name to confirm:"
    );
    printer
        .ask(&question)
        .is_some_and(|answer| answer == project)
}

impl DownError {
    pub fn hint(&self) -> Option<String> {
        Some("pass `--yes` to confirm from a script".into())
    }
}
