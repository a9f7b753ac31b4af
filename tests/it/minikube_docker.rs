//! minikube with the docker runtime (a `tests/cluster/up.sh NAME --shape minikube-docker` node:
//! dockerd + cri-dockerd, its Docker API on TLS 2376): devloop builds in the node's own engine and
//! loads nothing — the host's engine never holds the image, yet a pod runs it; a second build
//! skips; a shell after `minikube docker-env` works the same; missing client certificates are
//! named with the fix.

use std::process::Command;
use std::time::Duration;

use crate::common::{Namespace, Tier, devloop_with, sample, write};

/// The tier's context (the node container is named after it, as minikube names its node after
/// the profile), or `None` when the tier skips.
fn cluster(test: &str) -> Option<String> {
    Tier::MinikubeDockerCluster
        .available(test)
        .then(|| Tier::MinikubeDockerCluster.context())
}

/// samples/minimal serving `page`: a content tag no other run has built.
fn minimal_serving(page: &str) -> tempfile::TempDir {
    let project = sample("minimal");
    write(project.path(), "www/index.html", page);
    project
}

fn token(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{what}-{}-{nanos}\n", std::process::id())
}

/// `devloop build --json` in `dir`: the report of its one artifact.
fn build(dir: &std::path::Path, context: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let run = devloop_with(dir, &["--context", context, "build", "--json"], env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let reports: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    reports[0].clone()
}

/// Whether the node's own dockerd has `reference`.
fn node_has(node: &str, reference: &str) -> bool {
    Command::new("docker")
        .args(["exec", node, "docker", "image", "inspect", reference])
        .output()
        .unwrap()
        .status
        .success()
}

/// Whether the host's engine (the one devloop would otherwise build in) has `reference`.
fn host_has(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", reference])
        .output()
        .unwrap()
        .status
        .success()
}

fn remove_from_node(node: &str, reference: &str) {
    let _ = Command::new("docker")
        .args(["exec", node, "docker", "rmi", "-f", reference])
        .output();
}

#[test]
fn minikube_docker_tier_builds_in_the_node_engine_and_a_pod_serves_it() {
    let Some(context) =
        cluster("minikube_docker_tier_builds_in_the_node_engine_and_a_pod_serves_it")
    else {
        return;
    };
    let page = token("node-engine");
    let project = minimal_serving(&page);

    let first = build(project.path(), &context, &[]);
    let reference = first["reference"].as_str().unwrap().to_string();
    assert_eq!(first["built"], true, "{first}");
    let loaded = &first["loaded"][0];
    assert_eq!(loaded["method"], "node-engine", "{first}");
    assert_eq!(loaded["imported"], false, "{first}");
    assert_eq!(loaded["node"], context.as_str(), "{first}");
    assert!(
        node_has(&context, &reference),
        "{reference} is not in the node's dockerd"
    );
    assert!(
        !host_has(&reference),
        "{reference} was built in the host's engine"
    );

    // The tag exists in the node's engine: nothing is built, nothing is loaded.
    let run = devloop_with(project.path(), &["--context", &context, "build"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("up to date"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("already in minikube's Docker engine (profile"),
        "{}",
        run.stderr
    );
    let again = build(project.path(), &context, &[]);
    assert_eq!(again["built"], false, "{again}");
    assert_eq!(again["loaded"][0]["method"], "node-engine", "{again}");

    // `up` deploys it; the kubelet (through cri-dockerd) runs it from the node's engine.
    let ns = Namespace::new(&context, "mkdocker");
    let run = devloop_with(
        project.path(),
        &[
            "--context",
            &context,
            "-n",
            &ns.name,
            "up",
            "--once",
            "--timeout",
            "120",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "up --once:\n{}", run.stderr);
    assert!(run.stderr.contains("nothing to load"), "{}", run.stderr);
    let image = ns
        .kubectl(&[
            "get",
            "deployment/web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .unwrap();
    assert_eq!(image, reference);
    let mut served = String::new();
    for _ in 0..20 {
        served = ns
            .kubectl(&[
                "exec",
                "deployment/web",
                "--",
                "wget",
                "-qO-",
                "http://127.0.0.1:8080/",
            ])
            .unwrap_or_default();
        if served == page {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        served, page,
        "the pod does not serve the page built into the node"
    );
    drop(ns);
    remove_from_node(&context, &reference);
}

/// After `eval $(minikube docker-env)` the local engine is the node's: devloop builds there
/// directly (no host engine involved) and still loads nothing.
#[test]
fn minikube_docker_tier_a_docker_env_shell_builds_in_the_node_engine() {
    let Some(context) =
        cluster("minikube_docker_tier_a_docker_env_shell_builds_in_the_node_engine")
    else {
        return;
    };
    let port = Command::new("docker")
        .args(["port", &context, "2376/tcp"])
        .output()
        .unwrap();
    let port = String::from_utf8_lossy(&port.stdout)
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .expect("the node publishes 2376/tcp")
        .trim()
        .to_string();
    let host = format!("tcp://127.0.0.1:{port}");
    let certs = crate::common::minikube_path().join("certs");
    let env = [
        ("DOCKER_HOST", host.as_str()),
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", certs.to_str().unwrap()),
        ("MINIKUBE_ACTIVE_DOCKERD", context.as_str()),
    ];
    let project = minimal_serving(&token("docker-env"));
    let report = build(project.path(), &context, &env);
    let reference = report["reference"].as_str().unwrap().to_string();
    assert_eq!(report["built"], true, "{report}");
    assert_eq!(report["loaded"][0]["method"], "node-engine", "{report}");
    assert!(node_has(&context, &reference));
    assert!(!host_has(&reference));

    // `doctor` in that shell sees the minikube profile, not "no cluster".
    let run = devloop_with(
        project.path(),
        &["--context", &context, "doctor", "--json"],
        &env,
    );
    let checks: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).expect("JSON");
    let cluster = checks.iter().find(|c| c["name"] == "cluster").unwrap();
    assert_eq!(cluster["status"], "ok", "{checks:?}");
    assert!(
        cluster["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("minikube profile `{context}`")),
        "{checks:?}"
    );
    remove_from_node(&context, &reference);
}

#[test]
fn minikube_docker_tier_missing_certificates_are_named_with_the_fix() {
    let Some(context) = cluster("minikube_docker_tier_missing_certificates_are_named_with_the_fix")
    else {
        return;
    };
    let empty = tempfile::tempdir().unwrap();
    let project = minimal_serving(&token("no-certs"));
    let run = devloop_with(
        project.path(),
        &["--context", &context, "build"],
        &[("MINIKUBE_HOME", empty.path().to_str().unwrap())],
    );
    assert_eq!(run.code, 4, "{}", run.stderr);
    let certs = empty.path().join(".minikube/certs");
    assert!(
        run.stderr.contains(&format!(
            "minikube's Docker client certificates are missing from {}: ca.pem, cert.pem, key.pem",
            certs.display()
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("hint: `minikube start -p {context}` writes them")),
        "{}",
        run.stderr
    );
    // Nothing was built anywhere: the target is checked before any build.
    assert!(!run.stderr.contains("building"), "{}", run.stderr);
}
