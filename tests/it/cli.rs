//! The CLI contract through the real binary: help, version, exit codes, completions.

use crate::common::{devloop, insta_settings, repo};

#[test]
fn help_is_stable() {
    let settings = insta_settings(&repo());
    for args in [
        &["--help"][..],
        &["render", "--help"],
        &["init", "--help"],
        &["doctor", "--help"],
    ] {
        let run = devloop(&repo(), args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        settings.bind(|| {
            insta::assert_snapshot!(
                format!("help_{}", args.join("_").trim_start_matches("--")),
                run.stdout
            )
        });
    }
}

#[test]
fn version_and_usage_errors() {
    let run = devloop(&repo(), &["--version"]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.starts_with("devloop "), "{}", run.stdout);

    let run = devloop(&repo(), &["deploy-everything"]);
    assert_eq!(run.code, 2, "unknown commands are usage errors");
    assert!(
        run.stderr.contains("unrecognized subcommand"),
        "{}",
        run.stderr
    );

    let run = devloop(&repo(), &["render", "--output", "xml"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("possible values: yaml, json"),
        "{}",
        run.stderr
    );
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let run = devloop(&repo(), &["completions", shell]);
        assert_eq!(run.code, 0, "{shell}");
        assert!(
            run.stdout.contains("render") && run.stdout.contains("doctor"),
            "{shell}"
        );
    }
}

#[test]
fn dir_flag_finds_the_project_from_anywhere_below() {
    let project = crate::common::sample("minimal");
    let elsewhere = tempfile::tempdir().unwrap();
    let path = project.path().join("www").display().to_string();
    let run = devloop(elsewhere.path(), &["-C", &path, "render", "-q"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("kind: Deployment"));
}
