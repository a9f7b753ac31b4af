//! Log streaming: the lines of every container (init containers too) of the pods a label selector
//! matches, each prefixed `pod/container |` and coloured per pod/container.
//!
//! Owns following pods as they come and go (a watch), one log stream per container instance, and
//! where a stream starts: pods that ran before streaming began show only what they print from now
//! on, new pods and restarted containers from their first line. A stream that breaks while its
//! container still runs resumes where it stopped. It does not choose which pods belong to a
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
    let mut shown: HashMap<(String, String), Shown> = HashMap::new();
    // Instances found by the first list ran before we started: only their new lines are shown.
    let mut first_list = true;
    let mut health = WatchHealth::new("logs");
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => break,
            event = events.next() => event,
        };
        let Some(event) = event else { break };
        if let Ok(event) = &event
            && let Some(line) = health.event(event)
        {
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
            let shown = shown
                .entry((uid.clone(), container.clone()))
                .or_default()
                .clone();
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
                    shown,
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
    /// Lines shown of every instance of this container, shared by their streams.
    shown: Shown,
}

/// The last lines shown of a container, by timestamp and text, shared by the streams of its
/// instances. The log endpoint serves the container's current instance, not the one a stream
/// asked about: a stream opened for an instance that just exited can get its successor's log
/// when the kubelet restarts the container in between, and that successor has a stream of its
/// own. A line with the same nanosecond timestamp and text was already shown by the other.
#[derive(Clone, Default)]
struct Shown(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<(Timestamp, String)>>>);

impl Shown {
    /// How many recent lines are remembered: far more than two racing streams can overlap.
    const KEEP: usize = 4096;

    /// Whether the line is new; remembered if so.
    fn first_time(&self, at: Timestamp, text: &str) -> bool {
        let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.iter().any(|(t, x)| *t == at && x == text) {
            return false;
        }
        if lines.len() == Self::KEEP {
            lines.pop_front();
        }
        lines.push_back((at, text.to_string()));
        true
    }
}

impl Stream {
    /// Whether the instance still runs, so a stream that ended should be resumed.
    async fn still_running(&self) -> bool {
        let Ok(pod) = self.api.get(&self.pod).await else {
            return false;
        };
        pod.status
            .iter()
            .flat_map(|s| {
                s.init_container_statuses
                    .iter()
                    .flatten()
                    .chain(s.container_statuses.iter().flatten())
            })
            .any(|s| {
                s.name == self.container
                    && s.container_id.as_deref() == Some(self.instance.as_str())
                    && s.state
                        .as_ref()
                        .and_then(|st| st.running.as_ref())
                        .is_some()
            })
    }
}

/// Follow one container instance until it stops or `cancel`.
async fn follow<S: LogSink>(stream: Stream, from_now: bool, cancel: CancellationToken, sink: S) {
    // The timestamp of the last line shown; a resumed stream skips what it already showed.
    let mut last: Option<Timestamp> = None;
    let mut failure: Option<String> = None;
    loop {
        let params = LogParams {
            container: Some(stream.container.clone()),
            follow: true,
            timestamps: true,
            // Resume a second early (sinceTime has whole seconds) and skip what was shown.
            since_time: last.map(|t| t - SignedDuration::from_secs(1)),
            // Nothing shown yet of an instance that ran before us: from now on only.
            tail_lines: (last.is_none() && from_now).then_some(0),
            ..LogParams::default()
        };
        let opened = tokio::select! {
            () = cancel.cancelled() => return,
            opened = stream.api.log_stream(&stream.pod, &params) => opened,
        };
        match opened {
            Ok(reader) => {
                futures_util::pin_mut!(reader);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    let read = tokio::select! {
                        () = cancel.cancelled() => return,
                        read = reader.read_until(b'\n', &mut buf) => read,
                    };
                    match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    let (at, text) = split_timestamp(line);
                    if let (Some(at), Some(last)) = (at, last)
                        && at <= last
                    {
                        continue;
                    }
                    last = at.or(last);
                    if let Some(at) = at
                        && !stream.shown.first_time(at, text)
                    {
                        continue;
                    }
                    sink.line(&stream.source, stream.colour, text);
                }
            }
            Err(err) => {
                let text = err.to_string();
                if failure.as_deref() != Some(text.as_str()) {
                    tracing::debug!("logs of {}: {text}", stream.source);
                    failure = Some(text);
                }
            }
        }
        // The stream ended: the container stopped (done), or the connection broke (resume).
        if !stream.still_running().await {
            return;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
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

    #[test]
    fn a_line_two_streams_of_one_container_both_read_is_shown_once() {
        let shown = Shown::default();
        let other = shown.clone();
        let at: Timestamp = "2026-11-25T20:00:00.123456789Z".parse().unwrap();
        assert!(shown.first_time(at, "main-started"));
        assert!(!other.first_time(at, "main-started"));
        // The same text at another moment is another line.
        let later: Timestamp = "2026-11-25T20:00:03.5Z".parse().unwrap();
        assert!(other.first_time(later, "main-started"));
    }

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
