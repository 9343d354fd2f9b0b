//! The `fs/*` family: one handler fn per method, and the sandbox routing decision. The
//! per-connection table of `fs/open` handles is `fs_handles.rs`.
//!
//! The operations themselves are `crate::fs_ops` (shared with the `codex-fs` helper); they block,
//! so every one runs in `spawn_blocking`. Errors become JSON-RPC errors through
//! `From<FsError> for RpcError`, the one place that mapping is decided.
//!
//! Handles live as long as the connection that opened them: `connection::serve` creates one
//! [`FileHandles`] and closes every handle in it when the connection ends.

use std::fs::File;

use serde_json::Value;

use super::call::{Answer, Call};
use super::fs_handles::OpenFile;
use super::sandboxing;
use crate::fs_ops;
use crate::protocol::ErrorCode;
use crate::protocol::fs::{
    CanonicalizeParams, CloseParams, CopyParams, CreateDirectoryParams, FsRequest,
    GetMetadataParams, MAX_FILE_HANDLE_ID_BYTES, MAX_READ_BLOCK_BYTES, MAX_WRITE_BLOCK_BYTES,
    OpenMode, OpenParams, OpenResult, ReadBlockParams, ReadDirectoryParams, ReadFileParams,
    RemoveParams, WalkParams, WatchMissingParams, WatchMissingResult, WriteBlockParams,
    WriteBlockResult, WriteFileParams,
};
use crate::rpc::RpcError;

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RpcError> + Send + 'static,
) -> Result<T, RpcError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RpcError::internal(format!("filesystem task failed: {e}")))?
}

/// [`sandboxing::fs_route`] for `call`: on a blocking thread when the sandbox has glob patterns
/// (binding one scans up to 200,000 entries of the file system: 0.9 s on a quiet machine, 15 s
/// on a busy one, found by fuzzing), so that no async thread, and no other client, waits for it.
pub(super) async fn route(
    call: &Call,
    sandbox: Option<&crate::protocol::sandbox::SandboxIntent>,
    mutation: bool,
) -> Result<sandboxing::FsRoute, RpcError> {
    if !sandbox.is_some_and(|s| s.permissions.has_glob()) {
        return sandboxing::fs_route(&call.state.sandbox, sandbox, mutation);
    }
    let (state, sandbox) = (call.state.clone(), sandbox.cloned());
    tokio::task::spawn_blocking(move || {
        sandboxing::fs_route(&state.sandbox, sandbox.as_ref(), mutation)
    })
    .await
    .map_err(|e| RpcError::internal(format!("sandbox binding failed: {e}")))?
}

/// Routes a self-contained request: in-process (resolved, run and encoded off the async
/// threads: decoding and encoding a 64 MiB file's base64 is work too), or in the sandboxed
/// `codex-fs` helper when the call's sandbox restricts its kind (sandbox.md §5).
async fn run(call: &Call, request: FsRequest) -> Result<Value, RpcError> {
    let support = &call.state.sandbox;
    let mutation = request.is_mutation();
    match route(call, request.sandbox(), mutation).await? {
        sandboxing::FsRoute::InProcess => {
            blocking(move || {
                let response = fs_ops::run(request)?;
                response
                    .into_result()
                    .map_err(|e| RpcError::internal(format!("failed to encode result: {e}")))
            })
            .await
        }
        sandboxing::FsRoute::Helper(helper) => {
            sandboxing::run_fs_helper(support, &call.fs_handles.helpers, &helper, request).await
        }
    }
}

/// `fs/readFile`.
///
/// In-process, the answer is encoded straight from the bytes: a 64 MiB file is 89 MB of base64,
/// which going through `serde_json::Value` would copy and escape-scan once more. A regular file
/// over [`READ_PIECE_BYTES`] is read, encoded and sent a piece at a time (a few hundred KiB in
/// memory, not the file, its base64 and the frame at once: that cost more in page faults than
/// the encoding, by `perf`, `scripts/bench` "fs/readFile 64 MiB"). Errors that show before the
/// first byte (open, type, size) are answered as errors; one half-way abandons the answer (see
/// [`crate::rpc::Outgoing::Pieces`]).
pub(super) async fn read_file(call: &Call, p: ReadFileParams) -> Result<Answer, RpcError> {
    let support = &call.state.sandbox;
    match route(call, p.sandbox.as_ref(), false).await? {
        sandboxing::FsRoute::InProcess => {
            // One trip to the blocking pool for a small file: open, stat, read and encode.
            let opened = blocking(move || {
                if p.follow_symlinks == Some(false) {
                    fs_ops::check_no_symlinks("path", &p.path)?;
                }
                let path = fs_ops::resolve_uri("path", &p.path)?;
                let file = fs_ops::open_for_read_file(&path)?;
                let meta = file.metadata().map_err(|e| fs_ops::FsError::io(e, &path))?;
                // `len` is the size of a regular file only (0 for /proc files and devices).
                let size = meta.is_file().then_some(meta.len());
                match size {
                    Some(size) if size > READ_PIECE_BYTES as u64 => Ok(Err((path, file, size))),
                    _ => {
                        let data = fs_ops::read_all(file, &path)?;
                        let mut json = String::with_capacity(data.len().div_ceil(3) * 4 + 20);
                        json.push_str(READ_FILE_HEAD);
                        crate::b64::encode_append(&data, &mut json);
                        json.push_str(READ_FILE_TAIL);
                        Ok(Ok(json))
                    }
                }
            })
            .await?;
            match opened {
                Ok(json) => Ok(Answer::Encoded(json)),
                Err((path, _, size)) if size > fs_ops::MAX_READ_FILE_BYTES => {
                    Err(fs_ops::too_large_to_read(&path).into())
                }
                Err((path, file, _)) => {
                    let (tx, rx) = tokio::sync::mpsc::channel(crate::rpc::PIECES_QUEUE);
                    tokio::task::spawn_blocking(move || send_file_in_pieces(file, &path, &tx));
                    Ok(Answer::Pieces(rx))
                }
            }
        }
        sandboxing::FsRoute::Helper(helper) => sandboxing::run_fs_helper(
            support,
            &call.fs_handles.helpers,
            &helper,
            FsRequest::ReadFile(p),
        )
        .await
        .map(Answer::Value),
    }
}

/// Raw bytes per piece of an `fs/readFile` answer sent in pieces (a multiple of 3, so the pieces'
/// base64 joins without padding; 512 KiB of base64 each).
const READ_PIECE_BYTES: usize = 3 << 17;
/// The `fs/readFile` result around its base64.
const READ_FILE_HEAD: &str = "{\"dataBase64\":\"";
const READ_FILE_TAIL: &str = "\"}";

/// Reads `file` to its end into `fs/readFile` result pieces on `tx`. Gives up (drops `tx` without
/// the last piece) on a read error, if the file grew past the limit meanwhile, or when nobody
/// takes the pieces any more (the connection ended).
fn send_file_in_pieces(
    mut file: File,
    path: &std::path::Path,
    tx: &tokio::sync::mpsc::Sender<crate::rpc::Piece>,
) {
    use crate::rpc::Piece;
    let mut buf = vec![0u8; READ_PIECE_BYTES];
    let mut total = 0u64;
    let mut text = String::from(READ_FILE_HEAD);
    loop {
        let n = match fs_ops::read_full(&mut file, &mut buf, path) {
            Ok(n) => n,
            Err(err) => {
                tracing::debug!(%err, "fs/readFile failed half-way: abandoning the answer");
                return;
            }
        };
        total += n as u64;
        if total > fs_ops::MAX_READ_FILE_BYTES {
            tracing::debug!("fs/readFile: the file grew past the limit half-way");
            return;
        }
        text.reserve(READ_PIECE_BYTES / 3 * 4 + READ_FILE_TAIL.len());
        crate::b64::encode_append(&buf[..n], &mut text);
        let last = n < buf.len();
        let piece = if last {
            text.push_str(READ_FILE_TAIL);
            Piece::Last(text)
        } else {
            Piece::More(text)
        };
        if tx.blocking_send(piece).is_err() || last {
            return;
        }
        text = String::new();
    }
}

/// `fs/writeFile`.
pub(super) async fn write_file(call: &Call, p: WriteFileParams) -> Result<Value, RpcError> {
    run(call, FsRequest::WriteFile(p)).await
}

/// `fs/createDirectory`.
pub(super) async fn create_directory(
    call: &Call,
    p: CreateDirectoryParams,
) -> Result<Value, RpcError> {
    run(call, FsRequest::CreateDirectory(p)).await
}

/// `fs/getMetadata`.
pub(super) async fn get_metadata(call: &Call, p: GetMetadataParams) -> Result<Value, RpcError> {
    run(call, FsRequest::GetMetadata(p)).await
}

/// `fs/readDirectory`.
pub(super) async fn read_directory(call: &Call, p: ReadDirectoryParams) -> Result<Value, RpcError> {
    run(call, FsRequest::ReadDirectory(p)).await
}

/// `fs/remove`.
pub(super) async fn remove(call: &Call, p: RemoveParams) -> Result<Value, RpcError> {
    run(call, FsRequest::Remove(p)).await
}

/// `fs/copy`.
pub(super) async fn copy(call: &Call, p: CopyParams) -> Result<Value, RpcError> {
    run(call, FsRequest::Copy(p)).await
}

/// `fs/canonicalize`.
pub(super) async fn canonicalize(call: &Call, p: CanonicalizeParams) -> Result<Value, RpcError> {
    run(call, FsRequest::Canonicalize(p)).await
}

/// `fs/walk`: in-process, or in the `codex-fs` helper under a sandbox that restricts reads.
pub(super) async fn walk(call: &Call, p: WalkParams) -> Result<Value, RpcError> {
    // The limits are refused before anything else (the helper is not started for them).
    fs_ops::check_walk_limits(&p.options)?;
    run(call, FsRequest::Walk(p)).await
}

/// `fs/watchMissing`: replaces the connection's one-shot watch (`missing_watch.rs`).
pub(super) async fn watch_missing(
    call: &Call,
    p: WatchMissingParams,
) -> Result<WatchMissingResult, RpcError> {
    super::missing_watch::register(&call.missing_watch, p).await
}

/// `fs/open`: opens a file for `fs/readBlock` (or, `mode: "replace"`, `fs/writeBlock`) under a
/// client-chosen id. Under a sandbox that restricts this kind of access, the sandboxed helper
/// opens it and hands the descriptor back (`sandboxedFileStreaming`).
pub(super) async fn open(call: &Call, p: OpenParams) -> Result<OpenResult, RpcError> {
    if p.handle_id.len() > MAX_FILE_HANDLE_ID_BYTES {
        return Err(RpcError::invalid_request(format!(
            "file handle ID must not exceed {MAX_FILE_HANDLE_ID_BYTES} bytes"
        )));
    }
    let mutation = p.mode == OpenMode::Replace;
    let support = &call.state.sandbox;
    let route = route(call, p.sandbox.as_ref(), mutation).await?;
    let path = fs_ops::resolve_uri("path", &p.path)?;
    call.fs_handles.check_available(&p.handle_id)?;
    let file = match route {
        sandboxing::FsRoute::InProcess => {
            let opened = path.clone();
            let mode = p.mode;
            blocking(move || Ok(fs_ops::open_for_handle(&opened, mode)?)).await?
        }
        // The helper opens it under the sandbox and hands the descriptor back.
        sandboxing::FsRoute::Helper(helper) => {
            sandboxing::open_in_fs_helper(support, &helper, FsRequest::Open(p.clone())).await?
        }
    };
    call.fs_handles
        .insert(&p.handle_id, OpenFile { file, path })?;
    Ok(OpenResult {
        handle_id: p.handle_id,
    })
}

/// `fs/readBlock`: up to `len` bytes at `offset`; `eof` only on a short read. The answer is
/// encoded by hand on the blocking thread, base64 straight into it (through `serde_json` a
/// megabyte block's base64 was copied once more and scanned for escapes on an async thread: the
/// largest cost of a download, by `perf`).
pub(super) async fn read_block(call: &Call, p: ReadBlockParams) -> Result<Answer, RpcError> {
    if !(1..=MAX_READ_BLOCK_BYTES).contains(&p.len) {
        return Err(RpcError::invalid_request(format!(
            "file read block length must be between 1 and {MAX_READ_BLOCK_BYTES}"
        )));
    }
    let Some(handle) = call.fs_handles.get(&p.handle_id) else {
        return Err(unknown_handle(&p.handle_id));
    };
    let reading = handle.clone();
    let len = p.len as usize;
    let outcome = blocking(move || {
        let (data, eof) = match fs_ops::read_block(&reading.file, &reading.path, p.offset, len) {
            Ok(read) => read,
            Err(err) => return Ok(Err(err)),
        };
        let mut json = String::with_capacity(data.len().div_ceil(3) * 4 + 32);
        json.push_str("{\"chunk\":\"");
        crate::b64::encode_append(&data, &mut json);
        json.push_str(if eof {
            "\",\"eof\":true}"
        } else {
            "\",\"eof\":false}"
        });
        Ok(Ok(json))
    })
    .await?;
    match outcome {
        Ok(json) => Ok(Answer::Encoded(json)),
        Err(err) => {
            // Like the reference: a handle that failed to read is closed.
            call.fs_handles.remove_if_same(&p.handle_id, &handle);
            Err(err.into())
        }
    }
}

/// Base64 of [`MAX_WRITE_BLOCK_BYTES`] bytes, with padding: a longer `chunk` is refused before
/// it is decoded.
const MAX_WRITE_BLOCK_BASE64: usize = MAX_WRITE_BLOCK_BYTES.div_ceil(3) * 4;

/// `fs/writeBlock`: writes `chunk` at `offset` of a `replace` handle. The block's length, then
/// its range, then the handle are checked; a write on a read handle fails with EBADF (-32603).
/// A failed write leaves the handle open.
pub(super) async fn write_block(
    call: &Call,
    p: WriteBlockParams,
) -> Result<WriteBlockResult, RpcError> {
    let length_error = || {
        RpcError::invalid_request(format!(
            "file write block length must be between 1 and {MAX_WRITE_BLOCK_BYTES}"
        ))
    };
    if p.chunk.is_empty() || p.chunk.len() > MAX_WRITE_BLOCK_BASE64 {
        return Err(length_error());
    }
    let data = crate::b64::decode(p.chunk.as_bytes())
        .map_err(|e| RpcError::invalid_request(format!("invalid chunk: {e}")))?;
    if !(1..=MAX_WRITE_BLOCK_BYTES).contains(&data.len()) {
        return Err(length_error());
    }
    let fits = p
        .offset
        .checked_add(data.len() as u64)
        .is_some_and(|end| end <= i64::MAX as u64);
    if !fits {
        return Err(RpcError::invalid_request(
            "file write range exceeds the signed 64-bit file offset limit",
        ));
    }
    let Some(handle) = call.fs_handles.get(&p.handle_id) else {
        return Err(unknown_handle(&p.handle_id));
    };
    blocking(move || {
        Ok(fs_ops::write_block(
            &handle.file,
            &handle.path,
            p.offset,
            &data,
        )?)
    })
    .await?;
    Ok(WriteBlockResult {})
}

/// The error for a handle id this connection does not hold.
fn unknown_handle(id: &str) -> RpcError {
    RpcError::new(ErrorCode::NotFound, format!("unknown file handle `{id}`"))
}

/// `fs/close`: an unknown handle is fine.
pub(super) fn close(call: &Call, p: CloseParams) {
    call.fs_handles.remove(&p.handle_id);
}

/// A failed `fs/*` operation as a JSON-RPC error: [`fs_ops::FsError::code`] (protocol.md,
/// "Filesystem") with the OS error text and the path as the message. `fs_ops` decides the code;
/// only this handler layer knows it travels as JSON-RPC.
impl From<fs_ops::FsError> for RpcError {
    fn from(err: fs_ops::FsError) -> Self {
        RpcError::new(err.code(), err.to_string())
    }
}
