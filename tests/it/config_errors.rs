//! Every kind of bad input gets an error naming the file, line, field and fix (snapshotted),
//! exit code 3, and never a panic.

use crate::common::{devloop, insta_settings, sample, write};

/// One broken project: files to write over a copy of `samples/minimal`, and the command.
struct Case {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    args: &'static [&'static str],
}

const MINIMAL_PROJECT: &str = "name: minimal
artifacts:
  - image: minimal-web
manifests:
  app:
    - k8s/
portForward:
  - resource: deployment/web
    port: 8080
";

const CASES: &[Case] = &[
    Case {
        name: "unknown_field_typo",
        files: &[(
            "devloop.yaml",
            "name: minimal\nartifacts:\n  - image: minimal-web\nmanifests:\n  app: [k8s/]\nportForward:\n  - resource: deployment/web\n    port: 8080\n    locaPort: 8000\n",
        )],
        args: &["render"],
    },
    Case {
        name: "wrong_type",
        files: &[(
            "devloop.yaml",
            "name: minimal\nartifacts:\n  - image: minimal-web\nmanifests:\n  app: [k8s/]\nportForward:\n  - resource: deployment/web\n    port: http\n",
        )],
        args: &["render"],
    },
    Case {
        name: "missing_name",
        files: &[(
            "devloop.yaml",
            "artifacts:\n  - image: minimal-web\nmanifests:\n  app: [k8s/]\n",
        )],
        args: &["render"],
    },
    Case {
        name: "bad_project_name",
        files: &[(
            "devloop.yaml",
            "name: My_App\nartifacts:\n  - image: minimal-web\nmanifests:\n  app: [k8s/]\n",
        )],
        args: &["render"],
    },
    Case {
        name: "missing_manifest_path",
        files: &[(
            "devloop.yaml",
            "name: minimal\nartifacts:\n  - image: minimal-web\nmanifests:\n  app:\n    - k8s/\n    - k8s-extra/\n",
        )],
        args: &["render"],
    },
    Case {
        name: "missing_dockerfile",
        files: &[(
            "devloop.yaml",
            "name: minimal\nartifacts:\n  - image: minimal-web\n    dockerfile: Dockerfile.dev\nmanifests:\n  app: [k8s/]\n",
        )],
        args: &["render"],
    },
    Case {
        name: "image_with_tag",
        files: &[(
            "devloop.yaml",
            "name: minimal\nartifacts:\n  - image: minimal-web:1.0\nmanifests:\n  app: [k8s/]\n",
        )],
        args: &["render"],
    },
    Case {
        name: "unused_artifact",
        files: &[(
            "devloop.yaml",
            "name: minimal\nartifacts:\n  - image: minimal-web\n  - image: minimal-worker\nmanifests:\n  app: [k8s/]\n",
        )],
        args: &["render"],
    },
    Case {
        name: "duplicate_artifact",
        files: &[(
            "devloop.yaml",
            "name: minimal\nartifacts:\n  - image: minimal-web\n  - image: minimal-web\nmanifests:\n  app: [k8s/]\n",
        )],
        args: &["render"],
    },
    Case {
        name: "sync_unknown_field",
        files: &[(
            "devloop.yaml",
            "name: minimal\nartifacts:\n  - image: minimal-web\n    sync:\n      - src: \"www/**\"\n        dest: /www\n        runs: [kill, -HUP, \"1\"]\nmanifests:\n  app: [k8s/]\n",
        )],
        args: &["render"],
    },
    Case {
        name: "sync_run_names_no_program",
        files: &[(
            "devloop.yaml",
            "name: minimal\nartifacts:\n  - image: minimal-web\n    sync:\n      - src: \"www/**\"\n        dest: /www\n        run: []\nmanifests:\n  app: [k8s/]\n",
        )],
        args: &["render"],
    },
    Case {
        name: "sync_run_is_a_string",
        files: &[(
            "devloop.yaml",
            "name: minimal\nartifacts:\n  - image: minimal-web\n    sync:\n      - src: \"www/**\"\n        dest: /www\n        run: kill -HUP 1\nmanifests:\n  app: [k8s/]\n",
        )],
        args: &["render"],
    },
    Case {
        name: "sync_src_not_a_glob",
        files: &[(
            "devloop.yaml",
            "name: minimal\nartifacts:\n  - image: minimal-web\n    sync:\n      - src: \"www/**\"\n        dest: /www\n      - src: \"static/[a\"\n        dest: /static\nmanifests:\n  app: [k8s/]\n",
        )],
        args: &["render"],
    },
    Case {
        name: "duplicate_resource",
        files: &[
            ("devloop.yaml", MINIMAL_PROJECT),
            (
                "k8s/zz-copy.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers: [{name: web, image: minimal-web}]\n",
            ),
        ],
        args: &["render"],
    },
    Case {
        name: "patch_targets_nothing",
        files: &[
            ("devloop.yaml", MINIMAL_PROJECT),
            (
                "profiles/production.yaml",
                "patches:\n  - kind: Deployment\n    name: wbe\n    replicas: 2\n",
            ),
        ],
        args: &["render", "-p", "production"],
    },
    Case {
        name: "patch_unknown_container",
        files: &[
            ("devloop.yaml", MINIMAL_PROJECT),
            (
                "profiles/production.yaml",
                "patches:\n  - kind: Deployment\n    name: web\n    containers:\n      wbe:\n        env: {A: \"1\"}\n",
            ),
        ],
        args: &["render", "-p", "production"],
    },
    Case {
        name: "patch_unknown_field",
        files: &[
            ("devloop.yaml", MINIMAL_PROJECT),
            (
                "profiles/production.yaml",
                "patches:\n  - kind: Deployment\n    name: web\n    replica: 2\n",
            ),
        ],
        args: &["render", "-p", "production"],
    },
    Case {
        name: "unknown_profile",
        files: &[("devloop.yaml", MINIMAL_PROJECT)],
        args: &["render", "-p", "prodution"],
    },
    Case {
        name: "profile_unknown_artifact",
        files: &[
            ("devloop.yaml", MINIMAL_PROJECT),
            (
                "profiles/production.yaml",
                "artifacts:\n  minimal-wbe:\n    target: prod\n",
            ),
        ],
        args: &["render", "-p", "production"],
    },
    Case {
        name: "manifest_field_typo",
        files: &[
            ("devloop.yaml", MINIMAL_PROJECT),
            (
                "k8s/deployment.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers:\n        - name: web\n          image: minimal-web\n          imagePullPolcy: Never\n",
            ),
        ],
        args: &["render"],
    },
    Case {
        name: "manifest_wrong_type",
        files: &[
            ("devloop.yaml", MINIMAL_PROJECT),
            (
                "k8s/deployment.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: two\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers: [{name: web, image: minimal-web}]\n",
            ),
        ],
        args: &["render"],
    },
    Case {
        name: "manifest_missing_name",
        files: &[
            ("devloop.yaml", MINIMAL_PROJECT),
            (
                "k8s/zz.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {a: b}\n",
            ),
        ],
        args: &["render"],
    },
    Case {
        name: "manifest_invalid_yaml",
        files: &[
            ("devloop.yaml", MINIMAL_PROJECT),
            (
                "k8s/zz.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n data: {a: b}\n",
            ),
        ],
        args: &["render"],
    },
    Case {
        name: "manifest_wrong_api_version",
        files: &[
            ("devloop.yaml", MINIMAL_PROJECT),
            (
                "k8s/zz.yaml",
                "apiVersion: policy/v1beta1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\nspec:\n  minAvailable: 1\n",
            ),
        ],
        args: &["render"],
    },
    Case {
        name: "manifest_kind_typo",
        files: &[
            ("devloop.yaml", MINIMAL_PROJECT),
            (
                "k8s/zz.yaml",
                "apiVersion: v1\nkind: ConfigMapp\nmetadata:\n  name: x\n",
            ),
        ],
        args: &["render"],
    },
    Case {
        name: "forward_bad_resource",
        files: &[(
            "devloop.yaml",
            "name: minimal\nartifacts:\n  - image: minimal-web\nmanifests:\n  app: [k8s/]\nportForward:\n  - resource: deploymnt/web\n    port: 8080\n",
        )],
        args: &["render"],
    },
    Case {
        name: "forward_duplicate_local_port",
        files: &[(
            "devloop.yaml",
            "name: minimal\nartifacts:\n  - image: minimal-web\nmanifests:\n  app: [k8s/]\nportForward:\n  - resource: deployment/web\n    port: 8080\n  - resource: service/web\n    port: 8080\n",
        )],
        args: &["render"],
    },
    Case {
        name: "backup_cronjob_missing",
        files: &[(
            "devloop.yaml",
            "name: minimal\nartifacts:\n  - image: minimal-web\nmanifests:\n  app: [k8s/]\nbackup:\n  cronJob: postgres-backup\n",
        )],
        args: &["render"],
    },
    Case {
        name: "secret_env_file_missing",
        files: &[
            (
                "devloop.yaml",
                "name: minimal\nartifacts:\n  - image: minimal-web\nmanifests:\n  app: [k8s/]\nsecrets:\n  - name: app-db\n    envFile: .env\n    example: .env.example\n",
            ),
            (".env.example", "A=1\n"),
        ],
        args: &["render"],
    },
    Case {
        name: "secret_env_file_bad_line",
        files: &[
            (
                "devloop.yaml",
                "name: minimal\nartifacts:\n  - image: minimal-web\nmanifests:\n  app: [k8s/]\nsecrets:\n  - name: app-db\n    envFile: .env\n",
            ),
            (".env", "A=1\nthis line has no equals sign\n"),
        ],
        args: &["render"],
    },
];

#[test]
fn every_bad_input_names_file_line_field_and_fix() {
    let mut failures = Vec::new();
    for case in CASES {
        let project = sample("minimal");
        for (rel, text) in case.files {
            write(project.path(), rel, text);
        }
        let run = devloop(project.path(), case.args);
        if run.code != 3 || run.stderr.contains("panicked") {
            failures.push(format!("{}: exit {}\n{}", case.name, run.code, run.stderr));
            continue;
        }
        insta_settings(project.path()).bind(|| {
            insta::assert_snapshot!(format!("config_error_{}", case.name), run.stderr);
        });
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn no_project_says_how_to_make_one() {
    let empty = tempfile::tempdir().unwrap();
    let run = devloop(empty.path(), &["render"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("no devloop.yaml"), "{}", run.stderr);
    assert!(run.stderr.contains("devloop init"), "{}", run.stderr);
}
