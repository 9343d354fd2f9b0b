//! The `fs/watch` watches the client follows (issue 14): each has a bounded channel to its
//! [`FileWatch`]; `fs/changed` notifications are handed to it without waiting (a reader that
//! waited on a slow watch would stall every process's output). A batch that finds the channel
//! full is dropped, and the next one that fits starts with an `overflow` change, as the server
//! reports its own losses. Watches end with the transport that carried them: the server ends
//! them with the connection, so after a drop each [`FileWatch`] ends (`recv` gives `None`) and the
//! caller watches again if it still wants to.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::protocol::fs::{Change, ChangeKind, ChangedParams};

/// Batches one watch buffers before they are dropped (and an `overflow` reported).
pub(super) const WATCH_BUFFER: usize = 64;

/// One followed watch.
struct Entry {
    /// Where its batches go.
    tx: mpsc::Sender<Vec<Change>>,
    /// The watched path as a `file:` URI (the path of an `overflow`).
    uri: String,
    /// A batch was dropped: the next one starts with an `overflow`.
    lost: bool,
}

/// The watches the client follows, by id.
#[derive(Default)]
pub(super) struct WatchTable {
    /// Followed watches.
    entries: Mutex<HashMap<String, Entry>>,
    /// For fresh ids.
    next_id: AtomicU64,
}

impl WatchTable {
    /// A fresh watch id.
    pub(super) fn fresh_id(&self) -> String {
        format!("w{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Follows the watch `id` of `uri` (before asking the server, so no early batch is missed).
    pub(super) fn add(&self, id: &str, uri: String) -> FileWatch {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let entry = Entry {
            tx,
            uri,
            lost: false,
        };
        self.lock().insert(id.to_string(), entry);
        FileWatch {
            id: id.to_string(),
            rx,
        }
    }

    /// Stops following `id`: its [`FileWatch`] ends.
    pub(super) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Ends every watch.
    pub(super) fn end_all(&self) {
        self.lock().clear();
    }

    /// Hands a batch to its watch, without waiting.
    pub(super) fn deliver(&self, changed: ChangedParams) {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(&changed.watch_id) else {
            return;
        };
        let mut changes = changed.changes;
        if entry.lost {
            changes.insert(
                0,
                Change {
                    path: entry.uri.clone(),
                    kind: ChangeKind::Overflow,
                },
            );
        }
        entry.lost = match entry.tx.try_send(changes) {
            Ok(()) => false,
            Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                entries.remove(&changed.watch_id);
                return;
            }
        };
    }

    /// The entries.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A watch started by [`crate::client::ExecServerClient::fs_watch`]: the changes it reports, a
/// batch (one `fs/changed`) at a time.
pub struct FileWatch {
    /// The watch's id (for [`crate::client::ExecServerClient::fs_unwatch`]).
    id: String,
    /// Its batches.
    rx: mpsc::Receiver<Vec<Change>>,
}

impl FileWatch {
    /// The watch's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next batch of changes; `None` once the watch ended (unwatched, the connection
    /// dropped, or the client closed).
    pub async fn recv(&mut self) -> Option<Vec<Change>> {
        self.rx.recv().await
    }
}
