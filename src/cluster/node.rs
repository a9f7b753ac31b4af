//! Running commands inside node containers (kind, minikube) through the Docker API.
//!
//! Node-side work — asking containerd what it holds, importing images — is a command run with
//! `docker exec`. This module owns that: output capture, exit codes, streaming stdin, and telling
//! a node that vanished from a command that failed.

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("node container `{node}` is gone")]
    NodeGone { node: String },
    #[error("`{command}` failed in node `{node}` (exit {code}): {output}")]
    Failed {
        node: String,
        command: String,
        code: i64,
        output: String,
    },
    #[error("failed to run `{command}` in node `{node}`")]
    Engine {
        node: String,
        command: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("failed to send data to `{command}` in node `{node}`")]
    Input {
        node: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
}

/// Run `cmd` in `node` and return its stdout; a non-zero exit is an error with the output.
pub async fn exec(docker: &Docker, node: &str, cmd: &[&str]) -> Result<String, ExecError> {
    exec_with_input(
        docker,
        node,
        cmd,
        None::<futures_util::stream::Empty<std::io::Result<Bytes>>>,
    )
    .await
}

/// Run `cmd` in `node`, writing `input` to its stdin, and return its stdout.
pub async fn exec_with_input<S>(
    docker: &Docker,
    node: &str,
    cmd: &[&str],
    input: Option<S>,
) -> Result<String, ExecError>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    let command = cmd.join(" ");
    let engine = |source: bollard::errors::Error| match &source {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        } => ExecError::NodeGone {
            node: node.to_string(),
        },
        _ => ExecError::Engine {
            node: node.to_string(),
            command: command.clone(),
            source,
        },
    };
    let created = docker
        .create_exec(
            node,
            CreateExecOptions {
                cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                attach_stdin: Some(input.is_some()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(engine)?;
    let started = docker.start_exec(&created.id, None).await.map_err(engine)?;
    let StartExecResults::Attached {
        mut output,
        input: mut stdin,
    } = started
    else {
        unreachable!("exec was created attached");
    };

    // Feed stdin while collecting output, so neither side can block the other.
    let feed = async {
        if let Some(mut data) = input {
            while let Some(chunk) = data.next().await {
                stdin.write_all(&chunk?).await?;
            }
            stdin.shutdown().await?;
        }
        Ok::<(), std::io::Error>(())
    };
    let collect = async {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        while let Some(item) = output.next().await {
            match item.map_err(engine)? {
                bollard::container::LogOutput::StdOut { message } => {
                    stdout.extend_from_slice(&message)
                }
                bollard::container::LogOutput::StdErr { message } => {
                    stderr.extend_from_slice(&message)
                }
                _ => {}
            }
        }
        Ok::<_, ExecError>((stdout, stderr))
    };
    let (fed, collected) = tokio::join!(feed, collect);
    let (stdout, stderr) = collected?;
    let inspect = docker.inspect_exec(&created.id).await.map_err(engine)?;
    let code = inspect.exit_code.unwrap_or(-1);
    if let Err(source) = fed {
        // A command that exits early closes stdin; its exit code says more than the pipe error.
        if code == 0 {
            return Err(ExecError::Input {
                node: node.to_string(),
                command,
                source,
            });
        }
    }
    if code != 0 {
        let mut text = String::from_utf8_lossy(&stderr).trim().to_string();
        if text.is_empty() {
            text = String::from_utf8_lossy(&stdout).trim().to_string();
        }
        return Err(ExecError::Failed {
            node: node.to_string(),
            command,
            code,
            output: text,
        });
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}
