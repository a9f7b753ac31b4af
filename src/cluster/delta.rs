//! Loading an image into a node at the cost of the change, not of the image.
//!
//! 1. `docker push` the image to devloop's own registry on 127.0.0.1 (`registry`): Docker sends
//!    only layers the registry's store lacks — after the first time, the changed ones.
//! 2. Ask the node's containerd what it holds: content blobs and unpacked snapshots. A layer is
//!    present when its compressed blob, its uncompressed blob or its chain snapshot is there.
//! 3. Stream an OCI image layout with the manifest, the config and only the missing layers into
//!    `ctr images import`. containerd skips unpacking layers whose snapshot exists.
//!
//! Any failure here is reported to the caller, which falls back to the full import in `load`.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::sync::Mutex;

use bollard::Docker;
use futures_util::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::load::containerd_ref;
use super::node::{ExecError, exec, exec_with_input};
use super::registry::{Manifest, Registry, Store};
use crate::build::docker::BuiltImage;

#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("failed to push `{reference}` to devloop's registry")]
    Push {
        reference: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("devloop's registry received no manifest for `{0}`")]
    NoManifest(String),
    #[error("the pushed manifest of `{reference}` is not readable: {message}")]
    BadManifest { reference: String, message: String },
    #[error("layer {0} is in neither the node nor devloop's registry store")]
    MissingBlob(String),
    #[error(transparent)]
    Node(#[from] ExecError),
    #[error("failed to stream the image archive")]
    Stream(#[source] std::io::Error),
}

impl DeltaError {
    /// The node container went away: looking again cannot help.
    pub fn node_gone(&self) -> bool {
        matches!(self, DeltaError::Node(ExecError::NodeGone { .. }))
    }
}

#[derive(Debug, Deserialize)]
struct ManifestDoc {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    digest: String,
}

#[derive(Debug, Deserialize)]
struct ConfigDoc {
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// An image as pushed: its manifest and the digests needed to tell which layers a node has.
#[derive(Debug)]
pub struct Pushed {
    pub manifest: Manifest,
    config: String,
    /// (compressed blob digest, uncompressed diff ID, chain ID) per layer, bottom first.
    layers: Vec<(String, String, String)>,
}

/// Push `image` to `registry` (only new layers travel) and read back what arrived.
pub async fn push(
    docker: &Docker,
    registry: &Registry,
    image: &BuiltImage,
) -> Result<Pushed, DeltaError> {
    let (repo, tag) = image
        .reference
        .rsplit_once(':')
        .unwrap_or((image.reference.as_str(), "latest"));
    // Our registry's host replaces any registry the reference names.
    let path = match repo.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
        _ => repo,
    };
    let target_repo = format!("{}/{path}", registry.host());
    let push_err = |source| DeltaError::Push {
        reference: image.reference.clone(),
        source,
    };
    docker
        .tag_image(
            &image.reference,
            Some(bollard::query_parameters::TagImageOptions {
                repo: Some(target_repo.clone()),
                tag: Some(tag.to_string()),
            }),
        )
        .await
        .map_err(push_err)?;
    let mut stream = docker.push_image(
        &target_repo,
        Some(bollard::query_parameters::PushImageOptions {
            tag: Some(tag.to_string()),
            ..Default::default()
        }),
        None,
    );
    let mut failure = None;
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            failure = Some(e);
        }
    }
    // The registry tag was only a vehicle; leave `docker images` as the user had it.
    let _ = docker
        .remove_image(
            &format!("{target_repo}:{tag}"),
            Some(bollard::query_parameters::RemoveImageOptions {
                noprune: true,
                ..Default::default()
            }),
            None,
        )
        .await;
    if let Some(source) = failure {
        return Err(push_err(source));
    }
    let manifest = registry
        .manifest(path, tag)
        .ok_or_else(|| DeltaError::NoManifest(image.reference.clone()))?;
    let bad = |message: String| DeltaError::BadManifest {
        reference: image.reference.clone(),
        message,
    };
    let doc: ManifestDoc =
        serde_json::from_slice(&manifest.bytes).map_err(|e| bad(e.to_string()))?;
    let config_path = registry
        .store()
        .blob_path(&doc.config.digest)
        .ok_or_else(|| bad("config digest is not sha256".into()))?;
    let config_bytes = tokio::fs::read(&config_path)
        .await
        .map_err(|e| bad(e.to_string()))?;
    let config: ConfigDoc =
        serde_json::from_slice(&config_bytes).map_err(|e| bad(e.to_string()))?;
    if config.rootfs.diff_ids.len() != doc.layers.len() {
        return Err(bad("layer and diff ID counts differ".into()));
    }
    let chains = chain_ids(&config.rootfs.diff_ids);
    let layers = doc
        .layers
        .into_iter()
        .zip(config.rootfs.diff_ids)
        .zip(chains)
        .map(|((layer, diff), chain)| (layer.digest, diff, chain))
        .collect();
    Ok(Pushed {
        manifest,
        config: doc.config.digest,
        layers,
    })
}

/// containerd's chain IDs: the first is the first diff ID; each next is
/// sha256("<previous chain ID> <diff ID>").
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(prev) => format!(
                "sha256:{:x}",
                Sha256::digest(format!("{prev} {diff}").as_bytes())
            ),
        };
        out.push(next);
    }
    out
}

/// What each node held at devloop's last look, plus what devloop imported since: a load in the
/// inner loop then needs no look of its own (two execs, most of a small load). It is wrong only
/// when something else removed content from the node (the kubelet's image GC); the import then
/// fails, and the caller forgets the node, looks again and retries.
static KNOWN: Mutex<BTreeMap<String, HashSet<String>>> = Mutex::new(BTreeMap::new());

fn known() -> std::sync::MutexGuard<'static, BTreeMap<String, HashSet<String>>> {
    KNOWN.lock().unwrap_or_else(|e| e.into_inner())
}

/// What `node` holds: remembered from this process's last look and imports (`true`), or asked.
pub async fn held(
    docker: &Docker,
    node: &str,
    snapshotter: &str,
) -> Result<(HashSet<String>, bool), ExecError> {
    if let Some(held) = known().get(node) {
        return Ok((held.clone(), true));
    }
    let held = inventory(docker, node, snapshotter).await?;
    known().insert(node.to_string(), held.clone());
    Ok((held, false))
}

/// Drop what devloop remembers of `node` (after an import that the memory misled).
pub fn forget(node: &str) {
    known().remove(node);
}

/// What a node's containerd holds: blob digests and snapshot keys. Asked while the push runs,
/// so it costs no time of its own.
pub async fn inventory(
    docker: &Docker,
    node: &str,
    snapshotter: &str,
) -> Result<HashSet<String>, ExecError> {
    let flag = format!("--snapshotter={snapshotter}");
    let content_cmd = ["ctr", "--namespace=k8s.io", "content", "ls", "-q"];
    let snapshots_cmd = ["ctr", "--namespace=k8s.io", "snapshots", &flag, "ls"];
    let (content, snapshots) = tokio::join!(
        exec(docker, node, &content_cmd),
        exec(docker, node, &snapshots_cmd)
    );
    let (content, snapshots) = (content?, snapshots?);
    let mut held: HashSet<String> = content.lines().map(|l| l.trim().to_string()).collect();
    // `snapshots ls` prints "KEY PARENT KIND"; committed layer snapshots are keyed by chain ID.
    held.extend(
        snapshots
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string)),
    );
    Ok(held)
}

/// Import `pushed` into `node` as `reference`, sending only layers the node lacks (`held`, from
/// [`inventory`]). Returns how many layer blobs were sent.
pub async fn import(
    docker: &Docker,
    node: &str,
    snapshotter: &str,
    held: &HashSet<String>,
    store: &Store,
    pushed: &Pushed,
    reference: &str,
) -> Result<usize, DeltaError> {
    let mut blobs = vec![pushed.manifest.digest.clone(), pushed.config.clone()];
    for (blob, diff, chain) in &pushed.layers {
        if !(held.contains(blob) || held.contains(diff) || held.contains(chain)) {
            blobs.push(blob.clone());
        }
    }
    let sent = blobs.len() - 2;
    let mut files = Vec::new();
    for digest in &blobs {
        let path = store.blob_path(digest).filter(|p| p.is_file());
        files.push((
            digest.clone(),
            path.ok_or_else(|| DeltaError::MissingBlob(digest.clone()))?,
        ));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": pushed.manifest.media_type,
            "digest": pushed.manifest.digest,
            "size": pushed.manifest.bytes.len(),
            "annotations": {
                "io.containerd.image.name": containerd_ref(reference),
                "org.opencontainers.image.ref.name": reference.rsplit_once(':').map_or("latest", |(_, t)| t),
            }
        }]
    })
    .to_string();
    let (body, writer) = crate::tarstream::spawn(move |sink| {
        let mut tar = tar::Builder::new(sink);
        append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append_bytes(&mut tar, "index.json", index.as_bytes())?;
        for (digest, path) in &files {
            let name = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
            tar.append_path_with_name(path, name)?;
        }
        tar.into_inner()?.flush()
    });
    let flag = format!("--snapshotter={snapshotter}");
    let cmd = [
        "ctr",
        "--namespace=k8s.io",
        "images",
        "import",
        "--digests",
        &flag,
        "-",
    ];
    let imported = exec_with_input(docker, node, &cmd, Some(body)).await;
    let written = writer.await.expect("archive writer does not panic");
    imported?;
    written.map_err(DeltaError::Stream)?;
    if let Some(node_held) = known().get_mut(node) {
        node_held.extend([pushed.manifest.digest.clone(), pushed.config.clone()]);
        for (blob, diff, chain) in &pushed.layers {
            node_held.extend([blob.clone(), diff.clone(), chain.clone()]);
        }
    }
    Ok(sent)
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, name, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_containerd() {
        let diffs = vec!["sha256:aaa".to_string(), "sha256:bbb".to_string()];
        let chains = chain_ids(&diffs);
        assert_eq!(chains[0], "sha256:aaa");
        let expected = format!("sha256:{:x}", Sha256::digest(b"sha256:aaa sha256:bbb"));
        assert_eq!(chains[1], expected);
    }
}
