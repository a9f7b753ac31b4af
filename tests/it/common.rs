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

pub fn devloop_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
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
    let out = cmd.output().expect("the devloop binary runs");
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
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::Docker => "docker",
            Tier::KindCluster => "kind-cluster",
            Tier::MinikubeCluster => "minikube-cluster",
        }
    }

    /// The kube context of a cluster tier.
    pub fn context(self) -> String {
        let var = match self {
            Tier::Docker => return String::new(),
            Tier::KindCluster => "DEVLOOP_TEST_KIND_CONTEXT",
            Tier::MinikubeCluster => "DEVLOOP_TEST_MINIKUBE_CONTEXT",
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
        return Some(format!(
            "no test cluster: start one with `tests/cluster/up.sh NAME{}` and set {}",
            if matches!(tier, Tier::MinikubeCluster) {
                " --shape minikube"
            } else {
                ""
            },
            if matches!(tier, Tier::MinikubeCluster) {
                "DEVLOOP_TEST_MINIKUBE_CONTEXT=NAME"
            } else {
                "DEVLOOP_TEST_KIND_CONTEXT=kind-NAME"
            },
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
