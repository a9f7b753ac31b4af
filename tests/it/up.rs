//! `devloop up/down/status` end to end on the Django sample in a real cluster (kind tier): the
//! app serves, data added through it survives `down` + `up` and a profile switch, production has
//! its replicas, HPA and PDB, and the persistent tier is never deleted by the profile commands.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{
    Background, Namespace, Tier, devloop_with, free_port, kind_cluster_test, kind_sample_test,
    kubectl, sample, use_local_port,
};

/// `kubectl port-forward` to the web Service for the test's own requests.
struct Forward {
    child: Child,
    port: u16,
}

impl Forward {
    fn new(ns: &Namespace) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("kubectl")
            .args([
                "--context",
                &ns.context,
                "-n",
                &ns.name,
                "port-forward",
                "service/web",
                &format!("{port}:8000"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..50 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { child, port };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("kubectl port-forward did not listen");
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Response {
    status: u16,
    headers: String,
    body: String,
}

fn http(port: u16, method: &str, path: &str, extra: &str, body: &str) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Response {
        status,
        headers: head.to_string(),
        body: body.to_string(),
    }
}

/// Add an album through the app's form, as a browser would (CSRF cookie and token).
fn add_album(port: u16, title: &str) {
    let page = http(port, "GET", "/", "", "");
    assert_eq!(page.status, 200, "{}", page.headers);
    let cookie = page
        .headers
        .lines()
        .filter_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        })
        .find_map(|(_, v)| v.trim().strip_prefix("csrftoken="))
        .and_then(|v| v.split(';').next())
        .expect("a CSRF cookie")
        .to_string();
    let token = page
        .body
        .split("name=\"csrfmiddlewaretoken\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token in the form")
        .to_string();
    let form = format!(
        "csrfmiddlewaretoken={token}&title={}&artist=The+Testers&year=1999",
        title.replace(' ', "+")
    );
    let posted = http(
        port,
        "POST",
        "/",
        &format!(
            "Cookie: csrftoken={cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        ),
        &form,
    );
    assert_eq!(
        posted.status, 302,
        "the form redirects after adding: {}\n{}",
        posted.headers, posted.body
    );
}

fn up(dir: &std::path::Path, ns: &Namespace, profile: &str) {
    let run = devloop_with(
        dir,
        &[
            "--context",
            &ns.context,
            "-n",
            &ns.name,
            "-p",
            profile,
            "up",
            "--once",
            "--timeout",
            "240",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "up -p {profile}:\n{}", run.stderr);
}

fn pvcs(ns: &Namespace) -> Vec<String> {
    let names = kubectl(
        &ns.context,
        &[
            "-n",
            &ns.name,
            "get",
            "pvc",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    )
    .unwrap();
    let mut names: Vec<String> = names.split_whitespace().map(str::to_string).collect();
    names.sort();
    names
}

#[test]
fn cluster_tier_up_down_and_profile_switch_keep_the_data() {
    let test = "cluster_tier_up_down_and_profile_switch_keep_the_data";
    let Some((context, ns, project)) = kind_sample_test(test, "up", "django") else {
        return;
    };
    let dir = project.path();

    // `devloop up` as a developer runs it: its own forward on localhost, logs, Ctrl+C to stop.
    let port = free_port();
    use_local_port(dir, port);
    let mut running = Background::spawn(
        dir,
        &[
            "--context",
            &context,
            "-n",
            &ns.name,
            "up",
            "--timeout",
            "240",
        ],
        &[],
    );
    let mut health = None;
    for _ in 0..300 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let r = http(port, "GET", "/health/", "", "");
            if r.status == 200 {
                health = Some(r);
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let title = format!("Kept Through Redeploys {}", std::process::id());
    let served = health.map(|health| {
        assert!(
            health.body.contains("\"postgres\": \"ok\"")
                && health.body.contains("\"redis\": \"ok\""),
            "{}",
            health.body
        );
        add_album(port, &title);
        http(port, "GET", "/", "", "").body.contains(&title)
    });
    let code = running.stop();
    let log = running.log();
    assert_eq!(
        served,
        Some(true),
        "GET 127.0.0.1:{port}/health/ through devloop's forward, then the new album on /:\n{log}"
    );
    assert_eq!(code, Some(0), "Ctrl+C ends up cleanly:\n{log}");
    assert!(
        log.contains(&format!("forwarding http://127.0.0.1:{port}")),
        "{log}"
    );

    // Ctrl+C removed the profile tier and kept the persistent one.
    let left = kubectl(
        &context,
        &[
            "-n",
            &ns.name,
            "get",
            "deploy,sts,svc,job",
            "-l",
            "devloop.dev/project=musiccat",
            "-o",
            "name",
        ],
    )
    .unwrap();
    assert!(left.trim().is_empty(), "profile tier removed, left: {left}");
    let persistent = pvcs(&ns);
    assert_eq!(
        persistent,
        ["postgres-backups", "postgres-data", "redis-data"]
    );
    assert!(
        kubectl(&context, &["-n", &ns.name, "get", "secret", "musiccat-db"]).is_ok(),
        "Ctrl+C keeps the Secret"
    );
    assert!(
        kubectl(
            &context,
            &["-n", &ns.name, "get", "cronjob", "postgres-backup"]
        )
        .is_ok(),
        "Ctrl+C keeps the backup CronJob"
    );

    // up again: the row is still there.
    up(dir, &ns, "dev");
    {
        let fwd = Forward::new(&ns);
        assert!(
            http(fwd.port, "GET", "/", "", "").body.contains(&title),
            "the album survives down + up"
        );
    }

    // production: replicas, HPA, PDB — and the same data.
    up(dir, &ns, "production");
    let ready = kubectl(
        &context,
        &[
            "-n",
            &ns.name,
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
    )
    .unwrap();
    assert_eq!(ready, "2", "production runs 2 web replicas");
    assert!(
        kubectl(&context, &["-n", &ns.name, "get", "hpa", "web"]).is_ok(),
        "production has an HPA"
    );
    assert!(
        kubectl(&context, &["-n", &ns.name, "get", "pdb", "web"]).is_ok(),
        "production has a PDB"
    );
    let profile = kubectl(
        &context,
        &[
            "-n",
            &ns.name,
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.labels.devloop\\.dev/profile}",
        ],
    )
    .unwrap();
    assert_eq!(profile, "production", "the dev objects were replaced");
    {
        let fwd = Forward::new(&ns);
        assert!(
            http(fwd.port, "GET", "/", "", "").body.contains(&title),
            "the album survives the profile switch"
        );
    }

    let status = devloop_with(
        dir,
        &["--context", &context, "-n", &ns.name, "status", "--json"],
        &[],
    );
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --json");
    assert!(
        status["profiles"]["production"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{status}"
    );
    assert!(
        status["persistent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "PersistentVolumeClaim/postgres-data"),
        "{status}"
    );

    let down = devloop_with(dir, &["--context", &context, "-n", &ns.name, "down"], &[]);
    assert_eq!(down.code, 0, "{}", down.stderr);
    assert_eq!(pvcs(&ns), persistent);
}

#[test]
fn cluster_tier_down_all_refuses_without_confirmation() {
    let test = "cluster_tier_down_all_refuses_without_confirmation";
    let Some((context, ns)) = kind_cluster_test(test, "downall") else {
        return;
    };
    let project = sample("minimal");
    let run = devloop_with(
        project.path(),
        &["--context", &context, "-n", &ns.name, "down", "--all"],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("refusing to delete the persistent tier"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--yes"), "{}", run.stderr);
}

#[test]
fn cluster_tier_a_missing_namespace_is_named_with_the_fix() {
    let test = "cluster_tier_a_missing_namespace_is_named_with_the_fix";
    if !Tier::Docker.available(test) || !Tier::KindCluster.available(test) {
        return;
    }
    let context = Tier::KindCluster.context();
    let project = sample("minimal");
    let ns = format!("devloop-it-absent-{}", std::process::id());
    let run = devloop_with(
        project.path(),
        &["--context", &context, "-n", &ns, "up", "--once"],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("namespace `{ns}` does not exist")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("kubectl create namespace"),
        "{}",
        run.stderr
    );
}

/// Ctrl+C at random moments of `devloop up`: the persistent tier is intact every time, and the
/// profile tier is gone after every orderly stop.
#[test]
fn cluster_tier_ctrl_c_at_random_moments_keeps_the_persistent_tier() {
    let test = "cluster_tier_ctrl_c_at_random_moments_keeps_the_persistent_tier";
    let Some((context, ns, project)) = kind_sample_test(test, "ctrlc", "minimal") else {
        return;
    };
    let dir = project.path();
    // A persistent tier to protect: a PVC and a ConfigMap.
    crate::common::write(
        dir,
        "k8s-infra/data.yaml",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 16Mi}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: kept\n",
    );
    let yaml = std::fs::read_to_string(dir.join("devloop.yaml"))
        .unwrap()
        .replace("manifests:\n", "manifests:\n  infra:\n    - k8s-infra/\n");
    std::fs::write(dir.join("devloop.yaml"), yaml).unwrap();
    // Not 8000: a developer's own `devloop up` may hold it.
    use_local_port(dir, free_port());

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut moments = Vec::new();
    for run in 0..10u64 {
        // A pseudo-random moment in 0.3–8 s: before, during and after the deploy.
        let delay = Duration::from_millis(
            300 + (seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(run * 1442695040888963407)
                >> 33)
                % 7700,
        );
        moments.push(delay.as_millis());
        let mut up = Background::spawn(dir, &["--context", &context, "-n", &ns.name, "up"], &[]);
        std::thread::sleep(delay);
        let code = up.stop();
        let stderr = up.log();
        assert_eq!(code, Some(0), "run {run}, Ctrl+C after {delay:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");

        // The persistent tier, whenever it was created, is still there.
        if kubectl(&context, &["-n", &ns.name, "get", "configmap", "settings"]).is_ok() {
            assert!(
                kubectl(&context, &["-n", &ns.name, "get", "pvc", "data"]).is_ok(),
                "run {run}: the PVC is gone: {stderr}"
            );
        }
        let left = kubectl(
            &context,
            &[
                "-n",
                &ns.name,
                "get",
                "deploy,svc",
                "-l",
                "devloop.dev/tier=profile",
                "-o",
                "name",
            ],
        )
        .unwrap();
        assert!(
            left.trim().is_empty(),
            "run {run}, Ctrl+C after {delay:?}: the profile tier is left: {left}\n{stderr}"
        );
    }
    // At least one run got as far as creating the persistent tier, and it survived them all.
    assert!(
        kubectl(&context, &["-n", &ns.name, "get", "configmap", "settings"]).is_ok(),
        "moments {moments:?}"
    );
    assert!(kubectl(&context, &["-n", &ns.name, "get", "pvc", "data"]).is_ok());
}
