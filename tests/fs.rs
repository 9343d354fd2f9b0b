//! The `fs/*` methods as a client sees them, over a real socket: every method's happy path, every
//! error code with a message that names the path, symlinks, special files, the `fs/open` handle
//! table and its limits, a 64 MiB round trip, the handshake gate and sandbox refusals.
//!
//! The harness is `common/mod.rs`. Every test starts its own server.

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

/// A server and an initialized client on it.
async fn ready() -> (Server, Client) {
    let server = Server::start(&[]).await;
    let mut client = server.connect().await;
    client.initialize().await;
    (server, client)
}

fn uri(path: &Path) -> String {
    file_uri(path)
}

/// The `(code, message)` of an error answer, asserting the message ends with `: <path>`.
async fn fs_error(client: &mut Client, method: &str, params: Value, path: &Path) -> RpcError {
    let (code, message) = client.request_err(method, params).await;
    let suffix = format!(": {}", path.display());
    assert!(
        message.ends_with(&suffix),
        "{method}: message {message:?} should end with {suffix:?}"
    );
    (code, message)
}

async fn write(client: &mut Client, path: &Path, data: &[u8]) {
    let result = client
        .request_ok(
            "fs/writeFile",
            json!({"path": uri(path), "dataBase64": b64(data)}),
        )
        .await;
    assert_eq!(result, json!({}));
}

async fn read(client: &mut Client, path: &Path) -> Vec<u8> {
    let result = client
        .request_ok("fs/readFile", json!({"path": uri(path)}))
        .await;
    unb64(result["dataBase64"].as_str().expect("dataBase64"))
}

async fn metadata(client: &mut Client, path: &Path) -> Value {
    client
        .request_ok("fs/getMetadata", json!({"path": uri(path)}))
        .await
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

/// The Codex CLI's workspace-write sandbox: restricts writes (and, for now, reads).
fn workspace_write_sandbox(root: &Path) -> Value {
    json!({
        "permissions": {"type": "managed", "network": "restricted", "file_system": {
            "type": "restricted", "entries": [
                {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
                {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": "write"}
            ]}},
        "windowsSandboxLevel": "disabled",
        "cwd": uri(root),
        "workspaceRoots": [uri(root)]
    })
}

// ---------------------------------------------------------------------------------------------
// readFile / writeFile

#[tokio::test]
async fn write_file_then_read_file_round_trips_binary_bytes() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("bin.dat");
    let data: Vec<u8> = (0..=255u8).chain([0xff, 0xfe, 0, 0x80]).collect();
    write(&mut client, &path, &data).await;
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert_eq!(read(&mut client, &path).await, data);
}

#[tokio::test]
async fn write_file_truncates_an_existing_file_and_accepts_empty_data() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("f.txt");
    std::fs::write(&path, b"a much longer old content").unwrap();
    write(&mut client, &path, b"new").await;
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    write(&mut client, &path, b"").await;
    assert_eq!(read(&mut client, &path).await, b"");
}

#[tokio::test]
async fn read_file_of_missing_path_is_not_found_with_os_text_and_path() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("missing.txt");
    let err = client
        .request_err("fs/readFile", json!({"path": uri(&path)}))
        .await;
    assert_eq!(
        err,
        (
            NOT_FOUND,
            format!("No such file or directory (os error 2): {}", path.display())
        )
    );
}

#[tokio::test]
async fn write_file_with_missing_parent_is_not_found() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("no-such-dir/f.txt");
    let (code, message) = fs_error(
        &mut client,
        "fs/writeFile",
        json!({"path": uri(&path), "dataBase64": b64(b"x")}),
        &path,
    )
    .await;
    assert_eq!(code, NOT_FOUND, "{message}");
    assert!(message.starts_with("No such file or directory (os error 2)"));
}

#[tokio::test]
async fn write_file_with_invalid_base64_writes_nothing() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("never.txt");
    let (code, message) = client
        .request_err(
            "fs/writeFile",
            json!({"path": uri(&path), "dataBase64": "%%% not base64 %%%"}),
        )
        .await;
    assert_eq!(code, INVALID_REQUEST, "{message}");
    assert!(message.contains("dataBase64"), "{message}");
    assert!(!path.exists(), "nothing may be written");
}

#[tokio::test]
async fn read_file_of_a_directory_is_internal_error_naming_it() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let (code, message) = fs_error(
        &mut client,
        "fs/readFile",
        json!({"path": dir.uri()}),
        dir.path(),
    )
    .await;
    assert_eq!(code, INTERNAL_ERROR, "{message}");
    assert!(
        message.starts_with("Is a directory (os error 21)"),
        "{message}"
    );
}

#[tokio::test]
async fn read_file_of_a_fifo_is_refused_without_blocking() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let fifo = dir.mkfifo("pipe");
    let (code, message) = fs_error(
        &mut client,
        "fs/readFile",
        json!({"path": uri(&fifo)}),
        &fifo,
    )
    .await;
    assert_eq!(code, INVALID_REQUEST, "{message}");
}

#[tokio::test]
async fn write_file_denied_by_the_kernel_is_invalid_request() {
    // 0444 sysctl files refuse writes with EACCES even to root.
    let path = Path::new("/proc/sys/kernel/ostype");
    let probe = std::fs::OpenOptions::new().write(true).open(path);
    if probe.err().and_then(|e| e.raw_os_error()) != Some(libc::EACCES) {
        eprintln!("skipped: {} does not answer EACCES here", path.display());
        return;
    }
    let (_server, mut client) = ready().await;
    let (code, message) = fs_error(
        &mut client,
        "fs/writeFile",
        json!({"path": uri(path), "dataBase64": b64(b"x")}),
        path,
    )
    .await;
    assert_eq!(
        (code, message),
        (
            INVALID_REQUEST,
            "Permission denied (os error 13): /proc/sys/kernel/ostype".to_string()
        )
    );
}

#[tokio::test]
async fn non_file_uri_is_invalid_params_naming_the_field() {
    let (_server, mut client) = ready().await;
    let (code, message) = client
        .request_err("fs/readFile", json!({"path": "/tmp/x"}))
        .await;
    assert_eq!(code, INVALID_PARAMS, "{message}");
    assert!(message.contains("path"), "{message}");

    let dir = TestDir::new();
    let (code, message) = client
        .request_err(
            "fs/copy",
            json!({"sourcePath": dir.uri(), "destinationPath": "file:relative", "recursive": true}),
        )
        .await;
    assert_eq!(code, INVALID_PARAMS, "{message}");
    assert!(message.contains("destinationPath"), "{message}");
}

/// Like any other unusable URI (above), a path with a query or fragment is -32602 naming the
/// member, and nothing is done: it used to mean the path before the `?`.
#[tokio::test]
async fn path_file_uri_with_a_query_or_fragment_is_invalid_params_and_nothing_is_done() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let existing = dir.join("existing");
    std::fs::write(&existing, b"x").unwrap();
    let new = dir.join("new");
    for suffix in ["?x=1", "#x"] {
        let cases = [
            (
                "fs/readFile",
                json!({"path": format!("{}{suffix}", uri(&existing))}),
                "path",
            ),
            (
                "fs/writeFile",
                json!({"path": format!("{}{suffix}", uri(&new)), "dataBase64": b64(b"y")}),
                "path",
            ),
            (
                "fs/createDirectory",
                json!({"path": format!("{}{suffix}", uri(&new))}),
                "path",
            ),
            (
                "fs/open",
                json!({"handleId": "h", "path": format!("{}{suffix}", uri(&existing))}),
                "path",
            ),
            (
                "fs/copy",
                json!({"sourcePath": uri(&existing),
                       "destinationPath": format!("{}{suffix}", uri(&new))}),
                "destinationPath",
            ),
        ];
        for (method, params, field) in cases {
            let (code, message) = client.request_err(method, params).await;
            assert_eq!(code, INVALID_PARAMS, "{method} {suffix}: {message}");
            assert!(message.contains(field), "{method}: {message}");
        }
        assert!(!new.exists(), "nothing was written or created ({suffix})");
    }
    // The handle id was not taken by the refused open.
    open(&mut client, "h", &existing).await.unwrap();
}

#[tokio::test]
async fn missing_path_member_is_invalid_params() {
    let (_server, mut client) = ready().await;
    let (code, message) = client.request_err("fs/getMetadata", json!({})).await;
    assert_eq!(code, INVALID_PARAMS);
    assert!(message.contains("missing field `path`"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// createDirectory

#[tokio::test]
async fn create_directory_makes_missing_parents_by_default() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let deep = dir.join("a/b/c");
    let result = client
        .request_ok("fs/createDirectory", json!({"path": uri(&deep)}))
        .await;
    assert_eq!(result, json!({}));
    assert!(deep.is_dir());
    // Again: an existing directory is fine when recursive.
    client
        .request_ok("fs/createDirectory", json!({"path": uri(&deep)}))
        .await;
}

#[tokio::test]
async fn create_directory_non_recursive_needs_parent_and_refuses_existing() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let orphan = dir.join("missing/child");
    let (code, _) = fs_error(
        &mut client,
        "fs/createDirectory",
        json!({"path": uri(&orphan), "recursive": false}),
        &orphan,
    )
    .await;
    assert_eq!(code, NOT_FOUND);

    let (code, message) = fs_error(
        &mut client,
        "fs/createDirectory",
        json!({"path": dir.uri(), "recursive": false}),
        dir.path(),
    )
    .await;
    assert_eq!(code, INTERNAL_ERROR);
    assert!(
        message.starts_with("File exists (os error 17)"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------------
// getMetadata

#[tokio::test]
async fn get_metadata_reports_type_size_and_times() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("f.txt");
    std::fs::write(&path, b"12345").unwrap();
    let meta = metadata(&mut client, &path).await;
    assert_eq!(meta["isFile"], true);
    assert_eq!(meta["isDirectory"], false);
    assert_eq!(meta["isSymlink"], false);
    assert_eq!(meta["size"], 5);
    let mtime = std::fs::metadata(&path)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(meta["modifiedAtMs"].as_i64(), Some(mtime));
    assert!(meta["createdAtMs"].as_i64().is_some(), "{meta}");

    let meta = metadata(&mut client, dir.path()).await;
    assert_eq!(meta["isDirectory"], true);
    assert_eq!(meta["isFile"], false);
}

#[tokio::test]
async fn get_metadata_follows_symlink_but_reports_the_link_itself() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    std::fs::create_dir(dir.join("real")).unwrap();
    symlink(&dir.join("real"), &dir.join("link"));
    let meta = metadata(&mut client, &dir.join("link")).await;
    assert_eq!(meta["isSymlink"], true);
    assert_eq!(
        meta["isDirectory"], true,
        "the type follows the link: {meta}"
    );
    let meta = metadata(&mut client, &dir.join("real")).await;
    assert_eq!(meta["isSymlink"], false);
}

#[tokio::test]
async fn get_metadata_of_missing_path_or_dangling_link_is_not_found() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let missing = dir.join("nothing");
    let (code, _) = fs_error(
        &mut client,
        "fs/getMetadata",
        json!({"path": uri(&missing)}),
        &missing,
    )
    .await;
    assert_eq!(code, NOT_FOUND);
    let dangling = dir.join("dangling");
    symlink(&missing, &dangling);
    let (code, _) = fs_error(
        &mut client,
        "fs/getMetadata",
        json!({"path": uri(&dangling)}),
        &dangling,
    )
    .await;
    assert_eq!(code, NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// readDirectory

#[tokio::test]
async fn read_directory_lists_entries_with_their_types() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    std::fs::write(dir.join("file.txt"), b"x").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    symlink(&dir.join("sub"), &dir.join("link-to-sub"));
    let result = client
        .request_ok("fs/readDirectory", json!({"path": dir.uri()}))
        .await;
    assert_eq!(
        result,
        json!({"entries": [
            {"fileName": "file.txt", "isDirectory": false, "isFile": true},
            {"fileName": "link-to-sub", "isDirectory": true, "isFile": false},
            {"fileName": "sub", "isDirectory": true, "isFile": false},
        ]})
    );
}

#[tokio::test]
async fn read_directory_of_a_file_or_missing_path_fails_naming_it() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let file = dir.join("f");
    std::fs::write(&file, b"").unwrap();
    let (code, message) = fs_error(
        &mut client,
        "fs/readDirectory",
        json!({"path": uri(&file)}),
        &file,
    )
    .await;
    assert_eq!(code, INTERNAL_ERROR);
    assert!(
        message.starts_with("Not a directory (os error 20)"),
        "{message}"
    );
    let missing = dir.join("missing");
    let (code, _) = fs_error(
        &mut client,
        "fs/readDirectory",
        json!({"path": uri(&missing)}),
        &missing,
    )
    .await;
    assert_eq!(code, NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// remove

#[tokio::test]
async fn remove_deletes_a_tree_by_default() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("a/b")).unwrap();
    std::fs::write(tree.join("a/b/f"), b"x").unwrap();
    let result = client
        .request_ok("fs/remove", json!({"path": uri(&tree)}))
        .await;
    assert_eq!(result, json!({}));
    assert!(!tree.exists());
}

#[tokio::test]
async fn remove_deletes_symlink_not_target() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let target_dir = dir.join("target-dir");
    std::fs::create_dir(&target_dir).unwrap();
    std::fs::write(target_dir.join("keep"), b"keep").unwrap();
    let target_file = dir.join("target-file");
    std::fs::write(&target_file, b"keep").unwrap();
    symlink(&target_dir, &dir.join("dir-link"));
    symlink(&target_file, &dir.join("file-link"));
    for link in ["dir-link", "file-link"] {
        client
            .request_ok("fs/remove", json!({"path": uri(&dir.join(link))}))
            .await;
        assert!(
            std::fs::symlink_metadata(dir.join(link)).is_err(),
            "{link} removed"
        );
    }
    assert_eq!(std::fs::read(target_dir.join("keep")).unwrap(), b"keep");
    assert_eq!(std::fs::read(&target_file).unwrap(), b"keep");
}

#[tokio::test]
async fn remove_of_missing_path_is_fine_unless_force_is_false() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let missing = dir.join("missing");
    client
        .request_ok("fs/remove", json!({"path": uri(&missing)}))
        .await;
    let (code, _) = fs_error(
        &mut client,
        "fs/remove",
        json!({"path": uri(&missing), "force": false}),
        &missing,
    )
    .await;
    assert_eq!(code, NOT_FOUND);
}

#[tokio::test]
async fn remove_non_recursive_keeps_a_non_empty_directory() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("f"), b"x").unwrap();
    let (code, message) = fs_error(
        &mut client,
        "fs/remove",
        json!({"path": uri(&sub), "recursive": false}),
        &sub,
    )
    .await;
    assert_eq!(code, INTERNAL_ERROR);
    assert!(
        message.starts_with("Directory not empty (os error 39)"),
        "{message}"
    );
    assert!(sub.join("f").exists());
    // An empty directory goes without recursive.
    std::fs::remove_file(sub.join("f")).unwrap();
    client
        .request_ok("fs/remove", json!({"path": uri(&sub), "recursive": false}))
        .await;
    assert!(!sub.exists());
}

// ---------------------------------------------------------------------------------------------
// copy

#[tokio::test]
async fn copy_copies_a_file() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    std::fs::write(dir.join("a"), b"contents").unwrap();
    let result = client
        .request_ok(
            "fs/copy",
            json!({"sourcePath": uri(&dir.join("a")), "destinationPath": uri(&dir.join("b"))}),
        )
        .await;
    assert_eq!(result, json!({}));
    assert_eq!(std::fs::read(dir.join("b")).unwrap(), b"contents");
}

#[tokio::test]
async fn copy_of_a_directory_needs_recursive() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    let (code, message) = fs_error(
        &mut client,
        "fs/copy",
        json!({"sourcePath": uri(&src), "destinationPath": uri(&dir.join("dst"))}),
        &src,
    )
    .await;
    assert_eq!(code, INVALID_REQUEST, "{message}");
    assert!(!dir.join("dst").exists());
}

#[tokio::test]
async fn copy_tree_copies_symlinks_as_links_and_skips_fifos() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("nested")).unwrap();
    std::fs::write(src.join("nested/f.txt"), b"deep").unwrap();
    std::fs::write(dir.join("outside.txt"), b"outside").unwrap();
    symlink(&dir.join("outside.txt"), &src.join("abs-link"));
    symlink(Path::new("nested/f.txt"), &src.join("rel-link"));
    symlink(Path::new("nowhere"), &src.join("dangling"));
    dir.mkfifo("src/pipe");
    let dst = dir.join("dst");
    client
        .request_ok(
            "fs/copy",
            json!({"sourcePath": uri(&src), "destinationPath": uri(&dst), "recursive": true}),
        )
        .await;
    assert_eq!(std::fs::read(dst.join("nested/f.txt")).unwrap(), b"deep");
    for (link, target) in [
        ("abs-link", dir.join("outside.txt")),
        ("rel-link", "nested/f.txt".into()),
        ("dangling", "nowhere".into()),
    ] {
        let copied = dst.join(link);
        assert!(
            std::fs::symlink_metadata(&copied)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{link} is copied as a link"
        );
        assert_eq!(std::fs::read_link(&copied).unwrap(), target);
    }
    assert!(
        std::fs::symlink_metadata(dst.join("pipe")).is_err(),
        "the FIFO is skipped"
    );
}

#[tokio::test]
async fn copy_of_a_symlink_alone_copies_the_link() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    std::fs::write(dir.join("target"), b"t").unwrap();
    symlink(&dir.join("target"), &dir.join("link"));
    client
        .request_ok(
            "fs/copy",
            json!({"sourcePath": uri(&dir.join("link")), "destinationPath": uri(&dir.join("copy"))}),
        )
        .await;
    assert_eq!(
        std::fs::read_link(dir.join("copy")).unwrap(),
        dir.join("target")
    );
}

#[tokio::test]
async fn copy_of_a_fifo_alone_is_refused() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let fifo = dir.mkfifo("pipe");
    let (code, message) = fs_error(
        &mut client,
        "fs/copy",
        json!({"sourcePath": uri(&fifo), "destinationPath": uri(&dir.join("copy"))}),
        &fifo,
    )
    .await;
    assert_eq!(code, INVALID_REQUEST, "{message}");
    assert!(!dir.join("copy").exists());
}

#[tokio::test]
async fn copy_directory_into_itself_is_refused() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    for dst in [src.join("inner"), src.clone()] {
        let (code, message) = fs_error(
            &mut client,
            "fs/copy",
            json!({"sourcePath": uri(&src), "destinationPath": uri(&dst), "recursive": true}),
            &dst,
        )
        .await;
        assert_eq!(code, INVALID_REQUEST, "{message}");
        assert!(message.contains("itself"), "{message}");
    }
    assert!(!src.join("inner").exists());
    // Through a symlink to the source, too.
    symlink(&src, &dir.join("alias"));
    let dst = dir.join("alias/inner");
    let (code, _) = fs_error(
        &mut client,
        "fs/copy",
        json!({"sourcePath": uri(&src), "destinationPath": uri(&dst), "recursive": true}),
        &dst,
    )
    .await;
    assert_eq!(code, INVALID_REQUEST);
}

#[tokio::test]
async fn copy_of_missing_source_is_not_found() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let missing = dir.join("missing");
    let (code, _) = fs_error(
        &mut client,
        "fs/copy",
        json!({"sourcePath": uri(&missing), "destinationPath": uri(&dir.join("x"))}),
        &missing,
    )
    .await;
    assert_eq!(code, NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// canonicalize

#[tokio::test]
async fn canonicalize_resolves_symlinks() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    std::fs::create_dir(dir.join("real")).unwrap();
    symlink(&dir.join("real"), &dir.join("link"));
    let result = client
        .request_ok("fs/canonicalize", json!({"path": uri(&dir.join("link"))}))
        .await;
    let expected = std::fs::canonicalize(dir.join("real")).unwrap();
    assert_eq!(result, json!({"path": uri(&expected)}));
}

#[tokio::test]
async fn canonicalize_of_missing_path_is_not_found() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let missing = dir.join("missing");
    let (code, _) = fs_error(
        &mut client,
        "fs/canonicalize",
        json!({"path": uri(&missing)}),
        &missing,
    )
    .await;
    assert_eq!(code, NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// open / readBlock / close

async fn read_block(client: &mut Client, handle: &str, offset: u64, len: u64) -> (Vec<u8>, bool) {
    let result = client
        .request_ok(
            "fs/readBlock",
            json!({"handleId": handle, "offset": offset, "len": len}),
        )
        .await;
    (
        unb64(result["chunk"].as_str().expect("chunk")),
        result["eof"].as_bool().expect("eof"),
    )
}

async fn open(client: &mut Client, handle: &str, path: &Path) -> Result<Value, RpcError> {
    client
        .request("fs/open", json!({"handleId": handle, "path": uri(path)}))
        .await
}

#[tokio::test]
async fn open_read_block_close_reads_a_file_in_blocks() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("f");
    std::fs::write(&path, b"0123456789").unwrap();
    assert_eq!(
        open(&mut client, "h1", &path).await.unwrap(),
        json!({"handleId": "h1"})
    );
    assert_eq!(
        read_block(&mut client, "h1", 0, 5).await,
        (b"01234".to_vec(), false)
    );
    assert_eq!(
        read_block(&mut client, "h1", 5, 5).await,
        (b"56789".to_vec(), false),
        "a full block at the end is not eof"
    );
    assert_eq!(read_block(&mut client, "h1", 10, 5).await, (vec![], true));
    assert_eq!(
        read_block(&mut client, "h1", 7, 100).await,
        (b"789".to_vec(), true)
    );
    assert_eq!(
        client
            .request_ok("fs/close", json!({"handleId": "h1"}))
            .await,
        json!({})
    );
    let (code, _) = client
        .request_err(
            "fs/readBlock",
            json!({"handleId": "h1", "offset": 0, "len": 1}),
        )
        .await;
    assert_eq!(code, NOT_FOUND, "a closed handle is unknown");
}

#[tokio::test]
async fn open_refuses_long_and_duplicate_handle_ids() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("f");
    std::fs::write(&path, b"x").unwrap();
    let exactly_32 = "h".repeat(32);
    open(&mut client, &exactly_32, &path).await.unwrap();
    assert_eq!(
        open(&mut client, &"h".repeat(33), &path).await.unwrap_err(),
        (
            INVALID_REQUEST,
            "file handle ID must not exceed 32 bytes".to_string()
        )
    );
    open(&mut client, "h1", &path).await.unwrap();
    assert_eq!(
        open(&mut client, "h1", &path).await.unwrap_err(),
        (
            INVALID_REQUEST,
            "file handle `h1` already exists".to_string()
        )
    );
}

#[tokio::test]
async fn open_allows_at_most_128_handles_per_connection() {
    let (server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("f");
    std::fs::write(&path, b"x").unwrap();
    let ids: Vec<i64> = {
        let mut ids = Vec::new();
        for n in 0..128 {
            ids.push(
                client
                    .send_request(
                        "fs/open",
                        json!({"handleId": format!("h{n}"), "path": uri(&path)}),
                    )
                    .await,
            );
        }
        ids
    };
    for id in ids {
        client.await_answer(id).await.unwrap();
    }
    assert_eq!(
        open(&mut client, "one-too-many", &path).await.unwrap_err(),
        (
            INVALID_REQUEST,
            "at most 128 file handles may be open per connection".to_string()
        )
    );
    // Another connection has its own table.
    let mut other = server.connect().await;
    other.initialize().await;
    open(&mut other, "h0", &path).await.unwrap();
    // Closing one makes room again.
    client
        .request_ok("fs/close", json!({"handleId": "h7"}))
        .await;
    open(&mut client, "one-too-many", &path).await.unwrap();
}

#[tokio::test]
async fn read_block_length_must_be_between_1_and_1_mib() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("f");
    std::fs::write(&path, vec![7u8; (1 << 20) + 10]).unwrap();
    open(&mut client, "h", &path).await.unwrap();
    for len in [0u64, (1 << 20) + 1] {
        assert_eq!(
            client
                .request_err(
                    "fs/readBlock",
                    json!({"handleId": "h", "offset": 0, "len": len})
                )
                .await,
            (
                INVALID_REQUEST,
                "file read block length must be between 1 and 1048576".to_string()
            ),
            "len {len}"
        );
    }
    let (chunk, eof) = read_block(&mut client, "h", 0, 1 << 20).await;
    assert_eq!((chunk.len(), eof), (1 << 20, false));
}

#[tokio::test]
async fn read_block_of_unknown_handle_is_not_found_and_close_of_unknown_is_ok() {
    let (_server, mut client) = ready().await;
    let (code, message) = client
        .request_err(
            "fs/readBlock",
            json!({"handleId": "nope", "offset": 0, "len": 1}),
        )
        .await;
    assert_eq!(code, NOT_FOUND, "{message}");
    assert!(message.contains("nope"), "{message}");
    assert_eq!(
        client
            .request_ok("fs/close", json!({"handleId": "nope"}))
            .await,
        json!({})
    );
}

#[tokio::test]
async fn open_of_a_missing_path_is_not_found_naming_it() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let missing = dir.join("missing");
    let (code, _) = fs_error(
        &mut client,
        "fs/open",
        json!({"handleId": "h", "path": uri(&missing)}),
        &missing,
    )
    .await;
    assert_eq!(code, NOT_FOUND);
    // A failed open leaves the id free.
    std::fs::write(dir.join("f"), b"x").unwrap();
    open(&mut client, "h", &dir.join("f")).await.unwrap();
}

/// `fs/open` of a directory is invalid input (-32600, as the reference answers; it used to be
/// -32603), with the OS's text and the path; `fs/readFile` of one stays -32603 (above).
#[tokio::test]
async fn open_of_a_directory_is_invalid_request_naming_it() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let (code, message) = fs_error(
        &mut client,
        "fs/open",
        json!({"handleId": "h", "path": dir.uri()}),
        dir.path(),
    )
    .await;
    assert_eq!(
        (code, message),
        (
            INVALID_REQUEST,
            format!("Is a directory (os error 21): {}", dir.path().display())
        )
    );
    // A failed open leaves the id free.
    std::fs::write(dir.join("f"), b"x").unwrap();
    open(&mut client, "h", &dir.join("f")).await.unwrap();
}

/// Descriptors the server process holds.
fn server_fd_count(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .expect("read the server's fd directory")
        .count()
}

#[tokio::test]
async fn handles_are_closed_with_their_connection() {
    let server = Server::start(&[]).await;
    let mut first = server.connect().await;
    let session = first.initialize().await;
    let dir = TestDir::new();
    let path = dir.join("f");
    std::fs::write(&path, b"first").unwrap();
    let before = server_fd_count(&server);
    for n in 0..100 {
        open(&mut first, &format!("h{n}"), &path).await.unwrap();
    }
    assert!(server_fd_count(&server) >= before + 100);
    first.close().await;

    // The resume succeeds only once the old connection has let go of the session, which it does
    // after closing its handles.
    let (mut second, _) = resume_on_new_connection(&server, &session).await;
    let after = server_fd_count(&server);
    assert!(
        after < before + 10,
        "the old connection's files stay open: {before} fds before, {after} after"
    );
    let (code, _) = second
        .request_err(
            "fs/readBlock",
            json!({"handleId": "h0", "offset": 0, "len": 5}),
        )
        .await;
    assert_eq!(code, NOT_FOUND, "an old connection's handle is unknown");
    std::fs::write(&path, b"second").unwrap();
    open(&mut second, "h0", &path).await.unwrap();
    assert_eq!(
        read_block(&mut second, "h0", 0, 6).await,
        (b"second".to_vec(), false)
    );
}

/// Under a sandbox that restricts reads, the sandboxed helper opens the file and hands the
/// descriptor back (more in tests/fs_sandbox_streaming.rs).
#[tokio::test]
async fn open_under_a_read_restricting_sandbox_reads_through_the_helper() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("f");
    std::fs::write(&path, b"x").unwrap();
    // Reads are restricted when the policy does not grant `root` read.
    let mut sandbox = workspace_write_sandbox(dir.path());
    sandbox["permissions"]["file_system"]["entries"]
        .as_array_mut()
        .unwrap()
        .remove(0);
    client
        .request_ok(
            "fs/open",
            json!({"handleId": "h", "path": uri(&path), "sandbox": sandbox}),
        )
        .await;
    assert_eq!(
        read_block(&mut client, "h", 0, 5).await,
        (b"x".to_vec(), true)
    );
}

// ---------------------------------------------------------------------------------------------
// Handshake and sandbox

#[tokio::test]
async fn fs_methods_before_initialize_are_refused() {
    let server = Server::start(&[]).await;
    let mut client = server.connect().await;
    let dir = TestDir::new();
    for (method, params) in [
        ("fs/readFile", json!({"path": dir.uri()})),
        ("fs/open", json!({"handleId": "h", "path": dir.uri()})),
        ("fs/close", json!({"handleId": "h"})),
    ] {
        assert_eq!(
            client.request_err(method, params).await,
            (
                INVALID_REQUEST,
                "client must call initialize before using filesystem methods".to_string()
            ),
            "{method}"
        );
    }
    client
        .request_ok("initialize", json!({"clientName": "test"}))
        .await;
    assert_eq!(
        client
            .request_err("fs/getMetadata", json!({"path": dir.uri()}))
            .await,
        (
            INVALID_REQUEST,
            "client must send initialized before using filesystem methods".to_string()
        )
    );
}

#[tokio::test]
async fn write_file_under_workspace_write_sandbox_runs_in_the_helper() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    std::fs::create_dir(dir.join(".git")).unwrap();
    std::fs::write(dir.join(".git/config"), b"orig").unwrap();
    let outside = TestDir::new();
    let sandbox = workspace_write_sandbox(dir.path());
    // Inside the workspace: written, by the helper (apply_patch needs new top-level files).
    let inside = dir.join("sandboxed.txt");
    client
        .request_ok(
            "fs/writeFile",
            json!({"path": uri(&inside), "dataBase64": b64(b"x"), "sandbox": sandbox}),
        )
        .await;
    assert_eq!(std::fs::read(&inside).unwrap(), b"x");
    // A protected name and a path outside every writable root: refused, nothing written.
    for (path, what) in [
        (dir.join(".git/config"), "protected .git"),
        (dir.join(".codex/config.toml"), "protected .codex (missing)"),
        (outside.join("x"), "outside the workspace"),
    ] {
        let err = client
            .request_err(
                "fs/writeFile",
                json!({"path": uri(&path), "dataBase64": b64(b"evil"), "sandbox": sandbox}),
            )
            .await;
        assert_eq!(err.0, INVALID_REQUEST, "{what}: {err:?}");
        assert!(
            err.1.starts_with("Permission denied (os error 13)"),
            "{what}: {err:?}"
        );
    }
    assert_eq!(std::fs::read(dir.join(".git/config")).unwrap(), b"orig");
    assert!(!dir.join(".codex").exists());
    assert!(!outside.join("x").exists());
}

#[tokio::test]
async fn a_sandbox_that_restricts_nothing_runs_in_the_server() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("f.txt");
    for sandbox in [
        json!(null),
        json!({"permissions": {"type": "disabled"}, "windowsSandboxLevel": "disabled"}),
        json!({"permissions": {"type": "managed", "network": "restricted",
                "file_system": {"type": "unrestricted"}}, "windowsSandboxLevel": "disabled"}),
    ] {
        client
            .request_ok(
                "fs/writeFile",
                json!({"path": uri(&path), "dataBase64": b64(b"ok"), "sandbox": sandbox}),
            )
            .await;
        client
            .request_ok(
                "fs/readFile",
                json!({"path": uri(&path), "sandbox": sandbox}),
            )
            .await;
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"ok");
}

#[tokio::test]
async fn fs_methods_work_over_stdio() {
    let (_server, mut client) = StdioServer::start(&[]).await;
    client.initialize().await;
    let dir = TestDir::new();
    let path = dir.join("over-stdio.txt");
    write(&mut client, &path, b"via stdio").await;
    assert_eq!(read(&mut client, &path).await, b"via stdio");
    let (code, _) = fs_error(
        &mut client,
        "fs/readFile",
        json!({"path": uri(&dir.join("missing"))}),
        &dir.join("missing"),
    )
    .await;
    assert_eq!(code, NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// Big payloads

/// FNV-1a: a cheap hash to compare 64 MiB without printing it on failure.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `len` bytes of xorshift noise (incompressible, every byte value).
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// How long one 64 MiB request may take: an unoptimized build spends seconds in base64 and JSON.
const BIG_REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

#[tokio::test]
async fn sixty_four_mib_file_round_trips_through_write_and_read() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    let path = dir.join("big.bin");
    let data = noise(64 << 20);
    let hash = fnv1a(&data);
    let params = json!({"path": uri(&path), "dataBase64": b64(&data)});
    drop(data);
    let written = client
        .request_within("fs/writeFile", params, BIG_REQUEST_DEADLINE)
        .await;
    assert_eq!(written, Ok(json!({})));
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(on_disk.len(), 64 << 20);
    assert_eq!(fnv1a(&on_disk), hash, "written bytes differ");
    drop(on_disk);

    let answer = client
        .request_within(
            "fs/readFile",
            json!({"path": uri(&path)}),
            BIG_REQUEST_DEADLINE,
        )
        .await
        .expect("fs/readFile of 64 MiB");
    let back = unb64(answer["dataBase64"].as_str().expect("dataBase64"));
    assert_eq!(back.len(), 64 << 20);
    assert_eq!(fnv1a(&back), hash, "read bytes differ");
}

/// A file over one piece (384 KiB) is answered in pieces, as one fragmented WebSocket message;
/// each size here puts the end somewhere else: one byte into a piece, two bytes (base64
/// padding), and exactly on a piece boundary (the last piece is empty).
#[tokio::test]
async fn read_file_answered_in_pieces_is_whole_at_every_piece_boundary() {
    const PIECE: usize = 3 << 17;
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    for len in [PIECE, PIECE + 1, PIECE + 2, 2 * PIECE, 3 * PIECE + 4] {
        let path = dir.join(&format!("piece-{len}"));
        let data = noise(len);
        std::fs::write(&path, &data).unwrap();
        let answer = client
            .request("fs/readFile", json!({"path": uri(&path)}))
            .await
            .unwrap_or_else(|e| panic!("fs/readFile of {len} bytes: {e:?}"));
        let back = unb64(answer["dataBase64"].as_str().expect("dataBase64"));
        assert_eq!(back.len(), len);
        assert!(back == data, "{len} bytes: read bytes differ");
    }
    // The connection goes on as usual after a message in pieces.
    let answer = client
        .request(
            "fs/getMetadata",
            json!({"path": uri(&dir.join("piece-786432"))}),
        )
        .await
        .unwrap();
    assert_eq!(answer["isFile"], json!(true));
}
