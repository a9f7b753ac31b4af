//! The build context of an artifact and its content-addressed tag.
//!
//! The tag is a digest of exactly what the build depends on: the files Docker would receive
//! (after `.dockerignore`), the Dockerfile, the target and the build arguments. Equal inputs give
//! equal tags on every machine and after every restart, so "already built" is a lookup by tag.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ignore::DockerIgnore;
use crate::config::Artifact;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("failed to read {} in the build context of `{image}`", path.display())]
    Read {
        image: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One file of the context, in the order Docker's tar would hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextFile {
    /// Relative, `/`-separated.
    pub rel: String,
    pub path: PathBuf,
}

/// The inputs of one artifact's build.
#[derive(Debug)]
pub struct BuildInput {
    pub files: Vec<ContextFile>,
    pub digest: String,
}

impl BuildInput {
    /// List the context and digest it. Cost: one read of every included file.
    pub fn scan(artifact: &Artifact) -> Result<Self, ContextError> {
        let read_err = |path: &Path| {
            let image = artifact.image.clone();
            let path = path.to_path_buf();
            move |source| ContextError::Read {
                image,
                path,
                source,
            }
        };
        let ignore_path = artifact.context.join(".dockerignore");
        let ignore = match std::fs::read_to_string(&ignore_path) {
            Ok(text) => DockerIgnore::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DockerIgnore::default(),
            Err(e) => return Err(read_err(&ignore_path)(e)),
        };
        let mut files = Vec::new();
        walk(&artifact.context, "", &ignore, &mut files).map_err(read_err(&artifact.context))?;
        files.sort_by(|a, b| a.rel.cmp(&b.rel));

        let mut hasher = Sha256::new();
        hasher.update(b"devloop-build-v1\0");
        let dockerfile =
            std::fs::read(&artifact.dockerfile).map_err(read_err(&artifact.dockerfile))?;
        field(&mut hasher, "dockerfile", &dockerfile);
        field(
            &mut hasher,
            "target",
            artifact.target.as_deref().unwrap_or("").as_bytes(),
        );
        let mut args: Vec<_> = artifact.build_args.iter().collect();
        args.sort();
        for (k, v) in args {
            field(&mut hasher, "arg", format!("{k}={v}").as_bytes());
        }
        for f in &files {
            field(&mut hasher, "file", f.rel.as_bytes());
            hash_file(&mut hasher, &f.path).map_err(read_err(&f.path))?;
        }
        let digest = format!("{:x}", hasher.finalize());
        Ok(Self { files, digest })
    }

    /// `dl-` and the first 12 hex digits of the digest.
    pub fn tag(&self) -> String {
        format!("dl-{}", &self.digest[..12])
    }
}

/// Length-prefixed so that no two different inputs hash alike.
fn field(hasher: &mut Sha256, name: &str, value: &[u8]) {
    hasher.update(name.as_bytes());
    hasher.update((value.len() as u64).to_le_bytes());
    hasher.update(value);
}

fn hash_file(hasher: &mut Sha256, path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path)?;
        field(hasher, "symlink", target.to_string_lossy().as_bytes());
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The executable bit changes the image; other mode bits are normalised by Docker.
        let exec = meta.permissions().mode() & 0o111 != 0;
        hasher.update([exec as u8]);
    }
    hasher.update(meta.len().to_le_bytes());
    let mut file = std::fs::File::open(path)?;
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

fn walk(
    dir: &Path,
    prefix: &str,
    ignore: &DockerIgnore,
    out: &mut Vec<ContextFile>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let file_type = entry.file_type()?;
        let excluded = ignore.is_excluded(&rel);
        if file_type.is_dir() {
            // An excluded directory can still hold re-included files when `!` patterns exist.
            if excluded && !ignore.has_exceptions() {
                continue;
            }
            walk(&entry.path(), &rel, ignore, out)?;
        } else if !excluded {
            out.push(ContextFile {
                rel,
                path: entry.path(),
            });
        }
    }
    Ok(())
}
