//! What can go wrong in `devloop backup`, one variant per failed operation, each naming the
//! object and, where there is one, the fix.

use std::path::PathBuf;
use std::time::Duration;

use crate::diagnostic::Diagnostic;
use crate::error::ExitStatus;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no backup is configured in {}", file.display())]
    NotConfigured { file: PathBuf },
    #[error("no restore Job is configured in {}", file.display())]
    NoRestoreJob { file: PathBuf },
    #[error("backup CronJob `{name}` is not in namespace `{namespace}` (context `{context}`)")]
    CronJobNotApplied {
        name: String,
        namespace: String,
        context: String,
        /// Whether the infra manifests define it (then applying them is the fix).
        in_manifests: bool,
    },
    #[error("failed to read CronJob `{name}` in namespace `{namespace}`")]
    ReadCronJob {
        name: String,
        namespace: String,
        #[source]
        source: KubeFailure,
    },
    #[error(
        "CronJob `{name}` mounts no PersistentVolumeClaim, so devloop cannot tell where its backups are"
    )]
    NoBackupVolume { name: String },
    #[error("failed to create {kind} `{name}` in namespace `{namespace}`")]
    Create {
        kind: &'static str,
        name: String,
        namespace: String,
        #[source]
        source: KubeFailure,
    },
    #[error("failed to read {kind} `{name}` in namespace `{namespace}`")]
    Read {
        kind: &'static str,
        name: String,
        namespace: String,
        #[source]
        source: KubeFailure,
    },
    #[error("failed to list the pods of Job `{job}` in namespace `{namespace}`")]
    ListPods {
        job: String,
        namespace: String,
        #[source]
        source: KubeFailure,
    },
    #[error("failed to read the logs of pod `{pod}` in namespace `{namespace}`")]
    ReadLogs {
        pod: String,
        namespace: String,
        #[source]
        source: KubeFailure,
    },
    #[error(
        "{what} Job `{job}` in namespace `{namespace}` failed: {why}{}",
        tail(log_tail)
    )]
    JobFailed {
        what: &'static str,
        job: String,
        namespace: String,
        why: String,
        log_tail: Vec<String>,
    },
    #[error("pod `{pod}` of {owner} cannot start: {}{}", stuck.reason, colon(&stuck.message))]
    StartFailed {
        owner: String,
        pod: String,
        namespace: String,
        stuck: Box<Stuck>,
    },
    #[error("gave up after {} waiting for {what} in namespace `{namespace}`: {state}", seconds(*waited))]
    Timeout {
        what: String,
        namespace: String,
        waited: Duration,
        state: String,
        /// `kubectl` arguments that follow it further, when it keeps running.
        follow: Option<String>,
    },
    #[error("listing the backups failed: pod `{pod}` {why}{}", tail(log_tail))]
    ListFailed {
        pod: String,
        namespace: String,
        why: String,
        log_tail: Vec<String>,
    },
    #[error("there are no backups in {dir} on PVC `{claim}` in namespace `{namespace}`")]
    NoBackups {
        dir: String,
        claim: String,
        namespace: String,
    },
    #[error("there is no backup `{name}` in {dir} on PVC `{claim}`")]
    UnknownBackup {
        name: String,
        dir: String,
        claim: String,
        available: Vec<String>,
    },
    #[error("{}", .0.headline())]
    RestoreTemplate(Box<Diagnostic>),
    #[error("failed to compute the image tags for the restore Job")]
    ImageTags(#[source] crate::build::ContextError),
    #[error(
        "`backup restore` replaces the project's data, and stdin is not a terminal to ask for confirmation"
    )]
    NotConfirmed,
    #[error("restore cancelled; nothing was changed")]
    Declined,
    #[error("interrupted while waiting for {what} in namespace `{namespace}`")]
    Interrupted {
        what: String,
        namespace: String,
        /// What devloop started and leaves in the cluster, to say so.
        leaves: Leaves,
    },
    #[error(
        "interrupted before starting the {what} Job in namespace `{namespace}`; nothing was started"
    )]
    InterruptedBeforeStart {
        what: &'static str,
        namespace: String,
    },
}

/// What an interrupted `backup` leaves in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaves {
    /// Nothing it started: what it ran is done or deleted.
    Nothing,
    /// This Job, which keeps running (a half-stopped dump or restore helps nobody).
    Job(String),
    /// This pod, which could not be deleted.
    Pod(String),
}

impl BackupError {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            BackupError::NotConfigured { .. }
            | BackupError::NoRestoreJob { .. }
            | BackupError::NoBackupVolume { .. }
            | BackupError::RestoreTemplate(_) => ExitStatus::InvalidInput,
            BackupError::NotConfirmed => ExitStatus::Usage,
            BackupError::Interrupted { .. } | BackupError::InterruptedBeforeStart { .. } => {
                ExitStatus::Interrupted
            }
            BackupError::ReadCronJob { source, .. }
            | BackupError::Create { source, .. }
            | BackupError::Read { source, .. }
            | BackupError::ListPods { source, .. }
            | BackupError::ReadLogs { source, .. }
                if source.unreachable() =>
            {
                ExitStatus::Environment
            }
            _ => ExitStatus::Failure,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            BackupError::NotConfigured { .. } => Some(
                "add `backup:` with `cronJob: NAME` (a CronJob in the infra manifests) and `restoreJob: FILE` to devloop.yaml; see docs/configuration.md"
                    .into(),
            ),
            BackupError::NoRestoreJob { .. } => Some(
                "add `restoreJob: FILE` under `backup:` in devloop.yaml: a Job manifest that restores $BACKUP_FILE"
                    .into(),
            ),
            BackupError::CronJobNotApplied {
                in_manifests: true, ..
            } => Some("apply the persistent tier first: `devloop up`".into()),
            BackupError::CronJobNotApplied { name, .. } => Some(format!(
                "add CronJob `{name}` to a file under `manifests.infra`, or fix `backup.cronJob`; then `devloop up`"
            )),
            BackupError::NoBackupVolume { .. } => Some(
                "mount the backup PersistentVolumeClaim in the CronJob's container (as samples/django/k8s/infra/backup-cronjob.yaml does)"
                    .into(),
            ),
            BackupError::ReadCronJob {
                source, namespace, ..
            } => source.hint("get cronjobs", namespace),
            BackupError::Create {
                source,
                namespace,
                kind,
                ..
            } => source.hint(&format!("create {}s", kind.to_lowercase()), namespace),
            BackupError::Read {
                source,
                namespace,
                kind,
                ..
            } => source.hint(&format!("get {}s", kind.to_lowercase()), namespace),
            BackupError::ListPods {
                source, namespace, ..
            } => source.hint("list pods", namespace),
            BackupError::ReadLogs {
                source, namespace, ..
            } => source.hint("get pods/log", namespace),
            BackupError::JobFailed { job, namespace, .. } => Some(format!(
                "see why: `kubectl -n {namespace} describe job/{job}` and `kubectl -n {namespace} logs job/{job}`"
            )),
            BackupError::StartFailed {
                stuck,
                pod,
                namespace,
                ..
            } => Some(match (stuck.reason.as_str(), &stuck.image) {
                ("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName", Some(image)) => {
                    format!(
                        "image `{image}` is not on the node and cannot be pulled: load it (`kind load docker-image {image}`, `minikube image load {image}`) or fix the name"
                    )
                }
                ("CreateContainerConfigError", _) => format!(
                    "a Secret or ConfigMap the pod needs is missing: apply the persistent tier (`devloop up`); details: `kubectl -n {namespace} describe pod {pod}`"
                ),
                _ => format!("details: `kubectl -n {namespace} describe pod {pod}`"),
            }),
            BackupError::Timeout {
                follow: Some(follow),
                ..
            } => Some(format!(
                "it keeps running in the cluster: follow it with `kubectl {follow}`; give it longer with `--timeout`"
            )),
            BackupError::Timeout { .. } => Some("give it longer with `--timeout`".into()),
            BackupError::ListFailed { pod, namespace, .. } => Some(format!(
                "the pod ran the backup CronJob's image with its volume; details: `kubectl -n {namespace} describe pod {pod}`"
            )),
            BackupError::NoBackups { .. } => Some("take one: `devloop backup now`".into()),
            BackupError::UnknownBackup {
                name, available, ..
            } => Some(
                match crate::diagnostic::suggest(name, available.iter().map(String::as_str)) {
                    Some(best) => format!("did you mean `{best}`? (`devloop backup list` shows all)"),
                    None if available.is_empty() => {
                        "there are none: take one with `devloop backup now`".into()
                    }
                    None => format!("backups, newest first: {}", available.join(", ")),
                },
            ),
            BackupError::RestoreTemplate(d) => d.hint.clone(),
            BackupError::ImageTags(_) => None,
            BackupError::NotConfirmed => {
                Some("pass `--yes` to restore without asking (a safety backup is still taken first)".into())
            }
            BackupError::Declined => None,
            BackupError::Interrupted {
                leaves, namespace, ..
            } => Some(match leaves {
                Leaves::Job(job) => format!(
                    "Job `{job}` keeps running in the cluster: `kubectl -n {namespace} logs -f job/{job}` follows it, `kubectl -n {namespace} delete job {job}` stops it"
                ),
                Leaves::Pod(pod) => format!(
                    "pod `{pod}` is left in the cluster: `kubectl -n {namespace} delete pod {pod}` removes it"
                ),
                Leaves::Nothing => "nothing devloop started is left running in the cluster".into(),
            }),
            BackupError::InterruptedBeforeStart { .. } => None,
        }
    }
}

/// Why a container does not start: a waiting reason that waiting does not cure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub reason: String,
    pub message: String,
    pub image: Option<String>,
}

fn tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n  last log lines:");
    for line in lines {
        out.push_str("\n    │ ");
        out.push_str(line);
    }
    out
}

fn colon(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// A Kubernetes API failure as a user reads it: the server's message and reason, not kube's
/// debug dump.
#[derive(Debug)]
pub struct KubeFailure(pub Box<kube::Error>);

impl KubeFailure {
    /// The HTTP status the API server answered with, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self.0.as_ref() {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        }
    }

    /// The API server did not answer at all (as opposed to refusing).
    pub fn unreachable(&self) -> bool {
        matches!(
            *self.0,
            kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::RustlsTls(_)
        )
    }

    fn hint(&self, verb: &str, namespace: &str) -> Option<String> {
        match self.code() {
            Some(403) => Some(format!(
                "your kube user may not {verb} in namespace `{namespace}`: check with `kubectl auth can-i {verb} -n {namespace}`"
            )),
            Some(404) => Some(format!(
                "does namespace `{namespace}` exist? `devloop up` creates what the project needs"
            )),
            _ if self.unreachable() => {
                Some("is the cluster running? `devloop doctor` checks the context".into())
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for KubeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_ref() {
            kube::Error::Api(status) => {
                write!(f, "{}", status.message)?;
                if !status.reason.is_empty() {
                    write!(f, " ({}, HTTP {})", status.reason, status.code)?;
                }
                Ok(())
            }
            kube::Error::HyperError(e) => write!(f, "the API server did not answer: {e}"),
            kube::Error::Service(e) => write!(f, "the API server did not answer: {e}"),
            other => write!(f, "{other}"),
        }
    }
}

impl std::error::Error for KubeFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.0.as_ref() {
            // The server's message says it all.
            kube::Error::Api(_) => None,
            other => std::error::Error::source(other),
        }
    }
}

impl From<kube::Error> for KubeFailure {
    fn from(e: kube::Error) -> Self {
        KubeFailure(Box::new(e))
    }
}
