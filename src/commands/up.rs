//! `devloop up`: build and load what changed, apply the persistent tier once, deploy the profile,
//! wait for the rollout, then keep forwards and logs running and watch the source until Ctrl+C,
//! which removes the profile tier and keeps the data.
//!
//! The inner loop (unless `--once` or `--no-watch`) turns each round of changes from `watch` into
//! one of three paths: sync (the changed files all match the artifact's sync rules: copied into
//! the running containers), rebuild (build and load only the changed artifacts, re-render, apply
//! the profile tier, wait) or config (re-load the project, re-render, apply; no rebuild). Every
//! decision is one line. A failure is reported and the last good deploy keeps running; the work
//! it left undone is retried with the next change, or, when it failed because the Docker engine
//! or the API server was unreachable, as soon as that answers again (see `outage`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::cli::{GlobalArgs, UpArgs};
use crate::config::{self, Project, Tier};
use crate::deploy::apply::{Applier, TierReport, applied_key};
use crate::deploy::render::{LABEL_PROFILE, LABEL_PROJECT};
use crate::deploy::{self, RenderOptions, rollout};
use crate::error::Error;
use crate::outage::{self, Outage, Probe, Service};
use crate::output::Printer;
use crate::session::Session;
use crate::sync::{self, Syncer};
use crate::watch::{self, ChangeSet, Wake, WatchSettings, Watcher};
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
                pending_syncs: BTreeMap::new(),
                outage: None,
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
        (report.unchanged.len(), "unchanged"),
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

/// `a, b changed, c removed` for files given as (path, removed).
fn describe(files: &[(String, bool)]) -> String {
    let group = |removed: bool| -> Vec<String> {
        files
            .iter()
            .filter(|f| f.1 == removed)
            .map(|f| f.0.clone())
            .collect()
    };
    let (changed, removed) = (group(false), group(true));
    let mut parts = Vec::new();
    if !changed.is_empty() {
        parts.push(format!("{} changed", list(&changed)));
    }
    if !removed.is_empty() {
        parts.push(format!("{} removed", list(&removed)));
    }
    parts.join(", ")
}

/// The one line of a sync round: what went where, how long it took, the commands it ran; then,
/// for a command that failed, where, how, and the last lines it printed.
fn sync_line(image: &str, what: &str, r: &sync::Report) -> (String, bool) {
    let pods = format!("{} pod{}", r.pods, if r.pods == 1 { "" } else { "s" });
    let done = match (r.copied > 0, r.removed > 0) {
        (false, true) => format!("removed from {pods}"),
        (true, true) => format!("synced to and removed from {pods}"),
        _ => format!("synced to {pods}"),
    };
    let mut line = format!("{image}: {what} → {done} in {} ms", r.took.as_millis());
    let ran: Vec<String> = r
        .commands
        .iter()
        .map(|c| format!("`{}`", sync::shell_words(&c.argv)))
        .collect();
    if !ran.is_empty() {
        line.push_str(&format!(", ran {}", ran.join(", ")));
    }
    let mut failed = false;
    for c in &r.commands {
        let Some(first) = c.failures.first() else {
            continue;
        };
        failed = true;
        line.push_str(&format!(
            "\n  `{}` {} in {}/{}",
            sync::shell_words(&c.argv),
            first.why,
            first.pod,
            first.container
        ));
        if c.failures.len() > 1 {
            line.push_str(&format!(
                " (and {} more container{})",
                c.failures.len() - 1,
                if c.failures.len() == 2 { "" } else { "s" }
            ));
        }
        for l in &first.last_lines {
            line.push_str(&format!("\n    {l}"));
        }
    }
    (line, failed)
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
    /// Artifacts whose build or load failed: retried with the next change, or when the service
    /// they wait for returns.
    pending_builds: BTreeSet<String>,
    /// `Some(config)` for a deploy that failed, retried likewise.
    pending_deploy: Option<bool>,
    /// Image → files to sync (context-relative path → local path): this round's, and those held
    /// back while the API server was away.
    pending_syncs: BTreeMap<String, BTreeMap<String, PathBuf>>,
    /// The service the loop waits for, if one went away.
    outage: Option<Outage>,
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
        let probe = Probe::new(self.client.kube.clone(), &self.client.server);
        let mut rules = self.sync_rules();
        printer.info(&format!(
            "watching {} ({} files tracked, {} ms quiet period{})",
            self.project.root.display(),
            watcher.tracked(),
            self.args.debounce_ms,
            if self.args.poll { ", polling" } else { "" }
        ));
        let cancel = &session.cancel;
        'rounds: loop {
            // While a service is away, the watcher also wakes the loop to try it again.
            let wake = self.outage.as_ref().map(Outage::next_attempt);
            let (changes, woken) = match watcher.next_or_wake(cancel, wake).await {
                None => break,
                Some(Wake::Changes(changes)) => (changes, false),
                Some(Wake::Timer) => (ChangeSet::default(), true),
            };
            // A timer, or a change while waiting: is the service back? (A change may be the
            // user's reaction to having restarted it.)
            if let Some(service) = self.outage.as_ref().map(|o| o.service)
                && (woken || changes.is_actionable())
            {
                let probed = tokio::select! {
                    r = probe.check(service) => r,
                    _ = cancel.cancelled() => break,
                };
                match probed {
                    Ok(()) => {
                        if let Some(outage) = self.outage.take() {
                            printer.info(&outage.back_line(&self.pending_work()));
                        }
                    }
                    Err(why) => {
                        tracing::debug!("{} still unreachable: {why}", service.name());
                        // Only the timer's own tries move the schedule on.
                        if woken {
                            if let Some(reminder) = self.outage.as_mut().and_then(Outage::failed) {
                                printer.warn(&reminder);
                            }
                            continue;
                        }
                    }
                }
            }
            self.report_round(&changes);
            if !changes.is_actionable() && !woken {
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

            // Sync or rebuild, per artifact: a sync only when its rules cover every file.
            let mut rebuild: BTreeSet<String> = std::mem::take(&mut self.pending_builds);
            // What this round touched: only its work says that it waits for a service.
            let mut touched: BTreeSet<String> = BTreeSet::new();
            for (image, files) in &artifacts {
                let shown: Vec<(String, bool)> =
                    files.iter().map(|f| (f.rel.clone(), f.removed)).collect();
                let Some(index) = self
                    .project
                    .artifacts
                    .iter()
                    .position(|a| &a.image == image)
                else {
                    continue;
                };
                touched.insert(image.clone());
                if rebuild.contains(image) || !files.iter().all(|f| rules[index].covers(&f.rel)) {
                    printer.info(&format!("{image}: {} → rebuilding", describe(&shown)));
                    rebuild.insert(image.clone());
                    // The rebuild takes the files as they are now, synced or not.
                    self.pending_syncs.remove(image);
                    continue;
                }
                let queue = self.pending_syncs.entry(image.clone()).or_default();
                for f in files {
                    queue.insert(f.rel.clone(), f.path.clone());
                }
            }

            for (image, files) in std::mem::take(&mut self.pending_syncs) {
                let Some(index) = self.project.artifacts.iter().position(|a| a.image == image)
                else {
                    continue;
                };
                if rebuild.contains(&image) {
                    continue;
                }
                // Whether a file is copied or deleted is decided now: it may have come back.
                let entries: Vec<(String, Option<sync::Entry>)> = files
                    .iter()
                    .map(|(rel, path)| {
                        let entry = rules[index].target(rel).map(|target| sync::Entry {
                            path: path.clone(),
                            target,
                            removed: std::fs::symlink_metadata(path).is_err(),
                        });
                        (rel.clone(), entry)
                    })
                    .collect();
                let shown: Vec<(String, bool)> = entries
                    .iter()
                    .map(|(rel, e)| (rel.clone(), e.as_ref().is_none_or(|e| e.removed)))
                    .collect();
                let what = describe(&shown);
                let Some(entries) = entries
                    .into_iter()
                    .map(|(_, e)| e)
                    .collect::<Option<Vec<_>>>()
                else {
                    // The rules changed with the configuration since the files were held back.
                    printer.info(&format!("{image}: {what} → rebuilding"));
                    rebuild.insert(image);
                    continue;
                };
                if let Some(outage) = self.away(Service::ApiServer) {
                    if touched.contains(&image) {
                        printer.info(&format!(
                            "{image}: {what} → syncing waits until {}",
                            outage.waiting_for()
                        ));
                    }
                    self.pending_syncs.insert(image, files);
                    continue;
                }
                let name = match &self.project.registry {
                    Some(registry) => format!("{registry}/{image}"),
                    None => image.clone(),
                };
                let synced = tokio::select! {
                    r = syncer.sync(&name, &entries) => r,
                    _ = cancel.cancelled() => break 'rounds,
                };
                match synced {
                    Ok(r) => match sync_line(&image, &what, &r) {
                        (line, false) => printer.info(&line),
                        (line, true) => printer.warn(&line),
                    },
                    Err(e) => {
                        let down = tokio::select! {
                            d = probe.first_down(outage::sync_suspects(&e)) => d,
                            _ = cancel.cancelled() => break 'rounds,
                        };
                        match down {
                            Some((service, why)) => {
                                self.went_away(
                                    &probe,
                                    service,
                                    &format!("{image}: {what} → sync failed"),
                                    &why,
                                );
                                self.pending_syncs.insert(image, files);
                            }
                            None => {
                                printer.warn(&format!(
                                    "{image}: {what} → sync failed ({e}{}); rebuilding",
                                    e.hint().map(|h| format!("; {h}")).unwrap_or_default()
                                ));
                                rebuild.insert(image);
                            }
                        }
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
                let names = rebuild.iter().cloned().collect::<Vec<_>>().join(", ");
                if let Some(outage) = self.away(Service::Docker) {
                    if rebuild.iter().any(|i| touched.contains(i)) {
                        printer.info(&format!(
                            "rebuilding {names} waits until {}",
                            outage.waiting_for()
                        ));
                    }
                    self.pending_builds = rebuild;
                } else {
                    let started = Instant::now();
                    let built = tokio::select! {
                        r = self.build(&rebuild) => r,
                        _ = cancel.cancelled() => break,
                    };
                    match built {
                        Ok(images) => {
                            printer.info(&format!(
                                "built and loaded {names} in {:.1}s",
                                started.elapsed().as_secs_f64()
                            ));
                            self.images.extend(images);
                            deploy_now = true;
                        }
                        Err(e) => {
                            let what = format!("rebuilding {names} failed");
                            let down = tokio::select! {
                                d = probe.first_down(outage::suspects(&e)) => d,
                                _ = cancel.cancelled() => break,
                            };
                            match down {
                                Some((service, why)) => {
                                    self.went_away(&probe, service, &what, &why)
                                }
                                None => report(printer, &what, &e),
                            }
                            self.pending_builds = rebuild;
                        }
                    }
                }
            }
            if deploy_now {
                if let Some(outage) = self.away(Service::ApiServer) {
                    if !touched.is_empty() || config_changed {
                        printer.info(&format!(
                            "redeploying profile `{}` waits until {}",
                            self.project.profile.name,
                            outage.waiting_for()
                        ));
                    }
                    self.pending_deploy = Some(config_deploy);
                    continue;
                }
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
                        let down = tokio::select! {
                            d = probe.first_down(outage::suspects(&e)) => d,
                            _ = cancel.cancelled() => break,
                        };
                        match down {
                            Some((service, why)) => {
                                self.went_away(&probe, service, "redeploying failed", &why)
                            }
                            None => report(printer, "redeploying failed", &e),
                        }
                        self.pending_deploy = Some(config_deploy);
                    }
                }
            }
        }
        self.project
    }

    /// One line per kind of thing in the round that needs no work.
    fn report_round(&self, changes: &ChangeSet) {
        let printer = self.printer;
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
    }

    /// The current outage, if it is `service`'s.
    fn away(&self, service: Service) -> Option<&Outage> {
        self.outage.as_ref().filter(|o| o.service == service)
    }

    /// `service` did not answer after `what` failed: say once what the loop waits for.
    fn went_away(&mut self, probe: &Probe, service: Service, what: &str, why: &str) {
        match self.away(service) {
            Some(outage) => self
                .printer
                .info(&format!("{what}: waits until {}", outage.waiting_for())),
            None => {
                let outage = Outage::new(service, probe.address(service));
                self.printer.warn(&outage.started_line(what, why));
                self.outage = Some(outage);
            }
        }
    }

    /// What runs once a service is back.
    fn pending_work(&self) -> String {
        let mut parts = Vec::new();
        if !self.pending_syncs.is_empty() {
            let images: Vec<String> = self.pending_syncs.keys().cloned().collect();
            parts.push(format!("syncing {}", images.join(", ")));
        }
        if !self.pending_builds.is_empty() {
            let images: Vec<String> = self.pending_builds.iter().cloned().collect();
            parts.push(format!("rebuilding {}", images.join(", ")));
        }
        if self.pending_deploy.is_some() {
            parts.push(format!(
                "redeploying profile `{}`",
                self.project.profile.name
            ));
        }
        match parts.is_empty() {
            true => "nothing was waiting for it".into(),
            false => parts.join(", then "),
        }
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

    /// Each artifact's compiled sync rules. `config::load` has checked them, so a rule that does
    /// not compile is a bug worth a warning, and the artifact then always rebuilds.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_name_changed_and_removed_files() {
        let files = |f: &[(&str, bool)]| -> Vec<(String, bool)> {
            f.iter().map(|(p, r)| (p.to_string(), *r)).collect()
        };
        assert_eq!(
            describe(&files(&[("www/a.html", false)])),
            "www/a.html changed"
        );
        assert_eq!(
            describe(&files(&[("a", true), ("b", false), ("c", true)])),
            "b changed, a, c removed"
        );
    }

    #[test]
    fn a_sync_round_is_one_line_and_a_failed_command_adds_its_stderr() {
        let report = |copied, removed, failures: Vec<sync::CommandFailure>| sync::Report {
            containers: 2,
            pods: 2,
            copied,
            removed,
            commands: vec![sync::CommandReport {
                argv: vec!["kill".into(), "-HUP".into(), "1".into()],
                failures,
            }],
            took: Duration::from_millis(140),
        };
        let (line, failed) = sync_line("web", "www/a.html changed", &report(1, 0, vec![]));
        assert_eq!(
            line,
            "web: www/a.html changed → synced to 2 pods in 140 ms, ran `kill -HUP 1`"
        );
        assert!(!failed);
        let (line, _) = sync_line("web", "www/a.html removed", &report(0, 1, vec![]));
        assert!(line.contains("→ removed from 2 pods in 140 ms"), "{line}");
        let failure = |pod: &str| sync::CommandFailure {
            pod: pod.into(),
            container: "web".into(),
            why: "exited with 1".into(),
            last_lines: vec!["kill: (1) - No such process".into()],
        };
        let (line, failed) = sync_line(
            "web",
            "www/a.html changed, www/b.html removed",
            &report(1, 1, vec![failure("web-a"), failure("web-b")]),
        );
        assert!(failed);
        assert_eq!(
            line,
            "web: www/a.html changed, www/b.html removed → synced to and removed from 2 pods in 140 ms, ran `kill -HUP 1`\n  `kill -HUP 1` exited with 1 in web-a/web (and 1 more container)\n    kill: (1) - No such process"
        );
    }
}
