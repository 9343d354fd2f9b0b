//! Escapes through each `fs/*` method of the sandboxed `codex-fs` helper, over a real socket,
//! against the real kernel sandbox. Each test has a positive control (the allowed operation did
//! happen), so none can pass because nothing ran, and checks the file system afterwards.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

/// A workspace with `.git/config`, and an outside directory with a secret.
struct Fixture {
    _server: Server,
    client: Client,
    ws: TestDir,
    outside: TestDir,
}

impl Fixture {
    async fn new() -> Self {
        let server = Server::start(&[]).await;
        let mut client = server.connect().await;
        client.initialize().await;
        let (ws, outside) = sandbox_dirs();
        Self {
            _server: server,
            client,
            ws,
            outside,
        }
    }

    fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.ws.path()).unwrap()
    }

    /// The Codex CLI's workspace-write sandbox (root readable).
    fn workspace_write(&self) -> Value {
        workspace_write_for(&self.root())
    }

    /// Only the workspace: reads outside it are restricted too.
    fn workspace_only(&self) -> Value {
        let mut s = self.workspace_write();
        s["permissions"]["file_system"]["entries"]
            .as_array_mut()
            .unwrap()
            .remove(0);
        s
    }

    async fn ok(&mut self, method: &str, mut params: Value, sandbox: &Value) -> Value {
        params["sandbox"] = sandbox.clone();
        self.client.request_ok(method, params).await
    }

    /// Asserts the call is refused by the sandbox: -32600 with the OS's permission denied and
    /// the path.
    async fn refused(&mut self, method: &str, mut params: Value, sandbox: &Value) {
        params["sandbox"] = sandbox.clone();
        let (code, message) = self.client.request_err(method, params.clone()).await;
        assert_eq!(code, INVALID_REQUEST, "{method} {params}: {message}");
        assert!(
            message.starts_with("Permission denied (os error 13): /"),
            "{method} {params}: {message}"
        );
    }
}

/// The Codex CLI's workspace-write sandbox for `root` (root readable, `.git` read-only).
fn workspace_write_for(root: &Path) -> Value {
    json!({
        "permissions": {"type": "managed", "network": "restricted", "file_system": {
            "type": "restricted", "entries": [
                {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
                {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": "write"},
                {"path": {"type": "special", "value": {"kind": "project_roots", "subpath": ".git"}},
                 "access": "read", "missing_path_behavior": "skip"}
            ]}},
        "windowsSandboxLevel": "disabled",
        "cwd": file_uri(root),
        "workspaceRoots": [file_uri(root)]
    })
}

fn u(p: &Path) -> String {
    file_uri(p)
}

#[tokio::test]
async fn write_file_escapes_are_refused_and_workspace_writes_succeed() {
    let mut f = Fixture::new().await;
    let s = f.workspace_write();
    let root = f.root();
    f.ok(
        "fs/writeFile",
        json!({"path": u(&root.join("new.txt")), "dataBase64": b64(b"ok")}),
        &s,
    )
    .await;
    assert_eq!(
        std::fs::read(root.join("new.txt")).unwrap(),
        b"ok",
        "positive control"
    );
    std::os::unix::fs::symlink(f.outside.path(), root.join("link")).unwrap();
    let outside = f.outside.path().to_path_buf();
    for target in [
        outside.join("x"),
        root.join("link/x"),
        root.join(".git/config"),
        root.join(".git/hooks/x"),
        root.join(".agents/x"),
        root.join(".aws/config"),
    ] {
        f.refused(
            "fs/writeFile",
            json!({"path": u(&target), "dataBase64": b64(b"evil")}),
            &s,
        )
        .await;
    }
    // `..` that leaves the workspace, through a directory that exists.
    std::fs::create_dir(root.join("sub")).unwrap();
    let dotdot = format!(
        "{}/sub/../../{}/y",
        u(&root),
        outside.file_name().unwrap().to_string_lossy()
    );
    // Refused before anything runs: a `..` resolves only against a path that exists.
    let (code, message) = f
        .client
        .request_err(
            "fs/writeFile",
            json!({"path": dotdot, "dataBase64": b64(b"evil"), "sandbox": s}),
        )
        .await;
    assert_eq!(code, INVALID_PARAMS, "{message}");
    assert!(message.contains("contains '..'"), "{message}");
    assert!(!outside.join("x").exists() && !outside.join("y").exists());
    assert_eq!(std::fs::read(root.join(".git/config")).unwrap(), b"orig");
    assert!(!root.join(".agents").exists() && !root.join(".aws").exists());
}

#[tokio::test]
async fn create_directory_escapes_are_refused() {
    let mut f = Fixture::new().await;
    let s = f.workspace_write();
    let root = f.root();
    f.ok(
        "fs/createDirectory",
        json!({"path": u(&root.join("a/b"))}),
        &s,
    )
    .await;
    assert!(root.join("a/b").is_dir(), "positive control");
    for target in [
        f.outside.join("d"),
        root.join(".codex"),
        root.join(".git/hooks"),
    ] {
        f.refused("fs/createDirectory", json!({"path": u(&target)}), &s)
            .await;
    }
    assert!(!f.outside.join("d").exists());
    assert!(!root.join(".codex").exists() && !root.join(".git/hooks").exists());
}

#[tokio::test]
async fn remove_escapes_are_refused() {
    let mut f = Fixture::new().await;
    let s = f.workspace_write();
    let root = f.root();
    f.ok(
        "fs/remove",
        json!({"path": u(&root.join("inside.txt"))}),
        &s,
    )
    .await;
    assert!(!root.join("inside.txt").exists(), "positive control");
    let secret = f.outside.join("secret");
    for target in [
        root.join(".git"),
        root.join(".git/config"),
        secret.clone(),
        root.clone(),
    ] {
        f.refused("fs/remove", json!({"path": u(&target)}), &s)
            .await;
    }
    assert!(secret.exists());
    assert_eq!(std::fs::read(root.join(".git/config")).unwrap(), b"orig");
}

#[tokio::test]
async fn copy_source_and_destination_escapes_are_refused() {
    let mut f = Fixture::new().await;
    let root = f.root();
    let ww = f.workspace_write();
    let only = f.workspace_only();
    f.ok(
        "fs/copy",
        json!({"sourcePath": u(&root.join("inside.txt")), "destinationPath": u(&root.join("copy.txt")), "recursive": false}),
        &only,
    )
    .await;
    assert_eq!(
        std::fs::read(root.join("copy.txt")).unwrap(),
        b"inside the workspace",
        "positive control"
    );
    // Source outside a read-restricting policy.
    f.refused(
        "fs/copy",
        json!({"sourcePath": u(&f.outside.join("secret")), "destinationPath": u(&root.join("stolen")), "recursive": false}),
        &only,
    )
    .await;
    assert!(!root.join("stolen").exists());
    // Destinations outside the workspace and in a carve-out.
    for dest in [f.outside.join("planted"), root.join(".git/config")] {
        f.refused(
            "fs/copy",
            json!({"sourcePath": u(&root.join("inside.txt")), "destinationPath": u(&dest), "recursive": false}),
            &ww,
        )
        .await;
    }
    assert!(!f.outside.join("planted").exists());
    assert_eq!(std::fs::read(root.join(".git/config")).unwrap(), b"orig");
}

#[tokio::test]
async fn reads_outside_a_read_restricting_policy_are_refused() {
    let mut f = Fixture::new().await;
    let s = f.workspace_only();
    let root = f.root();
    let r = f
        .ok(
            "fs/readFile",
            json!({"path": u(&root.join("inside.txt"))}),
            &s,
        )
        .await;
    assert_eq!(
        unb64(r["dataBase64"].as_str().unwrap()),
        b"inside the workspace",
        "positive control"
    );
    let r = f
        .ok("fs/readDirectory", json!({"path": u(&root)}), &s)
        .await;
    assert!(
        r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["fileName"] == "inside.txt")
    );
    std::os::unix::fs::symlink(f.outside.join("secret"), root.join("to-secret")).unwrap();
    let secret = f.outside.join("secret");
    for (method, path) in [
        ("fs/readFile", secret.clone()),
        ("fs/readFile", root.join("to-secret")),
        ("fs/readFile", PathBuf::from("/etc/hostname")),
        ("fs/readDirectory", f.outside.path().to_path_buf()),
        ("fs/getMetadata", secret.clone()),
        ("fs/getMetadata", root.join("to-secret")),
        ("fs/canonicalize", root.join("to-secret")),
        ("fs/canonicalize", secret.clone()),
    ] {
        f.refused(method, json!({"path": u(&path)}), &s).await;
    }
}

#[tokio::test]
async fn fs_sandbox_is_refused_when_landlock_is_missing() {
    let server = Server::start(&["--sandbox-simulate-no-landlock"]).await;
    let mut client = server.connect().await;
    client.initialize().await;
    let ws = TestDir::new();
    let root = std::fs::canonicalize(ws.path()).unwrap();
    let s = workspace_write_for(&root);
    let target = root.join("x");
    let (code, message) = client
        .request_err(
            "fs/writeFile",
            json!({"path": u(&target), "dataBase64": b64(b"x"), "sandbox": s}),
        )
        .await;
    assert_eq!(code, INVALID_REQUEST, "{message}");
    assert!(
        message.starts_with("filesystem sandbox cannot be enforced on this executor"),
        "{message}"
    );
    assert!(!target.exists());
    // Without a restricting sandbox the same server still writes.
    client
        .request_ok(
            "fs/writeFile",
            json!({"path": u(&target), "dataBase64": b64(b"x")}),
        )
        .await;
    assert!(target.exists());
}
