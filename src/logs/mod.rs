//! Log streaming: the lines of every container (init containers too) of the pods a label selector
//! matches, each prefixed `pod/container |` and coloured per pod/container.
//!
//! Owns following pods as they come and go (a watch), one log stream per container instance, and
//! where a stream starts: pods that ran before streaming began show only what they print from now
//! on, new pods and restarted containers from their first line. A stream that breaks while its
//! container still runs resumes where it stopped, without repeating a line; so does one that
//! broke because the API server went away, once the API server answers again (an instance that
//! stopped meanwhile has the rest of its log read once). It does not choose which pods belong to a
//! profile (the caller's selector) and prints nothing itself: lines go to a [`LogSink`], which is
//! the [`Printer`] in `up`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::LogParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::outage::{self, WatchHealth, status_code};
use crate::output::Printer;

/// Where log lines go.
pub trait LogSink: Clone + Send + Sync + 'static {
    /// One line of a container's log; `source` is `pod/container`, `colour` a stable index per
    /// source.
    fn line(&self, source: &str, colour: usize, text: &str);
    /// Something about the streams themselves (one failed and is retried).
    fn note(&self, text: &str);
    /// A failure [`note`](Self::note)d before is over.
    fn recovered(&self, text: &str) {
        self.note(text);
    }
}

impl LogSink for Printer {
    fn line(&self, source: &str, colour: usize, text: &str) {
        self.log_line(source, colour, text);
    }

    fn note(&self, text: &str) {
        self.warn(text);
    }

    fn recovered(&self, text: &str) {
        self.info(text);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("failed to list the pods matching `{selector}` in namespace {namespace}")]
    List {
        namespace: String,
        selector: String,
        #[source]
        source: watcher::Error,
    },
}

impl LogsError {
    pub fn hint(&self) -> Option<String> {
        match self {
            LogsError::List { source, .. } => match status_code(source) {
                Some(400) => {
                    Some("the label selector is not valid (`key=value,key2=value2`)".into())
                }
                Some(401 | 403) => {
                    Some("your kube user needs `list` and `watch` on pods in this namespace".into())
                }
                _ => None,
            },
        }
    }
}

/// How long to wait before following a container again after its stream failed.
const RETRY: Duration = Duration::from_secs(1);

/// Stream the logs of every pod matching `selector` in `namespace` into `sink` until `cancel`.
///
/// Fails only when the pods cannot be listed at all (an invalid selector, no permission); later
/// failures of the watch are noted once (and its return once) and retried, so the API server may
/// come and go.
pub async fn run<S: LogSink>(
    client: kube::Client,
    namespace: String,
    selector: String,
    cancel: CancellationToken,
    sink: S,
) -> Result<(), LogsError> {
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let events = outage::watch_events(api.clone(), watcher::Config::default().labels(&selector))
        .modify(|p| p.managed_fields_mut().clear());
    futures_util::pin_mut!(events);

    let streams = TaskTracker::new();
    // Streams stop with the caller's token, or when this function gives up.
    let stop_streams = cancel.child_token();
    let _stop_on_return = stop_streams.clone().drop_guard();
    // Container instances already followed, by pod uid, container name and container id.
    let mut followed: HashSet<(String, String, String)> = HashSet::new();
    let mut colours: HashMap<String, usize> = HashMap::new();
    // Instances found by the first list ran before we started: only their new lines are shown.
    let mut first_list = true;
    let mut health = WatchHealth::new("logs");
    // Counts the watch's returns: streams waiting for the API server ask again at once.
    let (api_back, _) = tokio::sync::watch::channel(0u64);
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => break,
            event = events.next() => event,
        };
        let Some(event) = event else { break };
        if let Ok(event) = &event
            && let Some(line) = health.event(event)
        {
            api_back.send_modify(|n| *n += 1);
            sink.recovered(&line);
        }
        let pod = match event {
            Ok(watcher::Event::InitApply(pod)) => (pod, first_list),
            Ok(watcher::Event::Apply(pod)) => (pod, false),
            Ok(watcher::Event::InitDone) => {
                first_list = false;
                continue;
            }
            Ok(watcher::Event::Delete(pod)) => {
                // Its streams end by themselves once the containers stop.
                let uid = pod.uid().unwrap_or_default();
                followed.retain(|(u, _, _)| *u != uid);
                continue;
            }
            Ok(watcher::Event::Init) => continue,
            Err(source) => {
                if first_list && permanent(&source) {
                    return Err(LogsError::List {
                        namespace,
                        selector,
                        source,
                    });
                }
                if let Some(line) = health.failed(&source) {
                    sink.note(&line);
                }
                continue;
            }
        };
        let (pod, from_now) = pod;
        let uid = pod.uid().unwrap_or_default();
        for (container, instance) in instances(&pod) {
            if !followed.insert((uid.clone(), container.clone(), instance.clone())) {
                continue;
            }
            let source = format!("{}/{container}", pod.name_any());
            let next = colours.len();
            let colour = *colours.entry(source.clone()).or_insert(next);
            streams.spawn(follow(
                Stream {
                    api: api.clone(),
                    pod: pod.name_any(),
                    container,
                    instance,
                    source,
                    colour,
                    api_back: api_back.subscribe(),
                },
                from_now,
                stop_streams.clone(),
                sink.clone(),
            ));
        }
    }
    streams.close();
    streams.wait().await;
    Ok(())
}

/// An error of the first list that retrying will not fix.
fn permanent(err: &watcher::Error) -> bool {
    matches!(status_code(err), Some(400 | 401 | 403 | 404))
}

/// The containers of `pod` whose logs can be read now, with the id of the instance the log
/// endpoint serves.
fn instances(pod: &Pod) -> Vec<(String, String)> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .filter_map(|s| Some((s.name.clone(), loggable_instance(s)?)))
        .collect()
}

/// The container id the kubelet serves logs of (without `previous`), mirroring its choice: the
/// running instance, else the one that terminated last; none before the first start.
fn loggable_instance(status: &ContainerStatus) -> Option<String> {
    let state = status.state.as_ref();
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.container_id.clone());
    let id = if state.and_then(|s| s.running.as_ref()).is_some() {
        status.container_id.clone()
    } else if let Some(terminated) = state.and_then(|s| s.terminated.as_ref()) {
        terminated.container_id.clone().or(last)
    } else {
        last
    };
    id.filter(|id| !id.is_empty())
}

/// One container instance's log.
struct Stream {
    api: Api<Pod>,
    pod: String,
    container: String,
    /// The container id this stream is for; a restart is a new instance and a new stream.
    instance: String,
    source: String,
    colour: usize,
    /// Changes when the pod watch works again after failing: the API server is back.
    api_back: tokio::sync::watch::Receiver<u64>,
}

/// What the API server says about a followed instance.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// It runs: its log goes on.
    Running,
    /// It stopped; its log is the pod's `previous` one once a newer instance replaced it.
    Stopped { previous: bool },
    /// Its pod, or its log, is gone.
    Gone,
}

/// How reading a stream ended.
enum Read {
    /// The kubelet closed it: the instance stopped, or the kubelet let go.
    Ended,
    /// The connection broke: lines may be missing.
    Broken,
    Cancelled,
}

impl Stream {
    /// Show the new lines of `reader` until it ends.
    async fn show<S: LogSink>(
        &self,
        reader: impl futures_util::AsyncBufRead,
        resume: &mut Resume,
        cancel: &CancellationToken,
        sink: &S,
    ) -> Read {
        futures_util::pin_mut!(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let read = tokio::select! {
                () = cancel.cancelled() => return Read::Cancelled,
                read = reader.read_until(b'\n', &mut buf) => read,
            };
            match read {
                Ok(0) => return Read::Ended,
                Err(err) => {
                    tracing::debug!("logs of {}: {err}", self.source);
                    return Read::Broken;
                }
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches(['\n', '\r']);
            let (at, text) = split_timestamp(line);
            if resume.is_new(at) {
                sink.line(&self.source, self.colour, text);
            }
        }
    }

    /// What the API server says about the instance, asked until it answers: while it is away,
    /// again and again (backing off, and at once when the pod watch is back), for an
    /// unanswered question is no sign that the instance stopped. With the answer, whether the
    /// API server was away first; `None` when cancelled.
    async fn seen(&mut self, cancel: &CancellationToken) -> Option<(Seen, bool)> {
        let mut wait = RETRY;
        let mut away = false;
        loop {
            // What `changed` below waits for is a return after this question.
            self.api_back.borrow_and_update();
            let got = tokio::select! {
                () = cancel.cancelled() => return None,
                got = self.api.get(&self.pod) => got,
            };
            match got {
                Ok(pod) => return Some((seen(&pod, &self.container, &self.instance), away)),
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    return Some((Seen::Gone, away));
                }
                Err(err) => tracing::debug!("logs of {}: {err}; asking again", self.source),
            }
            away = true;
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = tokio::time::sleep(wait) => {}
                Ok(()) = self.api_back.changed() => {}
            }
            wait = (wait * 2).min(outage::MAX_RETRY);
        }
    }
}

/// What `pod` says about the `container` instance `instance`.
fn seen(pod: &Pod, container: &str, instance: &str) -> Seen {
    let status = pod
        .status
        .iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .find(|s| s.name == container);
    let Some(status) = status else {
        return Seen::Gone;
    };
    let running = status.state.as_ref().and_then(|s| s.running.as_ref());
    if running.is_some() && status.container_id.as_deref() == Some(instance) {
        return Seen::Running;
    }
    if loggable_instance(status).as_deref() == Some(instance) {
        return Seen::Stopped { previous: false };
    }
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.container_id.as_deref());
    match last == Some(instance) {
        true => Seen::Stopped { previous: true },
        // Restarted twice: the kubelet keeps no older log.
        false => Seen::Gone,
    }
}

/// Follow one container instance until it stops or `cancel`.
async fn follow<S: LogSink>(
    mut stream: Stream,
    from_now: bool,
    cancel: CancellationToken,
    sink: S,
) {
    let mut resume = Resume::default();
    let mut failure: Option<String> = None;
    loop {
        let since_time = resume.reopen();
        let params = LogParams {
            container: Some(stream.container.clone()),
            follow: true,
            timestamps: true,
            since_time,
            // Nothing shown yet of an instance that ran before us: from now on only.
            tail_lines: (since_time.is_none() && from_now).then_some(0),
            ..LogParams::default()
        };
        let opened = tokio::select! {
            () = cancel.cancelled() => return,
            opened = stream.api.log_stream(&stream.pod, &params) => opened,
        };
        // Whether lines may be missing after the last one shown: the stream broke or did not
        // open, or the API server was away. A stopped instance's log is then read once more.
        let mut broken = match opened {
            Ok(reader) => {
                if from_now {
                    resume.start(Timestamp::now());
                }
                match stream.show(reader, &mut resume, &cancel, &sink).await {
                    Read::Ended => false,
                    Read::Broken => true,
                    Read::Cancelled => return,
                }
            }
            Err(err) => {
                let text = err.to_string();
                if failure.as_deref() != Some(text.as_str()) {
                    tracing::debug!("logs of {}: {text}", stream.source);
                    failure = Some(text);
                }
                true
            }
        };
        // The stream ended: the instance stopped (done), or the connection broke (resume).
        let Some((seen, away)) = stream.seen(&cancel).await else {
            return;
        };
        broken |= away;
        match seen {
            Seen::Running => {}
            Seen::Stopped { previous } => {
                // Of an instance that ran before us and never streamed, nothing is due.
                if broken && !(from_now && resume.last.is_none()) {
                    let params = LogParams {
                        container: Some(stream.container.clone()),
                        previous,
                        timestamps: true,
                        since_time: resume.reopen(),
                        ..LogParams::default()
                    };
                    let opened = tokio::select! {
                        () = cancel.cancelled() => return,
                        opened = stream.api.log_stream(&stream.pod, &params) => opened,
                    };
                    match opened {
                        Ok(reader) => {
                            stream.show(reader, &mut resume, &cancel, &sink).await;
                        }
                        Err(err) => tracing::debug!("logs of {}: {err}", stream.source),
                    }
                }
                return;
            }
            Seen::Gone => return,
        }
        // Waiting for the API server was pause enough.
        if !away {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}

/// Where a stream opened again picks up, so that no line is shown twice and none is skipped.
///
/// The kubelet is asked for the lines from one second before the last one shown: kube rounds
/// `sinceTime` to whole seconds (so up to half a second later) and the API server passes whole
/// seconds on, so asking for the exact time could skip lines. What comes again is recognised by
/// the timestamps (nanoseconds) and dropped: lines stamped before the last one shown, and as many
/// stamped the same as were shown, so lines sharing a timestamp come out exact too.
#[derive(Debug, Default)]
struct Resume {
    /// The timestamp of the last line shown and how many shown lines carry it; with 0, where
    /// showing started for an instance that ran before us.
    last: Option<(Timestamp, usize)>,
    /// Since the stream was opened again: how many lines stamped `last` came again. `None` once
    /// a new line came: from then on every line is shown, so a clock set back hides nothing.
    replayed: Option<usize>,
}

impl Resume {
    /// An instance that ran before us is shown from `now` (its first stream asks for no old
    /// lines). `now` is our clock and the timestamps the node's, the same clock for a local
    /// cluster; this matters only if a stream breaks before the instance printed anything.
    fn start(&mut self, now: Timestamp) {
        if self.last.is_none() {
            self.last = Some((now, 0));
        }
    }

    /// The stream is opened again: the `sinceTime` to ask for, `None` for the whole log.
    fn reopen(&mut self) -> Option<Timestamp> {
        self.replayed = self.last.map(|_| 0);
        self.last.map(|(at, _)| at - SignedDuration::from_secs(1))
    }

    /// Whether a line stamped `at` is new, to be shown; counted if so.
    fn is_new(&mut self, at: Option<Timestamp>) -> bool {
        let Some(at) = at else {
            return true;
        };
        if let (Some(replayed), Some((last, shown))) = (self.replayed.as_mut(), self.last) {
            if at < last {
                return false;
            }
            if at == last && *replayed < shown {
                *replayed += 1;
                return false;
            }
        }
        self.replayed = None;
        match &mut self.last {
            Some((last, shown)) if *last == at => *shown += 1,
            last => *last = Some((at, 1)),
        }
        true
    }
}

/// `2026-01-01T00:00:00.123456789Z text` → the timestamp and the text.
fn split_timestamp(line: &str) -> (Option<Timestamp>, &str) {
    match line.split_once(' ') {
        Some((at, text)) => match at.parse::<Timestamp>() {
            Ok(at) => (Some(at), text),
            Err(_) => (None, line),
        },
        // An empty line: the kubelet sends just the timestamp.
        None => match line.parse::<Timestamp>() {
            Ok(at) => (Some(at), ""),
            Err(_) => (None, line),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: serde_json::Value) -> ContainerStatus {
        let mut base = serde_json::json!({"name": "web", "image": "web", "imageID": "", "ready": false, "restartCount": 0});
        base.as_object_mut()
            .unwrap()
            .extend(json.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn logs_follow_the_instance_the_kubelet_serves() {
        let waiting =
            status(serde_json::json!({"state": {"waiting": {"reason": "ContainerCreating"}}}));
        assert_eq!(loggable_instance(&waiting), None);
        let running = status(serde_json::json!({
            "containerID": "containerd://b",
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "containerd://a"}}
        }));
        assert_eq!(
            loggable_instance(&running).as_deref(),
            Some("containerd://b")
        );
        let crash_looping = status(serde_json::json!({
            "containerID": "containerd://b",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "containerd://b"}}
        }));
        assert_eq!(
            loggable_instance(&crash_looping).as_deref(),
            Some("containerd://b")
        );
        let completed = status(serde_json::json!({
            "state": {"terminated": {"exitCode": 0, "containerID": "containerd://c"}}
        }));
        assert_eq!(
            loggable_instance(&completed).as_deref(),
            Some("containerd://c")
        );
    }

    fn at(s: &str) -> Option<Timestamp> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_reopened_stream_shows_neither_a_line_twice_nor_misses_one() {
        let mut resume = Resume::default();
        assert_eq!(resume.reopen(), None, "nothing shown: the whole log");
        let first = [
            "2026-11-25T13:19:10.900Z",
            "2026-11-25T13:19:11.5Z",
            "2026-11-25T13:19:11.5Z",
        ];
        assert!(first.iter().all(|t| resume.is_new(at(t))));
        // The break: asked again from a second before the last line shown.
        assert_eq!(resume.reopen(), at("2026-11-25T13:19:10.5Z"));
        let again = [
            ("2026-11-25T13:19:10.900Z", false),
            ("2026-11-25T13:19:11.5Z", false),
            ("2026-11-25T13:19:11.5Z", false),
            // Stamped like the last two but not shown yet: new.
            ("2026-11-25T13:19:11.5Z", true),
            ("2026-11-25T13:19:12Z", true),
            // Once past the replay, a clock set back hides nothing.
            ("2026-11-25T13:19:09Z", true),
        ];
        for (t, new) in again {
            assert_eq!(resume.is_new(at(t)), new, "{t}");
        }
        assert!(resume.is_new(None), "a line without a timestamp is shown");
    }

    #[test]
    fn an_instance_that_ran_before_resumes_from_when_showing_started() {
        let mut resume = Resume::default();
        resume.reopen();
        resume.start("2026-11-25T13:19:11Z".parse().unwrap());
        // It broke before the instance printed anything.
        assert_eq!(resume.reopen(), at("2026-11-25T13:19:10Z"));
        assert!(!resume.is_new(at("2026-11-25T13:19:10.5Z")), "history");
        assert!(resume.is_new(at("2026-11-25T13:19:11Z")));
        // Started once: a later start changes nothing.
        resume.start("2026-11-25T13:20:00Z".parse().unwrap());
        assert_eq!(resume.reopen(), at("2026-11-25T13:19:10Z"));
    }

    fn pod_with(json: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"containerStatuses": [status(json)]}
        }))
        .unwrap()
    }

    #[test]
    fn a_stopped_instance_is_told_from_a_running_one() {
        let running = pod_with(serde_json::json!({
            "containerID": "containerd://b",
            "state": {"running": {}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "containerd://a"}}
        }));
        assert_eq!(seen(&running, "web", "containerd://b"), Seen::Running);
        assert_eq!(
            seen(&running, "web", "containerd://a"),
            Seen::Stopped { previous: true }
        );
        assert_eq!(seen(&running, "web", "containerd://z"), Seen::Gone);
        assert_eq!(seen(&running, "other", "containerd://b"), Seen::Gone);
        let crash_looping = pod_with(serde_json::json!({
            "containerID": "containerd://b",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "containerd://b"}}
        }));
        assert_eq!(
            seen(&crash_looping, "web", "containerd://b"),
            Seen::Stopped { previous: false }
        );
    }

    #[test]
    fn timestamps_are_split_from_the_text() {
        let (at, text) = split_timestamp("2026-11-25T13:19:11.123456789Z GET / 200");
        assert_eq!(text, "GET / 200");
        assert_eq!(at.unwrap().to_string(), "2026-11-25T13:19:11.123456789Z");
        assert_eq!(
            split_timestamp("no timestamp here"),
            (None, "no timestamp here")
        );
        assert_eq!(split_timestamp("2026-11-25T13:19:11Z").1, "");
    }
}
