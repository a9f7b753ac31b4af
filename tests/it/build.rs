//! `devloop build` against the real Docker engine (docker tier): builds, skips what is built,
//! rebuilds on change, sends exactly what `docker build` sends, and fails clearly.

use std::path::Path;
use std::process::Command;

use crate::common::{Tier, devloop, devloop_with, write};

const DOCKERFILE: &str = "FROM scratch\nCOPY www /www\n";

/// A project whose image needs no base image, so the test runs on any engine.
fn scratch_project() -> tempfile::TempDir {
    let tmp = tempfile::Builder::new()
        .prefix("devloop-test-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let name = format!("devloop-test-{}", std::process::id());
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
    write(dir, "Dockerfile", DOCKERFILE);
    write(dir, "www/index.html", "v1\n");
    tmp
}

fn build_json(dir: &Path) -> (serde_json::Value, String) {
    let run = devloop(dir, &["build", "--no-load", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let reports: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON report");
    (reports[0].clone(), run.stderr)
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The files in an image, as paths relative to `root` inside it.
fn image_files(reference: &str, root: &str) -> Vec<String> {
    let container = docker(&["create", reference, "/nothing"])
        .trim()
        .to_string();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {container} | tar -t"))
        .output()
        .unwrap();
    docker(&["rm", &container]);
    let mut files: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(root).map(str::to_string))
        .filter(|l| !l.is_empty() && !l.ends_with('/'))
        .collect();
    files.sort();
    files
}

fn remove_images(references: &[&str]) {
    let _ = Command::new("docker")
        .arg("rmi")
        .arg("-f")
        .args(references)
        .output();
}

#[test]
fn docker_tier_build_skips_unchanged_and_rebuilds_on_change() {
    if !Tier::Docker.available("docker_tier_build_skips_unchanged_and_rebuilds_on_change") {
        return;
    }
    let project = scratch_project();
    let (first, _) = build_json(project.path());
    assert_eq!(first["built"], true);
    let reference = first["reference"].as_str().unwrap().to_string();
    assert!(reference.contains(":dl-"), "{reference}");
    assert_eq!(image_files(&reference, "www/"), ["index.html"]);

    // Same inputs: nothing built, and devloop says why.
    let (second, stderr) = build_json(project.path());
    assert_eq!(second["built"], false);
    assert_eq!(second["reference"], first["reference"]);
    assert!(
        stderr.contains("up to date") && stderr.contains("no input changed"),
        "{stderr}"
    );

    // One file changed: a new tag, built.
    write(project.path(), "www/index.html", "v2\n");
    let (third, _) = build_json(project.path());
    assert_eq!(third["built"], true);
    assert_ne!(third["reference"], first["reference"]);
    let labels = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        third["reference"].as_str().unwrap(),
    ]);
    assert!(labels.contains("devloop.dev/artifact"), "{labels}");

    remove_images(&[&reference, third["reference"].as_str().unwrap()]);
}

#[test]
fn docker_tier_dockerignore_sends_what_docker_build_sends() {
    if !Tier::Docker.available("docker_tier_dockerignore_sends_what_docker_build_sends") {
        return;
    }
    let project = scratch_project();
    let dir = project.path();
    write(dir, "Dockerfile", "FROM scratch\nCOPY . /ctx/\n");
    // A table of the rules that matter: globs within a directory, `**`, directories, exceptions,
    // a leading slash, `?`, comments, and the Dockerfile/.dockerignore themselves.
    write(
        dir,
        ".dockerignore",
        "# comment\n*.log\n**/*.pyc\n/build\nsecrets/\ndocs/**\n!docs/keep.md\nte?t.txt\n.env\nnode_modules\n!node_modules/keep/\n",
    );
    for file in [
        "app.log",
        "src/app.log",
        "src/main.py",
        "src/main.pyc",
        "src/deep/x.pyc",
        "build/out.o",
        "src/build/in.o",
        "secrets/key",
        "docs/a.md",
        "docs/keep.md",
        "test.txt",
        "text.txt",
        "tests.txt",
        ".env",
        ".env.example",
        "node_modules/a/index.js",
        "node_modules/keep/k.js",
        "README.md",
    ] {
        write(dir, file, "x\n");
    }
    let (report, _) = build_json(dir);
    let ours = image_files(report["reference"].as_str().unwrap(), "ctx/");

    let tag = format!("devloop-test-docker-build-{}", std::process::id());
    let out = Command::new("docker")
        .args(["build", "-q", "-t", &tag, "."])
        .current_dir(dir)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = image_files(&tag, "ctx/");
    remove_images(&[report["reference"].as_str().unwrap(), &tag]);

    assert_eq!(
        ours, theirs,
        "devloop's context differs from docker build's"
    );
    // And the table itself, so a change in both at once is still caught.
    for kept in [
        "src/main.py",
        "src/app.log",
        "src/build/in.o",
        "docs/keep.md",
        "node_modules/keep/k.js",
        "tests.txt",
        ".env.example",
        "README.md",
    ] {
        assert!(ours.contains(&kept.to_string()), "{kept} is sent: {ours:?}");
    }
    for dropped in [
        "app.log",
        "src/main.pyc",
        "build/out.o",
        "secrets/key",
        "docs/a.md",
        "test.txt",
        "text.txt",
        ".env",
        "node_modules/a/index.js",
    ] {
        assert!(
            !ours.contains(&dropped.to_string()),
            "{dropped} is not sent: {ours:?}"
        );
    }
}

#[test]
fn docker_tier_a_failing_step_is_reported_with_its_output() {
    if !Tier::Docker.available("docker_tier_a_failing_step_is_reported_with_its_output") {
        return;
    }
    let project = scratch_project();
    write(
        project.path(),
        "Dockerfile",
        "FROM scratch\nCOPY www /www\nCOPY missing.txt /\n",
    );
    // Both builders: BuildKit (the default) names steps "[2/2] …", the classic one "Step 3/4 : …" (its label is a step).
    for (buildkit, step) in [
        ("1", "failed at `[2/2] COPY missing.txt /`"),
        ("0", "failed at `Step 3/4 : COPY missing.txt /`"),
    ] {
        let run = devloop_with(
            project.path(),
            &["build", "--no-load"],
            &[("DOCKER_BUILDKIT", buildkit)],
        );
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(run.stderr.contains("error: build of"), "{}", run.stderr);
        assert!(run.stderr.contains(step), "names the step: {}", run.stderr);
        assert!(
            run.stderr.contains("missing.txt"),
            "says what is missing: {}",
            run.stderr
        );
    }
}

#[test]
fn engine_down_is_a_clear_environment_error() {
    let project = scratch_project();
    let run = devloop_with(
        project.path(),
        &["build"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("Docker engine at unix:///nonexistent/docker.sock is not reachable"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("hint: start Docker"), "{}", run.stderr);
}
