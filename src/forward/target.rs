//! Which pod takes a forward's next connection, and on which port.
//!
//! One watch of the namespace's pods (shared by every forward) and one of each forwarded object
//! (its Service, Deployment or StatefulSet) keep in-memory stores current, so picking a pod is a
//! lookup; every change wakes connections that wait for a Ready pod. Deciding is fresh for each
//! connection, so a selector, a targetPort or the set of pods can change under a running forward.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ConnectionError, describe};
use crate::config::PortForward;
use crate::outage::{self, WatchHealth};
use crate::output::Printer;

/// A store kept current by a watch, and whether the watch has listed everything yet.
pub(super) struct Watched<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    listed: Arc<AtomicBool>,
    /// Why the watch fails while it retries (its short cause), for "waiting for …" messages.
    failure: Arc<Mutex<Option<String>>>,
}

impl<K: Resource + 'static> Clone for Watched<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            listed: self.listed.clone(),
            failure: self.failure.clone(),
        }
    }
}

impl<K: Resource + Clone + 'static> Watched<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn listed(&self) -> bool {
        self.listed.load(Ordering::Acquire)
    }

    /// " (the watch fails: …)" while it does, for messages.
    fn failing(&self) -> String {
        match &*self.failure.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(f) => format!(" (the watch fails: {f})"),
            None => String::new(),
        }
    }
}

/// Watch `api` into a store until `cancel`, notifying `changed` on every event. Failures are
/// retried with backoff (the API server may come back); `what` (who depends on the watch) says
/// once that it fails and once that it is back.
fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    what: String,
    changed: &Arc<Notify>,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
    printer: Printer,
) -> Watched<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    let (store, writer) = reflector::store();
    let watched = Watched {
        store,
        listed: Arc::new(AtomicBool::new(false)),
        failure: Arc::new(Mutex::new(None)),
    };
    let (listed, failure) = (watched.listed.clone(), watched.failure.clone());
    let (changed, cancel) = (changed.clone(), cancel.clone());
    tasks.spawn(async move {
        let events = outage::watch_events(api, config)
            .modify(|o| o.managed_fields_mut().clear())
            .reflect(writer);
        futures_util::pin_mut!(events);
        let mut health = WatchHealth::new(what);
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                None => return,
                Some(Ok(event)) => {
                    if matches!(event, watcher::Event::InitDone) {
                        listed.store(true, Ordering::Release);
                    }
                    if let Some(line) = health.event(&event) {
                        printer.info(&line);
                    }
                }
                Some(Err(err)) => {
                    if let Some(line) = health.failed(&err) {
                        printer.warn(&line);
                    }
                }
            }
            *failure.lock().unwrap_or_else(|e| e.into_inner()) = health.cause().map(String::from);
            changed.notify_waiters();
        }
    });
    watched
}

/// The watch of every pod in `namespace`, shared by the forwards.
pub(super) fn watch_pods(
    client: &kube::Client,
    namespace: &str,
    changed: &Arc<Notify>,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
    printer: Printer,
) -> Watched<Pod> {
    watch(
        Api::namespaced(client.clone(), namespace),
        watcher::Config::default(),
        format!("forwards (pods of namespace {namespace})"),
        changed,
        tasks,
        cancel,
        printer,
    )
}

/// How long a connection waits quietly before the forward says what it waits for.
const ANNOUNCE_AFTER: Duration = Duration::from_secs(1);

/// The object a forward names, watched by name.
enum Object {
    Service(Watched<Service>),
    Deployment(Watched<Deployment>),
    StatefulSet(Watched<StatefulSet>),
    Pod,
}

/// Where one connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    pub pod: String,
    pub port: u16,
}

/// The port on the pod: a number, or a container port's name (a Service's named targetPort).
enum PodPort {
    Number(u16),
    Named(String),
}

/// Why there is no endpoint now.
enum Unavailable {
    /// Worth waiting for; says what is missing.
    Wait(String),
    /// Waiting will not help.
    Fail(ConnectionError),
}

/// One forward: its stores, and what it last told the user.
pub(super) struct Target {
    pub label: String,
    forward: PortForward,
    namespace: String,
    pods_api: Api<Pod>,
    pods: Watched<Pod>,
    object: Object,
    changed: Arc<Notify>,
    /// Round robin among Ready pods.
    next: AtomicUsize,
    /// The last problem printed, so each is printed once until connections go through again.
    notice: Mutex<Option<String>>,
    printer: Printer,
}

impl Target {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: &kube::Client,
        namespace: &str,
        forward: PortForward,
        pods: Watched<Pod>,
        changed: Arc<Notify>,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
        printer: Printer,
    ) -> Self {
        let label = describe(&forward);
        let by_name = watcher::Config::default().fields(&format!("metadata.name={}", forward.name));
        // One watch per kind; the arm's variant picks the type the API is watched as.
        macro_rules! watched {
            () => {
                watch(
                    Api::namespaced(client.clone(), namespace),
                    by_name,
                    format!("forward {label}"),
                    &changed,
                    tasks,
                    cancel,
                    printer,
                )
            };
        }
        let object = match forward.kind.as_str() {
            "service" => Object::Service(watched!()),
            "deployment" => Object::Deployment(watched!()),
            "statefulset" => Object::StatefulSet(watched!()),
            // config::load accepts only these four kinds.
            _ => Object::Pod,
        };
        Self {
            label,
            forward,
            namespace: namespace.to_string(),
            pods_api: Api::namespaced(client.clone(), namespace),
            pods,
            object,
            changed,
            next: AtomicUsize::new(0),
            notice: Mutex::new(None),
            printer,
        }
    }

    pub fn pods_api(&self) -> &Api<Pod> {
        &self.pods_api
    }

    /// A Ready pod for the next attempt of a connection, skipping those in `tried`. With none, wait
    /// until `deadline` for one (printing once what is missing). When every Ready pod has been
    /// tried — a new pod's server may not listen yet — `tried` is cleared after a short pause.
    pub async fn pick(
        &self,
        tried: &mut HashSet<String>,
        deadline: Instant,
        waited_since: Instant,
    ) -> Result<Endpoint, ConnectionError> {
        let mut pause = Duration::from_millis(50);
        loop {
            // Registered before looking, so a change between the look and the wait is not lost.
            let changed = self.changed.notified();
            futures_util::pin_mut!(changed);
            changed.as_mut().enable();
            let missing = match self.endpoints() {
                Ok(endpoints) => {
                    let fresh: Vec<Endpoint> = endpoints
                        .into_iter()
                        .filter(|e| !tried.contains(&e.pod))
                        .collect();
                    if !fresh.is_empty() {
                        let i = self.next.fetch_add(1, Ordering::Relaxed) % fresh.len();
                        return Ok(fresh[i].clone());
                    }
                    // All were tried for this connection: give them a moment, then again.
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(1));
                    tried.clear();
                    if Instant::now() >= deadline {
                        return Err(ConnectionError::NoReadyPod {
                            target: self.label.clone(),
                            waited: deadline - waited_since,
                            waiting_for: format!(
                                "a pod of {} that accepts port {}",
                                self.label, self.forward.port
                            ),
                        });
                    }
                    continue;
                }
                Err(Unavailable::Fail(err)) => return Err(err),
                Err(Unavailable::Wait(missing)) => missing,
            };
            // Short gaps (the first list at start, a pod replaced in a rollout) are not news.
            let announce_at = waited_since + ANNOUNCE_AFTER;
            if Instant::now() >= announce_at {
                self.announce(format!(
                    "{}: waiting for {missing}; new connections wait up to {}s",
                    self.label,
                    (deadline - waited_since).as_secs()
                ));
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(announce_at), if Instant::now() < announce_at => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Err(ConnectionError::NoReadyPod {
                        target: self.label.clone(),
                        waited: deadline - waited_since,
                        waiting_for: missing,
                    });
                }
            }
        }
    }

    /// The endpoints a connection may go to now, in a stable order.
    fn endpoints(&self) -> Result<Vec<Endpoint>, Unavailable> {
        let label = &self.label;
        if !self.pods.listed() {
            return Err(Unavailable::Wait(format!(
                "the pods of namespace {}{}",
                self.namespace,
                self.pods.failing()
            )));
        }
        let (selector, port) = match &self.object {
            Object::Pod => {
                let pod = self
                    .pods
                    .store
                    .find(|p| p.name_any() == self.forward.name)
                    .filter(|p| is_ready(p));
                return match pod {
                    Some(p) => Ok(vec![Endpoint {
                        pod: p.name_any(),
                        port: self.forward.port,
                    }]),
                    None => Err(Unavailable::Wait(format!("{label} to be Ready"))),
                };
            }
            Object::Service(watched) => {
                let service = object(watched, label)?;
                service_target(&service, &self.forward, label)?
            }
            Object::Deployment(watched) => {
                let selector = object(watched, label)?
                    .spec
                    .as_ref()
                    .map(|s| s.selector.clone());
                (
                    label_selector(selector, label)?,
                    PodPort::Number(self.forward.port),
                )
            }
            Object::StatefulSet(watched) => {
                let selector = object(watched, label)?
                    .spec
                    .as_ref()
                    .map(|s| s.selector.clone());
                (
                    label_selector(selector, label)?,
                    PodPort::Number(self.forward.port),
                )
            }
        };
        let mut ready: Vec<Arc<Pod>> = self
            .pods
            .store
            .state()
            .into_iter()
            .filter(|p| selector.matches(p.labels()) && is_ready(p))
            .collect();
        ready = newest_revision(ready);
        ready.sort_by_key(|p| p.name_any());
        let endpoints: Vec<Endpoint> = ready
            .iter()
            .filter_map(|p| {
                let port = match &port {
                    PodPort::Number(n) => *n,
                    PodPort::Named(name) => named_port(p, name)?,
                };
                Some(Endpoint {
                    pod: p.name_any(),
                    port,
                })
            })
            .collect();
        match (&port, endpoints.is_empty(), ready.is_empty()) {
            (_, false, _) => Ok(endpoints),
            (PodPort::Named(name), true, false) => {
                Err(Unavailable::Fail(ConnectionError::NoNamedPort {
                    target: label.clone(),
                    name: name.clone(),
                }))
            }
            _ => Err(Unavailable::Wait(format!(
                "a Ready pod matching {selector}{}",
                self.pods.failing()
            ))),
        }
    }

    /// Print `message` as a warning unless it is the last thing this forward printed.
    fn announce(&self, message: String) {
        let mut last = self.notice.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_deref() != Some(message.as_str()) {
            self.printer.warn(&message);
            *last = Some(message);
        }
    }

    /// A connection failed: say why, once.
    pub fn report(&self, err: &ConnectionError) {
        let mut message = err.to_string();
        if let Some(hint) = err.hint() {
            message = format!("{message}; {hint}");
        }
        self.announce(message);
    }

    /// A connection reached `pod`: after a problem was printed, say that it is over.
    pub fn reached(&self, pod: &str) {
        let mut last = self.notice.lock().unwrap_or_else(|e| e.into_inner());
        if last.take().is_some() {
            self.printer.info(&format!(
                "{}: connections go to pod {pod} again",
                self.label
            ));
        }
    }

    /// Whether `pod` is shutting down or gone, as far as the watch has seen.
    pub fn leaving(&self, pod: &str) -> bool {
        if !self.pods.listed() {
            return false;
        }
        let key = reflector::ObjectRef::new(pod).within(&self.namespace);
        self.pods
            .store
            .get(&key)
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
    }

    /// Resolves at the next change any watch of this forward sees.
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}

/// The forwarded object from its store, or what to wait for.
fn object<K>(watched: &Watched<K>, label: &str) -> Result<Arc<K>, Unavailable>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    if !watched.listed() {
        return Err(Unavailable::Wait(format!(
            "{label} to be listed{}",
            watched.failing()
        )));
    }
    watched
        .store
        .state()
        .into_iter()
        .next()
        .ok_or_else(|| Unavailable::Wait(format!("{label} to exist{}", watched.failing())))
}

/// A Service's pod selector and the pod port its `port` leads to (its targetPort).
fn service_target(
    service: &Service,
    forward: &PortForward,
    label: &str,
) -> Result<(Selector, PodPort), Unavailable> {
    let spec = service.spec.as_ref();
    let selector: BTreeMap<String, String> =
        spec.and_then(|s| s.selector.clone()).unwrap_or_default();
    if selector.is_empty() {
        return Err(Unavailable::Fail(ConnectionError::NoSelector {
            target: label.to_string(),
        }));
    }
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let Some(service_port) = ports.iter().find(|p| p.port == i32::from(forward.port)) else {
        return Err(Unavailable::Fail(ConnectionError::NoServicePort {
            target: label.to_string(),
            port: forward.port,
            available: ports.iter().map(|p| p.port).collect(),
        }));
    };
    let port = match &service_port.target_port {
        None => PodPort::Number(forward.port),
        Some(IntOrString::Int(n)) => match u16::try_from(*n) {
            Ok(n) => PodPort::Number(n),
            // The API server rejects such Services; treat it as the name it cannot be.
            Err(_) => PodPort::Named(n.to_string()),
        },
        Some(IntOrString::String(name)) => match name.parse::<u16>() {
            Ok(n) => PodPort::Number(n),
            Err(_) => PodPort::Named(name.clone()),
        },
    };
    Ok((selector.into_iter().collect(), port))
}

fn label_selector(
    selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    label: &str,
) -> Result<Selector, Unavailable> {
    let selector = Selector::try_from(selector.unwrap_or_default()).map_err(|source| {
        Unavailable::Fail(ConnectionError::InvalidSelector {
            target: label.to_string(),
            source,
        })
    })?;
    // An empty selector would match every pod of the namespace; the API server forbids it.
    if selector.selects_all() {
        return Err(Unavailable::Fail(ConnectionError::NoSelector {
            target: label.to_string(),
        }));
    }
    Ok(selector)
}

/// Ready, running and not being deleted: a pod that is shutting down keeps its Ready condition
/// for a while, but new connections must not go there.
pub(super) fn is_ready(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The labels Deployments and StatefulSets put on a pod to name the template it was made from.
const REVISION_LABELS: [&str; 2] = ["pod-template-hash", "controller-revision-hash"];

/// During a rollout the old pods stay Ready until the new ones are: new connections go to the
/// newest revision only, so a redeploy is served from the moment its first pod is Ready (and
/// not, by turns, by the version being replaced). Pods are grouped by their labels without the
/// revision label, so a Service over two workloads still reaches both.
fn newest_revision(ready: Vec<Arc<Pod>>) -> Vec<Arc<Pod>> {
    fn revision(pod: &Pod) -> Option<&String> {
        REVISION_LABELS.iter().find_map(|l| pod.labels().get(*l))
    }
    fn family(pod: &Pod) -> BTreeMap<String, String> {
        let mut labels = pod.labels().clone();
        labels.retain(|k, _| !REVISION_LABELS.contains(&k.as_str()));
        labels
    }
    let mut newest: Vec<(BTreeMap<String, String>, &Pod)> = Vec::new();
    for pod in &ready {
        let key = family(pod);
        match newest.iter_mut().find(|(f, _)| *f == key) {
            Some((_, best)) if best.creation_timestamp() < pod.creation_timestamp() => *best = pod,
            Some(_) => {}
            None => newest.push((key, pod)),
        }
    }
    let keep: Vec<(BTreeMap<String, String>, Option<String>)> = newest
        .into_iter()
        .map(|(f, p)| (f, revision(p).cloned()))
        .collect();
    ready
        .iter()
        .filter(|p| {
            let key = family(p);
            keep.iter()
                .any(|(f, r)| *f == key && (r.is_none() || r.as_ref() == revision(p)))
        })
        .cloned()
        .collect()
}

/// The number of the container port called `name`.
fn named_port(pod: &Pod, name: &str) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn only_running_ready_pods_that_are_not_deleted_take_connections() {
        let ready = serde_json::json!({
            "metadata": {"name": "web-1"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        });
        assert!(is_ready(&pod(ready.clone())));
        let mut deleting = ready.clone();
        deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        assert!(!is_ready(&pod(deleting)));
        let mut unready = ready;
        unready["status"]["conditions"][0]["status"] = "False".into();
        assert!(!is_ready(&pod(unready)));
    }

    #[test]
    fn new_connections_go_to_the_newest_revision() {
        let pod = |name: &str, app: &str, hash: &str, created: &str| {
            Arc::new(pod(serde_json::json!({
                "metadata": {"name": name, "creationTimestamp": created,
                    "labels": {"app": app, "pod-template-hash": hash}},
            })))
        };
        let names = |pods: Vec<Arc<Pod>>| {
            let mut names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
            names.sort();
            names
        };
        let old1 = pod("web-old-1", "web", "aaa", "2026-01-01T00:00:00Z");
        let old2 = pod("web-old-2", "web", "aaa", "2026-01-01T00:00:01Z");
        let new1 = pod("web-new-1", "web", "bbb", "2026-01-01T00:01:00Z");
        let api = pod("api-1", "api", "ccc", "2025-01-01T00:00:00Z");
        // Before the new revision is Ready: the old pods.
        assert_eq!(
            names(newest_revision(vec![old1.clone(), old2.clone()])),
            ["web-old-1", "web-old-2"]
        );
        // Once one new pod is Ready: only it; other workloads keep theirs.
        assert_eq!(
            names(newest_revision(vec![old1, old2, new1, api])),
            ["api-1", "web-new-1"]
        );
    }

    #[test]
    fn a_service_port_leads_to_its_target_port() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"port": 80, "targetPort": "http"},
                {"port": 81, "targetPort": 8081},
                {"port": 82}
            ]}
        }))
        .unwrap();
        let forward = |port| PortForward {
            kind: "service".into(),
            name: "web".into(),
            port,
            local_port: 8000,
        };
        let target = |port| service_target(&service, &forward(port), "service/web");
        assert!(matches!(target(80), Ok((_, PodPort::Named(n))) if n == "http"));
        assert!(matches!(target(81), Ok((_, PodPort::Number(8081)))));
        assert!(matches!(target(82), Ok((_, PodPort::Number(82)))));
        match target(90) {
            Err(Unavailable::Fail(e @ ConnectionError::NoServicePort { .. })) => {
                assert_eq!(
                    e.hint().unwrap(),
                    "a forward's `port` is the Service's port: one of 80, 81, 82"
                );
            }
            _ => panic!("port 90 is not on the Service"),
        }
        let with_port = pod(serde_json::json!({
            "metadata": {"name": "web-1"},
            "spec": {"containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}]}
        }));
        assert_eq!(named_port(&with_port, "http"), Some(8080));
        assert_eq!(named_port(&with_port, "metrics"), None);
    }
}
