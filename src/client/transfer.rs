//! Whole-file transfers between this machine and the executor, each checked and each carried on
//! across a dropped connection:
//!
//! - [`ExecServerClient::upload_from`]: when the server streams writes (capability
//!   `fileWriteStreaming`), opens the remote file with `fs/open` `mode: "replace"` and sends the
//!   local file in 1 MiB `fs/writeBlock`s, [`WINDOW`] of them in flight at once, hashing what it
//!   sends as it reads it; then checks that the local file did not change size meanwhile and that
//!   the remote file has exactly the size sent (`fs/getMetadata`). Every block was acknowledged by
//!   the server, so nothing is read back. A server without streamed writes gets one
//!   `fs/writeFile` (at most [`MAX_UPLOAD_BYTES`]) and a read-back of the remote copy.
//! - [`ExecServerClient::download_to`]: reads a remote file with `fs/readBlock`s, [`WINDOW`] in
//!   flight at once, written and hashed in order as they arrive; then checks the size against
//!   `fs/getMetadata` taken before (a file that changed size meanwhile is an error).
//!
//! The `fs/*` calls are not replayed after a resume (see [`super::replay`]): they fail with
//! [`ClientError::Disconnected`]. The calls made here are safe to make again (a whole-file
//! write, an open, a read or a write at an offset), so they are, up to a bound; a transfer reopens
//! the file (handles die with their connection: a call in flight at the drop fails, and so does
//! one sent after the resume) and goes on: a download from the first block not yet written, an
//! upload from the start (a `replace` open truncates).
//!
//! Progress is reported to a callback as [`Progress`] events, phase by phase; a front end draws
//! them (`codex remote cp` shows a bar), an embedder may ignore them (`|_| {}`).

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::error::ClientError;
use super::recovery::EncodedParams;
use super::session::ExecServerClient;
use super::status::ConnectionStatus;
use crate::path_uri;
use crate::protocol::ErrorCode;
use crate::protocol::fs::{
    CloseParams, CloseResult, OpenMode, OpenParams, OpenResult, ReadBlockParams, ReadBlockResult,
    WriteBlockResult,
};
use crate::protocol::method;

/// Largest upload to a server without streamed writes: `fs/writeFile` carries the whole file in
/// one message (base64 of 90 MiB is 120 MiB, under the server's 128 MiB message limit).
pub const MAX_UPLOAD_BYTES: u64 = 90 << 20;
/// Block size of transfers (the protocol's largest `fs/readBlock` and `fs/writeBlock`).
const BLOCK: u64 = 1 << 20;
/// Blocks in flight at once in either direction: enough to keep loopback and a long link busy
/// (8 MiB in flight), little enough to bound memory (about 11 MB of base64 each way).
pub const WINDOW: usize = 8;
/// How often one call is made again, or a download reopened, after a dropped connection before
/// the transfer gives up.
const MAX_RETRIES: u32 = 20;

/// A stage of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the local file to upload.
    Reading,
    /// Sending it: block by block (each reported when the server acknowledged it), or, to a
    /// server without streamed writes, one `fs/writeFile` (no bytes reported until it is
    /// answered).
    Uploading,
    /// Reading the uploaded file back to hash it.
    Verifying,
    /// Receiving the remote file.
    Downloading,
    /// Re-reading the downloaded file from disk to hash it (no longer reported: the hash is
    /// taken as the blocks are written; kept so front ends that name it still build).
    Checking,
}

/// What a transfer reports as it goes: each phase is a `Begin`, any number of `Advance`s, an
/// `End` (also when the phase failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A phase begins; `total` bytes are expected.
    Begin {
        /// The phase.
        phase: Phase,
        /// Its size in bytes.
        total: u64,
    },
    /// `bytes` more bytes of the current phase are done.
    Advance {
        /// How many.
        bytes: u64,
    },
    /// The current phase is over.
    End,
}

/// A transfer that completed and was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transferred {
    /// Where the file landed: the destination, or the file of the source's name inside it when
    /// the destination is a directory.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its sha256, lower-case hex.
    pub sha256: String,
}

/// Why a transfer failed. The messages name the file; the cause, if any, is the
/// [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A local file could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Local {
        /// What was being done (`read`, `open`, `create`, `write`).
        action: &'static str,
        /// The local file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A call on the remote file failed.
    #[error("cannot {action} remote {}", path.display())]
    Remote {
        /// What was being done (`stat`, `open`, `read`, `write`).
        action: &'static str,
        /// The remote file.
        path: PathBuf,
        /// The client's error.
        source: ClientError,
    },
    /// The file is larger than one `fs/writeFile` can carry.
    #[error(
        "{} is {size} bytes; uploads are limited to {MAX_UPLOAD_BYTES} bytes (one fs/writeFile message)",
        path.display()
    )]
    TooLarge {
        /// The local file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Only files are transferred.
    #[error("remote {} is a directory; only files are transferred", path.display())]
    RemoteIsDirectory {
        /// The remote path.
        path: PathBuf,
    },
    /// The destination is a directory and the source has no file name to use inside it.
    #[error("{} has no file name", path.display())]
    NoFileName {
        /// The source.
        path: PathBuf,
    },
    /// The uploaded file, read back, differs from what was sent.
    #[error(
        "verification failed: sent {sent_bytes} bytes with sha256 {sent_sha256}, remote {} has \
         {remote_bytes} bytes with sha256 {remote_sha256}",
        path.display()
    )]
    UploadMismatch {
        /// The remote file.
        path: PathBuf,
        /// Bytes sent.
        sent_bytes: u64,
        /// Hash of what was sent.
        sent_sha256: String,
        /// Bytes read back.
        remote_bytes: u64,
        /// Hash of what was read back.
        remote_sha256: String,
    },
    /// The download ended with another size than the remote file's.
    #[error(
        "verification failed: remote {} has {expected} bytes, received {received}",
        path.display()
    )]
    SizeMismatch {
        /// The remote file.
        path: PathBuf,
        /// Its size by `fs/getMetadata`.
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    /// The local file changed size while it was being uploaded.
    #[error(
        "{} changed during the upload: it had {expected} bytes, {read} were read",
        path.display()
    )]
    LocalChanged {
        /// The local file.
        path: PathBuf,
        /// Its size before the upload.
        expected: u64,
        /// Bytes read (or its size after).
        read: u64,
    },
    /// The downloaded file, re-read from disk, differs from what arrived.
    #[error(
        "verification failed: received sha256 {received_sha256}, but {} has sha256 {on_disk_sha256}",
        path.display()
    )]
    DiskMismatch {
        /// The local file.
        path: PathBuf,
        /// Hash of what arrived.
        received_sha256: String,
        /// Hash of the file on disk.
        on_disk_sha256: String,
    },
}

impl TransferError {
    /// A [`TransferError::Local`] maker for `map_err`.
    fn local(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Local {
            action,
            path,
            source,
        }
    }

    /// A [`TransferError::Remote`] maker for `map_err`.
    fn remote(action: &'static str, path: &Path) -> impl FnOnce(ClientError) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Remote {
            action,
            path,
            source,
        }
    }
}

impl ExecServerClient {
    /// Uploads the local file `local` to `remote` (or into it, under the local file's name, if
    /// `remote` is a directory). With streamed writes (the server's `fileWriteStreaming`): phase
    /// `Uploading` only, block by block, then the sizes are checked (module documentation).
    /// Without: files over [`MAX_UPLOAD_BYTES`] are refused before anything is sent; phases
    /// `Reading`, `Uploading`, `Verifying` (a read-back).
    pub async fn upload_from(
        &self,
        local: &Path,
        remote: &Path,
        mut progress: impl FnMut(Progress),
    ) -> Result<Transferred, TransferError> {
        let size = tokio::fs::metadata(local)
            .await
            .map_err(TransferError::local("read", local))?
            .len();
        let streamed = self
            .environment_info()
            .is_some_and(|e| e.capabilities.file_write_streaming);
        if size > MAX_UPLOAD_BYTES && !streamed {
            return Err(TransferError::TooLarge {
                path: local.to_path_buf(),
                size,
            });
        }
        let mut target = remote.to_path_buf();
        if let Ok(m) = self.metadata(remote).await
            && m.is_directory
        {
            target.push(file_name(local)?);
        }
        if streamed {
            return self
                .upload_streamed(local, target, size, &mut progress)
                .await;
        }

        progress(Progress::Begin {
            phase: Phase::Reading,
            total: size,
        });
        let read = read_local(local, Some(size), &mut progress).await;
        progress(Progress::End);
        let (data, sent) = read?;

        progress(Progress::Begin {
            phase: Phase::Uploading,
            total: size,
        });
        let written = retry_if_disconnected(|| self.write_file(&target, &data)).await;
        progress(Progress::End);
        written.map_err(TransferError::remote("write", &target))?;
        drop(data);

        let (landed, remote_size) = self.remote_sha256(&target, &mut progress).await?;
        if remote_size != size || landed != sent {
            return Err(TransferError::UploadMismatch {
                path: target,
                sent_bytes: size,
                sent_sha256: sent,
                remote_bytes: remote_size,
                remote_sha256: landed,
            });
        }
        Ok(Transferred {
            path: target,
            bytes: size,
            sha256: sent,
        })
    }

    /// The streamed upload: phase `Uploading`, started again from the first byte after a dropped
    /// connection (progress reports only bytes beyond what was reported before).
    async fn upload_streamed(
        &self,
        local: &Path,
        target: PathBuf,
        size: u64,
        progress: &mut impl FnMut(Progress),
    ) -> Result<Transferred, TransferError> {
        progress(Progress::Begin {
            phase: Phase::Uploading,
            total: size,
        });
        let mut reported = 0u64;
        let mut attempts = 0;
        let sent = loop {
            let attempt = self
                .upload_once(local, &target, size, &mut reported, progress)
                .await;
            match attempt {
                Err(Attempt::Lost(_)) if attempts < MAX_RETRIES => attempts += 1,
                Err(Attempt::Lost(err)) => {
                    progress(Progress::End);
                    return Err(TransferError::remote("write", &target)(err));
                }
                Err(Attempt::Failed(err)) => {
                    progress(Progress::End);
                    return Err(err);
                }
                Ok(sent) => break sent,
            }
        };
        progress(Progress::End);
        // Every block was acknowledged; the remote file must hold exactly what was sent.
        let remote_size = retry_if_disconnected(|| self.metadata(&target))
            .await
            .map_err(TransferError::remote("stat", &target))?
            .size;
        if remote_size != size {
            return Err(TransferError::UploadMismatch {
                path: target,
                sent_bytes: size,
                sent_sha256: sent.clone(),
                remote_bytes: remote_size,
                remote_sha256: "(not read back)".into(),
            });
        }
        Ok(Transferred {
            path: target,
            bytes: size,
            sha256: sent,
        })
    }

    /// One pass of a streamed upload: open `replace`, the blocks with [`WINDOW`] in flight, close.
    /// Returns the sha256 of what was sent. The next block is read, hashed and encoded on a
    /// blocking thread ([`BlockSource`]) while the ones before it are on their way.
    async fn upload_once(
        &self,
        local: &Path,
        target: &Path,
        size: u64,
        reported: &mut u64,
        progress: &mut impl FnMut(Progress),
    ) -> Result<String, Attempt> {
        let file = std::fs::File::open(local)
            .map_err(|e| Attempt::Failed(TransferError::local("open", local)(e)))?;
        let opened = self.watch_status();
        let handle_id = self
            .open_handle(target, OpenMode::Replace)
            .await
            .map_err(|e| Attempt::classify(e, &opened, "open", target))?;
        let mut source = Some(BlockSource::new(file, &handle_id));
        let mut preparing: Option<tokio::task::JoinHandle<_>> = None;
        let mut in_flight = FuturesOrdered::new();
        let mut done = 0u64;
        let mut eof = false;
        let read_error = |e| Attempt::Failed(TransferError::local("read", local)(e));
        loop {
            if !eof && preparing.is_none() && in_flight.len() < WINDOW {
                let mut taken = source.take().expect("the source is back between blocks");
                preparing = Some(tokio::task::spawn_blocking(move || {
                    let block = taken.next_block();
                    (taken, block)
                }));
            }
            tokio::select! {
                prepared = async { preparing.as_mut().expect("checked").await },
                    if preparing.is_some() && in_flight.len() < WINDOW =>
                {
                    preparing = None;
                    let (back, block) = prepared.map_err(|e| read_error(io::Error::other(e)))?;
                    source = Some(back);
                    let Some((params, len)) = block.map_err(read_error)? else {
                        eof = true;
                        continue;
                    };
                    let offset = source.as_ref().map_or(0, |s| s.offset);
                    if offset > size {
                        return Err(Attempt::Failed(TransferError::LocalChanged {
                            path: local.to_path_buf(),
                            expected: size,
                            read: offset,
                        }));
                    }
                    in_flight.push_back(async move {
                        let r: Result<WriteBlockResult, ClientError> =
                            self.call_encoded(method::FS_WRITE_BLOCK, &params).await;
                        r.map(|_| len as u64)
                    });
                }
                written = in_flight.next(), if !in_flight.is_empty() => {
                    let len = written
                        .expect("not empty")
                        .map_err(|e| Attempt::classify(e, &opened, "write", target))?;
                    done += len;
                    if done > *reported {
                        progress(Progress::Advance {
                            bytes: done - *reported,
                        });
                        *reported = done;
                    }
                }
                else => break,
            }
        }
        let source = source.expect("the source is back at the end");
        if source.offset != size {
            return Err(Attempt::Failed(TransferError::LocalChanged {
                path: local.to_path_buf(),
                expected: size,
                read: source.offset,
            }));
        }
        let after = tokio::fs::metadata(local).await.map_err(read_error)?.len();
        if after != size {
            return Err(Attempt::Failed(TransferError::LocalChanged {
                path: local.to_path_buf(),
                expected: size,
                read: after,
            }));
        }
        self.close_handle(&handle_id)
            .await
            .map_err(|e| Attempt::classify(e, &opened, "write", target))?;
        Ok(hex(&source.hasher.finalize()))
    }

    /// Downloads the remote file `remote` to `local` (or into it, under the remote file's name,
    /// if `local` is a directory), [`WINDOW`] blocks in flight, reopening it after a dropped
    /// connection; then checks the size received against `fs/getMetadata` taken before. A
    /// download that fails half-way removes the partial file. Phase: `Downloading`.
    pub async fn download_to(
        &self,
        remote: &Path,
        local: &Path,
        mut progress: impl FnMut(Progress),
    ) -> Result<Transferred, TransferError> {
        let meta = retry_if_disconnected(|| self.metadata(remote))
            .await
            .map_err(TransferError::remote("stat", remote))?;
        if meta.is_directory {
            return Err(TransferError::RemoteIsDirectory {
                path: remote.to_path_buf(),
            });
        }
        let mut target = local.to_path_buf();
        if target.is_dir() {
            target.push(file_name(remote)?);
        }
        let file =
            std::fs::File::create(&target).map_err(TransferError::local("create", &target))?;

        progress(Progress::Begin {
            phase: Phase::Downloading,
            total: meta.size,
        });
        let sink = BlockSink {
            remote: remote.to_path_buf(),
            hasher: Sha256::new(),
            file: Some((file, target.clone())),
        };
        let read = self.stream_remote(remote, sink, &mut progress).await;
        progress(Progress::End);
        let (read, sink) = match read {
            Ok((read, sink)) if read == meta.size => (read, sink),
            Ok((read, sink)) => {
                drop(sink);
                let _ = std::fs::remove_file(&target);
                return Err(TransferError::SizeMismatch {
                    path: remote.to_path_buf(),
                    expected: meta.size,
                    received: read,
                });
            }
            Err(err) => {
                let _ = std::fs::remove_file(&target);
                return Err(err);
            }
        };
        Ok(Transferred {
            path: target,
            bytes: read,
            sha256: hex(&sink.hasher.finalize()),
        })
    }

    /// Reads a remote file back block by block (phase `Verifying`); returns its sha256 and size.
    async fn remote_sha256(
        &self,
        path: &Path,
        progress: &mut impl FnMut(Progress),
    ) -> Result<(String, u64), TransferError> {
        let size = retry_if_disconnected(|| self.metadata(path))
            .await
            .map_err(TransferError::remote("stat", path))?
            .size;
        progress(Progress::Begin {
            phase: Phase::Verifying,
            total: size,
        });
        let sink = BlockSink {
            remote: path.to_path_buf(),
            hasher: Sha256::new(),
            file: None,
        };
        let read = self.stream_remote(path, sink, progress).await;
        progress(Progress::End);
        let (read, sink) = read?;
        Ok((hex(&sink.hasher.finalize()), read))
    }

    /// Reads a remote file block by block into `sink`, in order, with [`WINDOW`] reads in flight;
    /// after a dropped connection reopens it and goes on from the first block not yet given to
    /// `sink`. Reads until a block says end-of-file. Returns the bytes read, and the sink.
    async fn stream_remote(
        &self,
        path: &Path,
        sink: BlockSink,
        progress: &mut impl FnMut(Progress),
    ) -> Result<(u64, BlockSink), TransferError> {
        let mut reopens = 0;
        let mut stage = SinkStage {
            local: sink
                .file
                .as_ref()
                .map_or_else(PathBuf::new, |(_, p)| p.clone()),
            sink: Some(sink),
            busy: None,
            done: 0,
        };
        loop {
            let opened = self.watch_status();
            let handle_id = retry_if_disconnected(|| self.open_handle(path, OpenMode::Read))
                .await
                .map_err(TransferError::remote("open", path))?;
            let read = self.read_blocks(&handle_id, &mut stage, progress).await;
            // Whatever happened, the block being written lands (or fails) first.
            stage.settle(progress).await?;
            match read {
                Ok(()) => {
                    // The handle dies with the connection anyway; a failed close changes nothing.
                    let _ = self.close_handle(&handle_id).await;
                    let sink = stage.sink.take().expect("settled");
                    return Ok((stage.done, sink));
                }
                Err(Attempt::Lost(err)) if reopens < MAX_RETRIES && handle_lost(&err, &opened) => {
                    reopens += 1;
                }
                Err(Attempt::Lost(err)) => return Err(TransferError::remote("read", path)(err)),
                Err(Attempt::Failed(err)) => return Err(err),
            }
        }
    }

    /// Reads `handle_id` from `stage.done` to end-of-file, [`WINDOW`] blocks in flight, handing
    /// each to the stage in order (it decodes, hashes and writes one on a blocking thread while
    /// the next arrives). Returns with the last block perhaps still in the stage.
    async fn read_blocks(
        &self,
        handle_id: &str,
        stage: &mut SinkStage,
        progress: &mut impl FnMut(Progress),
    ) -> Result<(), Attempt> {
        stage.settle(progress).await.map_err(Attempt::Failed)?;
        let mut in_flight = FuturesOrdered::new();
        let mut next = stage.done;
        loop {
            while in_flight.len() < WINDOW {
                let params = ReadBlockParams {
                    handle_id: handle_id.to_string(),
                    offset: next,
                    len: BLOCK,
                    sandbox: None,
                };
                next += BLOCK;
                in_flight.push_back(async move {
                    let r: Result<ReadBlockResult, ClientError> =
                        self.call(method::FS_READ_BLOCK, &params).await;
                    r
                });
            }
            let Some(answer) = in_flight.next().await else {
                return Ok(());
            };
            let answer = answer.map_err(Attempt::Lost)?;
            let len = decoded_len(&answer.chunk);
            stage.settle(progress).await.map_err(Attempt::Failed)?;
            if len > 0 {
                stage.start(answer.chunk);
            }
            if answer.eof || (len as u64) < BLOCK {
                // The reads after it are past the end: their answers are not waited for.
                return Ok(());
            }
        }
    }

    /// `fs/open` under a fresh id.
    async fn open_handle(&self, path: &Path, mode: OpenMode) -> Result<String, ClientError> {
        let handle_id = uuid::Uuid::new_v4().simple().to_string();
        let params = OpenParams {
            handle_id: handle_id.clone(),
            path: path_uri::from_path(path),
            mode,
            sandbox: None,
        };
        let _: OpenResult = self.call(method::FS_OPEN, &params).await?;
        Ok(handle_id)
    }

    /// `fs/close`.
    async fn close_handle(&self, handle_id: &str) -> Result<(), ClientError> {
        let params = CloseParams {
            handle_id: handle_id.to_string(),
            sandbox: None,
        };
        let _: CloseResult = self.call(method::FS_CLOSE, &params).await?;
        Ok(())
    }
}

/// How one pass of a streamed transfer ended, if not well.
enum Attempt {
    /// A remote call failed (perhaps because its handle died with a dropped connection).
    Lost(ClientError),
    /// Anything else: not worth another pass.
    Failed(TransferError),
}

impl Attempt {
    /// A failed remote call of a pass begun when `opened` was taken: worth another pass if the
    /// handle was lost to a dropped connection, else the transfer's error.
    fn classify(
        err: ClientError,
        opened: &watch::Receiver<ConnectionStatus>,
        action: &'static str,
        path: &Path,
    ) -> Self {
        if handle_lost(&err, opened) {
            Self::Lost(err)
        } else {
            Self::Failed(TransferError::remote(action, path)(err))
        }
    }
}

/// Where a download's blocks go, in order: hashed, and written to a local file unless only the
/// hash is wanted.
struct BlockSink {
    /// The remote file (for errors).
    remote: PathBuf,
    /// The sha256 of the blocks so far.
    hasher: Sha256,
    /// The local file and its path, for a download (none to only hash, as the read-back does).
    file: Option<(std::fs::File, PathBuf)>,
}

impl BlockSink {
    /// Decodes one block's base64, hashes it and writes it; returns its length.
    fn take(&mut self, chunk: &str) -> Result<usize, TransferError> {
        let data = crate::b64::decode(chunk.as_bytes()).map_err(|e| TransferError::Remote {
            action: "read",
            path: self.remote.clone(),
            source: ClientError::Decode {
                method: method::FS_READ_BLOCK.into(),
                message: format!("invalid base64: {e}"),
            },
        })?;
        self.hasher.update(&data);
        if let Some((file, path)) = &mut self.file {
            file.write_all(&data)
                .map_err(TransferError::local("write", path))?;
        }
        Ok(data.len())
    }
}

/// A [`BlockSink`] working on one block at a time on a blocking thread, while the next block is
/// on its way (decoding, hashing and writing on the async thread made it the bottleneck of a
/// download, by `perf`).
struct SinkStage {
    /// The sink, when no block is being written.
    sink: Option<BlockSink>,
    /// The local file written, if any, for errors.
    local: PathBuf,
    /// The block being written: it gives the sink back with the block's length.
    busy: Option<tokio::task::JoinHandle<(BlockSink, Result<usize, TransferError>)>>,
    /// Bytes given to the sink and written.
    done: u64,
}

impl SinkStage {
    /// Hands `chunk` (base64) to the sink on a blocking thread; [`Self::settle`] first.
    fn start(&mut self, chunk: String) {
        let mut sink = self.sink.take().expect("settled before the next block");
        self.busy = Some(tokio::task::spawn_blocking(move || {
            let taken = sink.take(&chunk);
            (sink, taken)
        }));
    }

    /// Waits for the block being written, if any; counts it and reports it.
    async fn settle(&mut self, progress: &mut impl FnMut(Progress)) -> Result<(), TransferError> {
        let Some(busy) = self.busy.take() else {
            return Ok(());
        };
        let (sink, taken) = busy.await.map_err(|e| TransferError::Local {
            action: "write",
            path: self.local.clone(),
            source: io::Error::other(e),
        })?;
        self.sink = Some(sink);
        let len = taken? as u64;
        self.done += len;
        progress(Progress::Advance { bytes: len });
        Ok(())
    }
}

/// The length of the bytes strict, padded base64 `chunk` decodes to (what a decode would give if
/// it is valid; [`BlockSink::take`] refuses it if not).
fn decoded_len(chunk: &str) -> usize {
    let padding = chunk.bytes().rev().take(2).filter(|&b| b == b'=').count();
    (chunk.len() / 4 * 3).saturating_sub(padding)
}

/// The local side of a streamed upload, moved to a blocking thread for each block: reads it,
/// hashes it and encodes it as `fs/writeBlock` params, base64 straight into the text (never
/// copied into a `Value` nor scanned for escapes: that and the hashing were most of the client's
/// time on the async thread, by `perf`), so the async side only sends.
struct BlockSource {
    /// The local file, read in order.
    file: std::fs::File,
    /// The sha256 of what was read so far.
    hasher: Sha256,
    /// One block's buffer, reused.
    buf: Vec<u8>,
    /// The handle id as a JSON string.
    handle_json: String,
    /// Bytes read so far (the next block's offset).
    offset: u64,
}

impl BlockSource {
    /// A source at the start of `file`, for the remote handle `handle_id`.
    fn new(file: std::fs::File, handle_id: &str) -> Self {
        Self {
            file,
            hasher: Sha256::new(),
            buf: vec![0u8; BLOCK as usize],
            handle_json: serde_json::to_string(handle_id).expect("a string encodes"),
            offset: 0,
        }
    }

    /// The next block's params and length; `None` at the end of the file.
    fn next_block(&mut self) -> io::Result<Option<(EncodedParams, usize)>> {
        let mut n = 0;
        while n < self.buf.len() {
            match io::Read::read(&mut self.file, &mut self.buf[n..]) {
                Ok(0) => break,
                Ok(m) => n += m,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            return Ok(None);
        }
        let data = &self.buf[..n];
        self.hasher.update(data);
        let mut text = String::with_capacity(n.div_ceil(3) * 4 + self.handle_json.len() + 64);
        text.push_str("{\"handleId\":");
        text.push_str(&self.handle_json);
        text.push_str(",\"offset\":");
        text.push_str(&self.offset.to_string());
        text.push_str(",\"chunk\":\"");
        crate::b64::encode_append(data, &mut text);
        text.push_str("\"}");
        self.offset += n as u64;
        Ok(Some((EncodedParams(text), n)))
    }
}

/// Whether a failed read lost its handle to a dropped connection: the read was in flight when it
/// dropped, or it went out after the session was resumed on a new connection, which does not
/// know the handle (-32004, unknown file handle).
fn handle_lost(err: &ClientError, opened: &watch::Receiver<ConnectionStatus>) -> bool {
    match err {
        ClientError::Disconnected { .. } => true,
        ClientError::Server { code, .. } if *code == ErrorCode::NotFound.code() => {
            opened.has_changed().unwrap_or(false)
        }
        _ => false,
    }
}

/// Makes an idempotent call again after a dropped connection (the client resumes the session
/// meanwhile), up to [`MAX_RETRIES`] times.
async fn retry_if_disconnected<T, F, Fut>(mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut attempts = 0;
    loop {
        match call().await {
            Err(ClientError::Disconnected { .. }) if attempts < MAX_RETRIES => attempts += 1,
            other => return other,
        }
    }
}

/// Reads a local file whole, reporting each block; returns its contents (when `size` says what
/// to expect: the upload keeps them) and its sha256.
async fn read_local(
    path: &Path,
    size: Option<u64>,
    progress: &mut impl FnMut(Progress),
) -> Result<(Vec<u8>, String), TransferError> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(TransferError::local("open", path))?;
    let mut data = Vec::with_capacity(size.unwrap_or(0) as usize);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BLOCK as usize];
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut file, &mut buf)
            .await
            .map_err(TransferError::local("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if size.is_some() {
            data.extend_from_slice(&buf[..n]);
        }
        progress(Progress::Advance { bytes: n as u64 });
    }
    Ok((data, hex(&hasher.finalize())))
}

/// The file name of `path`, to go inside a destination directory.
fn file_name(path: &Path) -> Result<&std::ffi::OsStr, TransferError> {
    path.file_name().ok_or_else(|| TransferError::NoFileName {
        path: path.to_path_buf(),
    })
}

/// Lower-case hex of a digest.
fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_and_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0a, 0xff]), "000aff");
    }

    #[test]
    fn a_read_lost_its_handle_when_in_flight_at_a_drop_or_refused_after_a_resume() {
        let (status, opened) = watch::channel(ConnectionStatus::Connected);
        let unknown_handle = ClientError::Server {
            method: "fs/readBlock".into(),
            code: ErrorCode::NotFound.code(),
            message: "unknown file handle `h`".into(),
        };
        let other = ClientError::Server {
            method: "fs/readBlock".into(),
            code: ErrorCode::Internal.code(),
            message: "Input/output error (os error 5): /f".into(),
        };
        let dropped = ClientError::Disconnected {
            method: "fs/readBlock".into(),
        };
        assert!(handle_lost(&dropped, &opened));
        // No resume since the open: the file itself is gone or unreadable, not the handle.
        assert!(!handle_lost(&unknown_handle, &opened));
        assert!(!handle_lost(&other, &opened));

        status.send_replace(ConnectionStatus::Recovering {
            reason: "cut".into(),
        });
        status.send_replace(ConnectionStatus::Connected);
        assert!(handle_lost(&unknown_handle, &opened));
        assert!(!handle_lost(&other, &opened));
    }

    #[test]
    fn errors_name_the_file_and_leave_the_cause_to_the_source() {
        let err = TransferError::local("open", Path::new("/x/y"))(io::Error::from(
            io::ErrorKind::NotFound,
        ));
        assert_eq!(err.to_string(), "cannot open /x/y");
        assert!(std::error::Error::source(&err).is_some());
        let too_large = TransferError::TooLarge {
            path: PathBuf::from("/big"),
            size: MAX_UPLOAD_BYTES + 1,
        };
        assert_eq!(
            too_large.to_string(),
            "/big is 94371841 bytes; uploads are limited to 94371840 bytes (one fs/writeFile message)"
        );
    }
}
