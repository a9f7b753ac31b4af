//! Port forwarding: devloop's own listeners on 127.0.0.1 that send every new connection to a
//! Ready pod behind a Service, Deployment, StatefulSet or Pod, through the API server's
//! portforward.
//!
//! Owns the local side (is a port free, who holds it, binding with the fallback to the next free
//! port: `local`), the view of which pods may take a connection (`target`, kept current by
//! watches so picking a pod is a lookup) and the relay of one connection (`relay`: a pod that
//! cannot be reached costs a retry on another pod, not a failed connection; with no Ready pod the
//! connection waits for one). It does not deploy, wait for rollouts or change the cluster.
//!
//! `up` calls [`bind`] before it deploys, so a busy port fails before anything is applied, then
//! [`Listeners::serve`] until its cancellation token fires; [`run`] does both.

mod local;
mod relay;
mod target;

pub use local::{is_free, owner};

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::PortForward;
use crate::output::Printer;

/// How a forward behaves, resolved from flags and `devloop.yaml`.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    /// When a local port is taken, forward on the next free one (and warn) instead of failing.
    pub port_fallback: bool,
    /// How long a new connection waits for a Ready pod before it is closed.
    pub ready_timeout: Duration,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        Self {
            port_fallback: false,
            ready_timeout: Duration::from_secs(60),
        }
    }
}

/// How far past a busy port the fallback looks for a free one.
const FALLBACK_RANGE: u16 = 100;

/// Starting the forwards failed; nothing listens. (A failed *connection* is a
/// [`ConnectionError`]: reported, and forwarding goes on.)
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("local port {port} for {target} is in use by {}", holder.as_deref().unwrap_or("another process"))]
    PortBusy {
        port: u16,
        target: String,
        /// "name (pid N)" when the OS shows who listens.
        holder: Option<String>,
    },
    #[error("no free local port for {target} between {first} and {last}")]
    NoFreePort {
        target: String,
        first: u16,
        last: u16,
    },
    #[error("failed to listen on 127.0.0.1:{port} for {target}")]
    Listen {
        port: u16,
        target: String,
        #[source]
        source: std::io::Error,
    },
}

impl ForwardError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ForwardError::PortBusy { holder, .. } => Some(format!(
                "stop {}, set another `localPort:` for this forward in devloop.yaml, or pass `--port-fallback` to use the next free port",
                holder.as_deref().unwrap_or("the process holding it")
            )),
            ForwardError::NoFreePort { .. } => {
                Some("set a free `localPort:` for this forward in devloop.yaml".into())
            }
            ForwardError::Listen { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Some("ports below 1024 need privileges: use a `localPort:` of 1024 or more".into())
            }
            ForwardError::Listen { .. } => None,
        }
    }
}

/// One connection could not be forwarded; the client's connection is closed, the forward goes on.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("no Ready pod for {target} after {}s (waited for {waiting_for})", waited.as_secs())]
    NoReadyPod {
        target: String,
        waited: Duration,
        waiting_for: String,
    },
    #[error("no pod of {target} could be reached in {}s; the last try: {last}", waited.as_secs())]
    Unreachable {
        target: String,
        waited: Duration,
        last: String,
    },
    #[error("{target} has no selector, so there is no pod to forward to")]
    NoSelector { target: String },
    #[error("the selector of {target} cannot be used")]
    InvalidSelector {
        target: String,
        #[source]
        source: kube::core::ParseExpressionError,
    },
    #[error("{target} has no port {port}")]
    NoServicePort {
        target: String,
        port: u16,
        available: Vec<i32>,
    },
    #[error("no Ready pod of {target} has a container port named `{name}`")]
    NoNamedPort { target: String, name: String },
    #[error("not allowed to forward to pod {pod} of {target}")]
    Forbidden {
        target: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("pod {pod} of {target} dropped a connection: {message}")]
    Dropped {
        target: String,
        pod: String,
        message: String,
    },
}

impl ConnectionError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ConnectionError::NoReadyPod { target, .. } => Some(format!(
                "see why with `kubectl describe {target}` and `kubectl get pods`"
            )),
            ConnectionError::Unreachable { .. } => None,
            ConnectionError::NoSelector { .. } => {
                Some("forward to the Deployment or a Service that selects its pods".into())
            }
            ConnectionError::InvalidSelector { .. } => None,
            ConnectionError::NoServicePort { available, .. } => Some(format!(
                "a forward's `port` is the Service's port: one of {}",
                available
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            ConnectionError::NoNamedPort { name, .. } => Some(format!(
                "name the container port in the pod template (`ports: [{{name: {name}, containerPort: …}}]`), or give the Service a numeric targetPort"
            )),
            ConnectionError::Forbidden { .. } => {
                Some("your kube user needs `create` on `pods/portforward` in this namespace".into())
            }
            ConnectionError::Dropped { .. } => None,
        }
    }
}

/// `service/web`, as the user wrote it in `portForward[].resource`.
fn describe(forward: &PortForward) -> String {
    format!("{}/{}", forward.kind, forward.name)
}

/// The listeners of every forward: bound, not yet serving.
pub struct Listeners {
    bound: Vec<(PortForward, local::Listening)>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.bound.iter().map(|(fw, l)| (describe(fw), l.port)))
            .finish()
    }
}

/// Bind a listener on 127.0.0.1 for each forward (and on [::1] where the host has IPv6).
///
/// A busy port is a [`ForwardError::PortBusy`] naming its holder, or with
/// `opts.port_fallback` the next free port — skipping ports other forwards asked for — with a
/// warning. Nothing is bound when this fails.
pub fn bind(
    forwards: &[PortForward],
    opts: &ForwardOptions,
    printer: &Printer,
) -> Result<Listeners, ForwardError> {
    let mut bound: Vec<(PortForward, local::Listening)> = Vec::new();
    for forward in forwards {
        let target = describe(forward);
        let wanted = forward.local_port;
        let listening = match local::listen(wanted) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let holder = owner(wanted);
                if !opts.port_fallback {
                    return Err(ForwardError::PortBusy {
                        port: wanted,
                        target,
                        holder,
                    });
                }
                let listening = fallback(forwards, &bound, wanted, &target)?;
                printer.warn(&format!(
                    "local port {wanted} is in use by {}: forwarding {target}:{} on port {} instead — open http://127.0.0.1:{}",
                    holder.as_deref().unwrap_or("another process"),
                    forward.port,
                    listening.port,
                    listening.port,
                ));
                listening
            }
            Err(source) => {
                return Err(ForwardError::Listen {
                    port: wanted,
                    target,
                    source,
                });
            }
        };
        bound.push((forward.clone(), listening));
    }
    Ok(Listeners { bound })
}

/// The first port after `wanted` that is free and that no other forward asks for.
fn fallback(
    forwards: &[PortForward],
    bound: &[(PortForward, local::Listening)],
    wanted: u16,
    target: &str,
) -> Result<local::Listening, ForwardError> {
    let last = wanted.saturating_add(FALLBACK_RANGE);
    let reserved = |port: u16| {
        forwards.iter().any(|f| f.local_port == port) || bound.iter().any(|(_, l)| l.port == port)
    };
    (wanted.saturating_add(1)..=last)
        .filter(|port| !reserved(*port))
        .find_map(|port| local::listen(port).ok())
        .ok_or_else(|| ForwardError::NoFreePort {
            target: target.to_string(),
            first: wanted,
            last,
        })
}

impl Listeners {
    /// The local port of each forward, in the order given to [`bind`]; it differs from the
    /// forward's `local_port` only after a fallback.
    pub fn local_ports(&self) -> Vec<u16> {
        self.bound.iter().map(|(_, l)| l.port).collect()
    }

    /// Accept connections and forward each to a Ready pod until `cancel`; returns once every
    /// connection and watch has stopped. Prints one line per forward when it listens.
    pub async fn serve(
        self,
        client: kube::Client,
        namespace: String,
        opts: ForwardOptions,
        cancel: CancellationToken,
        printer: Printer,
    ) -> Result<(), ForwardError> {
        if self.bound.is_empty() {
            return Ok(());
        }
        let tasks = TaskTracker::new();
        let changed = Arc::new(tokio::sync::Notify::new());
        let pods = target::watch_pods(&client, &namespace, &changed, &tasks, &cancel, printer);
        for (forward, listening) in self.bound {
            let label = describe(&forward);
            let mut listeners = Vec::new();
            for std_listener in [Some(listening.v4), listening.v6].into_iter().flatten() {
                let listener = std_listener
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpListener::from_std(std_listener))
                    .map_err(|source| ForwardError::Listen {
                        port: listening.port,
                        target: label.clone(),
                        source,
                    })?;
                listeners.push(listener);
            }
            let target = Arc::new(target::Target::new(
                &client,
                &namespace,
                forward.clone(),
                pods.clone(),
                changed.clone(),
                &tasks,
                &cancel,
                printer,
            ));
            printer.info(&format!(
                "forwarding http://127.0.0.1:{} → {label}:{}",
                listening.port, forward.port
            ));
            if let Some(holder) = &listening.v6_holder {
                printer.warn(&format!(
                    "[::1]:{} is held by {holder}: `localhost:{}` may reach it instead of {label}; use 127.0.0.1",
                    listening.port, listening.port
                ));
            }
            for listener in listeners {
                tasks.spawn(accept(
                    listener,
                    target.clone(),
                    opts.clone(),
                    tasks.clone(),
                    cancel.clone(),
                ));
            }
        }
        tasks.close();
        tasks.wait().await;
        Ok(())
    }
}

/// Bind every forward and serve it until `cancel` (see [`bind`] and [`Listeners::serve`]).
pub async fn run(
    client: kube::Client,
    namespace: String,
    forwards: Vec<PortForward>,
    opts: ForwardOptions,
    cancel: CancellationToken,
    printer: Printer,
) -> Result<(), ForwardError> {
    bind(&forwards, &opts, &printer)?
        .serve(client, namespace, opts, cancel, printer)
        .await
}

/// Accept connections on one listener until `cancel`, each relayed in its own task.
async fn accept(
    listener: tokio::net::TcpListener,
    target: Arc<target::Target>,
    opts: ForwardOptions,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                let target = target.clone();
                let opts = opts.clone();
                let cancel = cancel.clone();
                tasks.spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        result = relay::relay(stream, &target, &opts) => {
                            if let Err(err) = result {
                                target.report(&err);
                            }
                        }
                    }
                });
            }
            Err(err) => {
                // Out of file descriptors and the like: transient, so pause rather than spin.
                tracing::warn!("accepting a connection for {}: {err}", target.label);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
