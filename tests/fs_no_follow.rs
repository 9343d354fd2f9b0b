//! `followSymlinks: false` on `fs/readFile`, `fs/writeFile`, `fs/createDirectory`,
//! `fs/getMetadata` and `fs/remove`, over a real socket: a symbolic link in any component is
//! refused and nothing is done; omitted or `true` keeps following; in the server and in the
//! sandboxed helper alike.
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

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

/// `{path, followSymlinks: false}` plus `extra`.
fn no_follow(path: &Path, extra: Value) -> Value {
    let mut params = json!({"path": file_uri(path), "followSymlinks": false});
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    params
}

fn final_link_error(path: &Path) -> RpcError {
    (
        INVALID_REQUEST,
        format!("path contains a symbolic link: {}", path.display()),
    )
}

fn through_link_error(path: &Path) -> RpcError {
    (
        INTERNAL_ERROR,
        format!("Not a directory (os error 20): {}", path.display()),
    )
}

/// `dir/real/` (holding `file`), `dir/link-dir -> real`, `dir/link-file -> real/file`.
fn tree(dir: &TestDir) {
    std::fs::create_dir(dir.join("real")).unwrap();
    std::fs::write(dir.join("real/file"), b"contents").unwrap();
    symlink(&dir.join("real"), &dir.join("link-dir"));
    symlink(&dir.join("real/file"), &dir.join("link-file"));
}

#[tokio::test]
async fn get_metadata_without_follow_refuses_a_symlink_and_follows_when_omitted_or_true() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    tree(&dir);
    let link = dir.join("link-file");
    assert_eq!(
        client
            .request_err("fs/getMetadata", no_follow(&link, json!({})))
            .await,
        final_link_error(&link)
    );
    for follow in [json!(null), json!(true)] {
        let meta = client
            .request_ok(
                "fs/getMetadata",
                json!({"path": file_uri(&link), "followSymlinks": follow}),
            )
            .await;
        assert_eq!(meta["isFile"], json!(true), "{follow}: {meta}");
        assert_eq!(meta["isSymlink"], json!(true), "{follow}: {meta}");
    }
    let meta = client
        .request_ok(
            "fs/getMetadata",
            no_follow(&dir.join("real/file"), json!({})),
        )
        .await;
    assert_eq!(meta["size"], json!(8), "no link: fine");
}

#[tokio::test]
async fn read_file_through_a_symlinked_directory_without_follow_is_not_a_directory() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    tree(&dir);
    let through = dir.join("link-dir/file");
    assert_eq!(
        client
            .request_err("fs/readFile", no_follow(&through, json!({})))
            .await,
        through_link_error(&through)
    );
    assert_eq!(
        client
            .request_err("fs/readFile", no_follow(&dir.join("link-file"), json!({})))
            .await,
        final_link_error(&dir.join("link-file"))
    );
    // `..` after a link is walked through the link by the kernel: refused too.
    let dotdot = dir.join("link-dir/../real/file");
    assert_eq!(
        client
            .request_err("fs/readFile", no_follow(&dotdot, json!({})))
            .await,
        through_link_error(&dotdot)
    );
    let plain = client
        .request_ok("fs/readFile", no_follow(&dir.join("real/file"), json!({})))
        .await;
    assert_eq!(unb64(plain["dataBase64"].as_str().unwrap()), b"contents");
    let followed = client
        .request_ok("fs/readFile", json!({"path": file_uri(&through)}))
        .await;
    assert_eq!(unb64(followed["dataBase64"].as_str().unwrap()), b"contents");
}

#[tokio::test]
async fn mutations_without_follow_through_a_link_do_nothing() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    tree(&dir);
    let data = json!({"dataBase64": b64(b"evil")});
    let new_file = dir.join("link-dir/new");
    assert_eq!(
        client
            .request_err("fs/writeFile", no_follow(&new_file, data.clone()))
            .await,
        through_link_error(&new_file)
    );
    assert_eq!(
        client
            .request_err("fs/writeFile", no_follow(&dir.join("link-file"), data))
            .await,
        final_link_error(&dir.join("link-file"))
    );
    let new_dir = dir.join("link-dir/sub");
    assert_eq!(
        client
            .request_err("fs/createDirectory", no_follow(&new_dir, json!({})))
            .await,
        through_link_error(&new_dir)
    );
    let target = dir.join("link-dir/file");
    assert_eq!(
        client
            .request_err("fs/remove", no_follow(&target, json!({})))
            .await,
        through_link_error(&target)
    );
    assert_eq!(
        client
            .request_err("fs/remove", no_follow(&dir.join("link-dir"), json!({})))
            .await,
        final_link_error(&dir.join("link-dir"))
    );
    assert_eq!(std::fs::read(dir.join("real/file")).unwrap(), b"contents");
    assert!(!dir.join("real/new").exists() && !dir.join("real/sub").exists());
    assert!(dir.join("link-dir").symlink_metadata().is_ok());
    // Without links, the same calls work.
    let data = json!({"dataBase64": b64(b"ok")});
    client
        .request_ok("fs/writeFile", no_follow(&dir.join("real/new"), data))
        .await;
    client
        .request_ok(
            "fs/createDirectory",
            no_follow(&dir.join("real/sub"), json!({})),
        )
        .await;
    client
        .request_ok("fs/remove", no_follow(&dir.join("real/file"), json!({})))
        .await;
    assert_eq!(std::fs::read(dir.join("real/new")).unwrap(), b"ok");
    assert!(dir.join("real/sub").is_dir() && !dir.join("real/file").exists());
}

#[tokio::test]
async fn ill_typed_follow_symlinks_is_invalid_params() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    tree(&dir);
    for method in [
        "fs/readFile",
        "fs/getMetadata",
        "fs/remove",
        "fs/createDirectory",
    ] {
        for bad in [json!("false"), json!(0), json!({})] {
            let (code, message) = client
                .request_err(
                    method,
                    json!({"path": file_uri(&dir.join("real/x")), "followSymlinks": bad}),
                )
                .await;
            assert_eq!(code, INVALID_PARAMS, "{method} {bad}: {message}");
        }
    }
    assert!(dir.join("real/file").exists());
}

#[tokio::test]
async fn without_follow_the_sandboxed_helper_refuses_a_link_too() {
    let (_server, mut client) = ready().await;
    let dir = TestDir::new();
    tree(&dir);
    // The workspace-write sandbox: writes go through the helper.
    let sandbox = json!({
        "permissions": {"type": "managed", "network": "restricted", "file_system": {
            "type": "restricted", "entries": [
                {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
                {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": "write"}
            ]}},
        "windowsSandboxLevel": "disabled",
        "cwd": file_uri(dir.path()),
        "workspaceRoots": [file_uri(dir.path())]
    });
    let through = dir.join("link-dir/new");
    assert_eq!(
        client
            .request_err(
                "fs/writeFile",
                no_follow(
                    &through,
                    json!({"dataBase64": b64(b"x"), "sandbox": sandbox})
                ),
            )
            .await,
        through_link_error(&through)
    );
    assert!(!dir.join("real/new").exists());
    // Followed (omitted), the same write lands in the workspace.
    client
        .request_ok(
            "fs/writeFile",
            json!({"path": file_uri(&through), "dataBase64": b64(b"x"), "sandbox": sandbox}),
        )
        .await;
    assert_eq!(std::fs::read(dir.join("real/new")).unwrap(), b"x");
}
