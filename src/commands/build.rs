//! `devloop build`: build the profile's images (only what changed) and load them into the
//! local cluster of the chosen kube context — or, for minikube with the docker runtime, build
//! them in the node's own Docker engine, where there is nothing to load.

use serde::Serialize;

use crate::build::docker::{self, BuiltImage, Outcome};
use crate::cli::{BuildArgs, GlobalArgs};
use crate::cluster::{self, ClusterError, ClusterKind, load, minikube};
use crate::config;
use crate::error::Error;
use crate::output::Printer;

/// What happened to one artifact: built or not, and where it was loaded.
#[derive(Debug, Serialize)]
pub struct Report {
    pub image: String,
    pub reference: String,
    id: String,
    built: bool,
    seconds: f64,
    loaded: Vec<NodeReport>,
}

/// Where built images go.
enum Target {
    /// Into the nodes of a local cluster.
    Nodes(ClusterKind),
    /// Built in a minikube node's own Docker engine (docker runtime): nothing to load.
    NodeEngine(minikube::NodeEngine),
    /// Pushed to a registry the cluster pulls from.
    Registry(String),
}

#[derive(Debug, Serialize)]
pub struct NodeReport {
    /// The node, or the registry pushed to.
    node: String,
    imported: bool,
    /// `present` (nothing to do), `delta` (missing layers only), `full` (whole image), `push`,
    /// `node-engine` (built in the node's own Docker engine: nothing to load).
    method: &'static str,
    /// Layer blobs sent (delta only).
    #[serde(skip_serializing_if = "Option::is_none")]
    layers_sent: Option<usize>,
    seconds: f64,
}

pub async fn run(global: &GlobalArgs, args: &BuildArgs, printer: &Printer) -> Result<(), Error> {
    let project = config::load(&super::selection(global))?;
    let engine = crate::engine::connect().await?;
    let context = match args.no_load {
        true => None,
        false => Some(cluster::chosen_context(global.context.as_deref())?),
    };
    let reports =
        build_and_load(&engine, &project, context.as_deref(), args.force, printer).await?;
    if args.json {
        printer.data(&(serde_json::to_string_pretty(&reports).expect("reports serialize") + "\n"));
    }
    Ok(())
}

/// Build every artifact that changed and, with a `context`, put the images where its cluster
/// runs them. `up` uses this too.
pub async fn build_and_load(
    engine: &crate::engine::Engine,
    project: &config::Project,
    context: Option<&str>,
    force: bool,
    printer: &Printer,
) -> Result<Vec<Report>, Error> {
    // Decide where images go before spending time on builds.
    let target = match context {
        None => None,
        Some(context) => {
            let context = context.to_string();
            let detected = cluster::detect(&engine.docker, &context, project.cluster).await;
            match (detected, &project.registry) {
                (Ok(ClusterKind::Other) | Err(ClusterError::NotLocal { .. }), Some(registry)) => {
                    Some(Target::Registry(registry.clone()))
                }
                (Ok(ClusterKind::Other), None) => {
                    return Err(ClusterError::NotLocal {
                        context,
                        note: None,
                    }
                    .into());
                }
                (Ok(ClusterKind::Minikube { profile, node }), _) => {
                    let node_engine =
                        minikube::engine_for(&engine.docker, &context, &profile, &node)
                            .await
                            .map_err(ClusterError::from)?;
                    Some(match node_engine {
                        Some(node_engine) => Target::NodeEngine(node_engine),
                        None => Target::Nodes(ClusterKind::Minikube { profile, node }),
                    })
                }
                (Ok(kind), _) => Some(Target::Nodes(kind)),
                (Err(e), _) => return Err(e.into()),
            }
        }
    };

    // The engine the images are built in is the one whose images the cluster runs: the local
    // one, or a minikube node's (its "tag already exists" check included).
    let builder = match &target {
        Some(Target::NodeEngine(node)) => &node.docker,
        _ => &engine.docker,
    };
    let built = docker::build_all(builder, project, printer, force).await?;
    let loader = match target {
        Some(Target::Nodes(_)) => Some(load::Loader::new(&engine.docker).await),
        _ => None,
    };
    let mut reports = Vec::new();
    for image in &built {
        let loaded = match (&target, &loader) {
            (Some(Target::Nodes(kind)), Some(loader)) => {
                load_one(loader, kind, image, printer).await?
            }
            (Some(Target::NodeEngine(node)), _) => {
                printer.info(&format!(
                    "{}: {} minikube's Docker engine (profile `{}`, {}; nothing to load)",
                    image.image,
                    match image.outcome {
                        Outcome::Built { .. } => "built in",
                        Outcome::UpToDate => "already in",
                    },
                    node.profile,
                    node.address
                ));
                vec![NodeReport {
                    node: node.node.clone(),
                    imported: false,
                    method: "node-engine",
                    layers_sent: None,
                    seconds: 0.0,
                }]
            }
            (Some(Target::Registry(registry)), _) => {
                let took = load::push_to_registry(&engine.docker, image).await?;
                printer.info(&format!(
                    "{}: pushed to {registry} in {:.1}s",
                    image.image,
                    took.as_secs_f64()
                ));
                vec![NodeReport {
                    node: registry.clone(),
                    imported: true,
                    method: "push",
                    layers_sent: None,
                    seconds: took.as_secs_f64(),
                }]
            }
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
    Ok(reports)
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
        let seconds = match l.outcome {
            load::NodeOutcome::Delta { took, .. } | load::NodeOutcome::Full { took } => {
                took.as_secs_f64()
            }
            load::NodeOutcome::Present => 0.0,
        };
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
        let (method, layers_sent) = match l.outcome {
            load::NodeOutcome::Present => ("present", None),
            load::NodeOutcome::Delta { layers_sent, .. } => ("delta", Some(layers_sent)),
            load::NodeOutcome::Full { .. } => ("full", None),
        };
        out.push(NodeReport {
            node: l.node,
            imported,
            method,
            layers_sent,
            seconds,
        });
    }
    Ok(out)
}
