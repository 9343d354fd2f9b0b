//! `fs/*` params and results, and the messages of the `codex-fs` helper (sandbox.md §5).
//!
//! Paths are `file:` URIs and file contents are base64, as on the wire; turning them into native
//! paths and bytes is `crate::fs_ops`'s job. Every params struct takes an optional `sandbox`
//! (what it means is decided in `server::fs`); unknown members are ignored.
//!
//! The helper protocol reuses these shapes: its request is an [`FsRequest`]
//! (`{"operation":"fs/writeFile","params":{…}}`) and its one-line answer an [`FsHelperAnswer`]
//! (`{"status":"ok","payload":{"operation":"fs/writeFile","response":{}}}` or
//! `{"status":"error","payload":{"code":-32004,"message":"…"}}`).

use serde::{Deserialize, Serialize};

use super::method;
use super::sandbox::SandboxIntent;

/// Serde default of the flags that are on unless a client turns them off.
fn default_true() -> bool {
    true
}

/// `fs/readFile` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadFileParams {
    pub path: String,
    /// `false`: refuse a path with a symbolic link in any component (omitted: follow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_symlinks: Option<bool>,
    #[serde(default)]
    pub sandbox: Option<SandboxIntent>,
}

/// `fs/readFile` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReadFileResult {
    /// Base64 of the whole file.
    pub data_base64: String,
}

/// `fs/writeFile` params: creates or truncates `path` (its parent must exist).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WriteFileParams {
    pub path: String,
    /// Base64 of the new contents.
    pub data_base64: String,
    /// `false`: refuse a path with a symbolic link in any component (omitted: follow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_symlinks: Option<bool>,
    #[serde(default)]
    pub sandbox: Option<SandboxIntent>,
}

/// `fs/writeFile` result: `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WriteFileResult {}

/// `fs/createDirectory` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreateDirectoryParams {
    pub path: String,
    /// Create missing parents too, and accept an existing directory (default true).
    #[serde(default = "default_true")]
    pub recursive: bool,
    /// `false`: refuse a path with a symbolic link in any component (omitted: follow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_symlinks: Option<bool>,
    #[serde(default)]
    pub sandbox: Option<SandboxIntent>,
}

/// `fs/createDirectory` result: `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CreateDirectoryResult {}

/// `fs/getMetadata` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GetMetadataParams {
    pub path: String,
    /// `false`: refuse a path with a symbolic link in any component (omitted: follow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_symlinks: Option<bool>,
    #[serde(default)]
    pub sandbox: Option<SandboxIntent>,
}

/// `fs/getMetadata` result. The type and size follow symlinks; `isSymlink` is about the path
/// itself. Times are milliseconds since the Unix epoch, 0 when the file system does not know.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GetMetadataResult {
    pub is_directory: bool,
    pub is_file: bool,
    pub is_symlink: bool,
    pub size: u64,
    pub created_at_ms: i64,
    pub modified_at_ms: i64,
}

/// `fs/readDirectory` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadDirectoryParams {
    pub path: String,
    #[serde(default)]
    pub sandbox: Option<SandboxIntent>,
}

/// One entry of a directory; the type follows symlinks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryEntry {
    pub file_name: String,
    pub is_directory: bool,
    pub is_file: bool,
}

/// `fs/readDirectory` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReadDirectoryResult {
    pub entries: Vec<DirectoryEntry>,
}

/// `fs/remove` params. A symlink is removed, never its target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemoveParams {
    pub path: String,
    /// Remove a directory with its contents (default true).
    #[serde(default = "default_true")]
    pub recursive: bool,
    /// A missing path is not an error (default true).
    #[serde(default = "default_true")]
    pub force: bool,
    /// `false`: refuse a path with a symbolic link in any component (omitted: follow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_symlinks: Option<bool>,
    #[serde(default)]
    pub sandbox: Option<SandboxIntent>,
}

/// `fs/remove` result: `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoveResult {}

/// `fs/copy` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CopyParams {
    pub source_path: String,
    pub destination_path: String,
    /// Required to copy a directory (default false).
    #[serde(default)]
    pub recursive: bool,
    #[serde(default)]
    pub sandbox: Option<SandboxIntent>,
}

/// `fs/copy` result: `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CopyResult {}

/// `fs/canonicalize` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanonicalizeParams {
    pub path: String,
    #[serde(default)]
    pub sandbox: Option<SandboxIntent>,
}

/// `fs/canonicalize` result: the absolute path with every symlink and `..` resolved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CanonicalizeResult {
    pub path: String,
}

/// `fs/open` params: opens `path` under the client-chosen `handleId`, for `fs/readBlock` or
/// (`mode: "replace"`) `fs/writeBlock`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OpenParams {
    /// At most [`MAX_FILE_HANDLE_ID_BYTES`] bytes, unique among the connection's open handles.
    pub handle_id: String,
    pub path: String,
    /// `read` when omitted.
    #[serde(default)]
    pub mode: OpenMode,
    #[serde(default)]
    pub sandbox: Option<SandboxIntent>,
}

/// What an `fs/open` handle is for.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OpenMode {
    /// Read-only, for `fs/readBlock`.
    #[default]
    Read,
    /// Write-only, for `fs/writeBlock`: the file is created or truncated in place (hard links,
    /// mode and ACLs are kept); its parent must exist.
    Replace,
}

/// `fs/open` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OpenResult {
    pub handle_id: String,
}

/// `fs/readBlock` params: up to `len` bytes at `offset` of an open handle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadBlockParams {
    pub handle_id: String,
    pub offset: u64,
    /// Between 1 and [`MAX_READ_BLOCK_BYTES`].
    pub len: u64,
    #[serde(default)]
    pub sandbox: Option<SandboxIntent>,
}

/// `fs/readBlock` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReadBlockResult {
    /// Base64 of the bytes read.
    pub chunk: String,
    /// True only when fewer than `len` bytes were read (the end of the file was reached).
    pub eof: bool,
}

/// `fs/writeBlock` params: writes `chunk` at `offset` of a `replace` handle (a gap before it
/// reads as zeros).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WriteBlockParams {
    pub handle_id: String,
    pub offset: u64,
    /// Base64 of 1 to [`MAX_WRITE_BLOCK_BYTES`] bytes.
    pub chunk: String,
}

/// `fs/writeBlock` result: `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WriteBlockResult {}

/// `fs/close` params. Closing an unknown handle succeeds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CloseParams {
    pub handle_id: String,
    #[serde(default)]
    pub sandbox: Option<SandboxIntent>,
}

/// `fs/close` result: `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloseResult {}

/// Longest `handleId` of `fs/open`, in bytes.
pub const MAX_FILE_HANDLE_ID_BYTES: usize = 32;
/// Most `fs/open` handles one connection may hold at once.
pub const MAX_FILE_HANDLES_PER_CONNECTION: usize = 128;
/// Largest `len` of one `fs/readBlock`.
pub const MAX_READ_BLOCK_BYTES: u64 = 1 << 20;
/// Largest decoded `chunk` of one `fs/writeBlock`.
pub const MAX_WRITE_BLOCK_BYTES: usize = 1 << 20;

/// `fs/walk` params: a breadth-first listing of the tree under `path`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WalkParams {
    pub path: String,
    pub options: WalkOptions,
    #[serde(default)]
    pub sandbox: Option<SandboxIntent>,
}

/// `fs/walk` options (all but `pruneHiddenDirectories` required).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WalkOptions {
    /// 0 = only the direct children of `path`; at most [`MAX_WALK_DEPTH`].
    pub max_depth: u64,
    /// Directories read, the root included; 1 to [`MAX_WALK_DIRECTORIES`].
    pub max_directories: u64,
    /// Entries returned; 1 to [`MAX_WALK_ENTRIES`].
    pub max_entries: u64,
    /// List a symlink to a directory as a directory and descend it (else it is left out).
    pub follow_directory_symlinks: bool,
    /// List dot-directories without descending them.
    #[serde(default)]
    pub prune_hidden_directories: bool,
}

/// Deepest `maxDepth` of `fs/walk`.
pub const MAX_WALK_DEPTH: u64 = 64;
/// Largest `maxDirectories` of `fs/walk`.
pub const MAX_WALK_DIRECTORIES: u64 = 10_000;
/// Largest `maxEntries` of `fs/walk`.
pub const MAX_WALK_ENTRIES: u64 = 50_000;

/// The kind of a walked entry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum WalkKind {
    Directory,
    File,
}

/// One entry of an `fs/walk` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WalkEntry {
    pub path: String,
    pub kind: WalkKind,
}

/// A directory `fs/walk` could not read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WalkError {
    pub path: String,
    pub message: String,
}

/// `fs/walk` result.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WalkResult {
    pub entries: Vec<WalkEntry>,
    pub errors: Vec<WalkError>,
    /// A limit (directories or entries) stopped the walk.
    pub truncated: bool,
}

/// `fs/watchMissing` params: one one-shot watch per connection, replacing the previous one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WatchMissingParams {
    pub watch_id: u64,
    /// Paths expected not to exist.
    pub missing: Vec<String>,
    /// A path expected to exist.
    #[serde(default)]
    pub present: Option<String>,
}

/// `fs/watchMissing` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WatchMissingResult {
    pub watching: bool,
}

/// `fs/missingChanged` params: the watch fired (and is gone).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MissingChangedParams {
    pub watch_id: u64,
}

/// One self-contained filesystem operation, tagged by method name: the request the `codex-fs`
/// helper reads from stdin. Of the streaming methods only `fs/open` is, under a sandbox (the
/// helper hands the descriptor back); `fs/readBlock`, `fs/writeBlock` and `fs/close` use the
/// connection's handles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "operation", content = "params")]
pub enum FsRequest {
    #[serde(rename = "fs/readFile")]
    ReadFile(ReadFileParams),
    #[serde(rename = "fs/writeFile")]
    WriteFile(WriteFileParams),
    #[serde(rename = "fs/createDirectory")]
    CreateDirectory(CreateDirectoryParams),
    #[serde(rename = "fs/getMetadata")]
    GetMetadata(GetMetadataParams),
    #[serde(rename = "fs/readDirectory")]
    ReadDirectory(ReadDirectoryParams),
    #[serde(rename = "fs/remove")]
    Remove(RemoveParams),
    #[serde(rename = "fs/copy")]
    Copy(CopyParams),
    #[serde(rename = "fs/canonicalize")]
    Canonicalize(CanonicalizeParams),
    /// Only to the helper: it opens the file and hands the descriptor back with its answer.
    #[serde(rename = "fs/open")]
    Open(OpenParams),
    #[serde(rename = "fs/walk")]
    Walk(WalkParams),
}

impl FsRequest {
    /// The method name, as in the `operation` member.
    pub fn method(&self) -> &'static str {
        match self {
            Self::ReadFile(_) => method::FS_READ_FILE,
            Self::WriteFile(_) => method::FS_WRITE_FILE,
            Self::CreateDirectory(_) => method::FS_CREATE_DIRECTORY,
            Self::GetMetadata(_) => method::FS_GET_METADATA,
            Self::ReadDirectory(_) => method::FS_READ_DIRECTORY,
            Self::Remove(_) => method::FS_REMOVE,
            Self::Copy(_) => method::FS_COPY,
            Self::Canonicalize(_) => method::FS_CANONICALIZE,
            Self::Open(_) => method::FS_OPEN,
            Self::Walk(_) => method::FS_WALK,
        }
    }

    /// `followSymlinks: false` of the methods that take it: the path may hold no symlink.
    pub fn no_follow(&self) -> bool {
        let follow = match self {
            Self::ReadFile(p) => p.follow_symlinks,
            Self::WriteFile(p) => p.follow_symlinks,
            Self::CreateDirectory(p) => p.follow_symlinks,
            Self::GetMetadata(p) => p.follow_symlinks,
            Self::Remove(p) => p.follow_symlinks,
            Self::ReadDirectory(_)
            | Self::Copy(_)
            | Self::Canonicalize(_)
            | Self::Open(_)
            | Self::Walk(_) => None,
        };
        follow == Some(false)
    }

    /// The `path` member (`sourcePath` for `fs/copy`).
    pub fn path(&self) -> &str {
        match self {
            Self::ReadFile(p) => &p.path,
            Self::WriteFile(p) => &p.path,
            Self::CreateDirectory(p) => &p.path,
            Self::GetMetadata(p) => &p.path,
            Self::ReadDirectory(p) => &p.path,
            Self::Remove(p) => &p.path,
            Self::Copy(p) => &p.source_path,
            Self::Canonicalize(p) => &p.path,
            Self::Open(p) => &p.path,
            Self::Walk(p) => &p.path,
        }
    }

    /// The request's `sandbox`.
    pub fn sandbox(&self) -> Option<&SandboxIntent> {
        match self {
            Self::ReadFile(p) => p.sandbox.as_ref(),
            Self::WriteFile(p) => p.sandbox.as_ref(),
            Self::CreateDirectory(p) => p.sandbox.as_ref(),
            Self::GetMetadata(p) => p.sandbox.as_ref(),
            Self::ReadDirectory(p) => p.sandbox.as_ref(),
            Self::Remove(p) => p.sandbox.as_ref(),
            Self::Copy(p) => p.sandbox.as_ref(),
            Self::Canonicalize(p) => p.sandbox.as_ref(),
            Self::Open(p) => p.sandbox.as_ref(),
            Self::Walk(p) => p.sandbox.as_ref(),
        }
    }

    /// True when the operation changes the file system (sandbox.md §5 routes these separately).
    pub fn is_mutation(&self) -> bool {
        match self {
            Self::WriteFile(_) | Self::CreateDirectory(_) | Self::Remove(_) | Self::Copy(_) => true,
            Self::Open(p) => p.mode == OpenMode::Replace,
            Self::ReadFile(_)
            | Self::GetMetadata(_)
            | Self::ReadDirectory(_)
            | Self::Canonicalize(_)
            | Self::Walk(_) => false,
        }
    }
}

/// The result of an [`FsRequest`], tagged by the same method name: the helper's `payload` on
/// success (`{"operation":"fs/readFile","response":{"dataBase64":"…"}}`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "operation", content = "response")]
pub enum FsResponse {
    #[serde(rename = "fs/readFile")]
    ReadFile(ReadFileResult),
    #[serde(rename = "fs/writeFile")]
    WriteFile(WriteFileResult),
    #[serde(rename = "fs/createDirectory")]
    CreateDirectory(CreateDirectoryResult),
    #[serde(rename = "fs/getMetadata")]
    GetMetadata(GetMetadataResult),
    #[serde(rename = "fs/readDirectory")]
    ReadDirectory(ReadDirectoryResult),
    #[serde(rename = "fs/remove")]
    Remove(RemoveResult),
    #[serde(rename = "fs/copy")]
    Copy(CopyResult),
    #[serde(rename = "fs/canonicalize")]
    Canonicalize(CanonicalizeResult),
    #[serde(rename = "fs/open")]
    Open(OpenResult),
    #[serde(rename = "fs/walk")]
    Walk(WalkResult),
}

impl FsResponse {
    /// The method name, as in the `operation` member.
    pub fn method(&self) -> &'static str {
        match self {
            Self::ReadFile(_) => method::FS_READ_FILE,
            Self::WriteFile(_) => method::FS_WRITE_FILE,
            Self::CreateDirectory(_) => method::FS_CREATE_DIRECTORY,
            Self::GetMetadata(_) => method::FS_GET_METADATA,
            Self::ReadDirectory(_) => method::FS_READ_DIRECTORY,
            Self::Remove(_) => method::FS_REMOVE,
            Self::Copy(_) => method::FS_COPY,
            Self::Canonicalize(_) => method::FS_CANONICALIZE,
            Self::Open(_) => method::FS_OPEN,
            Self::Walk(_) => method::FS_WALK,
        }
    }

    /// The bare result object, as the JSON-RPC answer carries it.
    pub fn into_result(self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            Self::ReadFile(r) => serde_json::to_value(r),
            Self::WriteFile(r) => serde_json::to_value(r),
            Self::CreateDirectory(r) => serde_json::to_value(r),
            Self::GetMetadata(r) => serde_json::to_value(r),
            Self::ReadDirectory(r) => serde_json::to_value(r),
            Self::Remove(r) => serde_json::to_value(r),
            Self::Copy(r) => serde_json::to_value(r),
            Self::Canonicalize(r) => serde_json::to_value(r),
            Self::Open(r) => serde_json::to_value(r),
            Self::Walk(r) => serde_json::to_value(r),
        }
    }
}

/// The error payload of a helper answer: a JSON-RPC code and message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FsHelperError {
    pub code: i64,
    pub message: String,
}

/// The one line the `codex-fs` helper writes to stdout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "status", content = "payload", rename_all = "snake_case")]
pub enum FsHelperAnswer {
    Ok(FsResponse),
    Error(FsHelperError),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn helper_request_is_tagged_by_operation_with_params() {
        let request: FsRequest = serde_json::from_value(json!({
            "operation": "fs/writeFile",
            "params": {"path": "file:///tmp/x", "dataBase64": "aGk=", "sandbox": null}
        }))
        .unwrap();
        assert_eq!(request.method(), method::FS_WRITE_FILE);
        assert!(request.is_mutation());
        assert_eq!(
            request,
            FsRequest::WriteFile(WriteFileParams {
                path: "file:///tmp/x".into(),
                data_base64: "aGk=".into(),
                follow_symlinks: None,
                sandbox: None,
            })
        );
    }

    #[test]
    fn request_tags_match_the_method_consts() {
        let requests = [
            json!({"operation": method::FS_READ_FILE, "params": {"path": "file:///"}}),
            json!({"operation": method::FS_WRITE_FILE, "params": {"path": "file:///", "dataBase64": ""}}),
            json!({"operation": method::FS_CREATE_DIRECTORY, "params": {"path": "file:///"}}),
            json!({"operation": method::FS_GET_METADATA, "params": {"path": "file:///"}}),
            json!({"operation": method::FS_READ_DIRECTORY, "params": {"path": "file:///"}}),
            json!({"operation": method::FS_REMOVE, "params": {"path": "file:///"}}),
            json!({"operation": method::FS_COPY, "params": {"sourcePath": "file:///", "destinationPath": "file:///"}}),
            json!({"operation": method::FS_CANONICALIZE, "params": {"path": "file:///"}}),
        ];
        for value in requests {
            let request: FsRequest = serde_json::from_value(value.clone()).unwrap();
            assert_eq!(json!(request.method()), value["operation"]);
            assert_eq!(
                serde_json::to_value(&request).unwrap()["operation"],
                value["operation"]
            );
        }
    }

    #[test]
    fn helper_ok_answer_nests_operation_and_response() {
        let answer = FsHelperAnswer::Ok(FsResponse::WriteFile(WriteFileResult {}));
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            json!({"status": "ok", "payload": {"operation": "fs/writeFile", "response": {}}})
        );
    }

    #[test]
    fn helper_error_answer_carries_code_and_message() {
        let text = r#"{"status":"error","payload":{"code":-32004,"message":"No such file or directory (os error 2)"}}"#;
        let answer: FsHelperAnswer = serde_json::from_str(text).unwrap();
        assert_eq!(
            answer,
            FsHelperAnswer::Error(FsHelperError {
                code: -32004,
                message: "No such file or directory (os error 2)".into()
            })
        );
    }

    #[test]
    fn omitted_flags_take_the_protocol_defaults() {
        let remove: RemoveParams = serde_json::from_value(json!({"path": "file:///x"})).unwrap();
        assert!(remove.recursive && remove.force);
        let mkdir: CreateDirectoryParams =
            serde_json::from_value(json!({"path": "file:///x"})).unwrap();
        assert!(mkdir.recursive);
        let copy: CopyParams = serde_json::from_value(
            json!({"sourcePath": "file:///a", "destinationPath": "file:///b"}),
        )
        .unwrap();
        assert!(!copy.recursive);
    }

    #[test]
    fn unknown_members_are_ignored() {
        let p: ReadFileParams =
            serde_json::from_value(json!({"path": "file:///x", "futureField": 1})).unwrap();
        assert_eq!(p.path, "file:///x");
    }

    #[test]
    fn open_mode_defaults_to_read_and_names_its_variants() {
        let p: OpenParams =
            serde_json::from_value(json!({"handleId": "h", "path": "file:///x"})).unwrap();
        assert_eq!(p.mode, OpenMode::Read);
        let p: OpenParams = serde_json::from_value(
            json!({"handleId": "h", "path": "file:///x", "mode": "replace"}),
        )
        .unwrap();
        assert_eq!(p.mode, OpenMode::Replace);
        let err = serde_json::from_value::<OpenParams>(
            json!({"handleId": "h", "path": "file:///x", "mode": "bogus"}),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("unknown variant `bogus`, expected `read` or `replace`"),
            "{err}"
        );
    }

    #[test]
    fn empty_results_encode_as_empty_objects() {
        assert_eq!(
            FsResponse::Remove(RemoveResult {}).into_result().unwrap(),
            json!({})
        );
    }
}

// ----- issue 14: watches (ours).

/// Longest `watchId` of `fs/watch`, in bytes.
pub const MAX_WATCH_ID_BYTES: usize = 32;

/// `fs/watch` params: watch `path` (a directory's entries, or with `recursive` its whole tree, or
/// one file) under the client-chosen `watchId`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WatchParams {
    pub watch_id: String,
    pub path: String,
    /// Watch the whole tree below `path` (omitted or null: only `path` and its entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive: Option<bool>,
    #[serde(default)]
    pub sandbox: Option<SandboxIntent>,
}

/// `fs/unwatch` params.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UnwatchParams {
    pub watch_id: String,
}

/// What happened to a path.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum ChangeKind {
    Created,
    Modified,
    Removed,
    /// Renamed from or to this path.
    Renamed,
    /// Changes were lost (too many at once, or the kernel's queue overflowed): the path is the
    /// watched path, and anything under it may have changed.
    Overflow,
}

/// One change of an `fs/changed` notification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// A `file:` URI under the watched path, as the client spelled that path.
    pub path: String,
    pub kind: ChangeKind,
}

/// `fs/changed` params: the changes one watch saw, coalesced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChangedParams {
    pub watch_id: String,
    pub changes: Vec<Change>,
}
