//! One connection: pick a pod, open a portforward to it through the API server, copy bytes both
//! ways.
//!
//! Until the pod sends its first byte, what the client sent is kept: when the pod turns out not
//! to be reachable (it was just stopped, its sandbox is gone, its server does not listen yet) the
//! connection is replayed on another pod — nothing reached the old one, so nothing runs twice —
//! and the client never sees the failure. After the first byte the connection is the pod's.
//!
//! A pod that shuts down (a redeploy replaced it) may take a request and never answer: the dev
//! server was killed, or containerd passes its close on a second late. A request that is safe to
//! run twice — HTTP GET, HEAD or OPTIONS, the methods RFC 9110 calls safe, and what proxies such as
//! nginx retry — is moved to another pod when its pod starts shutting down before answering, so a
//! save in the inner loop never shows up as a failed page load.
//!
//! The portforward protocol cannot half-close: closing our side of the stream also closes the
//! pod's answer. So a client's end of input is not passed on; the connection ends when the pod
//! closes it, when writing to the client fails, or after [`LINGER`] of silence from the pod once
//! the client has stopped sending. For the same reason containerd keeps a connection open for up
//! to a second after the pod's server closed it (it waits for our side to close first): clients
//! that read until the close see that second, those that read `Content-Length` (browsers) do not.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::target::{Endpoint, Target};
use super::{ConnectionError, ForwardOptions};

/// What the client may send before the pod answers and still be replayed on another pod.
const REPLAY_LIMIT: usize = 256 * 1024;

/// How long a connection whose client stopped sending stays open without a byte from the pod.
const LINGER: Duration = Duration::from_secs(30);

/// How long opening a portforward through the API server may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

const BUFFER: usize = 16 * 1024;

/// The client's side of a connection across attempts.
#[derive(Default)]
struct Client {
    /// Everything sent to the pod so far, while it can still be replayed.
    sent: Vec<u8>,
    /// More than [`REPLAY_LIMIT`] was sent: this connection can no longer move to another pod.
    too_long: bool,
    /// The client has stopped sending.
    done: bool,
}

enum Attempt {
    /// The connection ran on this pod and is over.
    Done,
    /// The pod was not reached; the connection may go elsewhere.
    Unreached(String),
    Failed(ConnectionError),
}

/// Relay `stream` to a Ready pod of `target`, waiting up to `opts.ready_timeout` for one.
pub(super) async fn relay(
    mut stream: TcpStream,
    target: &Target,
    opts: &ForwardOptions,
) -> Result<(), ConnectionError> {
    let started = Instant::now();
    let deadline = started + opts.ready_timeout;
    let mut client = Client::default();
    let mut tried = HashSet::new();
    let mut last_failure: Option<String> = None;
    loop {
        let endpoint = match target.pick(&mut tried, deadline, started).await {
            Ok(endpoint) => endpoint,
            // Pods were there but none could be reached: that is the story, not "no pod".
            Err(ConnectionError::NoReadyPod { target, waited, .. }) if last_failure.is_some() => {
                return Err(ConnectionError::Unreachable {
                    target,
                    waited,
                    last: last_failure.unwrap_or_default(),
                });
            }
            Err(err) => return Err(err),
        };
        match attempt(&mut stream, target, &endpoint, &mut client).await {
            Attempt::Done => return Ok(()),
            Attempt::Failed(err) => return Err(err),
            Attempt::Unreached(why) => {
                tracing::debug!(
                    "{}: pod {} not reached, trying another: {why}",
                    target.label,
                    endpoint.pod
                );
                if client.too_long {
                    return Err(ConnectionError::Dropped {
                        target: target.label.clone(),
                        pod: endpoint.pod,
                        message: why,
                    });
                }
                tried.insert(endpoint.pod);
                last_failure = Some(why);
            }
        }
    }
}

/// One try of a connection on `endpoint`.
async fn attempt(
    stream: &mut TcpStream,
    target: &Target,
    endpoint: &Endpoint,
    client: &mut Client,
) -> Attempt {
    // An API server that does not answer must not hold the connection past its deadline.
    let ports = [endpoint.port];
    let opening = target.pods_api().portforward(&endpoint.pod, &ports);
    let opened = match tokio::time::timeout(OPEN_TIMEOUT, opening).await {
        Ok(opened) => opened,
        Err(_) => return Attempt::Unreached("the API server did not open the portforward".into()),
    };
    let mut forwarder = match opened {
        Ok(f) => f,
        Err(source) if forbidden(&source) => {
            return Attempt::Failed(ConnectionError::Forbidden {
                target: target.label.clone(),
                pod: endpoint.pod.clone(),
                source,
            });
        }
        // Gone, not running yet, or the API server hiccuped: nothing was sent.
        Err(err) => return Attempt::Unreached(err.to_string()),
    };
    let (Some(pod_stream), Some(error)) = (
        forwarder.take_stream(endpoint.port),
        forwarder.take_error(endpoint.port),
    ) else {
        forwarder.abort();
        return Attempt::Unreached("the portforward has no stream for the port".into());
    };
    let outcome = copy(stream, pod_stream, error, target, endpoint, client).await;
    // Our halves are dropped by now, which ends the forwarder; make sure its socket goes too.
    forwarder.abort();
    outcome
}

async fn copy(
    stream: &mut TcpStream,
    pod_stream: tokio::io::DuplexStream,
    error: impl Future<Output = Option<String>>,
    target: &Target,
    endpoint: &Endpoint,
    client: &mut Client,
) -> Attempt {
    let (mut pod_r, mut pod_w) = tokio::io::split(pod_stream);
    let (mut client_r, mut client_w) = stream.split();
    futures_util::pin_mut!(error);
    let mut error_open = true;
    let mut answered = false;

    if !client.sent.is_empty() && pod_w.write_all(&client.sent).await.is_err() {
        return Attempt::Unreached("the portforward closed before the replay".into());
    }
    let mut from_client = vec![0u8; BUFFER];
    let mut from_pod = vec![0u8; BUFFER];
    loop {
        tokio::select! {
            read = client_r.read(&mut from_client), if !client.done => match read {
                Ok(0) => client.done = true,
                Ok(n) => {
                    if !answered {
                        keep(client, &from_client[..n]);
                    }
                    // When this fails the pod side is gone, and its read below says how.
                    let _ = pod_w.write_all(&from_client[..n]).await;
                }
                // The client reset the connection: nobody is left to answer.
                Err(_) => return Attempt::Done,
            },
            read = pod_r.read(&mut from_pod) => match read {
                Ok(0) | Err(_) if answered => break,
                Ok(0) | Err(_) => {
                    // Closed before answering. The kubelet's reason, if any, arrived before the
                    // close (one ordered websocket), so it is ready now.
                    return match error.as_mut().now_or_never().flatten() {
                        Some(message) => unanswered(message, target, endpoint, client),
                        None if movable(client) && target.leaving(&endpoint.pod) => {
                            Attempt::Unreached("the pod closed the connection as it shut down".into())
                        }
                        None => Attempt::Done,
                    };
                }
                Ok(n) => {
                    if !answered {
                        answered = true;
                        client.sent = Vec::new();
                        target.reached(&endpoint.pod);
                    }
                    if client_w.write_all(&from_pod[..n]).await.is_err() {
                        return Attempt::Done;
                    }
                }
            },
            message = error.as_mut(), if error_open => match message {
                Some(message) if !answered => {
                    return unanswered(message, target, endpoint, client);
                }
                Some(message) => {
                    tracing::debug!("{}: pod {}: {message}", target.label, endpoint.pod);
                    error_open = false;
                }
                None => error_open = false,
            },
            () = target.changed(), if !answered && movable(client) => {
                if target.leaving(&endpoint.pod) {
                    return Attempt::Unreached("the pod is shutting down".into());
                }
            }
            () = tokio::time::sleep(LINGER), if client.done => break,
        }
    }
    let _ = client_w.shutdown().await;
    Attempt::Done
}

/// Keep what the client sent, as long as it can be replayed.
fn keep(client: &mut Client, bytes: &[u8]) {
    if client.too_long {
        return;
    }
    if client.sent.len() + bytes.len() > REPLAY_LIMIT {
        client.too_long = true;
        client.sent = Vec::new();
    } else {
        client.sent.extend_from_slice(bytes);
    }
}

/// Whether what the client sent so far may run on another pod as well: a whole safe HTTP request
/// (GET, HEAD, OPTIONS), still kept. Anything else may have changed something on the pod.
fn movable(client: &Client) -> bool {
    const SAFE: [&[u8]; 3] = [b"GET ", b"HEAD ", b"OPTIONS "];
    !client.too_long && SAFE.iter().any(|m| client.sent.starts_with(m))
}

/// The kubelet reported `message` before the pod answered.
fn unanswered(message: String, target: &Target, endpoint: &Endpoint, client: &Client) -> Attempt {
    if never_connected(&message) && !client.too_long {
        Attempt::Unreached(message)
    } else {
        Attempt::Failed(ConnectionError::Dropped {
            target: target.label.clone(),
            pod: endpoint.pod.clone(),
            message,
        })
    }
}

/// Whether the kubelet's error says no connection to the pod's port was made, so replaying on
/// another pod cannot run anything twice. These are containerd's and CRI-O's words for a refused
/// dial or a sandbox that is gone; anything else (a reset mid-request) is not retried.
fn never_connected(message: &str) -> bool {
    const PATTERNS: [&str; 6] = [
        "connection refused",
        "failed to connect",
        "failed to find sandbox",
        "not found",
        "no such",
        "not running",
    ];
    let message = message.to_ascii_lowercase();
    PATTERNS.iter().any(|p| message.contains(p))
}

/// The API server refused us (RBAC), as opposed to the pod being unavailable.
fn forbidden(err: &kube::Error) -> bool {
    use kube::client::UpgradeConnectionError;
    match err {
        kube::Error::Api(status) => status.code == 401 || status.code == 403,
        kube::Error::UpgradeConnection(UpgradeConnectionError::ProtocolSwitch(code)) => {
            code.as_u16() == 401 || code.as_u16() == 403
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_dial_that_never_connected_is_replayed() {
        assert!(never_connected(
            "error forwarding port 8080 to pod 1f2e, uid : failed to execute portforward in network namespace \"/var/run/netns/cni-1\": failed to connect to localhost:8080 inside namespace \"1f2e\", IPv4: dial tcp4 127.0.0.1:8080: connect: connection refused IPv6 dial tcp6 [::1]:8080: connect: connection refused"
        ));
        assert!(never_connected(
            "error forwarding port 8080 to pod 1f2e, uid : failed to find sandbox \"1f2e\" in store: not found"
        ));
        assert!(!never_connected(
            "error forwarding port 8080 to pod 1f2e, uid : read tcp4 127.0.0.1:51234->127.0.0.1:8080: read: connection reset by peer"
        ));
    }

    #[test]
    fn only_safe_http_requests_move_off_a_pod_that_shuts_down() {
        let sent = |bytes: &[u8]| Client {
            sent: bytes.to_vec(),
            ..Client::default()
        };
        assert!(movable(&sent(b"GET /albums/ HTTP/1.1\r\nHost: x\r\n\r\n")));
        assert!(movable(&sent(b"HEAD / HTTP/1.1\r\n\r\n")));
        assert!(!movable(&sent(b"POST /albums/ HTTP/1.1\r\n\r\ntitle=x")));
        assert!(!movable(&sent(b"DELETE /albums/1 HTTP/1.1\r\n\r\n")));
        // Not HTTP (a database's startup message), or nothing sent yet.
        assert!(!movable(&sent(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")));
        assert!(!movable(&sent(b"")));
        let mut long = sent(b"GET / HTTP/1.1\r\n");
        keep(&mut long, &vec![b'a'; REPLAY_LIMIT]);
        assert!(!movable(&long));
    }

    #[test]
    fn a_long_request_is_no_longer_replayable() {
        let mut client = Client::default();
        keep(&mut client, b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(client.sent, b"GET / HTTP/1.0\r\n\r\n");
        keep(&mut client, &vec![0u8; REPLAY_LIMIT]);
        assert!(client.too_long);
        assert!(client.sent.is_empty());
    }
}
