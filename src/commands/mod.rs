//! One module per subcommand; each turns parsed flags into work and reports through the printer.

pub mod backup;
pub mod build;
pub mod doctor;
pub mod down;
pub mod init;
pub mod render;
pub mod status;
pub mod up;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, GlobalArgs};
use crate::config::Selection;
use crate::output::Printer;

/// What the global flags select.
pub fn selection(global: &GlobalArgs) -> Selection {
    Selection {
        dir: global.dir.clone(),
        profile: global.profile.clone(),
        namespace: global.namespace.clone(),
    }
}

pub fn completions(args: &CompletionsArgs, printer: &Printer) {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "devloop", &mut out);
    printer.data(&String::from_utf8_lossy(&out));
}
