//! The objects `backup` creates, built from the project's templates: a manual Job from the
//! CronJob's `jobTemplate`, a short-lived pod that lists the backup volume, and the restore Job
//! with `BACKUP_FILE` set.
//!
//! Pure functions over k8s-openapi types (no cluster), so each rule is unit-tested here. Creating
//! and waiting for the objects is `job`.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::deploy::render::{LABEL_MANAGED_BY, LABEL_PROFILE, LABEL_TIER};

/// Marks what devloop created for backups: `manual`, `list` or `restore`.
pub const LABEL_BACKUP: &str = "devloop.dev/backup";
/// What `kubectl create job --from=cronjob/…` puts on the Job, so tools tell it from scheduled runs.
pub const INSTANTIATE_ANNOTATION: &str = "cronjob.kubernetes.io/instantiate";
/// The environment variable the restore template reads the chosen file from.
pub const BACKUP_FILE_ENV: &str = "BACKUP_FILE";
/// Job names become the `job-name` label of their pods, and label values stop at 63 characters.
const MAX_JOB_NAME: usize = 63;

/// The PersistentVolumeClaim the backup CronJob writes to, and where its container sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupVolume {
    pub claim: String,
    /// The volume's name in the pod template.
    pub volume: String,
    pub mount_path: String,
    /// The container that mounts it (its image can list the files).
    pub container: String,
}

/// `<base>-<suffix>`, `base` shortened so the whole stays a valid Job name.
pub fn job_name(base: &str, suffix: &str) -> String {
    let room = MAX_JOB_NAME.saturating_sub(suffix.len() + 1);
    let cut: String = base.chars().take(room).collect();
    format!("{}-{suffix}", cut.trim_end_matches(['-', '.']))
}

/// A UTC timestamp that is valid in object names: `20261125-131902`.
pub fn name_stamp(at: k8s_openapi::jiff::Timestamp) -> String {
    at.strftime("%Y%m%d-%H%M%S").to_string()
}

/// The pod spec of the CronJob's Job template.
fn pod_spec(cron: &CronJob) -> Option<&PodSpec> {
    cron.spec
        .as_ref()?
        .job_template
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()
}

/// Where the CronJob keeps its backups: the first PersistentVolumeClaim a container mounts
/// read-write (the backup writes there), else the first one mounted at all.
pub fn backup_volume(cron: &CronJob) -> Option<BackupVolume> {
    let spec = pod_spec(cron)?;
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let claim_of = |mount: &VolumeMount| {
        volumes
            .iter()
            .find(|v| v.name == mount.name)
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .map(|pvc| pvc.claim_name.clone())
    };
    let mut candidates = Vec::new();
    for container in &spec.containers {
        for mount in container.volume_mounts.as_deref().unwrap_or_default() {
            if let Some(claim) = claim_of(mount) {
                let writable = !mount.read_only.unwrap_or(false);
                candidates.push((
                    writable,
                    BackupVolume {
                        claim,
                        volume: mount.name.clone(),
                        mount_path: mount.mount_path.trim_end_matches('/').to_string(),
                        container: container.name.clone(),
                    },
                ));
            }
        }
    }
    let first_writable = candidates.iter().position(|(writable, _)| *writable);
    let index = first_writable.or((!candidates.is_empty()).then_some(0))?;
    Some(candidates.swap_remove(index).1)
}

/// A Job from the CronJob's template, as `kubectl create job NAME --from=cronjob/CRON` makes it:
/// the template's labels and annotations, `cronjob.kubernetes.io/instantiate: manual`, and the
/// CronJob as controlling owner (so it is listed, and cleaned up, with the CronJob's runs).
pub fn manual_job(cron: &CronJob, name: &str) -> Job {
    let template = cron
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(INSTANTIATE_ANNOTATION.into(), "manual".into());
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(LABEL_BACKUP.into(), "manual".into());
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cron.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name: cron.metadata.name.clone().unwrap_or_default(),
                uid: cron.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Prints `SIZE MTIME NAME` per regular file of the directory `$1`. `stat -c` is in GNU
/// coreutils and busybox alike, so this works in the images backup Jobs are built on; names come
/// last so spaces in them survive. Temporary and hidden files are not backups.
const LIST_SCRIPT: &str = r#"cd "$1" || exit 3
for f in *; do
  case "$f" in *.partial|*.tmp) continue ;; esac
  if [ -f "$f" ]; then stat -c '%s %Y %n' -- "$f" || exit 4; fi
done
"#;

/// A pod that lists the backup volume: the CronJob container's image, user and scheduling, the
/// same claim mounted read-only, and a deadline so it never lingers if devloop goes away. Named
/// `<cronjob>-list-<random>` by the API server, so listings never collide.
pub fn lister_pod(cron: &CronJob, volume: &BackupVolume) -> Pod {
    let cron_name = cron.metadata.name.as_deref().unwrap_or("backup");
    let spec = pod_spec(cron).cloned().unwrap_or_default();
    let source = spec
        .containers
        .iter()
        .find(|c| c.name == volume.container)
        .cloned()
        .unwrap_or_default();
    let claim_volume = spec
        .volumes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|v| v.name == volume.volume)
        .cloned()
        .unwrap_or_else(|| Volume {
            name: volume.volume.clone(),
            ..Default::default()
        });
    let labels = devloop_labels(
        cron.spec
            .as_ref()
            .and_then(|s| s.job_template.spec.as_ref())
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref()),
        "list",
    );
    Pod {
        metadata: ObjectMeta {
            // The server appends 5 characters; the rest must fit a 63-character name.
            generate_name: Some(job_name(cron_name, "list-").chars().take(58).collect()),
            namespace: cron.metadata.namespace.clone(),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(300),
            termination_grace_period_seconds: Some(0),
            security_context: spec.security_context,
            image_pull_secrets: spec.image_pull_secrets,
            service_account_name: spec.service_account_name,
            node_selector: spec.node_selector,
            affinity: spec.affinity,
            tolerations: spec.tolerations,
            containers: vec![Container {
                name: "list".into(),
                image: source.image,
                image_pull_policy: source.image_pull_policy,
                command: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    LIST_SCRIPT.into(),
                    "sh".into(),
                    volume.mount_path.clone(),
                ]),
                volume_mounts: Some(vec![VolumeMount {
                    name: volume.volume.clone(),
                    mount_path: volume.mount_path.clone(),
                    read_only: Some(true),
                    ..Default::default()
                }]),
                security_context: source.security_context,
                resources: source.resources,
                ..Default::default()
            }],
            volumes: Some(vec![claim_volume]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The restore Job: the rendered template renamed, labelled as devloop's restore (and no longer
/// as a tier, so neither tier's bookkeeping claims it), with `BACKUP_FILE` on every container.
/// A container that mounts the backup claim gets the file's path at its own mount point, others
/// the bare file name. Returns the Job and the value set on its first container.
pub fn restore_job(template: &Job, name: &str, claim: &str, file: &str) -> (Job, String) {
    let mut job = template.clone();
    job.metadata.name = Some(name.to_string());
    job.metadata.generate_name = None;
    job.metadata.resource_version = None;
    job.metadata.uid = None;
    job.metadata.labels = Some(devloop_labels(job.metadata.labels.as_ref(), "restore"));
    job.status = None;
    let mut first = None;
    if let Some(spec) = job.spec.as_mut() {
        // The controller fills in the selector and its label; a template must not carry them.
        spec.selector = None;
        if let Some(meta) = spec.template.metadata.as_mut() {
            meta.labels = Some(devloop_labels(meta.labels.as_ref(), "restore"));
        }
        if let Some(pod) = spec.template.spec.as_mut() {
            let volumes = pod.volumes.clone().unwrap_or_default();
            for container in pod.containers.iter_mut() {
                let path = container
                    .volume_mounts
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .find(|m| {
                        volumes.iter().any(|v| {
                            v.name == m.name
                                && v.persistent_volume_claim
                                    .as_ref()
                                    .is_some_and(|p| p.claim_name == claim)
                        })
                    })
                    .map(|m| format!("{}/{file}", m.mount_path.trim_end_matches('/')))
                    .unwrap_or_else(|| file.to_string());
                set_env(container, BACKUP_FILE_ENV, &path);
                first.get_or_insert(path);
            }
        }
    }
    (job, first.unwrap_or_else(|| file.to_string()))
}

fn set_env(container: &mut Container, name: &str, value: &str) {
    let env = container.env.get_or_insert_with(Vec::new);
    env.retain(|e| e.name != name);
    env.push(EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    });
}

/// The project labels of `labels` (never the tier or profile ones), plus `devloop.dev/backup`.
fn devloop_labels(
    labels: Option<&BTreeMap<String, String>>,
    role: &str,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = labels
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != LABEL_TIER && k.as_str() != LABEL_PROFILE)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.entry(LABEL_MANAGED_BY.into())
        .or_insert_with(|| "devloop".into());
    out.insert(LABEL_BACKUP.into(), role.into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::render::LABEL_PROJECT;

    fn cron() -> CronJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "postgres-backup", "namespace": "ns", "uid": "u-1"},
            "spec": {
                "schedule": "0 2 * * *",
                "jobTemplate": {
                    "metadata": {"labels": {"app": "backup"}},
                    "spec": {
                        "backoffLimit": 1,
                        "template": {
                            "metadata": {"labels": {
                                "app": "backup",
                                "devloop.dev/project": "musiccat",
                                "devloop.dev/tier": "persistent"
                            }},
                            "spec": {
                                "restartPolicy": "Never",
                                "securityContext": {"runAsUser": 999, "fsGroup": 999},
                                "containers": [{
                                    "name": "backup",
                                    "image": "postgres:16",
                                    "volumeMounts": [
                                        {"name": "scratch", "mountPath": "/tmp"},
                                        {"name": "backups", "mountPath": "/backups/"}
                                    ]
                                }],
                                "volumes": [
                                    {"name": "scratch", "emptyDir": {}},
                                    {"name": "backups", "persistentVolumeClaim": {"claimName": "postgres-backups"}}
                                ]
                            }
                        }
                    }
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn finds_the_claim_the_backup_writes_to() {
        let v = backup_volume(&cron()).unwrap();
        assert_eq!(
            v,
            BackupVolume {
                claim: "postgres-backups".into(),
                volume: "backups".into(),
                mount_path: "/backups".into(),
                container: "backup".into(),
            }
        );
        let mut none = cron();
        let spec = none
            .spec
            .as_mut()
            .unwrap()
            .job_template
            .spec
            .as_mut()
            .unwrap();
        spec.template.spec.as_mut().unwrap().volumes = None;
        assert_eq!(backup_volume(&none), None);
    }

    #[test]
    fn manual_job_is_what_kubectl_create_job_from_makes() {
        let job = manual_job(&cron(), "postgres-backup-manual-20261125-131902");
        let meta = &job.metadata;
        assert_eq!(meta.namespace.as_deref(), Some("ns"));
        assert_eq!(
            meta.annotations.as_ref().unwrap()[INSTANTIATE_ANNOTATION],
            "manual"
        );
        assert_eq!(meta.labels.as_ref().unwrap()["app"], "backup");
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("CronJob", "postgres-backup", "u-1")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(job.spec.unwrap().backoff_limit, Some(1));
    }

    #[test]
    fn names_fit_in_a_label() {
        let long = "a".repeat(60);
        let name = job_name(&long, "manual-20261125-131902");
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("-manual-20261125-131902"));
        assert_eq!(job_name("pg-", "list-1"), "pg-list-1");
        let at = k8s_openapi::jiff::Timestamp::from_second(1_795_000_000).unwrap();
        assert_eq!(name_stamp(at), "20261118-110640");
    }

    #[test]
    fn lister_mounts_the_claim_read_only_as_the_backup_user() {
        let cron = cron();
        let volume = backup_volume(&cron).unwrap();
        let pod = lister_pod(&cron, &volume);
        assert_eq!(
            pod.metadata.generate_name.as_deref(),
            Some("postgres-backup-list-")
        );
        let spec = pod.spec.unwrap();
        assert_eq!(
            spec.security_context.unwrap().run_as_user,
            Some(999),
            "files the backup user wrote must be readable"
        );
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("postgres:16"));
        assert_eq!(c.command.as_ref().unwrap().last().unwrap(), "/backups");
        let mount = &c.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(spec.volumes.unwrap()[0].name, "backups");
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_BACKUP], "list");
        assert!(!labels.contains_key(LABEL_TIER));
    }

    #[test]
    fn restore_job_gets_the_file_at_its_own_mount_point() {
        let template: Job = serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "postgres-restore", "namespace": "ns",
                         "labels": {"devloop.dev/tier": "persistent", "devloop.dev/project": "m"}},
            "spec": {"template": {
                "metadata": {"labels": {"devloop.dev/tier": "persistent"}},
                "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {"name": "restore", "image": "postgres:16",
                     "env": [{"name": "BACKUP_FILE", "value": "latest"}, {"name": "X", "value": "1"}],
                     "volumeMounts": [{"name": "b", "mountPath": "/restore-from", "readOnly": true}]},
                    {"name": "side", "image": "busybox"}
                ],
                "volumes": [{"name": "b", "persistentVolumeClaim": {"claimName": "postgres-backups"}}]
            }}}
        }))
        .unwrap();
        let (job, value) = restore_job(
            &template,
            "postgres-restore-20261125-131902",
            "postgres-backups",
            "m-1.sql.gz",
        );
        assert_eq!(value, "/restore-from/m-1.sql.gz");
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let env = |i: usize| pod.containers[i].env.clone().unwrap();
        assert_eq!(env(0).len(), 2);
        let file = env(0)
            .into_iter()
            .find(|e| e.name == BACKUP_FILE_ENV)
            .unwrap();
        assert_eq!(file.value.as_deref(), Some("/restore-from/m-1.sql.gz"));
        assert_eq!(env(1)[0].value.as_deref(), Some("m-1.sql.gz"));
        let labels = job.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_BACKUP], "restore");
        assert_eq!(labels[LABEL_PROJECT], "m");
        assert!(!labels.contains_key(LABEL_TIER));
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("postgres-restore-20261125-131902")
        );
    }
}
