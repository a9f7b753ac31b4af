//! The inner loop of `devloop up`.
//!
//! Without a cluster: the watcher (real notify, a temp copy of the minimal sample) debounces,
//! ignores `.git`, editor files, `.gitignore`/`.devloopignore`/`.dockerignore`d paths, detects
//! change by content and maps paths to artifacts or configuration. With the kind tier: `devloop
//! up` serves an edit through its forward by sync and by rebuild, a no-op save and an ignored file
//! trigger nothing, and a broken manifest keeps the old version serving until a good edit; sync
//! rules' commands run once per round after the copy (a failing one is a warning, not a
//! rebuild), and a deleted file is deleted in the container without a rebuild.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use devloop::config::{self, Selection};
use devloop::watch::{ChangeSet, IgnoreReason, Wake, WatchSettings, Watcher};
use tokio_util::sync::CancellationToken;

use crate::common::{
    Background, Namespace, free_port, http_get, kind_sample_test, sample, use_local_port,
    wait_http, write,
};

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
async fn a_wake_up_time_ends_a_quiet_wait_but_never_a_round() {
    let project = sample("minimal");
    let dir = project.path();
    let mut w = watcher(dir, &settings(300, false)).await;
    let cancel = CancellationToken::new();
    let soon = || Some(tokio::time::Instant::now() + Duration::from_millis(200));
    let woke = w.next_or_wake(&cancel, soon()).await;
    assert!(matches!(woke, Some(Wake::Timer)), "{woke:?}");
    // A round that began before the wake-up time is finished, not cut short.
    write(dir, "www/a.html", "a");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let round = w.next_or_wake(&cancel, soon()).await;
    let Some(Wake::Changes(c)) = round else {
        panic!("{round:?}");
    };
    assert_eq!(artifact_files(&c), ["www/a.html"]);
    cancel.cancel();
    assert!(w.next_or_wake(&cancel, soon()).await.is_none());
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

/// `devloop up` on `dir` in `ns`, with its forward on `port`; waits until it watches and serves.
fn up(dir: &Path, ns: &Namespace, port: u16, extra: &[&str]) -> Background {
    use_local_port(dir, port);
    let mut args = vec!["--context", &ns.context, "-n", &ns.name, "up", "--no-logs"];
    args.extend_from_slice(extra);
    let up = Background::spawn(dir, &args, &[]);
    let started = up.wait_log(0, "watching ", Duration::from_secs(180));
    assert!(started.contains("watching "), "{started}");
    assert!(
        served(port, "<h1>minimal</h1>", Duration::from_secs(60)),
        "{}",
        up.log()
    );
    up
}

/// Wait until the page on `port` contains `text`.
fn served(port: u16, text: &str, within: Duration) -> bool {
    wait_http(port, "/", 200, text, within)
}

#[test]
fn cluster_tier_edits_are_served_and_broken_edits_keep_the_old_version() {
    let test = "cluster_tier_edits_are_served_and_broken_edits_keep_the_old_version";
    let Some((_, ns, project)) = kind_sample_test(test, "watch", "minimal") else {
        return;
    };
    let dir = project.path();
    let port = free_port();
    let mut up = up(dir, &ns, port, &[]);

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
    // Only the Deployment's image changed: the Service is not sent again.
    assert!(
        tail.contains("profile `dev`: 1 applied, 1 unchanged"),
        "{tail}"
    );
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
    assert!(
        tail.contains("profile `dev`: 1 applied, 1 unchanged"),
        "{tail}"
    );
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
    up.stop_in_order(2);
}

/// The rules of the sync test: a failing command for `www/fail/`, one command shared by the
/// `.html` and `.txt` rules that copies the page and counts its runs, where httpd serves both,
/// and a rule into `/bin`, which the container's user may not change.
const SYNC_RULES: &str = r#"    sync:
      - src: "www/fail/**"
        dest: /www/fail
        run: ["sh", "-c", "echo starting; echo boom >&2; exit 3"]
      - src: "www/**/*.html"
        dest: /www
        run: ["sh", "-c", "cp /www/index.html /www/copy.html; echo ran >> /www/runs.txt"]
      - src: "www/**/*.txt"
        dest: /www
        run: ["sh", "-c", "cp /www/index.html /www/copy.html; echo ran >> /www/runs.txt"]
      - src: "bin/*"
        dest: /bin
"#;

#[test]
fn cluster_tier_sync_runs_commands_deletes_files_and_rebuilds_when_it_cannot() {
    let test = "cluster_tier_sync_runs_commands_deletes_files_and_rebuilds_when_it_cannot";
    let Some((_, ns, project)) = kind_sample_test(test, "sync", "minimal") else {
        return;
    };
    let dir = project.path();
    let yaml = std::fs::read_to_string(dir.join("devloop.yaml")).unwrap();
    let rules_at = yaml.find("    sync:\n").unwrap();
    let rules_end = yaml[rules_at..].find("\nmanifests:").unwrap() + rules_at;
    let yaml = format!("{}{SYNC_RULES}{}", &yaml[..rules_at], &yaml[rules_end..]);
    std::fs::write(dir.join("devloop.yaml"), yaml).unwrap();
    write(dir, "bin/sh", "#!/bin/sh\n");
    let port = free_port();
    // A quiet period long enough that two writes in a row are one round on a busy machine.
    let mut up = up(dir, &ns, port, &["--debounce-ms", "300"]);
    let get = |path: &str| http_get(port, path);

    // Two files, two rules with the same command: copied, then the command runs once.
    let page = dir.join("www/index.html");
    let original = std::fs::read_to_string(&page).unwrap();
    let mark = up.log().len();
    let saved = Instant::now();
    std::fs::write(
        &page,
        original.replace("<h1>minimal</h1>", "<h1>synced</h1>"),
    )
    .unwrap();
    write(dir, "www/notes.txt", "a note\n");
    let tail = up.wait_log(mark, "ran `", Duration::from_secs(30));
    let reported = saved.elapsed();
    assert!(
        wait_http(
            port,
            "/copy.html",
            200,
            "<h1>synced</h1>",
            Duration::from_secs(30)
        ),
        "the command's copy of the page is served:\n{}",
        up.log()
    );
    let command = "`sh -c 'cp /www/index.html /www/copy.html; echo ran >> /www/runs.txt'`";
    let line = tail
        .lines()
        .find(|l| l.contains("→ synced"))
        .unwrap_or_else(|| panic!("no sync line:\n{tail}"));
    assert!(
        line.starts_with(
            "minimal-web: www/index.html, www/notes.txt changed → synced to 1 pod in "
        ) && line.ends_with(&format!(" ms, ran {command}")),
        "{line}"
    );
    let runs = get("/runs.txt").expect("runs.txt is served");
    assert!(runs.1.ends_with("\r\n\r\nran\n"), "ran once: {}", runs.1);
    let ms: u64 = line
        .split(" in ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap();
    // Not the time to the served page: busybox httpd lingers a second before closing a 404.
    eprintln!(
        "MEASURE sync_and_run_ms={ms} save_to_line_ms={} (quiet period 300 ms)",
        reported.as_millis()
    );

    // A command that fails: a warning with its exit code and stderr; the files are in, no rebuild.
    let mark = up.log().len();
    write(dir, "www/fail/x.html", "<p>fail</p>\n");
    let tail = up.wait_log(mark, "exited with", Duration::from_secs(30));
    assert!(
        tail.contains(
            "warning: minimal-web: www/fail/x.html changed → synced to 1 pod in "
        ) && tail.contains(
            "ran `sh -c 'echo starting; echo boom >&2; exit 3'`\n  `sh -c 'echo starting; echo boom >&2; exit 3'` exited with 3 in web-"
        ) && tail.contains("/web\n    boom\n"),
        "{tail}"
    );
    assert_eq!(get("/fail/x.html").map(|r| r.0), Some(200));

    // A deleted file covered by a rule: gone from the container, the command runs, no rebuild.
    let mark = up.log().len();
    std::fs::remove_file(dir.join("www/notes.txt")).unwrap();
    let tail = up.wait_log(mark, "removed from", Duration::from_secs(30));
    assert!(
        tail.contains("minimal-web: www/notes.txt removed → removed from 1 pod in ")
            && tail.contains(&format!(" ms, ran {command}")),
        "{tail}"
    );
    assert!(
        wait_http(port, "/notes.txt", 404, "", Duration::from_secs(5)),
        "{:?}",
        get("/notes.txt")
    );
    assert!(get("/runs.txt").unwrap().1.ends_with("\r\n\r\nran\nran\n"));

    std::thread::sleep(Duration::from_secs(1));
    let log = up.log();
    assert!(
        !log.contains("rebuilding") && !log.contains("built and loaded"),
        "{log}"
    );

    // A delete the container refuses (its user may not write /bin): rebuilt as before.
    let mark = up.log().len();
    std::fs::remove_file(dir.join("bin/sh")).unwrap();
    let tail = up.wait_log(mark, "redeployed profile", Duration::from_secs(120));
    assert!(
        tail.contains(
            "minimal-web: bin/sh removed → sync failed (failed to delete /bin/sh in web-"
        ) && tail.contains("Permission denied")
            && tail.contains("); rebuilding\n"),
        "{tail}"
    );
    assert!(tail.contains("redeployed profile `dev`"), "{tail}");
    assert_eq!(up.stop(), Some(0), "{}", up.log());
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
