//! `fs/watchMissing` and `fs/missingChanged`: one one-shot watch per connection, created by
//! `connection::serve` (with the connection's own outgoing queue) and ended with it.
//!
//! A watch holds a `notify` (inotify) watcher on the nearest existing ancestor of each missing
//! path and on the parent of the `present` path; nothing polls. An event on a path of interest is
//! checked against the file system in the watcher's thread (the next missing component now
//! exists, the present path is gone, a watched ancestor is gone, or the kernel dropped events),
//! and only then wakes the watch's task, which sends `fs/missingChanged` once and ends the watch.
//! A change of the server's mount table (`/proc/self/mounts`, POLLPRI) fires it too. Each call
//! replaces the connection's previous watch, even when the new one is refused.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use notify::{RecursiveMode, Watcher as _};
use tokio::io::Interest as IoInterest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::fs_ops;
use crate::protocol::fs::{MissingChangedParams, WatchMissingParams, WatchMissingResult};
use crate::protocol::method;
use crate::rpc::encode::encode_notification;
use crate::rpc::{Outgoing, RpcError};

/// Most paths one watch may name; more is answered `watching:false`.
pub(crate) const MAX_WATCHED_PATHS: usize = 10_000;
/// Most directories one watch may hold an inotify watch on (the kernel's watches are a per-user
/// resource); more is answered `watching:false`.
pub(crate) const MAX_WATCHED_DIRECTORIES: usize = 1024;

/// Longest path a watch takes (the kernel's PATH_MAX): a longer one cannot be looked up, and
/// finding its nearest existing ancestor would cost a lookup per component.
const PATH_MAX: usize = 4096;

/// The `fs/watchMissing` state of one connection.
pub(crate) struct MissingWatch {
    /// The connection's outgoing queue, for `fs/missingChanged`.
    out: mpsc::Sender<Outgoing>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The highest id registered so far: an id must be above it (and above zero).
    last_id: u64,
    /// The live watch, if any.
    active: Option<Active>,
}

/// A live watch: dropping it stops the watcher and its task.
struct Active {
    id: u64,
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one event path means.
#[derive(Clone, Copy)]
enum Interest {
    /// A missing path (or its next missing component): fires when it exists.
    Appears,
    /// The present path, or a watched ancestor: fires when it is gone.
    Goes,
}

/// The paths a watch reacts to, and the directories it watches.
struct Plan {
    interests: HashMap<PathBuf, Interest>,
    directories: HashSet<PathBuf>,
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

impl Plan {
    /// Whether the event on `path` is a change the watch reports.
    fn fired_by(&self, path: &Path) -> bool {
        match self.interests.get(path) {
            Some(Interest::Appears) => exists(path),
            Some(Interest::Goes) => !exists(path),
            None => false,
        }
    }

    /// Whether any watched condition already changed.
    fn any_changed(&self) -> bool {
        self.interests.keys().any(|p| self.fired_by(p))
    }
}

/// The plan for the request, or `None` when it is answered `watching:false`.
fn plan(missing: &[PathBuf], present: Option<&Path>) -> Option<Plan> {
    if missing.is_empty() || missing.len() > MAX_WATCHED_PATHS {
        return None;
    }
    let mut interests = HashMap::new();
    let mut directories = HashSet::new();
    let too_long = |p: &Path| p.as_os_str().len() > PATH_MAX;
    if missing.iter().any(|p| too_long(p)) || present.is_some_and(too_long) {
        return None;
    }
    for path in missing {
        if exists(path) {
            return None;
        }
        // The nearest existing ancestor, and the first missing component below it.
        let mut next = path.as_path();
        let ancestor = loop {
            let parent = next.parent()?;
            if exists(parent) {
                break parent;
            }
            next = parent;
        };
        interests.insert(next.to_path_buf(), Interest::Appears);
        interests
            .entry(ancestor.to_path_buf())
            .or_insert(Interest::Goes);
        directories.insert(ancestor.to_path_buf());
    }
    if let Some(present) = present {
        if !exists(present) {
            return None;
        }
        interests.insert(present.to_path_buf(), Interest::Goes);
        directories.insert(present.parent().unwrap_or(present).to_path_buf());
    }
    if directories.len() > MAX_WATCHED_DIRECTORIES {
        return None;
    }
    Some(Plan {
        interests,
        directories,
    })
}

impl MissingWatch {
    pub(crate) fn new(out: mpsc::Sender<Outgoing>) -> Self {
        Self {
            out,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the live watch (the connection ended).
    pub(crate) fn close(&self) {
        let old = self.lock().active.take();
        drop(old);
    }
}

/// `fs/watchMissing` on the connection whose watch `watches` is (the handler is
/// `server::fs::watch_missing`).
pub(super) async fn register(
    watches: &Arc<MissingWatch>,
    p: WatchMissingParams,
) -> Result<WatchMissingResult, RpcError> {
    let refused = Ok(WatchMissingResult { watching: false });
    let id = p.watch_id;
    // A path that is not a `file:` URI is bad params (as the reference decodes them): refused
    // before the connection's watch is touched.
    let missing = p
        .missing
        .iter()
        .map(|uri| fs_ops::resolve_uri("missing", uri))
        .collect::<Result<Vec<_>, _>>()?;
    let present = p
        .present
        .as_deref()
        .map(|uri| fs_ops::resolve_uri("present", uri))
        .transpose()?;
    {
        let mut state = watches.lock();
        // Replaced, even if the new one is refused.
        let old = state.active.take();
        let fresh = id > state.last_id;
        if fresh {
            state.last_id = id;
        }
        drop(state);
        drop(old);
        if !fresh {
            return refused;
        }
    }
    let built = tokio::task::spawn_blocking(move || {
        let plan = Arc::new(plan(&missing, present.as_deref())?);
        let (tx, rx) = mpsc::channel::<()>(1);
        let seen = plan.clone();
        let watcher_tx = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let fired = match event {
                    Ok(event) if !event.need_rescan() => {
                        event.paths.iter().any(|path| seen.fired_by(path))
                    }
                    // Lost events (or a watcher error): the paths may have changed.
                    _ => true,
                };
                if fired {
                    let _ = watcher_tx.try_send(());
                }
            })
            .map_err(|err| tracing::debug!(%err, "metadata watch unavailable"))
            .ok()?;
        for dir in &plan.directories {
            if let Err(err) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::debug!(%err, "metadata watch unavailable");
                return None;
            }
        }
        // A change between the first look and the watches being in place still fires.
        if plan.any_changed() {
            let _ = tx.try_send(());
        }
        Some((watcher, rx))
    })
    .await
    .map_err(|e| RpcError::internal(format!("filesystem task failed: {e}")))?;
    let Some((watcher, rx)) = built else {
        return refused;
    };
    let mut state = watches.lock();
    if state.last_id != id {
        // A later call replaced this one meanwhile.
        return refused;
    }
    let mounts = mount_changes();
    let task = tokio::spawn(fire(
        Arc::downgrade(watches),
        watches.out.clone(),
        id,
        rx,
        mounts,
    ));
    state.active = Some(Active {
        id,
        _watcher: watcher,
        task,
    });
    Ok(WatchMissingResult { watching: true })
}

/// The mount table of this process, to wait on for a change; `None` (logged) where it cannot be
/// watched: the watch then reacts to file events only.
fn mount_changes() -> Option<AsyncFd<std::fs::File>> {
    let watched = std::fs::File::open("/proc/self/mounts").and_then(super::sys::watch_priority);
    watched
        .map_err(|err| tracing::debug!(%err, "mount changes unavailable for missing-path watch"))
        .ok()
}

/// Waits for the watch `id` to fire, sends `fs/missingChanged`, and ends the watch.
async fn fire(
    watches: Weak<MissingWatch>,
    out: mpsc::Sender<Outgoing>,
    id: u64,
    mut rx: mpsc::Receiver<()>,
    mounts: Option<AsyncFd<std::fs::File>>,
) {
    let mounted = async {
        match &mounts {
            // The kernel flags the mount table's file with POLLPRI when a mount changes (a
            // mount can bring a missing path into view, or hide a present one).
            Some(fd) => {
                let _ = fd.ready(IoInterest::PRIORITY).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        got = rx.recv() => if got.is_none() { return },
        () = mounted => tracing::debug!("mount table changed: invalidating watched missing paths"),
    }
    let message = encode_notification(
        method::FS_MISSING_CHANGED,
        MissingChangedParams { watch_id: id },
    );
    let _ = out.send(message.into()).await;
    if let Some(watches) = watches.upgrade() {
        let mut state = watches.lock();
        if state.active.as_ref().is_some_and(|a| a.id == id) {
            // Dropping it aborts this task, which is finishing anyway.
            let done = state.active.take();
            drop(state);
            drop(done);
        }
    }
}
