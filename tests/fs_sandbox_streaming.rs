//! Sandboxed streaming (capability `sandboxedFileStreaming`), over a real socket against the real
//! kernel sandbox: under a sandbox that needs the platform sandbox, the `codex-fs` helper opens
//! the file and hands the descriptor back, and `fs/readBlock`/`fs/writeBlock` work on it. Each
//! test has a positive control, and refusals check that nothing was opened or changed.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

/// A workspace with `inside.txt` and `.git/config`, an outside directory with a secret.
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

    /// Only the project roots, with `access`: no root read, so reads need the platform sandbox.
    fn project_only(&self, access: &str) -> Value {
        json!({
            "permissions": {"type": "managed", "network": "restricted", "file_system": {
                "type": "restricted", "entries": [
                    {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": access},
                    {"path": {"type": "special", "value": {"kind": "project_roots", "subpath": ".git"}},
                     "access": "read", "missing_path_behavior": "skip"}
                ]}},
            "windowsSandboxLevel": "disabled",
            "cwd": file_uri(&self.root()),
            "workspaceRoots": [file_uri(&self.root())]
        })
    }

    async fn open(
        &mut self,
        handle: &str,
        path: &Path,
        mode: &str,
        sandbox: &Value,
    ) -> Result<Value, RpcError> {
        self.client
            .request(
                "fs/open",
                json!({"handleId": handle, "path": file_uri(path), "mode": mode, "sandbox": sandbox}),
            )
            .await
    }

    async fn read_block(&mut self, handle: &str, offset: u64, len: u64) -> Result<Value, RpcError> {
        self.client
            .request(
                "fs/readBlock",
                json!({"handleId": handle, "offset": offset, "len": len}),
            )
            .await
    }

    async fn write_block(&mut self, handle: &str, offset: u64, data: &[u8]) -> Value {
        self.client
            .request_ok(
                "fs/writeBlock",
                json!({"handleId": handle, "offset": offset, "chunk": b64(data)}),
            )
            .await
    }
}

#[tokio::test]
async fn metadata_and_block_reads_work_under_a_read_restricting_sandbox() {
    let mut f = Fixture::new().await;
    let s = f.project_only("read");
    let inside = f.root().join("inside.txt");
    let meta = f
        .client
        .request_ok(
            "fs/getMetadata",
            json!({"path": file_uri(&inside), "sandbox": s}),
        )
        .await;
    assert_eq!(meta["size"], json!(20), "{meta}");
    assert_eq!(
        f.open("r", &inside, "read", &s).await.unwrap(),
        json!({"handleId": "r"})
    );
    let block = f.read_block("r", 7, 100).await.unwrap();
    assert_eq!(unb64(block["chunk"].as_str().unwrap()), b"the workspace");
    assert_eq!(block["eof"], json!(true));
    // The mode defaults to read under a sandbox too.
    f.client
        .request_ok(
            "fs/open",
            json!({"handleId": "r2", "path": file_uri(&inside), "sandbox": s}),
        )
        .await;
    f.client
        .request_ok("fs/close", json!({"handleId": "r"}))
        .await;
}

#[tokio::test]
async fn a_path_the_sandbox_denies_is_refused_and_no_handle_is_made() {
    let mut f = Fixture::new().await;
    let s = f.project_only("read");
    let root = f.root();
    std::os::unix::fs::symlink(f.outside.join("secret"), root.join("to-secret")).unwrap();
    for path in [
        f.outside.join("secret"),
        root.join("to-secret"),
        PathBuf::from("/etc/hostname"),
    ] {
        let (code, message) = f.open("h", &path, "read", &s).await.unwrap_err();
        assert_eq!(code, INVALID_REQUEST, "{}: {message}", path.display());
        assert!(
            message.starts_with("Permission denied (os error 13)"),
            "{message}"
        );
        assert_eq!(
            f.read_block("h", 0, 10).await.unwrap_err().0,
            NOT_FOUND,
            "no handle"
        );
    }
    // Positive control: the same id opens a file the sandbox allows.
    f.open("h", &root.join("inside.txt"), "read", &s)
        .await
        .unwrap();
}

#[tokio::test]
async fn replace_under_a_read_only_sandbox_is_refused_and_the_file_kept() {
    let mut f = Fixture::new().await;
    let s = f.project_only("read");
    let inside = f.root().join("inside.txt");
    let (code, message) = f.open("w", &inside, "replace", &s).await.unwrap_err();
    assert!(
        code == INVALID_REQUEST || code == INTERNAL_ERROR,
        "{code}: {message}"
    );
    assert_eq!(
        std::fs::read(&inside).unwrap(),
        b"inside the workspace",
        "not truncated"
    );
    let (code, _) = f
        .open("w", &f.root().join("new.txt"), "replace", &s)
        .await
        .unwrap_err();
    assert_ne!(code, 0);
    assert!(!f.root().join("new.txt").exists(), "not created");
}

#[tokio::test]
async fn replace_and_block_writes_work_under_a_write_sandbox_but_not_into_carve_outs() {
    let mut f = Fixture::new().await;
    let s = f.project_only("write");
    let target = f.root().join("streamed.txt");
    f.open("w", &target, "replace", &s).await.unwrap();
    f.write_block("w", 6, b"world").await;
    f.write_block("w", 0, b"hello ").await;
    f.client
        .request_ok("fs/close", json!({"handleId": "w"}))
        .await;
    assert_eq!(std::fs::read(&target).unwrap(), b"hello world");
    // A protected carve-out and a path outside the workspace: refused, nothing changed.
    for path in [f.root().join(".git/config"), f.outside.join("secret")] {
        let (code, message) = f.open("x", &path, "replace", &s).await.unwrap_err();
        assert_eq!(code, INVALID_REQUEST, "{}: {message}", path.display());
        assert!(
            message.starts_with("Permission denied (os error 13)"),
            "{message}"
        );
    }
    assert_eq!(
        std::fs::read(f.root().join(".git/config")).unwrap(),
        b"orig"
    );
    assert_eq!(std::fs::read(f.outside.join("secret")).unwrap(), b"secret");
}

#[tokio::test]
async fn sandboxed_file_streaming_is_advertised() {
    let server = Server::start(&[]).await;
    let mut client = server.connect().await;
    let result = client
        .request_ok("initialize", json!({"clientName": "test"}))
        .await;
    let capabilities = &result["environmentInfo"]["capabilities"];
    assert_eq!(
        capabilities["sandboxedFileStreaming"],
        json!(true),
        "{result}"
    );
}
