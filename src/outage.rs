//! Services going away and coming back: the Docker engine and the Kubernetes API server.
//!
//! Owns telling a failure caused by an unreachable service from one caused by the project — which
//! services could explain an error ([`suspects`]), then a probe of each (a ping of the engine, the
//! API server's `/version`) — and the schedule of retries while one is away ([`Outage`]: every
//! 2 s, backing off to 30 s, with a reminder every 5 minutes). It does not own what is retried:
//! `up`'s loop keeps its pending builds, syncs and deploys and runs them when the service is back.
//!
//! The long-running watches of forwards and logs go through [`watch_events`], which starts a
//! fresh list after each failure so that the API server's return is seen, and [`WatchHealth`],
//! which says once that a watch fails and once that it is back.

use std::fmt::Debug;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
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

/// The events of kube's watcher on `api`, kept going while the API server comes and goes.
///
/// After a failure the watcher is started again — a fresh list — once kube's default backoff
/// (0.8 s doubling to 30 s) has passed. kube's watcher would resume the old watch instead, and a
/// resumed watch says nothing until an object changes, so nobody could tell that it works again;
/// a list ends with [`watcher::Event::InitDone`]. Errors are passed on, for [`WatchHealth`].
pub fn watch_events<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    watch_events_with(api, config, watcher::DefaultBackoff::default())
}

fn watch_events_with<K, B>(
    api: Api<K>,
    config: watcher::Config,
    backoff: B,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
    B: Backoff + 'static,
{
    struct State<K: 'static, B> {
        events:
            Option<futures_util::stream::BoxStream<'static, watcher::Result<watcher::Event<K>>>>,
        backoff: B,
        /// How long to wait before the next start, after a failure.
        pause: Option<Duration>,
    }
    let state = State {
        events: None,
        backoff,
        pause: None,
    };
    futures_util::stream::unfold(state, move |mut state| {
        let (api, config) = (api.clone(), config.clone());
        async move {
            if let Some(pause) = state.pause.take() {
                tokio::time::sleep(pause).await;
            }
            let events = state
                .events
                .get_or_insert_with(|| watcher(api, config).boxed());
            let event = events.next().await?;
            match &event {
                // `Init` comes before any request; anything else means the server answered.
                Ok(watcher::Event::Init) => {}
                Ok(_) => state.backoff.reset(),
                Err(_) => {
                    state.events = None;
                    state.pause = Some(state.backoff.next().unwrap_or(MAX_RETRY));
                }
            }
            Some((event, state))
        }
    })
}

/// What a long-running watch (a forward's, the logs') tells the user about its failures: one
/// line when it starts failing, nothing while it goes on failing the same way, one line when it
/// works again. The caller prints the lines.
#[derive(Debug)]
pub struct WatchHealth {
    /// Who depends on the watch: `forward deployment/web`, `logs`.
    what: String,
    /// Whether a list went through once.
    worked: bool,
    failing: Option<WatchFailure>,
}

#[derive(Debug, PartialEq, Eq)]
struct WatchFailure {
    /// Failures of one kind are said once: the API server's status code, else the cause.
    kind: String,
    cause: String,
}

impl WatchHealth {
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            worked: false,
            failing: None,
        }
    }

    /// The watch delivered `event`; the line to say when that ends a failure.
    pub fn event<K>(&mut self, event: &watcher::Event<K>) -> Option<String> {
        // `Init` only starts a list; no request has gone through yet.
        if matches!(event, watcher::Event::Init) {
            return None;
        }
        let worked = std::mem::replace(&mut self.worked, true);
        self.failing.take()?;
        let service = Service::ApiServer.name();
        Some(match worked {
            true => format!("{}: the watch on the {service} is back", self.what),
            false => format!("{}: the watch on the {service} works now", self.what),
        })
    }

    /// The watch failed with `err` and will be retried; the line to say when this is a new
    /// kind of failure.
    pub fn failed(&mut self, err: &watcher::Error) -> Option<String> {
        let code = status_code(err);
        // 410 Gone: the watch was too old and is listed anew; routine, not news.
        if code == Some(410) {
            tracing::debug!("{}: {err}", self.what);
            return None;
        }
        let failure = WatchFailure {
            kind: code.map_or_else(|| reason(err), |c| c.to_string()),
            cause: reason(err),
        };
        if self.failing.as_ref().map(|f| &f.kind) == Some(&failure.kind) {
            return None;
        }
        let service = Service::ApiServer.name();
        let line = match self.worked {
            true => format!(
                "{}: lost the watch on the {service} ({}); retrying",
                self.what, failure.cause
            ),
            false => format!(
                "{}: cannot start the watch on the {service} ({}); retrying",
                self.what, failure.cause
            ),
        };
        self.failing = Some(failure);
        Some(line)
    }

    /// Why the watch fails now, in a few words; `None` while it works.
    pub fn cause(&self) -> Option<&str> {
        self.failing.as_ref().map(|f| f.cause.as_str())
    }
}

/// The HTTP status the API server answered a watch with, if it answered.
pub fn status_code(err: &watcher::Error) -> Option<u16> {
    match err {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        watcher::Error::WatchError(status) => Some(status.code),
        _ => None,
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

    fn refused() -> kube::Error {
        kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        )))
    }

    fn status(code: u16, message: &str, reason: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn a_failing_watch_is_said_once_per_kind_and_its_return_once() {
        let listed = watcher::Event::<()>::InitDone;
        let mut health = WatchHealth::new("forward deployment/web");
        // Before it ever worked, it "cannot start"; said once however often it is retried.
        let first = health.failed(&watcher::Error::InitialListFailed(refused()));
        assert_eq!(
            first.as_deref(),
            Some(
                "forward deployment/web: cannot start the watch on the Kubernetes API server (Connection refused (os error 111)); retrying"
            )
        );
        assert_eq!(health.event(&watcher::Event::<()>::Init), None);
        assert_eq!(
            health.failed(&watcher::Error::InitialListFailed(refused())),
            None
        );
        assert_eq!(health.cause(), Some("Connection refused (os error 111)"));
        assert_eq!(
            health.event(&listed).as_deref(),
            Some("forward deployment/web: the watch on the Kubernetes API server works now")
        );
        assert_eq!(health.cause(), None);
        assert_eq!(health.event(&listed), None, "working is news only once");

        // Once it worked, it is "lost" and "back"; a new kind of failure is said too.
        let lost = health.failed(&watcher::Error::WatchStartFailed(refused()));
        assert_eq!(
            lost.as_deref(),
            Some(
                "forward deployment/web: lost the watch on the Kubernetes API server (Connection refused (os error 111)); retrying"
            )
        );
        assert_eq!(health.failed(&watcher::Error::WatchFailed(refused())), None);
        let starting = status(
            503,
            "the server is currently unable to handle the request",
            "ServiceUnavailable",
        );
        let unavailable = health.failed(&watcher::Error::InitialListFailed(starting));
        assert!(
            unavailable.as_deref().is_some_and(|l| l.contains(
                "(the server is currently unable to handle the request: ServiceUnavailable)"
            )),
            "{unavailable:?}"
        );
        assert_eq!(
            health.event(&listed).as_deref(),
            Some("forward deployment/web: the watch on the Kubernetes API server is back")
        );

        // A watch that is too old is listed anew by itself: not news.
        let gone =
            kube::core::Status::failure("too old resource version", "Expired").with_code(410);
        assert_eq!(
            health.failed(&watcher::Error::WatchError(gone.boxed())),
            None
        );
        assert_eq!(health.event(&listed), None);
    }

    /// A scripted API server: pod lists and watches answer in turn from `script` (`None`: the
    /// connection is refused); once it is used up, requests wait forever.
    fn server(script: Vec<Option<serde_json::Value>>) -> kube::Client {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            let mut script = script.into_iter();
            let mut waiting = Vec::new();
            while let Some((_request, send)) = handle.next_request().await {
                match script.next() {
                    Some(Some(body)) => send.send_response(
                        Response::builder()
                            .body(Body::from(body.to_string().into_bytes()))
                            .unwrap(),
                    ),
                    Some(None) => send.send_error(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "Connection refused (os error 111)",
                    )),
                    None => waiting.push(send),
                }
            }
        });
        kube::Client::new(service, "default")
    }

    #[tokio::test]
    async fn a_watch_that_failed_lists_again_so_its_return_is_seen() {
        use k8s_openapi::api::core::v1::Pod;
        let list = serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "7"}, "items": []});
        // Listed and watching; the watch cannot be restarted; a list fails; a list works.
        let client = server(vec![Some(list.clone()), None, None, Some(list)]);
        /// Retries at once, so the test does not wait out kube's backoff.
        struct Quick;
        impl Iterator for Quick {
            type Item = Duration;
            fn next(&mut self) -> Option<Duration> {
                Some(Duration::from_millis(1))
            }
        }
        impl Backoff for Quick {
            fn reset(&mut self) {}
        }
        let events = watch_events_with(
            Api::<Pod>::namespaced(client, "default"),
            watcher::Config::default(),
            Quick,
        );
        futures_util::pin_mut!(events);
        let mut health = WatchHealth::new("logs");
        let mut seen = Vec::new();
        let mut lines = Vec::new();
        while seen.len() < 7 {
            let event = tokio::time::timeout(Duration::from_secs(5), events.next())
                .await
                .expect("the watch goes on")
                .expect("the watch does not end");
            let (name, line) = match &event {
                Ok(e) => {
                    let name = match e {
                        watcher::Event::Init => "Init",
                        watcher::Event::InitDone => "InitDone",
                        _ => "other",
                    };
                    (name, health.event(e))
                }
                Err(e) => {
                    let name = match e {
                        watcher::Error::WatchStartFailed(_) => "watch failed",
                        watcher::Error::InitialListFailed(_) => "list failed",
                        _ => "other error",
                    };
                    (name, health.failed(e))
                }
            };
            seen.push(name);
            lines.extend(line);
        }
        assert_eq!(
            seen,
            [
                "Init",
                "InitDone",
                "watch failed",
                // Started again: a fresh list, not the old watch resumed.
                "Init",
                "list failed",
                "Init",
                "InitDone"
            ]
        );
        // A watch that works from the start is not news.
        assert_eq!(
            lines,
            [
                "logs: lost the watch on the Kubernetes API server (Connection refused (os error 111)); retrying",
                "logs: the watch on the Kubernetes API server is back",
            ]
        );
    }

    #[test]
    fn durations_read_as_a_person_says_them() {
        assert_eq!(duration(Duration::from_millis(14_400)), "14s");
        assert_eq!(duration(Duration::from_secs(125)), "2m 05s");
        assert_eq!(duration(Duration::from_secs(3720)), "1h 02m");
    }
}
