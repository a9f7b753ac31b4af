//! Building artifacts with the Docker Engine API.
//!
//! The context is streamed to the engine as a tar of exactly the files the digest covered, so
//! the tag always describes what was built. An image whose tag already exists is not built again
//! (the tag is a digest of every input), which also holds after devloop restarts. Artifacts build
//! concurrently; the engine serialises what it must.
//!
//! BuildKit is the builder unless `DOCKER_BUILDKIT=0` says otherwise or the engine predates it:
//! it caches by content and costs nothing for metadata steps (`CMD`, `LABEL`, `USER`), where
//! the classic builder commits a container per step on every rebuild — on a small image that
//! is most of the rebuild.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::moby::buildkit::v1::StatusResponse;
use bollard::models::{BuildInfo, BuildInfoAux};
use bollard::query_parameters::{BuildImageOptions, BuilderVersion};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::tarstream::ChannelWriter;

use super::context::{BuildInput, ContextError, ContextFile};
use crate::config::{Artifact, Project};
use crate::output::Printer;

/// The label on every image devloop builds (`<project>/<image>`), so they can be found (and
/// pruned) later. One label only: the classic builder turns each API label into a build step of
/// its own, and every step costs a container on each rebuild. The tag already carries the digest.
pub const LABEL_ARTIFACT: &str = "devloop.dev/artifact";

/// How many lines of a failing step's output the error shows.
const FAILED_STEP_LINES: usize = 25;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("build of `{image}` failed{}: {message}", step.as_ref().map(|s| format!(" at {s}")).unwrap_or_default())]
    Failed {
        image: String,
        step: Option<String>,
        message: String,
        /// The last lines the failing step printed.
        output: Vec<String>,
    },
    #[error("lost the Docker engine while building `{image}`")]
    Engine {
        image: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("failed to stream the build context of `{image}`")]
    Stream {
        image: String,
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    pub fn hint(&self) -> Option<String> {
        match self {
            BuildError::Failed { output, .. } if !output.is_empty() => Some(format!(
                "the step's last output:\n    {}",
                output.join("\n    ")
            )),
            BuildError::Engine { .. } => {
                Some("check that Docker is running (`docker info`) and try again".into())
            }
            _ => None,
        }
    }
}

/// What happened to one artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Built {
        took: Duration,
    },
    /// The tag existed: same inputs, nothing to do.
    UpToDate,
}

#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The artifact's image name (`web`).
    pub image: String,
    /// The content-addressed reference (`web:dl-3f2a91c04b7e`).
    pub reference: String,
    /// The engine's image ID (`sha256:…`).
    pub id: String,
    pub outcome: Outcome,
}

/// Which of the engine's builders runs a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builder {
    BuildKit,
    /// The builder before BuildKit: a container per step.
    Classic,
}

/// BuildKit, unless `DOCKER_BUILDKIT` (Docker's own switch) says `0`, or the engine cannot run
/// it: not a Linux engine, or older than API 1.39 (Docker 18.09), where BuildKit arrived.
pub async fn choose_builder(docker: &Docker) -> Builder {
    match std::env::var("DOCKER_BUILDKIT")
        .ok()
        .as_deref()
        .map(str::trim)
    {
        Some("0" | "false") => return Builder::Classic,
        Some("1" | "true") => return Builder::BuildKit,
        _ => {}
    }
    let Ok(version) = docker.version().await else {
        return Builder::Classic;
    };
    let linux = version.os.as_deref() == Some("linux");
    let api = version.api_version.as_deref().and_then(|v| {
        let (major, minor) = v.split_once('.')?;
        Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?))
    });
    match (linux, api) {
        (true, Some(api)) if api >= (1, 39) => Builder::BuildKit,
        _ => Builder::Classic,
    }
}

/// Build every artifact of `project` that is not already built, concurrently.
/// `force` builds even when the tag exists (the engine's layer cache still applies).
pub async fn build_all(
    docker: &Docker,
    project: &Project,
    printer: &Printer,
    force: bool,
) -> Result<Vec<BuiltImage>, BuildError> {
    let builder = choose_builder(docker).await;
    let builds = project.artifacts.iter().map(|a| {
        build_one(
            docker,
            builder,
            &project.name,
            project.registry.as_deref(),
            a,
            printer,
            force,
        )
    });
    let results = futures_util::future::join_all(builds).await;
    // Every build ran to its end; report the first failure after the others were printed.
    let mut built = Vec::new();
    let mut first_error = None;
    for result in results {
        match result {
            Ok(b) => built.push(b),
            Err(e) if first_error.is_none() => first_error = Some(e),
            Err(e) => printer.warn(&e.to_string()),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(built),
    }
}

pub async fn build_one(
    docker: &Docker,
    builder: Builder,
    project: &str,
    registry: Option<&str>,
    artifact: &Artifact,
    printer: &Printer,
    force: bool,
) -> Result<BuiltImage, BuildError> {
    let image = artifact.image.clone();
    let scan_artifact = artifact.clone();
    let input = tokio::task::spawn_blocking(move || BuildInput::scan(&scan_artifact))
        .await
        .expect("context scan does not panic")?;
    let reference = super::reference(registry, &artifact.image, &input.tag());

    if !force && let Ok(existing) = docker.inspect_image(&reference).await {
        printer.info(&format!(
            "{image}: up to date ({reference}; no input changed since it was built)"
        ));
        return Ok(BuiltImage {
            image,
            reference,
            id: existing.id.unwrap_or_default(),
            outcome: Outcome::UpToDate,
        });
    }

    let started = Instant::now();
    printer.info(&format!(
        "{image}: building {reference} ({} files in context)",
        input.files.len()
    ));
    let (dockerfile_name, extra) = dockerfile_in_tar(artifact, &input.files);
    let mut options = BuildImageOptions {
        dockerfile: dockerfile_name,
        t: Some(reference.clone()),
        target: artifact.target.clone().unwrap_or_default(),
        buildargs: Some(artifact.build_args.clone().into_iter().collect()),
        labels: Some(HashMap::from([(
            LABEL_ARTIFACT.to_string(),
            format!("{project}/{}", artifact.image),
        )])),
        rm: true,
        forcerm: true,
        ..Default::default()
    };
    if builder == Builder::BuildKit {
        options.version = BuilderVersion::BuilderBuildKit;
        // The session carries registry auth; one per build, as the docker CLI does.
        options.session = Some(format!("devloop-{}-{}", std::process::id(), reference));
    }
    let files = input.files;
    let (body, writer) =
        crate::tarstream::spawn(move |sink| write_tar(sink, &files, extra.as_ref()));
    let mut stream = build_on_own_runtime(docker, options, body);

    let mut progress = Progress::new(&image, printer);
    let mut failure: Option<String> = None;
    while let Some(item) = stream.recv().await {
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                    failure = Some(detail);
                }
                if let Some(BuildInfoAux::BuildKit(status)) = info.aux {
                    progress.buildkit(status);
                }
                if let Some(text) = info.stream {
                    progress.classic(&text);
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => failure = Some(error),
            Err(source) => {
                // The tar writer fails too when the engine hangs up; the engine error is the cause.
                writer.abort();
                return Err(BuildError::Engine { image, source });
            }
        }
    }
    if let Err(source) = writer.await.expect("tar writer does not panic")
        && failure.is_none()
    {
        return Err(BuildError::Stream { image, source });
    }
    if let Some(message) = failure {
        let (step, output) = progress.failed_step();
        return Err(BuildError::Failed {
            image,
            step: step.map(|s| format!("`{s}`")),
            message: message.trim().to_string(),
            output,
        });
    }
    let id = docker
        .inspect_image(&reference)
        .await
        .map_err(|source| BuildError::Engine {
            image: image.clone(),
            source,
        })?
        .id
        .unwrap_or_default();
    let took = started.elapsed();
    printer.info(&format!(
        "{image}: built {reference} in {:.1}s",
        took.as_secs_f64()
    ));
    Ok(BuiltImage {
        image,
        reference,
        id,
        outcome: Outcome::Built { took },
    })
}

/// Start a build on a runtime of its own and hand its output over as it comes.
///
/// bollard serves a BuildKit session on a task it spawns and never stops, and the engine
/// health-checks every live session each second: in `up`'s loop each rebuild would leave one
/// behind, and idle CPU and memory would grow with every save. The runtime, and with it the
/// session, ends with the build. (bollard pools no connections, so the clone shares nothing
/// with the caller's runtime.) Dropping the receiver, as Ctrl+C does, ends the build.
fn build_on_own_runtime(
    docker: &Docker,
    options: BuildImageOptions,
    context: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
) -> mpsc::Receiver<Result<BuildInfo, bollard::errors::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let docker = docker.clone();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                let _ = tx.blocking_send(Err(bollard::errors::Error::IOError { err }));
                return;
            }
        };
        runtime.block_on(async move {
            let body = bollard::body_try_stream(context);
            let mut stream = docker.build_image(options, None, Some(body));
            while let Some(item) = stream.next().await {
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
    });
    rx
}

/// Turns the engine's build output into one line per step, and keeps each step's last lines
/// for the error when one fails. The classic builder sends text ("Step 2/5 : COPY …"); BuildKit
/// sends status updates of a graph of vertices, where a Dockerfile step is named "[2/5] COPY …".
struct Progress<'a> {
    image: &'a str,
    printer: &'a Printer,
    /// Classic: the step running now and its output so far.
    step: Option<String>,
    output: VecDeque<String>,
    /// BuildKit: vertex digest → its step.
    vertices: HashMap<String, Vertex>,
    /// BuildKit: the vertex that reported an error.
    failed: Option<String>,
}

#[derive(Default)]
struct Vertex {
    name: String,
    announced: bool,
    output: VecDeque<String>,
}

impl<'a> Progress<'a> {
    fn new(image: &'a str, printer: &'a Printer) -> Self {
        Progress {
            image,
            printer,
            step: None,
            output: VecDeque::new(),
            vertices: HashMap::new(),
            failed: None,
        }
    }

    fn classic(&mut self, text: &str) {
        for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            if line.starts_with("Step ") {
                self.step = Some(line.to_string());
                self.output.clear();
                self.printer.info(&format!("{}: {line}", self.image));
            } else {
                if self.printer.verbose() > 0 {
                    self.printer.info(&format!("{}:   {line}", self.image));
                }
                keep_last(&mut self.output, line);
            }
        }
    }

    fn buildkit(&mut self, status: StatusResponse) {
        let verbose = self.printer.verbose() > 0;
        for v in status.vertexes {
            let vertex = self.vertices.entry(v.digest.clone()).or_default();
            vertex.name = v.name;
            if !v.error.is_empty() {
                self.failed = Some(v.digest);
            }
            // Dockerfile steps are "[n/m] …" (or "[stage n/m] …"); the rest is BuildKit's own
            // bookkeeping (loading the context, exporting), shown with -v.
            let step = vertex.name.starts_with('[') && !vertex.name.starts_with("[internal]");
            if !vertex.announced && (v.started.is_some() || v.cached) && (step || verbose) {
                vertex.announced = true;
                self.printer
                    .info(&format!("{}: {}", self.image, vertex.name));
            }
        }
        for log in status.logs {
            let vertex = self.vertices.entry(log.vertex).or_default();
            for line in String::from_utf8_lossy(&log.msg).lines() {
                let line = line.trim_end();
                if line.is_empty() {
                    continue;
                }
                if verbose {
                    self.printer.info(&format!("{}:   {line}", self.image));
                }
                keep_last(&mut vertex.output, line);
            }
        }
    }

    /// The step that failed and its last lines of output.
    fn failed_step(mut self) -> (Option<String>, Vec<String>) {
        if let Some(vertex) = self.failed.and_then(|d| self.vertices.remove(&d)) {
            return (Some(vertex.name), vertex.output.into());
        }
        (self.step, self.output.into())
    }
}

fn keep_last(lines: &mut VecDeque<String>, line: &str) {
    if lines.len() == FAILED_STEP_LINES {
        lines.pop_front();
    }
    lines.push_back(line.to_string());
}

/// The Dockerfile's name inside the tar, and an extra entry when the context lacks it
/// (excluded by `.dockerignore`, or outside the context): Docker always needs it.
fn dockerfile_in_tar(
    artifact: &Artifact,
    files: &[ContextFile],
) -> (String, Option<(String, PathBuf)>) {
    match artifact.dockerfile.strip_prefix(&artifact.context) {
        Ok(rel) => {
            let rel = rel.to_string_lossy().replace('\\', "/");
            let present = files.iter().any(|f| f.rel == rel);
            let extra = (!present).then(|| (rel.clone(), artifact.dockerfile.clone()));
            (rel, extra)
        }
        Err(_) => {
            let name = ".devloop.Dockerfile".to_string();
            (name.clone(), Some((name, artifact.dockerfile.clone())))
        }
    }
}

fn write_tar(
    sink: ChannelWriter,
    files: &[ContextFile],
    extra: Option<&(String, PathBuf)>,
) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(sink);
    tar.follow_symlinks(false);
    for f in files {
        append(&mut tar, &f.rel, &f.path)?;
    }
    if let Some((name, path)) = extra {
        append(&mut tar, name, path)?;
    }
    let mut sink = tar.into_inner()?;
    sink.flush()
}

fn append(tar: &mut tar::Builder<ChannelWriter>, rel: &str, path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
    // Deterministic mode zeroes mtime; keep the real one, as `docker build` does.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        header.set_mtime(meta.mtime().max(0) as u64);
    }
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path)?;
        tar.append_link(&mut header, rel, target)
    } else {
        let file = std::fs::File::open(path)?;
        tar.append_data(&mut header, rel, file)
    }
}
