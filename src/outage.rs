//! Services going away and coming back: the Docker engine and the Kubernetes API server.
//!
//! Owns telling a failure caused by an unreachable service from one caused by the project — which
//! services could explain an error ([`suspects`]), then a probe of each (a ping of the engine, the
//! API server's `/version`) — and the schedule of retries while one is away ([`Outage`]: every
//! 2 s, backing off to 30 s, with a reminder every 5 minutes). It does not own what is retried:
//! `up`'s loop keeps its pending builds, syncs and deploys and runs them when the service is back.

use std::time::Duration;

use tokio::time::Instant;

use crate::build::docker::BuildError;
use crate::cluster::ClusterError;
use crate::engine::EngineError;
use crate::error::Error;
use crate::sync::SyncError;

/// The first wait before trying again.
pub const FIRST_RETRY: Duration = Duration::from_secs(2);
/// The longest wait between tries.
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// How often a long outage is mentioned again.
const REMINDER: Duration = Duration::from_secs(300);
/// How long the API server has to answer `/version`.
const API_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Docker,
    ApiServer,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Docker => "Docker engine",
            Service::ApiServer => "Kubernetes API server",
        }
    }
}

/// The services whose absence could explain `e`, in the order to probe them. None for a failure
/// of the project itself (a broken manifest, an invalid file): waiting would not fix it.
pub fn suspects(e: &Error) -> &'static [Service] {
    use Service::*;
    match e {
        Error::Engine(e) => match **e {
            EngineError::Unreachable { .. } | EngineError::Timeout { .. } => &[Docker],
            // A malformed DOCKER_HOST does not fix itself.
            EngineError::Address { .. } => &[],
        },
        Error::Build(e) => match **e {
            BuildError::Engine { .. } | BuildError::Failed { .. } => &[Docker],
            BuildError::Context(_) | BuildError::Stream { .. } => &[],
        },
        // Loading goes through Docker into the node containers, which stop with the cluster.
        Error::Load(_) => &[Docker, ApiServer],
        Error::Cluster(e) => match **e {
            ClusterError::Docker(_) => &[Docker],
            // No node container found: a cluster that is restarting looks like no cluster.
            ClusterError::NotLocal { .. } => &[Docker, ApiServer],
            _ => &[],
        },
        Error::Apply(_) | Error::Rollout(_) => &[ApiServer],
        _ => &[],
    }
}

/// [`suspects`] for a failed sync: reaching the pods needs the API server.
pub fn sync_suspects(e: &SyncError) -> &'static [Service] {
    match e {
        SyncError::List { .. } | SyncError::Copy { .. } | SyncError::Remove { .. } => {
            &[Service::ApiServer]
        }
        SyncError::Glob { .. } | SyncError::Read { .. } | SyncError::NoPods { .. } => &[],
    }
}

/// Asks a service whether it answers.
pub struct Probe {
    kube: kube::Client,
    server: String,
}

impl Probe {
    /// `server` is the API server's URL, for messages.
    pub fn new(kube: kube::Client, server: &str) -> Self {
        Self {
            kube,
            server: server.trim_end_matches('/').to_string(),
        }
    }

    /// Where `service` is reached, as the user configured it.
    pub fn address(&self, service: Service) -> String {
        match service {
            Service::Docker => crate::engine::host(),
            Service::ApiServer => self.server.clone(),
        }
    }

    /// `Ok` when `service` answers; otherwise why not, in one line.
    pub async fn check(&self, service: Service) -> Result<(), String> {
        match service {
            Service::Docker => match crate::engine::connect().await {
                Ok(_) => Ok(()),
                Err(EngineError::Timeout { .. }) => Err(format!(
                    "no answer within {}s",
                    crate::engine::PING_TIMEOUT.as_secs()
                )),
                Err(e) => Err(reason(&e)),
            },
            Service::ApiServer => {
                match tokio::time::timeout(API_PROBE_TIMEOUT, self.kube.apiserver_version()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(reason(&e)),
                    Err(_) => Err(format!("no answer within {}s", API_PROBE_TIMEOUT.as_secs())),
                }
            }
        }
    }

    /// The first of `suspects` that does not answer, and why; `None` when all answer (the
    /// failure was not theirs).
    pub async fn first_down(&self, suspects: &[Service]) -> Option<(Service, String)> {
        for &service in suspects {
            if let Err(why) = self.check(service).await {
                return Some((service, why));
            }
        }
        None
    }
}

/// The innermost cause of `e`: what the connection said (`Connection refused`, `No such file or
/// directory`), without the layers of context above it.
fn reason(e: &dyn std::error::Error) -> String {
    crate::error::source_chain(e)
        .pop()
        .unwrap_or_else(|| e.to_string())
}

/// A service that went away, and when to try it again.
#[derive(Debug)]
pub struct Outage {
    pub service: Service,
    /// Where it is reached (`unix:///var/run/docker.sock`, `https://127.0.0.1:6443`).
    pub address: String,
    since: Instant,
    interval: Duration,
    next: Instant,
    reminded: Instant,
}

impl Outage {
    pub fn new(service: Service, address: String) -> Self {
        let now = Instant::now();
        Self {
            service,
            address,
            since: now,
            interval: FIRST_RETRY,
            next: now + FIRST_RETRY,
            reminded: now,
        }
    }

    /// When to probe next.
    pub fn next_attempt(&self) -> Instant {
        self.next
    }

    pub fn down_for(&self) -> Duration {
        self.since.elapsed()
    }

    /// The line said once when it goes away: what failed, what devloop waits for and how.
    pub fn started_line(&self, what_failed: &str, why: &str) -> String {
        format!(
            "{what_failed}: {} unreachable at {} ({why}); retrying every {}s until it returns (backing off to {}s)",
            self.service.name(),
            self.address,
            FIRST_RETRY.as_secs(),
            MAX_RETRY.as_secs()
        )
    }

    /// A probe failed: wait longer before the next. Returns a reminder to print now and then,
    /// so a long wait is never silent.
    pub fn failed(&mut self) -> Option<String> {
        self.failed_at(Instant::now())
    }

    fn failed_at(&mut self, now: Instant) -> Option<String> {
        self.interval = (self.interval * 2).min(MAX_RETRY);
        self.next = now + self.interval;
        if now.duration_since(self.reminded) < REMINDER {
            return None;
        }
        self.reminded = now;
        Some(format!(
            "still waiting for the {} at {} (unreachable for {}); retrying every {}s",
            self.service.name(),
            self.address,
            duration(now.duration_since(self.since)),
            self.interval.as_secs()
        ))
    }

    /// `the Docker engine at X (unreachable for 12s)`, for lines about work that waits.
    pub fn waiting_for(&self) -> String {
        format!(
            "the {} at {} returns (unreachable for {})",
            self.service.name(),
            self.address,
            duration(self.down_for())
        )
    }

    /// The line said when it answers again, with what happens next.
    pub fn back_line(&self, next: &str) -> String {
        format!(
            "{} at {} is back after {} → {next}",
            self.service.name(),
            self.address,
            duration(self.down_for())
        )
    }
}

/// `14s`, `2m 05s`, `1h 02m`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::load::LoadError;
    use crate::diagnostic::Diagnostic;

    fn bollard_io() -> bollard::errors::Error {
        bollard::errors::Error::IOError {
            err: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"),
        }
    }

    #[test]
    fn an_unreachable_service_is_suspected_and_the_project_is_not() {
        use Service::*;
        let engine = |e: EngineError| Error::from(e);
        assert_eq!(
            suspects(&engine(EngineError::Unreachable {
                host: "unix:///x.sock".into(),
                source: bollard_io(),
            })),
            [Docker]
        );
        assert_eq!(
            suspects(&engine(EngineError::Timeout { host: "x".into() })),
            [Docker]
        );
        assert!(
            suspects(&engine(EngineError::Address {
                host: "nonsense".into(),
                source: bollard_io(),
            }))
            .is_empty()
        );
        // A failing step is probed: the engine may have died under it.
        assert_eq!(
            suspects(&Error::from(BuildError::Failed {
                image: "web".into(),
                step: Some("RUN false".into()),
                message: "exit 1".into(),
                output: vec![],
            })),
            [Docker]
        );
        assert_eq!(
            suspects(&Error::from(BuildError::Engine {
                image: "web".into(),
                source: bollard_io(),
            })),
            [Docker]
        );
        assert_eq!(
            suspects(&Error::from(LoadError::Export {
                reference: "web:dl-1".into(),
                source: bollard_io(),
            })),
            [Docker, ApiServer]
        );
        assert_eq!(
            suspects(&Error::from(
                crate::deploy::rollout::RolloutError::Timeout {
                    timeout: Duration::from_secs(1),
                    pending: vec![],
                }
            )),
            [ApiServer]
        );
        // A broken manifest or project file waits for the next edit, not for a service.
        let broken = Diagnostic::new("k8s/deployment.yaml", "did not find expected node content");
        assert!(suspects(&Error::from(broken)).is_empty());
        let config = crate::config::ConfigError::NotFound { dir: "/p".into() };
        assert!(suspects(&Error::from(config)).is_empty());
    }

    #[test]
    fn sync_failures_suspect_the_api_server_unless_local() {
        let copy = SyncError::Copy {
            pod: "p".into(),
            container: "c".into(),
            what: "www/index.html".into(),
            reason: "exec failed".into(),
        };
        assert_eq!(sync_suspects(&copy), [Service::ApiServer]);
        let read = SyncError::Read {
            path: "/p/www/a".into(),
            source: std::io::Error::other("gone"),
        };
        assert!(sync_suspects(&read).is_empty());
        assert!(sync_suspects(&SyncError::NoPods { image: "w".into() }).is_empty());
    }

    #[test]
    fn retries_back_off_to_the_cap_and_remind() {
        let mut o = Outage::new(Service::Docker, "unix:///x.sock".into());
        let mut now = o.since;
        let mut waits = Vec::new();
        let mut reminders = Vec::new();
        for _ in 0..20 {
            waits.push(o.next_attempt().duration_since(now).as_secs());
            now = o.next_attempt();
            if let Some(r) = o.failed_at(now) {
                reminders.push(r);
            }
        }
        assert_eq!(waits[..7], [2, 4, 8, 16, 30, 30, 30]);
        // 2+4+8+16+30×16 s ≈ 8.5 min: one reminder past 5 min.
        assert_eq!(reminders.len(), 1, "{reminders:?}");
        assert!(
            reminders[0].starts_with("still waiting for the Docker engine at unix:///x.sock"),
            "{}",
            reminders[0]
        );
        let started = o.started_line("rebuilding web failed", "Connection refused");
        assert_eq!(
            started,
            "rebuilding web failed: Docker engine unreachable at unix:///x.sock (Connection refused); retrying every 2s until it returns (backing off to 30s)"
        );
    }

    #[test]
    fn durations_read_as_a_person_says_them() {
        assert_eq!(duration(Duration::from_millis(14_400)), "14s");
        assert_eq!(duration(Duration::from_secs(125)), "2m 05s");
        assert_eq!(duration(Duration::from_secs(3720)), "1h 02m");
    }
}
