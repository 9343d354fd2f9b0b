//! Typed `fs/*` calls on the executor's file system (paths are the executor's absolute paths;
//! they travel as `file:` URIs), and [`Download`], a file read block by block over
//! `fs/open`/`fs/readBlock`/`fs/close`. None of these calls is replayed after a dropped transport
//! (see [`super::replay`]): they fail with [`ClientError::Disconnected`], and a caller that knows
//! the call is idempotent (a read, a whole-file write) may simply make it again.

use std::path::{Path, PathBuf};

use base64::Engine;

use super::error::ClientError;
use super::session::ExecServerClient;
use super::watches::FileWatch;
use crate::path_uri;
use crate::protocol::fs::{
    CloseParams, CloseResult, CreateDirectoryParams, CreateDirectoryResult, DirectoryEntry,
    GetMetadataParams, GetMetadataResult, OpenMode, OpenParams, OpenResult, ReadBlockParams,
    ReadBlockResult, ReadDirectoryParams, ReadDirectoryResult, ReadFileParams, ReadFileResult,
    RemoveParams, RemoveResult, UnwatchParams, WatchParams, WriteFileParams, WriteFileResult,
};
use crate::protocol::method;

/// Decodes base64 from an answer.
fn unbase64(method: &str, text: &str) -> Result<Vec<u8>, ClientError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|e| ClientError::Decode {
            method: method.to_string(),
            message: format!("invalid base64: {e}"),
        })
}

impl ExecServerClient {
    /// `fs/watch` (issue 14; the server advertises `fsWatch`): watches `path` (with `recursive`,
    /// its whole tree) and returns the changes as they come. The watch lasts as long as this
    /// connection: it ends (its `recv` gives `None`) on [`Self::fs_unwatch`] or when the
    /// transport drops.
    pub async fn fs_watch(&self, path: &Path, recursive: bool) -> Result<FileWatch, ClientError> {
        let id = self.inner.watches.fresh_id();
        let uri = path_uri::from_path(path);
        let watch = self.inner.watches.add(&id, uri.clone());
        let params = WatchParams {
            watch_id: id.clone(),
            path: uri,
            recursive: Some(recursive),
            sandbox: None,
        };
        let answer: Result<serde_json::Value, _> = self.call(method::FS_WATCH, &params).await;
        if let Err(err) = answer {
            self.inner.watches.remove(&id);
            return Err(err);
        }
        Ok(watch)
    }

    /// `fs/unwatch`: ends the watch `id` (its [`FileWatch`] ends too).
    pub async fn fs_unwatch(&self, id: &str) -> Result<(), ClientError> {
        self.inner.watches.remove(id);
        let params = UnwatchParams {
            watch_id: id.to_string(),
        };
        let _: serde_json::Value = self.call(method::FS_UNWATCH, &params).await?;
        Ok(())
    }

    /// `path` made absolute against the server's working directory (from `environmentInfo`;
    /// `/` if the server did not say).
    pub fn remote_path(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            return path.to_path_buf();
        }
        let cwd = self
            .environment_info()
            .and_then(|e| path_uri::to_path(&e.cwd).ok())
            .unwrap_or_else(|| PathBuf::from("/"));
        cwd.join(path)
    }

    /// `fs/readFile`: the whole file.
    pub async fn read_file(&self, path: &Path) -> Result<Vec<u8>, ClientError> {
        let params = ReadFileParams {
            path: path_uri::from_path(path),
            follow_symlinks: None,
            sandbox: None,
        };
        let result: ReadFileResult = self.call(method::FS_READ_FILE, &params).await?;
        unbase64(method::FS_READ_FILE, &result.data_base64)
    }

    /// `fs/writeFile`: creates or truncates `path` (its parent must exist).
    pub async fn write_file(&self, path: &Path, data: &[u8]) -> Result<(), ClientError> {
        let params = WriteFileParams {
            path: path_uri::from_path(path),
            data_base64: base64::engine::general_purpose::STANDARD.encode(data),
            follow_symlinks: None,
            sandbox: None,
        };
        let _: WriteFileResult = self.call(method::FS_WRITE_FILE, &params).await?;
        Ok(())
    }

    /// `fs/getMetadata`.
    pub async fn metadata(&self, path: &Path) -> Result<GetMetadataResult, ClientError> {
        let params = GetMetadataParams {
            path: path_uri::from_path(path),
            follow_symlinks: None,
            sandbox: None,
        };
        self.call(method::FS_GET_METADATA, &params).await
    }

    /// `fs/readDirectory`.
    pub async fn read_directory(&self, path: &Path) -> Result<Vec<DirectoryEntry>, ClientError> {
        let params = ReadDirectoryParams {
            path: path_uri::from_path(path),
            sandbox: None,
        };
        let result: ReadDirectoryResult = self.call(method::FS_READ_DIRECTORY, &params).await?;
        Ok(result.entries)
    }

    /// `fs/createDirectory`.
    pub async fn create_directory(&self, path: &Path, recursive: bool) -> Result<(), ClientError> {
        let params = CreateDirectoryParams {
            path: path_uri::from_path(path),
            recursive,
            follow_symlinks: None,
            sandbox: None,
        };
        let _: CreateDirectoryResult = self.call(method::FS_CREATE_DIRECTORY, &params).await?;
        Ok(())
    }

    /// `fs/remove`.
    pub async fn remove(
        &self,
        path: &Path,
        recursive: bool,
        force: bool,
    ) -> Result<(), ClientError> {
        let params = RemoveParams {
            path: path_uri::from_path(path),
            recursive,
            force,
            follow_symlinks: None,
            sandbox: None,
        };
        let _: RemoveResult = self.call(method::FS_REMOVE, &params).await?;
        Ok(())
    }

    /// Opens `path` for a block-by-block read (`fs/open`).
    pub async fn open_download(&self, path: &Path) -> Result<Download, ClientError> {
        let handle_id = uuid::Uuid::new_v4().simple().to_string();
        let params = OpenParams {
            handle_id: handle_id.clone(),
            path: path_uri::from_path(path),
            mode: OpenMode::Read,
            sandbox: None,
        };
        let _: OpenResult = self.call(method::FS_OPEN, &params).await?;
        Ok(Download {
            client: self.clone(),
            handle_id,
            offset: 0,
            eof: false,
        })
    }
}

/// A remote file being read in blocks. Handles belong to the connection: after a dropped
/// transport, reads fail with [`ClientError::Disconnected`]; open the file again and go on from
/// [`Download::offset`].
pub struct Download {
    /// The client the reads go through.
    client: ExecServerClient,
    /// The handle's id on the server (a UUID: 32 bytes, the protocol's limit).
    handle_id: String,
    /// The next offset to read.
    offset: u64,
    /// The last read was short: the end of the file.
    eof: bool,
}

impl Download {
    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Moves the next read to `offset` (to go on after a reopen).
    pub fn seek(&mut self, offset: u64) {
        self.offset = offset;
        self.eof = false;
    }

    /// The next block of at most `len` bytes (1..=1 MiB); `None` at the end of the file.
    pub async fn next_block(&mut self, len: u64) -> Result<Option<Vec<u8>>, ClientError> {
        if self.eof {
            return Ok(None);
        }
        let params = ReadBlockParams {
            handle_id: self.handle_id.clone(),
            offset: self.offset,
            len,
            sandbox: None,
        };
        let result: ReadBlockResult = self.client.call(method::FS_READ_BLOCK, &params).await?;
        let data = unbase64(method::FS_READ_BLOCK, &result.chunk)?;
        self.offset += data.len() as u64;
        self.eof = result.eof || data.is_empty();
        if data.is_empty() {
            return Ok(None);
        }
        Ok(Some(data))
    }

    /// Closes the handle (`fs/close`).
    pub async fn close(self) -> Result<(), ClientError> {
        let params = CloseParams {
            handle_id: self.handle_id.clone(),
            sandbox: None,
        };
        let _: CloseResult = self.client.call(method::FS_CLOSE, &params).await?;
        Ok(())
    }
}
