//! Watching the project: from file-system events to change sets.
//!
//! Owns the notify watcher (recursive on the project root, or notify's `PollWatcher` with
//! `--poll`), whose callback only forwards events into a channel; the debounce (a quiet period);
//! the ignore rules and path → artifact/config mapping ([`filter`]); and change detection by
//! content — a hash per tracked file, so a save that writes the same bytes is no change. Events
//! that arrive while the caller is busy (a build) wait in the channel and form the next round; a
//! caller that has work to retry can also ask to be woken at a time when no round comes first.
//! It does not decide what to do with a change (sync, rebuild, redeploy): that is `up`'s loop.

pub mod filter;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hasher;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Project;
pub use filter::{Class, Filter, IgnoreReason};

/// The quiet period when none is given.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);
/// How often `--poll` looks at the tree.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("the OS limit on file watches is exhausted while watching {}", root.display())]
    Limit {
        root: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("failed to watch {}", root.display())]
    Start {
        root: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("the file watcher reported an error")]
    Event {
        #[source]
        source: notify::Error,
    },
    #[error("failed to scan {} for its initial state", root.display())]
    Scan {
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl WatchError {
    pub fn hint(&self) -> Option<String> {
        match self {
            WatchError::Limit { .. } => Some(
                "inotify watches are limited by fs.inotify.max_user_watches (and instances by \
                 fs.inotify.max_user_instances): raise them with \
                 `sudo sysctl fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=512` \
                 (persist in /etc/sysctl.d/), ignore big directories in .devloopignore, \
                 or run `devloop up --poll`"
                    .into(),
            ),
            WatchError::Start { .. } | WatchError::Event { .. } => {
                Some("`devloop up --poll` watches by polling instead".into())
            }
            WatchError::Scan { .. } => None,
        }
    }
}

/// How to watch.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Quiet period: a round ends once no event came for this long.
    pub debounce: Duration,
    /// Poll the tree instead of using OS notifications.
    pub poll: bool,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            debounce: DEFAULT_DEBOUNCE,
            poll: false,
        }
    }
}

/// One changed file of an artifact's context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub path: PathBuf,
    /// Relative to the artifact's context, `/`-separated.
    pub rel: String,
    pub removed: bool,
}

/// What one debounced round of events amounts to.
#[derive(Debug, Default)]
pub struct ChangeSet {
    /// Configuration files whose content changed, relative to the project root.
    pub config: Vec<String>,
    /// Artifact index → its changed files.
    pub artifacts: BTreeMap<usize, Vec<Changed>>,
    /// Paths left out, by reason.
    pub ignored: BTreeMap<IgnoreReason, usize>,
    /// Tracked files saved with the same bytes, relative to the project root.
    pub unchanged: Vec<String>,
    /// Changed paths that belong to no artifact and no configuration.
    pub outside: Vec<String>,
    /// Whether an ignore file changed (the rules were reloaded).
    pub rules_changed: bool,
    /// Problems the watcher reported during the round.
    pub errors: Vec<WatchError>,
}

impl ChangeSet {
    /// Whether anything needs doing.
    pub fn is_actionable(&self) -> bool {
        !self.config.is_empty() || !self.artifacts.is_empty()
    }
}

/// What ended a wait of [`Watcher::next_or_wake`].
#[derive(Debug)]
pub enum Wake {
    Changes(ChangeSet),
    /// The wake-up time came first.
    Timer,
}

enum Message {
    Paths(Vec<PathBuf>),
    Error(notify::Error),
}

/// Tracked files and the rules, shared with the blocking classification task.
struct State {
    filter: Filter,
    project: Project,
    /// Content hash of every tracked (relevant) file.
    hashes: HashMap<PathBuf, u64>,
}

/// A running watch of one project.
pub struct Watcher {
    // Held for its lifetime: dropping it stops the OS watch.
    _inner: Box<dyn notify::Watcher + Send>,
    rx: mpsc::UnboundedReceiver<Message>,
    state: Arc<Mutex<State>>,
    debounce: Duration,
    root: PathBuf,
}

impl Watcher {
    /// Watch `project`'s root and record the content of every tracked file.
    pub async fn start(project: &Project, settings: &WatchSettings) -> Result<Self, WatchError> {
        let root = project.root.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        // The callback only forwards: filtering and hashing happen in the async loop.
        let handler = move |event: notify::Result<notify::Event>| {
            let message = match event {
                Ok(event) if is_noise(&event.kind) => return,
                Ok(event) => Message::Paths(event.paths),
                Err(e) => Message::Error(e),
            };
            let _ = tx.send(message);
        };
        let mut inner: Box<dyn notify::Watcher + Send> = if settings.poll {
            let config = notify::Config::default()
                .with_poll_interval(POLL_INTERVAL)
                .with_compare_contents(false);
            Box::new(
                notify::PollWatcher::new(handler, config)
                    .map_err(|source| start_error(&root, source))?,
            )
        } else {
            Box::new(
                notify::RecommendedWatcher::new(handler, notify::Config::default())
                    .map_err(|source| start_error(&root, source))?,
            )
        };
        let state = State {
            filter: Filter::new(project),
            project: project.clone(),
            hashes: HashMap::new(),
        };
        // Record the baseline before watching, so every later event compares against it; the
        // scan reads every tracked file once, off the async threads.
        let state = tokio::task::spawn_blocking(move || {
            let mut state = state;
            let mut hashes = HashMap::new();
            scan(&state.filter, state.filter.root(), &mut hashes)?;
            state.hashes = hashes;
            Ok::<_, std::io::Error>(state)
        })
        .await
        .map_err(|e| WatchError::Scan {
            root: root.clone(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| WatchError::Scan {
            root: root.clone(),
            source,
        })?;
        inner
            .watch(&root, RecursiveMode::Recursive)
            .map_err(|source| start_error(&root, source))?;
        Ok(Self {
            _inner: inner,
            rx,
            state: Arc::new(Mutex::new(state)),
            debounce: settings.debounce,
            root,
        })
    }

    /// How many files are tracked by content.
    pub fn tracked(&self) -> usize {
        self.lock().hashes.len()
    }

    /// Use the rules of a re-loaded project from now on.
    pub fn reload(&mut self, project: &Project) {
        let mut state = self.lock();
        state.filter = Filter::new(project);
        state.project = project.clone();
    }

    /// Wait for the next round of changes: the first event, then until `debounce` passes with
    /// no new one. `None` once `cancel` fires. Rounds that change nothing are returned too, so
    /// the caller can say why nothing happens.
    pub async fn next(&mut self, cancel: &CancellationToken) -> Option<ChangeSet> {
        loop {
            if let Wake::Changes(changes) = self.next_or_wake(cancel, None).await? {
                return Some(changes);
            }
        }
    }

    /// [`Watcher::next`], or [`Wake::Timer`] at `wake` if no event has come by then (a round that
    /// has begun is always finished first, so no event is lost to the timer).
    pub async fn next_or_wake(
        &mut self,
        cancel: &CancellationToken,
        wake: Option<tokio::time::Instant>,
    ) -> Option<Wake> {
        let mut paths: BTreeSet<PathBuf> = BTreeSet::new();
        let mut errors = Vec::new();
        let timer = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let first = tokio::select! {
            m = self.rx.recv() => m?,
            _ = timer => return Some(Wake::Timer),
            _ = cancel.cancelled() => return None,
        };
        take(first, &mut paths, &mut errors, &self.root);
        // A file that never stops changing (a log) must not hold the round forever.
        let deadline = Instant::now() + (self.debounce * 20).max(Duration::from_secs(2));
        loop {
            let quiet = tokio::time::sleep(self.debounce);
            tokio::select! {
                m = self.rx.recv() => match m {
                    Some(m) => take(m, &mut paths, &mut errors, &self.root),
                    None => break,
                },
                _ = quiet => break,
                _ = cancel.cancelled() => return None,
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        let state = self.state.clone();
        let classified = tokio::task::spawn_blocking(move || {
            let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
            state.round(paths)
        })
        .await;
        let mut changes = classified.unwrap_or_default();
        changes.errors = errors;
        Some(Wake::Changes(changes))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Classify and hash one round of raw paths.
    fn round(&mut self, paths: BTreeSet<PathBuf>) -> ChangeSet {
        let mut changes = ChangeSet::default();
        // A directory that appeared (mkdir -p, a moved tree) may hold files that raised no
        // event of their own before the OS watch reached them.
        let mut files: BTreeSet<PathBuf> = BTreeSet::new();
        for path in paths {
            if path.is_dir() {
                // A new ignored directory counts as one ignored change (its files may raise
                // no event of their own).
                if let Class::Ignored(reason) = self.filter.classify(&path, true) {
                    *changes.ignored.entry(reason).or_default() += 1;
                }
                let mut found = HashMap::new();
                if !self.filter.skip_dir(&path) && scan(&self.filter, &path, &mut found).is_ok() {
                    files.extend(found.into_keys().filter(|p| !self.hashes.contains_key(p)));
                }
                // A removed-and-recreated directory's tracked files are checked below too.
                files.extend(
                    self.hashes
                        .keys()
                        .filter(|p| p.starts_with(&path) && !p.exists())
                        .cloned(),
                );
                continue;
            }
            // A removed directory: its tracked files went with it.
            if !path.exists() {
                files.extend(self.hashes.keys().filter(|p| p.starts_with(&path)).cloned());
            }
            files.insert(path);
        }
        let mut seen = HashSet::new();
        for path in files {
            if !seen.insert(path.clone()) {
                continue;
            }
            let rel = path
                .strip_prefix(self.filter.root())
                .map(filter::slash_path)
                .unwrap_or_else(|_| path.display().to_string());
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let class = self.filter.classify(&path, false);
            if let Class::Ignored(reason) = class {
                *changes.ignored.entry(reason).or_default() += 1;
                continue;
            }
            let now = hash_file(&path).ok();
            let before = self.hashes.get(&path).copied();
            if now == before {
                if now.is_some() && class.is_relevant() {
                    changes.unchanged.push(rel);
                }
                continue;
            }
            match now {
                Some(h) if class.is_relevant() => {
                    self.hashes.insert(path.clone(), h);
                }
                _ => {
                    self.hashes.remove(&path);
                }
            }
            if filter::RULE_FILES.contains(&name) {
                changes.rules_changed = true;
            }
            match class {
                Class::Config => changes.config.push(rel),
                Class::Artifacts(owners) => {
                    for (i, rel) in owners {
                        changes.artifacts.entry(i).or_default().push(Changed {
                            path: path.clone(),
                            rel,
                            removed: now.is_none(),
                        });
                    }
                }
                Class::Outside => {
                    // Untracked files outside every context are not worth a hash each; a
                    // change of their bytes cannot matter.
                    if now.is_some() || before.is_some() {
                        changes.outside.push(rel);
                    }
                }
                Class::Ignored(_) => {}
            }
        }
        if changes.rules_changed {
            self.filter = Filter::new(&self.project);
        }
        changes
    }
}

fn take(
    message: Message,
    paths: &mut BTreeSet<PathBuf>,
    errors: &mut Vec<WatchError>,
    root: &Path,
) {
    match message {
        Message::Paths(p) => paths.extend(p),
        Message::Error(e) if is_limit(&e) => errors.push(WatchError::Limit {
            root: root.to_path_buf(),
            source: e,
        }),
        Message::Error(e) => errors.push(WatchError::Event { source: e }),
    }
}

/// Events that cannot change content: reads, opens, closes without writing.
fn is_noise(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => false,
        EventKind::Access(_) => true,
        _ => false,
    }
}

fn is_limit(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => true,
        // ENOSPC (watches) and EMFILE (instances) from inotify.
        notify::ErrorKind::Io(io) => matches!(io.raw_os_error(), Some(28) | Some(24)),
        _ => false,
    }
}

fn start_error(root: &Path, source: notify::Error) -> WatchError {
    let root = root.to_path_buf();
    if is_limit(&source) {
        WatchError::Limit { root, source }
    } else {
        WatchError::Start { root, source }
    }
}

/// Hash every relevant file below `dir`, skipping directories nothing below matters in.
fn scan(filter: &Filter, dir: &Path, out: &mut HashMap<PathBuf, u64>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // Gone or unreadable since the event: nothing to track there.
        Err(e) if dir != filter.root() => {
            tracing::debug!("skipping {}: {e}", dir.display());
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            if !filter.skip_dir(&path) {
                scan(filter, &path, out)?;
            }
        } else if filter.classify(&path, false).is_relevant()
            && let Ok(h) = hash_file(&path)
        {
            out.insert(path, h);
        }
    }
    Ok(())
}

/// A fast non-cryptographic digest of a file's bytes (or a symlink's target) and exec bit.
pub fn hash_file(path: &Path) -> std::io::Result<u64> {
    let meta = std::fs::symlink_metadata(path)?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    if meta.file_type().is_symlink() {
        hasher.write(std::fs::read_link(path)?.to_string_lossy().as_bytes());
        hasher.write_u8(2);
        return Ok(hasher.finish());
    }
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        hasher.write_u8((meta.permissions().mode() & 0o111 != 0) as u8);
    }
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.write(&buf[..n]);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_watches_name_the_limit_and_the_fix() {
        let root = Path::new("/p");
        for source in [
            notify::Error::new(notify::ErrorKind::MaxFilesWatch),
            notify::Error::io(std::io::Error::from_raw_os_error(28)),
        ] {
            let e = start_error(root, source);
            assert!(matches!(e, WatchError::Limit { .. }), "{e:?}");
            let hint = e.hint().unwrap();
            assert!(hint.contains("fs.inotify.max_user_watches"), "{hint}");
            assert!(hint.contains("--poll"), "{hint}");
        }
        let other = start_error(root, notify::Error::path_not_found());
        assert!(matches!(other, WatchError::Start { .. }));
    }

    #[test]
    fn reads_and_closes_are_not_changes() {
        use notify::event::{AccessKind, AccessMode, ModifyKind};
        assert!(is_noise(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(is_noise(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_noise(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!is_noise(&EventKind::Modify(ModifyKind::Any)));
    }
}
