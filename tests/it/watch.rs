//! The inner loop of `devloop up`.
//!
//! Without a cluster: the watcher (real notify, a temp copy of the minimal sample) debounces,
//! ignores `.git`, editor files, `.gitignore`/`.devloopignore`/`.dockerignore`d paths, detects
//! change by content and maps paths to artifacts or configuration. With the kind tier: `devloop
//! up` serves an edit through its forward by sync and by rebuild, a no-op save and an ignored file
//! trigger nothing, and a broken manifest keeps the old version serving until a good edit.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use devloop::config::{self, Selection};
use devloop::watch::{ChangeSet, IgnoreReason, WatchSettings, Watcher};
use tokio_util::sync::CancellationToken;

use crate::common::{Namespace, Tier, sample, write};

fn settings(debounce_ms: u64, poll: bool) -> WatchSettings {
    WatchSettings {
        debounce: Duration::from_millis(debounce_ms),
        poll,
    }
}

async fn watcher(dir: &Path, settings: &WatchSettings) -> Watcher {
    let project = config::load(&Selection {
        dir: Some(dir.to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    Watcher::start(&project, settings).await.unwrap()
}

/// The next round, or `None` when nothing comes within `within`.
async fn round(w: &mut Watcher, within: Duration) -> Option<ChangeSet> {
    let cancel = CancellationToken::new();
    tokio::time::timeout(within, w.next(&cancel))
        .await
        .ok()
        .flatten()
}

fn artifact_files(c: &ChangeSet) -> Vec<String> {
    c.artifacts
        .values()
        .flatten()
        .map(|f| f.rel.clone())
        .collect()
}

#[tokio::test]
async fn a_burst_of_saves_is_one_round_and_same_bytes_are_no_change() {
    let project = sample("minimal");
    let dir = project.path();
    let mut w = watcher(dir, &settings(300, false)).await;
    let page = dir.join("www/index.html");
    let original = std::fs::read_to_string(&page).unwrap();
    for i in 0..5 {
        std::fs::write(&page, format!("{original}<!-- {i} -->")).unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let c = round(&mut w, Duration::from_secs(5))
        .await
        .expect("a round");
    assert_eq!(artifact_files(&c), ["www/index.html"], "{c:?}");
    assert!(c.config.is_empty() && c.unchanged.is_empty(), "{c:?}");
    assert!(round(&mut w, Duration::from_millis(800)).await.is_none());

    // The same bytes again: a save, but no change.
    std::fs::write(&page, format!("{original}<!-- 4 -->")).unwrap();
    let c = round(&mut w, Duration::from_secs(5))
        .await
        .expect("a round");
    assert!(!c.is_actionable(), "{c:?}");
    assert_eq!(c.unchanged, ["www/index.html"]);
}

#[tokio::test]
async fn ignore_rules_leave_paths_out() {
    let project = sample("minimal");
    let dir = project.path();
    write(dir, ".gitignore", "build/\n*.log\n");
    write(dir, ".devloopignore", "notes/\n");
    write(dir, ".dockerignore", "secret.txt\n");
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    let mut w = watcher(dir, &settings(200, false)).await;
    write(dir, ".git/index", "x");
    write(dir, "www/.index.html.swp", "x");
    write(dir, "www/index.html~", "x");
    write(dir, "4913", "");
    write(dir, "build/out.o", "x");
    write(dir, "app.log", "x");
    write(dir, "notes/todo.md", "x");
    write(dir, "secret.txt", "x");
    let mut ignored = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let Some(c) = round(&mut w, Duration::from_millis(800)).await else {
            break;
        };
        assert!(!c.is_actionable(), "{c:?}");
        for (reason, n) in c.ignored {
            *ignored.entry(reason).or_insert(0) += n;
        }
    }
    // A new directory and the file in it may be one event or two, depending on timing.
    let count = |r| ignored.get(&r).copied().unwrap_or(0);
    assert!((1..=2).contains(&count(IgnoreReason::Git)), "{ignored:?}");
    assert_eq!(count(IgnoreReason::Editor), 3, "{ignored:?}");
    assert!(
        (2..=3).contains(&count(IgnoreReason::GitIgnore)),
        "{ignored:?}"
    );
    assert!(
        (1..=2).contains(&count(IgnoreReason::DevloopIgnore)),
        "{ignored:?}"
    );
    assert_eq!(count(IgnoreReason::DockerIgnore), 1, "{ignored:?}");
}

#[tokio::test]
async fn paths_map_to_artifacts_or_configuration() {
    let project = sample("minimal");
    let dir = project.path();
    let mut w = watcher(dir, &settings(200, false)).await;
    let append = |rel: &str, text: &str| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(rel))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    append("devloop.yaml", "\n# edited\n");
    append("k8s/deployment.yaml", "\n# edited\n");
    append("profiles/production.yaml", "\n# edited\n");
    append("Dockerfile", "\nLABEL edited=1\n");
    write(dir, "www/css/site.css", "body {}\n");
    let mut config = Vec::new();
    let mut files = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && (config.len() < 3 || files.len() < 2) {
        if let Some(c) = round(&mut w, Duration::from_secs(1)).await {
            config.extend(c.config.clone());
            files.extend(artifact_files(&c));
        }
    }
    config.sort();
    files.sort();
    assert_eq!(
        config,
        [
            "devloop.yaml",
            "k8s/deployment.yaml",
            "profiles/production.yaml"
        ]
    );
    assert_eq!(files, ["Dockerfile", "www/css/site.css"]);
}

#[tokio::test]
async fn changes_made_while_busy_form_the_next_round() {
    let project = sample("minimal");
    let dir = project.path();
    let mut w = watcher(dir, &settings(100, false)).await;
    write(dir, "www/a.html", "a");
    // The loop is busy (a build): nobody reads events for a while.
    tokio::time::sleep(Duration::from_millis(400)).await;
    write(dir, "www/b.html", "b");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let c = round(&mut w, Duration::from_secs(5))
        .await
        .expect("a round");
    let mut files = artifact_files(&c);
    files.sort();
    assert_eq!(files, ["www/a.html", "www/b.html"]);
}

#[tokio::test]
async fn polling_sees_changes_too() {
    let project = sample("minimal");
    let dir = project.path();
    let mut w = watcher(dir, &settings(100, true)).await;
    // The poll watcher compares modification times: let the clock move on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    write(dir, "www/index.html", "polled\n");
    let c = round(&mut w, Duration::from_secs(5))
        .await
        .expect("a round");
    assert_eq!(artifact_files(&c), ["www/index.html"]);
}

// ---- cluster tier: `devloop up` end to end ----

/// `devloop up` in the background; SIGINT on drop.
struct Up {
    child: Option<Child>,
    stderr: std::path::PathBuf,
}

impl Up {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Wait until the log has `needle` after `from` bytes; the log from `from` on.
    fn wait_log(&self, from: usize, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            let tail = log.get(from..).unwrap_or("").to_string();
            if tail.contains(needle) || Instant::now() > deadline {
                return tail;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) -> Option<i32> {
        let child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        child.wait_with_output().ok()?.status.code()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.stop();
    }
}

fn get(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    raw.starts_with("HTTP/1.").then_some(raw)
}

/// Wait until the page on `port` contains `text`.
fn served(port: u16, text: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if get(port).is_some_and(|body| body.contains(text)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn cluster_tier_edits_are_served_and_broken_edits_keep_the_old_version() {
    let test = "cluster_tier_edits_are_served_and_broken_edits_keep_the_old_version";
    if !Tier::Docker.available(test) || !Tier::KindCluster.available(test) {
        return;
    }
    let context = Tier::KindCluster.context();
    let ns = Namespace::new(&context, "watch");
    let project = sample("minimal");
    let dir = project.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = std::fs::read_to_string(dir.join("devloop.yaml"))
        .unwrap()
        .replace("localPort: 8000", &format!("localPort: {port}"));
    std::fs::write(dir.join("devloop.yaml"), yaml).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let stderr = logs.path().join("up.stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_devloop"))
        .args(["--context", &context, "-n", &ns.name, "up", "--no-logs"])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut up = Up {
        child: Some(child),
        stderr,
    };
    let started = up.wait_log(0, "watching ", Duration::from_secs(180));
    assert!(started.contains("watching "), "{started}");
    assert!(
        served(port, "<h1>minimal</h1>", Duration::from_secs(60)),
        "{}",
        up.log()
    );

    // Sync path: the page changes in the running pod, no build.
    let page = dir.join("www/index.html");
    let original = std::fs::read_to_string(&page).unwrap();
    let mark = up.log().len();
    std::fs::write(
        &page,
        original.replace("<h1>minimal</h1>", "<h1>synced</h1>"),
    )
    .unwrap();
    assert!(
        served(port, "<h1>synced</h1>", Duration::from_secs(30)),
        "{}",
        up.log()
    );
    let tail = up.wait_log(mark, "synced to 1 pod", Duration::from_secs(10));
    assert!(
        tail.contains("minimal-web: www/index.html changed → synced to 1 pod in"),
        "{tail}"
    );
    assert!(!tail.contains("building"), "{tail}");

    // A no-op save and an ignored file: one line each, nothing done.
    let mark = up.log().len();
    std::fs::write(&page, std::fs::read(&page).unwrap()).unwrap();
    let tail = up.wait_log(mark, "nothing to do", Duration::from_secs(10));
    assert!(
        tail.contains("www/index.html: same bytes as before → nothing to do"),
        "{tail}"
    );
    let mark = up.log().len();
    write(dir, "www/.index.html.swp", "vim");
    let tail = up.wait_log(mark, "ignored", Duration::from_secs(10));
    assert!(
        tail.contains("ignored 1 change (editor temp files)"),
        "{tail}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let tail = up.log()[mark..].to_string();
    assert!(
        !tail.contains("synced") && !tail.contains("rebuilding") && !tail.contains("redeploy"),
        "{tail}"
    );

    // Rebuild path: the Dockerfile changes; the new image (with the synced page baked in and a
    // new page) is served after the rollout.
    let mark = up.log().len();
    std::fs::write(
        &page,
        original.replace("<h1>minimal</h1>", "<h1>rebuilt</h1>"),
    )
    .unwrap();
    let mut dockerfile = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
    dockerfile.push_str("LABEL devloop.test/edit=\"1\"\n");
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    let tail = up.wait_log(mark, "redeployed", Duration::from_secs(120));
    assert!(
        tail.contains("Dockerfile") && tail.contains("→ rebuilding"),
        "{tail}"
    );
    assert!(tail.contains("redeployed profile `dev`"), "{tail}");
    assert!(
        served(port, "<h1>rebuilt</h1>", Duration::from_secs(30)),
        "{}",
        up.log()
    );
    let image = ns
        .kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .unwrap();

    // A broken manifest: reported, the old version keeps serving; the next good edit recovers.
    let manifest = dir.join("k8s/deployment.yaml");
    let good = std::fs::read_to_string(&manifest).unwrap();
    let mark = up.log().len();
    std::fs::write(&manifest, format!("{good}  broken: [unclosed\n")).unwrap();
    let tail = up.wait_log(mark, "keeps running", Duration::from_secs(30));
    assert!(
        tail.contains("error: redeploying failed: k8s/deployment.yaml:"),
        "{tail}"
    );
    assert!(
        served(port, "<h1>rebuilt</h1>", Duration::from_secs(5)),
        "{}",
        up.log()
    );
    let mark = up.log().len();
    std::fs::write(&manifest, good.replace("replicas: 1", "replicas: 2")).unwrap();
    let tail = up.wait_log(mark, "redeployed", Duration::from_secs(60));
    assert!(tail.contains("redeployed profile `dev`"), "{tail}");
    let replicas = ns
        .kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ])
        .unwrap();
    assert_eq!(replicas, "2", "{}", up.log());
    assert_eq!(
        ns.kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ])
        .unwrap(),
        image,
        "a manifest edit does not rebuild"
    );
    assert!(served(port, "<h1>rebuilt</h1>", Duration::from_secs(5)));

    // Ctrl+C still tears down in order.
    let code = up.stop();
    let log = up.log();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("removed 2 object(s) of the profile tier"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// Not a test but a measurement for `bench/loop.sh` (run with `--ignored --nocapture`): watcher
/// start (baseline scan of every file + OS watches) and change latency on a generated tree of
/// `DEVLOOP_BENCH_FILES` files (default 250 000). Prints `BENCH watch_ready_ms=… watch_change_ms=…`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by bench/loop.sh"]
async fn bench_watch_large_tree() {
    let files: usize = std::env::var("DEVLOOP_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250_000);
    let project = sample("minimal");
    let dir = project.path();
    // 100 files per directory, like a dependency tree; all inside the artifact's context.
    for d in 0..files.div_ceil(100) {
        let sub = dir.join(format!("tree/d{:02}/p{d:05}", d % 50));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..100.min(files - d * 100) {
            std::fs::write(
                sub.join(format!("f{f:03}.js")),
                format!("module.exports = {d}{f};\n"),
            )
            .unwrap();
        }
    }
    let started = Instant::now();
    let mut w = watcher(dir, &settings(100, false)).await;
    let ready = started.elapsed();
    assert!(w.tracked() >= files, "{} tracked", w.tracked());
    let mut change = Vec::new();
    for i in 0..5 {
        let d = i * 37;
        let edited = dir.join(format!("tree/d{:02}/p{d:05}/f000.js", d % 50));
        let t = Instant::now();
        std::fs::write(&edited, format!("edit {i}\n")).unwrap();
        let c = round(&mut w, Duration::from_secs(10))
            .await
            .expect("a round");
        change.push(t.elapsed());
        assert_eq!(artifact_files(&c).len(), 1, "{c:?}");
    }
    change.sort();
    println!(
        "BENCH watch_ready_ms={} watch_change_ms={} tracked={}",
        ready.as_millis(),
        change[change.len() / 2].as_millis(),
        w.tracked()
    );
}
