//! `fs/watch`, `fs/unwatch` and `fs/changed`: a connection's watches of paths (a directory's
//! entries, a whole tree with `recursive`, or one file), created by `connection::serve` with the
//! connection's outgoing queue and ended with it.
//!
//! One `notify` (inotify) watcher per connection, made at its first watch, carries every watch
//! of the connection: the kernel's inotify instances are a small per-user resource (128 by
//! default). Its thread hands each event straight to the watches whose path covers it (nothing is
//! queued in between): each keeps a bounded batch of pending changes (duplicates merged; more
//! than [`MAX_PENDING_CHANGES`] changes or [`MAX_PENDING_PATH_BYTES`] of paths, a lost kernel
//! event or a watcher error replace the batch by one `overflow` change). A task per watch waits
//! for its batch to start, lets it gather for [`COALESCE`], waits for room on the connection's
//! queue (the batch goes on coalescing meanwhile: nothing blocks the watcher's thread) and sends
//! it as one `fs/changed`. Nothing polls.
//!
//! The watcher knows paths, not watches: two watches on nested paths share the kernel's watch of
//! the inner directory. So each change of what is registered is followed by registering again
//! the watches it may have disturbed (the recursive ones above it, the ones below it); a change
//! in those directories in that instant may be missed. Paths are registered canonical (so two
//! spellings of one directory agree) and reported as the client spelled the watched path.
//!
//! Locks: `table` is what the watcher's thread dispatches to, held briefly and never while
//! calling the watcher; `registrar` holds the watcher and is held while calling it (a blocking
//! round trip to its thread), never by that thread. A watch's `pending` is taken inside `table`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use serde_json::Value;
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;
use tokio_util::task::TaskTracker;

use super::sandboxing;
use crate::fs_ops::{self, FsError};
use crate::path_uri;
use crate::protocol::fs::{
    Change, ChangeKind, ChangedParams, MAX_WATCH_ID_BYTES, UnwatchParams, WatchParams,
};
use crate::protocol::method;
use crate::rpc::encode::encode_notification;
use crate::rpc::{Outgoing, RpcError};
use crate::sandbox::policy::ResolvedEntry;

/// Most watches one connection may hold.
pub(crate) const MAX_WATCHES_PER_CONNECTION: usize = 64;
/// Most distinct changes one watch keeps pending; beyond, the batch becomes one `overflow`.
pub(crate) const MAX_PENDING_CHANGES: usize = 1000;
/// Most bytes of paths one watch keeps pending; beyond, the batch becomes one `overflow`.
pub(crate) const MAX_PENDING_PATH_BYTES: usize = 256 << 10;
/// How long a batch gathers before it is sent: at most one `fs/changed` per watch per window.
pub(crate) const COALESCE: Duration = Duration::from_millis(50);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The watches of one connection.
pub(crate) struct Watches {
    /// The connection's outgoing queue, for `fs/changed`.
    out: mpsc::Sender<Outgoing>,
    /// Where the watches' tasks run.
    tracker: TaskTracker,
    /// What the watcher's thread dispatches to.
    table: Arc<Mutex<Table>>,
    /// The watcher and what is registered with it.
    registrar: Mutex<Registrar>,
}

#[derive(Default)]
struct Table {
    /// The connection ended: no watch is added any more.
    closed: bool,
    /// Every id in use: `None` while its `fs/watch` is being set up.
    watches: HashMap<String, Option<Arc<Watch>>>,
}

/// One watch.
struct Watch {
    id: String,
    /// The watched path as the client spelled it (changes are reported under it).
    given: PathBuf,
    /// Its canonical form, as registered with the watcher (events come under it).
    root: PathBuf,
    recursive: bool,
    /// The caller's sandbox entries when its reads are restricted: changes on paths it may not
    /// read are not reported.
    read_entries: Option<Vec<ResolvedEntry>>,
    pending: Mutex<Pending>,
    /// Fired when the batch starts.
    wake: Notify,
    /// The delivering task.
    task: Mutex<Option<AbortHandle>>,
}

/// A watch's changes not yet sent.
#[derive(Default)]
struct Pending {
    /// Unwatched (or the connection ended): nothing more is sent.
    closed: bool,
    /// Changes were lost: the batch is one `overflow` change.
    overflow: bool,
    changes: Vec<(PathBuf, ChangeKind)>,
    seen: HashSet<(PathBuf, ChangeKind)>,
    /// Bytes of paths held (each is held twice: in `changes` and in `seen`).
    bytes: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        !self.overflow && self.changes.is_empty()
    }

    /// Adds a change; whether the batch just started.
    fn push(&mut self, path: PathBuf, kind: ChangeKind) -> bool {
        if self.closed || self.overflow {
            return false;
        }
        let started = self.is_empty();
        let key = (path, kind);
        if self.seen.contains(&key) {
            return false;
        }
        let bytes = 2 * key.0.as_os_str().len();
        if self.changes.len() >= MAX_PENDING_CHANGES || self.bytes + bytes > MAX_PENDING_PATH_BYTES
        {
            self.lose();
            return started;
        }
        self.bytes += bytes;
        self.changes.push(key.clone());
        self.seen.insert(key);
        started
    }

    /// Changes were lost: the batch becomes one `overflow`; whether the batch just started.
    fn lose(&mut self) -> bool {
        if self.closed {
            return false;
        }
        let started = self.is_empty();
        self.overflow = true;
        self.changes = Vec::new();
        self.seen = HashSet::new();
        self.bytes = 0;
        started
    }

    /// The batch, leaving it empty: `None` if there is nothing to send.
    fn take(&mut self) -> Option<(bool, Vec<(PathBuf, ChangeKind)>)> {
        if self.closed || self.is_empty() {
            return None;
        }
        let overflow = std::mem::take(&mut self.overflow);
        let changes = std::mem::take(&mut self.changes);
        self.seen = HashSet::new();
        self.bytes = 0;
        Some((overflow, changes))
    }
}

impl Watch {
    /// Whether an event on `path` (canonical spelling) concerns this watch.
    fn covers(&self, path: &Path) -> bool {
        if self.recursive {
            path.starts_with(&self.root)
        } else {
            path == self.root || path.parent() == Some(&self.root)
        }
    }

    /// Whether the caller's sandbox lets it read `path`.
    fn may_read(&self, path: &Path) -> bool {
        match &self.read_entries {
            Some(entries) => crate::sandbox::fs_helper::read_allowed(entries, path),
            None => true,
        }
    }

    fn push(&self, path: &Path, kind: ChangeKind) {
        let reported = match path.strip_prefix(&self.root) {
            Ok(rest) if rest.as_os_str().is_empty() => self.given.clone(),
            Ok(rest) => self.given.join(rest),
            Err(_) => return,
        };
        if lock(&self.pending).push(reported, kind) {
            self.wake.notify_one();
        }
    }

    fn lose(&self) {
        if lock(&self.pending).lose() {
            self.wake.notify_one();
        }
    }

    /// Stops the watch: nothing more is sent once this returns.
    fn close(&self) {
        lock(&self.pending).closed = true;
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// What a `notify` event means for a watch.
fn kind_of(kind: &notify::EventKind) -> Option<ChangeKind> {
    use notify::EventKind as K;
    use notify::event::ModifyKind;
    match kind {
        K::Create(_) => Some(ChangeKind::Created),
        K::Remove(_) => Some(ChangeKind::Removed),
        K::Modify(ModifyKind::Name(_)) => Some(ChangeKind::Renamed),
        K::Modify(_) => Some(ChangeKind::Modified),
        K::Access(_) | K::Any | K::Other => None,
    }
}

/// Runs in the watcher's thread: hands an event to the watches it concerns. Never blocks on
/// anything but the short locks of the table and of a watch's batch.
fn dispatch(table: &Mutex<Table>, event: notify::Result<notify::Event>) {
    let table = lock(table);
    let live = || table.watches.values().flatten();
    match event {
        Ok(event) if event.need_rescan() => live().for_each(|w| w.lose()),
        Ok(event) => {
            let Some(kind) = kind_of(&event.kind) else {
                return;
            };
            for path in &event.paths {
                for watch in live().filter(|w| w.covers(path) && w.may_read(path)) {
                    watch.push(path, kind);
                }
            }
        }
        Err(err) => {
            // The kind only: the message names paths.
            tracing::debug!(kind = ?std::mem::discriminant(&err.kind), "file watcher error");
            let concerned =
                |w: &&Arc<Watch>| err.paths.is_empty() || err.paths.iter().any(|p| w.covers(p));
            live().filter(concerned).for_each(|w| w.lose());
        }
    }
}

/// The connection's watcher and the roots registered with it.
#[derive(Default)]
struct Registrar {
    watcher: Option<notify::RecommendedWatcher>,
    /// Per canonical root: how many watches want it (non-recursive, recursive).
    registered: HashMap<PathBuf, (usize, usize)>,
}

fn mode_of(counts: (usize, usize)) -> Option<RecursiveMode> {
    match counts {
        (_, r) if r > 0 => Some(RecursiveMode::Recursive),
        (n, _) if n > 0 => Some(RecursiveMode::NonRecursive),
        _ => None,
    }
}

impl Registrar {
    fn watcher(
        &mut self,
        table: &Arc<Mutex<Table>>,
    ) -> Result<&mut notify::RecommendedWatcher, RpcError> {
        if self.watcher.is_none() {
            let table: Weak<Mutex<Table>> = Arc::downgrade(table);
            let handler = move |event: notify::Result<notify::Event>| {
                if let Some(table) = table.upgrade() {
                    dispatch(&table, event);
                }
            };
            let config = notify::Config::default().with_follow_symlinks(false);
            let watcher = notify::RecommendedWatcher::new(handler, config).map_err(|e| {
                RpcError::internal(format!("cannot create a file watcher: {}", e.kind_text()))
            })?;
            self.watcher = Some(watcher);
        }
        Ok(self.watcher.as_mut().expect("made above"))
    }

    /// Registers one more watch of `root`.
    fn add(
        &mut self,
        table: &Arc<Mutex<Table>>,
        root: &Path,
        recursive: bool,
    ) -> Result<(), RpcError> {
        let counts = self.registered.get(root).copied().unwrap_or_default();
        let mut after = counts;
        if recursive {
            after.1 += 1;
        } else {
            after.0 += 1;
        }
        if mode_of(counts) != mode_of(after) {
            let mode = mode_of(after).expect("one more watch");
            if let Err(err) = self.watcher(table)?.watch(root, mode) {
                // What a failed recursive registration left behind goes.
                self.settle(root);
                return Err(watch_error(err, root));
            }
        }
        self.registered.insert(root.to_path_buf(), after);
        self.restore_around(root);
        Ok(())
    }

    /// Unregisters one watch of `root`.
    fn remove(&mut self, root: &Path, recursive: bool) {
        let Some(counts) = self.registered.get(root).copied() else {
            return;
        };
        let mut after = counts;
        if recursive {
            after.1 = after.1.saturating_sub(1);
        } else {
            after.0 = after.0.saturating_sub(1);
        }
        if mode_of(after).is_none() {
            self.registered.remove(root);
        } else {
            self.registered.insert(root.to_path_buf(), after);
        }
        if mode_of(counts) != mode_of(after) {
            self.settle(root);
        }
    }

    /// Makes the watcher's registration of `root` what `registered` says, then registers again
    /// the watches it may have disturbed.
    fn settle(&mut self, root: &Path) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        // Gone already when the directory was removed.
        let _ = watcher.unwatch(root);
        if let Some(mode) = self.registered.get(root).copied().and_then(mode_of)
            && let Err(err) = watcher.watch(root, mode)
        {
            tracing::debug!(kind = ?std::mem::discriminant(&err.kind), "file watch lost");
        }
        self.restore_around(root);
    }

    /// Registers again every other root above `root` (recursive: they cover it) or below it.
    fn restore_around(&mut self, root: &Path) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for (other, counts) in &self.registered {
            let Some(mode) = mode_of(*counts) else {
                continue;
            };
            let above = root.starts_with(other) && mode == RecursiveMode::Recursive;
            if other != root
                && (above || other.starts_with(root))
                && let Err(err) = watcher.watch(other, mode)
            {
                tracing::debug!(kind = ?std::mem::discriminant(&err.kind), "file watch lost");
            }
        }
    }
}

/// A short text for a `notify` error (its paths left out).
trait KindText {
    fn kind_text(&self) -> String;
}

impl KindText for notify::Error {
    fn kind_text(&self) -> String {
        match &self.kind {
            notify::ErrorKind::Generic(s) => s.clone(),
            notify::ErrorKind::Io(e) => e.to_string(),
            notify::ErrorKind::PathNotFound => "no such path".into(),
            notify::ErrorKind::WatchNotFound => "no such watch".into(),
            notify::ErrorKind::InvalidConfig(_) => "invalid configuration".into(),
            notify::ErrorKind::MaxFilesWatch => "the inotify watch limit is reached".into(),
        }
    }
}

/// A failed registration as the answer to `fs/watch`.
fn watch_error(err: notify::Error, path: &Path) -> RpcError {
    match err.kind {
        notify::ErrorKind::Io(e) => FsError::io(e, path).into(),
        notify::ErrorKind::PathNotFound => {
            FsError::io(std::io::Error::from(std::io::ErrorKind::NotFound), path).into()
        }
        notify::ErrorKind::MaxFilesWatch => RpcError::invalid_request(
            "cannot watch: the system's limit of inotify watches is reached \
             (fs.inotify.max_user_watches)",
        ),
        _ => RpcError::internal(format!("cannot watch: {}", err.kind_text())),
    }
}

impl Watches {
    pub(crate) fn new(out: mpsc::Sender<Outgoing>, tracker: TaskTracker) -> Self {
        Self {
            out,
            tracker,
            table: Arc::default(),
            registrar: Mutex::default(),
        }
    }

    /// Takes `id` for a watch being set up.
    fn reserve(&self, id: &str) -> Result<(), RpcError> {
        let mut table = lock(&self.table);
        if table.closed {
            return Err(RpcError::invalid_request("the connection is closing"));
        }
        if table.watches.contains_key(id) {
            return Err(RpcError::invalid_request(format!(
                "watch `{id}` already exists"
            )));
        }
        if table.watches.len() >= MAX_WATCHES_PER_CONNECTION {
            return Err(RpcError::invalid_request(format!(
                "at most {MAX_WATCHES_PER_CONNECTION} watches may be open per connection"
            )));
        }
        table.watches.insert(id.to_string(), None);
        Ok(())
    }

    /// Frees `id` if it is still only reserved.
    fn release(&self, id: &str) {
        let mut table = lock(&self.table);
        if matches!(table.watches.get(id), Some(None)) {
            table.watches.remove(id);
        }
    }

    /// Sets up the watch reserved as `id` (blocking: it walks a tree and waits on the watcher).
    fn setup(
        &self,
        id: String,
        given: PathBuf,
        recursive: bool,
        read_entries: Option<Vec<ResolvedEntry>>,
    ) -> Result<(), RpcError> {
        // Missing or unreadable: what the other fs methods answer.
        let meta = std::fs::metadata(&given).map_err(|e| FsError::io(e, &given))?;
        if meta.is_dir() {
            std::fs::read_dir(&given).map_err(|e| FsError::io(e, &given))?;
        } else {
            std::fs::File::open(&given).map_err(|e| FsError::io(e, &given))?;
        }
        let root = std::fs::canonicalize(&given).map_err(|e| FsError::io(e, &given))?;
        if let Some(entries) = &read_entries
            && !crate::sandbox::fs_helper::read_allowed(entries, &root)
        {
            let denied = std::io::Error::from_raw_os_error(libc::EACCES);
            return Err(FsError::io(denied, &given).into());
        }
        let watch = Arc::new(Watch {
            id: id.clone(),
            given,
            root,
            recursive,
            read_entries,
            pending: Mutex::default(),
            wake: Notify::new(),
            task: Mutex::default(),
        });
        let mut registrar = lock(&self.registrar);
        registrar.add(&self.table, &watch.root, recursive)?;
        let task = self.tracker.spawn(deliver(watch.clone(), self.out.clone()));
        *lock(&watch.task) = Some(task.abort_handle());
        let mut table = lock(&self.table);
        let closed = table.closed;
        let placed = match table.watches.get_mut(&id) {
            Some(slot @ None) if !closed => {
                *slot = Some(watch.clone());
                true
            }
            // Unwatched meanwhile, or the connection ended.
            _ => false,
        };
        drop(table);
        if !placed {
            watch.close();
            registrar.remove(&watch.root, recursive);
        }
        if closed {
            registrar.watcher = None;
        }
        Ok(())
    }

    /// Ends the watch `id`, if there is one.
    fn unwatch(&self, id: &str) {
        let removed = lock(&self.table).watches.remove(id);
        if let Some(Some(watch)) = removed {
            watch.close();
            lock(&self.registrar).remove(&watch.root, watch.recursive);
        }
    }

    /// Ends every watch (the connection ended). The watcher goes now, or with the last
    /// reference to this if a watch is being set up.
    pub(crate) fn close(&self) {
        let watches = {
            let mut table = lock(&self.table);
            table.closed = true;
            std::mem::take(&mut table.watches)
        };
        for watch in watches.into_values().flatten() {
            watch.close();
        }
        if let Ok(mut registrar) = self.registrar.try_lock() {
            registrar.watcher = None;
            registrar.registered.clear();
        }
    }
}

/// Sends a watch's batches, one `fs/changed` per [`COALESCE`] window at most.
async fn deliver(watch: Arc<Watch>, out: mpsc::Sender<Outgoing>) {
    loop {
        watch.wake.notified().await;
        tokio::time::sleep(COALESCE).await;
        // Room on the queue first: the batch goes on gathering while the client is slow.
        let Ok(permit) = out.reserve().await else {
            return;
        };
        let Some((overflow, taken)) = lock(&watch.pending).take() else {
            continue;
        };
        let changes = if overflow {
            vec![Change {
                path: path_uri::from_path(&watch.given),
                kind: ChangeKind::Overflow,
            }]
        } else {
            taken
                .iter()
                .map(|(path, kind)| Change {
                    path: path_uri::from_path(path),
                    kind: *kind,
                })
                .collect()
        };
        let message = encode_notification(
            method::FS_CHANGED,
            ChangedParams {
                watch_id: watch.id.clone(),
                changes,
            },
        );
        // Under the batch's lock: once `close` returns, nothing more is sent.
        let pending = lock(&watch.pending);
        if pending.closed {
            return;
        }
        permit.send(message.into());
    }
}

/// The `{}` result.
fn empty() -> Value {
    Value::Object(Default::default())
}

/// `fs/watch` on the connection whose watches `watches` are; `route` says how its sandbox reads.
pub(super) async fn watch(
    watches: &Arc<Watches>,
    route: sandboxing::FsRoute,
    p: WatchParams,
) -> Result<Value, RpcError> {
    if !(1..=MAX_WATCH_ID_BYTES).contains(&p.watch_id.len()) {
        return Err(RpcError::invalid_request(format!(
            "watch ID must be 1 to {MAX_WATCH_ID_BYTES} bytes"
        )));
    }
    let path = fs_ops::resolve_uri("path", &p.path)?;
    // The sandbox's read check, in-process: a watch reads no file content, and a helper per
    // event would be absurd.
    let read_entries = match route {
        sandboxing::FsRoute::InProcess => None,
        sandboxing::FsRoute::Helper(plan) => plan.read_entries().map(<[_]>::to_vec),
    };
    watches.reserve(&p.watch_id)?;
    let id = p.watch_id;
    let recursive = p.recursive.unwrap_or(false);
    let setting_up = watches.clone();
    let reserved = id.clone();
    let done = tokio::task::spawn_blocking(move || {
        setting_up.setup(reserved, path, recursive, read_entries)
    })
    .await
    .map_err(|e| RpcError::internal(format!("filesystem task failed: {e}")))
    .and_then(|r| r);
    if done.is_err() {
        watches.release(&id);
    }
    done.map(|()| empty())
}

/// `fs/unwatch`: `{}`, whether or not the watch exists.
pub(super) async fn unwatch(watches: &Arc<Watches>, p: UnwatchParams) -> Result<Value, RpcError> {
    let watches = watches.clone();
    tokio::task::spawn_blocking(move || watches.unwatch(&p.watch_id))
        .await
        .map_err(|e| RpcError::internal(format!("filesystem task failed: {e}")))?;
    Ok(empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn a_batch_merges_a_path_and_kind_seen_twice_and_keeps_the_order() {
        let mut b = Pending::default();
        assert!(b.push(p("/w/a"), ChangeKind::Created), "the batch starts");
        assert!(!b.push(p("/w/a"), ChangeKind::Modified));
        assert!(!b.push(p("/w/a"), ChangeKind::Created));
        assert!(!b.push(p("/w/b"), ChangeKind::Created));
        let (overflow, changes) = b.take().unwrap();
        assert!(!overflow);
        assert_eq!(
            changes,
            vec![
                (p("/w/a"), ChangeKind::Created),
                (p("/w/a"), ChangeKind::Modified),
                (p("/w/b"), ChangeKind::Created),
            ]
        );
        assert!(b.take().is_none(), "empty after a take");
        assert!(b.push(p("/w/a"), ChangeKind::Created), "a new batch starts");
    }

    #[test]
    fn too_many_changes_become_one_overflow_and_memory_is_given_back() {
        let mut b = Pending::default();
        for n in 0..MAX_PENDING_CHANGES {
            b.push(p(&format!("/w/{n}")), ChangeKind::Created);
        }
        assert!(!b.overflow);
        b.push(p("/w/one-more"), ChangeKind::Created);
        assert!(b.overflow);
        assert!(b.changes.is_empty() && b.seen.is_empty() && b.bytes == 0);
        // Nothing more is kept until the overflow is sent.
        b.push(p("/w/later"), ChangeKind::Created);
        assert!(b.changes.is_empty());
        assert_eq!(b.take(), Some((true, Vec::new())));
        assert!(b.take().is_none());
    }

    #[test]
    fn too_many_bytes_of_paths_become_one_overflow() {
        let mut b = Pending::default();
        let long = "x".repeat(4000);
        let mut n = 0;
        while !b.overflow {
            b.push(p(&format!("/w/{n}{long}")), ChangeKind::Modified);
            n += 1;
            assert!(b.bytes <= MAX_PENDING_PATH_BYTES);
        }
        assert!(n < MAX_PENDING_CHANGES, "the byte bound came first ({n})");
    }

    #[test]
    fn a_closed_batch_takes_nothing_and_sends_nothing() {
        let mut b = Pending::default();
        b.push(p("/w/a"), ChangeKind::Created);
        b.closed = true;
        assert!(b.take().is_none());
        assert!(!b.push(p("/w/b"), ChangeKind::Created));
        assert!(!b.lose());
    }

    #[test]
    fn kinds_map_from_notify_and_accesses_are_left_out() {
        use notify::EventKind as K;
        use notify::event::{AccessKind, CreateKind, ModifyKind, RemoveKind, RenameMode};
        assert_eq!(
            kind_of(&K::Create(CreateKind::File)),
            Some(ChangeKind::Created)
        );
        assert_eq!(
            kind_of(&K::Remove(RemoveKind::Any)),
            Some(ChangeKind::Removed)
        );
        let renamed = K::Modify(ModifyKind::Name(RenameMode::Both));
        assert_eq!(kind_of(&renamed), Some(ChangeKind::Renamed));
        let data = K::Modify(ModifyKind::Data(notify::event::DataChange::Any));
        assert_eq!(kind_of(&data), Some(ChangeKind::Modified));
        assert_eq!(kind_of(&K::Access(AccessKind::Any)), None);
    }

    #[test]
    fn a_watch_covers_its_entries_or_its_tree() {
        let watch = |recursive| Watch {
            id: "w".into(),
            given: p("/link"),
            root: p("/real"),
            recursive,
            read_entries: None,
            pending: Mutex::default(),
            wake: Notify::new(),
            task: Mutex::default(),
        };
        let flat = watch(false);
        assert!(flat.covers(Path::new("/real")));
        assert!(flat.covers(Path::new("/real/a")));
        assert!(!flat.covers(Path::new("/real/a/b")));
        assert!(!flat.covers(Path::new("/realm/a")));
        let tree = watch(true);
        assert!(tree.covers(Path::new("/real/a/b")));
        assert!(!tree.covers(Path::new("/realm")));
        // Reported as the client spelled the watched path.
        tree.push(Path::new("/real/a/b"), ChangeKind::Created);
        tree.push(Path::new("/real"), ChangeKind::Removed);
        let (_, changes) = lock(&tree.pending).take().unwrap();
        assert_eq!(
            changes,
            vec![
                (p("/link/a/b"), ChangeKind::Created),
                (p("/link"), ChangeKind::Removed)
            ]
        );
    }
}
