//! The top-level error and the process exit status.
//!
//! Each module has its own error type naming the failed operation; this enum gathers them so
//! `run` can print one cause chain and hint, and pick an exit code a script can rely on.

use std::process::ExitCode;

use crate::build::ContextError;
use crate::config::ConfigError;
use crate::diagnostic::Diagnostic;

/// Exit codes are part of the CLI contract (documented in `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Success = 0,
    /// The command ran and failed (e.g. a doctor check failed).
    Failure = 1,
    /// Bad flags or arguments (clap's own code).
    Usage = 2,
    /// A project file or manifest is invalid.
    InvalidInput = 3,
    /// Docker or the cluster is not available.
    Environment = 4,
    /// Stopped by Ctrl+C (SIGINT) before it finished: 128 + SIGINT, as shells report it.
    Interrupted = 130,
}

impl From<ExitStatus> for ExitCode {
    fn from(status: ExitStatus) -> Self {
        ExitCode::from(status as u8)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}", .0.headline())]
    Input(Box<Diagnostic>),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Init(#[from] crate::commands::init::InitError),
    #[error(transparent)]
    Engine(Box<crate::engine::EngineError>),
    #[error(transparent)]
    Cluster(Box<crate::cluster::ClusterError>),
    #[error(transparent)]
    Build(Box<crate::build::docker::BuildError>),
    #[error(transparent)]
    Load(Box<crate::cluster::load::LoadError>),
    #[error(transparent)]
    Apply(Box<crate::deploy::apply::ApplyError>),
    #[error(transparent)]
    Rollout(Box<crate::deploy::rollout::RolloutError>),
    #[error(transparent)]
    Down(#[from] crate::commands::down::DownError),
    #[error(transparent)]
    Forward(Box<crate::forward::ForwardError>),
    #[error(transparent)]
    Backup(Box<crate::backup::BackupError>),
    #[error("{failed} of {total} checks failed")]
    ChecksFailed { failed: usize, total: usize },
}

impl From<Diagnostic> for Error {
    fn from(d: Diagnostic) -> Self {
        Error::Input(Box::new(d))
    }
}

/// Module errors that are large are boxed so `Result<_, Error>` stays small.
macro_rules! boxed_from {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Error::$variant(Box::new(e))
            }
        })*
    };
}

boxed_from!(
    Engine(crate::engine::EngineError),
    Cluster(crate::cluster::ClusterError),
    Build(crate::build::docker::BuildError),
    Load(crate::cluster::load::LoadError),
    Backup(crate::backup::BackupError),
    Apply(crate::deploy::apply::ApplyError),
    Rollout(crate::deploy::rollout::RolloutError),
    Forward(crate::forward::ForwardError),
);

impl Error {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Error::Config(ConfigError::Read { .. }) | Error::Context(_) => ExitStatus::Failure,
            Error::Config(_) | Error::Input(_) => ExitStatus::InvalidInput,
            Error::Init(e) => e.exit_status(),
            Error::ChecksFailed { .. } => ExitStatus::Failure,
            Error::Engine(_) | Error::Cluster(_) => ExitStatus::Environment,
            Error::Build(_) | Error::Load(_) | Error::Apply(_) | Error::Rollout(_) => {
                ExitStatus::Failure
            }
            Error::Down(_) | Error::Forward(_) => ExitStatus::Failure,
            Error::Backup(e) => e.exit_status(),
        }
    }

    /// The message without the hint (the printer shows the hint on its own line).
    pub fn message(&self) -> String {
        match self {
            Error::Config(ConfigError::Invalid(d)) | Error::Input(d) => d.headline(),
            other => other.to_string(),
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Config(ConfigError::Invalid(d)) | Error::Input(d) => d.hint.clone(),
            Error::Config(e) => e.hint(),
            Error::Init(e) => e.hint(),
            Error::ChecksFailed { .. } => {
                Some("follow the fixes above, then run `devloop doctor` again".into())
            }
            Error::Context(_) => None,
            Error::Engine(e) => Some(e.hint()),
            Error::Cluster(e) => e.hint(),
            Error::Build(e) => e.hint(),
            Error::Load(e) => e.hint(),
            Error::Apply(e) => e.hint(),
            Error::Rollout(e) => e.hint(),
            Error::Down(e) => e.hint(),
            Error::Forward(e) => e.hint(),
            Error::Backup(e) => e.hint(),
        }
    }

    /// The `#[source]` chain below the message.
    pub fn causes(&self) -> Vec<String> {
        // `transparent` variants' first source is the message itself.
        let message = self.message();
        source_chain(self)
            .into_iter()
            .filter(|c| *c != message)
            .collect()
    }
}

/// The messages of `err`'s `#[source]` chain below it, repeats skipped.
pub fn source_chain(err: &dyn std::error::Error) -> Vec<String> {
    let mut causes: Vec<String> = Vec::new();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        source = cause.source();
    }
    causes
}

/// `err` and its causes on one line, for warnings and check results.
pub fn one_line(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    for cause in source_chain(err) {
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
