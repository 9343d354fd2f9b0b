//! The persistent sandboxed `codex-fs` helper (`codex-fs --serve`, one per connection and
//! policy), over a real socket against the real kernel sandbox: it keeps denying what the policy
//! denies call after call, one helper serves many calls, a killed helper is replaced (the call it
//! dies in fails, the next succeeds), concurrent calls on one connection each get their own
//! answer, and no helper outlives its connection.
//!
//! The helpers are found as the server's children named `codex-fs` (`/proc/PID/task/*/children`).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The Codex CLI's workspace-write sandbox for `root`, as it sends it: root read; project roots,
/// `/tmp` and `$TMPDIR` write; `.git`, `.agents`, `.codex`, `.aws` under each root read, skipped
/// when missing; network restricted.
fn workspace_write_for(root: &Path) -> Value {
    let protected = |name: &str| {
        json!({"path": {"type": "special", "value": {"kind": "project_roots", "subpath": name}},
               "access": "read", "missing_path_behavior": "skip"})
    };
    json!({
        "permissions": {"type": "managed", "network": "restricted", "file_system": {
            "type": "restricted", "entries": [
                {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
                {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": "write"},
                {"path": {"type": "special", "value": {"kind": "slash_tmp"}}, "access": "write"},
                {"path": {"type": "special", "value": {"kind": "tmpdir"}}, "access": "write"},
                protected(".git"), protected(".agents"), protected(".codex"), protected(".aws")
            ]}},
        "windowsSandboxLevel": "disabled",
        "cwd": file_uri(root),
        "workspaceRoots": [file_uri(root)]
    })
}

/// Only the workspace (no root read): reads go to the helper too.
fn workspace_only_for(root: &Path) -> Value {
    json!({
        "permissions": {"type": "managed", "network": "restricted", "file_system": {
            "type": "restricted", "entries": [
                {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": "write"},
                {"path": {"type": "special", "value": {"kind": "project_roots", "subpath": ".git"}},
                 "access": "read", "missing_path_behavior": "skip"}
            ]}},
        "windowsSandboxLevel": "disabled",
        "cwd": file_uri(root),
        "workspaceRoots": [file_uri(root)]
    })
}

/// Pids of `pid`'s children named `codex-fs`.
fn helpers_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // A zombie not reaped yet is not a helper any more.
            let zombie = state
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'));
            if comm.trim() == "codex-fs" && !zombie {
                out.push(child);
            }
        }
    }
    out.sort_unstable();
    out
}

/// Waits until `pred(helpers)` holds, failing after the deadline.
async fn wait_for_helpers(server_pid: i32, what: &str, pred: impl Fn(&[i32]) -> bool) -> Vec<i32> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let helpers = helpers_of(server_pid);
        if pred(&helpers) {
            return helpers;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: helpers now {helpers:?}"
        );
        // /proc offers nothing to wait on: look again shortly.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Fixture {
    server: Server,
    client: Client,
    ws: TestDir,
    outside: TestDir,
}

impl Fixture {
    async fn new() -> Self {
        let server = Server::start(&[]).await;
        let mut client = server.connect().await;
        client.initialize().await;
        let (ws, _) = sandbox_dirs();
        // Outside every root of the policy, `/tmp` included (it is writable there).
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(base).unwrap();
        let outside = TestDir::new_in(base);
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        Self {
            server,
            client,
            ws,
            outside,
        }
    }

    fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.ws.path()).unwrap()
    }

    fn write_params(&self, path: &Path, data: &[u8], sandbox: &Value) -> Value {
        json!({"path": file_uri(path), "dataBase64": b64(data), "sandbox": sandbox})
    }

    async fn write(
        &mut self,
        path: &Path,
        data: &[u8],
        sandbox: &Value,
    ) -> Result<Value, RpcError> {
        let params = self.write_params(path, data, sandbox);
        self.client.request("fs/writeFile", params).await
    }
}

/// Skips (prints why) when this kernel cannot run the sandbox: the helper is refused then.
async fn sandbox_works(f: &mut Fixture) -> bool {
    let s = workspace_write_for(&f.root());
    let probe = f.root().join("probe.txt");
    match f.write(&probe, b"probe", &s).await {
        Ok(_) => true,
        Err(e) if e.1.contains("cannot be enforced on this executor") => {
            assert!(
                std::env::var_os("CODEX_TEST_REQUIRE_SANDBOX").is_none(),
                "the sandbox is required here: {e:?}"
            );
            eprintln!("skipped: {}", e.1);
            false
        }
        Err(e) => panic!("sandboxed write failed: {e:?}"),
    }
}

#[tokio::test]
async fn one_helper_serves_call_after_call_and_keeps_denying_what_the_policy_denies() {
    let mut f = Fixture::new().await;
    if !sandbox_works(&mut f).await {
        return;
    }
    let s = workspace_write_for(&f.root());
    let root = f.root();
    let first = wait_for_helpers(f.server.pid(), "a helper after the first call", |h| {
        h.len() == 1
    })
    .await;
    let secret = f.outside.join("secret");
    for round in 0..5u8 {
        // Allowed: lands.
        let name = root.join(format!("file-{round}.txt"));
        f.write(&name, &[round; 3], &s)
            .await
            .expect("allowed write");
        assert_eq!(
            std::fs::read(&name).unwrap(),
            [round; 3],
            "positive control"
        );
        // Denied, every time: outside the roots, protected names (existing or not), and from
        // round 2 a symlink out of the root made after the helper started.
        if round == 2 {
            std::os::unix::fs::symlink(f.outside.path(), root.join("out")).unwrap();
        }
        let mut denied = vec![
            secret.clone(),
            root.join(".git/config"),
            root.join(".agents/x"),
        ];
        if round >= 2 {
            denied.push(root.join("out/secret"));
        }
        for target in &denied {
            let err = f.write(target, b"evil", &s).await.unwrap_err();
            assert_eq!(err.0, INVALID_REQUEST, "{}: {err:?}", target.display());
            assert!(
                err.1.starts_with("Permission denied (os error 13)"),
                "{}: {err:?}",
                target.display()
            );
        }
    }
    assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
    assert_eq!(std::fs::read(root.join(".git/config")).unwrap(), b"orig");
    assert!(!root.join(".agents/x").exists());
    assert_eq!(
        helpers_of(f.server.pid()),
        first,
        "the same helper served every call"
    );
}

#[tokio::test]
async fn a_killed_helper_is_replaced_on_the_next_call() {
    let mut f = Fixture::new().await;
    if !sandbox_works(&mut f).await {
        return;
    }
    let s = workspace_write_for(&f.root());
    let root = f.root();
    let server_pid = f.server.pid();
    let old = wait_for_helpers(server_pid, "one helper", |h| h.len() == 1).await;
    // SAFETY: a signal to a pid this test just found as the server's child.
    unsafe { libc::kill(old[0], libc::SIGKILL) };
    assert_process_exits(old[0], DEADLINE, "the killed helper").await;

    f.write(&root.join("after.txt"), b"after", &s)
        .await
        .expect("the next call is served by a new helper");
    assert_eq!(std::fs::read(root.join("after.txt")).unwrap(), b"after");
    let new = wait_for_helpers(server_pid, "a new helper", |h| h.len() == 1).await;
    assert_ne!(new, old, "another process");
    // The new one is confined as the old one was.
    let err = f
        .write(&f.outside.join("secret"), b"evil", &s)
        .await
        .unwrap_err();
    assert_eq!(err.0, INVALID_REQUEST, "{err:?}");
    assert_eq!(std::fs::read(f.outside.join("secret")).unwrap(), b"secret");
}

#[tokio::test]
async fn concurrent_calls_on_one_connection_each_get_their_own_answer() {
    let mut f = Fixture::new().await;
    if !sandbox_works(&mut f).await {
        return;
    }
    let root = f.root();
    let write = workspace_write_for(&root);
    let read = workspace_only_for(&root);
    const N: usize = 24;
    // Writes, all sent before any answer is read.
    let mut ids = Vec::new();
    for i in 0..N {
        let params = f.write_params(
            &root.join(format!("c{i}")),
            format!("content {i}").as_bytes(),
            &write,
        );
        ids.push(f.client.send_request("fs/writeFile", params).await);
    }
    for id in ids.drain(..) {
        f.client.await_answer(id).await.expect("write");
    }
    // Reads under a read-restricting policy (served by its own helpers), and denied reads
    // interleaved: each answer must be its own request's.
    for i in 0..N {
        let path = if i % 3 == 2 {
            f.outside.join("secret")
        } else {
            root.join(format!("c{i}"))
        };
        let params = json!({"path": file_uri(&path), "sandbox": read});
        ids.push(f.client.send_request("fs/readFile", params).await);
    }
    for (i, id) in ids.into_iter().enumerate() {
        let answer = f.client.await_answer(id).await;
        if i % 3 == 2 {
            let err = answer.unwrap_err();
            assert_eq!(err.0, INVALID_REQUEST, "read {i}: {err:?}");
        } else {
            let value = answer.unwrap_or_else(|e| panic!("read {i}: {e:?}"));
            assert_eq!(
                value["dataBase64"],
                b64(format!("content {i}").as_bytes()),
                "read {i}"
            );
        }
    }
    let helpers = helpers_of(f.server.pid());
    assert!(
        (2..=4).contains(&helpers.len()),
        "a small pool: one or two per policy, {helpers:?}"
    );
}

#[tokio::test]
async fn the_helpers_end_with_their_connection() {
    let mut f = Fixture::new().await;
    if !sandbox_works(&mut f).await {
        return;
    }
    let root = f.root();
    let params =
        json!({"path": file_uri(&root.join("inside.txt")), "sandbox": workspace_only_for(&root)});
    f.client.request_ok("fs/readFile", params).await;
    let server_pid = f.server.pid();
    let helpers = wait_for_helpers(server_pid, "two helpers", |h| h.len() == 2).await;

    // Another connection's helpers are its own.
    let mut other = f.server.connect().await;
    other.initialize().await;
    let params = f.write_params(
        &root.join("other.txt"),
        b"other",
        &workspace_write_for(&root),
    );
    other.request_ok("fs/writeFile", params).await;
    wait_for_helpers(server_pid, "three helpers", |h| h.len() == 3).await;

    let Fixture { client, .. } = f;
    client.close().await;
    for pid in &helpers {
        assert_process_exits(*pid, DEADLINE, "a helper of the closed connection").await;
    }
    let left = wait_for_helpers(server_pid, "only the other connection's helper", |h| {
        h.len() == 1
    })
    .await;
    assert!(left.iter().all(|p| !helpers.contains(p)), "{left:?}");
    other.close().await;
    wait_for_helpers(server_pid, "no helper left", |h| h.is_empty()).await;
}
