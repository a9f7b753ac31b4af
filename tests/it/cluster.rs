//! Loading images into real test clusters (kind- and minikube-shaped, from tests/cluster) and
//! running them in pods; doctor's detection against them; failures mid-load.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{Namespace, Tier, devloop_with, kubectl, write};

/// A project whose image serves `www/` on 8080 from the busybox base the test cluster tools make.
fn web_project(version: &str) -> tempfile::TempDir {
    let tmp = tempfile::Builder::new()
        .prefix("devloop-test-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let name = format!("it{}", std::process::id());
    write(
        dir,
        "devloop.yaml",
        &format!("name: {name}\nartifacts:\n  - image: {name}-web\nmanifests:\n  app: [k8s/]\n"),
    );
    write(
        dir,
        "k8s/pod.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n    - name: web\n      image: {name}-web\n"
        ),
    );
    write(
        dir,
        "Dockerfile",
        "FROM busybox:1.36\nCOPY www /www\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    );
    write(dir, "www/index.html", version);
    tmp
}

fn build(dir: &Path, context: &str, env: &[(&str, &str)]) -> serde_json::Value {
    let run = devloop_with(dir, &["--context", context, "build", "--json"], env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let reports: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    reports[0].clone()
}

/// Run `reference` in a pod that must not pull, and return what it serves.
fn serve(ns: &Namespace, pod: &str, reference: &str) -> String {
    let ctx = &ns.context;
    kubectl(
        ctx,
        &[
            "-n",
            &ns.name,
            "run",
            pod,
            "--image",
            reference,
            "--image-pull-policy=Never",
            "--restart=Never",
        ],
    )
    .unwrap();
    let ready = kubectl(
        ctx,
        &[
            "-n",
            &ns.name,
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=90s",
        ],
    );
    if let Err(e) = ready {
        let describe = kubectl(ctx, &["-n", &ns.name, "describe", "pod", pod]).unwrap_or_default();
        panic!("pod {pod} with {reference} is not Ready: {e}\n{describe}");
    }
    // httpd may take a moment after the container starts.
    for _ in 0..20 {
        if let Ok(body) = kubectl(
            ctx,
            &[
                "-n",
                &ns.name,
                "exec",
                pod,
                "--",
                "wget",
                "-qO-",
                "http://127.0.0.1:8080/index.html",
            ],
        ) {
            return body;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("pod {pod} does not serve");
}

fn load_and_run(tier: Tier, test: &str) {
    if !Tier::Docker.available(test) || !tier.available(test) {
        return;
    }
    let context = tier.context();
    let ns = Namespace::new(&context, tier_tag(tier));
    let project = web_project("v1\n");

    let first = build(project.path(), &context, &[]);
    let node = &first["loaded"][0];
    assert_eq!(node["imported"], true, "{first}");
    assert_eq!(
        serve(&ns, "v1", first["reference"].as_str().unwrap()),
        "v1\n"
    );

    // Loading again is a no-op: the node has the tag.
    let again = build(project.path(), &context, &[]);
    assert_eq!(again["loaded"][0]["method"], "present", "{again}");

    // One file changed: only the changed layer travels, and the pod runs the new content.
    write(project.path(), "www/index.html", "v2\n");
    let second = build(project.path(), &context, &[]);
    let node = &second["loaded"][0];
    assert_eq!(node["method"], "delta", "{second}");
    assert_eq!(node["layers_sent"], 1, "{second}");
    assert_eq!(
        serve(&ns, "v2", second["reference"].as_str().unwrap()),
        "v2\n"
    );

    // The full import, the fallback that always works, also gives a running image.
    write(project.path(), "www/index.html", "v3\n");
    let third = build(project.path(), &context, &[("DEVLOOP_FULL_LOAD", "1")]);
    assert_eq!(third["loaded"][0]["method"], "full", "{third}");
    assert_eq!(
        serve(&ns, "v3", third["reference"].as_str().unwrap()),
        "v3\n"
    );

    let refs: Vec<String> = [&first, &second, &third]
        .iter()
        .map(|r| r["reference"].as_str().unwrap().to_string())
        .collect();
    let _ = Command::new("docker").arg("rmi").args(&refs).output();
}

fn tier_tag(tier: Tier) -> &'static str {
    match tier {
        Tier::MinikubeCluster => "minikube",
        _ => "kind",
    }
}

#[test]
fn cluster_tier_kind_load_then_a_pod_runs_the_image() {
    load_and_run(
        Tier::KindCluster,
        "cluster_tier_kind_load_then_a_pod_runs_the_image",
    );
}

#[test]
fn cluster_tier_minikube_load_then_a_pod_runs_the_image() {
    load_and_run(
        Tier::MinikubeCluster,
        "cluster_tier_minikube_load_then_a_pod_runs_the_image",
    );
}

#[test]
fn cluster_tier_doctor_detects_kind_and_minikube() {
    for (tier, expected) in [
        (Tier::KindCluster, "kind cluster"),
        (Tier::MinikubeCluster, "minikube profile"),
    ] {
        if !tier.available("cluster_tier_doctor_detects_kind_and_minikube") {
            continue;
        }
        let home = tempfile::tempdir().unwrap();
        let context = tier.context();
        let run = devloop_with(
            home.path(),
            &["--context", &context, "doctor", "--json"],
            &[],
        );
        let checks: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).expect("JSON");
        let check = |name: &str| checks.iter().find(|c| c["name"] == name).unwrap().clone();
        assert_eq!(check("cluster")["status"], "ok", "{:?}", checks);
        assert!(
            check("cluster")["detail"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{:?}",
            checks
        );
        assert_eq!(check("api-server")["status"], "ok", "{:?}", checks);
        assert!(
            check("api-server")["detail"]
                .as_str()
                .unwrap()
                .contains("Kubernetes v1."),
            "{:?}",
            checks
        );
    }
}

/// A node container that dies while an image is being imported into it.
#[test]
fn docker_tier_a_node_that_dies_mid_load_is_reported() {
    let test = "docker_tier_a_node_that_dies_mid_load_is_reported";
    if !Tier::Docker.available(test) {
        return;
    }
    let has_busybox = Command::new("docker")
        .args(["image", "inspect", "busybox:1.36"])
        .output()
        .unwrap()
        .status
        .success();
    if !has_busybox {
        // The image comes from tests/cluster/images.sh; in CI it is always there.
        assert!(
            std::env::var("DEVLOOP_REQUIRE_TIERS").is_err(),
            "busybox:1.36 is missing: run tests/cluster/images.sh"
        );
        return;
    }
    let cluster = format!("gone{}", std::process::id());
    let fake = tempfile::tempdir().unwrap();
    // `ctr`: lists nothing, and on import stops the node (its PID 1 exits on USR1) halfway
    // through reading the image.
    write(
        fake.path(),
        "ctr",
        "#!/bin/sh\ncase \"$*\" in\n  *import*) head -c 1000 >/dev/null; kill -USR1 1; sleep 5 ;;\nesac\nexit 0\n",
    );
    write(
        fake.path(),
        "containerd",
        "#!/bin/sh\necho 'snapshotter = \"overlayfs\"'\n",
    );
    for script in ["ctr", "containerd"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            fake.path().join(script),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    write(
        fake.path(),
        "Dockerfile",
        "FROM busybox:1.36\nCOPY ctr containerd /usr/local/bin/\nCMD [\"sh\", \"-c\", \"trap 'exit 0' USR1; while true; do sleep 0.2; done\"]\n",
    );
    let image = format!("devloop-test-fake-node:{cluster}");
    let out = Command::new("docker")
        .args(["build", "-q", "-t", &image, "."])
        .current_dir(fake.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node = format!("{cluster}-control-plane");
    let out = Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            &node,
            "--label",
            &format!("io.x-k8s.kind.cluster={cluster}"),
            &image,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let kubeconfig = fake.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:1'}}}}]\nusers: [{{name: u, user: {{}}}}]\ncontexts: [{{name: kind-{cluster}, context: {{cluster: c, user: u}}}}]\ncurrent-context: kind-{cluster}\n"),
    )
    .unwrap();
    let project = web_project("v1\n");
    let run = devloop_with(
        project.path(),
        &["build"],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    let _ = Command::new("docker").args(["rm", "-f", &node]).output();
    let _ = Command::new("docker").args(["rmi", &image]).output();

    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("into node `{node}`")),
        "names the node: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("is gone") && run.stderr.contains("docker ps -a"),
        "says the node is gone and what to check: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"));
}

/// A registry (Debian's docker-registry, the CNCF Distribution registry) that lives as long as
/// the test. Docker pushes to it on loopback; the node pulls through the bridge gateway.
struct LocalRegistry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    fn start() -> Option<Self> {
        let binary = ["/usr/bin/docker-registry", "/usr/sbin/docker-registry"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!("version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: '0.0.0.0:{port}'}}\n", dir.path().join("data").display()),
        )
        .unwrap();
        let mut child = Command::new(binary)
            .arg("serve")
            .arg(&config)
            .spawn()
            .unwrap();
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self {
                    child,
                    port,
                    _dir: dir,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("docker-registry did not start on port {port}");
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn cluster_tier_registry_push_then_a_pod_pulls_it() {
    let test = "cluster_tier_registry_push_then_a_pod_pulls_it";
    if !Tier::Docker.available(test) || !Tier::KindCluster.available(test) {
        return;
    }
    let Some(registry) = LocalRegistry::start() else {
        assert!(
            std::env::var("DEVLOOP_REQUIRE_TIERS").is_err(),
            "docker-registry is not installed (Debian package docker-registry)"
        );
        eprintln!("SKIPPED {test}: docker-registry is not installed");
        return;
    };
    let context = Tier::KindCluster.context();
    let node = format!("{}-control-plane", context.trim_start_matches("kind-"));
    let host = format!("localhost:{}", registry.port);

    // Wire the node's containerd to the registry, as a user would for a registry beside the cluster.
    let gateway = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}",
            &node,
        ])
        .output()
        .unwrap();
    let gateway = String::from_utf8_lossy(&gateway.stdout).trim().to_string();
    let hosts = format!(
        "server = \"http://{host}\"\n[host.\"http://{gateway}:{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
        registry.port
    );
    let certs = format!("/etc/containerd/certs.d/{host}");
    let out = Command::new("docker")
        .args([
            "exec",
            "-i",
            &node,
            "sh",
            "-c",
            &format!("mkdir -p '{certs}' && cat > '{certs}/hosts.toml'"),
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(hosts.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());

    let project = web_project("from the registry\n");
    let yaml = std::fs::read_to_string(project.path().join("devloop.yaml")).unwrap();
    // `cluster: other` makes devloop treat the context as a cluster that pulls.
    write(
        project.path(),
        "devloop.yaml",
        &format!("{yaml}cluster: other\nregistry: {host}\n"),
    );
    let report = build(project.path(), &context, &[]);
    let reference = report["reference"].as_str().unwrap().to_string();
    assert!(reference.starts_with(&format!("{host}/")), "{reference}");
    assert_eq!(report["loaded"][0]["method"], "push", "{report}");

    // The rendered manifests name the registry reference too.
    let render = devloop_with(project.path(), &["render"], &[]);
    assert!(
        render.stdout.contains(&format!("image: {reference}")),
        "{}",
        render.stdout
    );

    // The node has never seen this image: the pod must pull it from the registry.
    let ns = Namespace::new(&context, "registry");
    let ctx = &ns.context;
    kubectl(
        ctx,
        &[
            "-n",
            &ns.name,
            "run",
            "pulled",
            "--image",
            &reference,
            "--image-pull-policy=Always",
            "--restart=Never",
        ],
    )
    .unwrap();
    let ready = kubectl(
        ctx,
        &[
            "-n",
            &ns.name,
            "wait",
            "--for=condition=Ready",
            "pod/pulled",
            "--timeout=90s",
        ],
    );
    let describe = kubectl(ctx, &["-n", &ns.name, "describe", "pod", "pulled"]).unwrap_or_default();
    let _ = Command::new("docker")
        .args(["exec", &node, "rm", "-rf", &certs])
        .output();
    let _ = Command::new("docker").args(["rmi", &reference]).output();
    assert!(ready.is_ok(), "{ready:?}\n{describe}");
    assert!(describe.contains("Successfully pulled"), "{describe}");
}
