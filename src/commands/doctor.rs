//! `devloop doctor`: is this machine ready for `devloop up`, and if not, what to do.
//!
//! Each check is independent and says what it found and, when it failed, the fix. Nothing here
//! changes anything; the checks only look.

use std::time::Duration;

use serde::Serialize;

use crate::cli::{DoctorArgs, GlobalArgs};
use crate::cluster::{self, ClusterKind, minikube};
use crate::config::{self, wire::DEFAULT_LOCAL_PORT};
use crate::error::Error;
use crate::output::{Printer, Style};
use crate::{build, deploy, engine, forward};

const API_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

pub async fn run(global: &GlobalArgs, args: &DoctorArgs, printer: &Printer) -> Result<(), Error> {
    let mut checks = Vec::new();

    // Docker: needed to build, and to see kind/minikube node containers.
    let engine = engine::connect().await;
    let mut nodes = Vec::new();
    match &engine {
        Ok(e) => {
            let builder = match build::docker::choose_builder(&e.docker).await {
                build::docker::Builder::BuildKit => "BuildKit",
                build::docker::Builder::Classic => "the classic builder",
            };
            checks.push(Check::ok(
                "docker",
                format!(
                    "Docker Engine {} (API {}) at {}, builds with {builder}",
                    e.version,
                    e.api_version,
                    engine::host()
                ),
            ));
            nodes = cluster::node_containers(&e.docker)
                .await
                .unwrap_or_default();
        }
        Err(err) => checks.push(Check::fail(
            "docker",
            crate::error::one_line(err),
            err.hint(),
        )),
    }

    checks.extend(kube_checks(global, &nodes).await);

    // The project, when run inside one: valid, and its local ports free.
    let selection = super::selection(global);
    let mut ports = vec![DEFAULT_LOCAL_PORT];
    match config::load(&selection) {
        Ok(project) => {
            ports = project.forwards.iter().map(|f| f.local_port).collect();
            checks.push(project_check(&project));
        }
        Err(config::ConfigError::NotFound { .. }) => checks.push(Check::warn(
            "project",
            "no devloop.yaml here or above",
            "run `devloop init` in your app's directory, or pass `-C DIR`",
        )),
        Err(err) => {
            let err = Error::from(err);
            checks.push(Check::fail(
                "project",
                err.message(),
                err.hint()
                    .unwrap_or_else(|| "fix the file named above".into()),
            ));
        }
    }
    for port in ports {
        checks.push(port_check(port));
    }

    if args.json {
        printer.data(&(serde_json::to_string_pretty(&checks).expect("checks serialize") + "\n"));
    } else {
        print_checks(printer, &checks);
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    if failed > 0 {
        return Err(Error::ChecksFailed {
            failed,
            total: checks.len(),
        });
    }
    Ok(())
}

fn print_checks(printer: &Printer, checks: &[Check]) {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for check in checks {
        let mark = match check.status {
            Status::Ok => printer.paint(Style::Ok, "ok  "),
            Status::Warn => printer.paint(Style::Warn, "warn"),
            Status::Fail => printer.paint(Style::Error, "FAIL"),
        };
        out.push_str(&format!("{mark} {:width$}  {}\n", check.name, check.detail));
        if let Some(fix) = &check.fix {
            out.push_str(&format!(
                "     {:width$}  {} {fix}\n",
                "",
                printer.paint(Style::Bold, "fix:")
            ));
        }
    }
    printer.data(&out);
}

async fn kube_checks(global: &GlobalArgs, nodes: &[cluster::NodeContainer]) -> Vec<Check> {
    const CREATE: &str =
        "create a local cluster (`kind create cluster` or `minikube start`), or set KUBECONFIG";
    let kubeconfig = match kube::config::Kubeconfig::read() {
        Ok(k) => k,
        Err(err) => {
            return vec![Check::fail(
                "kubeconfig",
                crate::error::one_line(&err),
                CREATE,
            )];
        }
    };
    let context = match global
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone())
    {
        Some(c) => c,
        None => {
            return vec![Check::fail(
                "context",
                "the kubeconfig has no current context",
                "pick one: `kubectl config use-context NAME`, or pass `--context NAME`",
            )];
        }
    };
    if !kubeconfig.contexts.iter().any(|c| c.name == context) {
        let names: Vec<&str> = kubeconfig
            .contexts
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        return vec![Check::fail(
            "context",
            format!("context `{context}` is not in the kubeconfig"),
            match crate::diagnostic::suggest(&context, names.iter().copied()) {
                Some(best) => format!("did you mean `--context {best}`?"),
                None => format!(
                    "contexts: {}",
                    if names.is_empty() {
                        "(none)".into()
                    } else {
                        names.join(", ")
                    }
                ),
            },
        )];
    }
    let mut checks = vec![Check::ok("context", format!("`{context}`"))];

    let detection = cluster::classify(&context, nodes);
    let minikube = match &detection.kind {
        ClusterKind::Minikube { profile, node } => Some((profile.clone(), node.clone())),
        _ => None,
    };
    checks.push(match (&detection.kind, &detection.note) {
        (ClusterKind::Other, Some(note)) => {
            Check::warn("cluster", "cannot load images directly", note.clone())
        }
        (ClusterKind::Other, None) => Check::warn(
            "cluster",
            "not kind or minikube: images must go through a registry",
            "use a local cluster (`kind create cluster`), or configure a registry",
        ),
        (kind, _) => Check::ok("cluster", kind.to_string()),
    });
    if let Some((profile, node)) = minikube {
        // The kubelet's answer, else minikube's profile config; bounded like the API check.
        let runtime =
            match tokio::time::timeout(API_TIMEOUT, minikube::runtime(&context, &profile, &node))
                .await
            {
                Ok(found) => found,
                Err(_) => minikube::profile_runtime(&profile).and_then(|r| {
                    r.ok_or_else(|| minikube::MinikubeError::UnknownRuntime {
                        profile: profile.clone(),
                        api: format!("no answer within {}s", API_TIMEOUT.as_secs()),
                        path: minikube::profile_config(&profile),
                    })
                }),
            };
        let docker_env = minikube::active_dockerd().as_deref() == Some(profile.as_str());
        checks.push(runtime_check(&profile, runtime, docker_env));
    }

    let options = kube::config::KubeConfigOptions {
        context: Some(context.clone()),
        ..Default::default()
    };
    let reached = async {
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| crate::error::one_line(&e))?;
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(|e| crate::error::one_line(&e))?;
        match tokio::time::timeout(API_TIMEOUT, client.apiserver_version()).await {
            Ok(Ok(info)) => Ok(format!("Kubernetes {} at {server}", info.git_version)),
            Ok(Err(e)) => Err(format!(
                "API server at {server}: {}",
                crate::error::one_line(&e)
            )),
            Err(_) => Err(format!(
                "API server at {server} did not answer within {}s",
                API_TIMEOUT.as_secs()
            )),
        }
    };
    checks.push(match reached.await {
        Ok(detail) => Check::ok("api-server", detail),
        Err(detail) => Check::fail(
            "api-server",
            detail,
            "start the cluster (`docker start NAME-control-plane`, `minikube start`), or pick a running context with `--context`",
        ),
    });
    checks
}

/// Which container runtime minikube `profile`'s node runs, and so where images go.
/// `docker_env`: this shell ran `minikube docker-env` for it (the local engine is the node's).
fn runtime_check(
    profile: &str,
    runtime: Result<minikube::Runtime, minikube::MinikubeError>,
    docker_env: bool,
) -> Check {
    const NAME: &str = "runtime";
    match runtime {
        Ok(minikube::Runtime::Docker) if docker_env => Check::ok(
            NAME,
            "docker: this shell's Docker engine is the node's (`minikube docker-env`); builds go straight into it, nothing to load",
        ),
        Ok(minikube::Runtime::Docker) => Check::ok(
            NAME,
            "docker: builds go straight into the node's Docker engine, nothing to load",
        ),
        Ok(minikube::Runtime::Containerd) => Check::ok(
            NAME,
            "containerd: images are built by the local Docker engine, then loaded into the node",
        ),
        Ok(minikube::Runtime::Other(runtime)) => {
            let err = minikube::MinikubeError::UnsupportedRuntime {
                profile: profile.to_string(),
                runtime: runtime.clone(),
            };
            Check::warn(
                NAME,
                format!("{runtime}: devloop cannot load images into it"),
                err.hint().unwrap_or_default(),
            )
        }
        Err(err) => Check::warn(
            NAME,
            crate::error::one_line(&err),
            err.hint()
                .unwrap_or_else(|| format!("start the cluster (`minikube start -p {profile}`)")),
        ),
    }
}

fn project_check(project: &config::Project) -> Check {
    let rendered = build::image_tags(project)
        .map_err(Error::from)
        .and_then(|images| {
            deploy::render(project, &deploy::RenderOptions { images }).map_err(Error::from)
        });
    match rendered {
        Ok(r) => Check::ok(
            "project",
            format!(
                "`{}`: profile `{}` renders {} objects",
                project.name,
                project.profile.name,
                r.objects.len()
            ),
        ),
        Err(err) => Check::fail(
            "project",
            err.message(),
            err.hint()
                .unwrap_or_else(|| "fix the file named above".into()),
        ),
    }
}

fn port_check(port: u16) -> Check {
    const NAME: &str = "port";
    if forward::is_free(port) {
        return Check::ok(NAME, format!("127.0.0.1:{port} is free"));
    }
    let holder = forward::owner(port).unwrap_or_else(|| "another process".into());
    Check::fail(
        NAME,
        format!("127.0.0.1:{port} is in use by {holder}"),
        format!("stop {holder}, or set `localPort:` under `portForward` in devloop.yaml"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use minikube::{MinikubeError, Runtime};

    #[test]
    fn a_minikube_node_says_its_runtime_and_where_images_go() {
        let docker = runtime_check("dev", Ok(Runtime::Docker), false);
        assert_eq!(docker.status, Status::Ok);
        assert_eq!(
            docker.detail,
            "docker: builds go straight into the node's Docker engine, nothing to load"
        );
        let shell = runtime_check("dev", Ok(Runtime::Docker), true);
        assert!(
            shell.detail.contains("`minikube docker-env`"),
            "{}",
            shell.detail
        );
        let containerd = runtime_check("dev", Ok(Runtime::Containerd), false);
        assert_eq!(containerd.status, Status::Ok);
        assert!(
            containerd.detail.starts_with("containerd: ") && containerd.detail.contains("loaded"),
            "{}",
            containerd.detail
        );
        let crio = runtime_check("dev", Ok(Runtime::Other("cri-o".into())), false);
        assert_eq!(crio.status, Status::Warn);
        assert!(
            crio.fix
                .as_deref()
                .is_some_and(|f| f.contains("--container-runtime=docker")),
            "{:?}",
            crio.fix
        );
        let unknown = runtime_check(
            "dev",
            Err(MinikubeError::UnknownRuntime {
                profile: "dev".into(),
                api: "connection refused".into(),
                path: "/h/.minikube/profiles/dev/config.json".into(),
            }),
            false,
        );
        assert_eq!(unknown.status, Status::Warn);
        assert!(
            unknown
                .fix
                .as_deref()
                .is_some_and(|f| f.contains("minikube start -p dev")),
            "{:?}",
            unknown.fix
        );

        // In `--json`, one more check of the same shape.
        let json = serde_json::to_value(&docker).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "runtime", "status": "ok", "detail": docker.detail})
        );
    }
}
