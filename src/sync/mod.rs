//! Live sync: copying changed files into running containers instead of rebuilding.
//!
//! Owns an artifact's sync rules (`src` glob relative to the context → `dest`, the path kept below
//! the fixed part of `src`, and an optional `run` command), finding the running containers of the
//! image in the project's pods (by the project/profile labels, container by image name), and what
//! happens in each container through the pod's exec API: changed files are streamed as a tar of
//! their container paths to `tar -x -C /`, deleted ones are removed with `rm -rf --`, then the
//! rules' commands run once each. It does not decide when to sync rather than rebuild (that is `up`'s loop); after a sync
//! the running container no longer matches its content tag, which the next rebuild puts right.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use globset::{GlobBuilder, GlobMatcher};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, ListParams};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::config::wire::SyncRule;

/// A copy or delete that takes longer than this is treated as failed (the caller falls back to a
/// rebuild).
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `run` command may take before devloop stops waiting for it (collectstatic, a
/// bundler): the loop waits for it, so it must end.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of a command's output is kept (its tail).
const OUTPUT_TAIL: usize = 16 * 1024;
/// How many of its last stderr lines a failed command shows.
const SHOWN_LINES: usize = 5;
/// An exec's arguments travel in the request URL: delete in batches below this many bytes.
const RM_BATCH_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("invalid sync rule `{src}` of `{image}`")]
    Glob {
        image: String,
        /// The rule's position in the artifact's `sync` list.
        index: usize,
        src: String,
        #[source]
        source: globset::Error,
    },
    #[error("failed to list the pods of `{image}` in namespace `{namespace}`")]
    List {
        image: String,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to read {} to sync it", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to copy {what} into {pod}/{container}: {reason}")]
    Copy {
        pod: String,
        container: String,
        what: String,
        reason: String,
    },
    #[error("failed to delete {what} in {pod}/{container}: {reason}")]
    Remove {
        pod: String,
        container: String,
        what: String,
        reason: String,
    },
    #[error("no running pod uses `{image}`")]
    NoPods { image: String },
}

impl SyncError {
    pub fn hint(&self) -> Option<String> {
        match self {
            SyncError::Glob { .. } => {
                Some("sync `src` is a glob such as `www/**` or `app/**/*.py`".into())
            }
            SyncError::Copy { .. } => Some(
                "the image needs a `tar` on its PATH, and `dest` must be writable by the container's user"
                    .into(),
            ),
            SyncError::Remove { .. } => Some(
                "the image needs an `rm` on its PATH, and the files must be writable by the container's user"
                    .into(),
            ),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Rule {
    matcher: GlobMatcher,
    /// The directories of `src` before its first wildcard, `/`-terminated or empty.
    fixed: String,
    dest: String,
    run: Option<Vec<String>>,
}

/// The compiled sync rules of one artifact.
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

/// Where one file goes: the directory to extract in, its path below it, and the command of the
/// rule that covers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub dest: String,
    pub rel: String,
    pub run: Option<Vec<String>>,
}

impl Target {
    /// The file's path in the container (relative to the container's working directory when
    /// `dest` is relative, as `tar -C` takes it).
    pub fn container_path(&self) -> String {
        let dest = self.dest.trim_end_matches('/');
        match (dest.is_empty(), self.dest.starts_with('/')) {
            (true, true) => format!("/{}", self.rel),
            (true, false) => self.rel.clone(),
            _ => format!("{dest}/{}", self.rel),
        }
    }
}

impl Rules {
    pub fn new(image: &str, rules: &[SyncRule]) -> Result<Self, SyncError> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let src = r.src.trim_start_matches("./");
                let matcher = GlobBuilder::new(src)
                    .literal_separator(true)
                    .build()
                    .map_err(|source| SyncError::Glob {
                        image: image.to_string(),
                        index,
                        src: r.src.clone(),
                        source,
                    })?
                    .compile_matcher();
                Ok(Rule {
                    matcher,
                    fixed: fixed_part(src),
                    dest: r.dest.clone(),
                    run: r.run.clone(),
                })
            })
            .collect::<Result<_, SyncError>>()?;
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a rule covers `rel` (relative to the context, `/`-separated).
    pub fn covers(&self, rel: &str) -> bool {
        self.rules.iter().any(|r| r.matcher.is_match(rel))
    }

    /// Where `rel` (relative to the context, `/`-separated) goes, if a rule covers it: the first
    /// rule that matches.
    pub fn target(&self, rel: &str) -> Option<Target> {
        self.rules
            .iter()
            .find(|r| r.matcher.is_match(rel))
            .map(|r| Target {
                dest: r.dest.clone(),
                rel: rel.strip_prefix(&r.fixed).unwrap_or(rel).to_string(),
                run: r.run.clone(),
            })
    }
}

/// The leading components of a glob that hold no wildcard: `catalog/**/*.py` → `catalog/`.
fn fixed_part(src: &str) -> String {
    let parts: Vec<&str> = src.split('/').collect();
    let mut fixed = String::new();
    // The last component names files, never a kept directory.
    for part in &parts[..parts.len().saturating_sub(1)] {
        if part.contains(['*', '?', '[', '{']) {
            break;
        }
        fixed.push_str(part);
        fixed.push('/');
    }
    fixed
}

/// One file of a sync round: copied (its current bytes) or deleted in the containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub target: Target,
    pub removed: bool,
}

/// Where to copy: the running containers of one image.
#[derive(Debug, Clone)]
pub struct Destination {
    pub pod: String,
    pub container: String,
}

/// One sync: into how many containers, what it did there, and how long it took.
#[derive(Debug)]
pub struct Report {
    pub containers: usize,
    pub pods: usize,
    pub copied: usize,
    pub removed: usize,
    /// The commands run after the copy, in rule order.
    pub commands: Vec<CommandReport>,
    pub took: Duration,
}

/// One `run` command of a round, and the containers where it did not succeed.
#[derive(Debug)]
pub struct CommandReport {
    pub argv: Vec<String>,
    pub failures: Vec<CommandFailure>,
}

#[derive(Debug)]
pub struct CommandFailure {
    pub pod: String,
    pub container: String,
    /// `exited with 3`, or why it did not run.
    pub why: String,
    /// The last lines of its stderr (of its stdout when stderr is empty).
    pub last_lines: Vec<String>,
}

/// How a command in a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Exit {
    Success,
    Code(i32),
    /// It did not run (no such program) or the API said something else.
    Failed(String),
}

/// What an exec returned.
struct Output {
    exit: Exit,
    stdout: String,
    stderr: String,
}

/// Copies files into the project's running pods.
#[derive(Clone)]
pub struct Syncer {
    pods: Api<Pod>,
    namespace: String,
    selector: String,
}

impl Syncer {
    /// Pods in `namespace` matching `selector` (the project/profile labels).
    pub fn new(client: kube::Client, namespace: &str, selector: String) -> Self {
        Self {
            pods: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            selector,
        }
    }

    /// The running containers whose image is `image` (a name without tag, with the registry
    /// prefix when images are pushed).
    pub async fn destinations(&self, image: &str) -> Result<Vec<Destination>, SyncError> {
        let list = self
            .pods
            .list(&ListParams::default().labels(&self.selector))
            .await
            .map_err(|source| SyncError::List {
                image: image.to_string(),
                namespace: self.namespace.clone(),
                source,
            })?;
        let mut out = Vec::new();
        for pod in list {
            let name = pod.metadata.name.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(status) = &pod.status else { continue };
            if status.phase.as_deref() != Some("Running") {
                continue;
            }
            let running: Vec<&str> = status
                .container_statuses
                .iter()
                .flatten()
                .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                .map(|c| c.name.as_str())
                .collect();
            for c in pod.spec.iter().flat_map(|s| &s.containers) {
                if image_name(c.image.as_deref().unwrap_or("")) == image
                    && running.contains(&c.name.as_str())
                {
                    out.push(Destination {
                        pod: name.clone(),
                        container: c.name.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Copy the changed `entries` into every container of `image`, delete the removed ones
    /// there, then run the rules' commands once each. A copy or delete that fails is an error
    /// (the caller rebuilds); a command that fails is reported in [`Report::commands`].
    pub async fn sync(&self, image: &str, entries: &[Entry]) -> Result<Report, SyncError> {
        let started = Instant::now();
        let destinations = self.destinations(image).await?;
        if destinations.is_empty() {
            return Err(SyncError::NoPods {
                image: image.to_string(),
            });
        }
        // Files go in with their whole container path, extracted from `/` (or from the working
        // directory, for relative `dest`s), so a `dest` or subdirectory that does not exist yet
        // is created. One archive per root, built once and sent to every container.
        let mut by_root: BTreeMap<&str, Vec<(&Path, String)>> = BTreeMap::new();
        let mut removed = Vec::new();
        for e in entries {
            let path = e.target.container_path();
            if e.removed {
                if !removed.contains(&path) {
                    removed.push(path);
                }
            } else {
                let root = if path.starts_with('/') { "/" } else { "." };
                let name = path.trim_start_matches('/').to_string();
                by_root
                    .entry(root)
                    .or_default()
                    .push((e.path.as_path(), name));
            }
        }
        let copied = by_root.values().map(Vec::len).sum();
        let mut archives = Vec::new();
        for (root, files) in by_root {
            let what = match files.as_slice() {
                [(_, one)] => format!("{root}{one}").replacen("./", "", 1),
                more => format!("{} files", more.len()),
            };
            archives.push((root.to_string(), what, archive(&files)?));
        }
        let emptied = emptied_directories(entries);
        let commands = commands(entries);
        let rounds = destinations.iter().map(|d| {
            let (archives, removed, emptied, commands) = (&archives, &removed, &emptied, &commands);
            async move {
                for (root, what, bytes) in archives {
                    self.extract(d, root, what, bytes).await?;
                }
                self.remove(d, removed).await?;
                if !emptied.is_empty() {
                    // Only directories left empty go: a file the image put there (a build
                    // output) stays, and so does the directory. Failing that is harmless.
                    let mut argv: Vec<String> = ["rmdir", "--"].map(String::from).to_vec();
                    argv.extend(emptied.iter().cloned());
                    let _ = self.exec(d, &argv, None, EXEC_TIMEOUT).await;
                }
                // Commands run only once every file is in place, in rule order.
                let mut failures = Vec::new();
                for argv in commands {
                    failures.push(self.run(d, argv).await);
                }
                Ok::<_, SyncError>(failures)
            }
        });
        let mut reports: Vec<CommandReport> = commands
            .iter()
            .map(|argv| CommandReport {
                argv: argv.clone(),
                failures: Vec::new(),
            })
            .collect();
        for result in futures_util::future::join_all(rounds).await {
            for (report, failure) in reports.iter_mut().zip(result?) {
                report.failures.extend(failure);
            }
        }
        let pods: HashSet<_> = destinations.iter().map(|d| &d.pod).collect();
        Ok(Report {
            containers: destinations.len(),
            pods: pods.len(),
            copied,
            removed: removed.len(),
            commands: reports,
            took: started.elapsed(),
        })
    }

    async fn extract(
        &self,
        to: &Destination,
        root: &str,
        what: &str,
        bytes: &[u8],
    ) -> Result<(), SyncError> {
        let fail = |reason: String| SyncError::Copy {
            pod: to.pod.clone(),
            container: to.container.clone(),
            what: what.to_string(),
            reason,
        };
        let argv = ["tar", "-x", "-C", root].map(String::from);
        let out = self
            .exec(to, &argv, Some(bytes), EXEC_TIMEOUT)
            .await
            .map_err(fail)?;
        match out.exit {
            Exit::Success => Ok(()),
            exit => Err(fail(failure_text(&exit, &out.stderr))),
        }
    }

    /// `rm -rf -- PATHS` in batches; nothing to do for no paths.
    async fn remove(&self, to: &Destination, paths: &[String]) -> Result<(), SyncError> {
        for batch in batches(paths, RM_BATCH_BYTES) {
            let fail = |reason: String| SyncError::Remove {
                pod: to.pod.clone(),
                container: to.container.clone(),
                what: match batch {
                    [one] => one.clone(),
                    more => format!("{} files", more.len()),
                },
                reason,
            };
            let mut argv: Vec<String> = ["rm", "-rf", "--"].map(String::from).to_vec();
            argv.extend(batch.iter().cloned());
            let out = self
                .exec(to, &argv, None, EXEC_TIMEOUT)
                .await
                .map_err(fail)?;
            if out.exit != Exit::Success {
                return Err(fail(failure_text(&out.exit, &out.stderr)));
            }
        }
        Ok(())
    }

    /// Run one command; `None` when it succeeded.
    async fn run(&self, to: &Destination, argv: &[String]) -> Option<CommandFailure> {
        let failure = |why: String, output: &str| CommandFailure {
            pod: to.pod.clone(),
            container: to.container.clone(),
            why,
            last_lines: last_lines(output, SHOWN_LINES),
        };
        match self.exec(to, argv, None, RUN_TIMEOUT).await {
            Err(reason) => Some(failure(reason, "")),
            Ok(out) => {
                let output = if out.stderr.trim().is_empty() {
                    &out.stdout
                } else {
                    &out.stderr
                };
                match out.exit {
                    Exit::Success => None,
                    Exit::Code(code) => Some(failure(format!("exited with {code}"), output)),
                    Exit::Failed(message) => {
                        Some(failure(format!("did not run: {message}"), output))
                    }
                }
            }
        }
    }

    /// Run `argv` in `to`, feeding `stdin` if given; the output's tails and how it ended. `Err`
    /// when the exec itself failed (no answer, the connection dropped).
    async fn exec(
        &self,
        to: &Destination,
        argv: &[String],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, String> {
        let params = AttachParams::default()
            .container(to.container.clone())
            .stdin(stdin.is_some())
            .stdout(true)
            .stderr(true);
        let run = async {
            let mut process = self
                .pods
                .exec(&to.pod, argv.to_vec(), &params)
                .await
                .map_err(|e| format!("exec failed: {}", crate::error::one_line(&e)))?;
            let status = process.take_status();
            let stdout = process.stdout();
            let stderr = process.stderr();
            let writer = process.stdin();
            // Both streams are drained while stdin is written, so a chatty command never blocks
            // on a full pipe.
            let feed = async {
                if let (Some(mut writer), Some(bytes)) = (writer, stdin) {
                    writer
                        .write_all(bytes)
                        .await
                        .map_err(|e| format!("sending the files failed: {e}"))?;
                    // Closing stdin ends the archive for tar.
                    let _ = writer.shutdown().await;
                }
                Ok::<_, String>(())
            };
            let (fed, stdout, stderr) = tokio::join!(feed, tail(stdout), tail(stderr));
            fed?;
            let status = match status {
                Some(status) => status.await,
                None => None,
            };
            let _ = process.join().await;
            Ok(Output {
                exit: exit_of(status),
                stdout,
                stderr,
            })
        };
        tokio::time::timeout(timeout, run)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", timeout.as_secs())))
    }
}

/// Directories below the rules' `dest`s that held removed files and are gone locally too, as
/// container paths, deepest first (so `rmdir` can take a tree in one go).
fn emptied_directories(entries: &[Entry]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in entries.iter().filter(|e| e.removed) {
        let mut local = e.path.as_path();
        let mut rel = e.target.rel.as_str();
        // Walk up the kept path: `a/b/c.html` → `a/b`, `a`; never `dest` itself.
        while let (Some(parent), Some(cut)) = (local.parent(), rel.rfind('/')) {
            if parent.exists() {
                break;
            }
            rel = &rel[..cut];
            local = parent;
            let dir = Target {
                dest: e.target.dest.clone(),
                rel: rel.to_string(),
                run: None,
            }
            .container_path();
            if !out.contains(&dir) {
                out.push(dir);
            }
        }
    }
    out.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    out
}

/// The distinct commands of the rules that covered `entries`, in rule order of first use.
fn commands(entries: &[Entry]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    for e in entries {
        if let Some(argv) = &e.target.run
            && !out.contains(argv)
        {
            out.push(argv.clone());
        }
    }
    out
}

/// `paths` in groups whose joined length stays below `limit` (one path per group at least).
fn batches(paths: &[String], limit: usize) -> Vec<&[String]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, p) in paths.iter().enumerate() {
        if i > start && size + p.len() + 1 > limit {
            out.push(&paths[start..i]);
            (start, size) = (i, 0);
        }
        size += p.len() + 1;
    }
    if start < paths.len() {
        out.push(&paths[start..]);
    }
    out
}

/// The last `limit` bytes of a stream, read to its end.
async fn tail(stream: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * OUTPUT_TAIL {
            kept.drain(..kept.len() - OUTPUT_TAIL);
        }
    }
    if kept.len() > OUTPUT_TAIL {
        kept.drain(..kept.len() - OUTPUT_TAIL);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// How an exec ended, from the status the API sends on its error channel.
fn exit_of(status: Option<Status>) -> Exit {
    let Some(status) = status else {
        return Exit::Failed("the exec ended without a status".into());
    };
    if status.status.as_deref() == Some("Success") {
        return Exit::Success;
    }
    if status.reason.as_deref() == Some("NonZeroExitCode") {
        let code = status
            .details
            .iter()
            .flat_map(|d| d.causes.iter().flatten())
            .find(|c| c.reason.as_deref() == Some("ExitCode"))
            .and_then(|c| c.message.as_deref()?.parse().ok());
        if let Some(code) = code {
            return Exit::Code(code);
        }
    }
    Exit::Failed(
        status
            .message
            .unwrap_or_else(|| "the exec failed without a message".into()),
    )
}

/// A copy's or delete's failure: what it printed, and how it ended.
fn failure_text(exit: &Exit, stderr: &str) -> String {
    let how = match exit {
        Exit::Success => String::new(),
        Exit::Code(code) => format!("exited with {code}"),
        Exit::Failed(message) => message.clone(),
    };
    [stderr.trim(), how.as_str()]
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

/// The last `n` non-empty lines of `text`.
fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// `argv` as a shell would need it typed: `sh -c 'echo hi'`.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `registry/name:tag@digest` → `registry/name`.
pub fn image_name(reference: &str) -> &str {
    let reference = reference.split('@').next().unwrap_or(reference);
    match reference.rfind(':') {
        Some(i) if !reference[i..].contains('/') => &reference[..i],
        _ => reference,
    }
}

/// A tar of `entries` (local file, name in the archive). Owner root, mode and mtime kept, so a
/// root container gets files it can serve and a non-root one extracts them as itself.
fn archive(entries: &[(&Path, String)]) -> Result<Vec<u8>, SyncError> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, name) in entries {
        let read = |source| SyncError::Read {
            path: path.to_path_buf(),
            source,
        };
        let data = std::fs::read(path).map_err(read)?;
        let meta = std::fs::metadata(path).map_err(read)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            header.set_mode(meta.permissions().mode() & 0o7777);
        }
        #[cfg(not(unix))]
        header.set_mode(0o644);
        header.set_mtime(
            meta.modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs()),
        );
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, data.as_slice())
            .map_err(read)?;
    }
    builder.into_inner().map_err(|source| SyncError::Read {
        path: PathBuf::from("<archive>"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};

    fn rules(specs: &[(&str, &str, Option<&[&str]>)]) -> Rules {
        let rules: Vec<SyncRule> = specs
            .iter()
            .map(|(s, d, run)| SyncRule {
                src: s.to_string(),
                dest: d.to_string(),
                run: run.map(|r| r.iter().map(|a| a.to_string()).collect()),
            })
            .collect();
        Rules::new("web", &rules).unwrap()
    }

    #[test]
    fn targets_keep_the_path_below_the_fixed_part() {
        let r = rules(&[
            ("www/**", "/www", None),
            ("catalog/**/*.py", "/app/catalog", None),
        ]);
        let t = |rel| r.target(rel).map(|t| format!("{}:{}", t.dest, t.rel));
        assert_eq!(t("www/index.html").as_deref(), Some("/www:index.html"));
        assert_eq!(t("www/css/a.css").as_deref(), Some("/www:css/a.css"));
        assert_eq!(
            t("catalog/views.py").as_deref(),
            Some("/app/catalog:views.py")
        );
        assert_eq!(t("catalog/a/b.py").as_deref(), Some("/app/catalog:a/b.py"));
        assert_eq!(t("catalog/a/b.html"), None);
        assert_eq!(t("requirements.txt"), None);
        assert_eq!(t("Dockerfile"), None);
    }

    #[test]
    fn container_paths_join_dest_and_the_kept_path() {
        let target = |dest: &str, rel: &str| Target {
            dest: dest.into(),
            rel: rel.into(),
            run: None,
        };
        assert_eq!(target("/www", "a/b.css").container_path(), "/www/a/b.css");
        assert_eq!(target("/www/", "b.css").container_path(), "/www/b.css");
        assert_eq!(target("/", "b.css").container_path(), "/b.css");
        assert_eq!(target("static", "b.css").container_path(), "static/b.css");
    }

    #[test]
    fn each_command_runs_once_per_round_in_rule_order() {
        let hup = ["kill", "-HUP", "1"];
        let collect = ["sh", "-c", "python manage.py collectstatic --noinput"];
        let r = rules(&[
            ("app/**/*.py", "/app", Some(&hup)),
            ("static/**", "/app/static", Some(&collect)),
            ("templates/**", "/app/templates", Some(&hup)),
            ("docs/**", "/docs", None),
        ]);
        let entry = |rel: &str, removed| Entry {
            path: PathBuf::from(rel),
            target: r.target(rel).unwrap(),
            removed,
        };
        let entries = [
            entry("static/a.css", true),
            entry("app/views.py", false),
            entry("templates/x.html", false),
            entry("docs/readme.md", false),
            entry("app/models.py", false),
        ];
        let got: Vec<String> = commands(&entries).iter().map(|c| shell_words(c)).collect();
        assert_eq!(
            got,
            [
                "sh -c 'python manage.py collectstatic --noinput'",
                "kill -HUP 1"
            ]
        );
        assert!(commands(&entries[3..4]).is_empty());
    }

    #[test]
    fn directories_gone_locally_are_emptied_deepest_first() {
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path();
        std::fs::create_dir_all(ctx.join("www/kept")).unwrap();
        let r = rules(&[("www/**", "/www", None)]);
        let entry = |rel: &str| Entry {
            path: ctx.join(rel),
            target: r.target(rel).unwrap(),
            removed: true,
        };
        let entries = [
            entry("www/gone/deeper/a.html"),
            entry("www/gone/b.html"),
            entry("www/kept/c.html"),
            entry("www/d.html"),
        ];
        assert_eq!(
            emptied_directories(&entries),
            ["/www/gone/deeper", "/www/gone"]
        );
        let copied = Entry {
            removed: false,
            ..entry("www/gone/e.html")
        };
        assert!(emptied_directories(&[copied]).is_empty());
    }

    #[test]
    fn deletes_are_batched_below_the_url_limit() {
        let paths: Vec<String> = (0..10).map(|i| format!("/www/{i:04}.html")).collect();
        let sizes: Vec<usize> = batches(&paths, 40).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [2, 2, 2, 2, 2]);
        assert_eq!(batches(&paths, 1 << 20).len(), 1);
        // A path longer than the limit still goes, alone.
        let long = vec!["/x".repeat(50), "/y".into()];
        assert_eq!(batches(&long, 10).len(), 2);
        assert!(batches(&[], 10).is_empty());
    }

    #[test]
    fn exit_codes_come_from_the_exec_status() {
        let status = |s: &str, reason: Option<&str>, code: Option<&str>, message: Option<&str>| {
            Some(Status {
                status: Some(s.into()),
                reason: reason.map(Into::into),
                message: message.map(Into::into),
                details: code.map(|c| StatusDetails {
                    causes: Some(vec![StatusCause {
                        reason: Some("ExitCode".into()),
                        message: Some(c.into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        assert_eq!(exit_of(status("Success", None, None, None)), Exit::Success);
        assert_eq!(
            exit_of(status(
                "Failure",
                Some("NonZeroExitCode"),
                Some("3"),
                Some(
                    "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
                )
            )),
            Exit::Code(3)
        );
        let missing = "OCI runtime exec failed: exec failed: unable to start container process: exec: \"collect\": executable file not found in $PATH";
        assert_eq!(
            exit_of(status(
                "Failure",
                Some("InternalError"),
                None,
                Some(missing)
            )),
            Exit::Failed(missing.into())
        );
        assert!(matches!(exit_of(None), Exit::Failed(_)));
    }

    #[test]
    fn commands_are_shown_as_typed() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(shell_words(&argv(&["kill", "-HUP", "1"])), "kill -HUP 1");
        assert_eq!(
            shell_words(&argv(&["sh", "-c", "echo 'hi' > /tmp/x"])),
            r"sh -c 'echo '\''hi'\'' > /tmp/x'"
        );
        assert_eq!(shell_words(&argv(&["a", ""])), "a ''");
    }

    #[test]
    fn last_lines_skip_blank_ones() {
        assert_eq!(
            last_lines("a\n\nb\nc\n  \nd\n", 3),
            ["b".to_string(), "c".into(), "d".into()]
        );
        assert!(last_lines("", 5).is_empty());
    }

    #[test]
    fn image_names() {
        assert_eq!(image_name("web:dl-3f2a"), "web");
        assert_eq!(
            image_name("localhost:5000/web:dl-3f2a"),
            "localhost:5000/web"
        );
        assert_eq!(image_name("localhost:5000/web"), "localhost:5000/web");
        assert_eq!(image_name("web@sha256:ab"), "web");
    }
}
