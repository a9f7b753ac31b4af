//! Live sync: copying changed files into running containers instead of rebuilding.
//!
//! Owns an artifact's sync rules (`src` glob relative to the context → `dest`, the path kept below
//! the fixed part of `src`), finding the running containers of the image in the project's pods
//! (by the project/profile labels, container by image name), and the copy itself: a tar streamed
//! to `tar -x -C DEST` through the pod's exec API. It does not decide when to sync rather than
//! rebuild (that is `up`'s loop); after a sync the running container no longer matches its
//! content tag, which the next rebuild puts right.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use globset::{GlobBuilder, GlobMatcher};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, ListParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::wire::SyncRule;

/// An exec that takes longer than this is treated as failed (the caller falls back to a rebuild).
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("invalid sync rule `{src}` of `{image}`")]
    Glob {
        image: String,
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
    #[error("failed to copy files into {pod}/{container} at {dest}: {reason}")]
    Copy {
        pod: String,
        container: String,
        dest: String,
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
                "the image needs a `tar` on its PATH, and DEST must be writable by the container's user"
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
}

/// The compiled sync rules of one artifact.
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

/// Where one file goes: the directory to extract in, and its path below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub dest: String,
    pub rel: String,
}

impl Rules {
    pub fn new(image: &str, rules: &[SyncRule]) -> Result<Self, SyncError> {
        let rules = rules
            .iter()
            .map(|r| {
                let src = r.src.trim_start_matches("./");
                let matcher = GlobBuilder::new(src)
                    .literal_separator(true)
                    .build()
                    .map_err(|source| SyncError::Glob {
                        image: image.to_string(),
                        src: r.src.clone(),
                        source,
                    })?
                    .compile_matcher();
                Ok(Rule {
                    matcher,
                    fixed: fixed_part(src),
                    dest: r.dest.clone(),
                })
            })
            .collect::<Result<_, SyncError>>()?;
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Where `rel` (relative to the context, `/`-separated) goes, if a rule covers it.
    pub fn target(&self, rel: &str) -> Option<Target> {
        self.rules
            .iter()
            .find(|r| r.matcher.is_match(rel))
            .map(|r| Target {
                dest: r.dest.clone(),
                rel: rel.strip_prefix(&r.fixed).unwrap_or(rel).to_string(),
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

/// Where to copy: the running containers of one image.
#[derive(Debug, Clone)]
pub struct Destination {
    pub pod: String,
    pub container: String,
}

/// One sync: into how many containers, and how long it took.
#[derive(Debug)]
pub struct Report {
    pub containers: usize,
    pub pods: usize,
    pub took: Duration,
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

    /// Copy `files` (local path → target) into every container of `image`.
    pub async fn sync(
        &self,
        image: &str,
        files: &[(PathBuf, Target)],
    ) -> Result<Report, SyncError> {
        let started = Instant::now();
        let destinations = self.destinations(image).await?;
        if destinations.is_empty() {
            return Err(SyncError::NoPods {
                image: image.to_string(),
            });
        }
        // One archive per destination directory, built once and sent to every container.
        let mut by_dest: BTreeMap<&str, Vec<(&Path, &str)>> = BTreeMap::new();
        for (path, target) in files {
            by_dest
                .entry(target.dest.as_str())
                .or_default()
                .push((path.as_path(), target.rel.as_str()));
        }
        let mut archives = Vec::new();
        for (dest, entries) in by_dest {
            archives.push((dest.to_string(), archive(&entries)?));
        }
        let copies = destinations.iter().map(|d| {
            let archives = &archives;
            async move {
                for (dest, bytes) in archives {
                    self.extract(d, dest, bytes).await?;
                }
                Ok::<_, SyncError>(())
            }
        });
        for result in futures_util::future::join_all(copies).await {
            result?;
        }
        let pods: std::collections::HashSet<_> = destinations.iter().map(|d| &d.pod).collect();
        Ok(Report {
            containers: destinations.len(),
            pods: pods.len(),
            took: started.elapsed(),
        })
    }

    async fn extract(&self, to: &Destination, dest: &str, bytes: &[u8]) -> Result<(), SyncError> {
        let fail = |reason: String| SyncError::Copy {
            pod: to.pod.clone(),
            container: to.container.clone(),
            dest: dest.to_string(),
            reason,
        };
        let params = AttachParams::default()
            .container(to.container.clone())
            .stdin(true)
            .stdout(false)
            .stderr(true);
        let run = async {
            let mut process = self
                .pods
                .exec(&to.pod, ["tar", "-x", "-C", dest], &params)
                .await
                .map_err(|e| fail(format!("exec failed: {e}")))?;
            let status = process.take_status();
            let mut stderr = process.stderr();
            if let Some(mut stdin) = process.stdin() {
                stdin
                    .write_all(bytes)
                    .await
                    .map_err(|e| fail(format!("sending the archive failed: {e}")))?;
                // Dropping the writer closes stdin, so tar sees the end of the archive.
                let _ = stdin.shutdown().await;
            }
            let mut errors = String::new();
            if let Some(stderr) = stderr.as_mut() {
                let _ = stderr.read_to_string(&mut errors).await;
            }
            let status = match status {
                Some(status) => status.await,
                None => None,
            };
            let _ = process.join().await;
            match status {
                Some(s) if s.status.as_deref() == Some("Success") => Ok(()),
                Some(s) => Err(fail(
                    [errors.trim(), s.message.as_deref().unwrap_or("")]
                        .into_iter()
                        .filter(|t| !t.is_empty())
                        .collect::<Vec<_>>()
                        .join(": "),
                )),
                None => Err(fail("the exec ended without a status".into())),
            }
        };
        tokio::time::timeout(EXEC_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| {
                Err(fail(format!(
                    "no answer within {}s",
                    EXEC_TIMEOUT.as_secs()
                )))
            })
    }
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
fn archive(entries: &[(&Path, &str)]) -> Result<Vec<u8>, SyncError> {
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

    fn rules(pairs: &[(&str, &str)]) -> Rules {
        let rules: Vec<SyncRule> = pairs
            .iter()
            .map(|(s, d)| SyncRule {
                src: s.to_string(),
                dest: d.to_string(),
            })
            .collect();
        Rules::new("web", &rules).unwrap()
    }

    #[test]
    fn targets_keep_the_path_below_the_fixed_part() {
        let r = rules(&[("www/**", "/www"), ("catalog/**/*.py", "/app/catalog")]);
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
