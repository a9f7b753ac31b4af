//! `devloop up`: build and load what changed, apply the persistent tier once, deploy the profile,
//! wait for the rollout, then keep forwards and logs running and watch the source until Ctrl+C,
//! which removes the profile tier and keeps the data.
//!
//! The inner loop (unless `--once` or `--no-watch`) turns each round of changes from `watch` into
//! one of three paths: sync (the changed files all match the artifact's sync rules: copied into
//! the running containers), rebuild (build and load only the changed artifacts, re-render, apply
//! the profile tier, wait) or config (re-load the project, re-render, apply; no rebuild). Every
//! decision is one line. A failure is reported and the last good deploy keeps running; the work
//! it left undone is retried with the next change.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::cli::{GlobalArgs, UpArgs};
use crate::config::{self, Project, Tier};
use crate::deploy::apply::{Applier, TierReport, applied_key};
use crate::deploy::render::{LABEL_PROFILE, LABEL_PROJECT};
use crate::deploy::{self, RenderOptions, rollout};
use crate::error::Error;
use crate::output::Printer;
use crate::session::Session;
use crate::sync::{self, Syncer};
use crate::watch::{self, WatchSettings, Watcher};
use crate::{cluster, forward, logs};

pub async fn run(global: &GlobalArgs, args: &UpArgs, printer: &Printer) -> Result<(), Error> {
    let session = Session::new();
    session.handle_signals(*printer);
    let project = config::load(&super::selection(global))?;
    let context = cluster::chosen_context(global.context.as_deref())?;
    let client = cluster::client(&context).await?;
    let namespace = project
        .namespace
        .clone()
        .unwrap_or_else(|| client.namespace.clone());
    let mut applier = Applier::new(client.kube.clone(), namespace.clone());

    // Take the local ports first: a busy port should fail before anything is deployed.
    let forward_options = forward::ForwardOptions {
        port_fallback: args.port_fallback,
        ..Default::default()
    };
    let listeners = match args.once {
        true => None,
        false => Some(forward::bind(&project.forwards, &forward_options, printer)?),
    };
    // Logs start before the deploy, so this deploy's pods (migrations too) show from their start.
    if !args.once && !args.no_logs {
        let selector = format!(
            "{LABEL_PROJECT}={},{LABEL_PROFILE}={}",
            project.name, project.profile.name
        );
        let (kube, ns, token, printer) = (
            client.kube.clone(),
            namespace.clone(),
            session.cancel.child_token(),
            *printer,
        );
        session.tasks.spawn(async move {
            if let Err(e) = logs::run(kube, ns, selector, token, printer).await {
                printer.warn(&format!("log streaming stopped: {e}"));
            }
        });
    }

    // The watcher starts before the first build, so edits made during it are the first round.
    let mut watcher = None;
    if !args.once && !args.no_watch {
        let settings = WatchSettings {
            debounce: Duration::from_millis(args.debounce_ms),
            poll: args.poll,
        };
        match Watcher::start(&project, &settings).await {
            Ok(w) => watcher = Some(w),
            Err(e) => {
                let hint = e.hint();
                printer.error(
                    &format!("{e}; not watching (forwards and logs still run)"),
                    &crate::error::source_chain(&e),
                    hint.as_deref(),
                );
            }
        }
    }

    let deploy = deploy_once(&project, &context, &client, &mut applier, args, printer);
    let deployed = tokio::select! {
        result = deploy => Some(result),
        _ = session.cancel.cancelled() => None,
    };
    let images = match deployed {
        // Interrupted while deploying: leave nothing of the profile half-applied.
        None => return teardown(&project, &mut applier, printer).await,
        Some(Err(e)) => {
            if !applier.applied().is_empty() {
                printer.warn(&format!(
                    "profile `{}` is partly deployed ({} objects applied); `devloop down` removes it, the next `devloop up` completes it",
                    project.profile.name,
                    applier.applied().len()
                ));
            }
            return Err(e);
        }
        Some(Ok(images)) => images,
    };
    if args.once {
        return Ok(());
    }
    if let Some(listeners) = listeners {
        let (kube, ns, token, printer) = (
            client.kube.clone(),
            namespace.clone(),
            session.cancel.child_token(),
            *printer,
        );
        session.tasks.spawn(async move {
            if let Err(e) = listeners
                .serve(kube, ns, forward_options, token, printer)
                .await
            {
                printer.warn(&format!("port forwarding stopped: {e}"));
            }
        });
    }

    printer.info(&format!(
        "profile `{}` is up in context `{context}`, namespace `{namespace}`; Ctrl+C {}",
        project.profile.name,
        if args.keep {
            "stops devloop and leaves it running"
        } else {
            "removes it and keeps the persistent tier"
        }
    ));
    match watcher {
        Some(watcher) => {
            let inner = InnerLoop {
                global,
                args,
                printer,
                context: &context,
                client: &client,
                namespace: &namespace,
                project,
                images,
                pending_builds: BTreeSet::new(),
                pending_deploy: None,
            };
            let project = inner.run(watcher, &mut applier, &session).await;
            session.cancel.cancelled().await;
            session.join().await;
            finish(&project, &mut applier, args, printer).await
        }
        None => {
            session.cancel.cancelled().await;
            session.join().await;
            finish(&project, &mut applier, args, printer).await
        }
    }
}

/// After Ctrl+C: keep the profile (`--keep`) or remove it.
async fn finish(
    project: &Project,
    applier: &mut Applier,
    args: &UpArgs,
    printer: &Printer,
) -> Result<(), Error> {
    if args.keep {
        printer.info(&format!(
            "left profile `{}` running (--keep)",
            project.profile.name
        ));
        return Ok(());
    }
    teardown(project, applier, printer).await
}

async fn deploy_once(
    project: &Project,
    context: &str,
    client: &cluster::Client,
    applier: &mut Applier,
    args: &UpArgs,
    printer: &Printer,
) -> Result<HashMap<String, String>, Error> {
    let engine = crate::engine::connect().await?;
    let reports =
        super::build::build_and_load(&engine, project, Some(context), args.force, printer).await?;
    let images: HashMap<String, String> = reports
        .iter()
        .map(|r| (r.image.clone(), r.reference.clone()))
        .collect();
    deploy(project, client, applier, &images, args, true, printer).await?;
    Ok(images)
}

/// Render with `images`, apply the profile tier and wait for the rollout. When the configuration
/// may have changed (`config`), also apply the persistent tier and prune what left the profile;
/// a rebuild changes only image references, so it skips both.
async fn deploy(
    project: &Project,
    client: &cluster::Client,
    applier: &mut Applier,
    images: &HashMap<String, String>,
    args: &UpArgs,
    config: bool,
    printer: &Printer,
) -> Result<(), Error> {
    let images = images.clone();
    let rendered = deploy::render(project, &RenderOptions { images })?;
    for warning in &rendered.warnings {
        printer.warn(warning);
    }
    let objects = &rendered.objects;
    applier.check_namespaces(objects).await?;

    if config {
        let infra = applier
            .apply_persistent(objects, args.reapply_infra, printer)
            .await?;
        print_tier(printer, "persistent tier", &infra);
    }
    let mut app = applier.apply_profile(objects, printer).await?;
    let namespace = applier.namespace_of(&objects[0]).unwrap_or_default();
    if config {
        let keep: HashSet<_> = objects
            .iter()
            .filter(|o| o.tier == Tier::Profile)
            .map(|o| applied_key(o, &namespace))
            .collect();
        app.pruned = applier.prune(&project.name, objects, &keep).await?;
    }
    print_tier(
        printer,
        &format!("profile `{}`", project.profile.name),
        &app,
    );

    rollout::wait(
        &client.kube,
        objects,
        &namespace,
        Duration::from_secs(args.timeout),
        printer,
    )
    .await?;
    Ok(())
}

fn print_tier(printer: &Printer, what: &str, report: &TierReport) {
    let mut parts = Vec::new();
    for (n, label) in [
        (report.created.len(), "created"),
        (report.configured.len(), "applied"),
        (report.recreated.len(), "re-created"),
        (report.kept.len(), "kept as they are"),
        (report.pruned.len(), "pruned"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {label}"));
        }
    }
    if parts.is_empty() {
        return;
    }
    printer.info(&format!("{what}: {}", parts.join(", ")));
    if printer.verbose() > 0 {
        for name in report
            .created
            .iter()
            .chain(&report.configured)
            .chain(&report.recreated)
        {
            printer.info(&format!("  {name}"));
        }
    }
    for name in &report.pruned {
        printer.info(&format!("  pruned {name}"));
    }
}

/// Remove the profile tier; the persistent tier stays.
pub async fn teardown(
    project: &Project,
    applier: &mut Applier,
    printer: &Printer,
) -> Result<(), Error> {
    let removed = applier.delete_profile_tier(&project.name, &[]).await?;
    printer.info(&format!(
        "removed {} object(s) of the profile tier; the persistent tier (volumes, secrets, backups) is kept",
        removed.len()
    ));
    Ok(())
}

/// Report a failure of the inner loop: the loop goes on, the last good deploy keeps running.
fn report(printer: &Printer, what: &str, e: &Error) {
    let hint = e.hint();
    printer.error(
        &format!(
            "{what}: {}; the last good version keeps running",
            e.message()
        ),
        &e.causes(),
        hint.as_deref(),
    );
}

/// `a, b, c and 2 more`.
fn list(files: &[String]) -> String {
    match files.len() {
        0..=3 => files.join(", "),
        n => format!("{} and {} more", files[..3].join(", "), n - 3),
    }
}

/// The watch → sync/rebuild/redeploy loop of `up`, and the last good state it keeps.
struct InnerLoop<'a> {
    global: &'a GlobalArgs,
    args: &'a UpArgs,
    printer: &'a Printer,
    context: &'a str,
    client: &'a cluster::Client,
    namespace: &'a str,
    /// The last project that loaded.
    project: Project,
    /// Image → the reference deployed (or last built) for it.
    images: HashMap<String, String>,
    /// Artifacts whose build or load failed: retried with the next change.
    pending_builds: BTreeSet<String>,
    /// `Some(config)` for a deploy that failed, retried with the next change.
    pending_deploy: Option<bool>,
}

impl InnerLoop<'_> {
    /// Run until the session is cancelled; returns the last project that loaded (teardown
    /// removes its profile tier).
    async fn run(
        mut self,
        mut watcher: Watcher,
        applier: &mut Applier,
        session: &Session,
    ) -> Project {
        let printer = self.printer;
        let selector = format!(
            "{LABEL_PROJECT}={},{LABEL_PROFILE}={}",
            self.project.name, self.project.profile.name
        );
        let syncer = Syncer::new(self.client.kube.clone(), self.namespace, selector);
        let mut rules = self.sync_rules();
        printer.info(&format!(
            "watching {} ({} files tracked, {} ms quiet period{})",
            self.project.root.display(),
            watcher.tracked(),
            self.args.debounce_ms,
            if self.args.poll { ", polling" } else { "" }
        ));
        let cancel = &session.cancel;
        while let Some(changes) = watcher.next(cancel).await {
            for e in &changes.errors {
                let hint = e.hint();
                printer.error(
                    &e.to_string(),
                    &crate::error::source_chain(e),
                    hint.as_deref(),
                );
            }
            for (reason, n) in &changes.ignored {
                printer.info(&format!(
                    "ignored {n} change{} ({})",
                    if *n == 1 { "" } else { "s" },
                    reason.label()
                ));
            }
            if !changes.unchanged.is_empty() {
                printer.info(&format!(
                    "{}: same bytes as before → nothing to do",
                    list(&changes.unchanged)
                ));
            }
            if !changes.outside.is_empty() {
                printer.info(&format!(
                    "{}: in no build context and no configuration → nothing to do",
                    list(&changes.outside)
                ));
            }
            if !changes.is_actionable() {
                continue;
            }

            // Name the artifacts now: a re-loaded project may order them differently.
            let artifacts: Vec<(String, Vec<watch::Changed>)> = changes
                .artifacts
                .iter()
                .filter_map(|(i, files)| {
                    let a = self.project.artifacts.get(*i)?;
                    Some((a.image.clone(), files.clone()))
                })
                .collect();

            let mut config_changed = false;
            if !changes.config.is_empty() {
                match config::load(&super::selection(self.global)) {
                    Ok(project) => {
                        printer.info(&format!("{} changed → redeploying", list(&changes.config)));
                        watcher.reload(&project);
                        self.project = project;
                        rules = self.sync_rules();
                        config_changed = true;
                        // Artifacts whose build inputs changed with the configuration.
                        match crate::build::image_tags(&self.project) {
                            Ok(tags) => {
                                for (image, reference) in tags {
                                    if self.images.get(&image) != Some(&reference) {
                                        printer.info(&format!(
                                            "{image}: build inputs changed with the configuration → rebuilding"
                                        ));
                                        self.pending_builds.insert(image);
                                    }
                                }
                            }
                            Err(e) => {
                                report(printer, "reading the build contexts failed", &e.into())
                            }
                        }
                    }
                    Err(e) => report(
                        printer,
                        &format!("{} changed but does not load", list(&changes.config)),
                        &e.into(),
                    ),
                }
            }

            let mut rebuild: BTreeSet<String> = std::mem::take(&mut self.pending_builds);
            for (image, files) in &artifacts {
                let shown: Vec<String> = files.iter().map(|f| f.rel.clone()).collect();
                let Some(index) = self
                    .project
                    .artifacts
                    .iter()
                    .position(|a| &a.image == image)
                else {
                    continue;
                };
                if rebuild.contains(image) {
                    printer.info(&format!("{image}: {} changed → rebuilding", list(&shown)));
                    continue;
                }
                let targets: Option<Vec<_>> = files
                    .iter()
                    .map(|f| match f.removed {
                        true => None,
                        false => rules[index].target(&f.rel).map(|t| (f.path.clone(), t)),
                    })
                    .collect();
                let Some(targets) = targets else {
                    printer.info(&format!("{image}: {} changed → rebuilding", list(&shown)));
                    rebuild.insert(image.clone());
                    continue;
                };
                let name = match &self.project.registry {
                    Some(registry) => format!("{registry}/{image}"),
                    None => image.clone(),
                };
                let synced = tokio::select! {
                    r = syncer.sync(&name, &targets) => r,
                    _ = cancel.cancelled() => break,
                };
                match synced {
                    Ok(r) => printer.info(&format!(
                        "{image}: {} changed → synced to {} pod{} in {} ms",
                        list(&shown),
                        r.pods,
                        if r.pods == 1 { "" } else { "s" },
                        r.took.as_millis()
                    )),
                    Err(e) => {
                        printer.warn(&format!(
                            "{image}: {} changed → sync failed ({e}{}); rebuilding",
                            list(&shown),
                            e.hint().map(|h| format!("; {h}")).unwrap_or_default()
                        ));
                        rebuild.insert(image.clone());
                    }
                }
            }
            if cancel.is_cancelled() {
                break;
            }

            // Take the pending flag first: `||` would skip it and leave it set.
            let pending = self.pending_deploy.take();
            let config_deploy = config_changed || pending == Some(true);
            let mut deploy_now = config_deploy || pending.is_some();
            if !rebuild.is_empty() {
                let started = Instant::now();
                let built = tokio::select! {
                    r = self.build(&rebuild) => r,
                    _ = cancel.cancelled() => break,
                };
                match built {
                    Ok(images) => {
                        printer.info(&format!(
                            "built and loaded {} in {:.1}s",
                            rebuild.iter().cloned().collect::<Vec<_>>().join(", "),
                            started.elapsed().as_secs_f64()
                        ));
                        self.images.extend(images);
                        deploy_now = true;
                    }
                    Err(e) => {
                        report(
                            printer,
                            &format!(
                                "rebuilding {} failed",
                                rebuild.iter().cloned().collect::<Vec<_>>().join(", ")
                            ),
                            &e,
                        );
                        self.pending_builds = rebuild;
                    }
                }
            }
            if deploy_now {
                let started = Instant::now();
                let deployed = tokio::select! {
                    r = deploy(
                        &self.project,
                        self.client,
                        applier,
                        &self.images,
                        self.args,
                        config_deploy,
                        printer,
                    ) => r,
                    _ = cancel.cancelled() => break,
                };
                match deployed {
                    Ok(()) => printer.info(&format!(
                        "redeployed profile `{}` in {:.1}s",
                        self.project.profile.name,
                        started.elapsed().as_secs_f64()
                    )),
                    Err(e) => {
                        report(printer, "redeploying failed", &e);
                        self.pending_deploy = Some(config_deploy);
                    }
                }
            }
        }
        self.project
    }

    /// Build and load only `images` of the current project.
    async fn build(&self, images: &BTreeSet<String>) -> Result<HashMap<String, String>, Error> {
        let mut subset = self.project.clone();
        subset.artifacts.retain(|a| images.contains(&a.image));
        let engine = crate::engine::connect().await?;
        let reports =
            super::build::build_and_load(&engine, &subset, Some(self.context), false, self.printer)
                .await?;
        Ok(reports
            .into_iter()
            .map(|r| (r.image, r.reference))
            .collect())
    }

    /// Each artifact's compiled sync rules; a rule that does not compile is reported and the
    /// artifact always rebuilds.
    fn sync_rules(&self) -> Vec<sync::Rules> {
        self.project
            .artifacts
            .iter()
            .map(|a| {
                sync::Rules::new(&a.image, &a.sync).unwrap_or_else(|e| {
                    self.printer.warn(&format!(
                        "{e}; `{}` rebuilds on every change{}",
                        a.image,
                        e.hint().map(|h| format!(" ({h})")).unwrap_or_default()
                    ));
                    sync::Rules::default()
                })
            })
            .collect()
    }
}
