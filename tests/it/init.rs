//! `devloop init`: scaffolds a project that renders in both profiles, and never overwrites.

use crate::common::{devloop, insta_settings, write};

#[test]
fn init_scaffolds_a_project_that_renders() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("Shop_App");
    std::fs::create_dir(&dir).unwrap();
    let run = devloop(&dir, &["init", "--image", "shop-web"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("Created project `shop-app`"),
        "{}",
        run.stderr
    );
    for file in [
        "devloop.yaml",
        ".env",
        ".env.example",
        "k8s/restore-job.yaml",
        "profiles/production.yaml",
    ] {
        assert!(dir.join(file).is_file(), "{file} written");
    }
    assert!(
        std::fs::read_to_string(dir.join(".gitignore"))
            .unwrap()
            .lines()
            .any(|l| l == ".env")
    );

    // Without a Dockerfile, render says what to do.
    let run = devloop(&dir, &["render"]);
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("Dockerfile"), "{}", run.stderr);

    write(&dir, "Dockerfile", "FROM scratch\n");
    for profile in ["dev", "production"] {
        let run = devloop(&dir, &["render", "-p", profile]);
        assert_eq!(run.code, 0, "{profile}: {}", run.stderr);
        assert!(
            run.stdout.contains("image: shop-web:dl-"),
            "{profile}: artifact image substituted"
        );
        assert!(
            run.stdout.contains("name: shop-app-db"),
            "{profile}: secret named after the project"
        );
        assert!(!run.stdout.contains("__NAME__") && !run.stdout.contains("__IMAGE__"));
        let prefix = dir.display().to_string();
        insta_settings(&dir).bind(|| {
            let mut settings = insta::Settings::clone_current();
            settings.add_filter(&regex_lite_escape(&prefix), "[PROJECT]");
            settings.add_filter(r"dl-[0-9a-f]{12}", "dl-[TAG]");
            settings.bind(|| insta::assert_snapshot!(format!("init_render_{profile}"), run.stdout));
        });
    }
}

#[test]
fn init_refuses_to_overwrite_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "k8s/app/web.yaml", "# mine\n");
    let run = devloop(tmp.path(), &["init", "--name", "shop"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("refusing to overwrite"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("k8s/app/web.yaml"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("k8s/app/web.yaml")).unwrap(),
        "# mine\n"
    );
    assert!(!tmp.path().join("devloop.yaml").exists(), "nothing written");
}

#[test]
fn init_rejects_a_bad_name_with_a_suggestion() {
    let tmp = tempfile::tempdir().unwrap();
    let run = devloop(tmp.path(), &["init", "--name", "My App"]);
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("--name my-app"), "{}", run.stderr);
}

fn regex_lite_escape(s: &str) -> String {
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
