//! `devloop build`: build the profile's images (only what changed) and load them into the
//! local cluster of the chosen kube context.

use serde::Serialize;

use crate::build::docker::{self, BuiltImage, Outcome};
use crate::cli::{BuildArgs, GlobalArgs};
use crate::cluster::{self, ClusterKind, load};
use crate::config;
use crate::error::Error;
use crate::output::Printer;

#[derive(Debug, Serialize)]
struct Report {
    image: String,
    reference: String,
    id: String,
    built: bool,
    seconds: f64,
    loaded: Vec<NodeReport>,
}

#[derive(Debug, Serialize)]
struct NodeReport {
    node: String,
    imported: bool,
}

pub async fn run(global: &GlobalArgs, args: &BuildArgs, printer: &Printer) -> Result<(), Error> {
    let project = config::load(&super::selection(global))?;
    let engine = crate::engine::connect().await?;

    // Decide where images go before spending time on builds.
    let target = if args.no_load {
        None
    } else {
        let context = cluster::chosen_context(global.context.as_deref())?;
        Some(cluster::detect(&engine.docker, &context, project.cluster).await?)
    };

    let built = docker::build_all(&engine.docker, &project, printer, args.force).await?;
    let loader = match target {
        Some(_) => Some(load::Loader::new(&engine.docker).await),
        None => None,
    };
    let mut reports = Vec::new();
    for image in &built {
        let loaded = match (&target, &loader) {
            (Some(kind), Some(loader)) => load_one(loader, kind, image, printer).await?,
            _ => Vec::new(),
        };
        reports.push(Report {
            image: image.image.clone(),
            reference: image.reference.clone(),
            id: image.id.clone(),
            built: matches!(image.outcome, Outcome::Built { .. }),
            seconds: match image.outcome {
                Outcome::Built { took } => took.as_secs_f64(),
                Outcome::UpToDate => 0.0,
            },
            loaded,
        });
    }
    if args.json {
        printer.data(&(serde_json::to_string_pretty(&reports).expect("reports serialize") + "\n"));
    }
    Ok(())
}

async fn load_one(
    loader: &load::Loader<'_>,
    kind: &ClusterKind,
    image: &BuiltImage,
    printer: &Printer,
) -> Result<Vec<NodeReport>, Error> {
    let nodes = match kind {
        ClusterKind::Kind { nodes, .. } => nodes.clone(),
        ClusterKind::Minikube { node, .. } => vec![node.clone()],
        ClusterKind::Other => return Ok(Vec::new()),
    };
    printer.info(&format!("{}: loading into {kind}", image.image));
    let loads = loader.load(&nodes, image, printer).await?;
    let mut out = Vec::new();
    for l in loads {
        let imported = match l.outcome {
            load::NodeOutcome::Present => {
                printer.info(&format!(
                    "{}: node {} already has {}",
                    image.image, l.node, image.reference
                ));
                false
            }
            load::NodeOutcome::Delta { took, layers_sent } => {
                printer.info(&format!(
                    "{}: loaded into node {} in {:.2}s ({layers_sent} new layer{} sent)",
                    image.image,
                    l.node,
                    took.as_secs_f64(),
                    if layers_sent == 1 { "" } else { "s" }
                ));
                true
            }
            load::NodeOutcome::Full { took } => {
                printer.info(&format!(
                    "{}: loaded into node {} in {:.1}s (whole image)",
                    image.image,
                    l.node,
                    took.as_secs_f64()
                ));
                true
            }
        };
        out.push(NodeReport {
            node: l.node,
            imported,
        });
    }
    Ok(out)
}
