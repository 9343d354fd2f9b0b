//! `fs/walk` as a client sees it, over a real socket: order, limits and `truncated`, symlink
//! options and loops, unreadable directories, bad input, and the sandboxed helper path.

mod common;

use std::path::Path;

use common::*;
use serde_json::{Value, json};

async fn ready() -> (Server, Client) {
    let server = Server::start(&[]).await;
    let mut client = server.connect().await;
    client.initialize().await;
    (server, client)
}

fn opts(depth: u64, dirs: u64, entries: u64, follow: bool) -> Value {
    json!({"maxDepth": depth, "maxDirectories": dirs, "maxEntries": entries,
           "followDirectorySymlinks": follow})
}

/// The entries as `(path relative to root, kind)`.
fn listed(result: &Value, root: &Path) -> Vec<(String, String)> {
    let prefix = format!("{}/", file_uri(root));
    result["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let path = e["path"].as_str().unwrap();
            let rel = path.strip_prefix(&prefix).unwrap_or(path).to_string();
            (rel, e["kind"].as_str().unwrap().to_string())
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(p, k)| (p.to_string(), k.to_string()))
        .collect()
}

/// root: .hidden/h, a.txt, sub/{b.txt, deep/c.txt}
fn tree() -> TestDir {
    let d = TestDir::new();
    std::fs::create_dir_all(d.join(".hidden")).unwrap();
    std::fs::write(d.join(".hidden/h"), b"h").unwrap();
    std::fs::write(d.join("a.txt"), b"a").unwrap();
    std::fs::create_dir_all(d.join("sub/deep")).unwrap();
    std::fs::write(d.join("sub/b.txt"), b"b").unwrap();
    std::fs::write(d.join("sub/deep/c.txt"), b"c").unwrap();
    d
}

#[tokio::test]
async fn walk_is_breadth_first_and_sorted_within_each_directory() {
    let (_s, mut c) = ready().await;
    let d = tree();
    let r = c
        .request_ok(
            "fs/walk",
            json!({"path": d.uri(), "options": opts(64, 100, 100, false)}),
        )
        .await;
    assert_eq!(
        listed(&r, d.path()),
        pairs(&[
            (".hidden", "directory"),
            ("a.txt", "file"),
            ("sub", "directory"),
            (".hidden/h", "file"),
            ("sub/b.txt", "file"),
            ("sub/deep", "directory"),
            ("sub/deep/c.txt", "file"),
        ])
    );
    assert_eq!(r["errors"], json!([]));
    assert_eq!(r["truncated"], json!(false));
}

#[tokio::test]
async fn walk_depth_prune_and_limits_stop_where_asked() {
    let (_s, mut c) = ready().await;
    let d = tree();
    let walk = |o: Value| json!({"path": d.uri(), "options": o});
    // maxDepth 0: the root's children only.
    let r = c
        .request_ok("fs/walk", walk(opts(0, 100, 100, false)))
        .await;
    assert_eq!(
        listed(&r, d.path()),
        pairs(&[
            (".hidden", "directory"),
            ("a.txt", "file"),
            ("sub", "directory")
        ])
    );
    assert_eq!(r["truncated"], json!(false));
    // Hidden directories listed, not descended.
    let mut o = opts(64, 100, 100, false);
    o["pruneHiddenDirectories"] = json!(true);
    let r = c.request_ok("fs/walk", walk(o)).await;
    let got = listed(&r, d.path());
    assert!(got.contains(&(".hidden".into(), "directory".into())));
    assert!(!got.iter().any(|(p, _)| p == ".hidden/h"), "{got:?}");
    assert!(got.iter().any(|(p, _)| p == "sub/deep/c.txt"), "{got:?}");
    // maxEntries 2: two entries, truncated.
    let r = c.request_ok("fs/walk", walk(opts(64, 100, 2, false))).await;
    assert_eq!(
        listed(&r, d.path()),
        pairs(&[(".hidden", "directory"), ("a.txt", "file")])
    );
    assert_eq!(r["truncated"], json!(true));
    // maxDirectories 1: the root's children only, truncated.
    let r = c.request_ok("fs/walk", walk(opts(64, 1, 100, false))).await;
    assert_eq!(listed(&r, d.path()).len(), 3);
    assert_eq!(r["truncated"], json!(true));
}

#[tokio::test]
async fn walk_of_a_file_is_empty_and_of_a_missing_path_is_not_found() {
    let (_s, mut c) = ready().await;
    let d = tree();
    let r = c
        .request_ok(
            "fs/walk",
            json!({"path": file_uri(&d.join("a.txt")), "options": opts(3, 10, 10, false)}),
        )
        .await;
    assert_eq!(r, json!({"entries": [], "errors": [], "truncated": false}));
    let (code, message) = c
        .request_err(
            "fs/walk",
            json!({"path": file_uri(&d.join("nope")), "options": opts(3, 10, 10, false)}),
        )
        .await;
    assert_eq!(code, -32004);
    assert!(
        message.starts_with("No such file or directory (os error 2)"),
        "{message}"
    );
}

#[tokio::test]
async fn walk_leaves_out_or_follows_directory_symlinks_and_ends_on_a_loop() {
    let (_s, mut c) = ready().await;
    let d = TestDir::new();
    std::fs::create_dir_all(d.join("real")).unwrap();
    std::fs::write(d.join("real/f"), b"f").unwrap();
    std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
    std::os::unix::fs::symlink(d.path(), d.join("real/loop")).unwrap();
    std::os::unix::fs::symlink(d.join("real/f"), d.join("to-file")).unwrap();
    std::os::unix::fs::symlink(d.join("gone"), d.join("broken")).unwrap();
    let r = c
        .request_ok(
            "fs/walk",
            json!({"path": d.uri(), "options": opts(64, 10_000, 50_000, false)}),
        )
        .await;
    assert_eq!(
        listed(&r, d.path()),
        pairs(&[
            ("broken", "file"),
            ("real", "directory"),
            ("to-file", "file"),
            ("real/f", "file"),
        ]),
        "symlinks to directories are left out"
    );
    // Followed: each real directory is read once, so the loop back to the root ends.
    let r = c
        .request_ok(
            "fs/walk",
            json!({"path": d.uri(), "options": opts(64, 10_000, 50_000, true)}),
        )
        .await;
    assert_eq!(
        listed(&r, d.path()),
        pairs(&[
            ("broken", "file"),
            ("link", "directory"),
            ("real", "directory"),
            ("to-file", "file"),
            ("link/f", "file"),
            ("link/loop", "directory"),
        ])
    );
    assert_eq!(r["truncated"], json!(false));
}

#[tokio::test]
async fn walk_reports_unreadable_directories_and_goes_on() {
    use std::os::unix::fs::PermissionsExt as _;
    let (_s, mut c) = ready().await;
    let d = tree();
    std::fs::create_dir(d.join("locked")).unwrap();
    std::fs::write(d.join("locked/x"), b"x").unwrap();
    std::fs::set_permissions(d.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read_dir(d.join("locked")).is_ok() {
        // Running as root: permissions do not stop reads, so there is nothing to observe.
        std::fs::set_permissions(d.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
        eprintln!("skipped: running with CAP_DAC_OVERRIDE");
        return;
    }
    let r = c
        .request_ok(
            "fs/walk",
            json!({"path": d.uri(), "options": opts(64, 100, 100, false)}),
        )
        .await;
    std::fs::set_permissions(d.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        r["errors"],
        json!([{"path": file_uri(&d.join("locked")), "message": "Permission denied (os error 13)"}])
    );
    assert!(
        listed(&r, d.path()).contains(&("sub/deep/c.txt".into(), "file".into())),
        "the walk went on"
    );
}

/// An entry whose absolute path is longer than the kernel takes (PATH_MAX, 4096) cannot be
/// looked at even by root: it is reported in `errors`, and the rest of the tree is listed.
#[tokio::test]
async fn walk_reports_what_it_cannot_look_at_even_as_root() {
    let (_s, mut c) = ready().await;
    let d = tree();
    let name = "n".repeat(250);
    // `mkdir -p` makes a relative path one level at a time (an absolute one would be too long).
    let relative = format!("{name}/").repeat(20);
    let status = std::process::Command::new("mkdir")
        .arg("-p")
        .arg(&relative)
        .current_dir(d.path())
        .status()
        .unwrap();
    assert!(status.success());
    let r = c
        .request_ok(
            "fs/walk",
            json!({"path": d.uri(), "options": opts(64, 100, 1000, false)}),
        )
        .await;
    let errors = r["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["message"], "File name too long (os error 36)");
    let deep = errors[0]["path"].as_str().unwrap();
    assert!(deep.len() > 4096 && deep.starts_with(&d.uri()));
    assert!(
        listed(&r, d.path()).contains(&("sub/deep/c.txt".into(), "file".into())),
        "the walk went on"
    );
}

#[tokio::test]
async fn walk_refuses_zero_and_excessive_limits() {
    let (_s, mut c) = ready().await;
    let d = tree();
    let maxima =
        "filesystem walk limits exceed maximums: depth=64, directories=10000, entries=50000";
    for (o, message) in [
        (
            opts(1, 0, 10, false),
            "filesystem walk limits must be greater than zero",
        ),
        (
            opts(1, 10, 0, false),
            "filesystem walk limits must be greater than zero",
        ),
        (opts(65, 10, 10, false), maxima),
        (opts(1, 10_001, 10, false), maxima),
        (opts(1, 10, 50_001, false), maxima),
        (opts(u64::MAX, 10, 10, false), maxima),
    ] {
        let err = c
            .request_err("fs/walk", json!({"path": d.uri(), "options": o}))
            .await;
        assert_eq!(err, (-32600, message.to_string()), "{o}");
    }
    // The largest limits are accepted.
    let r = c
        .request_ok(
            "fs/walk",
            json!({"path": d.uri(), "options": opts(64, 10_000, 50_000, false)}),
        )
        .await;
    assert_eq!(listed(&r, d.path()).len(), 7);
}

#[tokio::test]
async fn walk_refuses_missing_ill_typed_null_and_huge_fields() {
    let (_s, mut c) = ready().await;
    let d = tree();
    let good = opts(1, 10, 10, false);
    let cases = [
        json!({"options": good}),
        json!({"path": d.uri()}),
        json!({"path": null, "options": good}),
        json!({"path": d.uri(), "options": null}),
        json!({"path": 7, "options": good}),
        json!({"path": d.uri(), "options": "deep"}),
        json!({"path": d.uri(), "options": {"maxDepth": 1, "maxDirectories": 1, "maxEntries": 1}}),
        json!({"path": d.uri(), "options": {"maxDepth": -1, "maxDirectories": 1, "maxEntries": 1,
                                             "followDirectorySymlinks": false}}),
        json!({"path": d.uri(), "options": {"maxDepth": 1e30, "maxDirectories": 1, "maxEntries": 1,
                                             "followDirectorySymlinks": false}}),
        json!({"path": d.uri(), "options": {"maxDepth": 1, "maxDirectories": 1, "maxEntries": 1,
                                             "followDirectorySymlinks": "yes"}}),
        json!({"path": d.uri(), "options": good, "sandbox": 5}),
        json!({"path": "relative/path", "options": good}),
    ];
    for params in cases {
        let (code, message) = c.request_err("fs/walk", params.clone()).await;
        assert_eq!(code, -32602, "{params}: {message}");
    }
    // A huge path is answered, not fatal.
    let huge = format!("file:///{}", "a/".repeat(300_000));
    let (code, _) = c
        .request_err("fs/walk", json!({"path": huge, "options": good}))
        .await;
    assert!(code == -32004 || code == -32600 || code == -32603, "{code}");
    // The connection still serves.
    c.request_ok("fs/walk", json!({"path": d.uri(), "options": good}))
        .await;
}

#[tokio::test]
async fn walk_is_gated_by_the_handshake() {
    let server = Server::start(&[]).await;
    let mut c = server.connect().await;
    let d = tree();
    let err = c
        .request_err(
            "fs/walk",
            json!({"path": d.uri(), "options": opts(1, 1, 1, false)}),
        )
        .await;
    assert_eq!(
        err,
        (
            -32600,
            "client must call initialize before using filesystem methods".to_string()
        )
    );
}

/// The Codex CLI's workspace-write sandbox for `root`, without the root-wide read entry: reads
/// are restricted to the workspace, so the walk runs in the `codex-fs` helper.
fn workspace_only(root: &Path) -> Value {
    json!({
        "permissions": {"type": "managed", "network": "restricted", "file_system": {
            "type": "restricted", "entries": [
                {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": "write"}
            ]}},
        "windowsSandboxLevel": "disabled",
        "cwd": file_uri(root),
        "workspaceRoots": [file_uri(root)]
    })
}

#[tokio::test]
async fn sandboxed_walk_lists_the_workspace_and_reports_what_lies_outside_it() {
    let (_s, mut c) = ready().await;
    let ws = tree();
    let root = std::fs::canonicalize(ws.path()).unwrap();
    let outside = TestDir::new();
    std::fs::write(outside.join("secret"), b"s").unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("escape")).unwrap();
    let r = c
        .request_ok(
            "fs/walk",
            json!({"path": file_uri(&root), "options": opts(64, 100, 100, true),
                   "sandbox": workspace_only(&root)}),
        )
        .await;
    let got = listed(&r, &root);
    assert!(
        got.contains(&("sub/deep/c.txt".into(), "file".into())),
        "{got:?}"
    );
    assert!(
        !got.iter().any(|(p, _)| p.ends_with("secret")),
        "the outside directory was read: {got:?}"
    );
    assert_eq!(
        r["errors"][0]["path"],
        json!(file_uri(&root.join("escape"))),
        "{r}"
    );
    // The root itself outside the policy is refused.
    let (code, message) = c
        .request_err(
            "fs/walk",
            json!({"path": outside.uri(), "options": opts(64, 100, 100, true),
                   "sandbox": workspace_only(&root)}),
        )
        .await;
    assert_eq!(code, -32600, "{message}");
    assert!(message.contains("Permission denied"), "{message}");
}

/// 20,000 entries of 250-byte names would be a 5 MB answer: the walk stops at its 4 MiB budget.
#[tokio::test]
async fn walk_stops_at_its_answer_budget() {
    let (_s, mut c) = ready().await;
    let d = TestDir::new();
    let pad = "p".repeat(240);
    for i in 0..20_000 {
        std::fs::File::create(d.join(&format!("{i:05}{pad}"))).unwrap();
    }
    let r = c
        .request_ok(
            "fs/walk",
            json!({"path": d.uri(), "options": opts(0, 1, 50_000, false)}),
        )
        .await;
    let n = r["entries"].as_array().unwrap().len();
    assert_eq!(r["truncated"], json!(true));
    assert!((10_000..20_000).contains(&n), "{n} entries");
    let text = serde_json::to_string(&r).unwrap();
    assert!(text.len() <= 4 << 20, "{} bytes", text.len());
    // Sorted and breadth-first even when cut: the first n names.
    assert!(
        r["entries"][n - 1]["path"]
            .as_str()
            .unwrap()
            .contains(&format!("/{:05}{pad}", n - 1))
    );
}
