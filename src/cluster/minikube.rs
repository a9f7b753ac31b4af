//! minikube specifics: its home directory (`MINIKUBE_HOME`), which container runtime a profile
//! runs, and the Docker engine inside a node that runs the docker runtime.
//!
//! With `--container-runtime=docker` the kubelet runs images from the node's own dockerd, so
//! devloop builds there and has nothing to load — what `eval $(minikube docker-env)` arranges by
//! hand. This module finds that engine the way `minikube docker-env` does: the loopback host port
//! the node container publishes for 2376/tcp, TLS with the client certificates in minikube's
//! `certs/` directory. It also recognises a shell that already ran `minikube docker-env`: then the
//! local engine *is* the node's. Importing into a containerd node is `load`'s job; starting or
//! repairing minikube is minikube's.

use std::path::{Path, PathBuf};

use bollard::Docker;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

/// The port minikube's nodes serve the Docker API on, with TLS (`constants.DockerDaemonPort`).
pub const DOCKER_DAEMON_PORT: u16 = 2376;

/// The client files `minikube docker-env` points `DOCKER_CERT_PATH` at.
const CLIENT_FILES: [&str; 3] = ["ca.pem", "cert.pem", "key.pem"];

/// How long bollard may take for one request to the node's engine (as `Docker::connect_with_*`
/// defaults: builds stream through one request).
const REQUEST_TIMEOUT_SECS: u64 = 120;

#[derive(Debug, thiserror::Error)]
pub enum MinikubeError {
    #[error(
        "cannot tell which container runtime minikube profile `{profile}` runs: the API server did not say ({api}), and there is no profile config at {}",
        path.display()
    )]
    UnknownRuntime {
        profile: String,
        api: String,
        path: PathBuf,
    },
    #[error("minikube's profile config {} is not readable: {message}", path.display())]
    Profile { path: PathBuf, message: String },
    #[error(
        "minikube profile `{profile}` runs the {runtime} container runtime; devloop puts images only into docker and containerd nodes"
    )]
    UnsupportedRuntime { profile: String, runtime: String },
    #[error("failed to inspect minikube's node container `{node}`")]
    Inspect {
        node: String,
        #[source]
        source: Box<bollard::errors::Error>,
    },
    #[error(
        "minikube node container `{node}` publishes no host port for its Docker engine ({DOCKER_DAEMON_PORT}/tcp)"
    )]
    NotPublished { profile: String, node: String },
    #[error("minikube's Docker client certificates are missing from {}: {}", dir.display(), missing.join(", "))]
    MissingCerts {
        profile: String,
        dir: PathBuf,
        missing: Vec<String>,
    },
    #[error("cannot use minikube's Docker client certificates in {}", certs.display())]
    Certs {
        profile: String,
        certs: PathBuf,
        #[source]
        source: Box<bollard::errors::Error>,
    },
    #[error(
        "minikube profile `{profile}`'s Docker engine at {address} refused a TLS connection with the certificates in {}",
        certs.display()
    )]
    Tls {
        profile: String,
        address: String,
        certs: PathBuf,
        #[source]
        source: Box<bollard::errors::Error>,
    },
    #[error("minikube profile `{profile}`'s Docker engine at {address} did not answer within {}s", crate::engine::PING_TIMEOUT.as_secs())]
    Timeout { profile: String, address: String },
}

impl MinikubeError {
    pub fn hint(&self) -> Option<String> {
        let docker_env = |p: &str| format!("`eval $(minikube -p {p} docker-env)`");
        match self {
            MinikubeError::UnknownRuntime { profile, .. } => Some(format!(
                "start the cluster (`minikube start -p {profile}`), or set MINIKUBE_HOME to the minikube home that created it"
            )),
            MinikubeError::Profile { .. } => Some(
                "`minikube start` rewrites it; or set MINIKUBE_HOME to the minikube home that created the profile".into(),
            ),
            MinikubeError::UnsupportedRuntime { profile, .. } => Some(format!(
                "recreate the cluster with a runtime devloop can load into (`minikube delete -p {profile} && minikube start -p {profile} --container-runtime=docker`), or push through a registry (`registry:` in devloop.yaml)"
            )),
            MinikubeError::Inspect { .. } => Some(
                "check that the node container runs (`docker ps`); start it with `minikube start`".into(),
            ),
            MinikubeError::NotPublished { profile, .. } => Some(format!(
                "restart the cluster so the docker driver publishes the port (`minikube start -p {profile}`), or point this shell at the node's engine with {}",
                docker_env(profile)
            )),
            MinikubeError::MissingCerts { profile, .. } => Some(format!(
                "`minikube start -p {profile}` writes them; if minikube keeps its files elsewhere, set MINIKUBE_HOME to that directory, or run {} (it prints DOCKER_CERT_PATH)",
                docker_env(profile)
            )),
            MinikubeError::Certs { profile, .. } => Some(format!(
                "they are unreadable or not PEM: `minikube start -p {profile}` regenerates them"
            )),
            MinikubeError::Tls { profile, .. } => Some(format!(
                "the certificates must be from the minikube home that started `{profile}`: check MINIKUBE_HOME, restart it (`minikube start -p {profile}`), or see the details with `eval $(minikube -p {profile} docker-env) && docker version`"
            )),
            MinikubeError::Timeout { profile, .. } => Some(format!(
                "the node's dockerd may be stuck: restart the cluster (`minikube start -p {profile}`)"
            )),
        }
    }
}

/// minikube's own directory, as minikube computes it (`localpath.MiniPath`): `$MINIKUBE_HOME`
/// when it ends in `.minikube`, else `$MINIKUBE_HOME/.minikube`; without it `~/.minikube`.
pub fn mini_path() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    mini_path_from(std::env::var("MINIKUBE_HOME").ok().as_deref(), &home)
}

fn mini_path_from(minikube_home: Option<&str>, home: &Path) -> PathBuf {
    match minikube_home.filter(|h| !h.is_empty()) {
        None => home.join(".minikube"),
        Some(h) if Path::new(h).file_name().is_some_and(|n| n == ".minikube") => PathBuf::from(h),
        Some(h) => Path::new(h).join(".minikube"),
    }
}

/// A node's container runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    Docker,
    Containerd,
    Other(String),
}

impl Runtime {
    fn named(name: &str) -> Self {
        match name {
            "docker" => Runtime::Docker,
            "containerd" => Runtime::Containerd,
            other => Runtime::Other(other.to_string()),
        }
    }

    /// From the kubelet's `containerRuntimeVersion` (`docker://20.10.24`, `containerd://1.7.2`).
    fn from_node(version: &str) -> Self {
        Runtime::named(version.split("://").next().unwrap_or_default())
    }
}

/// The runtime minikube's profile config names (`KubernetesConfig.ContainerRuntime`); `None`
/// when there is no such profile, or it names none.
pub fn profile_runtime(profile: &str) -> Result<Option<Runtime>, MinikubeError> {
    let path = profile_config(profile);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(MinikubeError::Profile {
                path,
                message: e.to_string(),
            });
        }
    };
    parse_profile_runtime(&text).map_err(|message| MinikubeError::Profile { path, message })
}

/// Where minikube keeps `profile`'s config (`MINIKUBE_HOME/.minikube/profiles/P/config.json`).
pub fn profile_config(profile: &str) -> PathBuf {
    mini_path()
        .join("profiles")
        .join(profile)
        .join("config.json")
}

fn parse_profile_runtime(text: &str) -> Result<Option<Runtime>, String> {
    let config: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(config
        .pointer("/KubernetesConfig/ContainerRuntime")
        .and_then(serde_json::Value::as_str)
        .filter(|r| !r.is_empty())
        .map(Runtime::named))
}

/// The runtime the kubelet of `node` reports; the cluster's first node when there is no node of
/// that name (minikube names its first node after the profile, as its container).
async fn node_runtime(context: &str, node: &str) -> Result<Runtime, String> {
    let client = super::client(context)
        .await
        .map_err(|e| crate::error::one_line(&e))?;
    let nodes = Api::<Node>::all(client.kube);
    let listed = nodes
        .list(&ListParams::default())
        .await
        .map_err(|e| crate::error::one_line(&e))?;
    let found = listed
        .items
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node))
        .or_else(|| listed.items.first())
        .ok_or_else(|| "the cluster has no nodes".to_string())?;
    let version = found
        .status
        .as_ref()
        .and_then(|s| s.node_info.as_ref())
        .map(|i| i.container_runtime_version.as_str())
        .unwrap_or_default();
    if version.is_empty() {
        return Err("the node reports no container runtime yet".into());
    }
    Ok(Runtime::from_node(version))
}

/// The runtime of minikube `profile`: what its kubelet reports (the truth about where pods look
/// for images), else — when the API server does not answer — minikube's profile config.
pub async fn runtime(context: &str, profile: &str, node: &str) -> Result<Runtime, MinikubeError> {
    let api = match node_runtime(context, node).await {
        Ok(runtime) => return Ok(runtime),
        Err(e) => e,
    };
    match profile_runtime(profile)? {
        Some(runtime) => Ok(runtime),
        None => Err(MinikubeError::UnknownRuntime {
            profile: profile.to_string(),
            api,
            path: profile_config(profile),
        }),
    }
}

/// The profile whose node engine the local Docker engine is, when this shell ran
/// `eval $(minikube docker-env)`: `MINIKUBE_ACTIVE_DOCKERD`, with `DOCKER_HOST` set (its
/// `--unset` clears both).
pub fn active_dockerd() -> Option<String> {
    let profile = std::env::var("MINIKUBE_ACTIVE_DOCKERD").ok()?;
    let host = std::env::var("DOCKER_HOST").ok()?;
    (!profile.is_empty() && !host.is_empty()).then_some(profile)
}

/// A minikube node's own Docker engine, connected.
pub struct NodeEngine {
    pub docker: Docker,
    pub profile: String,
    /// The node container.
    pub node: String,
    /// Where it answers: `tcp://127.0.0.1:PORT` (`DOCKER_HOST` after `minikube docker-env`).
    pub address: String,
}

/// Where images for minikube `profile` must be built: in the node's engine when the node runs the
/// docker runtime (`Some`), or in `host` to be imported into containerd (`None`).
pub async fn engine_for(
    host: &Docker,
    context: &str,
    profile: &str,
    node: &str,
) -> Result<Option<NodeEngine>, MinikubeError> {
    if active_dockerd().as_deref() == Some(profile) {
        // `minikube docker-env` refuses any runtime but docker: the local engine is the node's.
        return Ok(Some(NodeEngine {
            docker: host.clone(),
            profile: profile.to_string(),
            node: node.to_string(),
            address: crate::engine::host(),
        }));
    }
    match runtime(context, profile, node).await? {
        Runtime::Docker => node_engine(host, profile, node).await.map(Some),
        Runtime::Containerd => Ok(None),
        Runtime::Other(runtime) => Err(MinikubeError::UnsupportedRuntime {
            profile: profile.to_string(),
            runtime,
        }),
    }
}

/// Connect to the Docker engine in `node` as `minikube docker-env` would point a shell at it.
pub async fn node_engine(
    host: &Docker,
    profile: &str,
    node: &str,
) -> Result<NodeEngine, MinikubeError> {
    let container =
        host.inspect_container(node, None)
            .await
            .map_err(|source| MinikubeError::Inspect {
                node: node.to_string(),
                source: Box::new(source),
            })?;
    let ports = container.network_settings.and_then(|n| n.ports);
    let address = published_address(ports.as_ref()).ok_or_else(|| MinikubeError::NotPublished {
        profile: profile.to_string(),
        node: node.to_string(),
    })?;
    let certs = mini_path().join("certs");
    let missing: Vec<String> = CLIENT_FILES
        .iter()
        .filter(|f| !certs.join(f).is_file())
        .map(|f| f.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(MinikubeError::MissingCerts {
            profile: profile.to_string(),
            dir: certs,
            missing,
        });
    }
    let docker = Docker::connect_with_ssl(
        &address,
        &certs.join("key.pem"),
        &certs.join("cert.pem"),
        &certs.join("ca.pem"),
        REQUEST_TIMEOUT_SECS,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(|source| MinikubeError::Certs {
        profile: profile.to_string(),
        certs: certs.clone(),
        source: Box::new(source),
    })?;
    // The handshake happens on the first request: a wrong CA or client certificate shows here.
    match tokio::time::timeout(crate::engine::PING_TIMEOUT, docker.ping()).await {
        Err(_) => Err(MinikubeError::Timeout {
            profile: profile.to_string(),
            address,
        }),
        Ok(Err(source)) => Err(MinikubeError::Tls {
            profile: profile.to_string(),
            address,
            certs,
            source: Box::new(source),
        }),
        Ok(Ok(_)) => Ok(NodeEngine {
            docker,
            profile: profile.to_string(),
            node: node.to_string(),
            address,
        }),
    }
}

/// `tcp://IP:PORT` of the host binding of the node's Docker port (a wildcard binding is reached
/// on loopback, as minikube does).
fn published_address(ports: Option<&bollard::models::PortMap>) -> Option<String> {
    let bindings = ports?.get(&format!("{DOCKER_DAEMON_PORT}/tcp"))?.as_ref()?;
    let binding = bindings
        .iter()
        .find(|b| b.host_port.as_deref().is_some_and(|p| !p.is_empty()))?;
    let ip = match binding.host_ip.as_deref() {
        None | Some("" | "0.0.0.0" | "::") => "127.0.0.1",
        Some(ip) => ip,
    };
    let port = binding.host_port.as_deref()?;
    Some(match ip.contains(':') {
        true => format!("tcp://[{ip}]:{port}"),
        false => format!("tcp://{ip}:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::PortBinding;
    use std::collections::HashMap;

    #[test]
    fn finds_minikubes_directory_as_minikube_does() {
        let home = Path::new("/home/u");
        assert_eq!(
            mini_path_from(None, home),
            PathBuf::from("/home/u/.minikube")
        );
        assert_eq!(
            mini_path_from(Some(""), home),
            PathBuf::from("/home/u/.minikube")
        );
        assert_eq!(
            mini_path_from(Some("/ci/mk"), home),
            PathBuf::from("/ci/mk/.minikube")
        );
        assert_eq!(
            mini_path_from(Some("/ci/mk/.minikube"), home),
            PathBuf::from("/ci/mk/.minikube")
        );
    }

    #[test]
    fn reads_the_runtime_from_profiles_and_nodes() {
        let config = r#"{"Name":"m","KubernetesConfig":{"ContainerRuntime":"docker"}}"#;
        assert_eq!(parse_profile_runtime(config), Ok(Some(Runtime::Docker)));
        let config = r#"{"KubernetesConfig":{"ContainerRuntime":"containerd"}}"#;
        assert_eq!(parse_profile_runtime(config), Ok(Some(Runtime::Containerd)));
        assert_eq!(parse_profile_runtime(r#"{"Name":"m"}"#), Ok(None));
        assert!(parse_profile_runtime("{").is_err());

        assert_eq!(
            Runtime::from_node("docker://20.10.24+dfsg1"),
            Runtime::Docker
        );
        assert_eq!(
            Runtime::from_node("containerd://1.6.20"),
            Runtime::Containerd
        );
        assert_eq!(
            Runtime::from_node("cri-o://1.30.0"),
            Runtime::Other("cri-o".into())
        );
    }

    #[test]
    fn reaches_the_published_docker_port_on_loopback() {
        let map = |ip: Option<&str>, port: &str| {
            HashMap::from([(
                "2376/tcp".to_string(),
                Some(vec![PortBinding {
                    host_ip: ip.map(str::to_string),
                    host_port: Some(port.to_string()),
                }]),
            )])
        };
        assert_eq!(
            published_address(Some(&map(Some("127.0.0.1"), "32771"))).as_deref(),
            Some("tcp://127.0.0.1:32771")
        );
        assert_eq!(
            published_address(Some(&map(Some("0.0.0.0"), "5000"))).as_deref(),
            Some("tcp://127.0.0.1:5000")
        );
        assert_eq!(
            published_address(Some(&map(Some("::1"), "5000"))).as_deref(),
            Some("tcp://[::1]:5000")
        );
        let unpublished = HashMap::from([("2376/tcp".to_string(), None)]);
        assert_eq!(published_address(Some(&unpublished)), None);
        assert_eq!(published_address(None), None);
    }
}
