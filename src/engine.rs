//! The connection to the Docker engine.
//!
//! One place decides how devloop reaches Docker (`DOCKER_HOST`, else the local socket), how long
//! it waits, and what to tell the user when the engine is not there.

use std::time::Duration;

use bollard::Docker;

/// How long to wait for the engine to answer a ping before calling it unreachable.
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot use Docker engine address `{host}`")]
    Address {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("Docker engine at {host} is not reachable")]
    Unreachable {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("Docker engine at {host} did not answer within {}s", PING_TIMEOUT.as_secs())]
    Timeout { host: String },
}

impl EngineError {
    pub fn hint(&self) -> String {
        match self {
            EngineError::Address { .. } => {
                "set DOCKER_HOST to unix:///path/to/docker.sock or tcp://HOST:PORT, or unset it".into()
            }
            _ => "start Docker (`sudo systemctl start docker`, or `sudo dockerd &`), or point DOCKER_HOST at a running engine".into(),
        }
    }
}

/// The engine address devloop uses, for messages.
pub fn host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string())
}

/// A connected engine and its version.
pub struct Engine {
    pub docker: Docker,
    pub version: String,
    pub api_version: String,
}

/// Connect and ping the engine, within [`PING_TIMEOUT`].
pub async fn connect() -> Result<Engine, EngineError> {
    let host = host();
    let docker = Docker::connect_with_defaults().map_err(|source| match source {
        // A missing socket is an engine that is not running, not a bad address.
        bollard::errors::Error::SocketNotFoundError(_) => EngineError::Unreachable {
            host: host.clone(),
            source,
        },
        source => EngineError::Address {
            host: host.clone(),
            source,
        },
    })?;
    let version = tokio::time::timeout(PING_TIMEOUT, docker.version())
        .await
        .map_err(|_| EngineError::Timeout { host: host.clone() })?
        .map_err(|source| EngineError::Unreachable {
            host: host.clone(),
            source,
        })?;
    Ok(Engine {
        docker,
        version: version.version.unwrap_or_else(|| "unknown".into()),
        api_version: version.api_version.unwrap_or_else(|| "unknown".into()),
    })
}
