//! The open `fs/open` handles of one connection: created by `connection::serve`, every handle
//! closed when the connection ends. The connection's persistent sandboxed `codex-fs` helpers
//! live here too, and end with it.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::protocol::fs::MAX_FILE_HANDLES_PER_CONNECTION;
use crate::rpc::RpcError;

/// A file opened by `fs/open`.
pub(super) struct OpenFile {
    /// Read with `pread`, so concurrent `fs/readBlock`s need no shared cursor.
    pub(super) file: File,
    /// The path it was opened at, to name it in errors.
    pub(super) path: PathBuf,
}

/// The open `fs/open` handles of one connection. A `std` mutex: it is never held across an
/// `.await`, and blocking reads hold their own `Arc` of the file, not the lock.
#[derive(Default)]
pub(crate) struct FileHandles {
    /// Handle id → open file. At most [`MAX_FILE_HANDLES_PER_CONNECTION`] entries.
    open: Mutex<HashMap<String, Arc<OpenFile>>>,
    /// The connection's sandboxed `codex-fs --serve` helpers.
    pub(super) helpers: super::sandboxing::FsHelperPool,
}

impl FileHandles {
    /// The table; a panic elsewhere while it was held leaves it usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OpenFile>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses an id in use or a full table, before the file is opened.
    pub(super) fn check_available(&self, id: &str) -> Result<(), RpcError> {
        check_available(&self.lock(), id)
    }

    /// Adds an opened file; checks again, since another request may have raced in.
    pub(super) fn insert(&self, id: &str, file: OpenFile) -> Result<(), RpcError> {
        let mut open = self.lock();
        check_available(&open, id)?;
        open.insert(id.to_string(), Arc::new(file));
        Ok(())
    }

    /// The open file named `id`.
    pub(super) fn get(&self, id: &str) -> Option<Arc<OpenFile>> {
        self.lock().get(id).cloned()
    }

    /// Closes `id` (nothing if unknown).
    pub(super) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Removes `id` only if it still names `expected` (it may have been closed and reopened).
    pub(super) fn remove_if_same(&self, id: &str, expected: &Arc<OpenFile>) {
        let mut open = self.lock();
        if open.get(id).is_some_and(|f| Arc::ptr_eq(f, expected)) {
            open.remove(id);
        }
    }

    /// Closes every handle (a read in progress keeps its file until it finishes).
    pub(crate) fn close_all(&self) {
        self.lock().clear();
        self.helpers.close_all();
    }
}

/// Refuses an id in use or a full table.
fn check_available(open: &HashMap<String, Arc<OpenFile>>, id: &str) -> Result<(), RpcError> {
    if open.contains_key(id) {
        return Err(RpcError::invalid_request(format!(
            "file handle `{id}` already exists"
        )));
    }
    if open.len() >= MAX_FILE_HANDLES_PER_CONNECTION {
        return Err(RpcError::invalid_request(format!(
            "at most {MAX_FILE_HANDLES_PER_CONNECTION} file handles may be open per connection"
        )));
    }
    Ok(())
}
