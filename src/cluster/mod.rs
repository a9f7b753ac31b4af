//! Which cluster a kube context points at: kind, minikube, or something else.
//!
//! Detection looks at the context's name and at the node containers Docker runs (kind and
//! minikube label theirs), because a context name alone can lie and loading images into the
//! wrong place must never happen. `node` runs commands in node containers; `load` puts built
//! images into their containerd; `minikube` finds the Docker engine of a minikube node that runs
//! the docker runtime (images are built there, nothing is loaded).

pub mod delta;
pub mod load;
pub mod minikube;
pub mod node;
pub mod registry;

use std::collections::HashMap;

/// Labels kind puts on its node containers.
pub const KIND_CLUSTER_LABEL: &str = "io.x-k8s.kind.cluster";
pub const KIND_ROLE_LABEL: &str = "io.x-k8s.kind.role";
/// The label minikube's docker driver puts on its node container (value: the profile).
pub const MINIKUBE_NAME_LABEL: &str = "name.minikube.sigs.k8s.io";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ClusterKind {
    /// A kind cluster and its node containers.
    Kind { cluster: String, nodes: Vec<String> },
    /// A minikube profile running in a container.
    Minikube { profile: String, node: String },
    /// Anything else: a remote cluster, or a local one devloop cannot load images into directly.
    Other,
}

impl std::fmt::Display for ClusterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterKind::Kind { cluster, nodes } => {
                write!(f, "kind cluster `{cluster}` ({} node", nodes.len())?;
                write!(f, "{})", if nodes.len() == 1 { "" } else { "s" })
            }
            ClusterKind::Minikube { profile, .. } => write!(f, "minikube profile `{profile}`"),
            ClusterKind::Other => write!(f, "not kind or minikube"),
        }
    }
}

/// A running container's name and labels, as far as detection needs them.
#[derive(Debug, Clone)]
pub struct NodeContainer {
    pub name: String,
    pub labels: HashMap<String, String>,
}

/// The result of detection, with a note when the context and the containers disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    pub kind: ClusterKind,
    pub note: Option<String>,
}

/// Classify `context` given the running containers (empty when Docker is unreachable).
pub fn classify(context: &str, containers: &[NodeContainer]) -> Detection {
    if let Some(cluster) = context.strip_prefix("kind-") {
        let mut nodes: Vec<String> = containers
            .iter()
            .filter(|c| c.labels.get(KIND_CLUSTER_LABEL).map(String::as_str) == Some(cluster))
            .map(|c| c.name.clone())
            .collect();
        nodes.sort();
        if nodes.is_empty() {
            return Detection {
                kind: ClusterKind::Other,
                note: Some(format!(
                    "context `{context}` names a kind cluster, but no container labelled {KIND_CLUSTER_LABEL}={cluster} is running; start it (`kind create cluster --name {cluster}`) or pick another context"
                )),
            };
        }
        return Detection {
            kind: ClusterKind::Kind {
                cluster: cluster.to_string(),
                nodes,
            },
            note: None,
        };
    }
    if let Some(node) = containers
        .iter()
        .find(|c| c.labels.get(MINIKUBE_NAME_LABEL).map(String::as_str) == Some(context))
    {
        return Detection {
            kind: ClusterKind::Minikube {
                profile: context.to_string(),
                node: node.name.clone(),
            },
            note: None,
        };
    }
    let note = (context == "minikube").then(|| {
        "context `minikube` has no running minikube container; run `minikube start`".to_string()
    });
    Detection {
        kind: ClusterKind::Other,
        note,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("failed to read the kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("the kubeconfig has no current context")]
    NoContext,
    #[error("context `{0}` is not in the kubeconfig")]
    UnknownContext(String),
    #[error("context `{context}` is not a local kind or minikube cluster")]
    NotLocal {
        context: String,
        note: Option<String>,
    },
    #[error("cannot make a client for context `{context}`: {message}")]
    Client { context: String, message: String },
    #[error("failed to list node containers")]
    Docker(#[source] bollard::errors::Error),
    #[error(transparent)]
    Minikube(#[from] minikube::MinikubeError),
}

impl ClusterError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ClusterError::Kubeconfig(_) | ClusterError::NoContext => Some(
                "create a local cluster (`kind create cluster` or `minikube start`), or pass `--context NAME`".into(),
            ),
            ClusterError::UnknownContext(_) => Some("list contexts with `kubectl config get-contexts`".into()),
            ClusterError::NotLocal { note: Some(note), .. } => Some(note.clone()),
            ClusterError::NotLocal { .. } => Some(
                "devloop loads images only into local kind or minikube clusters: switch context (`--context kind-NAME`), or build without loading (`--no-load`)".into(),
            ),
            ClusterError::Minikube(e) => e.hint(),
            ClusterError::Docker(_) | ClusterError::Client { .. } => None,
        }
    }
}

/// The kube context devloop works against: `--context`, else the kubeconfig's current one.
/// devloop never picks a context on its own.
pub fn chosen_context(explicit: Option<&str>) -> Result<String, ClusterError> {
    let kubeconfig = kube::config::Kubeconfig::read().map_err(ClusterError::Kubeconfig)?;
    let context = match explicit {
        Some(c) => c.to_string(),
        None => kubeconfig
            .current_context
            .clone()
            .ok_or(ClusterError::NoContext)?,
    };
    if !kubeconfig.contexts.iter().any(|c| c.name == context) {
        return Err(ClusterError::UnknownContext(context));
    }
    Ok(context)
}

/// A Kubernetes client for `context` (see [`chosen_context`]), its namespace, and the server URL.
pub async fn client(context: &str) -> Result<Client, ClusterError> {
    let options = kube::config::KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config =
        kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| ClusterError::Client {
                context: context.to_string(),
                message: e.to_string(),
            })?;
    let server = config.cluster_url.to_string();
    let namespace = config.default_namespace.clone();
    let kube = kube::Client::try_from(config).map_err(|e| ClusterError::Client {
        context: context.to_string(),
        message: e.to_string(),
    })?;
    Ok(Client {
        kube,
        namespace,
        server,
        context: context.to_string(),
    })
}

/// A connected client and what it was made from, for messages.
#[derive(Clone)]
pub struct Client {
    pub kube: kube::Client,
    /// The context's default namespace (`default` when it names none).
    pub namespace: String,
    pub server: String,
    pub context: String,
}

/// Detect the cluster behind `context`; `choice` (from devloop.yaml) can insist on a kind.
pub async fn detect(
    docker: &bollard::Docker,
    context: &str,
    choice: crate::config::ClusterOption,
) -> Result<ClusterKind, ClusterError> {
    use crate::config::ClusterOption;
    let nodes = node_containers(docker)
        .await
        .map_err(ClusterError::Docker)?;
    let mut detection = classify(context, &nodes);
    if detection.kind == ClusterKind::Other
        && let Some(active) = minikube::active_dockerd()
    {
        detection.note = Some(format!(
            "DOCKER_HOST points at minikube profile `{active}`'s own Docker engine (`minikube docker-env`), which runs no cluster nodes; use context `{active}`, or go back to your engine with `eval $(minikube -p {active} docker-env --unset)`"
        ));
    }
    let agrees = match (choice, &detection.kind) {
        (ClusterOption::Auto, _) => true,
        (ClusterOption::Kind, ClusterKind::Kind { .. }) => true,
        (ClusterOption::Minikube, ClusterKind::Minikube { .. }) => true,
        (ClusterOption::Other, _) => return Ok(ClusterKind::Other),
        _ => false,
    };
    if !agrees {
        return Err(ClusterError::NotLocal {
            context: context.to_string(),
            note: Some(format!(
                "devloop.yaml says `cluster: {}`, but context `{context}` is {}; switch context or change `cluster:`",
                serde_json::to_value(choice)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                detection.kind
            )),
        });
    }
    match detection.kind {
        ClusterKind::Other => Err(ClusterError::NotLocal {
            context: context.to_string(),
            note: detection.note,
        }),
        kind => Ok(kind),
    }
}

/// Running containers that look like kind or minikube nodes. After `eval $(minikube docker-env)`
/// the engine is the node's own, which runs pods, not nodes: the node is then the profile that
/// `MINIKUBE_ACTIVE_DOCKERD` names (minikube names its node container after the profile).
pub async fn node_containers(
    docker: &bollard::Docker,
) -> Result<Vec<NodeContainer>, bollard::errors::Error> {
    let mut found = Vec::new();
    for label in [KIND_CLUSTER_LABEL, MINIKUBE_NAME_LABEL] {
        let options = bollard::query_parameters::ListContainersOptions {
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![label.to_string()],
            )])),
            ..Default::default()
        };
        for c in docker.list_containers(Some(options)).await? {
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string();
            found.push(NodeContainer {
                name,
                labels: c.labels.unwrap_or_default(),
            });
        }
    }
    if let Some(profile) = minikube::active_dockerd()
        && !found
            .iter()
            .any(|c| c.labels.get(MINIKUBE_NAME_LABEL) == Some(&profile))
    {
        found.push(NodeContainer {
            name: profile.clone(),
            labels: HashMap::from([(MINIKUBE_NAME_LABEL.to_string(), profile)]),
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, labels: &[(&str, &str)]) -> NodeContainer {
        NodeContainer {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn tells_kind_minikube_and_others_apart() {
        let running = [
            container("dev-control-plane", &[(KIND_CLUSTER_LABEL, "dev")]),
            container("dev-worker", &[(KIND_CLUSTER_LABEL, "dev")]),
            container("minikube", &[(MINIKUBE_NAME_LABEL, "minikube")]),
        ];
        assert_eq!(
            classify("kind-dev", &running).kind,
            ClusterKind::Kind {
                cluster: "dev".into(),
                nodes: vec!["dev-control-plane".into(), "dev-worker".into()]
            }
        );
        assert!(matches!(
            classify("minikube", &running).kind,
            ClusterKind::Minikube { .. }
        ));
        assert_eq!(classify("gke_prod", &running).kind, ClusterKind::Other);
        let stale = classify("kind-gone", &running);
        assert_eq!(stale.kind, ClusterKind::Other);
        assert!(
            stale
                .note
                .unwrap()
                .contains("kind create cluster --name gone")
        );
    }
}
