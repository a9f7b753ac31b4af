//! The port-forwarder as `up` runs it (`devloop::forward`), against the real test cluster: pages
//! come through 127.0.0.1, a client requesting without pause through several rollouts sees no
//! failed request, a connection made while no pod is Ready waits for one, and busy ports are
//! named or skipped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devloop::cli::ColorChoice;
use devloop::config::PortForward;
use devloop::forward::{self, ForwardError, ForwardOptions};
use devloop::output::Printer;
use tokio_util::sync::CancellationToken;

use crate::common::{Namespace, kind_cluster_test, kube_client};

/// busybox httpd serving "$VERSION $HOSTNAME" on a named port 8080, with no readiness probe
/// and a server that starts listening 2 s after the pod is Ready (as a slow app server does):
/// the hardest case for a forward, whose connections must wait for it rather than fail.
const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
        - name: web
          image: busybox:1.36
          imagePullPolicy: Never
          env: [{name: VERSION, value: v1}]
          command: [sh, -c, 'mkdir -p /www && echo "$VERSION $HOSTNAME" > /www/index.html && sleep 2 && exec httpd -f -p 8080 -h /www']
          ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: solo}
spec:
  containers:
    - name: web
      image: busybox:1.36
      imagePullPolicy: Never
      command: [sh, -c, 'mkdir -p /www && echo solo > /www/index.html && exec httpd -f -p 8080 -h /www']
"#;

fn printer() -> Printer {
    Printer::new(false, 0, ColorChoice::Never)
}

fn forward(resource: &str, port: u16, local_port: u16) -> PortForward {
    let (kind, name) = resource.split_once('/').unwrap();
    PortForward {
        kind: kind.into(),
        name: name.into(),
        port,
        local_port,
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /` through 127.0.0.1:`port` on a new connection: the body of a 200, or what went wrong.
/// Reads `Content-Length` bytes of body, as browsers do, rather than waiting for the close.
fn get(port: u16) -> Result<String, String> {
    get_path(port, "/index.html")
}

fn get_path(port: u16, path: &str) -> Result<String, String> {
    let mut stream =
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("read after {} bytes: {e}", response.len()))?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if complete(&response) {
            break;
        }
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.lines().next().unwrap_or("").to_string();
    if !status.contains(" 200 ") {
        return Err(format!("status line {status:?}"));
    }
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// Whether `response` holds its headers and as much body as `Content-Length` says.
fn complete(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .is_some_and(|len| body.len() >= len)
}

/// busybox httpd whose page is a CGI script that never answers while MODE is `hang`, and a pod
/// that takes 30 s to stop (httpd as PID 1 ignores SIGTERM): a dev server that was killed while
/// handling a request, or one that takes its time to shut down.
const HANG: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: hang}
spec:
  replicas: 1
  selector: {matchLabels: {app: hang}}
  template:
    metadata: {labels: {app: hang}}
    spec:
      terminationGracePeriodSeconds: 30
      automountServiceAccountToken: false
      containers:
        - name: web
          image: busybox:1.36
          imagePullPolicy: Never
          env: [{name: MODE, value: hang}]
          command:
            - sh
            - -c
            - |
              mkdir -p /www/cgi-bin
              cat > /www/cgi-bin/page <<'CGI'
              #!/bin/sh
              [ "$MODE" = hang ] && sleep 3600
              printf 'Content-Type: text/plain\r\n\r\nmode=%s\n' "$MODE"
              CGI
              chmod +x /www/cgi-bin/page
              exec httpd -f -p 8080 -h /www
          ports: [{name: http, containerPort: 8080}]
"#;

#[test]
fn cluster_tier_a_get_that_a_replaced_pod_never_answers_moves_to_the_new_pod() {
    let test = "cluster_tier_a_get_that_a_replaced_pod_never_answers_moves_to_the_new_pod";
    let Some((context, ns)) = kind_cluster_test(test, "forward-move") else {
        return;
    };
    ns.apply(HANG);
    ns.kubectl(&["rollout", "status", "deployment/hang", "--timeout=180s"])
        .unwrap();

    let (runtime, client) = kube_client(&context);
    let cancel = CancellationToken::new();
    let opts = ForwardOptions::default();
    let listeners = forward::bind(
        &[forward("deployment/hang", 8080, free_port())],
        &opts,
        &printer(),
    )
    .unwrap();
    let port = listeners.local_ports()[0];
    let serving =
        runtime.spawn(listeners.serve(client, ns.name.clone(), opts, cancel.clone(), printer()));

    // The request reaches the hanging pod; then a redeploy replaces it.
    let asking = std::thread::spawn(move || {
        let asked = Instant::now();
        (get_path(port, "/cgi-bin/page"), asked.elapsed())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(!asking.is_finished(), "the hanging pod answered");
    ns.kubectl(&["set", "env", "deployment/hang", "MODE=answer"])
        .unwrap();
    let (body, took) = asking.join().unwrap();
    assert_eq!(
        body.expect("the request is answered by the new pod"),
        "mode=answer\n"
    );
    // The old pod takes 30 s to stop: the request moved when it started shutting down.
    assert!(took < Duration::from_secs(25), "answered after {took:?}");

    cancel.cancel();
    runtime.block_on(serving).unwrap().unwrap();
}

fn rollout_status(ns: &Namespace) {
    ns.kubectl(&["rollout", "status", "deployment/web", "--timeout=180s"])
        .unwrap_or_else(|e| {
            let pods = ns
                .kubectl(&["get", "pods", "-o", "wide"])
                .unwrap_or_default();
            panic!("deployment/web did not roll out: {e}\n{pods}")
        });
}

/// Requests on new connections, one after the other, until stopped; the failures with their
/// moment.
struct Client {
    stop: Arc<AtomicBool>,
    ok: Arc<Mutex<u64>>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(ports: &[u16], threads_per_port: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(Mutex::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let mut threads = Vec::new();
        for &port in ports {
            for _ in 0..threads_per_port {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                threads.push(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match get(port) {
                            Ok(_) => *ok.lock().unwrap() += 1,
                            Err(e) => failures.lock().unwrap().push(format!(
                                "{:.1}s port {port}: {e}",
                                started.elapsed().as_secs_f64()
                            )),
                        }
                    }
                }));
            }
        }
        Self {
            stop,
            ok,
            failures,
            threads,
        }
    }

    /// Stop and return (requests that succeeded, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let ok = *self.ok.lock().unwrap();
        let failures = self.failures.lock().unwrap().clone();
        (ok, failures)
    }
}

#[test]
fn cluster_tier_forward_serves_through_rollouts_without_a_failed_request() {
    let test = "cluster_tier_forward_serves_through_rollouts_without_a_failed_request";
    let Some((context, ns)) = kind_cluster_test(test, "forward") else {
        return;
    };
    ns.apply(WEB);
    rollout_status(&ns);

    // The Service's local port is taken: the fallback must pick another one.
    let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let forwards = vec![
        forward("service/web", 80, taken),
        forward("deployment/web", 8080, free_port()),
        forward("pod/solo", 8080, free_port()),
    ];
    let opts = ForwardOptions {
        port_fallback: true,
        ready_timeout: Duration::from_secs(90),
    };

    let (runtime, client) = kube_client(&context);
    let cancel = CancellationToken::new();
    let listeners = forward::bind(&forwards, &opts, &printer()).unwrap();
    let ports = listeners.local_ports();
    assert_ne!(ports[0], taken, "the fallback picked the busy port");
    let serving =
        runtime.spawn(listeners.serve(client, ns.name.clone(), opts, cancel.clone(), printer()));

    // Through the Service (its named targetPort), the Deployment and the Pod.
    for port in &ports[..2] {
        let body = get(*port).unwrap_or_else(|e| panic!("GET through port {port}: {e}"));
        assert!(body.starts_with("v1 web-"), "{body:?}");
    }
    assert_eq!(get(ports[2]).unwrap(), "solo\n");
    let timed = Instant::now();
    for _ in 0..10 {
        get(ports[0]).unwrap();
    }
    eprintln!("forward: a request takes {:?}", timed.elapsed() / 10);

    // Rollouts while two clients per forward request without pause.
    let client = Client::start(&ports[..2], 2);
    // Rollouts, and a pod deleted outright (a gap with no Ready pod, where connections wait).
    let restarts: usize = std::env::var("DEVLOOP_TEST_ROLLOUTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let started = Instant::now();
    for _ in 0..restarts {
        // `rollout restart` stamps the template with the time to the second, and refuses a
        // second restart within the same second.
        std::thread::sleep(Duration::from_millis(1100));
        ns.kubectl(&["rollout", "restart", "deployment/web"])
            .unwrap();
        rollout_status(&ns);
    }
    ns.kubectl(&["delete", "pod", "-l", "app=web", "--wait=true"])
        .unwrap();
    rollout_status(&ns);
    // A changed pod template, as a new image tag is.
    ns.kubectl(&["set", "env", "deployment/web", "VERSION=v2"])
        .unwrap();
    rollout_status(&ns);
    let rollouts = restarts + 1;
    // Let the last old pod finish terminating under load too.
    std::thread::sleep(Duration::from_secs(6));
    let (ok, failures) = client.finish();
    eprintln!(
        "forward: {ok} requests, {} failed, during {rollouts} rollouts and a pod deletion in {:.0}s",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during rollouts:\n{}",
        failures.len(),
        ok + failures.len() as u64,
        failures.join("\n")
    );
    assert!(ok > 50, "only {ok} requests in all rollouts");
    let body = get(ports[0]).unwrap();
    assert!(body.starts_with("v2 web-"), "{body:?}");

    // No Ready pod: a new connection waits for one instead of failing.
    ns.kubectl(&["scale", "deployment/web", "--replicas=0"])
        .unwrap();
    ns.kubectl(&[
        "wait",
        "--for=delete",
        "pod",
        "-l",
        "app=web",
        "--timeout=120s",
    ])
    .unwrap();
    let port = ports[0];
    let waiting = std::thread::spawn(move || {
        let asked = Instant::now();
        (get(port), asked.elapsed())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(!waiting.is_finished(), "the request did not wait for a pod");
    ns.kubectl(&["scale", "deployment/web", "--replicas=1"])
        .unwrap();
    let (body, waited) = waiting.join().unwrap();
    let body = body.expect("the waiting request is answered once a pod is Ready");
    assert!(body.starts_with("v2 web-"), "{body:?}");
    assert!(waited >= Duration::from_secs(3), "{waited:?}");

    // Cancelling stops the forwards and frees their ports.
    cancel.cancel();
    runtime
        .block_on(serving)
        .expect("serve does not panic")
        .expect("serve ends cleanly");
    for port in ports {
        assert!(forward::is_free(port), "port {port} still held");
    }
    drop(squatter);
}

#[test]
fn forward_refuses_a_busy_port_naming_its_holder() {
    let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let err = forward::bind(
        &[forward("service/web", 80, taken)],
        &ForwardOptions::default(),
        &printer(),
    )
    .unwrap_err();
    let ForwardError::PortBusy { port, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*port, taken);
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("local port {taken} for service/web is in use by ")),
        "{message}"
    );
    if cfg!(target_os = "linux") {
        // This test process holds it.
        assert!(
            message.contains(&format!("(pid {})", std::process::id())),
            "{message}"
        );
    }
    assert!(err.hint().unwrap().contains("--port-fallback"), "{err:?}");
}

#[test]
fn forward_fallback_skips_busy_ports_and_ports_other_forwards_want() {
    let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let taken = squatter.local_addr().unwrap().port();
    // The next port is another forward's: the fallback must not take it from it.
    let next = taken + 1;
    if !forward::is_free(next) {
        return;
    }
    let opts = ForwardOptions {
        port_fallback: true,
        ..ForwardOptions::default()
    };
    let listeners = forward::bind(
        &[
            forward("service/web", 80, taken),
            forward("deployment/web", 8080, next),
        ],
        &opts,
        &printer(),
    )
    .unwrap();
    let ports = listeners.local_ports();
    assert_eq!(ports[1], next);
    assert!(ports[0] > next, "{ports:?}");
    assert!(!forward::is_free(ports[0]), "the fallback port is held");
}
