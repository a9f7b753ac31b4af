//! Loading built images into the containerd of local node containers (kind, and minikube with
//! the containerd runtime) — natively through the Docker API, without the kind CLI.
//!
//! Per node: skip when containerd already holds the tag (tags are content digests, so the same
//! tag is the same image). Otherwise send only the layers the node lacks (`delta`, through
//! devloop's own registry). If that cannot be done, fall back to what always works: export the
//! image once from Docker and stream it into `ctr images import` on every node that needs it, in
//! parallel, with the snapshotter the node's CRI plugin uses (as `kind load docker-image` does).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bollard::Docker;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::delta;
use super::node::{ExecError, exec, exec_with_input};
use super::registry::{Registry, Store};
use crate::build::docker::{BuiltImage, Outcome};
use crate::output::Printer;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("failed to load `{reference}` into node `{node}`")]
    Node {
        reference: String,
        node: String,
        #[source]
        source: ExecError,
    },
    #[error("failed to push `{reference}`")]
    Push {
        reference: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("failed to export `{reference}` from Docker")]
    Export {
        reference: String,
        #[source]
        source: bollard::errors::Error,
    },
}

impl LoadError {
    pub fn hint(&self) -> Option<String> {
        match self {
            LoadError::Node {
                source: ExecError::NodeGone { .. },
                ..
            } => Some("the cluster's node container stopped; check `docker ps -a` and restart the cluster".into()),
            LoadError::Push { .. } => Some(
                "check that the registry is up and reachable from Docker (`docker push` the image by hand to see the details)".into(),
            ),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOutcome {
    /// containerd already had this tag.
    Present,
    /// Only the missing layers were sent.
    Delta { took: Duration, layers_sent: usize },
    /// The whole image was exported and imported.
    Full { took: Duration },
}

#[derive(Debug, Clone)]
pub struct NodeLoad {
    pub node: String,
    pub outcome: NodeOutcome,
}

/// The name containerd stores a Docker reference under (`web:1` → `docker.io/library/web:1`).
pub fn containerd_ref(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or_default();
    let has_registry =
        reference.contains('/') && (first.contains(['.', ':']) || first == "localhost");
    if has_registry {
        reference.to_string()
    } else if reference.contains('/') {
        format!("docker.io/{reference}")
    } else {
        format!("docker.io/library/{reference}")
    }
}

/// Whether containerd in `node` has `reference`.
pub async fn node_has(docker: &Docker, node: &str, reference: &str) -> Result<bool, ExecError> {
    let name = format!("name=={}", containerd_ref(reference));
    let out = exec(
        docker,
        node,
        &["ctr", "--namespace=k8s.io", "images", "ls", "-q", &name],
    )
    .await?;
    Ok(!out.trim().is_empty())
}

/// The snapshotter the node's CRI plugin unpacks images with (kind reads it the same way).
/// Remembered per node for the life of the process: it is fixed when the node starts, and
/// asking costs an exec on every load of the inner loop.
pub async fn snapshotter(docker: &Docker, node: &str) -> Result<String, ExecError> {
    static KNOWN: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    let known = |node: &str| {
        KNOWN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned()
    };
    if let Some(snapshotter) = known(node) {
        return Ok(snapshotter);
    }
    let dump = exec(docker, node, &["containerd", "config", "dump"]).await?;
    let snapshotter = parse_snapshotter(&dump).unwrap_or_else(|| "overlayfs".to_string());
    KNOWN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(node.to_string(), snapshotter.clone());
    Ok(snapshotter)
}

fn parse_snapshotter(dump: &str) -> Option<String> {
    let mut in_cri = false;
    for line in dump.lines().map(str::trim) {
        if line.starts_with('[') {
            in_cri = line == r#"[plugins."io.containerd.grpc.v1.cri".containerd]"#;
            continue;
        }
        if in_cri && let Some(value) = line.strip_prefix("snapshotter = ") {
            return Some(value.trim_matches('"').to_string());
        }
    }
    None
}

/// Loads images into nodes, keeping devloop's registry up between images.
pub struct Loader<'a> {
    docker: &'a Docker,
    /// `None` when the delta path cannot work (a remote Docker engine cannot push to our
    /// loopback) or the registry failed to start: then every load is a full import.
    registry: Option<Registry>,
}

impl<'a> Loader<'a> {
    pub async fn new(docker: &'a Docker) -> Self {
        let local_engine = std::env::var("DOCKER_HOST").map_or(true, |h| h.starts_with("unix://"));
        let registry = match local_engine && std::env::var_os("DEVLOOP_FULL_LOAD").is_none() {
            true => {
                let store = Store::default_location();
                // Bounded like a cache: least recently used layers go first.
                let _ = store.prune(registry_limit());
                Registry::start(store).await.ok()
            }
            false => None,
        };
        Self { docker, registry }
    }

    /// Load `image` into every node that lacks it: delta first, full import as the fallback.
    pub async fn load(
        &self,
        nodes: &[String],
        image: &BuiltImage,
        printer: &Printer,
    ) -> Result<Vec<NodeLoad>, LoadError> {
        let started = Instant::now();
        let checks = futures_util::future::join_all(
            nodes
                .iter()
                .map(|n| node_has(self.docker, n, &image.reference)),
        );
        // An image built in this round is new to the nodes unless an edit was undone, so its push
        // (and the nodes' inventory) runs alongside the check instead of after it: a round trip
        // off the inner loop. An image that was already built may well be loaded too, and
        // pushing it could cost more than the check saves.
        let fresh = matches!(image.outcome, Outcome::Built { .. });
        let (checks, mut prepared) = match &self.registry {
            Some(registry) if fresh => {
                let (checks, prepared) = tokio::join!(checks, self.prepare(registry, nodes, image));
                (checks, Some(prepared))
            }
            _ => (checks.await, None),
        };
        let mut loads = Vec::new();
        let mut missing = Vec::new();
        for (node, has) in nodes.iter().zip(checks) {
            match has.map_err(|e| node_error(&image.reference, node, e))? {
                true => loads.push(NodeLoad {
                    node: node.clone(),
                    outcome: NodeOutcome::Present,
                }),
                false => missing.push(node.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(loads);
        }
        let mut fallback = missing.clone();
        if let Some(registry) = &self.registry {
            let (pushed, mut looked) = match prepared.take() {
                Some(prepared) => prepared,
                None => self.prepare(registry, &missing, image).await,
            };
            match pushed {
                Err(e) => printer.warn(&format!(
                    "{}: {}; loading the whole image instead",
                    image.image,
                    crate::error::one_line(&e)
                )),
                Ok(pushed) => {
                    let pushed = &pushed;
                    let imports = missing.iter().map(|node| {
                        let looked = looked
                            .remove(node)
                            .expect("every missing node was looked at");
                        async move {
                            let (snapshotter, held, remembered) = looked?;
                            let import = |held| {
                                delta::import(
                                    self.docker,
                                    node,
                                    &snapshotter,
                                    held,
                                    registry.store(),
                                    pushed,
                                    &image.reference,
                                )
                            };
                            match import(&held).await {
                                // Remembered wrongly (content removed behind devloop's back): look.
                                Err(e) if remembered && !e.node_gone() => {
                                    delta::forget(node);
                                    let (held, _) =
                                        delta::held(self.docker, node, &snapshotter).await?;
                                    import(&held).await
                                }
                                result => result,
                            }
                        }
                    });
                    let results = futures_util::future::join_all(imports).await;
                    fallback.clear();
                    for (node, result) in missing.iter().zip(results) {
                        match result {
                            Ok(layers_sent) => loads.push(NodeLoad {
                                node: node.clone(),
                                outcome: NodeOutcome::Delta {
                                    took: started.elapsed(),
                                    layers_sent,
                                },
                            }),
                            Err(delta::DeltaError::Node(ExecError::NodeGone { node })) => {
                                return Err(node_error(
                                    &image.reference,
                                    &node.clone(),
                                    ExecError::NodeGone { node },
                                ));
                            }
                            Err(e) => {
                                printer.warn(&format!(
                                    "{}: {}; loading the whole image into {node} instead",
                                    image.image,
                                    crate::error::one_line(&e)
                                ));
                                fallback.push(node.clone());
                            }
                        }
                    }
                }
            }
        }
        if !fallback.is_empty() {
            loads.extend(full_import(self.docker, &fallback, image).await?);
        }
        Ok(loads)
    }

    /// Push `image` to devloop's registry and, meanwhile, ask `nodes` what they hold: neither
    /// needs the other.
    async fn prepare(
        &self,
        registry: &Registry,
        nodes: &[String],
        image: &BuiltImage,
    ) -> (
        Result<delta::Pushed, delta::DeltaError>,
        BTreeMap<String, Looked>,
    ) {
        let looking = futures_util::future::join_all(nodes.iter().map(|node| async move {
            let looked = async {
                let snapshotter = snapshotter(self.docker, node).await?;
                let (held, remembered) = delta::held(self.docker, node, &snapshotter).await?;
                Ok((snapshotter, held, remembered))
            }
            .await;
            (node.clone(), looked)
        }));
        let (pushed, looked) = tokio::join!(delta::push(self.docker, registry, image), looking);
        (pushed, looked.into_iter().collect())
    }
}

/// What a node holds, as [`Loader::prepare`] found it: the snapshotter, the layers, and whether
/// that came from memory.
type Looked = Result<(String, std::collections::HashSet<String>, bool), ExecError>;

/// Push `image` to the registry its reference names (for clusters that pull).
pub async fn push_to_registry(docker: &Docker, image: &BuiltImage) -> Result<Duration, LoadError> {
    let started = Instant::now();
    let (repo, tag) = image
        .reference
        .rsplit_once(':')
        .unwrap_or((image.reference.as_str(), "latest"));
    let mut stream = docker.push_image(
        repo,
        Some(bollard::query_parameters::PushImageOptions {
            tag: Some(tag.to_string()),
            ..Default::default()
        }),
        None,
    );
    while let Some(item) = stream.next().await {
        item.map_err(|source| LoadError::Push {
            reference: image.reference.clone(),
            source,
        })?;
    }
    Ok(started.elapsed())
}

/// The size the delta store may grow to: `DEVLOOP_STORE_MAX_MB`, default 4 GiB.
fn registry_limit() -> u64 {
    std::env::var("DEVLOOP_STORE_MAX_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(4096)
        * 1024
        * 1024
}

fn node_error(reference: &str, node: &str, source: ExecError) -> LoadError {
    LoadError::Node {
        reference: reference.to_string(),
        node: node.to_string(),
        source,
    }
}

/// Export `image` once and import it whole into every node of `nodes`, in parallel.
pub async fn full_import(
    docker: &Docker,
    nodes: &[String],
    image: &BuiltImage,
) -> Result<Vec<NodeLoad>, LoadError> {
    let reference = &image.reference;
    let node_err = |node: &str, source| node_error(reference, node, source);
    let mut loads = Vec::new();

    // One export, fanned out to every node that needs it.
    let started = Instant::now();
    let mut senders = Vec::new();
    let mut imports = Vec::new();
    for node in nodes {
        let snapshotter = snapshotter(docker, node)
            .await
            .map_err(|e| node_err(node, e))?;
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
        senders.push(tx);
        let node = node.clone();
        imports.push(async move {
            let flag = format!("--snapshotter={snapshotter}");
            let cmd = [
                "ctr",
                "--namespace=k8s.io",
                "images",
                "import",
                "--all-platforms",
                "--digests",
                &flag,
                "-",
            ];
            let result = exec_with_input(docker, &node, &cmd, Some(receiver(rx))).await;
            (node, result)
        });
    }
    let export = async {
        let mut stream = docker.export_image(reference);
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(source) => {
                    for tx in &senders {
                        let _ = tx.send(Err(std::io::Error::other("export failed"))).await;
                    }
                    return Err(LoadError::Export {
                        reference: reference.clone(),
                        source,
                    });
                }
            };
            // A node that stopped reading is reported by its import; keep feeding the others.
            senders.retain(|tx| !tx.is_closed());
            for tx in &senders {
                let _ = tx.send(Ok(chunk.clone())).await;
            }
        }
        senders.clear();
        Ok(())
    };
    let (exported, results) = tokio::join!(export, futures_util::future::join_all(imports));
    for (node, result) in results {
        result.map_err(|e| node_err(&node, e))?;
        loads.push(NodeLoad {
            node,
            outcome: NodeOutcome::Full {
                took: started.elapsed(),
            },
        });
    }
    exported?;
    Ok(loads)
}

fn receiver(
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Unpin {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_names() {
        assert_eq!(containerd_ref("web:dl-1"), "docker.io/library/web:dl-1");
        assert_eq!(containerd_ref("team/web:1"), "docker.io/team/web:1");
        assert_eq!(
            containerd_ref("localhost:5000/web:1"),
            "localhost:5000/web:1"
        );
        assert_eq!(containerd_ref("ghcr.io/a/web:1"), "ghcr.io/a/web:1");
    }

    #[test]
    fn reads_the_cri_snapshotter() {
        let dump = "[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n    default_runtime_name = \"runc\"\n    snapshotter = \"native\"\n  [plugins.other]\n    snapshotter = \"zfs\"\n";
        assert_eq!(parse_snapshotter(dump).as_deref(), Some("native"));
    }
}
