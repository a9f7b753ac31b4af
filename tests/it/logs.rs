//! Log streaming as `up` runs it (`devloop::logs`), against the real test cluster: pods that ran
//! before show only new lines, new pods show from their first line (init containers too), a
//! restarted container keeps streaming, and pods outside the selector stay silent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devloop::logs::{self, LogSink};
use tokio_util::sync::CancellationToken;

use crate::common::{kind_cluster_test, kube_client};

/// What the streams produced: (source, colour, text) per line, and notes.
#[derive(Clone, Default)]
struct Collected {
    lines: Arc<Mutex<Vec<(String, usize, String)>>>,
    notes: Arc<Mutex<Vec<String>>>,
}

impl LogSink for Collected {
    fn line(&self, source: &str, colour: usize, text: &str) {
        self.lines
            .lock()
            .unwrap()
            .push((source.to_string(), colour, text.to_string()));
    }

    fn note(&self, text: &str) {
        self.notes.lock().unwrap().push(text.to_string());
    }
}

impl Collected {
    fn texts(&self, source: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _, _)| s == source)
            .map(|(_, _, t)| t.clone())
            .collect()
    }

    fn colour(&self, source: &str) -> Option<usize> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(s, _, _)| s == source)
            .map(|(_, c, _)| *c)
    }

    /// Wait up to `timeout` until `check` holds; panics with everything collected otherwise.
    fn wait_for(&self, what: &str, timeout: Duration, check: impl Fn(&Self) -> bool) {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if check(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "no {what} after {timeout:?}; lines: {:#?}\nnotes: {:#?}",
            self.lines.lock().unwrap(),
            self.notes.lock().unwrap()
        );
    }
}

fn pod(name: &str, labelled: bool, init: Option<&str>, main: &str) -> String {
    let labels = if labelled {
        "{app: logs}"
    } else {
        "{app: other}"
    };
    let init = init
        .map(|script| {
            format!(
                "  initContainers:\n    - {{name: setup, image: busybox:1.36, imagePullPolicy: Never, command: [sh, -c, '{script}']}}\n"
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {labels}}}\nspec:\n  terminationGracePeriodSeconds: 1\n{init}  containers:\n    - {{name: main, image: busybox:1.36, imagePullPolicy: Never, command: [sh, -c, '{main}']}}\n"
    )
}

#[test]
fn cluster_tier_logs_follow_new_pods_and_restarts_from_now_on() {
    let test = "cluster_tier_logs_follow_new_pods_and_restarts_from_now_on";
    let Some((context, ns)) = kind_cluster_test(test, "logs") else {
        return;
    };
    let ticking = "echo history-line; i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done";
    ns.apply(&pod("old", true, None, ticking));
    ns.apply(&pod("other", false, None, ticking));
    ns.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/old",
        "pod/other",
        "--timeout=90s",
    ])
    .unwrap();
    // `old` has history by now, which streaming must not replay.
    let until = Instant::now() + Duration::from_secs(30);
    while !ns
        .kubectl(&["logs", "old"])
        .unwrap_or_default()
        .contains("tick-1")
    {
        assert!(Instant::now() < until, "pod old does not log");
        std::thread::sleep(Duration::from_millis(250));
    }

    let (runtime, client) = kube_client(&context);
    let cancel = CancellationToken::new();
    let collected = Collected::default();
    let streaming = runtime.spawn(logs::run(
        client,
        ns.name.clone(),
        "app=logs".into(),
        cancel.clone(),
        collected.clone(),
    ));

    collected.wait_for("new line of pod old", Duration::from_secs(30), |c| {
        c.texts("old/main").iter().any(|t| t.starts_with("tick-"))
    });

    // A new pod: its init container and its main one from their first line; the main container
    // exits and is restarted, and the new instance streams too.
    ns.apply(&pod(
        "fresh",
        true,
        Some("echo init-says-hello"),
        "echo main-started-$(date +%s%N); sleep 2; exit 1",
    ));
    collected.wait_for("init container line", Duration::from_secs(60), |c| {
        c.texts("fresh/setup") == ["init-says-hello"]
    });
    collected.wait_for(
        "line of the restarted container",
        Duration::from_secs(90),
        |c| {
            c.texts("fresh/main")
                .iter()
                .filter(|t| t.starts_with("main-started-"))
                .count()
                >= 2
        },
    );

    let old = collected.texts("old/main");
    assert!(
        !old.iter().any(|t| t == "history-line"),
        "pod old replayed its history: {old:?}"
    );
    assert!(
        collected.texts("other/main").is_empty(),
        "a pod outside the selector was streamed"
    );
    let starts = collected.texts("fresh/main");
    let distinct: std::collections::HashSet<&String> = starts.iter().collect();
    assert_eq!(
        starts.len(),
        distinct.len(),
        "a line was shown twice: {starts:?}"
    );
    assert_ne!(
        collected.colour("old/main"),
        collected.colour("fresh/main"),
        "two pods share a colour"
    );

    cancel.cancel();
    runtime
        .block_on(streaming)
        .expect("logs::run does not panic")
        .expect("logs::run ends cleanly");
}
