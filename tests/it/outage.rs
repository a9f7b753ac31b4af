//! `devloop up` when the Docker engine or the Kubernetes API server goes away and comes back
//! (kind tier). devloop reaches each through a relay the test stops and starts — a unix socket in
//! front of the engine's, a TCP port in front of the API server's — so the real services keep
//! running for everyone else. What is checked: devloop says once what it waits for, keeps the
//! last good version serving, and does the work left pending when the service answers again,
//! without another edit; Ctrl+C stops it in order while it waits.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{
    Background, Namespace, free_port, kind_sample_test, kubectl, use_local_port, wait_http, write,
};

#[derive(Clone)]
enum Addr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn connect(to: &Addr) -> std::io::Result<Self> {
        Ok(match to {
            Addr::Unix(path) => Conn::Unix(UnixStream::connect(path)?),
            Addr::Tcp(addr) => Conn::Tcp(TcpStream::connect(addr)?),
        })
    }

    fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
        })
    }

    fn set_blocking(&self) {
        let _ = match self {
            Conn::Unix(s) => s.set_nonblocking(false),
            Conn::Tcp(s) => s.set_nonblocking(false),
        };
    }

    fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Conn::Unix(s) => s.shutdown(how),
            Conn::Tcp(s) => s.shutdown(how),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A relay from `at` to `to` that the test stops (closing its listener and every connection
/// through it, as a stopped service does) and starts again on the same address.
struct Relay {
    at: Addr,
    to: Addr,
    running: Option<Running>,
}

/// A started relay: its stop flag, the connections through it, its accept thread.
type Running = (Arc<AtomicBool>, Arc<Mutex<Vec<Conn>>>, JoinHandle<()>);

impl Relay {
    fn new(at: Addr, to: Addr) -> Self {
        Self {
            at,
            to,
            running: None,
        }
    }

    fn start(&mut self) {
        let listener: Box<dyn Fn() -> std::io::Result<Conn> + Send> = match &self.at {
            Addr::Unix(path) => {
                let _ = std::fs::remove_file(path);
                let l = UnixListener::bind(path).unwrap();
                l.set_nonblocking(true).unwrap();
                Box::new(move || l.accept().map(|(s, _)| Conn::Unix(s)))
            }
            Addr::Tcp(addr) => {
                // std sets SO_REUSEADDR, so the port is free again right after a stop.
                let l = TcpListener::bind(addr).unwrap();
                l.set_nonblocking(true).unwrap();
                Box::new(move || l.accept().map(|(s, _)| Conn::Tcp(s)))
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let (to, flag, open) = (self.to.clone(), stop.clone(), conns.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let client = match listener() {
                    Ok(client) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                client.set_blocking();
                let Ok(upstream) = Conn::connect(&to) else {
                    client.shutdown(Shutdown::Both);
                    continue;
                };
                let mut open = open.lock().unwrap();
                for (from, into) in [(&client, &upstream), (&upstream, &client)] {
                    let (Ok(mut from), Ok(mut into)) = (from.try_clone(), into.try_clone()) else {
                        continue;
                    };
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        into.shutdown(Shutdown::Write);
                    });
                }
                open.push(client);
                open.push(upstream);
            }
        });
        self.running = Some((stop, conns, thread));
    }

    fn stop(&mut self) {
        let Some((stop, conns, thread)) = self.running.take() else {
            return;
        };
        stop.store(true, Ordering::SeqCst);
        let _ = thread.join();
        for conn in conns.lock().unwrap().iter() {
            conn.shutdown(Shutdown::Both);
        }
        if let Addr::Unix(path) = &self.at {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The engine's socket, as the docker CLI would find it.
fn docker_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

fn start_up(dir: &Path, ns: &Namespace, port: u16, env: &[(&str, &str)]) -> Background {
    use_local_port(dir, port);
    let up = Background::spawn(
        dir,
        &["--context", &ns.context, "-n", &ns.name, "up", "--no-logs"],
        env,
    );
    let started = up.wait_log(0, "watching ", Duration::from_secs(180));
    assert!(started.contains("watching "), "{started}");
    assert!(
        wait_http(port, "/", 200, "<h1>minimal</h1>", Duration::from_secs(60)),
        "{}",
        up.log()
    );
    up
}

fn edit_page(dir: &Path, heading: &str) {
    let page = dir.join("www/index.html");
    let text = std::fs::read_to_string(&page).unwrap();
    let start = text.find("<h1>").unwrap();
    let end = text.find("</h1>").unwrap() + "</h1>".len();
    let text = format!("{}<h1>{heading}</h1>{}", &text[..start], &text[end..]);
    std::fs::write(page, text).unwrap();
}

fn append(dir: &Path, rel: &str, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(rel))
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn cluster_tier_a_change_made_while_docker_is_away_is_built_when_it_returns() {
    let test = "cluster_tier_a_change_made_while_docker_is_away_is_built_when_it_returns";
    let Some((_, ns, project)) = kind_sample_test(test, "engine", "minimal") else {
        return;
    };
    let dir = project.path();
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("docker.sock");
    let host = format!("unix://{}", socket.display());
    let mut relay = Relay::new(Addr::Unix(socket), Addr::Unix(docker_socket()));
    relay.start();
    let port = free_port();
    let mut up = start_up(dir, &ns, port, &[("DOCKER_HOST", &host)]);

    // Docker goes away; then a change only a rebuild can take (the Dockerfile and the page).
    relay.stop();
    let mark = up.log().len();
    edit_page(dir, "after the outage");
    append(dir, "Dockerfile", "LABEL devloop.test/outage=\"1\"\n");
    let tail = up.wait_log(mark, "retrying every", Duration::from_secs(60));
    assert!(
        tail.contains(&format!(
            "warning: rebuilding minimal-web failed: Docker engine unreachable at {host} ("
        )) && tail.contains("; retrying every 2s until it returns (backing off to 30s)"),
        "{tail}"
    );
    // It waits without repeating itself, and the last good version keeps serving.
    std::thread::sleep(Duration::from_secs(7));
    let tail = up.log()[mark..].to_string();
    assert_eq!(tail.matches("unreachable at").count(), 1, "{tail}");
    assert!(!tail.contains("error:"), "{tail}");
    assert!(wait_http(
        port,
        "/",
        200,
        "<h1>minimal</h1>",
        Duration::from_secs(5)
    ));

    // Docker returns: the pending rebuild runs without another edit.
    relay.start();
    let returned = Instant::now();
    let tail = up.wait_log(mark, "is back after", Duration::from_secs(60));
    let noticed = returned.elapsed();
    assert!(
        tail.contains(&format!("Docker engine at {host} is back after "))
            && tail.contains(" → rebuilding minimal-web\n"),
        "{tail}"
    );
    let tail = up.wait_log(mark, "redeployed profile", Duration::from_secs(180));
    assert!(tail.contains("built and loaded minimal-web in "), "{tail}");
    assert!(
        wait_http(
            port,
            "/",
            200,
            "<h1>after the outage</h1>",
            Duration::from_secs(30)
        ),
        "{}",
        up.log()
    );
    eprintln!(
        "MEASURE docker_back_noticed_ms={} served_after_return_ms={}",
        noticed.as_millis(),
        returned.elapsed().as_millis()
    );

    // Ctrl+C while it waits for Docker: an orderly stop all the same.
    relay.stop();
    let mark = up.log().len();
    append(dir, "Dockerfile", "LABEL devloop.test/outage=\"2\"\n");
    let tail = up.wait_log(mark, "retrying every", Duration::from_secs(60));
    assert!(tail.contains("retrying every"), "{tail}");
    let stopping = Instant::now();
    up.stop_in_order(2);
    eprintln!(
        "MEASURE stop_while_waiting_ms={}",
        stopping.elapsed().as_millis()
    );
}

#[test]
fn cluster_tier_a_sync_and_a_deploy_wait_for_the_api_server_and_run_when_it_returns() {
    let test = "cluster_tier_a_sync_and_a_deploy_wait_for_the_api_server_and_run_when_it_returns";
    let Some((context, ns, project)) = kind_sample_test(test, "apiserver", "minimal") else {
        return;
    };
    let dir = project.path();
    // The test's kubeconfig: the same cluster and credentials, its server behind the relay.
    let view = kubectl(&context, &["config", "view", "--minify", "--flatten"]).unwrap();
    let server = view
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("a server in the kubeconfig")
        .trim()
        .to_string();
    let upstream: SocketAddr = server
        .strip_prefix("https://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("the test needs a server at https://IP:PORT, not {server}"));
    let relayed: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let relayed_url = format!("https://{relayed}");
    let configs = tempfile::tempdir().unwrap();
    let kubeconfig = configs.path().join("kubeconfig");
    std::fs::write(&kubeconfig, view.replace(&server, &relayed_url)).unwrap();
    let mut relay = Relay::new(Addr::Tcp(relayed), Addr::Tcp(upstream));
    relay.start();
    let port = free_port();
    let kubeconfig = kubeconfig.display().to_string();
    let mut up = start_up(dir, &ns, port, &[("KUBECONFIG", &kubeconfig)]);

    // The API server goes away; then a page the sync rules cover.
    relay.stop();
    let mark = up.log().len();
    edit_page(dir, "after the api server");
    let tail = up.wait_log(mark, "retrying every", Duration::from_secs(60));
    assert!(
        tail.contains(&format!(
            "warning: minimal-web: www/index.html changed → sync failed: Kubernetes API server unreachable at {relayed_url} ("
        )) && tail.contains("; retrying every 2s until it returns (backing off to 30s)"),
        "{tail}"
    );
    std::thread::sleep(Duration::from_secs(5));
    let tail = up.log()[mark..].to_string();
    assert_eq!(tail.matches("unreachable at").count(), 1, "{tail}");
    assert!(
        !tail.contains("error:") && !tail.contains("rebuilding"),
        "{tail}"
    );

    // It returns: the held-back sync runs without another edit.
    relay.start();
    let returned = Instant::now();
    let tail = up.wait_log(mark, "synced to", Duration::from_secs(60));
    assert!(
        tail.contains(&format!(
            "Kubernetes API server at {relayed_url} is back after "
        )) && tail.contains(" → syncing minimal-web\n")
            && tail.contains("minimal-web: www/index.html changed → synced to 1 pod in "),
        "{tail}"
    );
    assert!(
        wait_http(
            port,
            "/",
            200,
            "<h1>after the api server</h1>",
            Duration::from_secs(30)
        ),
        "{}",
        up.log()
    );
    eprintln!(
        "MEASURE api_back_to_synced_page_ms={}",
        returned.elapsed().as_millis()
    );

    // Away again, and a new manifest: the redeploy waits, then applies it.
    relay.stop();
    let mark = up.log().len();
    write(
        dir,
        "k8s/extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  added: while-away\n",
    );
    let tail = up.wait_log(mark, "retrying every", Duration::from_secs(120));
    assert!(
        tail.contains(&format!(
            "warning: redeploying failed: Kubernetes API server unreachable at {relayed_url} ("
        )),
        "{tail}"
    );
    relay.start();
    let tail = up.wait_log(mark, "redeployed profile", Duration::from_secs(120));
    assert!(
        tail.contains(" is back after ") && tail.contains(" → redeploying profile `dev`\n"),
        "{tail}"
    );
    assert!(
        ns.kubectl(&["get", "configmap", "extra"]).is_ok(),
        "{}",
        up.log()
    );
    assert!(wait_http(
        port,
        "/",
        200,
        "<h1>after the api server</h1>",
        Duration::from_secs(30)
    ));
    assert_eq!(up.stop(), Some(0), "{}", up.log());
}
