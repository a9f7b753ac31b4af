//! Backups of the project's data: `devloop backup now`, `list` and `restore`.
//!
//! Owns running the backup CronJob named in devloop.yaml on demand (a Job from its
//! `jobTemplate`, owned by the CronJob as `kubectl create job --from=cronjob/…` makes it),
//! listing the files on the volume the CronJob writes to (a short-lived pod mounting the same
//! claim), and running the restore Job template with a chosen file. `template` builds those
//! objects, `job` runs and follows them, `files` reads listings.
//!
//! Does not own applying the CronJob, its PVC or the Secret it reads: they are the persistent
//! tier, which `devloop up` applies (`deploy`). Nor the schedule: the CronJob controller runs it.

mod error;
pub mod files;
mod job;
pub mod template;

use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::Api;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use error::{BackupError, KubeFailure};
pub use files::{BackupFile, Choice};
use job::Runner;
use template::BackupVolume;

use crate::config::{Backup, ManifestSource, Project, Tier, shown, split_image};
use crate::deploy::{self, RenderOptions};
use crate::diagnostic::Diagnostic;
use crate::output::Printer;

/// The project's backup settings, or the error that says how to add them.
pub fn settings(project: &Project) -> Result<&Backup, BackupError> {
    project
        .backup
        .as_ref()
        .ok_or_else(|| BackupError::NotConfigured {
            file: shown(&project.file),
        })
}

/// Backups of one project in one namespace of one cluster.
pub struct Backups<'a> {
    project: &'a Project,
    settings: &'a Backup,
    kube: kube::Client,
    context: String,
    namespace: String,
    timeout: Duration,
}

/// The backup CronJob as applied in the cluster, and the volume it writes to.
pub struct Applied {
    pub cron: CronJob,
    pub volume: BackupVolume,
}

/// What `backup now` did.
#[derive(Debug, Serialize)]
pub struct BackupReport {
    pub job: String,
    pub namespace: String,
    pub cron_job: String,
    /// The file the Job wrote, when devloop could tell.
    pub file: Option<BackupFile>,
    pub seconds: f64,
}

/// What `backup restore` ran.
#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub job: String,
    pub namespace: String,
    pub file: BackupFile,
    /// The value the restore Job got in `BACKUP_FILE`.
    pub backup_file: String,
    pub seconds: f64,
}

/// The backups on the volume, newest first, and where they are.
#[derive(Debug, Serialize)]
pub struct Listing {
    pub namespace: String,
    pub claim: String,
    pub dir: String,
    pub backups: Vec<BackupFile>,
}

impl<'a> Backups<'a> {
    /// `namespace` is where the project lives: devloop.yaml's (or `-n`), else the context's.
    pub fn new(
        project: &'a Project,
        client: crate::cluster::Client,
        timeout: Duration,
    ) -> Result<Self, BackupError> {
        let settings = settings(project)?;
        let namespace = project
            .namespace
            .clone()
            .unwrap_or_else(|| client.namespace.clone());
        Ok(Self {
            project,
            settings,
            kube: client.kube,
            context: client.context,
            namespace,
            timeout,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn runner<'r>(&'r self, printer: &'r Printer, cancel: &'r CancellationToken) -> Runner<'r> {
        Runner {
            kube: self.kube.clone(),
            namespace: &self.namespace,
            printer,
            cancel,
            timeout: self.timeout,
        }
    }

    /// The backup CronJob from the cluster. Missing, the error says whether applying the
    /// persistent tier would create it (it is in the infra manifests) or the config is wrong.
    pub async fn applied(&self) -> Result<Applied, BackupError> {
        let name = &self.settings.cron_job;
        let api: Api<CronJob> = Api::namespaced(self.kube.clone(), &self.namespace);
        let cron = api
            .get_opt(name)
            .await
            .map_err(|e| BackupError::ReadCronJob {
                name: name.clone(),
                namespace: self.namespace.clone(),
                source: e.into(),
            })?;
        let Some(cron) = cron else {
            return Err(BackupError::CronJobNotApplied {
                name: name.clone(),
                namespace: self.namespace.clone(),
                context: self.context.clone(),
                in_manifests: self.in_infra_manifests(name),
            });
        };
        let volume = template::backup_volume(&cron)
            .ok_or_else(|| BackupError::NoBackupVolume { name: name.clone() })?;
        Ok(Applied { cron, volume })
    }

    /// Whether the infra manifests define CronJob `name` (unreadable manifests: assume so, and
    /// let `devloop up` report what is wrong with them).
    fn in_infra_manifests(&self, name: &str) -> bool {
        let infra: Vec<ManifestSource> = self
            .project
            .manifests
            .iter()
            .filter(|m| m.tier == Tier::Persistent)
            .cloned()
            .collect();
        match deploy::manifest::read_all(&infra) {
            Ok(objects) => objects
                .iter()
                .any(|o| o.kind() == "CronJob" && o.name() == name),
            Err(_) => true,
        }
    }

    /// Run the CronJob's template now, wait for it, and find the file it wrote.
    pub async fn now(
        &self,
        applied: &Applied,
        printer: &Printer,
        cancel: &CancellationToken,
    ) -> Result<BackupReport, BackupError> {
        let cron_name = &self.settings.cron_job;
        let stamp = template::name_stamp(k8s_openapi::jiff::Timestamp::now());
        let job = template::manual_job(
            &applied.cron,
            &template::job_name(cron_name, &format!("manual-{stamp}")),
        );
        // The CronJob's `concurrencyPolicy` only governs its own schedule; say when a run is
        // already going, since two dumps at once are slower and the same data.
        let active = applied
            .cron
            .status
            .as_ref()
            .and_then(|s| s.active.as_deref())
            .unwrap_or_default();
        if let Some(running) = active.first().and_then(|r| r.name.as_deref()) {
            printer.warn(&format!(
                "backup Job `{running}` of CronJob `{cron_name}` is running already; starting another"
            ));
        }
        let runner = self.runner(printer, cancel);
        let name = runner.create_job(job, "backup").await?;
        printer.info(&format!(
            "backup: started Job `{name}` from CronJob `{cron_name}` in namespace `{}`; waiting up to {}s",
            self.namespace,
            self.timeout.as_secs()
        ));
        let finished = runner.follow_job(&name, "backup").await?;
        let listing = self.list(applied, printer, cancel).await?;
        let file = files::written_by(&listing.backups, &finished.logs, finished.started).cloned();
        match &file {
            Some(f) => printer.info(&format!(
                "backup: {} ({}) on PVC `{}`, in {:.1}s",
                f.path,
                files::human_size(f.size),
                applied.volume.claim,
                finished.took.as_secs_f64()
            )),
            None => printer.warn(&format!(
                "backup Job `{name}` succeeded, but no file in {} on PVC `{}` is new since it started; check its logs above",
                applied.volume.mount_path, applied.volume.claim
            )),
        }
        Ok(BackupReport {
            job: finished.name,
            namespace: self.namespace.clone(),
            cron_job: cron_name.clone(),
            file,
            seconds: finished.took.as_secs_f64(),
        })
    }

    /// The backups on the CronJob's volume, newest first, read by a pod that mounts it.
    pub async fn list(
        &self,
        applied: &Applied,
        printer: &Printer,
        cancel: &CancellationToken,
    ) -> Result<Listing, BackupError> {
        let volume = &applied.volume;
        let pod = template::lister_pod(&applied.cron, volume);
        printer.info(&format!(
            "backup: reading {} on PVC `{}`",
            volume.mount_path, volume.claim
        ));
        let output = self
            .runner(printer, cancel)
            .run_pod(pod, "listing backups")
            .await?;
        Ok(Listing {
            namespace: self.namespace.clone(),
            claim: volume.claim.clone(),
            dir: volume.mount_path.clone(),
            backups: files::parse_listing(&volume.mount_path, &output),
        })
    }

    /// The backup `choice` names in `listing`, or an error naming the ones there are.
    pub fn choose<'l>(
        &self,
        listing: &'l Listing,
        choice: &Choice,
    ) -> Result<&'l BackupFile, BackupError> {
        if let Some(file) = files::choose(&listing.backups, choice) {
            return Ok(file);
        }
        match choice {
            Choice::Latest => Err(BackupError::NoBackups {
                dir: listing.dir.clone(),
                claim: listing.claim.clone(),
                namespace: listing.namespace.clone(),
            }),
            Choice::Named(name) => Err(BackupError::UnknownBackup {
                name: name.clone(),
                dir: listing.dir.clone(),
                claim: listing.claim.clone(),
                available: listing.backups.iter().map(|f| f.name.clone()).collect(),
            }),
        }
    }

    /// The restore Job template, rendered like the persistent tier (namespace, labels,
    /// validation, artifact images tagged) — checked before anything touches the cluster.
    pub fn restore_template(&self) -> Result<Job, BackupError> {
        restore_template(self.project, &self.namespace)
    }

    /// Run the restore template with `file`, wait for it and report.
    pub async fn restore(
        &self,
        applied: &Applied,
        template: &Job,
        file: &BackupFile,
        printer: &Printer,
        cancel: &CancellationToken,
    ) -> Result<RestoreReport, BackupError> {
        let base = template.metadata.name.clone().unwrap_or_default();
        let stamp = template::name_stamp(k8s_openapi::jiff::Timestamp::now());
        let (job, backup_file) = template::restore_job(
            template,
            &template::job_name(&base, &stamp),
            &applied.volume.claim,
            &file.name,
        );
        let runner = self.runner(printer, cancel);
        let name = runner.create_job(job, "restore").await?;
        printer.info(&format!(
            "restore: started Job `{name}` with BACKUP_FILE={backup_file} in namespace `{}`; waiting up to {}s",
            self.namespace,
            self.timeout.as_secs()
        ));
        let finished = runner.follow_job(&name, "restore").await?;
        printer.info(&format!(
            "restore: {} restored in {:.1}s",
            file.name,
            finished.took.as_secs_f64()
        ));
        Ok(RestoreReport {
            job: finished.name,
            namespace: self.namespace.clone(),
            file: file.clone(),
            backup_file,
            seconds: finished.took.as_secs_f64(),
        })
    }
}

/// Render `backup.restoreJob` the way the render pipeline renders the persistent tier: the
/// project's namespace and labels, checked against the Job type. Artifact images get their
/// content tags as `up` deploys them (the render step itself is run without artifacts, since the
/// template alone need not use them all).
pub fn restore_template(project: &Project, namespace: &str) -> Result<Job, BackupError> {
    let settings = settings(project)?;
    let path = settings
        .restore_job
        .clone()
        .ok_or_else(|| BackupError::NoRestoreJob {
            file: shown(&project.file),
        })?;
    let mut alone = project.clone();
    alone.manifests = vec![ManifestSource {
        path: path.clone(),
        tier: Tier::Persistent,
        origin: settings.origin.clone(),
    }];
    alone.secrets.clear();
    alone.artifacts.clear();
    alone.profile.patches.clear();
    alone.backup = None;
    alone.namespace = Some(namespace.to_string());
    let invalid = |d: Diagnostic| BackupError::RestoreTemplate(Box::new(d));
    let rendered = deploy::render(&alone, &RenderOptions::default()).map_err(invalid)?;
    let mut objects = rendered.objects;
    let shape = |message: String| {
        invalid(
            Diagnostic::new(shown(&path), message)
                .hint("`backup.restoreJob` must be one batch/v1 Job that restores $BACKUP_FILE"),
        )
    };
    if objects.len() != 1 {
        return Err(shape(format!(
            "the restore template holds {} objects",
            objects.len()
        )));
    }
    let object = objects.remove(0);
    if object.kind() != "Job" {
        return Err(shape(format!(
            "the restore template is a {}, not a Job",
            object.kind()
        )));
    }
    let source = object.source.clone();
    let mut value = Value::Object(object.value);
    tag_artifact_images(project, &mut value)?;
    let mut job: Job = serde_json::from_value(value)
        .map_err(|e| invalid(source.diagnostic("", format!("not a valid Job: {e}"))))?;
    job.metadata.namespace = Some(namespace.to_string());
    Ok(job)
}

/// Containers whose image is an artifact get its content-addressed reference.
fn tag_artifact_images(project: &Project, job: &mut Value) -> Result<(), BackupError> {
    let Some(Value::Array(containers)) = job.pointer_mut("/spec/template/spec/containers") else {
        return Ok(());
    };
    let uses_artifact = |c: &Value| {
        c["image"].as_str().is_some_and(|image| {
            project
                .artifacts
                .iter()
                .any(|a| a.image == split_image(image).0)
        })
    };
    if !containers.iter().any(uses_artifact) {
        return Ok(());
    }
    let tags = crate::build::image_tags(project).map_err(BackupError::ImageTags)?;
    for container in containers.iter_mut() {
        let image = container["image"]
            .as_str()
            .map(|i| split_image(i).0.to_string());
        if let Some(reference) = image.and_then(|i| tags.get(&i))
            && let Some(map) = container.as_object_mut()
        {
            map.insert("image".into(), reference.clone().into());
            map.insert("imagePullPolicy".into(), "IfNotPresent".into());
        }
    }
    Ok(())
}
