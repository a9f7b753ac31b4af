//! `devloop backup` through the real binary: the refusals and configuration errors that need no
//! cluster, and (cluster tier) the Django sample's PostgreSQL with its persistent tier in a
//! namespace of its own — a row is backed up, dropped, and back after `restore latest --yes`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{Tier, devloop, devloop_with, insta_settings, repo, sample, write};

#[test]
fn backup_help_is_stable() {
    let settings = insta_settings(&repo());
    for args in [&["backup", "--help"][..], &["backup", "restore", "--help"]] {
        let run = devloop(&repo(), args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        settings.bind(|| insta::assert_snapshot!(format!("help_{}", args.join("_")), run.stdout));
    }
}

#[test]
fn backup_without_configuration_says_how_to_add_it() {
    let tmp = tempfile::Builder::new()
        .prefix("devloop-test-")
        .tempdir()
        .unwrap();
    write(tmp.path(), "devloop.yaml", "name: nobackup\n");
    for sub in ["now", "list", "restore"] {
        // `--yes` so restore reaches the configuration check whatever stdin is.
        let args: &[&str] = if sub == "restore" {
            &["backup", "restore", "--yes"]
        } else {
            &["backup", sub]
        };
        let run = devloop(tmp.path(), args);
        assert_eq!(run.code, 3, "backup {sub}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("error: no backup is configured in devloop.yaml"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("hint: add `backup:`"), "{}", run.stderr);
    }

    write(
        tmp.path(),
        "devloop.yaml",
        "name: norestore\nbackup:\n  cronJob: db-backup\n",
    );
    let run = devloop(tmp.path(), &["backup", "restore", "--yes"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("no restore Job is configured") && run.stderr.contains("restoreJob"),
        "{}",
        run.stderr
    );
}

#[test]
fn restore_without_yes_and_no_terminal_refuses_before_touching_the_cluster() {
    let project = sample("django");
    // No cluster is needed: the refusal comes first (the context below does not exist).
    let run = devloop(
        project.path(),
        &[
            "--context",
            "no-such-context",
            "backup",
            "restore",
            "latest",
        ],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("stdin is not a terminal") && run.stderr.contains("--yes"),
        "{}",
        run.stderr
    );
}

fn kubectl(context: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new("kubectl")
        .arg("--context")
        .arg(context)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A namespace that is deleted when the test ends, pass or fail.
struct Namespace {
    context: String,
    name: String,
}

impl Namespace {
    fn new(context: &str, tag: &str) -> Self {
        let name = format!("devloop-it-{tag}-{}", std::process::id());
        kubectl(context, &["create", "namespace", &name], None).unwrap();
        Self {
            context: context.to_string(),
            name,
        }
    }

    fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        kubectl(&self.context, &all, None)
    }

    /// `devloop --context C -n NS ARGS` in `dir`.
    fn devloop(&self, dir: &Path, args: &[&str]) -> crate::common::Run {
        let mut all = vec!["--context", self.context.as_str(), "-n", self.name.as_str()];
        all.extend_from_slice(args);
        devloop_with(dir, &all, &[])
    }

    /// Run SQL in the sample's PostgreSQL as its user; the output without headers.
    fn psql(&self, sql: &str) -> String {
        let script = format!(
            "psql -v ON_ERROR_STOP=1 -tA -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" -c \"{sql}\""
        );
        self.kubectl(&["exec", "postgres-0", "--", "sh", "-c", &script])
            .unwrap_or_else(|e| panic!("psql `{sql}`: {e}"))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(
            &self.context,
            &["delete", "namespace", &self.name, "--wait=false"],
            None,
        );
    }
}

/// Apply the objects of `tier` that `keep` accepts, as `devloop render` makes them.
fn apply(ns: &Namespace, dir: &Path, tier: &str, keep: impl Fn(&serde_json::Value) -> bool) {
    let run = ns.devloop(
        dir,
        &["render", "--tier", tier, "-o", "json", "--show-secrets"],
    );
    assert_eq!(run.code, 0, "render --tier {tier}: {}", run.stderr);
    let objects: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    let items: Vec<serde_json::Value> = objects.into_iter().filter(|o| keep(o)).collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    kubectl(&ns.context, &["apply", "-f", "-"], Some(&list.to_string()))
        .unwrap_or_else(|e| panic!("kubectl apply ({tier}): {e}"));
}

/// Apply the sample's persistent tier (PVCs, Secret, backup CronJob) and its PostgreSQL
/// (StatefulSet and Service); the web app is not needed.
fn apply_postgres(ns: &Namespace, dir: &Path) {
    apply(ns, dir, "infra", |_| true);
    apply(ns, dir, "app", |o| o["metadata"]["name"] == "postgres");
    if let Err(e) = ns.kubectl(&[
        "rollout",
        "status",
        "statefulset/postgres",
        "--timeout=180s",
    ]) {
        let describe = ns
            .kubectl(&["describe", "pod", "postgres-0"])
            .unwrap_or_default();
        panic!("postgres did not become ready: {e}\n{describe}");
    }
}

fn json(run: &crate::common::Run, what: &str) -> serde_json::Value {
    assert_eq!(run.code, 0, "{what}: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{what}: {e}: {}", run.stdout))
}

#[test]
fn cluster_tier_backup_now_list_and_restore_bring_a_dropped_row_back() {
    let tier = Tier::KindCluster;
    if !tier.available("cluster_tier_backup_now_list_and_restore_bring_a_dropped_row_back") {
        return;
    }
    let project = sample("django");
    let dir = project.path();
    let ns = Namespace::new(&tier.context(), "backup");

    // Nothing applied yet: the CronJob is missing, and the fix is to apply the persistent tier.
    let run = ns.devloop(dir, &["backup", "now"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("backup CronJob `postgres-backup` is not in namespace")
            && run
                .stderr
                .contains("apply the persistent tier first: `devloop up`"),
        "{}",
        run.stderr
    );

    // The CronJob without its Secret: the Job's pod cannot start, devloop says why and removes
    // the Job rather than leave it to start whenever the Secret appears.
    apply(&ns, dir, "infra", |o| o["kind"] != "Secret");
    let run = ns.devloop(dir, &["backup", "now"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("cannot start: CreateContainerConfigError")
            && run.stderr.contains("secret \"musiccat-db\" not found")
            && run
                .stderr
                .contains("hint: a Secret or ConfigMap the pod needs is missing"),
        "{}",
        run.stderr
    );
    let jobs = ns.kubectl(&["get", "jobs", "-o", "name"]).unwrap();
    assert_eq!(jobs.trim(), "", "the Job that cannot start is removed");

    apply_postgres(&ns, dir);
    ns.psql("CREATE TABLE songs (title text); INSERT INTO songs VALUES ('Blue in Green');");

    // backup now: a Job owned by the CronJob leaves a gzip dump on the backups PVC.
    let report = json(&ns.devloop(dir, &["backup", "now", "--json"]), "backup now");
    let job = report["job"].as_str().unwrap();
    assert!(job.starts_with("postgres-backup-manual-"), "{report}");
    let backup = report["file"]["name"].as_str().unwrap().to_string();
    assert!(backup.ends_with(".sql.gz"), "{report}");
    assert!(report["file"]["size"].as_u64().unwrap() > 0, "{report}");
    let owner = ns
        .kubectl(&[
            "get",
            "job",
            job,
            "-o",
            "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {.metadata.annotations.cronjob\\.kubernetes\\.io/instantiate}",
        ])
        .unwrap();
    assert_eq!(owner, "CronJob/postgres-backup manual");

    // backup list shows it, with its size; the pod that read the volume is gone.
    let listing = json(
        &ns.devloop(dir, &["backup", "list", "--json"]),
        "backup list",
    );
    assert_eq!(listing["claim"], "postgres-backups");
    assert_eq!(listing["backups"][0]["name"], backup.as_str(), "{listing}");
    assert_eq!(listing["backups"][0]["size"], report["file"]["size"]);
    let listers = ns
        .kubectl(&["get", "pods", "-l", "devloop.dev/backup=list", "-o", "name"])
        .unwrap();
    assert_eq!(listers.trim(), "", "lister pods are deleted");

    // Without --yes and without a terminal, restore refuses and changes nothing.
    let run = ns.devloop(dir, &["backup", "restore"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    // A backup that does not exist is named, and the ones that do are listed.
    let run = ns.devloop(dir, &["backup", "restore", "nope.sql.gz", "--yes"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("there is no backup `nope.sql.gz`") && run.stderr.contains(&backup),
        "{}",
        run.stderr
    );
    let jobs = ns
        .kubectl(&[
            "get",
            "jobs",
            "-l",
            "devloop.dev/backup=restore",
            "-o",
            "name",
        ])
        .unwrap();
    assert_eq!(jobs.trim(), "", "no restore ran");

    ns.psql("DROP TABLE songs;");

    // restore latest: `latest` is the backup above, not the safety backup taken first.
    let out = json(
        &ns.devloop(dir, &["backup", "restore", "latest", "--yes", "--json"]),
        "backup restore",
    );
    assert_eq!(out["restored"]["file"]["name"], backup.as_str(), "{out}");
    assert_eq!(
        out["restored"]["backup_file"],
        format!("/backups/{backup}").as_str()
    );
    let safety = out["safety_backup"]["file"]["name"].as_str().unwrap();
    assert_ne!(safety, backup, "{out}");
    assert_eq!(ns.psql("SELECT title FROM songs;").trim(), "Blue in Green");

    // Both backups are on the volume, the safety backup newest.
    let listing = json(
        &ns.devloop(dir, &["backup", "list", "--json"]),
        "backup list",
    );
    let names: Vec<&str> = listing["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [safety, backup.as_str()]);
}

/// A project whose backup CronJob (busybox) writes a file and then fails.
fn failing_project() -> tempfile::TempDir {
    let tmp = tempfile::Builder::new()
        .prefix("devloop-test-")
        .tempdir()
        .unwrap();
    write(
        tmp.path(),
        "devloop.yaml",
        "name: failing\nmanifests:\n  infra: [k8s/]\nbackup:\n  cronJob: db-backup\n",
    );
    write(
        tmp.path(),
        "k8s/backup.yaml",
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: backups}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: db-backup}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: backup
              image: busybox:1.36
              imagePullPolicy: IfNotPresent
              command:
                - sh
                - -c
                - "echo 'dump: connecting'; echo data > /var/backups/db-1.dump; echo 'dump: the database is on fire' >&2; exit 3"
              volumeMounts: [{name: backups, mountPath: /var/backups}]
          volumes: [{name: backups, persistentVolumeClaim: {claimName: backups}}]
"#,
    );
    tmp
}

#[test]
fn cluster_tier_a_failed_backup_job_says_why_and_shows_its_last_log_lines() {
    let tier = Tier::KindCluster;
    if !tier.available("cluster_tier_a_failed_backup_job_says_why_and_shows_its_last_log_lines") {
        return;
    }
    let project = failing_project();
    let dir = project.path();
    let ns = Namespace::new(&tier.context(), "backup-fail");
    let run = ns.devloop(dir, &["render", "-o", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let items: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    kubectl(&ns.context, &["apply", "-f", "-"], Some(&list.to_string())).unwrap();

    let run = ns.devloop(dir, &["backup", "now"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    for expected in [
        "error: backup Job `db-backup-manual-",
        "failed: BackoffLimitExceeded",
        "container backup exited with code 3 (Error)",
        "last log lines:",
        "│ dump: the database is on fire",
        "hint: see why: `kubectl -n devloop-it-backup-fail-",
    ] {
        assert!(
            run.stderr.contains(expected),
            "{expected:?} in:\n{}",
            run.stderr
        );
    }

    // The lister works with busybox's `stat` too, and paths follow the CronJob's mount.
    let listing = json(
        &ns.devloop(dir, &["backup", "list", "--json"]),
        "backup list",
    );
    assert_eq!(listing["dir"], "/var/backups");
    assert_eq!(listing["backups"][0]["name"], "db-1.dump", "{listing}");
    assert_eq!(listing["backups"][0]["path"], "/var/backups/db-1.dump");
    assert_eq!(listing["backups"][0]["size"], 5);
    let run = ns.devloop(dir, &["backup", "list"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.starts_with("NAME")
            && run
                .stdout
                .lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("db-1.dump") && l.contains(" 5 B ")),
        "{}",
        run.stdout
    );
}
