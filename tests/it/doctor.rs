//! `devloop doctor`: fixes, not stack traces, when nothing is there; and a real engine found
//! when Docker runs (docker tier).

use crate::common::{Tier, devloop_with, sample};

#[test]
fn without_docker_or_cluster_it_says_how_to_fix_each() {
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().display().to_string();
    let env = [
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ("KUBECONFIG", "/nonexistent/kubeconfig"),
        ("HOME", home_path.as_str()),
    ];
    let run = devloop_with(home.path(), &["doctor"], &env);
    assert_eq!(
        run.code, 1,
        "failed checks exit 1\n{}{}",
        run.stdout, run.stderr
    );
    assert!(!run.stderr.contains("panicked") && !run.stderr.contains("backtrace"));
    let lines: Vec<&str> = run.stdout.lines().collect();
    let docker = lines
        .iter()
        .position(|l| l.starts_with("FAIL docker"))
        .expect("docker check failed");
    assert!(
        lines[docker].contains("/nonexistent/docker.sock"),
        "{}",
        run.stdout
    );
    assert!(
        lines[docker + 1].contains("fix:") && lines[docker + 1].contains("dockerd"),
        "{}",
        run.stdout
    );
    let kube = lines
        .iter()
        .position(|l| l.starts_with("FAIL kubeconfig"))
        .expect("kubeconfig check failed");
    assert!(
        lines[kube + 1].contains("kind create cluster"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("devloop init"),
        "outside a project it says how to make one"
    );
    assert!(run.stderr.contains("checks failed"), "{}", run.stderr);

    // The same as JSON, for scripts.
    let run = devloop_with(home.path(), &["doctor", "--json"], &env);
    let checks: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).expect("JSON");
    let docker = checks.iter().find(|c| c["name"] == "docker").unwrap();
    assert_eq!(docker["status"], "fail");
    assert!(docker["fix"].as_str().unwrap().contains("DOCKER_HOST"));
}

#[test]
fn a_busy_port_names_its_holder() {
    let project = sample("minimal");
    // The minimal sample forwards localPort 8000; hold a port and point the project at it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let yaml = std::fs::read_to_string(project.path().join("devloop.yaml"))
        .unwrap()
        .replace("localPort: 8000", &format!("localPort: {port}"));
    std::fs::write(project.path().join("devloop.yaml"), yaml).unwrap();
    let run = devloop_with(
        project.path(),
        &["doctor"],
        &[("KUBECONFIG", "/nonexistent")],
    );
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL port"))
        .unwrap_or_else(|| panic!("port check fails:\n{}", run.stdout));
    assert!(
        line.contains(&format!("127.0.0.1:{port} is in use by")),
        "{line}"
    );
    assert!(
        line.contains(&format!("pid {}", std::process::id())),
        "names the test process: {line}"
    );
    assert!(run.stdout.contains("ok   project"), "{}", run.stdout);
}

#[test]
fn docker_tier_finds_the_real_engine() {
    if !Tier::Docker.available("docker_tier_finds_the_real_engine") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let run = devloop_with(
        home.path(),
        &["doctor", "--json"],
        &[("KUBECONFIG", "/nonexistent")],
    );
    let checks: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).expect("JSON");
    let docker = checks.iter().find(|c| c["name"] == "docker").unwrap();
    assert_eq!(docker["status"], "ok", "{docker}");
    assert!(
        docker["detail"].as_str().unwrap().contains("Docker Engine"),
        "{docker}"
    );
}
