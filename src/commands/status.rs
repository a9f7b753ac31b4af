//! `devloop status`: what is deployed per tier and profile, pod health, forwards, last backup.

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::cli::{GlobalArgs, StatusArgs};
use crate::config::{self, Tier};
use crate::deploy::apply::Applier;
use crate::deploy::render::LABEL_PROJECT;
use crate::error::Error;
use crate::output::Printer;
use crate::{cluster, forward};

#[derive(Debug, Serialize)]
struct Status {
    project: String,
    context: String,
    namespace: String,
    persistent: Vec<String>,
    /// Profile name → its objects.
    profiles: std::collections::BTreeMap<String, Vec<String>>,
    pods: Vec<PodStatus>,
    forwards: Vec<ForwardStatus>,
    last_backup: Option<String>,
}

#[derive(Debug, Serialize)]
struct PodStatus {
    name: String,
    phase: String,
    ready: String,
    restarts: i32,
}

#[derive(Debug, Serialize)]
struct ForwardStatus {
    local: String,
    target: String,
    listening: bool,
}

pub async fn run(global: &GlobalArgs, args: &StatusArgs, printer: &Printer) -> Result<(), Error> {
    let project = config::load(&super::selection(global))?;
    let context = cluster::chosen_context(global.context.as_deref())?;
    let client = cluster::client(&context).await?;
    let namespace = project
        .namespace
        .clone()
        .unwrap_or_else(|| client.namespace.clone());
    let mut applier = Applier::new(client.kube.clone(), namespace.clone());

    let persistent = applier
        .inventory(&project.name, Tier::Persistent, &[])
        .await?;
    let mut profiles = std::collections::BTreeMap::<String, Vec<String>>::new();
    for live in applier.inventory(&project.name, Tier::Profile, &[]).await? {
        profiles
            .entry(live.profile.clone().unwrap_or_else(|| "?".into()))
            .or_default()
            .push(live.display());
    }
    let pods = Api::<Pod>::all(client.kube.clone())
        .list(&ListParams::default().labels(&format!("{LABEL_PROJECT}={}", project.name)))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let statuses = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
                .unwrap_or_default();
            PodStatus {
                name: p.metadata.name.clone().unwrap_or_default(),
                phase: p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default(),
                ready: format!(
                    "{}/{}",
                    statuses.iter().filter(|c| c.ready).count(),
                    statuses.len()
                ),
                restarts: statuses.iter().map(|c| c.restart_count).sum(),
            }
        })
        .collect();
    let forwards = project
        .forwards
        .iter()
        .map(|f| ForwardStatus {
            local: format!("127.0.0.1:{}", f.local_port),
            target: format!("{}/{}:{}", f.kind, f.name, f.port),
            listening: !forward::is_free(f.local_port),
        })
        .collect();
    let last_backup = match &project.backup {
        Some(b) => last_backup(&client.kube, &namespace, &b.cron_job).await,
        None => None,
    };
    let status = Status {
        project: project.name.clone(),
        context,
        namespace,
        persistent: persistent.iter().map(|l| l.display()).collect(),
        profiles,
        pods,
        forwards,
        last_backup,
    };
    if args.json {
        printer.data(&(serde_json::to_string_pretty(&status).expect("status serializes") + "\n"));
        return Ok(());
    }
    printer.data(&human(&status));
    Ok(())
}

/// The newest successful Job of the backup CronJob (scheduled or manual).
async fn last_backup(client: &kube::Client, namespace: &str, cron_job: &str) -> Option<String> {
    let cron = Api::<CronJob>::namespaced(client.clone(), namespace)
        .get_opt(cron_job)
        .await
        .ok()??;
    let uid = cron.metadata.uid.clone();
    let jobs = Api::<Job>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .ok()?
        .items;
    let newest = jobs
        .iter()
        .filter(|j| {
            j.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .filter_map(|j| {
            Some((
                j.status.as_ref()?.completion_time.as_ref()?.0,
                j.metadata.name.clone()?,
            ))
        })
        .max_by_key(|(t, _)| *t);
    match newest {
        Some((time, name)) => Some(format!("{time} ({name})")),
        None => cron
            .status
            .and_then(|s| s.last_successful_time)
            .map(|t| t.0.to_string()),
    }
}

fn human(s: &Status) -> String {
    let mut out = format!(
        "project {} — context {}, namespace {}\n",
        s.project, s.context, s.namespace
    );
    out.push_str(&format!(
        "persistent tier: {}\n",
        if s.persistent.is_empty() {
            "not applied".to_string()
        } else {
            s.persistent.join(", ")
        }
    ));
    if s.profiles.is_empty() {
        out.push_str("profile tier: nothing deployed\n");
    }
    for (profile, objects) in &s.profiles {
        out.push_str(&format!("profile `{profile}`: {}\n", objects.join(", ")));
    }
    for p in &s.pods {
        out.push_str(&format!(
            "  pod {:<40} {:<10} ready {:<5} restarts {}\n",
            p.name, p.phase, p.ready, p.restarts
        ));
    }
    for f in &s.forwards {
        out.push_str(&format!(
            "forward {} → {} ({})\n",
            f.local,
            f.target,
            if f.listening {
                "listening"
            } else {
                "not running"
            }
        ));
    }
    out.push_str(&format!(
        "last backup: {}\n",
        s.last_backup.as_deref().unwrap_or("none")
    ));
    out
}
