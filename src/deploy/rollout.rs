//! Waiting for a deploy to come up, and saying why when it does not.
//!
//! Deployments, StatefulSets, DaemonSets and Jobs of the profile tier are polled until they are
//! complete, with one progress line whenever something changes. Their pods are examined along the
//! way, so a state that will not resolve itself (an image that is not in the node, a crash loop, a
//! failed Job) fails at once with the reason and the container's last log lines, instead of
//! waiting out the deadline. At the deadline, what is still pending is reported with the best
//! explanation found (unschedulable, failing probes).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, LogParams};

use super::manifest::Object;
use crate::config::Tier;
use crate::output::Printer;

const POLL: Duration = Duration::from_secs(1);
const LOG_LINES: i64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("{workload} failed: {reason}")]
    Failed {
        workload: String,
        reason: String,
        /// The container's last log lines, or events, that explain it.
        details: Vec<String>,
        hint: Option<String>,
    },
    #[error("rollout did not finish within {}s: {}", .timeout.as_secs(), .pending.iter().map(|(w, why)| format!("{w} ({why})")).collect::<Vec<_>>().join("; "))]
    Timeout {
        timeout: Duration,
        pending: Vec<(String, String)>,
    },
    #[error("failed to read the status of {workload}")]
    Api {
        workload: String,
        #[source]
        source: kube::Error,
    },
}

impl RolloutError {
    pub fn hint(&self) -> Option<String> {
        match self {
            RolloutError::Failed { details, hint, .. } => {
                let mut text = hint.clone().unwrap_or_default();
                if !details.is_empty() {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str("    ");
                    text.push_str(&details.join("\n    "));
                }
                (!text.is_empty()).then_some(text)
            }
            RolloutError::Timeout { .. } => Some(
                "raise the deadline with `--timeout`, or look closer: `kubectl describe pod`"
                    .into(),
            ),
            RolloutError::Api { .. } => {
                Some("check the cluster (`devloop doctor`); what was applied stays applied".into())
            }
        }
    }
}

/// A workload to wait for.
#[derive(Debug, Clone)]
struct Workload {
    kind: String,
    name: String,
    namespace: String,
}

impl Workload {
    fn display(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// Wait until every workload of the profile tier in `objects` is rolled out, or fail saying why.
pub async fn wait(
    client: &kube::Client,
    objects: &[Object],
    default_namespace: &str,
    timeout: Duration,
    printer: &Printer,
) -> Result<(), RolloutError> {
    let mut pending: Vec<Workload> = objects
        .iter()
        .filter(|o| {
            o.tier == Tier::Profile
                && matches!(o.kind(), "Deployment" | "StatefulSet" | "DaemonSet" | "Job")
        })
        .map(|o| Workload {
            kind: o.kind().to_string(),
            name: o.name().to_string(),
            namespace: o.namespace().unwrap_or(default_namespace).to_string(),
        })
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let started = Instant::now();
    let mut last_line = String::new();
    let mut progress: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let mut still = Vec::new();
        for w in pending {
            let (done, text) = status(client, &w).await?;
            progress.insert(w.display(), text);
            if done {
                continue;
            }
            diagnose_fatal(client, &w).await?;
            still.push(w);
        }
        pending = still;
        let line = progress
            .iter()
            .map(|(w, t)| format!("{w} {t}"))
            .collect::<Vec<_>>()
            .join(", ");
        if line != last_line {
            printer.info(&format!("rollout: {line}"));
            last_line = line;
        }
        if pending.is_empty() {
            printer.info(&format!(
                "rollout complete in {:.1}s",
                started.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        if started.elapsed() >= timeout {
            let mut reasons = Vec::new();
            for w in &pending {
                reasons.push((w.display(), explain_pending(client, w).await));
            }
            return Err(RolloutError::Timeout {
                timeout,
                pending: reasons,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

fn api_err(w: &Workload) -> impl FnOnce(kube::Error) -> RolloutError + '_ {
    move |source| RolloutError::Api {
        workload: w.display(),
        source,
    }
}

/// Whether `w` is rolled out, and a short progress text.
async fn status(client: &kube::Client, w: &Workload) -> Result<(bool, String), RolloutError> {
    let c = client.clone();
    let ns = w.namespace.as_str();
    Ok(match w.kind.as_str() {
        "Deployment" => {
            let d = Api::<Deployment>::namespaced(c, ns)
                .get(&w.name)
                .await
                .map_err(api_err(w))?;
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let st = d.status.unwrap_or_default();
            let fresh = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
            let updated = st.updated_replicas.unwrap_or(0);
            let available = st.available_replicas.unwrap_or(0);
            let total = st.replicas.unwrap_or(0);
            let done = fresh && updated >= want && available >= want && total == updated;
            (
                done,
                format!(
                    "{available}/{want} ready{}",
                    if total > updated {
                        format!(", {} old", total - updated)
                    } else {
                        String::new()
                    }
                ),
            )
        }
        "StatefulSet" => {
            let s = Api::<StatefulSet>::namespaced(c, ns)
                .get(&w.name)
                .await
                .map_err(api_err(w))?;
            let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let st = s.status.unwrap_or_default();
            let fresh = st.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0);
            let ready = st.ready_replicas.unwrap_or(0);
            let current = st.update_revision.is_none() || st.current_revision == st.update_revision;
            (
                fresh && ready >= want && current,
                format!("{ready}/{want} ready"),
            )
        }
        "DaemonSet" => {
            let d = Api::<DaemonSet>::namespaced(c, ns)
                .get(&w.name)
                .await
                .map_err(api_err(w))?;
            let st = d.status.unwrap_or_default();
            let want = st.desired_number_scheduled;
            let ready = st.number_ready;
            let updated = st.updated_number_scheduled.unwrap_or(0);
            (
                ready >= want && updated >= want,
                format!("{ready}/{want} ready"),
            )
        }
        _ => {
            let j = Api::<Job>::namespaced(c, ns)
                .get(&w.name)
                .await
                .map_err(api_err(w))?;
            let want = j.spec.as_ref().and_then(|s| s.completions).unwrap_or(1);
            let st = j.status.unwrap_or_default();
            let succeeded = st.succeeded.unwrap_or(0);
            let failed = st
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Failed" && c.status == "True");
            if let Some(cond) = failed {
                let details = pod_logs_for_job(client, w).await;
                return Err(RolloutError::Failed {
                    workload: w.display(),
                    reason: cond
                        .message
                        .unwrap_or_else(|| cond.reason.unwrap_or_else(|| "failed".into())),
                    details,
                    hint: None,
                });
            }
            (
                succeeded >= want,
                if succeeded >= want {
                    "complete".to_string()
                } else {
                    "running".to_string()
                },
            )
        }
    })
}

/// Pods of a workload, by its selector.
async fn pods(client: &kube::Client, w: &Workload) -> Vec<Pod> {
    let api = Api::<Pod>::namespaced(client.clone(), &w.namespace);
    let selector = match w.kind.as_str() {
        "Job" => format!("job-name={}", w.name),
        _ => match selector_of(client, w).await {
            Some(s) => s,
            None => return Vec::new(),
        },
    };
    api.list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

async fn selector_of(client: &kube::Client, w: &Workload) -> Option<String> {
    let c = client.clone();
    let ns = w.namespace.as_str();
    let labels = match w.kind.as_str() {
        "Deployment" => {
            Api::<Deployment>::namespaced(c, ns)
                .get(&w.name)
                .await
                .ok()?
                .spec?
                .selector
                .match_labels?
        }
        "StatefulSet" => {
            Api::<StatefulSet>::namespaced(c, ns)
                .get(&w.name)
                .await
                .ok()?
                .spec?
                .selector
                .match_labels?
        }
        "DaemonSet" => {
            Api::<DaemonSet>::namespaced(c, ns)
                .get(&w.name)
                .await
                .ok()?
                .spec?
                .selector
                .match_labels?
        }
        _ => return None,
    };
    Some(
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// Fail now if a pod of `w` is in a state that will not resolve itself.
async fn diagnose_fatal(client: &kube::Client, w: &Workload) -> Result<(), RolloutError> {
    for pod in pods(client, w).await {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for cs in containers {
            let Some(waiting) = cs.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                continue;
            };
            let reason = waiting.reason.clone().unwrap_or_default();
            let message = waiting.message.clone().unwrap_or_default();
            match reason.as_str() {
                "ErrImageNeverPull" | "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" => {
                    return Err(RolloutError::Failed {
                        workload: w.display(),
                        reason: format!(
                            "pod {pod_name} cannot get image `{}` ({reason})",
                            cs.image
                        ),
                        details: vec![message],
                        hint: Some(format!(
                            "the image is not in the cluster's node: it was not loaded (devloop loads the images it builds; check that `{}` is an artifact, or load it yourself)",
                            cs.image
                        )),
                    });
                }
                "CrashLoopBackOff" => {
                    let exit = cs
                        .last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .map(|t| t.exit_code);
                    return Err(RolloutError::Failed {
                        workload: w.display(),
                        reason: format!(
                            "container {} of pod {pod_name} keeps crashing{} (restarted {} times)",
                            cs.name,
                            exit.map(|c| format!(" with exit code {c}"))
                                .unwrap_or_default(),
                            cs.restart_count
                        ),
                        details: last_logs(client, &w.namespace, &pod_name, &cs.name, true).await,
                        hint: Some("its last log lines:".into()),
                    });
                }
                "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                    return Err(RolloutError::Failed {
                        workload: w.display(),
                        reason: format!(
                            "container {} of pod {pod_name} cannot start ({reason})",
                            cs.name
                        ),
                        details: vec![message],
                        hint: Some(
                            "a referenced Secret, ConfigMap or key is probably missing".into(),
                        ),
                    });
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The best explanation of why `w` is still pending.
async fn explain_pending(client: &kube::Client, w: &Workload) -> String {
    let pods = pods(client, w).await;
    if pods.is_empty() {
        return "no pods yet".into();
    }
    for pod in &pods {
        let status = pod.status.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Some(cond) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        {
            return format!(
                "pod {name} is Pending: {}",
                cond.message
                    .clone()
                    .unwrap_or_else(|| "not scheduled".into())
            );
        }
        let events = Api::<Event>::namespaced(client.clone(), &w.namespace)
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        if let Some(e) = events
            .iter()
            .rev()
            .find(|e| e.reason.as_deref() == Some("Unhealthy"))
        {
            return format!(
                "pod {name} fails its probe: {}",
                e.message.clone().unwrap_or_default().trim()
            );
        }
        if let Some(cs) = status
            .container_statuses
            .iter()
            .flatten()
            .find(|c| !c.ready)
        {
            return format!("container {} of pod {name} is not ready", cs.name);
        }
    }
    "waiting".into()
}

async fn pod_logs_for_job(client: &kube::Client, w: &Workload) -> Vec<String> {
    let Some(pod) = pods(client, w).await.into_iter().last() else {
        return Vec::new();
    };
    let name = pod.metadata.name.unwrap_or_default();
    let container = pod
        .spec
        .and_then(|s| s.containers.first().map(|c| c.name.clone()))
        .unwrap_or_default();
    last_logs(client, &w.namespace, &name, &container, false).await
}

async fn last_logs(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Vec<String> {
    let params = LogParams {
        container: Some(container.to_string()),
        previous,
        tail_lines: Some(LOG_LINES),
        ..Default::default()
    };
    match Api::<Pod>::namespaced(client.clone(), namespace)
        .logs(pod, &params)
        .await
    {
        Ok(text) => text
            .lines()
            .map(|l| format!("{pod}/{container} | {l}"))
            .collect(),
        Err(_) if previous => Box::pin(last_logs(client, namespace, pod, container, false)).await,
        Err(e) => vec![format!("(no logs: {e})")],
    }
}
