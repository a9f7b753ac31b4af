//! Running what `backup` creates and saying what happens: a Job is created, followed to the end
//! (its pods' progress, their logs streamed as they come) and explained when it fails; the lister
//! pod is run, read and deleted.
//!
//! Every wait has a deadline and a cancellation token, and says what it waits for. Jobs are left
//! to run when devloop stops waiting (a half-stopped dump or restore helps nobody); the lister pod
//! is always deleted.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures_util::io::AsyncBufReadExt;
use futures_util::{StreamExt, pin_mut};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::error::{BackupError, KubeFailure, Leaves, Stuck};
use super::template;
use crate::output::{Printer, Style};

/// How often Jobs and pods are looked at.
const POLL: Duration = Duration::from_secs(1);
/// After this long without news, say that devloop is still waiting and for what.
const QUIET_PERIOD: Duration = Duration::from_secs(20);
/// A pod that cannot start for this long (image missing, Secret missing) will not start by itself.
const START_GRACE: Duration = Duration::from_secs(6);
/// How long to wait for the last log lines after a Job finished.
const LOG_DRAIN: Duration = Duration::from_secs(5);
/// Log lines kept for finding the written file and for explaining failures.
const KEEP_LINES: usize = 2000;
const TAIL_LINES: usize = 15;

/// Container waiting reasons that do not go away by waiting.
const STUCK: [&str; 5] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Where and how to run things, and when to give up.
pub struct Runner<'a> {
    pub kube: kube::Client,
    pub namespace: &'a str,
    pub printer: &'a Printer,
    pub cancel: &'a CancellationToken,
    pub timeout: Duration,
}

/// A Job that completed.
#[derive(Debug)]
pub struct Finished {
    pub name: String,
    /// Its pods' log lines, in the order they arrived.
    pub logs: Vec<String>,
    /// When the Job started, by the API server's clock (Unix seconds).
    pub started: Option<i64>,
    pub took: Duration,
}

impl Runner<'_> {
    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.kube.clone(), self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.kube.clone(), self.namespace)
    }

    /// Create `job` (`what`: `backup`, `restore`); a name taken (two runs in one second) gets a
    /// counter. Returns the name used. After Ctrl+C nothing is created.
    pub async fn create_job(
        &self,
        mut job: Job,
        what: &'static str,
    ) -> Result<String, BackupError> {
        if self.cancel.is_cancelled() {
            return Err(BackupError::InterruptedBeforeStart {
                what,
                namespace: self.namespace.to_string(),
            });
        }
        let base = job.metadata.name.clone().unwrap_or_default();
        for attempt in 1.. {
            let name = if attempt == 1 {
                base.clone()
            } else {
                template::job_name(&base, &attempt.to_string())
            };
            job.metadata.name = Some(name.clone());
            match self.jobs().create(&PostParams::default(), &job).await {
                Ok(_) => return Ok(name),
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => continue,
                Err(e) => {
                    return Err(BackupError::Create {
                        kind: "Job",
                        name,
                        namespace: self.namespace.to_string(),
                        source: e.into(),
                    });
                }
            }
        }
        unreachable!("the loop returns by its fifth attempt")
    }

    /// Follow Job `name` until it completes or fails, printing its pods' states and logs.
    /// `what` names it in messages (`backup`, `restore`).
    pub async fn follow_job(
        &self,
        name: &str,
        what: &'static str,
    ) -> Result<Finished, BackupError> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let (tx, mut rx) = mpsc::channel::<(String, String)>(256);
        let mut streams = JoinSet::new();
        let mut streaming: HashSet<(String, String)> = HashSet::new();
        let mut states: HashMap<String, String> = HashMap::new();
        let mut stuck_since: HashMap<String, Instant> = HashMap::new();
        let mut logs: Vec<(String, String)> = Vec::new();
        let mut last_news = Instant::now();
        let mut summary = "no pod yet".to_string();
        let selector = format!("job-name={name}");
        let what_job = format!("{what} Job `{name}`");
        // An interval, not a sleep per turn: a chatty Job's log lines must not postpone polling.
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let job = loop {
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    return Err(BackupError::Interrupted {
                        what: what_job,
                        namespace: self.namespace.to_string(),
                        leaves: Leaves::Job(name.to_string()),
                    });
                }
                Some((pod, line)) = rx.recv() => {
                    self.print_log_line(&line);
                    keep(&mut logs, pod, line);
                    last_news = Instant::now();
                    continue;
                }
                _ = tick.tick() => {}
            }
            if Instant::now() >= deadline {
                return Err(BackupError::Timeout {
                    what: what_job,
                    namespace: self.namespace.to_string(),
                    waited: self.timeout,
                    state: summary,
                    follow: Some(format!("-n {} logs -f job/{name}", self.namespace)),
                });
            }
            let job = self.jobs().get(name).await.map_err(|e| BackupError::Read {
                kind: "Job",
                name: name.to_string(),
                namespace: self.namespace.to_string(),
                source: e.into(),
            })?;
            let pods = self.job_pods(name, &selector).await?;
            for pod in &pods {
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                let state = describe(pod);
                if states.get(&pod_name) != Some(&state.text) {
                    self.printer
                        .info(&format!("{what}: pod {pod_name}: {}", state.text));
                    states.insert(pod_name.clone(), state.text.clone());
                    last_news = Instant::now();
                }
                summary = format!("pod {pod_name} is {}", state.text);
                if let Some(stuck) = state.stuck {
                    let since = *stuck_since
                        .entry(pod_name.clone())
                        .or_insert_with(Instant::now);
                    if since.elapsed() >= START_GRACE {
                        // Left alone, it would start whenever the missing piece appears and
                        // surprise everyone; devloop created it, so devloop removes it.
                        self.delete_job(name, what).await;
                        return Err(BackupError::StartFailed {
                            owner: what_job,
                            pod: pod_name,
                            namespace: self.namespace.to_string(),
                            stuck: Box::new(stuck),
                        });
                    }
                } else {
                    stuck_since.remove(&pod_name);
                }
                for container in state.started {
                    if streaming.insert((pod_name.clone(), container.clone())) {
                        streams.spawn(stream_logs(
                            self.pods(),
                            pod_name.clone(),
                            container,
                            tx.clone(),
                        ));
                    }
                }
            }
            if finished(&job).is_some() {
                break job;
            }
            if last_news.elapsed() >= QUIET_PERIOD {
                self.printer.info(&format!(
                    "{what}: still waiting for Job `{name}` ({}s, gives up after {}s): {summary}",
                    start.elapsed().as_secs(),
                    self.timeout.as_secs()
                ));
                last_news = Instant::now();
            }
        };

        // The log streams end when their containers have; collect what is still in flight.
        drop(tx);
        let drain = tokio::time::sleep(LOG_DRAIN);
        tokio::pin!(drain);
        loop {
            tokio::select! {
                line = rx.recv() => match line {
                    Some((pod, line)) => {
                        self.print_log_line(&line);
                        keep(&mut logs, pod, line);
                    }
                    None => break,
                },
                _ = &mut drain => break,
                _ = self.cancel.cancelled() => break,
            }
        }
        streams.abort_all();

        let started = job
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.as_second());
        if finished(&job) == Some(false) {
            let pods = self.job_pods(name, &selector).await.unwrap_or_default();
            let (why, pod) = explain_failure(&job, &pods);
            let mut log_tail: Vec<String> = logs
                .iter()
                .filter(|(p, _)| pod.as_deref().is_none_or(|want| p == want))
                .map(|(_, line)| line.clone())
                .collect();
            if log_tail.is_empty()
                && let Some(pod) = &pod
            {
                log_tail = self.tail(pod).await;
            }
            let skip = log_tail.len().saturating_sub(TAIL_LINES);
            return Err(BackupError::JobFailed {
                what,
                job: name.to_string(),
                namespace: self.namespace.to_string(),
                why,
                log_tail: log_tail.split_off(skip),
            });
        }
        Ok(Finished {
            name: name.to_string(),
            logs: logs.into_iter().map(|(_, line)| line).collect(),
            started,
            took: start.elapsed(),
        })
    }

    async fn delete_job(&self, name: &str, what: &str) {
        match self.jobs().delete(name, &DeleteParams::background()).await {
            Ok(_) => self.printer.info(&format!(
                "{what}: deleted Job `{name}`, which cannot start"
            )),
            Err(e) => self.printer.warn(&format!(
                "could not delete Job `{name}` in namespace `{}` ({}); `kubectl -n {} delete job {name}` removes it",
                self.namespace,
                KubeFailure::from(e),
                self.namespace
            )),
        }
    }

    async fn job_pods(&self, job: &str, selector: &str) -> Result<Vec<Pod>, BackupError> {
        let mut pods = self
            .pods()
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| BackupError::ListPods {
                job: job.to_string(),
                namespace: self.namespace.to_string(),
                source: e.into(),
            })?
            .items;
        pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        Ok(pods)
    }

    /// The last lines of a pod's first container, best effort (for failure reports).
    async fn tail(&self, pod: &str) -> Vec<String> {
        let params = LogParams {
            tail_lines: Some(TAIL_LINES as i64),
            ..Default::default()
        };
        match self.pods().logs(pod, &params).await {
            Ok(text) => text.lines().map(str::to_string).collect(),
            Err(e) => {
                tracing::debug!("no logs for pod {pod}: {e}");
                Vec::new()
            }
        }
    }

    fn print_log_line(&self, line: &str) {
        self.printer
            .info(&format!("  {} {line}", self.printer.paint(Style::Dim, "│")));
    }

    /// Run `pod` to its end and return what it printed; the pod is deleted on every path.
    pub async fn run_pod(&self, pod: Pod, what: &str) -> Result<String, BackupError> {
        let created = self
            .pods()
            .create(&PostParams::default(), &pod)
            .await
            .map_err(|e| BackupError::Create {
                kind: "Pod",
                name: pod
                    .metadata
                    .name
                    .clone()
                    .or(pod.metadata.generate_name.clone())
                    .unwrap_or_default(),
                namespace: self.namespace.to_string(),
                source: e.into(),
            })?;
        let name = created.metadata.name.unwrap_or_default();
        tracing::debug!("created pod {name} ({what})");
        let mut result = self.wait_pod(&name, what).await;
        let delete = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::background()
        };
        if let Err(e) = self.pods().delete(&name, &delete).await {
            self.printer.warn(&format!(
                "could not delete pod `{name}` in namespace `{}` ({}); `kubectl -n {} delete pod {name}` removes it",
                self.namespace,
                KubeFailure::from(e),
                self.namespace
            ));
            if let Err(BackupError::Interrupted { leaves, .. }) = &mut result {
                *leaves = Leaves::Pod(name.clone());
            }
        }
        result
    }

    async fn wait_pod(&self, name: &str, what: &str) -> Result<String, BackupError> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut last = String::new();
        let mut last_news = Instant::now();
        let mut stuck_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    return Err(BackupError::Interrupted {
                        what: format!("pod `{name}` ({what})"),
                        namespace: self.namespace.to_string(),
                        // `run_pod` deletes the pod.
                        leaves: Leaves::Nothing,
                    });
                }
                _ = tokio::time::sleep(POLL) => {}
            }
            let pod = self.pods().get(name).await.map_err(|e| BackupError::Read {
                kind: "Pod",
                name: name.to_string(),
                namespace: self.namespace.to_string(),
                source: e.into(),
            })?;
            let state = describe(&pod);
            if state.text != last {
                // A quick listing is not news; its steps are for `-v`.
                if self.printer.verbose() > 0 {
                    self.printer
                        .info(&format!("{what}: pod {name}: {}", state.text));
                }
                last = state.text.clone();
                last_news = Instant::now();
            }
            if let Some(stuck) = state.stuck {
                if stuck_since.get_or_insert_with(Instant::now).elapsed() >= START_GRACE {
                    return Err(BackupError::StartFailed {
                        owner: format!("the pod that lists backups ({what})"),
                        pod: name.to_string(),
                        namespace: self.namespace.to_string(),
                        stuck: Box::new(stuck),
                    });
                }
            } else {
                stuck_since = None;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            match phase {
                Some("Succeeded") => {
                    return self
                        .pods()
                        .logs(name, &LogParams::default())
                        .await
                        .map_err(|e| BackupError::ReadLogs {
                            pod: name.to_string(),
                            namespace: self.namespace.to_string(),
                            source: e.into(),
                        });
                }
                Some("Failed") => {
                    let mut log_tail = self.tail(name).await;
                    let skip = log_tail.len().saturating_sub(TAIL_LINES);
                    return Err(BackupError::ListFailed {
                        pod: name.to_string(),
                        namespace: self.namespace.to_string(),
                        why: state.text,
                        log_tail: log_tail.split_off(skip),
                    });
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(BackupError::Timeout {
                    what: format!("pod `{name}` ({what})"),
                    namespace: self.namespace.to_string(),
                    waited: self.timeout,
                    state: state.text,
                    follow: None,
                });
            }
            if last_news.elapsed() >= QUIET_PERIOD {
                self.printer.info(&format!(
                    "{what}: still waiting for pod `{name}` ({}s): {}",
                    start.elapsed().as_secs(),
                    state.text
                ));
                last_news = Instant::now();
            }
        }
    }
}

/// Stream one container's log lines into `tx` until the container ends.
async fn stream_logs(
    pods: Api<Pod>,
    pod: String,
    container: String,
    tx: mpsc::Sender<(String, String)>,
) {
    let params = LogParams {
        follow: true,
        container: Some(container.clone()),
        ..Default::default()
    };
    let stream = match pods.log_stream(&pod, &params).await {
        Ok(stream) => stream,
        Err(e) => {
            // The failure report fetches the tail again; nothing is lost for the user.
            tracing::debug!("log stream of {pod}/{container}: {e}");
            return;
        }
    };
    let lines = stream.lines();
    pin_mut!(lines);
    while let Some(Ok(line)) = lines.next().await {
        if tx.send((pod.clone(), line)).await.is_err() {
            break;
        }
    }
}

fn keep(logs: &mut Vec<(String, String)>, pod: String, line: String) {
    if logs.len() >= KEEP_LINES {
        logs.remove(0);
    }
    logs.push((pod, line));
}

/// `Some(true)` once the Job completed, `Some(false)` once it failed, `None` while it runs.
fn finished(job: &Job) -> Option<bool> {
    let conditions = job.status.as_ref()?.conditions.as_deref()?;
    let holds = |kind: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == kind && c.status == "True")
    };
    if holds("Complete") {
        Some(true)
    } else if holds("Failed") {
        Some(false)
    } else {
        None
    }
}

/// A pod as one line, whether it cannot start, and which containers have logs to stream.
struct PodState {
    text: String,
    /// A container that will not start by waiting.
    stuck: Option<Stuck>,
    started: Vec<String>,
}

fn describe(pod: &Pod) -> PodState {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.clone().unwrap_or_else(|| "Pending".into());
    let containers = status.container_statuses.clone().unwrap_or_default();
    let started: Vec<String> = containers
        .iter()
        .filter(|c| {
            c.state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        })
        .map(|c| c.name.clone())
        .collect();
    let mut stuck = None;
    let text = match phase.as_str() {
        "Pending" => {
            let waiting = containers.iter().find_map(|c| {
                let w = c.state.as_ref()?.waiting.as_ref()?;
                Some((c, w.reason.clone()?, w.message.clone().unwrap_or_default()))
            });
            let unscheduled = status
                .conditions
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False");
            match (waiting, unscheduled) {
                (Some((c, reason, message)), _) => {
                    if STUCK.contains(&reason.as_str()) {
                        stuck = Some(Stuck {
                            reason: reason.clone(),
                            message: message.clone(),
                            image: Some(c.image.clone()),
                        });
                    }
                    if message.is_empty() {
                        format!("Pending ({reason})")
                    } else {
                        format!("Pending ({reason}: {message})")
                    }
                }
                (None, Some(c)) => format!(
                    "Pending: not scheduled ({})",
                    c.message.clone().or(c.reason.clone()).unwrap_or_default()
                ),
                // The kubelet reports containers before the phase catches up.
                (None, None) if !started.is_empty() => "Running".into(),
                (None, None) => "Pending (starting)".into(),
            }
        }
        "Failed" => match containers.iter().find_map(terminated) {
            Some(t) => format!("Failed ({t})"),
            None => format!(
                "Failed ({})",
                status
                    .message
                    .clone()
                    .or(status.reason.clone())
                    .unwrap_or_else(|| "no reason given".into())
            ),
        },
        other => other.to_string(),
    };
    PodState {
        text,
        stuck,
        started,
    }
}

/// `container backup exited with code 1 (Error)` for a container that ended badly.
fn terminated(c: &ContainerStatus) -> Option<String> {
    let t = c.state.as_ref()?.terminated.as_ref()?;
    if t.exit_code == 0 {
        return None;
    }
    let mut text = format!("container {} exited with code {}", c.name, t.exit_code);
    if let Some(reason) = &t.reason {
        text.push_str(&format!(" ({reason})"));
    }
    if let Some(message) = t.message.as_deref().filter(|m| !m.trim().is_empty()) {
        text.push_str(&format!(": {}", message.trim()));
    }
    Some(text)
}

/// Why a Job failed, on one line, and the pod whose logs tell more.
fn explain_failure(job: &Job, pods: &[Pod]) -> (String, Option<String>) {
    let condition = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    let mut why = match condition {
        Some(c) => match (&c.reason, &c.message) {
            (Some(r), Some(m)) => format!("{r}: {m}"),
            (Some(r), None) => r.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) => "failed".into(),
        },
        None => "failed".into(),
    };
    let last = pods.last();
    if let Some(pod) = last {
        let name = pod.metadata.name.clone().unwrap_or_default();
        why.push_str(&format!("; pod {name}: {}", describe(pod).text));
    }
    (why, last.and_then(|p| p.metadata.name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn pod_states_read_as_one_line() {
        let p = pod(serde_json::json!({
            "phase": "Pending",
            "containerStatuses": [{"name": "backup", "image": "postgres:16", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]
        }));
        let s = describe(&p);
        assert_eq!(s.text, "Pending (ImagePullBackOff: Back-off pulling image)");
        assert_eq!(
            s.stuck,
            Some(Stuck {
                reason: "ImagePullBackOff".into(),
                message: "Back-off pulling image".into(),
                image: Some("postgres:16".into())
            })
        );
        assert!(s.started.is_empty());

        let p = pod(serde_json::json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."}]
        }));
        assert_eq!(
            describe(&p).text,
            "Pending: not scheduled (0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims.)"
        );

        let p = pod(serde_json::json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "backup", "image": "postgres:16", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}]
        }));
        let s = describe(&p);
        assert_eq!(
            s.text,
            "Failed (container backup exited with code 2 (Error))"
        );
        assert_eq!(s.started, ["backup"]);
    }

    #[test]
    fn a_failed_job_is_explained_by_its_condition_and_last_pod() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j"},
            "status": {"conditions": [
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit"}
            ]}
        }))
        .unwrap();
        assert_eq!(finished(&job), Some(false));
        let failed = pod(serde_json::json!({
            "phase": "Failed",
            "containerStatuses": [{"name": "backup", "image": "postgres:16", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]
        }));
        let (why, pod) = explain_failure(&job, &[failed]);
        assert_eq!(
            why,
            "BackoffLimitExceeded: Job has reached the specified backoff limit; pod p: Failed (container backup exited with code 1 (Error))"
        );
        assert_eq!(pod.as_deref(), Some("p"));
    }
}

/// Ctrl+C as the API server sees it: what devloop creates, deletes or leaves. A scripted mock
/// stands in for the server (`tower_test`), since a real one cannot refuse a delete on demand.
#[cfg(test)]
mod interrupt_tests {
    use super::*;
    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use std::sync::{Arc, Mutex};

    /// A server that creates what it is sent and answers deletes with `delete`; it records
    /// `METHOD path` of each request.
    fn server(delete: StatusCode) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().to_string();
                log.lock()
                    .unwrap()
                    .push(format!("{method} {}", request.uri().path()));
                let (status, body) = match method.as_str() {
                    "POST" => (
                        StatusCode::CREATED,
                        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lister-1"}}),
                    ),
                    _ if delete.is_success() => (
                        delete,
                        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lister-1"}}),
                    ),
                    _ => (
                        delete,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": delete.as_u16(), "reason": "InternalError", "message": "etcd is away"}),
                    ),
                };
                send.send_response(
                    Response::builder()
                        .status(status)
                        .body(Body::from(body.to_string().into_bytes()))
                        .unwrap(),
                );
            }
        });
        (kube::Client::new(service, "dev"), seen)
    }

    /// What `body` gets from a runner on `kube` whose Ctrl+C was already pressed.
    async fn after_ctrl_c<T>(kube: kube::Client, body: impl AsyncFnOnce(&Runner<'_>) -> T) -> T {
        let printer = Printer::new(true, 0, crate::cli::ColorChoice::Never);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let runner = Runner {
            kube,
            namespace: "dev",
            printer: &printer,
            cancel: &cancel,
            timeout: Duration::from_secs(5),
        };
        body(&runner).await
    }

    #[tokio::test]
    async fn after_ctrl_c_no_job_is_started() {
        let (kube, seen) = server(StatusCode::OK);
        let err = after_ctrl_c(kube, async |runner| {
            runner
                .create_job(Job::default(), "backup")
                .await
                .unwrap_err()
        })
        .await;
        assert_eq!(
            err.to_string(),
            "interrupted before starting the backup Job in namespace `dev`; nothing was started"
        );
        assert_eq!(err.exit_status(), crate::error::ExitStatus::Interrupted);
        assert!(
            seen.lock().unwrap().is_empty(),
            "{:?}",
            seen.lock().unwrap()
        );
    }

    #[tokio::test]
    async fn an_interrupted_listing_says_whether_its_pod_is_gone() {
        for (delete, leaves) in [
            (StatusCode::OK, Leaves::Nothing),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Leaves::Pod("lister-1".into()),
            ),
        ] {
            let (kube, seen) = server(delete);
            let err = after_ctrl_c(kube, async |runner| {
                runner
                    .run_pod(Pod::default(), "listing backups")
                    .await
                    .unwrap_err()
            })
            .await;
            let BackupError::Interrupted { leaves: left, .. } = &err else {
                panic!("{err}");
            };
            assert_eq!(*left, leaves);
            assert_eq!(err.exit_status(), crate::error::ExitStatus::Interrupted);
            assert_eq!(
                *seen.lock().unwrap(),
                [
                    "POST /api/v1/namespaces/dev/pods",
                    "DELETE /api/v1/namespaces/dev/pods/lister-1"
                ]
            );
            let hint = err.hint().unwrap();
            match leaves {
                Leaves::Nothing => assert_eq!(
                    hint,
                    "nothing devloop started is left running in the cluster"
                ),
                _ => assert!(
                    hint.contains("kubectl -n dev delete pod lister-1"),
                    "{hint}"
                ),
            }
        }
    }
}
