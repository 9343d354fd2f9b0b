//! The filesystem operations behind `fs/*`, synchronous and transport-free, so that the server
//! (in `spawn_blocking`) and the sandboxed `codex-fs` helper run exactly the same code.
//!
//! What it owns:
//! - [`FsOp`]: one operation on native absolute paths and raw bytes, resolved from the wire's
//!   [`FsRequest`] (`file:` URIs, base64) by [`FsOp::from_request`].
//! - [`execute`] (and [`run`] = resolve + execute): performs an [`FsOp`] and encodes its result
//!   as the wire's [`FsResponse`]; [`helper_answer`] wraps either outcome as the helper's line.
//! - The single-purpose functions ([`read_file`], [`write_file`], [`copy`], …) and the streaming
//!   pair [`open_for_read`] / [`read_block`] that the per-connection handle table uses.
//! - [`FsError`] and its mapping to the protocol's error codes ([`FsError::code`]), the one place
//!   where that mapping is decided: NotFound → -32004; PermissionDenied or InvalidInput → -32600;
//!   anything else → -32603. The message is the OS error text followed by `: <abs path>`. Nothing
//!   here knows JSON-RPC: the server's handlers turn an [`FsError`] into their error object
//!   (`server::fs`), the `codex-fs` helper into its answer line ([`helper_answer`]).
//!
//! What it leaves to others: sandbox routing, handle bookkeeping and the JSON-RPC error object
//! (`server::fs`), the helper's process and its confinement (`sandbox/`).
//!
//! Semantics follow the reference: types follow symlinks except where a method says otherwise;
//! `remove` never follows a symlink; `copy` copies symlinks as links, skips FIFOs, sockets and
//! devices inside a tree and refuses them named alone, and never copies a directory into itself.
//! Ours also refuses to read FIFOs and sockets (the reference blocks forever on them), opens for
//! writing without blocking on a FIFO, and refuses to copy a file onto itself (which would
//! truncate it).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::path_uri::{self, PathUriError};
use crate::protocol::fs::{
    CanonicalizeResult, CopyResult, CreateDirectoryResult, DirectoryEntry, FsHelperAnswer,
    FsHelperError, FsRequest, FsResponse, GetMetadataResult, MAX_WALK_DEPTH, MAX_WALK_DIRECTORIES,
    MAX_WALK_ENTRIES, OpenMode, ReadDirectoryResult, ReadFileResult, RemoveResult, WalkEntry,
    WalkError, WalkKind, WalkOptions, WalkResult, WriteFileResult,
};
use crate::protocol::{ErrorCode, MAX_MESSAGE_BYTES};

/// Largest file `fs/readFile` returns: its base64 (4 bytes per 3), plus the envelope, must fit
/// in one message of [`MAX_MESSAGE_BYTES`].
pub const MAX_READ_FILE_BYTES: u64 = ((MAX_MESSAGE_BYTES as u64) - 4096) / 4 * 3;

/// Why a filesystem operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The kernel refused a call on `path` (the message is the OS error text and the path).
    #[error("{source}: {}", path.display())]
    Io {
        source: io::Error,
        /// The path the failing call was made on (inside a tree copy: the entry, not the root).
        path: PathBuf,
    },
    /// The operation is not allowed on `path` as asked (a directory copy without `recursive`,
    /// a copy into itself, a FIFO, a file too large). Reported like `InvalidInput`.
    #[error("{reason}: {}", path.display())]
    Refused { reason: String, path: PathBuf },
    /// A path member is not a usable `file:` URI.
    #[error("invalid {field}: {source}")]
    BadUri {
        /// The wire name of the member (`path`, `sourcePath`, `destinationPath`).
        field: &'static str,
        source: PathUriError,
    },
    /// A parameter is out of its range (the message says which); nothing was done.
    #[error("{0}")]
    BadInput(String),
    /// `dataBase64` is not valid base64; nothing was written.
    #[error("invalid dataBase64: {source}")]
    BadBase64 { source: base64::DecodeError },
}

impl FsError {
    /// An I/O error on `path`.
    pub fn io(source: io::Error, path: &Path) -> Self {
        Self::Io {
            source,
            path: path.to_path_buf(),
        }
    }

    /// A refusal of the operation on `path`, reported as invalid input.
    fn refused(reason: impl Into<String>, path: &Path) -> Self {
        Self::Refused {
            reason: reason.into(),
            path: path.to_path_buf(),
        }
    }

    /// The `io::ErrorKind` this error stands for (`InvalidInput` for refusals and bad input).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Self::Io { source, .. } => source.kind(),
            Self::Refused { .. }
            | Self::BadUri { .. }
            | Self::BadBase64 { .. }
            | Self::BadInput(_) => io::ErrorKind::InvalidInput,
        }
    }

    /// The path the error is about, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Io { path, .. } | Self::Refused { path, .. } => Some(path),
            Self::BadUri { .. } | Self::BadBase64 { .. } | Self::BadInput(_) => None,
        }
    }

    /// The JSON-RPC code of this error (protocol.md, "Filesystem").
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadUri { .. } => ErrorCode::InvalidParams,
            Self::BadBase64 { .. } | Self::Refused { .. } | Self::BadInput(_) => {
                ErrorCode::InvalidRequest
            }
            Self::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => ErrorCode::NotFound,
                io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput => {
                    ErrorCode::InvalidRequest
                }
                _ => ErrorCode::Internal,
            },
        }
    }
}

/// One operation, resolved: native absolute paths, decoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsOp {
    ReadFile {
        path: PathBuf,
    },
    WriteFile {
        path: PathBuf,
        /// The contents as base64, checked: decoded a piece at a time while written (a 64 MiB
        /// file needs no 64 MiB buffer).
        base64: String,
    },
    CreateDirectory {
        path: PathBuf,
        recursive: bool,
    },
    GetMetadata {
        path: PathBuf,
    },
    ReadDirectory {
        path: PathBuf,
    },
    Remove {
        path: PathBuf,
        recursive: bool,
        force: bool,
    },
    Copy {
        source: PathBuf,
        destination: PathBuf,
        recursive: bool,
    },
    Canonicalize {
        path: PathBuf,
    },
    /// `fs/open` in the helper, which hands the descriptor back ([`open_for_handle`]).
    Open {
        path: PathBuf,
        mode: OpenMode,
        handle_id: String,
    },
    Walk {
        path: PathBuf,
        options: WalkOptions,
    },
}

/// A `file:` URI member as a native path, or the error naming the member.
pub fn resolve_uri(field: &'static str, uri: &str) -> Result<PathBuf, FsError> {
    path_uri::to_path(uri).map_err(|source| FsError::BadUri { field, source })
}

/// For `followSymlinks: false`: refuses a path the kernel would walk through a symbolic link,
/// checked on the URI's path as written (before a `..` in it is resolved). A symlink as the last
/// component is refused as input (-32600 `path contains a symbolic link`); one before it is
/// ENOTDIR (-32603), as the reference answers. A missing component ends the check (the operation
/// reports it). Checked just before the operation: a link swapped in meanwhile is not caught.
pub fn check_no_symlinks(field: &'static str, uri: &str) -> Result<(), FsError> {
    let raw =
        path_uri::to_unresolved_path(uri).map_err(|source| FsError::BadUri { field, source })?;
    let components: Vec<_> = raw.components().collect();
    let mut prefix = PathBuf::new();
    for (n, component) in components.iter().enumerate() {
        prefix.push(component);
        if !matches!(
            component,
            std::path::Component::Normal(_) | std::path::Component::ParentDir
        ) {
            continue;
        }
        match fs::symlink_metadata(&prefix) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(if n + 1 == components.len() {
                    FsError::refused("path contains a symbolic link", &raw)
                } else {
                    FsError::io(io::Error::from_raw_os_error(libc::ENOTDIR), &raw)
                });
            }
            Ok(_) => {}
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

impl FsOp {
    /// Resolves a wire request: URIs become paths (-32602 naming the member), base64 becomes
    /// bytes (-32600). Touches the file system only to resolve a `..` in a URI, and to look for
    /// symlinks under `followSymlinks: false` ([`check_no_symlinks`]).
    pub fn from_request(request: FsRequest) -> Result<FsOp, FsError> {
        if request.no_follow() {
            check_no_symlinks("path", request.path())?;
        }
        Ok(match request {
            FsRequest::ReadFile(p) => FsOp::ReadFile {
                path: resolve_uri("path", &p.path)?,
            },
            FsRequest::WriteFile(p) => {
                let path = resolve_uri("path", &p.path)?;
                crate::b64::check(p.data_base64.as_bytes())
                    .map_err(|source| FsError::BadBase64 { source })?;
                FsOp::WriteFile {
                    path,
                    base64: p.data_base64,
                }
            }
            FsRequest::CreateDirectory(p) => FsOp::CreateDirectory {
                path: resolve_uri("path", &p.path)?,
                recursive: p.recursive,
            },
            FsRequest::GetMetadata(p) => FsOp::GetMetadata {
                path: resolve_uri("path", &p.path)?,
            },
            FsRequest::ReadDirectory(p) => FsOp::ReadDirectory {
                path: resolve_uri("path", &p.path)?,
            },
            FsRequest::Remove(p) => FsOp::Remove {
                path: resolve_uri("path", &p.path)?,
                recursive: p.recursive,
                force: p.force,
            },
            FsRequest::Copy(p) => FsOp::Copy {
                source: resolve_uri("sourcePath", &p.source_path)?,
                destination: resolve_uri("destinationPath", &p.destination_path)?,
                recursive: p.recursive,
            },
            FsRequest::Canonicalize(p) => FsOp::Canonicalize {
                path: resolve_uri("path", &p.path)?,
            },
            FsRequest::Open(p) => FsOp::Open {
                path: resolve_uri("path", &p.path)?,
                mode: p.mode,
                handle_id: p.handle_id,
            },
            FsRequest::Walk(p) => {
                check_walk_limits(&p.options)?;
                FsOp::Walk {
                    path: resolve_uri("path", &p.path)?,
                    options: p.options,
                }
            }
        })
    }
}

/// Performs one operation and encodes its result for the wire.
pub fn execute(op: FsOp) -> Result<FsResponse, FsError> {
    Ok(match op {
        FsOp::ReadFile { path } => FsResponse::ReadFile(ReadFileResult {
            data_base64: crate::b64::encode(&read_file(&path)?),
        }),
        FsOp::WriteFile { path, base64 } => {
            write_file_base64(&path, &base64)?;
            FsResponse::WriteFile(WriteFileResult {})
        }
        FsOp::CreateDirectory { path, recursive } => {
            create_directory(&path, recursive)?;
            FsResponse::CreateDirectory(CreateDirectoryResult {})
        }
        FsOp::GetMetadata { path } => FsResponse::GetMetadata(get_metadata(&path)?),
        FsOp::ReadDirectory { path } => FsResponse::ReadDirectory(ReadDirectoryResult {
            entries: read_directory(&path)?,
        }),
        FsOp::Remove {
            path,
            recursive,
            force,
        } => {
            remove(&path, recursive, force)?;
            FsResponse::Remove(RemoveResult {})
        }
        FsOp::Copy {
            source,
            destination,
            recursive,
        } => {
            copy(&source, &destination, recursive)?;
            FsResponse::Copy(CopyResult {})
        }
        FsOp::Canonicalize { path } => FsResponse::Canonicalize(CanonicalizeResult {
            path: path_uri::from_path(&canonicalize(&path)?),
        }),
        FsOp::Open { path, .. } => {
            return Err(FsError::refused(
                "opening a file requires descriptor handoff",
                &path,
            ));
        }
        FsOp::Walk { path, options } => FsResponse::Walk(walk(&path, &options)?),
    })
}

/// Largest `fs/walk` answer, roughly (URIs and messages plus their JSON): past it the walk stops
/// with `truncated` (the reference is reported to have the same 4 MiB budget).
pub const MAX_WALK_RESPONSE_BYTES: usize = 4 << 20;

/// `fs/walk`'s limits: each at least 1 (depth 0 allowed) and at most the maximum.
pub fn check_walk_limits(o: &WalkOptions) -> Result<(), FsError> {
    if o.max_directories == 0 || o.max_entries == 0 {
        return Err(FsError::BadInput(
            "filesystem walk limits must be greater than zero".into(),
        ));
    }
    if o.max_depth > MAX_WALK_DEPTH
        || o.max_directories > MAX_WALK_DIRECTORIES
        || o.max_entries > MAX_WALK_ENTRIES
    {
        return Err(FsError::BadInput(format!(
            "filesystem walk limits exceed maximums: depth={MAX_WALK_DEPTH}, \
             directories={MAX_WALK_DIRECTORIES}, entries={MAX_WALK_ENTRIES}"
        )));
    }
    Ok(())
}

/// Walks the tree under `root` breadth-first, each directory's entries sorted by name. A missing
/// root is an error; a root that is not a directory has no entries; a directory that cannot be
/// read is reported in `errors` and the walk goes on. Symlinks to directories are left out, or
/// (with `followDirectorySymlinks`) listed as directories and descended; either way each real
/// directory (by device and inode) is read at most once, so a symlink loop ends. Other symlinks,
/// broken ones included, are listed as files.
pub fn walk(root: &Path, o: &WalkOptions) -> Result<WalkResult, FsError> {
    walk_checked(root, o, &|_| Ok(()))
}

/// [`walk`], reading only the directories `may_read` allows (the `codex-fs` helper's guard); a
/// refused one is reported in `errors` like an unreadable one.
pub fn walk_checked(
    root: &Path,
    o: &WalkOptions,
    may_read: &dyn Fn(&Path) -> Result<(), FsError>,
) -> Result<WalkResult, FsError> {
    check_walk_limits(o)?;
    let meta = fs::metadata(root).map_err(|e| FsError::io(e, root))?;
    let mut out = WalkResult::default();
    if !meta.is_dir() {
        return Ok(out);
    }
    let mut seen = std::collections::HashSet::new();
    seen.insert((meta.dev(), meta.ino()));
    let mut queue = std::collections::VecDeque::from([(root.to_path_buf(), 0u64)]);
    let mut read = 0u64;
    // Entries plus the errors of entries that could not be looked at: bounded by `maxEntries`.
    let mut emitted = 0u64;
    // The answer's size, bounded by MAX_WALK_RESPONSE_BYTES (each item's URI and message, plus
    // its JSON around them).
    let mut bytes = 0usize;
    let mut fits = |bytes_of: usize| {
        bytes += bytes_of + 40;
        bytes <= MAX_WALK_RESPONSE_BYTES
    };
    while let Some((dir, depth)) = queue.pop_front() {
        if read >= o.max_directories {
            out.truncated = true;
            break;
        }
        read += 1;
        let listed = may_read(&dir).and_then(|()| {
            fs::read_dir(&dir)
                .and_then(|it| {
                    it.map(|e| e.map(|e| e.file_name()))
                        .collect::<io::Result<Vec<_>>>()
                })
                .map_err(|e| FsError::io(e, &dir))
        });
        let mut names = match listed {
            Ok(names) => names,
            Err(err) => {
                let message = match err {
                    FsError::Io { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                let path = path_uri::from_path(&dir);
                if !fits(path.len() + message.len()) {
                    out.truncated = true;
                    return Ok(out);
                }
                out.errors.push(WalkError { path, message });
                continue;
            }
        };
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let lmeta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // gone meanwhile
                Err(e) => {
                    let (path, message) = (path_uri::from_path(&path), e.to_string());
                    if emitted >= o.max_entries || !fits(path.len() + message.len()) {
                        out.truncated = true;
                        return Ok(out);
                    }
                    emitted += 1;
                    out.errors.push(WalkError { path, message });
                    continue;
                }
            };
            let dir_meta = if lmeta.file_type().is_symlink() {
                match fs::metadata(&path) {
                    Ok(m) if m.is_dir() && !o.follow_directory_symlinks => continue,
                    Ok(m) if m.is_dir() => Some(m),
                    _ => None,
                }
            } else if lmeta.is_dir() {
                Some(lmeta)
            } else {
                None
            };
            let uri = path_uri::from_path(&path);
            if emitted >= o.max_entries || !fits(uri.len()) {
                out.truncated = true;
                return Ok(out);
            }
            emitted += 1;
            out.entries.push(WalkEntry {
                path: uri,
                kind: if dir_meta.is_some() {
                    WalkKind::Directory
                } else {
                    WalkKind::File
                },
            });
            let Some(m) = dir_meta else { continue };
            let hidden = name.as_encoded_bytes().starts_with(b".");
            if depth < o.max_depth
                && !(o.prune_hidden_directories && hidden)
                && seen.insert((m.dev(), m.ino()))
            {
                queue.push_back((path, depth + 1));
            }
        }
    }
    Ok(out)
}

/// Resolves and performs a wire request: what the helper does with the line it reads.
pub fn run(request: FsRequest) -> Result<FsResponse, FsError> {
    execute(FsOp::from_request(request)?)
}

/// The helper's answer line for an outcome.
pub fn helper_answer(outcome: Result<FsResponse, FsError>) -> FsHelperAnswer {
    match outcome {
        Ok(response) => FsHelperAnswer::Ok(response),
        Err(err) => FsHelperAnswer::Error(FsHelperError {
            code: err.code().code(),
            message: err.to_string(),
        }),
    }
}

/// Opens `path` for reading without blocking (a FIFO with no writer would block `open`), and
/// refuses what cannot be read as a file: a directory (EISDIR), a FIFO or a socket.
pub fn open_for_read(path: &Path) -> Result<File, FsError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| FsError::io(e, path))?;
    let file_type = file
        .metadata()
        .map_err(|e| FsError::io(e, path))?
        .file_type();
    if file_type.is_dir() {
        return Err(FsError::io(
            io::Error::from_raw_os_error(libc::EISDIR),
            path,
        ));
    }
    if file_type.is_fifo() || file_type.is_socket() {
        return Err(FsError::refused("not a regular file", path));
    }
    Ok(file)
}

/// [`open_for_read`] for `fs/open`: there a directory is invalid input (-32600, as the reference
/// answers), where `fs/readFile` of one is an I/O error (-32603). Same message.
pub fn open_handle(path: &Path) -> Result<File, FsError> {
    open_for_read(path).map_err(|err| match err {
        FsError::Io { source, path } if source.raw_os_error() == Some(libc::EISDIR) => {
            FsError::Refused {
                reason: source.to_string(),
                path,
            }
        }
        other => other,
    })
}

/// Opens `path` for `fs/open` with `mode: "replace"`: write-only, created or truncated in place
/// (the same inode, so hard links, mode and ACLs are kept). The parent must exist (else
/// NotFound); a directory is EISDIR (-32603, as the reference answers). Without blocking: a FIFO
/// with no reader fails (ENXIO); one with a reader, or a socket, is refused.
pub fn open_replace(path: &Path) -> Result<File, FsError> {
    let file = create_for_write(path)?;
    let file_type = file
        .metadata()
        .map_err(|e| FsError::io(e, path))?
        .file_type();
    if file_type.is_fifo() || file_type.is_socket() {
        return Err(FsError::refused("not a regular file", path));
    }
    Ok(file)
}

/// Writes all of `data` at `offset` (a gap past the end reads as zeros). `path` only names the
/// file in errors.
pub fn write_block(file: &File, path: &Path, offset: u64, data: &[u8]) -> Result<(), FsError> {
    file.write_all_at(data, offset)
        .map_err(|e| FsError::io(e, path))
}

/// Opens `path` for an `fs/open` handle of `mode`.
pub fn open_for_handle(path: &Path, mode: OpenMode) -> Result<File, FsError> {
    match mode {
        OpenMode::Read => open_handle(path),
        OpenMode::Replace => open_replace(path),
    }
}

/// Reads up to `len` bytes at `offset`; `eof` is true only when fewer than `len` were read.
/// `path` only names the file in errors.
pub fn read_block(
    file: &File,
    path: &Path,
    offset: u64,
    len: usize,
) -> Result<(Vec<u8>, bool), FsError> {
    let mut data = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let at = offset
            .checked_add(filled as u64)
            .ok_or_else(|| FsError::refused("file read offset overflowed", path))?;
        match file.read_at(&mut data[filled..], at) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FsError::io(e, path)),
        }
    }
    data.truncate(filled);
    Ok((data, filled < len))
}

/// The whole contents of `path` (symlinks followed), at most [`MAX_READ_FILE_BYTES`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, FsError> {
    read_all(open_for_read_file(path)?, path)
}

/// [`open_for_read`] for `fs/readFile`, which reads a whole file into one answer: a device is
/// refused too (`/dev/zero` never ends, `/dev/sda` reports no size), before anything is read.
/// `fs/open` still takes one: it reads a block at a time.
pub fn open_for_read_file(path: &Path) -> Result<File, FsError> {
    let file = open_for_read(path)?;
    let file_type = file
        .metadata()
        .map_err(|e| FsError::io(e, path))?
        .file_type();
    if file_type.is_char_device() || file_type.is_block_device() {
        return Err(FsError::refused(
            "not a regular file (a device): read it with fs/open and fs/readBlock",
            path,
        ));
    }
    Ok(file)
}

/// The error for a file over [`MAX_READ_FILE_BYTES`].
pub fn too_large_to_read(path: &Path) -> FsError {
    FsError::refused(
        format!("file is too large to read: the limit is {MAX_READ_FILE_BYTES} bytes"),
        path,
    )
}

/// The rest of `file` (opened by [`open_for_read`]), at most [`MAX_READ_FILE_BYTES`].
pub fn read_all(file: File, path: &Path) -> Result<Vec<u8>, FsError> {
    let hint = file.metadata().map(|m| m.len()).unwrap_or(0);
    // A regular file's size is known before reading (a /proc file says 0, and is read to its end).
    if hint > MAX_READ_FILE_BYTES {
        return Err(too_large_to_read(path));
    }
    let mut data = Vec::with_capacity(hint.min(MAX_READ_FILE_BYTES) as usize);
    file.take(MAX_READ_FILE_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| FsError::io(e, path))?;
    if data.len() as u64 > MAX_READ_FILE_BYTES {
        return Err(too_large_to_read(path));
    }
    Ok(data)
}

/// Fills `buf` from `file` unless EOF comes first; returns how much was read.
pub fn read_full(file: &mut File, buf: &mut [u8], path: &Path) -> Result<usize, FsError> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FsError::io(e, path)),
        }
    }
    Ok(filled)
}

/// Creates or truncates `path` and writes `data`. The parent must exist (else NotFound). A FIFO
/// without a reader fails (ENXIO) instead of blocking.
pub fn write_file(path: &Path, data: &[u8]) -> Result<(), FsError> {
    use std::io::Write as _;
    create_for_write(path)?
        .write_all(data)
        .map_err(|e| FsError::io(e, path))
}

/// Creates or truncates `path` for [`write_file`].
fn create_for_write(path: &Path) -> Result<File, FsError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| FsError::io(e, path))
}

/// [`write_file`] of checked base64 (see [`crate::b64::check`]), decoded a piece at a time.
pub fn write_file_base64(path: &Path, base64: &str) -> Result<(), FsError> {
    use std::io::Write as _;
    let mut file = create_for_write(path)?;
    crate::b64::decode_in_pieces(base64.as_bytes(), WRITE_PIECE_BASE64, |data| {
        file.write_all(data).map_err(|e| FsError::io(e, path))
    })
}

/// Base64 symbols decoded at a time by [`write_file_base64`] (768 KiB of bytes: in cache, and
/// few enough `write`s).
const WRITE_PIECE_BASE64: usize = 1 << 20;

/// Creates a directory; with `recursive`, its missing parents too, and an existing directory is
/// fine.
pub fn create_directory(path: &Path, recursive: bool) -> Result<(), FsError> {
    let result = if recursive {
        fs::create_dir_all(path)
    } else {
        fs::create_dir(path)
    };
    result.map_err(|e| FsError::io(e, path))
}

/// Type and size following symlinks; `is_symlink` of the path itself.
pub fn get_metadata(path: &Path) -> Result<GetMetadataResult, FsError> {
    let target = fs::metadata(path).map_err(|e| FsError::io(e, path))?;
    let itself = fs::symlink_metadata(path).map_err(|e| FsError::io(e, path))?;
    Ok(GetMetadataResult {
        is_directory: target.is_dir(),
        is_file: target.is_file(),
        is_symlink: itself.file_type().is_symlink(),
        size: target.len(),
        created_at_ms: target.created().map_or(0, unix_ms),
        modified_at_ms: target.modified().map_or(0, unix_ms),
    })
}

/// Milliseconds since the Unix epoch; 0 for a time before it or beyond `i64`.
fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
}

/// The entries of a directory, sorted by name; types follow symlinks, and an entry whose type
/// cannot be read (a dangling symlink, an entry removed meanwhile) is left out.
pub fn read_directory(path: &Path) -> Result<Vec<DirectoryEntry>, FsError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(path).map_err(|e| FsError::io(e, path))? {
        let entry = entry.map_err(|e| FsError::io(e, path))?;
        let Ok(meta) = fs::metadata(entry.path()) else {
            continue;
        };
        entries.push(DirectoryEntry {
            file_name: entry.file_name().to_string_lossy().into_owned(),
            is_directory: meta.is_dir(),
            is_file: meta.is_file(),
        });
    }
    entries.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok(entries)
}

/// Removes `path`: a directory with its contents if `recursive`, anything else (a symlink
/// included, never its target) with `unlink`. With `force`, a missing path is success.
pub fn remove(path: &Path, recursive: bool, force: bool) -> Result<(), FsError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound && force => return Ok(()),
        Err(e) => return Err(FsError::io(e, path)),
    };
    let result = if meta.is_dir() {
        if recursive {
            fs::remove_dir_all(path)
        } else {
            fs::remove_dir(path)
        }
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound && force => Ok(()),
        other => other.map_err(|e| FsError::io(e, path)),
    }
}

/// Copies `source` to `destination`. A directory needs `recursive` and is merged into
/// `destination` (created if missing); it may not be copied into itself or a descendant.
/// Symlinks are copied as links, never followed; FIFOs, sockets and devices are skipped inside a
/// tree and refused as `source`.
pub fn copy(source: &Path, destination: &Path, recursive: bool) -> Result<(), FsError> {
    let meta = fs::symlink_metadata(source).map_err(|e| FsError::io(e, source))?;
    let file_type = meta.file_type();
    if file_type.is_dir() {
        if !recursive {
            return Err(FsError::refused(
                "fs/copy requires recursive: true when sourcePath is a directory",
                source,
            ));
        }
        if is_same_or_descendant(source, destination)? {
            return Err(FsError::refused(
                "fs/copy cannot copy a directory to itself or one of its descendants",
                destination,
            ));
        }
        return copy_tree(source, destination);
    }
    if file_type.is_symlink() {
        return copy_symlink(source, destination);
    }
    if file_type.is_file() {
        if let Ok(dest) = fs::metadata(destination)
            && dest.dev() == meta.dev()
            && dest.ino() == meta.ino()
        {
            return Err(FsError::refused(
                "fs/copy cannot copy a file onto itself",
                destination,
            ));
        }
        return copy_file(source, destination);
    }
    Err(FsError::refused(
        "fs/copy only supports regular files, directories, and symlinks",
        source,
    ))
}

/// Copies a regular file's bytes and permission bits (`copy_file_range` where the kernel can).
fn copy_file(source: &Path, destination: &Path) -> Result<(), FsError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut from = File::open(source).map_err(|e| FsError::io(e, source))?;
    let permissions = from
        .metadata()
        .map_err(|e| FsError::io(e, source))?
        .permissions();
    let mut to = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(permissions.mode())
        .open(destination)
        .map_err(|e| FsError::io(e, destination))?;
    io::copy(&mut from, &mut to).map_err(|e| FsError::io(e, destination))?;
    to.set_permissions(permissions)
        .map_err(|e| FsError::io(e, destination))
}

/// Creates at `destination` a symlink with the same target text as `source`.
fn copy_symlink(source: &Path, destination: &Path) -> Result<(), FsError> {
    let target = fs::read_link(source).map_err(|e| FsError::io(e, source))?;
    std::os::unix::fs::symlink(&target, destination).map_err(|e| FsError::io(e, destination))
}

/// Copies a directory's contents into `destination` (created if missing), depth first.
fn copy_tree(source: &Path, destination: &Path) -> Result<(), FsError> {
    fs::create_dir_all(destination).map_err(|e| FsError::io(e, destination))?;
    for entry in fs::read_dir(source).map_err(|e| FsError::io(e, source))? {
        let entry = entry.map_err(|e| FsError::io(e, source))?;
        let from = entry.path();
        let to = destination.join(entry.file_name());
        let file_type = entry.file_type().map_err(|e| FsError::io(e, &from))?;
        if file_type.is_dir() {
            copy_tree(&from, &to)?;
        } else if file_type.is_file() {
            copy_file(&from, &to)?;
        } else if file_type.is_symlink() {
            copy_symlink(&from, &to)?;
        }
        // FIFOs, sockets and devices are skipped.
    }
    Ok(())
}

/// Whether `destination` (which may not exist yet) is `source` or lies inside it, after
/// resolving symlinks in both.
fn is_same_or_descendant(source: &Path, destination: &Path) -> Result<bool, FsError> {
    let source = fs::canonicalize(source).map_err(|e| FsError::io(e, source))?;
    Ok(resolve_existing_prefix(destination)?.starts_with(&source))
}

/// Canonicalizes the longest existing prefix of `path` and appends the rest unchanged.
fn resolve_existing_prefix(path: &Path) -> Result<PathBuf, FsError> {
    let mut missing = Vec::new();
    let mut existing = path;
    while fs::metadata(existing).is_err() {
        let (Some(name), Some(parent)) = (existing.file_name(), existing.parent()) else {
            break;
        };
        missing.push(name.to_os_string());
        existing = parent;
    }
    let mut resolved = fs::canonicalize(existing).map_err(|e| FsError::io(e, existing))?;
    resolved.extend(missing.iter().rev());
    Ok(resolved)
}

/// The absolute path with every symlink and `..` resolved; the path must exist.
pub fn canonicalize(path: &Path) -> Result<PathBuf, FsError> {
    fs::canonicalize(path).map_err(|e| FsError::io(e, path))
}

#[cfg(test)]
#[path = "fs_ops_tests.rs"]
mod tests;
