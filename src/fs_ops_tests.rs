//! Unit tests of `fs_ops`: the error mapping (code and message; the server sends both as its
//! JSON-RPC error) and the operations' edge cases
//! on a scratch directory. The wire behaviour is covered again end to end in `tests/fs.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::*;
use crate::protocol::fs::WriteFileParams;

/// A fresh directory under the temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "codex-fs-ops-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn os_error(errno: i32, path: &str) -> FsError {
    FsError::io(io::Error::from_raw_os_error(errno), Path::new(path))
}

#[test]
fn not_found_maps_to_32004_with_the_os_text_and_path() {
    let err = os_error(libc::ENOENT, "/tmp/x");
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert_eq!(
        err.to_string(),
        "No such file or directory (os error 2): /tmp/x"
    );
}

#[test]
fn permission_denied_and_invalid_input_map_to_invalid_request() {
    let denied = os_error(libc::EACCES, "/root/x");
    assert_eq!(denied.code(), ErrorCode::InvalidRequest);
    assert_eq!(
        denied.to_string(),
        "Permission denied (os error 13): /root/x"
    );
    let eperm = os_error(libc::EPERM, "/x");
    assert_eq!(eperm.code(), ErrorCode::InvalidRequest);
    let invalid = os_error(libc::EINVAL, "/x");
    assert_eq!(invalid.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(invalid.code(), ErrorCode::InvalidRequest);
}

#[test]
fn other_io_errors_map_to_internal() {
    for errno in [
        libc::EROFS,
        libc::EISDIR,
        libc::EEXIST,
        libc::EXDEV,
        libc::ENOTEMPTY,
    ] {
        let err = os_error(errno, "/x");
        assert_eq!(err.code(), ErrorCode::Internal, "errno {errno}: {err}");
    }
    assert_eq!(
        os_error(libc::EROFS, "/ro/f").to_string(),
        "Read-only file system (os error 30): /ro/f"
    );
}

#[test]
fn refusals_and_bad_base64_map_to_invalid_request_and_bad_uri_to_invalid_params() {
    let refused = FsError::refused("not a regular file", Path::new("/p"));
    assert_eq!(refused.code(), ErrorCode::InvalidRequest);
    assert_eq!(refused.to_string(), "not a regular file: /p");
    assert_eq!(refused.path(), Some(Path::new("/p")));

    let bad_base64 = FsOp::from_request(FsRequest::WriteFile(WriteFileParams {
        follow_symlinks: None,
        path: "file:///tmp/x".into(),
        data_base64: "not base64!".into(),
        sandbox: None,
    }))
    .unwrap_err();
    assert_eq!(bad_base64.code(), ErrorCode::InvalidRequest);
    assert!(bad_base64.to_string().starts_with("invalid dataBase64: "));

    let bad_uri = FsOp::from_request(FsRequest::WriteFile(WriteFileParams {
        follow_symlinks: None,
        path: "/tmp/x".into(),
        data_base64: String::new(),
        sandbox: None,
    }))
    .unwrap_err();
    assert_eq!(bad_uri.code(), ErrorCode::InvalidParams);
    assert_eq!(
        bad_uri.to_string(),
        "invalid path: '/tmp/x' is not a file: URI"
    );
}

#[test]
fn copy_names_the_offending_uri_member() {
    let request: FsRequest = serde_json::from_value(json!({"operation": "fs/copy", "params": {
        "sourcePath": "file:///a", "destinationPath": "file:relative"}}))
    .unwrap();
    let err = FsOp::from_request(request).unwrap_err();
    assert!(
        err.to_string().starts_with("invalid destinationPath: "),
        "{err}"
    );
}

#[test]
fn helper_answer_carries_code_and_message() {
    let answer = helper_answer(Err(os_error(libc::ENOENT, "/nope")));
    assert_eq!(
        serde_json::to_value(answer).unwrap(),
        json!({"status": "error", "payload": {
            "code": -32004, "message": "No such file or directory (os error 2): /nope"}})
    );
}

#[test]
fn run_writes_then_reads_back_through_the_wire_shapes() {
    let dir = Scratch::new();
    let uri = path_uri::from_path(&dir.join("f.txt"));
    let write: FsRequest = serde_json::from_value(json!({"operation": "fs/writeFile",
        "params": {"path": uri, "dataBase64": "aGk="}}))
    .unwrap();
    assert_eq!(
        run(write).unwrap(),
        FsResponse::WriteFile(WriteFileResult {})
    );
    let read: FsRequest =
        serde_json::from_value(json!({"operation": "fs/readFile", "params": {"path": uri}}))
            .unwrap();
    assert_eq!(
        run(read).unwrap(),
        FsResponse::ReadFile(ReadFileResult {
            data_base64: "aGk=".into()
        })
    );
}

#[test]
fn write_file_with_missing_parent_is_not_found() {
    let dir = Scratch::new();
    let path = dir.join("missing/f");
    let err = write_file(&path, b"x").unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert_eq!(err.path(), Some(path.as_path()));
}

#[test]
fn remove_of_missing_path_is_fine_only_with_force() {
    let dir = Scratch::new();
    let path = dir.join("gone");
    remove(&path, true, true).unwrap();
    assert_eq!(
        remove(&path, true, false).unwrap_err().code(),
        ErrorCode::NotFound
    );
}

#[test]
fn remove_non_recursive_of_non_empty_directory_fails() {
    let dir = Scratch::new();
    fs::create_dir(dir.join("d")).unwrap();
    fs::write(dir.join("d/f"), b"x").unwrap();
    let err = remove(&dir.join("d"), false, true).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::DirectoryNotEmpty);
    assert!(dir.join("d/f").exists());
}

#[test]
fn copy_into_a_missing_descendant_is_refused() {
    let dir = Scratch::new();
    fs::create_dir(dir.join("src")).unwrap();
    let err = copy(&dir.join("src"), &dir.join("src/new/deeper"), true).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    assert!(!dir.join("src/new").exists());
}

#[test]
fn copy_of_a_file_onto_itself_keeps_its_contents() {
    let dir = Scratch::new();
    fs::write(dir.join("f"), b"keep").unwrap();
    std::os::unix::fs::symlink(dir.join("f"), dir.join("link")).unwrap();
    let err = copy(&dir.join("f"), &dir.join("link"), false).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"keep");
}

#[test]
fn copy_keeps_permission_bits() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = Scratch::new();
    fs::write(dir.join("run.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(dir.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    copy(&dir.join("run.sh"), &dir.join("copy.sh"), false).unwrap();
    let mode = fs::metadata(dir.join("copy.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750);
}

#[test]
fn read_block_sets_eof_only_on_a_short_read() {
    let dir = Scratch::new();
    fs::write(dir.join("f"), b"0123456789").unwrap();
    let file = open_for_read(&dir.join("f")).unwrap();
    assert_eq!(
        read_block(&file, &dir.0, 0, 10).unwrap(),
        (b"0123456789".to_vec(), false)
    );
    assert_eq!(
        read_block(&file, &dir.0, 8, 4).unwrap(),
        (b"89".to_vec(), true)
    );
    assert_eq!(
        read_block(&file, &dir.0, 10, 1).unwrap(),
        (Vec::new(), true)
    );
}

#[test]
fn reading_a_directory_is_an_is_a_directory_error() {
    let dir = Scratch::new();
    let err = read_file(&dir.0).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::IsADirectory);
    assert_eq!(err.code(), ErrorCode::Internal);
}

#[test]
fn read_directory_skips_dangling_symlinks_and_sorts_by_name() {
    let dir = Scratch::new();
    fs::write(dir.join("b"), b"").unwrap();
    fs::create_dir(dir.join("a")).unwrap();
    std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling")).unwrap();
    let names: Vec<_> = read_directory(&dir.0)
        .unwrap()
        .into_iter()
        .map(|e| (e.file_name, e.is_directory, e.is_file))
        .collect();
    assert_eq!(
        names,
        vec![("a".into(), true, false), ("b".into(), false, true)]
    );
}
