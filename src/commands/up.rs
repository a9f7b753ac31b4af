//! `devloop up`: build and load what changed, apply the persistent tier once, deploy the profile,
//! wait for the rollout, then keep forwards and logs running until Ctrl+C, which removes the
//! profile tier and keeps the data.

use std::collections::HashSet;
use std::time::Duration;

use crate::cli::{GlobalArgs, UpArgs};
use crate::config::{self, Project, Tier};
use crate::deploy::apply::{Applier, TierReport, applied_key};
use crate::deploy::render::{LABEL_PROFILE, LABEL_PROJECT};
use crate::deploy::{self, RenderOptions, rollout};
use crate::error::Error;
use crate::output::Printer;
use crate::session::Session;
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

    let deploy = deploy_once(&project, &context, &client, &mut applier, args, printer);
    let deployed = tokio::select! {
        result = deploy => Some(result),
        _ = session.cancel.cancelled() => None,
    };
    match deployed {
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
        Some(Ok(())) => {}
    }
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
    session.cancel.cancelled().await;
    session.join().await;
    if args.keep {
        printer.info(&format!(
            "left profile `{}` running (--keep)",
            project.profile.name
        ));
        return Ok(());
    }
    teardown(&project, &mut applier, printer).await
}

async fn deploy_once(
    project: &Project,
    context: &str,
    client: &cluster::Client,
    applier: &mut Applier,
    args: &UpArgs,
    printer: &Printer,
) -> Result<(), Error> {
    let engine = crate::engine::connect().await?;
    let reports =
        super::build::build_and_load(&engine, project, Some(context), args.force, printer).await?;
    let images = reports
        .iter()
        .map(|r| (r.image.clone(), r.reference.clone()))
        .collect();
    let rendered = deploy::render(project, &RenderOptions { images })?;
    for warning in &rendered.warnings {
        printer.warn(warning);
    }
    let objects = &rendered.objects;
    applier.check_namespaces(objects).await?;

    let infra = applier
        .apply_persistent(objects, args.reapply_infra, printer)
        .await?;
    print_tier(printer, "persistent tier", &infra);
    let mut app = applier.apply_profile(objects, printer).await?;
    let namespace = applier.namespace_of(&objects[0]).unwrap_or_default();
    let keep: HashSet<_> = objects
        .iter()
        .filter(|o| o.tier == Tier::Profile)
        .map(|o| applied_key(o, &namespace))
        .collect();
    app.pruned = applier.prune(&project.name, objects, &keep).await?;
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
