//! `devloop render` output for both profiles of each sample, pinned as golden files, and the
//! behaviour users rely on: images substituted, labels, tiers, apply order, secrets masked.

use crate::common::{devloop, insta_settings, sample, write};

#[test]
fn golden_render_of_every_sample_and_profile() {
    for (name, profile) in [
        ("minimal", "dev"),
        ("minimal", "production"),
        ("django", "dev"),
        ("django", "production"),
    ] {
        let project = sample(name);
        let run = devloop(project.path(), &["render", "-p", profile]);
        assert_eq!(run.code, 0, "{name}/{profile}: {}", run.stderr);
        insta_settings(project.path()).bind(|| {
            insta::assert_snapshot!(format!("render_{name}_{profile}"), run.stdout);
        });
    }
}

fn objects(stdout: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(stdout).expect("render -o json prints a JSON list")
}

fn find<'a>(objects: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} rendered"))
}

#[test]
fn production_profile_patches_and_adds_objects() {
    let project = sample("django");
    let dev = objects(&devloop(project.path(), &["render", "-o", "json"]).stdout);
    let prod = objects(
        &devloop(
            project.path(),
            &["render", "-p", "production", "-o", "json"],
        )
        .stdout,
    );

    let web_dev = find(&dev, "Deployment", "web");
    let web_prod = find(&prod, "Deployment", "web");
    assert_eq!(web_prod["spec"]["replicas"], 2);
    let container = &web_prod["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"][0], "gunicorn");
    // Different build target → different content-addressed tag.
    let image_dev = web_dev["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    let image_prod = container["image"].as_str().unwrap();
    assert!(image_dev.starts_with("musiccat-web:dl-"), "{image_dev}");
    assert_ne!(
        image_dev, image_prod,
        "the production target is a different build"
    );
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    // The initContainer and the migrations Job use the same artifact.
    let migrate = find(&prod, "Job", "migrate");
    assert_eq!(
        migrate["spec"]["template"]["spec"]["containers"][0]["image"],
        image_prod
    );

    assert!(prod.iter().any(|o| o["kind"] == "HorizontalPodAutoscaler"));
    assert!(prod.iter().any(|o| o["kind"] == "PodDisruptionBudget"));
    assert!(!dev.iter().any(|o| o["kind"] == "HorizontalPodAutoscaler"));

    // Labels: tiers, project and profile (profile only on the profile tier).
    let pvc = find(&prod, "PersistentVolumeClaim", "postgres-data");
    assert_eq!(pvc["metadata"]["labels"]["devloop.dev/tier"], "persistent");
    assert!(
        pvc["metadata"]["labels"]
            .get("devloop.dev/profile")
            .is_none()
    );
    assert_eq!(
        web_prod["metadata"]["labels"]["devloop.dev/profile"],
        "production"
    );
    assert_eq!(
        web_prod["spec"]["template"]["metadata"]["labels"]["devloop.dev/project"],
        "musiccat"
    );
}

#[test]
fn objects_come_in_apply_order() {
    let project = sample("django");
    let all = objects(
        &devloop(
            project.path(),
            &["render", "-p", "production", "-o", "json"],
        )
        .stdout,
    );
    let kinds: Vec<&str> = all.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    let first = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    let last = |k: &str| kinds.iter().rposition(|x| *x == k).unwrap();
    assert!(last("Secret") < first("PersistentVolumeClaim"), "{kinds:?}");
    assert!(
        last("PersistentVolumeClaim") < first("Service"),
        "{kinds:?}"
    );
    assert!(last("Service") < first("Deployment"), "{kinds:?}");
    assert!(last("StatefulSet") < first("Job"), "{kinds:?}");
    assert!(last("Job") < first("CronJob"), "{kinds:?}");
}

#[test]
fn secret_values_never_appear_unless_asked() {
    let project = sample("django");
    write(
        project.path(),
        ".env",
        "POSTGRES_USER=musiccat\nPOSTGRES_PASSWORD=pw-8d1f7c2a\nPOSTGRES_DB=musiccat\nDJANGO_SECRET_KEY=key-3b9e0f44\n",
    );
    for args in [
        &["render"][..],
        &["render", "-o", "json"],
        &["render", "--tier", "infra"],
    ] {
        let run = devloop(project.path(), args);
        assert_eq!(run.code, 0, "{}", run.stderr);
        for secret in ["pw-8d1f7c2a", "key-3b9e0f44"] {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "{args:?} leaks {secret}"
            );
        }
        assert!(run.stdout.contains("<masked>"));
    }
    let shown = devloop(project.path(), &["render", "--show-secrets"]);
    assert!(
        shown.stdout.contains("pw-8d1f7c2a"),
        "--show-secrets shows values"
    );
}

#[test]
fn tier_filter_and_namespace_flag() {
    let project = sample("django");
    let infra = objects(
        &devloop(
            project.path(),
            &["render", "--tier", "infra", "-o", "json", "-n", "music"],
        )
        .stdout,
    );
    assert!(!infra.is_empty());
    for o in &infra {
        assert_eq!(
            o["metadata"]["labels"]["devloop.dev/tier"], "persistent",
            "{}",
            o["metadata"]["name"]
        );
        assert_eq!(o["metadata"]["namespace"], "music");
    }
}

#[test]
fn a_content_change_changes_the_tag_and_an_ignored_file_does_not() {
    let project = sample("minimal");
    let tag = |dir: &std::path::Path| {
        let all = objects(&devloop(dir, &["render", "-o", "json"]).stdout);
        find(&all, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let before = tag(project.path());
    write(project.path(), "notes.md", "not in the image\n");
    write(
        project.path(),
        ".dockerignore",
        &(std::fs::read_to_string(project.path().join(".dockerignore")).unwrap() + "notes.md\n"),
    );
    let after_ignore_change = tag(project.path());
    // .dockerignore itself is part of the context, so editing it is a change...
    assert_ne!(before, after_ignore_change);
    // ...but an ignored file is not.
    write(project.path(), "notes.md", "edited, still ignored\n");
    assert_eq!(tag(project.path()), after_ignore_change);
    write(
        project.path(),
        "www/index.html",
        "<p id=\"version\">2</p>\n",
    );
    assert_ne!(tag(project.path()), after_ignore_change);
}
