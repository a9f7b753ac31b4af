//! A minimal OCI distribution registry, served by devloop itself on 127.0.0.1 for one transfer.
//!
//! Why: the Docker Engine API exports whole images only (`docker save`), so loading a one-line
//! change costs the whole image. A `docker push` to a registry sends only the layers the registry
//! lacks. devloop receives that push here, keeps the blobs in its cache directory (so the next push
//! sends only what changed), and hands the manifest to `delta`, which imports into each node just
//! the blobs that node lacks. Docker treats 127.0.0.0/8 registries as insecure, so plain HTTP works
//! with no daemon configuration.
//!
//! Only what `docker push` uses is implemented: the version check, blob HEAD/GET, cross-repository
//! mounts of known blobs, chunked and monolithic uploads with digest verification, manifest PUT/GET.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// A manifest as Docker pushed it: exact bytes, so its digest holds.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub digest: String,
    pub bytes: Bytes,
}

/// The blob store: `root/blobs/sha256/<hex>`, shared by every run of devloop on this machine.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$XDG_CACHE_HOME/devloop/registry`, else `~/.cache/devloop/registry`.
    pub fn default_location() -> Self {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        Self::new(base.join("devloop").join("registry"))
    }

    pub fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(self.root.join("blobs").join("sha256").join(hex))
    }

    pub fn has(&self, digest: &str) -> bool {
        self.blob_path(digest).is_some_and(|p| p.is_file())
    }

    /// Mark a blob as used now, so [`Store::prune`] keeps it longest.
    pub fn touch(&self, digest: &str) {
        if let Some(path) = self.blob_path(digest)
            && let Ok(file) = std::fs::File::options().append(true).open(path)
        {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
    }

    /// Keep the store under `max_bytes` by removing the least recently used blobs. Run it
    /// before a push, never during one: a blob Docker was just told exists must stay.
    /// Returns how many blobs and bytes were removed.
    pub fn prune(&self, max_bytes: u64) -> std::io::Result<(usize, u64)> {
        let dir = self.root.join("blobs").join("sha256");
        let mut blobs: Vec<(std::time::SystemTime, u64, PathBuf)> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .filter_map(|e| {
                    let meta = e.metadata().ok()?;
                    Some((meta.modified().ok()?, meta.len(), e.path()))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(e),
        };
        let mut total: u64 = blobs.iter().map(|(_, len, _)| len).sum();
        blobs.sort();
        let (mut removed, mut freed) = (0, 0);
        for (_, len, path) in blobs {
            if total <= max_bytes {
                break;
            }
            std::fs::remove_file(&path)?;
            total -= len;
            removed += 1;
            freed += len;
        }
        Ok((removed, freed))
    }

    fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }
}

struct Upload {
    path: PathBuf,
    hasher: Sha256,
    size: u64,
}

struct State {
    store: Store,
    uploads: Mutex<HashMap<String, Upload>>,
    manifests: Mutex<HashMap<(String, String), Manifest>>,
    next_upload: std::sync::atomic::AtomicU64,
}

/// A running registry; it stops when dropped.
pub struct Registry {
    pub addr: SocketAddr,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Registry {
    /// Serve `store` on 127.0.0.1 on a free port.
    pub async fn start(store: Store) -> std::io::Result<Self> {
        tokio::fs::create_dir_all(store.root.join("blobs").join("sha256")).await?;
        tokio::fs::create_dir_all(store.uploads()).await?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            store,
            uploads: Mutex::new(HashMap::new()),
            manifests: Mutex::new(HashMap::new()),
            next_upload: std::sync::atomic::AtomicU64::new(0),
        });
        let serving = state.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    // A client that hangs up mid-request is its own problem, not the registry's.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            state,
            server,
        })
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The manifest pushed as `name:tag`, if any.
    pub fn manifest(&self, name: &str, tag: &str) -> Option<Manifest> {
        let manifests = self.state.manifests.lock().expect("registry lock");
        manifests.get(&(name.to_string(), tag.to_string())).cloned()
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode) -> hyper::http::response::Builder {
    Response::builder()
        .status(status)
        .header("Docker-Distribution-API-Version", "registry/2.0")
}

fn empty(status: StatusCode) -> Reply {
    reply(status)
        .body(Full::new(Bytes::new()))
        .expect("valid response")
}

fn error(status: StatusCode, code: &str, message: &str) -> Reply {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]}).to_string();
    reply(status)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.replace("%3A", ":").replace("%3a", ":"))
    })
}

async fn handle(state: &State, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix("/v2/") else {
        return if path == "/v2" {
            empty(StatusCode::OK)
        } else {
            empty(StatusCode::NOT_FOUND)
        };
    };
    if rest.is_empty() {
        return empty(StatusCode::OK);
    }
    if let Some((name, upload)) = rest.split_once("/blobs/uploads") {
        let id = upload.trim_start_matches('/');
        return handle_upload(state, req, name, id).await;
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return handle_blob(state, &req, name, digest).await;
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        let (name, reference) = (name.to_string(), reference.to_string());
        return handle_manifest(state, req, &name, &reference).await;
    }
    empty(StatusCode::NOT_FOUND)
}

async fn handle_blob(state: &State, req: &Request<Incoming>, name: &str, digest: &str) -> Reply {
    let Some(path) = state.store.blob_path(digest) else {
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            "not a sha256 digest",
        );
    };
    // Docker asking for a blob means an image still uses it.
    state.store.touch(digest);
    let Ok(meta) = tokio::fs::metadata(&path).await else {
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            &format!("{name}: {digest}"),
        );
    };
    let builder = reply(StatusCode::OK)
        .header("Content-Length", meta.len())
        .header("Docker-Content-Digest", digest)
        .header("Content-Type", "application/octet-stream");
    let body = match *req.method() {
        Method::HEAD => Bytes::new(),
        Method::GET => match tokio::fs::read(&path).await {
            Ok(data) => Bytes::from(data),
            Err(_) => return empty(StatusCode::INTERNAL_SERVER_ERROR),
        },
        _ => return empty(StatusCode::METHOD_NOT_ALLOWED),
    };
    builder.body(Full::new(body)).expect("valid response")
}

async fn handle_upload(state: &State, req: Request<Incoming>, name: &str, id: &str) -> Reply {
    let location = |id: &str| format!("/v2/{name}/blobs/uploads/{id}");
    match (req.method().clone(), id.is_empty()) {
        (Method::POST, true) => {
            // A cross-repository mount of a blob we hold needs no upload at all.
            if let Some(digest) = query_param(&req, "mount")
                && state.store.has(&digest)
            {
                return reply(StatusCode::CREATED)
                    .header("Location", format!("/v2/{name}/blobs/{digest}"))
                    .header("Docker-Content-Digest", digest)
                    .body(Full::new(Bytes::new()))
                    .expect("valid response");
            }
            let n = state
                .next_upload
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = format!("{}-{n}", std::process::id());
            let path = state.store.uploads().join(&id);
            if tokio::fs::File::create(&path).await.is_err() {
                return empty(StatusCode::INTERNAL_SERVER_ERROR);
            }
            let upload = Upload {
                path,
                hasher: Sha256::new(),
                size: 0,
            };
            state
                .uploads
                .lock()
                .expect("registry lock")
                .insert(id.clone(), upload);
            // A monolithic upload: POST ?digest= with the body.
            if let Some(digest) = query_param(&req, "digest") {
                return finish_upload(state, req, name, &id, &digest).await;
            }
            reply(StatusCode::ACCEPTED)
                .header("Location", location(&id))
                .header("Range", "0-0")
                .header("Docker-Upload-UUID", &id)
                .body(Full::new(Bytes::new()))
                .expect("valid response")
        }
        (Method::PATCH, false) => match append(state, req, id).await {
            Ok(size) => reply(StatusCode::ACCEPTED)
                .header("Location", location(id))
                .header("Range", format!("0-{}", size.saturating_sub(1)))
                .header("Docker-Upload-UUID", id)
                .body(Full::new(Bytes::new()))
                .expect("valid response"),
            Err(reply) => reply,
        },
        (Method::PUT, false) => match query_param(&req, "digest") {
            Some(digest) => finish_upload(state, req, name, id, &digest).await,
            None => error(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                "missing ?digest=",
            ),
        },
        (Method::DELETE, false) => {
            if let Some(upload) = state.uploads.lock().expect("registry lock").remove(id) {
                let _ = std::fs::remove_file(upload.path);
            }
            empty(StatusCode::NO_CONTENT)
        }
        _ => empty(StatusCode::METHOD_NOT_ALLOWED),
    }
}

/// Append the request body to an upload; returns the upload's size so far.
async fn append(state: &State, req: Request<Incoming>, id: &str) -> Result<u64, Reply> {
    let unknown = || error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", id);
    let (path, mut hasher, mut size) = {
        let mut uploads = state.uploads.lock().expect("registry lock");
        let upload = uploads.get_mut(id).ok_or_else(unknown)?;
        (upload.path.clone(), upload.hasher.clone(), upload.size)
    };
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .await
        .map_err(|_| unknown())?;
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| empty(StatusCode::BAD_REQUEST))?;
        if let Ok(data) = frame.into_data() {
            hasher.update(&data);
            size += data.len() as u64;
            file.write_all(&data)
                .await
                .map_err(|_| empty(StatusCode::INTERNAL_SERVER_ERROR))?;
        }
    }
    file.flush()
        .await
        .map_err(|_| empty(StatusCode::INTERNAL_SERVER_ERROR))?;
    let mut uploads = state.uploads.lock().expect("registry lock");
    let upload = uploads.get_mut(id).ok_or_else(unknown)?;
    upload.hasher = hasher;
    upload.size = size;
    Ok(size)
}

async fn finish_upload(
    state: &State,
    req: Request<Incoming>,
    name: &str,
    id: &str,
    digest: &str,
) -> Reply {
    if let Err(reply) = append(state, req, id).await {
        return reply;
    }
    let Some(upload) = state.uploads.lock().expect("registry lock").remove(id) else {
        return error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", id);
    };
    let actual = format!("sha256:{:x}", upload.hasher.finalize());
    let Some(target) = state.store.blob_path(digest).filter(|_| actual == digest) else {
        let _ = tokio::fs::remove_file(&upload.path).await;
        return error(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            &format!("content is {actual}"),
        );
    };
    if tokio::fs::rename(&upload.path, &target).await.is_err() {
        return empty(StatusCode::INTERNAL_SERVER_ERROR);
    }
    reply(StatusCode::CREATED)
        .header("Location", format!("/v2/{name}/blobs/{digest}"))
        .header("Docker-Content-Digest", digest)
        .body(Full::new(Bytes::new()))
        .expect("valid response")
}

async fn handle_manifest(
    state: &State,
    req: Request<Incoming>,
    name: &str,
    reference: &str,
) -> Reply {
    match req.method().clone() {
        Method::PUT => {
            let media_type = req
                .headers()
                .get("Content-Type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/vnd.docker.distribution.manifest.v2+json")
                .to_string();
            let Ok(body) = req.into_body().collect().await else {
                return empty(StatusCode::BAD_REQUEST);
            };
            let bytes = body.to_bytes();
            let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
            // Keep the manifest as a blob too, so `delta` can put it in an archive by digest.
            if let Some(path) = state.store.blob_path(&digest)
                && tokio::fs::write(&path, &bytes).await.is_err()
            {
                return empty(StatusCode::INTERNAL_SERVER_ERROR);
            }
            let manifest = Manifest {
                media_type,
                digest: digest.clone(),
                bytes,
            };
            state
                .manifests
                .lock()
                .expect("registry lock")
                .insert((name.to_string(), reference.to_string()), manifest);
            reply(StatusCode::CREATED)
                .header("Location", format!("/v2/{name}/manifests/{digest}"))
                .header("Docker-Content-Digest", digest)
                .body(Full::new(Bytes::new()))
                .expect("valid response")
        }
        Method::GET | Method::HEAD => {
            let found = state
                .manifests
                .lock()
                .expect("registry lock")
                .get(&(name.to_string(), reference.to_string()))
                .cloned();
            match found {
                Some(m) => {
                    let body = if req.method() == Method::GET {
                        m.bytes.clone()
                    } else {
                        Bytes::new()
                    };
                    reply(StatusCode::OK)
                        .header("Content-Type", m.media_type)
                        .header("Docker-Content-Digest", m.digest)
                        .header("Content-Length", m.bytes.len())
                        .body(Full::new(body))
                        .expect("valid response")
                }
                None => error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", reference),
            }
        }
        _ => empty(StatusCode::METHOD_NOT_ALLOWED),
    }
}

/// Where a blob of the store lives, for the archive builder.
pub fn blob_file(store: &Store, digest: &str) -> Option<PathBuf> {
    store.blob_path(digest).filter(|p| Path::new(p).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_removes_least_recently_used_blobs_first() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        let dir = tmp.path().join("blobs").join("sha256");
        std::fs::create_dir_all(&dir).unwrap();
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        for (i, c) in ['a', 'b', 'c'].into_iter().enumerate() {
            let path = store.blob_path(&digest(c)).unwrap();
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            let when =
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            std::fs::File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        store.touch(&digest('a')); // used just now: kept
        assert_eq!(store.prune(150).unwrap(), (2, 200));
        assert!(store.has(&digest('a')) && !store.has(&digest('b')) && !store.has(&digest('c')));
    }
}
