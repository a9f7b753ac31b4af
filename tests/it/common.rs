//! Helpers shared by the integration tests: running the real binary, sample projects in
//! temporary directories, and test tiers that skip loudly (or fail, in CI).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What a run of the binary produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `devloop ARGS` run in `dir`, with an environment that does not leak the developer's settings.
pub fn devloop(dir: &Path, args: &[&str]) -> Run {
    devloop_with(dir, args, &[])
}

/// The devloop binary with `args` in `dir`, its environment cleaned of the developer's settings
/// (profile, log filter, colours) and `env` added.
fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_devloop"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("DEVLOOP_PROFILE")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .env("COLUMNS", "100");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

pub fn devloop_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = command(dir, args, env)
        .output()
        .expect("the devloop binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A copy of `samples/NAME` in a temporary directory, with `.env` made from `.env.example`.
pub fn sample(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::Builder::new()
        .prefix("devloop-test-")
        .tempdir()
        .unwrap();
    copy_dir(&repo().join("samples").join(name), tmp.path());
    let example = tmp.path().join(".env.example");
    if example.exists() {
        std::fs::copy(&example, tmp.path().join(".env")).unwrap();
    }
    tmp
}

/// What most cluster tests start from: the kind test cluster's context, a namespace of their
/// own and a copy of `samples/SAMPLE`. `None` when Docker or the cluster is missing (the tier
/// said so).
pub fn kind_sample_test(
    test: &str,
    namespace: &str,
    sample_name: &str,
) -> Option<(String, Namespace, tempfile::TempDir)> {
    if !Tier::Docker.available(test) || !Tier::KindCluster.available(test) {
        return None;
    }
    let context = Tier::KindCluster.context();
    let ns = Namespace::new(&context, namespace);
    Some((context, ns, sample(sample_name)))
}

/// The kind tier's context and a fresh namespace for `test`; `None` (the tier skips, as
/// [`Tier::available`] says) without a test cluster.
pub fn kind_cluster_test(test: &str, namespace: &str) -> Option<(String, Namespace)> {
    if !Tier::KindCluster.available(test) {
        return None;
    }
    let context = Tier::KindCluster.context();
    let ns = Namespace::new(&context, namespace);
    Some((context, ns))
}

/// A runtime and a client of `context`, for tests that run devloop's async parts directly.
pub fn kube_client(context: &str) -> (tokio::runtime::Runtime, kube::Client) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime
        .block_on(devloop::cluster::client(context))
        .unwrap()
        .kube;
    (runtime, client)
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        // Local artefacts of someone who ran the sample by hand are not part of it.
        if name == ".env" || name == "__pycache__" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Test tiers beyond plain unit tests. A tier whose system is missing skips with a message on
/// the real stderr (not captured), unless `DEVLOOP_REQUIRE_TIERS` names it (or is `all`): then
/// the skip is a failure. `.ci/run` sets `DEVLOOP_REQUIRE_TIERS=all`.
#[derive(Debug, Clone, Copy)]
pub enum Tier {
    Docker,
    /// A kind-shaped test cluster; its context in `DEVLOOP_TEST_KIND_CONTEXT`.
    KindCluster,
    /// A minikube-shaped test cluster; its context in `DEVLOOP_TEST_MINIKUBE_CONTEXT`.
    MinikubeCluster,
    /// A minikube-shaped test cluster with the docker runtime; its context in
    /// `DEVLOOP_TEST_MINIKUBE_DOCKER_CONTEXT`, its client certificates under `MINIKUBE_HOME`.
    MinikubeDockerCluster,
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::Docker => "docker",
            Tier::KindCluster => "kind-cluster",
            Tier::MinikubeCluster => "minikube-cluster",
            Tier::MinikubeDockerCluster => "minikube-docker-cluster",
        }
    }

    /// The kube context of a cluster tier.
    pub fn context(self) -> String {
        let var = match self {
            Tier::Docker => return String::new(),
            Tier::KindCluster => "DEVLOOP_TEST_KIND_CONTEXT",
            Tier::MinikubeCluster => "DEVLOOP_TEST_MINIKUBE_CONTEXT",
            Tier::MinikubeDockerCluster => "DEVLOOP_TEST_MINIKUBE_DOCKER_CONTEXT",
        };
        std::env::var(var).unwrap_or_default()
    }

    /// `true` when the tier can run; otherwise reports the skip (or panics when required).
    pub fn available(self, test: &str) -> bool {
        let missing = match self {
            Tier::Docker => docker_missing(),
            Tier::KindCluster | Tier::MinikubeCluster => {
                docker_missing().or_else(|| cluster_missing(self))
            }
            Tier::MinikubeDockerCluster => docker_missing()
                .or_else(|| cluster_missing(self))
                .or_else(|| minikube_certs_missing(&self.context())),
        };
        let Some(why) = missing else {
            return true;
        };
        let required = std::env::var("DEVLOOP_REQUIRE_TIERS").unwrap_or_default();
        if required == "all" || required.split(',').any(|t| t.trim() == self.name()) {
            panic!("tier `{}` is required but unavailable: {why}", self.name());
        }
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED tier `{}` in {test}: {why} (set DEVLOOP_REQUIRE_TIERS=all to fail instead)",
            self.name()
        );
        false
    }
}

fn cluster_missing(tier: Tier) -> Option<String> {
    let context = tier.context();
    if context.is_empty() {
        let (shape, var) = match tier {
            Tier::MinikubeCluster => (" --shape minikube", "DEVLOOP_TEST_MINIKUBE_CONTEXT=NAME"),
            Tier::MinikubeDockerCluster => (
                " --shape minikube-docker",
                "DEVLOOP_TEST_MINIKUBE_DOCKER_CONTEXT=NAME (and MINIKUBE_HOME as for up.sh)",
            ),
            _ => ("", "DEVLOOP_TEST_KIND_CONTEXT=kind-NAME"),
        };
        return Some(format!(
            "no test cluster: start one with `tests/cluster/up.sh NAME{shape}` and set {var}"
        ));
    }
    let out = Command::new("kubectl")
        .args([
            "--context",
            &context,
            "get",
            "nodes",
            "--request-timeout=10s",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "context `{context}` does not answer: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("kubectl is not installed ({e})")),
    }
}

/// minikube's directory as minikube (and devloop) computes it from `MINIKUBE_HOME`.
pub fn minikube_path() -> PathBuf {
    match std::env::var("MINIKUBE_HOME")
        .ok()
        .filter(|h| !h.is_empty())
    {
        None => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".minikube"),
        Some(h) if Path::new(&h).file_name().is_some_and(|n| n == ".minikube") => PathBuf::from(h),
        Some(h) => PathBuf::from(h).join(".minikube"),
    }
}

/// The docker-runtime tier reaches the node's engine with the client certificates up.sh wrote
/// into minikube's home: a different `MINIKUBE_HOME` here is a setup mistake, named as such.
fn minikube_certs_missing(node: &str) -> Option<String> {
    let certs = minikube_path().join("certs");
    if certs.join("cert.pem").is_file() {
        return None;
    }
    let written = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{ index .Config.Labels \"devloop.test/minikube-home\" }}",
            node,
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Some(format!(
        "no minikube client certificates in {}: set MINIKUBE_HOME as for `tests/cluster/up.sh` (it wrote them to {written:?})",
        certs.display()
    ))
}

fn docker_missing() -> Option<String> {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "no Docker engine answers ({})",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
        )),
        Err(e) => Some(format!("the docker CLI is not installed ({e})")),
    }
}

/// insta settings that hide what varies between machines and runs.
pub fn insta_settings(tmp: &Path) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(repo().join("tests/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    let tmp = tmp.display().to_string();
    settings.add_filter(&regex_escape(&tmp), "[TMP]");
    settings.add_filter(r"/tmp/devloop-test-[A-Za-z0-9]+", "[TMP]");
    settings
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if "\\.+*?()|[]{}^$#&-~".contains(c) {
                format!("\\{c}")
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `kubectl --context CONTEXT ARGS`: stdout, or stderr as the error.
pub fn kubectl(context: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("kubectl")
        .arg("--context")
        .arg(context)
        .args(args)
        .output()
        .expect("kubectl runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A namespace of its own for one test, deleted when the test ends, pass or fail.
pub struct Namespace {
    pub context: String,
    pub name: String,
}

impl Namespace {
    pub fn new(context: &str, tag: &str) -> Self {
        let name = format!("devloop-it-{tag}-{}", std::process::id());
        kubectl(context, &["create", "namespace", &name]).unwrap();
        Self {
            context: context.to_string(),
            name,
        }
    }

    /// `kubectl -n NAMESPACE ARGS`.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        kubectl(&self.context, &all)
    }

    /// `kubectl apply` of `yaml` in this namespace.
    pub fn apply(&self, yaml: &str) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("objects.yaml");
        std::fs::write(&file, yaml).unwrap();
        self.kubectl(&["apply", "-f", file.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("kubectl apply failed: {e}\n{yaml}"));
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(
            &self.context,
            &["delete", "namespace", &self.name, "--wait=false"],
        );
    }
}

/// A free port on 127.0.0.1 (bound, then released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Point the project's `localPort: 8000` forward at `port`, so tests never collide on 8000.
pub fn use_local_port(dir: &Path, port: u16) {
    let yaml = std::fs::read_to_string(dir.join("devloop.yaml"))
        .unwrap()
        .replace("localPort: 8000", &format!("localPort: {port}"));
    std::fs::write(dir.join("devloop.yaml"), yaml).unwrap();
}

/// `devloop ARGS` running in the background (e.g. `up`), its stderr in a file outside the
/// project (which may be a build context); Ctrl+C (SIGINT) when stopped or dropped.
pub struct Background {
    child: Option<std::process::Child>,
    stderr: PathBuf,
    _logs: tempfile::TempDir,
}

impl Background {
    pub fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let logs = tempfile::tempdir().unwrap();
        let stderr = logs.path().join("devloop.stderr");
        let mut cmd = command(dir, args, env);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        Self {
            child: Some(cmd.spawn().expect("the devloop binary runs")),
            stderr,
            _logs: logs,
        }
    }

    /// Everything it printed on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Wait until the log has `needle` after `from` bytes (or `within` passes); the log from
    /// `from` on.
    pub fn wait_log(&self, from: usize, needle: &str, within: std::time::Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let log = self.log();
            let tail = log.get(from..).unwrap_or("").to_string();
            if tail.contains(needle) || std::time::Instant::now() > deadline {
                return tail;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Ctrl+C, then its exit code once it has stopped (`None` if it was already stopped).
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        child.wait().ok()?.code()
    }

    /// Ctrl+C, and check that devloop stopped as a user expects: exit 0, the profile tier's
    /// `objects` removed, no panic. Returns the whole log.
    pub fn stop_in_order(&mut self, objects: usize) -> String {
        let code = self.stop();
        let log = self.log();
        assert_eq!(code, Some(0), "{log}");
        assert!(
            log.contains(&format!("removed {objects} object(s) of the profile tier")),
            "{log}"
        );
        assert!(!log.contains("panicked"), "{log}");
        log
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `GET path` on 127.0.0.1:`port`: the status and the whole response (head and body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .ok()?;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw
        .strip_prefix("HTTP/1.")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, raw))
}

/// Wait until `GET path` answers `status` with `text` in the response; whether it did.
pub fn wait_http(
    port: u16,
    path: &str,
    status: u16,
    text: &str,
    within: std::time::Duration,
) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if http_get(port, path).is_some_and(|(s, body)| s == status && body.contains(text)) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}
