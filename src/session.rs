//! One cancellation tree per command run.
//!
//! Long-running parts (`up`'s forwards, log streams, watchers) take a child of the session's
//! [`CancellationToken`] and stop when it is cancelled. The first Ctrl+C (or SIGTERM) cancels the
//! tree so the command can tear down in order; a second one exits the process at once.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ExitStatus;
use crate::output::Printer;

/// Exit code after a second Ctrl+C: 128 + SIGINT, as shells report it.
pub const INTERRUPTED: i32 = ExitStatus::Interrupted as i32;

#[derive(Clone, Default)]
pub struct Session {
    pub cancel: CancellationToken,
    pub tasks: TaskTracker,
}

impl Session {
    pub fn new() -> Self {
        Self::default()
    }

    /// Install the Ctrl+C/SIGTERM handling described in the module docs.
    pub fn handle_signals(&self, printer: Printer) {
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            printer.info("stopping (Ctrl+C again to exit at once)…");
            cancel.cancel();
            wait_for_signal().await;
            printer.warn("exiting at once; what was being removed may be left behind");
            std::process::exit(INTERRUPTED);
        });
    }

    /// Wait for every tracked task to finish.
    pub async fn join(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
