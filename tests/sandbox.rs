//! Escape and fail-closed regressions of the Linux sandbox (sandbox.md §9) through the real
//! server: `process/start` with a `sandbox` runs the command under `codex-linux-sandbox`; every
//! test then asserts the state of the file system or the network, next to a positive control
//! (something the same run was allowed to do did happen), so that no test can pass because the
//! command never ran. A few tests run `codex sandbox linux` directly, a few send `fs/*` calls
//! that only this file's layout reaches (split-grant server, symlinks, glob deny); the helper's
//! per-method escapes are in `fs_sandbox.rs`.
//!
//! Layout: each test has a base directory outside every writable root (`CARGO_TARGET_TMPDIR`, or
//! /var/tmp or $HOME when the checkout is under `/tmp`, which
//! the Codex CLI's workspace-write profile makes writable) holding `ws/`, the workspace root, and
//! `outside/`, a sibling no grant covers. Both carve-out layers of sandbox.md §4.3 are covered:
//! the default (a private mount namespace) and the split-grant fallback, forced with
//! `--sandbox-no-mount-namespace`.
//!
//! Kernel features: a test prints `skipped: <reason>` and returns when Landlock (or the ABI it
//! needs), seccomp or a mount namespace is missing; with `CODEX_TEST_REQUIRE_SANDBOX=1` (CI) it
//! fails instead. Nothing sleeps or polls: a process's end is its `process/closed`, a refused
//! connection is a listener with nothing to accept once the process has exited.

mod common;

use std::io::Read as _;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};
use test_case::test_case;

// ---------------------------------------------------------------------------------------------
// Kernel features: skip, or fail in CI

/// The running kernel's Landlock ABI (0: none).
fn landlock_abi() -> i64 {
    // SAFETY: with a null attr, size 0 and LANDLOCK_CREATE_RULESET_VERSION (1) the call only
    // returns the ABI version; no memory is read or written.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    v.max(0)
}

fn seccomp_available() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.contains("\nSeccomp:"))
}

/// Why this kernel cannot run a test that needs Landlock ABI `min_abi`, if it cannot.
fn missing_feature(min_abi: i64) -> Option<String> {
    let abi = landlock_abi();
    if abi < min_abi {
        return Some(format!(
            "the kernel has Landlock ABI {abi}, this test needs {min_abi}"
        ));
    }
    if !seccomp_available() {
        return Some("the kernel has no seccomp".into());
    }
    None
}

/// Prints `skipped: <reason>`, or fails when `CODEX_TEST_REQUIRE_SANDBOX=1`.
fn skip(reason: &str) {
    if std::env::var("CODEX_TEST_REQUIRE_SANDBOX").as_deref() == Ok("1") {
        panic!("CODEX_TEST_REQUIRE_SANDBOX=1, but {reason}");
    }
    println!("skipped: {reason}");
}

/// Prints `skipped: <reason>` even in CI: for an escape that cannot exist on this machine (no
/// IPv6 loopback, no IA32 emulation), which is no missing sandbox feature.
fn not_applicable(reason: &str) {
    println!("skipped: {reason}");
}

/// Returns from the test (after [`skip`]) unless Landlock (at least ABI `$abi`, default 1) and
/// seccomp are there.
macro_rules! require_sandbox {
    () => {
        require_sandbox!(1)
    };
    ($abi:expr) => {
        if let Some(reason) = missing_feature($abi) {
            skip(&reason);
            return;
        }
    };
}

/// Why the wrapper cannot have a private mount namespace here (the default carve-out layer), if
/// it cannot: judged by behaviour, not by a message. Under `codex sandbox linux` a workspace with
/// a `.git` gets a new top-level file only with the mount layer (the split layer's cost).
async fn mount_layer_missing() -> Option<String> {
    let dir = TestDir::new_in(&outside_writable_roots());
    std::fs::create_dir(dir.join(".git")).unwrap();
    let out = cli(
        &["--workspace-write", dir.path().to_str().unwrap()],
        &["/bin/sh", "-c", "echo probe > probe.txt"],
        dir.path(),
    )
    .await;
    if exists(&dir.join("probe.txt")) {
        return None;
    }
    Some(format!(
        "no mount namespace for the wrapper (a top-level file could not be created): {}",
        String::from_utf8_lossy(&out.stderr)
    ))
}

macro_rules! require_mount_layer {
    () => {
        if let Some(reason) = mount_layer_missing().await {
            skip(&reason);
            return;
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Fixture: base/{ws,outside} outside every writable root

/// A directory for fixtures that no workspace-write grant covers (not under /tmp or $TMPDIR):
/// the target's tmp dir, or, when the checkout itself lives under /tmp, /var/tmp or $HOME.
fn outside_writable_roots() -> PathBuf {
    let writable: Vec<PathBuf> = [std::env::temp_dir(), PathBuf::from("/tmp")]
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    let candidates = [
        Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR"))),
        Some(PathBuf::from("/var/tmp/codex-sandbox-tests")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/codex-sandbox-tests")),
    ];
    for candidate in candidates.into_iter().flatten() {
        if std::fs::create_dir_all(&candidate).is_err() {
            continue;
        }
        let Ok(canonical) = std::fs::canonicalize(&candidate) else {
            continue;
        };
        if !writable.iter().any(|w| canonical.starts_with(w)) {
            return canonical;
        }
    }
    panic!("no directory outside /tmp and $TMPDIR for sandbox fixtures");
}

struct Fixture {
    /// Removes everything on drop.
    _dir: TestDir,
    /// Canonical base directory.
    base: PathBuf,
    /// The workspace root (canonical).
    ws: PathBuf,
    /// A sibling of the workspace that no grant covers (canonical).
    outside: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let base_dir = outside_writable_roots();
        let dir = TestDir::new_in(&base_dir);
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let ws = base.join("ws");
        let outside = base.join("outside");
        std::fs::create_dir(&ws).unwrap();
        std::fs::create_dir(&outside).unwrap();
        Fixture {
            _dir: dir,
            base,
            ws,
            outside,
        }
    }

    fn ws(&self, rel: &str) -> PathBuf {
        self.ws.join(rel)
    }

    fn out(&self, rel: &str) -> PathBuf {
        self.outside.join(rel)
    }

    /// Writes `content` to `ws/rel`, creating parent directories.
    fn put_ws(&self, rel: &str, content: &str) -> PathBuf {
        put(&self.ws(rel), content)
    }

    fn put_out(&self, rel: &str, content: &str) -> PathBuf {
        put(&self.out(rel), content)
    }

    fn mkdir_ws(&self, rel: &str) -> PathBuf {
        let p = self.ws(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

fn put(path: &Path, content: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    path.to_path_buf()
}

/// The file's content, or `<missing>`.
fn content(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|_| "<missing>".into())
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Sandbox intents

fn special(kind: &str) -> Value {
    json!({"type": "special", "value": {"kind": kind}})
}

fn special_sub(kind: &str, subpath: &str) -> Value {
    json!({"type": "special", "value": {"kind": kind, "subpath": subpath}})
}

fn uris(roots: &[&Path]) -> Vec<String> {
    roots.iter().map(|r| file_uri(r)).collect()
}

/// The Codex CLI 0.169.0 workspace-write intent (src/cli/sandbox.rs `workspace_write_intent`).
fn workspace_write(roots: &[&Path]) -> Value {
    let protected = |name: &str| {
        json!({"path": special_sub("project_roots", name), "access": "read",
               "missing_path_behavior": "skip"})
    };
    json!({
        "permissions": {"type": "managed", "network": "restricted", "file_system": {
            "type": "restricted", "entries": [
                {"path": special("root"), "access": "read"},
                {"path": special("project_roots"), "access": "write"},
                {"path": special("slash_tmp"), "access": "write"},
                {"path": special("tmpdir"), "access": "write"},
                protected(".git"), protected(".agents"), protected(".codex"), protected(".aws"),
            ]}},
        "windowsSandboxLevel": "disabled",
        "workspaceRoots": uris(roots),
    })
}

/// The Codex CLI 0.169.0 read-only intent.
fn read_only() -> Value {
    json!({
        "permissions": {"type": "managed", "network": "restricted", "file_system": {
            "type": "restricted", "entries": [{"path": special("root"), "access": "read"}]}},
        "windowsSandboxLevel": "disabled",
    })
}

/// A managed, restricted-file-system intent with `entries`.
fn restricted(entries: Value, network: &str, roots: &[&Path]) -> Value {
    json!({
        "permissions": {"type": "managed", "network": network,
                        "file_system": {"type": "restricted", "entries": entries}},
        "windowsSandboxLevel": "disabled",
        "workspaceRoots": uris(roots),
    })
}

// ---------------------------------------------------------------------------------------------
// Running

/// The two carve-out layers of sandbox.md §4.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    /// Default: read-only bind mounts in a private mount namespace.
    Mount,
    /// `--sandbox-no-mount-namespace`: split Landlock grants.
    Split,
}

impl Layer {
    fn flags(self) -> &'static [&'static str] {
        match self {
            Layer::Mount => &[],
            Layer::Split => &["--sandbox-no-mount-namespace"],
        }
    }

    /// What a write under a carve-out fails with.
    fn carve_out_error(self) -> &'static str {
        match self {
            Layer::Mount => "Read-only file system",
            Layer::Split => "Permission denied",
        }
    }
}

async fn start(flags: &[&str]) -> (Server, Client) {
    let server = Server::start(flags).await;
    let mut client = server.connect().await;
    client.initialize().await;
    (server, client)
}

/// The end of one process.
#[derive(Debug)]
struct Run {
    code: i64,
    /// stdout and stderr, in seq order.
    out: String,
    denied: bool,
}

impl Run {
    fn has(&self, needle: &str) -> bool {
        self.out.contains(needle)
    }

    #[track_caller]
    fn assert_has(&self, needle: &str) {
        assert!(
            self.has(needle),
            "expected {needle:?} in the output: {self:?}"
        );
    }

    #[track_caller]
    fn assert_lacks(&self, needle: &str) {
        assert!(
            !self.has(needle),
            "unexpected {needle:?} in the output: {self:?}"
        );
    }
}

/// `process/start` params: `argv` in `cwd` under `sandbox` (may be null).
fn params_in(id: &str, cwd: &Path, argv: &[&str], sandbox: Value) -> Value {
    let mut p = process_params(id, argv);
    p["cwd"] = json!(file_uri(cwd));
    p["sandbox"] = sandbox;
    p
}

/// Starts `params`, waits for `process/closed`, returns the exit.
async fn run_params(c: &mut Client, params: Value) -> Run {
    let id = params["processId"].as_str().unwrap().to_string();
    let sandboxed = !params["sandbox"].is_null();
    let started = c.start_process(params).await;
    if sandboxed {
        assert_eq!(
            started["sandboxType"], "linuxSeccomp",
            "a non-null sandbox: {started}"
        );
    }
    let events = c.collect_process_events(&id).await;
    let exited = events
        .iter()
        .find(|e| e["method"] == "process/exited")
        .unwrap();
    Run {
        code: exit_code(&events),
        out: output_text(&events, None),
        denied: exited["params"]["sandboxDenied"]
            .as_bool()
            .unwrap_or_else(|| panic!("sandboxDenied is a bool: {exited}")),
    }
}

async fn sh_in(c: &mut Client, id: &str, cwd: &Path, script: &str, sandbox: Value) -> Run {
    run_params(c, params_in(id, cwd, &["/bin/sh", "-c", script], sandbox)).await
}

/// A Python 3 interpreter (not a pyenv shim: it starts faster and needs no environment).
fn python() -> &'static str {
    ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("python3")
}

/// Prepended to every Python script: `attempt(name, f)` prints `name ok` or `name err ERRNO`.
const PY_PRELUDE: &str = r#"
import ctypes, errno, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, f):
    try:
        f()
        print(name, "ok", flush=True)
    except OSError as e:
        print(name, "err", errno.errorcode.get(e.errno, e.errno), flush=True)
def raw(name, rc):
    if rc < 0:
        print(name, "err", errno.errorcode.get(ctypes.get_errno(), ctypes.get_errno()), flush=True)
    else:
        print(name, "ok", flush=True)
def tcp(family, host, port):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect((host, port))
    s.sendall(b"hello")
    s.close()
"#;

async fn py_in(c: &mut Client, id: &str, cwd: &Path, code: &str, sandbox: Value) -> Run {
    let script = format!("{PY_PRELUDE}\n{code}\n");
    run_params(c, params_in(id, cwd, &[python(), "-c", &script], sandbox)).await
}

/// Fails unless the server is still up and serving this connection.
async fn assert_server_alive(server: &mut Server, c: &mut Client, id: &str) {
    server.assert_running();
    let run = run_params(c, sh(id, "echo alive")).await;
    assert_eq!(run.out, "alive\n", "{run:?}");
}

/// Nothing connected to `listener` (the connecting process has already exited, so a connect
/// that got through would be waiting in the backlog).
#[track_caller]
fn assert_no_connection(listener: &TcpListener) {
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the sandboxed process connected: {other:?}"),
    }
}

/// `codex sandbox linux ARGS -- CMD` in `cwd`, under the deadline.
async fn cli(args: &[&str], cmd: &[&str], cwd: &Path) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_codex"));
    command
        .args(["sandbox", "linux"])
        .args(args)
        .arg("--")
        .args(cmd)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("codex sandbox linux did not finish within the deadline")
        .expect("run codex sandbox linux")
}

// ---------------------------------------------------------------------------------------------
// Writes outside the writable roots

#[tokio::test]
async fn write_outside_every_writable_root_is_denied_and_creates_nothing() {
    require_sandbox!();
    let f = Fixture::new();
    let tmp = TestDir::new(); // under /tmp: writable in the workspace-write profile
    let (_server, mut c) = start(&[]).await;
    let script = format!(
        "echo x > {out}; echo x > {base}/beside; mkdir {out}.d; echo in > inside.txt; echo t > {tmp}/t.txt",
        out = s(&f.out("marker")),
        base = s(&f.base),
        tmp = s(tmp.path()),
    );
    let run = sh_in(&mut c, "p", &f.ws, &script, workspace_write(&[&f.ws])).await;
    assert!(!exists(&f.out("marker")), "{run:?}");
    assert!(!exists(&f.base.join("beside")), "{run:?}");
    assert!(!exists(&f.out("marker.d")), "{run:?}");
    run.assert_has("Permission denied");
    // Positive controls: the workspace and /tmp are writable.
    assert_eq!(content(&f.ws("inside.txt")), "in\n", "{run:?}");
    assert_eq!(content(&tmp.join("t.txt")), "t\n", "{run:?}");
}

#[tokio::test]
async fn dot_dot_path_out_of_a_subdirectory_creates_nothing_outside() {
    require_sandbox!();
    let f = Fixture::new();
    f.mkdir_ws("sub");
    let (_server, mut c) = start(&[]).await;
    let script = "echo x > sub/../../outside/x; echo y > sub/../inside.txt; echo z > sub/z.txt";
    let run = sh_in(&mut c, "p", &f.ws, script, workspace_write(&[&f.ws])).await;
    assert!(!exists(&f.out("x")), "{run:?}");
    run.assert_has("Permission denied");
    assert_eq!(content(&f.ws("inside.txt")), "y\n", "{run:?}");
    assert_eq!(content(&f.ws("sub/z.txt")), "z\n", "{run:?}");
}

#[tokio::test]
async fn symlink_in_workspace_to_outside_grants_no_write() {
    require_sandbox!();
    let f = Fixture::new();
    f.put_out("existing.txt", "original\n");
    symlink(&f.outside, f.ws("link")).unwrap();
    symlink(f.out("existing.txt"), f.ws("filelink")).unwrap();
    let (_server, mut c) = start(&[]).await;
    let script = "echo x > link/new.txt; echo x > link/existing.txt; echo x > filelink; \
                  echo ok > inside.txt";
    let run = sh_in(&mut c, "p", &f.ws, script, workspace_write(&[&f.ws])).await;
    assert!(!exists(&f.out("new.txt")), "{run:?}");
    assert_eq!(content(&f.out("existing.txt")), "original\n", "{run:?}");
    run.assert_has("Permission denied");
    assert_eq!(content(&f.ws("inside.txt")), "ok\n", "{run:?}");
}

#[tokio::test]
async fn symlink_then_dot_dot_in_workspace_cannot_reach_outside() {
    require_sandbox!();
    let f = Fixture::new();
    std::fs::create_dir(f.out("deep")).unwrap();
    f.put_out("secret", "original\n");
    symlink(f.out("deep"), f.ws("link")).unwrap();
    let (_server, mut c) = start(&[]).await;
    // `link/..` is the parent of the link's target (outside/), not the workspace.
    let script = "echo x > link/../secret; echo x > link/../new; echo ok > inside.txt";
    let run = sh_in(&mut c, "p", &f.ws, script, workspace_write(&[&f.ws])).await;
    assert_eq!(content(&f.out("secret")), "original\n", "{run:?}");
    assert!(!exists(&f.out("new")), "{run:?}");
    assert!(!exists(&f.ws("new")), "{run:?}");
    assert_eq!(content(&f.ws("inside.txt")), "ok\n", "{run:?}");
}

#[tokio::test]
async fn truncate_of_a_file_outside_fails() {
    require_sandbox!();
    let f = Fixture::new();
    f.put_out("secret", "original\n");
    f.put_ws("own.txt", "mine\n");
    let (_server, mut c) = start(&[]).await;
    let script = format!(
        "truncate -s0 {} && echo truncated-outside; truncate -s0 own.txt && echo truncated-own",
        s(&f.out("secret"))
    );
    let run = sh_in(&mut c, "p", &f.ws, &script, workspace_write(&[&f.ws])).await;
    assert_eq!(content(&f.out("secret")), "original\n", "{run:?}");
    run.assert_lacks("truncated-outside");
    run.assert_has("truncated-own");
    assert_eq!(content(&f.ws("own.txt")), "", "{run:?}");
}

#[tokio::test]
async fn hard_link_of_a_file_outside_into_the_workspace_fails() {
    require_sandbox!();
    let f = Fixture::new();
    f.put_out("secret", "original\n");
    f.put_ws("own.txt", "mine\n");
    let (_server, mut c) = start(&[]).await;
    let script = format!(
        "ln /etc/hostname hl && echo linked-etc; ln {} hl2 && echo linked-outside; \
         ln own.txt own2.txt && echo linked-own",
        s(&f.out("secret"))
    );
    let run = sh_in(&mut c, "p", &f.ws, &script, workspace_write(&[&f.ws])).await;
    assert!(!exists(&f.ws("hl")), "{run:?}");
    assert!(!exists(&f.ws("hl2")), "{run:?}");
    run.assert_lacks("linked-etc");
    run.assert_lacks("linked-outside");
    // Landlock refuses a link that would give a file more rights than where it comes from with
    // EXDEV (ABI 1 refuses every link across directories the same way): both links.
    assert_eq!(
        run.out.matches("Invalid cross-device link").count(),
        2,
        "{run:?}"
    );
    // Positive control: a hard link inside the workspace.
    run.assert_has("linked-own");
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(
        std::fs::metadata(f.ws("own.txt")).unwrap().ino(),
        std::fs::metadata(f.ws("own2.txt")).unwrap().ino()
    );
}

#[tokio::test]
async fn write_through_proc_self_fd_of_a_read_only_descriptor_is_denied() {
    require_sandbox!();
    let f = Fixture::new();
    f.put_out("secret", "original\n");
    f.put_ws("own.txt", "mine\n");
    let (_server, mut c) = start(&[]).await;
    let script = format!(
        "exec 3< {}; echo pwned > /proc/self/fd/3 && echo wrote-outside; \
         exec 4< own.txt; echo new > /proc/self/fd/4 && echo wrote-own",
        s(&f.out("secret"))
    );
    let run = sh_in(&mut c, "p", &f.ws, &script, workspace_write(&[&f.ws])).await;
    assert_eq!(content(&f.out("secret")), "original\n", "{run:?}");
    run.assert_lacks("wrote-outside");
    run.assert_has("wrote-own");
    assert_eq!(content(&f.ws("own.txt")), "new\n", "{run:?}");
}

#[tokio::test]
async fn proc_root_of_the_server_gives_no_write_outside() {
    require_sandbox!();
    let f = Fixture::new();
    let (mut server, mut c) = start(&[]).await;
    let target = format!("/proc/{}/root{}", server.pid(), s(&f.out("via-proc-root")));
    let code = format!(
        "attempt('proc-root', lambda: open({target:?}, 'w').write('x'))\n\
         open('ran.txt', 'w').write('ran')"
    );
    let run = py_in(&mut c, "p", &f.ws, &code, workspace_write(&[&f.ws])).await;
    assert!(!exists(&f.out("via-proc-root")), "{run:?}");
    run.assert_has("proc-root err");
    assert_eq!(content(&f.ws("ran.txt")), "ran", "{run:?}");
    assert_server_alive(&mut server, &mut c, "alive").await;
}

#[tokio::test]
async fn proc_mem_of_the_server_cannot_be_opened() {
    require_sandbox!();
    let f = Fixture::new();
    let (mut server, mut c) = start(&[]).await;
    let code = format!(
        "attempt('mem-write', lambda: open('/proc/{pid}/mem', 'r+b', buffering=0))\n\
         attempt('mem-read', lambda: open('/proc/{pid}/mem', 'rb', buffering=0))\n\
         attempt('own-mem-read', lambda: open('/proc/self/mem', 'rb', buffering=0))\n\
         open('ran.txt', 'w').write('ran')",
        pid = server.pid()
    );
    let run = py_in(&mut c, "p", &f.ws, &code, workspace_write(&[&f.ws])).await;
    run.assert_has("mem-write err");
    // Not even reading the server's memory (Landlock's ptrace restriction).
    run.assert_has("mem-read err");
    // Positive control: its own memory is readable (/proc is granted READ).
    run.assert_has("own-mem-read ok");
    assert_eq!(content(&f.ws("ran.txt")), "ran", "{run:?}");
    assert_server_alive(&mut server, &mut c, "alive").await;
}

// ---------------------------------------------------------------------------------------------
// Protected names (.git, .codex, .agents, .aws), both carve-out layers

/// A file under a protected name: neither overwritten nor appended to, nothing added beside
/// it; the workspace around it stays writable.
#[test_case(Layer::Mount, ".git/config" ; "git config with mount layer")]
#[test_case(Layer::Split, ".git/config" ; "git config with split grant layer")]
#[test_case(Layer::Mount, ".codex/config.toml" ; "codex config toml with mount layer")]
#[test_case(Layer::Split, ".codex/config.toml" ; "codex config toml with split grant layer")]
#[test_case(Layer::Mount, ".agents/x" ; "agents file with mount layer")]
#[test_case(Layer::Split, ".agents/x" ; "agents file with split grant layer")]
#[test_case(Layer::Mount, ".aws/config" ; "aws config with mount layer")]
#[test_case(Layer::Split, ".aws/config" ; "aws config with split grant layer")]
#[tokio::test]
async fn protected_file_stays_unchanged(layer: Layer, rel: &str) {
    require_sandbox!();
    if layer == Layer::Mount {
        require_mount_layer!();
    }
    let f = Fixture::new();
    f.put_ws(rel, "original\n");
    f.put_ws("notes.txt", "old\n");
    f.mkdir_ws("src");
    let dir = Path::new(rel).parent().unwrap().to_str().unwrap();
    let (_server, mut c) = start(layer.flags()).await;
    let script = format!(
        "echo pwned > {rel} && echo wrote-protected; echo pwned >> {rel} && echo appended; \
         echo x > {dir}/added && echo wrote-added; echo new > notes.txt; echo fresh > src/fresh.txt"
    );
    let run = sh_in(&mut c, "p", &f.ws, &script, workspace_write(&[&f.ws])).await;
    assert_eq!(content(&f.ws(rel)), "original\n", "{layer:?}: {run:?}");
    assert!(
        !exists(&f.ws(&format!("{dir}/added"))),
        "{layer:?}: {run:?}"
    );
    run.assert_lacks("wrote-");
    run.assert_lacks("appended");
    run.assert_has(layer.carve_out_error());
    // Positive controls: an existing sibling file and a new file in a subdirectory.
    assert_eq!(content(&f.ws("notes.txt")), "new\n", "{layer:?}: {run:?}");
    assert_eq!(
        content(&f.ws("src/fresh.txt")),
        "fresh\n",
        "{layer:?}: {run:?}"
    );
}

/// An attack on the `.git` directory.
#[derive(Debug, Clone, Copy)]
enum GitDirAttack {
    MoveAway,
    Remove,
    ReplaceWithAnother,
    CreateHook,
}

impl GitDirAttack {
    /// The shell snippet; it says `attack-succeeded` if a step got through.
    fn script(self) -> &'static str {
        match self {
            GitDirAttack::MoveAway => "mv .git x && echo attack-succeeded",
            GitDirAttack::Remove => "rm -rf .git && echo attack-succeeded",
            GitDirAttack::ReplaceWithAnother => {
                "mv evil .git && echo attack-succeeded; mv -T evil .git && echo attack-succeeded"
            }
            GitDirAttack::CreateHook => {
                "echo evil > .git/hooks/pre-commit && echo attack-succeeded"
            }
        }
    }

    /// What the attack would have left behind, beyond the common checks.
    fn check(self, f: &Fixture, run: &Run) {
        match self {
            GitDirAttack::MoveAway => assert!(!exists(&f.ws("x")), "{run:?}"),
            GitDirAttack::Remove => {}
            GitDirAttack::ReplaceWithAnother => assert!(!exists(&f.ws(".git/evil")), "{run:?}"),
            GitDirAttack::CreateHook => {
                assert!(!exists(&f.ws(".git/hooks/pre-commit")), "{run:?}")
            }
        }
    }
}

/// An attack on `.git`, then: `.git` is still the same directory with the same config and hooks
/// dir, and a rename the layer allows did happen.
#[test_case(GitDirAttack::MoveAway, Layer::Mount ; "moving it away with mount layer")]
#[test_case(GitDirAttack::MoveAway, Layer::Split ; "moving it away with split grant layer")]
#[test_case(GitDirAttack::Remove, Layer::Mount ; "removing it with mount layer")]
#[test_case(GitDirAttack::Remove, Layer::Split ; "removing it with split grant layer")]
#[test_case(GitDirAttack::ReplaceWithAnother, Layer::Mount ; "replacing it with another with mount layer")]
#[test_case(GitDirAttack::ReplaceWithAnother, Layer::Split ; "replacing it with another with split grant layer")]
#[test_case(GitDirAttack::CreateHook, Layer::Mount ; "creating a hook with mount layer")]
#[test_case(GitDirAttack::CreateHook, Layer::Split ; "creating a hook with split grant layer")]
#[tokio::test]
async fn git_dir_attack_is_denied(attack: GitDirAttack, layer: Layer) {
    require_sandbox!();
    if layer == Layer::Mount {
        require_mount_layer!();
    }
    let f = Fixture::new();
    f.put_ws(".git/config", "original\n");
    f.mkdir_ws(".git/hooks");
    f.put_ws("evil/config", "evil\n");
    f.put_ws("top.txt", "top\n");
    f.put_ws("src/a.txt", "a\n");
    let (_server, mut c) = start(layer.flags()).await;
    // The split layer cannot rename entries directly in the (pass-through) root.
    let control = match layer {
        Layer::Mount => "mv top.txt top2.txt && echo renamed",
        Layer::Split => "mv src/a.txt src/b.txt && echo renamed",
    };
    let script = format!("{}; {control}", attack.script());
    let run = sh_in(&mut c, "p", &f.ws, &script, workspace_write(&[&f.ws])).await;
    let meta = std::fs::symlink_metadata(f.ws(".git")).expect(".git still exists");
    assert!(meta.is_dir(), ".git is still a directory: {run:?}");
    assert_eq!(
        content(&f.ws(".git/config")),
        "original\n",
        "{layer:?}: {run:?}"
    );
    assert!(f.ws(".git/hooks").is_dir(), "{layer:?}: {run:?}");
    run.assert_lacks("attack-succeeded");
    attack.check(&f, &run);
    run.assert_has("renamed");
    match layer {
        Layer::Mount => assert_eq!(content(&f.ws("top2.txt")), "top\n", "{run:?}"),
        Layer::Split => assert_eq!(content(&f.ws("src/b.txt")), "a\n", "{run:?}"),
    }
}

#[tokio::test]
async fn gitdir_target_of_a_git_file_is_read_only() {
    require_sandbox!();
    let f = Fixture::new();
    // A worktree-style `.git` file pointing at the real git directory inside the workspace.
    f.put_ws(".git", "gitdir: gitstore\n");
    f.put_ws("gitstore/config", "original\n");
    f.put_ws("notes.txt", "old\n");
    let (_server, mut c) = start(&[]).await;
    let script = "echo pwned > gitstore/config && echo attack-succeeded; \
                  echo pwned > .git && echo attack-succeeded; echo new > notes.txt";
    let run = sh_in(&mut c, "p", &f.ws, script, workspace_write(&[&f.ws])).await;
    assert_eq!(content(&f.ws("gitstore/config")), "original\n", "{run:?}");
    assert_eq!(content(&f.ws(".git")), "gitdir: gitstore\n", "{run:?}");
    run.assert_lacks("attack-succeeded");
    assert_eq!(content(&f.ws("notes.txt")), "new\n", "{run:?}");
}

/// `.codex` is a symlink to a writable decoy: the start is refused with -32602 naming the reason
/// and nothing is written, while the same command with a real `.codex` directory runs.
#[test_case(Layer::Mount ; "with mount layer")]
#[test_case(Layer::Split ; "with split grant layer")]
#[tokio::test]
async fn codex_symlink_to_writable_decoy_refuses_the_run(layer: Layer) {
    require_sandbox!();
    let f = Fixture::new();
    let (_server, mut c) = start(layer.flags()).await;
    // src/: the split layer cannot create files directly in the workspace root.
    let script = "echo pwned > .codex/config.toml; echo ran > src/ran.txt";

    // Control: a real `.codex` directory; the command runs, the carve-out holds.
    let control = f.base.join("control");
    std::fs::create_dir_all(control.join(".codex")).unwrap();
    std::fs::create_dir_all(control.join("src")).unwrap();
    let run = sh_in(
        &mut c,
        "control",
        &control,
        script,
        workspace_write(&[&control]),
    )
    .await;
    assert_eq!(content(&control.join("src/ran.txt")), "ran\n", "{run:?}");
    assert!(!exists(&control.join(".codex/config.toml")), "{run:?}");

    std::fs::create_dir(f.ws("decoy")).unwrap();
    std::fs::create_dir(f.ws("src")).unwrap();
    symlink("decoy", f.ws(".codex")).unwrap();
    let params = params_in(
        "p",
        &f.ws,
        &["/bin/sh", "-c", script],
        workspace_write(&[&f.ws]),
    );
    // Refused before anything runs (sandbox.md: "refuse the run"), naming the path and the link.
    let (code, message) = c.request_err("process/start", params).await;
    assert_eq!(code, INVALID_PARAMS, "{message}");
    let codex = f.ws(".codex");
    assert!(
        message.contains(&format!(
            "cannot enforce sandbox read-only path {} because it crosses writable symlink {}",
            codex.display(),
            codex.display()
        )),
        "the refusal names the reason: {message}"
    );
    assert!(
        !exists(&f.ws("decoy/config.toml")),
        "nothing written in the decoy"
    );
    assert!(!exists(&f.ws("src/ran.txt")), "the command did not run");
}

#[tokio::test]
async fn unmounting_the_carve_out_is_denied_even_from_a_new_user_namespace() {
    require_sandbox!();
    require_mount_layer!();
    let f = Fixture::new();
    f.put_ws(".git/config", "original\n");
    f.put_ws("notes.txt", "old\n");
    let (_server, mut c) = start(&[]).await;
    // Landlock forbids a confined process to (un)mount; a user namespace would give it
    // capabilities there, but its uid_map cannot even be written (/proc is read-only).
    let script = "umount .git && echo unmounted; umount -l .git && echo unmounted; \
                  unshare -rm sh -c 'umount .git && echo unmounted; echo pwned > .git/config'; \
                  echo pwned > .git/config && echo attack-succeeded; echo new > notes.txt";
    let run = sh_in(&mut c, "p", &f.ws, script, workspace_write(&[&f.ws])).await;
    run.assert_lacks("unmounted");
    run.assert_lacks("attack-succeeded");
    assert_eq!(content(&f.ws(".git/config")), "original\n", "{run:?}");
    assert_eq!(content(&f.ws("notes.txt")), "new\n", "{run:?}");
}

#[tokio::test]
async fn new_top_level_file_fails_with_eacces_under_split_grant_layer() {
    require_sandbox!();
    let f = Fixture::new();
    f.put_ws(".git/config", "original\n");
    f.mkdir_ws("src");
    let (_server, mut c) = start(Layer::Split.flags()).await;
    let script = "echo n > newtop && echo created-top; echo s > src/new && echo created-sub";
    let run = sh_in(&mut c, "p", &f.ws, script, workspace_write(&[&f.ws])).await;
    // The documented cost of pass-through directories (sandbox.md §4.3).
    assert!(!exists(&f.ws("newtop")), "{run:?}");
    run.assert_lacks("created-top");
    run.assert_has("Permission denied");
    run.assert_has("created-sub");
    assert_eq!(content(&f.ws("src/new")), "s\n", "{run:?}");
}

#[tokio::test]
async fn new_top_level_file_is_created_under_mount_layer() {
    require_sandbox!();
    require_mount_layer!();
    let f = Fixture::new();
    f.put_ws(".git/config", "original\n");
    let (_server, mut c) = start(&[]).await;
    let script = "echo n > newtop && echo created-top; echo x > .git/config";
    let run = sh_in(&mut c, "p", &f.ws, script, workspace_write(&[&f.ws])).await;
    run.assert_has("created-top");
    assert_eq!(content(&f.ws("newtop")), "n\n", "{run:?}");
    // The carve-out still holds.
    assert_eq!(content(&f.ws(".git/config")), "original\n", "{run:?}");
    run.assert_has("Read-only file system");
}

// ---------------------------------------------------------------------------------------------
// File descriptors

/// A descriptor the server's parent leaked to it (opened without close-on-exec) stays with the
/// server: no child gets it, sandboxed or not.
#[tokio::test]
async fn child_inherits_no_descriptor_the_server_inherited_sandboxed_or_not() {
    require_sandbox!();
    let f = Fixture::new();
    f.put_out("leak.txt", "original\n");
    // The server inherits a read-write descriptor on a file outside the workspace.
    let leak = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.out("leak.txt"))
        .unwrap();
    let fd = leak.as_raw_fd();
    let server = Server::start_with(ServerOptions {
        inherited_fds: vec![fd],
        ..ServerOptions::default()
    })
    .await;
    let mut c = server.connect().await;
    c.initialize().await;

    // Control: the server itself did inherit it.
    let held = std::fs::read_link(format!("/proc/{}/fd/{fd}", server.pid()))
        .expect("the server holds the inherited descriptor");
    assert_eq!(held, f.out("leak.txt"));

    let code = format!(
        "live = []\n\
         for name in os.listdir('/proc/self/fd'):\n\
         \x20   try:\n\
         \x20       os.fstat(int(name)); live.append(int(name))\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         print('fds', sorted(live), flush=True)\n\
         attempt('leaked-write', lambda: os.write({fd}, b'pwned'))\n\
         open('ran.txt', 'w').write('ran')"
    );
    for (name, sandbox) in [
        ("unsandboxed", Value::Null),
        ("sandboxed", workspace_write(&[&f.ws])),
    ] {
        let _ = std::fs::remove_file(f.ws("ran.txt"));
        let run = py_in(&mut c, name, &f.ws, &code, sandbox).await;
        run.assert_has("fds [0, 1, 2]\n");
        run.assert_has("leaked-write err EBADF");
        assert_eq!(content(&f.out("leak.txt")), "original\n", "{name}: {run:?}");
        assert_eq!(content(&f.ws("ran.txt")), "ran", "{name}: {run:?}");
    }
    drop(leak);
}

// ---------------------------------------------------------------------------------------------
// Network, restricted mode (seccomp)

#[tokio::test]
async fn tcp_loopback_ipv4_connect_is_denied_under_restricted_network() {
    require_sandbox!();
    let f = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_server, mut c) = start(&[]).await;
    let code = format!(
        "attempt('tcp4', lambda: tcp(socket.AF_INET, '127.0.0.1', {port}))\n\
         open('ran.txt', 'w').write('ran')"
    );
    let run = py_in(&mut c, "p", &f.ws, &code, workspace_write(&[&f.ws])).await;
    run.assert_has("tcp4 err EPERM");
    assert_no_connection(&listener);
    assert_eq!(content(&f.ws("ran.txt")), "ran", "{run:?}");
}

#[tokio::test]
async fn tcp_loopback_ipv6_connect_is_denied_under_restricted_network() {
    require_sandbox!();
    let Ok(listener) = TcpListener::bind("[::1]:0") else {
        not_applicable("no IPv6 loopback here");
        return;
    };
    let f = Fixture::new();
    let port = listener.local_addr().unwrap().port();
    let (_server, mut c) = start(&[]).await;
    let code = format!(
        "attempt('tcp6', lambda: tcp(socket.AF_INET6, '::1', {port}))\n\
         open('ran.txt', 'w').write('ran')"
    );
    let run = py_in(&mut c, "p", &f.ws, &code, workspace_write(&[&f.ws])).await;
    run.assert_has("tcp6 err EPERM");
    assert_no_connection(&listener);
    assert_eq!(content(&f.ws("ran.txt")), "ran", "{run:?}");
}

#[tokio::test]
async fn udp_socket_is_denied_under_restricted_network() {
    require_sandbox!();
    let f = Fixture::new();
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = receiver.local_addr().unwrap().port();
    let (_server, mut c) = start(&[]).await;
    let code = format!(
        "attempt('udp', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\
         .sendto(b'x', ('127.0.0.1', {port})))\n\
         open('ran.txt', 'w').write('ran')"
    );
    let run = py_in(&mut c, "p", &f.ws, &code, workspace_write(&[&f.ws])).await;
    run.assert_has("udp err EPERM");
    receiver.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        receiver.recv(&mut buf).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "no datagram arrived"
    );
    assert_eq!(content(&f.ws("ran.txt")), "ran", "{run:?}");
}

#[tokio::test]
async fn netlink_socket_is_denied_under_restricted_network() {
    require_sandbox!();
    let f = Fixture::new();
    let (_server, mut c) = start(&[]).await;
    let code = "attempt('netlink', lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))\n\
                attempt('unix', lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))\n\
                open('ran.txt', 'w').write('ran')";
    let run = py_in(&mut c, "p", &f.ws, code, workspace_write(&[&f.ws])).await;
    run.assert_has("netlink err EPERM");
    run.assert_has("unix ok");
    assert_eq!(content(&f.ws("ran.txt")), "ran", "{run:?}");
}

#[tokio::test]
async fn vsock_socket_is_denied_under_restricted_network() {
    require_sandbox!();
    let f = Fixture::new();
    let (_server, mut c) = start(&[]).await;
    let code = "attempt('vsock', lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM))\n\
                open('ran.txt', 'w').write('ran')";
    let run = py_in(&mut c, "p", &f.ws, code, workspace_write(&[&f.ws])).await;
    run.assert_has("vsock err EPERM");
    assert_eq!(content(&f.ws("ran.txt")), "ran", "{run:?}");
}

#[tokio::test]
async fn unix_socket_connect_is_denied_under_restricted_network() {
    require_sandbox!();
    let f = Fixture::new();
    let path = f.out("s.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (_server, mut c) = start(&[]).await;
    let code = format!(
        "attempt('unix-connect', lambda: socket.socket(socket.AF_UNIX).connect({:?}))\n\
         open('ran.txt', 'w').write('ran')",
        s(&path)
    );
    let run = py_in(&mut c, "p", &f.ws, &code, workspace_write(&[&f.ws])).await;
    run.assert_has("unix-connect err EPERM");
    listener.set_nonblocking(true).unwrap();
    assert_eq!(
        listener.accept().map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "nothing connected"
    );
    assert_eq!(content(&f.ws("ran.txt")), "ran", "{run:?}");
}

#[tokio::test]
async fn unix_socketpair_works_under_restricted_network() {
    require_sandbox!();
    let f = Fixture::new();
    let (_server, mut c) = start(&[]).await;
    // send() is sendto(2), denied in restricted mode; write()/read() on the pair are not.
    let code = "a, b = socket.socketpair()\n\
                os.write(a.fileno(), b'ping')\n\
                print('got', os.read(b.fileno(), 4).decode(), flush=True)\n\
                attempt('inet', lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))\n\
                open('ran.txt', 'w').write('ran')";
    let run = py_in(&mut c, "p", &f.ws, code, workspace_write(&[&f.ws])).await;
    run.assert_has("got ping");
    run.assert_has("inet err EPERM");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(content(&f.ws("ran.txt")), "ran", "{run:?}");
}

#[tokio::test]
async fn bash_dev_tcp_is_denied_under_restricted_network() {
    require_sandbox!();
    let f = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_server, mut c) = start(&[]).await;
    let script =
        format!("echo hi > /dev/tcp/127.0.0.1/{port} && echo connected; echo ran > ran.txt");
    let run = run_params(
        &mut c,
        params_in(
            "p",
            &f.ws,
            &["bash", "-c", &script],
            workspace_write(&[&f.ws]),
        ),
    )
    .await;
    run.assert_lacks("connected");
    run.assert_has("Operation not permitted");
    assert_no_connection(&listener);
    assert_eq!(content(&f.ws("ran.txt")), "ran\n", "{run:?}");
}

#[tokio::test]
async fn io_uring_setup_is_denied_under_restricted_network() {
    require_sandbox!();
    let f = Fixture::new();
    let (_server, mut c) = start(&[]).await;
    let code = "params = ctypes.create_string_buffer(120)\n\
                raw('io_uring_setup', libc.syscall(425, 4, params))\n\
                raw('getpid', libc.syscall(39))\n\
                open('ran.txt', 'w').write('ran')";
    let run = py_in(&mut c, "p", &f.ws, code, workspace_write(&[&f.ws])).await;
    run.assert_has("io_uring_setup err EPERM");
    run.assert_has("getpid ok");
    assert_eq!(content(&f.ws("ran.txt")), "ran", "{run:?}");
}

/// Python that runs `machine code` (bytes) as a C function returning int and prints the result.
fn py_call_machine_code(bytes: &str) -> String {
    format!(
        "import mmap\n\
         m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n\
         m.write(bytes([{bytes}]))\n\
         f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))\n\
         open('before.txt', 'w').write('before')\n\
         print('before', flush=True)\n\
         print('int80 returned', f(), flush=True)\n\
         open('after.txt', 'w').write('after')"
    )
}

#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn i386_socket_syscall_kills_the_process() {
    require_sandbox!();
    let f = Fixture::new();
    let (_server, mut c) = start(&[]).await;

    // Control, unsandboxed: does this kernel take i386 calls (`int 0x80`) at all?
    // mov eax, 20 (i386 getpid); int 0x80; ret
    let getpid = py_call_machine_code("0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3");
    let control = py_in(&mut c, "control", &f.outside, &getpid, Value::Null).await;
    if !control.has("int80 returned") {
        not_applicable(&format!("the kernel has no IA32 emulation: {control:?}"));
        return;
    }

    // push rbx; mov eax, 359 (i386 socket); mov ebx, 2 (AF_INET); mov ecx, 1 (SOCK_STREAM);
    // xor edx, edx; int 0x80; pop rbx; ret
    let socket = py_call_machine_code(
        "0x53, 0xb8, 0x67, 0x01, 0, 0, 0xbb, 2, 0, 0, 0, 0xb9, 1, 0, 0, 0, \
         0x31, 0xd2, 0xcd, 0x80, 0x5b, 0xc3",
    );
    let run = py_in(&mut c, "p", &f.ws, &socket, workspace_write(&[&f.ws])).await;
    run.assert_has("before");
    run.assert_lacks("int80 returned");
    assert_eq!(
        run.code,
        128 + libc::SIGSYS as i64,
        "killed by SIGSYS: {run:?}"
    );
    assert!(run.denied, "sandboxDenied for 159: {run:?}");
    assert_eq!(content(&f.ws("before.txt")), "before", "{run:?}");
    assert!(!exists(&f.ws("after.txt")), "{run:?}");
}

#[cfg(target_arch = "x86_64")]
#[tokio::test]
async fn x32_syscall_numbers_are_denied() {
    require_sandbox!();
    let f = Fixture::new();
    let (_server, mut c) = start(&[]).await;
    // Unfiltered, an x32 number is ENOSYS (x32 off) or runs; the filter makes it EPERM.
    let x32 = 0x4000_0000u32;
    let code = format!(
        "raw('x32-socket', libc.syscall({sock}, 2, 1, 0))\n\
         raw('x32-getpid', libc.syscall({getpid}))\n\
         raw('getpid', libc.syscall(39))\n\
         open('ran.txt', 'w').write('ran')",
        sock = x32 | libc::SYS_socket as u32,
        getpid = x32 | libc::SYS_getpid as u32,
    );
    let run = py_in(&mut c, "p", &f.ws, &code, workspace_write(&[&f.ws])).await;
    run.assert_has("x32-socket err EPERM");
    run.assert_has("x32-getpid err EPERM");
    run.assert_has("getpid ok");
    assert_eq!(content(&f.ws("ran.txt")), "ran", "{run:?}");
}

#[tokio::test]
async fn enabled_network_with_restricted_fs_allows_tcp_but_denies_vsock() {
    require_sandbox!();
    let f = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_server, mut c) = start(&[]).await;
    let mut sandbox = workspace_write(&[&f.ws]);
    sandbox["permissions"]["network"] = json!("enabled");
    let code = format!(
        "attempt('tcp4', lambda: tcp(socket.AF_INET, '127.0.0.1', {port}))\n\
         attempt('vsock', lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM))\n\
         attempt('outside', lambda: open({:?}, 'w'))",
        s(&f.out("x"))
    );
    let run = py_in(&mut c, "p", &f.ws, &code, sandbox).await;
    run.assert_has("tcp4 ok");
    run.assert_has("vsock err EPERM");
    run.assert_has("outside err");
    assert!(!exists(&f.out("x")), "{run:?}");
    listener.set_nonblocking(false).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hello");
}

// ---------------------------------------------------------------------------------------------
// Managed network (Landlock TCP rules, seccomp managed mode)

/// workspace-write with `enforceManagedNetwork` and `managed`.
fn managed_params(id: &str, f: &Fixture, code: &str, managed: Option<Value>) -> Value {
    let script = format!("{PY_PRELUDE}\n{code}\n");
    let mut p = params_in(
        id,
        &f.ws,
        &[python(), "-c", &script],
        workspace_write(&[&f.ws]),
    );
    p["enforceManagedNetwork"] = json!(true);
    if let Some(m) = managed {
        p["managedNetwork"] = m;
    }
    p
}

#[tokio::test]
async fn managed_network_connects_only_to_the_listed_loopback_port() {
    require_sandbox!(4);
    let f = Fixture::new();
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let (p_ok, p_other) = (
        allowed.local_addr().unwrap().port(),
        other.local_addr().unwrap().port(),
    );
    let (_server, mut c) = start(&[]).await;
    let code = format!(
        "attempt('allowed', lambda: tcp(socket.AF_INET, '127.0.0.1', {p_ok}))\n\
         attempt('other', lambda: tcp(socket.AF_INET, '127.0.0.1', {p_other}))"
    );
    let params = managed_params("p", &f, &code, Some(json!({"loopbackPorts": [p_ok]})));
    let run = run_params(&mut c, params).await;
    run.assert_has("allowed ok");
    run.assert_has("other err");
    assert_no_connection(&other);
    let (mut conn, _) = allowed.accept().unwrap();
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hello", "the allowed port got the data");
}

#[tokio::test]
async fn managed_network_denies_udp() {
    require_sandbox!(4);
    let f = Fixture::new();
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = receiver.local_addr().unwrap().port();
    let (_server, mut c) = start(&[]).await;
    let code = format!(
        "attempt('udp', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\
         .sendto(b'x', ('127.0.0.1', {port})))\n\
         attempt('tcp-socket', lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))"
    );
    let params = managed_params("p", &f, &code, Some(json!({"loopbackPorts": [port]})));
    let run = run_params(&mut c, params).await;
    run.assert_has("udp err EPERM");
    run.assert_has("tcp-socket ok");
    receiver.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        receiver.recv(&mut buf).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock),
        "no datagram arrived"
    );
}

#[tokio::test]
async fn managed_network_without_ports_allows_no_connection() {
    require_sandbox!(4);
    let f = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_server, mut c) = start(&[]).await;
    let code = format!(
        "attempt('tcp4', lambda: tcp(socket.AF_INET, '127.0.0.1', {port}))\n\
         open('ran.txt', 'w').write('ran')"
    );
    // No managedNetwork at all: no proxy port, so no network.
    let run = run_params(&mut c, managed_params("p", &f, &code, None)).await;
    run.assert_has("tcp4 err");
    assert_no_connection(&listener);
    assert_eq!(content(&f.ws("ran.txt")), "ran", "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// Processes and privileges

#[tokio::test]
async fn child_and_grandchild_inherit_the_sandbox() {
    require_sandbox!();
    let f = Fixture::new();
    let (_server, mut c) = start(&[]).await;
    let out = s(&f.outside);
    let script = format!(
        "sh -c 'sh -c \"echo g > {out}/grand; echo g > grand.txt\"'; \
         setsid -w sh -c 'echo s > {out}/setsid; echo s > setsid.txt'; \
         (echo b > {out}/bg; echo b > bg.txt) & wait"
    );
    let run = sh_in(&mut c, "p", &f.ws, &script, workspace_write(&[&f.ws])).await;
    for name in ["grand", "setsid", "bg"] {
        assert!(!exists(&f.out(name)), "{name}: {run:?}");
        assert!(
            exists(&f.ws(&format!("{name}.txt"))),
            "{name}.txt (positive control): {run:?}"
        );
    }
}

#[tokio::test]
async fn sandboxed_process_has_no_new_privs_and_no_capabilities() {
    require_sandbox!();
    let f = Fixture::new();
    let (_server, mut c) = start(&[]).await;
    let run = sh_in(
        &mut c,
        "p",
        &f.ws,
        "grep -E '^(NoNewPrivs|Cap[A-Za-z]+|Seccomp):' /proc/self/status; echo ran > ran.txt",
        workspace_write(&[&f.ws]),
    )
    .await;
    run.assert_has("NoNewPrivs:\t1\n");
    run.assert_has("CapEff:\t0000000000000000\n");
    run.assert_has("CapPrm:\t0000000000000000\n");
    run.assert_has("CapInh:\t0000000000000000\n");
    run.assert_has("CapAmb:\t0000000000000000\n");
    run.assert_has("Seccomp:\t2\n");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        // As root the bounding set is dropped too (sandbox.md §4.3).
        run.assert_has("CapBnd:\t0000000000000000\n");
    }
    assert_eq!(content(&f.ws("ran.txt")), "ran\n", "{run:?}");
}

#[tokio::test]
async fn setuid_binary_gains_no_capabilities() {
    require_sandbox!();
    let f = Fixture::new();
    let cat = f.out("suidcat");
    std::fs::copy("/bin/cat", &cat).unwrap();
    std::fs::set_permissions(&cat, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let (_server, mut c) = start(&[]).await;
    let script = format!("{} /proc/self/status", s(&cat));

    // Control: unsandboxed (as root) the same binary runs with capabilities.
    let control = sh_in(&mut c, "control", &f.ws, &script, Value::Null).await;
    control.assert_has("Name:\tsuidcat");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        control.assert_lacks("CapEff:\t0000000000000000");
    }

    let run = sh_in(&mut c, "p", &f.ws, &script, workspace_write(&[&f.ws])).await;
    run.assert_has("Name:\tsuidcat");
    run.assert_has("CapEff:\t0000000000000000\n");
    run.assert_has("CapPrm:\t0000000000000000\n");
    run.assert_has("NoNewPrivs:\t1\n");
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    run.assert_has(&format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}\n"));
}

/// In the server's PID namespace the Landlock signal scope refuses the kill (EPERM); in one of
/// its own the server's pid does not even exist there (ESRCH).
#[test_case(&["--linux-sandbox-pid-namespace", "inherit"], "kill err EPERM" ; "landlock scope")]
#[test_case(&[], "kill err ESRCH" ; "own pid namespace")]
#[tokio::test]
async fn kill_of_the_server_from_the_sandbox_is_denied(flags: &[&str], denied: &str) {
    require_sandbox!(6);
    if flags.is_empty() && !pid_namespace_available() {
        skip("no PID namespace can be had here (neither root nor user namespaces)");
        return;
    }
    let f = Fixture::new();
    let (mut server, mut c) = start(flags).await;
    let code = format!(
        "import signal\n\
         attempt('kill', lambda: os.kill({}, signal.SIGKILL))\n\
         attempt('kill-self-group-0', lambda: os.kill(os.getpid(), 0))\n\
         open('ran.txt', 'w').write('ran')",
        server.pid()
    );
    let run = py_in(&mut c, "p", &f.ws, &code, workspace_write(&[&f.ws])).await;
    run.assert_has(denied);
    run.assert_has("kill-self-group-0 ok");
    assert_eq!(content(&f.ws("ran.txt")), "ran", "{run:?}");
    assert_server_alive(&mut server, &mut c, "alive").await;
}

#[tokio::test]
async fn ptrace_and_process_vm_access_to_the_server_are_denied() {
    require_sandbox!();
    let f = Fixture::new();
    let (mut server, mut c) = start(&[]).await;
    // PTRACE_SEIZE (0x4206) does not stop the tracee, should it ever succeed.
    let code = format!(
        "libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]\n\
         raw('ptrace', libc.ptrace(0x4206, {pid}, None, None))\n\
         raw('process_vm_readv', libc.syscall({readv}, {pid}, None, 0, None, 0, 0))\n\
         raw('process_vm_writev', libc.syscall({writev}, {pid}, None, 0, None, 0, 0))\n\
         open('ran.txt', 'w').write('ran')",
        pid = server.pid(),
        readv = libc::SYS_process_vm_readv,
        writev = libc::SYS_process_vm_writev,
    );
    let run = py_in(&mut c, "p", &f.ws, &code, workspace_write(&[&f.ws])).await;
    run.assert_has("ptrace err EPERM");
    run.assert_has("process_vm_readv err EPERM");
    run.assert_has("process_vm_writev err EPERM");
    assert_eq!(content(&f.ws("ran.txt")), "ran", "{run:?}");
    assert_server_alive(&mut server, &mut c, "alive").await;
}

// ---------------------------------------------------------------------------------------------
// Other profiles

#[tokio::test]
async fn read_only_profile_allows_dev_null_but_no_file_write() {
    require_sandbox!();
    let f = Fixture::new();
    f.put_ws("readme.txt", "hello\n");
    let (_server, mut c) = start(&[]).await;
    let script = "echo x > /dev/null && echo devnull-ok; cat readme.txt; \
                  echo x > readme.txt && echo wrote; echo x > new.txt && echo created";
    let run = sh_in(&mut c, "p", &f.ws, script, read_only()).await;
    run.assert_has("devnull-ok");
    run.assert_has("hello\n");
    run.assert_lacks("wrote");
    run.assert_lacks("created");
    assert_eq!(content(&f.ws("readme.txt")), "hello\n", "{run:?}");
    assert!(!exists(&f.ws("new.txt")), "{run:?}");
}

#[tokio::test]
async fn read_only_profile_cannot_write_tmp() {
    require_sandbox!();
    let tmp = TestDir::new();
    std::fs::write(tmp.join("existing.txt"), "original\n").unwrap();
    let (_server, mut c) = start(&[]).await;
    let script = "echo x > new.txt && echo created; echo x > existing.txt && echo wrote; \
                  cat existing.txt";
    let run = sh_in(&mut c, "p", tmp.path(), script, read_only()).await;
    run.assert_lacks("created");
    run.assert_lacks("wrote");
    // Positive control: the command ran and could read.
    run.assert_has("original\n");
    assert!(!exists(&tmp.join("new.txt")), "{run:?}");
    assert_eq!(content(&tmp.join("existing.txt")), "original\n", "{run:?}");
}

#[tokio::test]
async fn glob_deny_makes_env_files_unreadable_and_others_readable() {
    require_sandbox!();
    let f = Fixture::new();
    f.put_ws(".env", "TOP_SECRET=1\n");
    f.put_ws("sub/prod.env", "PROD_SECRET=1\n");
    f.put_ws("readme.txt", "public\n");
    f.put_ws("src/main.rs", "old\n");
    let entries = json!([
        {"path": special("root"), "access": "read"},
        {"path": special("project_roots"), "access": "write"},
        {"path": {"type": "glob_pattern", "pattern": "**/*.env"}, "access": "deny"},
    ]);
    let (_server, mut c) = start(&[]).await;
    let script = "cat .env; cat sub/prod.env; cat readme.txt; echo x > .env && echo wrote-env; \
                  echo new > src/main.rs";
    let run = sh_in(
        &mut c,
        "p",
        &f.ws,
        script,
        restricted(entries, "restricted", &[&f.ws]),
    )
    .await;
    run.assert_lacks("TOP_SECRET");
    run.assert_lacks("PROD_SECRET");
    run.assert_lacks("wrote-env");
    run.assert_has("public\n");
    assert_eq!(content(&f.ws(".env")), "TOP_SECRET=1\n", "{run:?}");
    assert_eq!(content(&f.ws("src/main.rs")), "new\n", "{run:?}");
}

#[tokio::test]
async fn empty_workspace_roots_grant_no_write() {
    require_sandbox!();
    let f = Fixture::new();
    let tmp = TestDir::new();
    let (_server, mut c) = start(&[]).await;
    let script = format!(
        "echo x > cwd.txt && echo wrote-cwd; echo t > {}/t.txt && echo wrote-tmp",
        s(tmp.path())
    );
    let run = sh_in(&mut c, "p", &f.ws, &script, workspace_write(&[])).await;
    run.assert_lacks("wrote-cwd");
    assert!(!exists(&f.ws("cwd.txt")), "no cwd fallback: {run:?}");
    // Positive control: /tmp (slash_tmp) is still writable.
    run.assert_has("wrote-tmp");
    assert_eq!(content(&tmp.join("t.txt")), "t\n", "{run:?}");
}

#[tokio::test]
async fn subpath_with_dot_dot_or_absolute_path_is_rejected() {
    require_sandbox!();
    let f = Fixture::new();
    f.mkdir_ws("sub");
    let (_server, mut c) = start(&[]).await;
    let script = "echo x > sub/x.txt && echo wrote-sub; echo y > y.txt && echo wrote-top";
    for (i, subpath) in ["../outside", "sub/../..", "/etc"].into_iter().enumerate() {
        let entries = json!([
            {"path": special("root"), "access": "read"},
            {"path": special_sub("project_roots", subpath), "access": "write"},
        ]);
        let params = params_in(
            &format!("bad{i}"),
            &f.ws,
            &["/bin/sh", "-c", script],
            restricted(entries, "restricted", &[&f.ws]),
        );
        let (code, message) = c.request_err("process/start", params).await;
        assert_eq!(code, INVALID_PARAMS, "{subpath}: {message}");
        assert!(message.contains("subpath"), "{subpath}: {message}");
    }
    assert!(
        !exists(&f.ws("sub/x.txt")) && !exists(&f.ws("y.txt")),
        "nothing ran"
    );
    // Positive control: a relative subpath grants exactly that directory.
    let entries = json!([
        {"path": special("root"), "access": "read"},
        {"path": special_sub("project_roots", "sub"), "access": "write"},
    ]);
    let run = sh_in(
        &mut c,
        "ok",
        &f.ws,
        script,
        restricted(entries, "restricted", &[&f.ws]),
    )
    .await;
    run.assert_has("wrote-sub");
    run.assert_lacks("wrote-top");
    assert_eq!(content(&f.ws("sub/x.txt")), "x\n", "{run:?}");
    assert!(!exists(&f.ws("y.txt")), "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// Fail closed

#[tokio::test]
async fn simulated_no_landlock_refuses_restricting_policies() {
    let f = Fixture::new();
    let (_server, mut c) = start(&["--sandbox-simulate-no-landlock"]).await;
    let script = "echo ran > ran.txt";
    let intents = [
        ("workspace-write", workspace_write(&[&f.ws])),
        ("read-only", read_only()),
    ];
    for (name, sandbox) in intents {
        let params = params_in(name, &f.ws, &["/bin/sh", "-c", script], sandbox);
        let (code, message) = c.request_err("process/start", params).await;
        assert_eq!(code, INVALID_PARAMS, "{name}: {message}");
        assert!(
            message.starts_with("sandbox intent cannot be enforced on this executor: "),
            "{name}: {message}"
        );
    }
    // Managed network needs Landlock too.
    let mut params = params_in(
        "managed",
        &f.ws,
        &["/bin/sh", "-c", script],
        json!({"permissions": {"type": "disabled"}, "windowsSandboxLevel": "disabled"}),
    );
    params["enforceManagedNetwork"] = json!(true);
    let (code, message) = c.request_err("process/start", params).await;
    assert_eq!(code, INVALID_PARAMS, "managed: {message}");
    assert!(
        message.starts_with("sandbox intent cannot be enforced on this executor: "),
        "managed: {message}"
    );
    assert!(!exists(&f.ws("ran.txt")), "nothing ran unconfined");
    // Positive control: the same command without a sandbox runs on this server.
    let run = sh_in(&mut c, "plain", &f.ws, script, Value::Null).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(content(&f.ws("ran.txt")), "ran\n");
}

#[tokio::test]
async fn simulated_no_landlock_still_runs_disabled_and_seccomp_only_profiles() {
    if !seccomp_available() {
        skip("the kernel has no seccomp");
        return;
    }
    let f = Fixture::new();
    let (_server, mut c) = start(&["--sandbox-simulate-no-landlock"]).await;
    let disabled = json!({"permissions": {"type": "disabled"}, "windowsSandboxLevel": "disabled"});
    let run = sh_in(&mut c, "disabled", &f.ws, "echo d > disabled.txt", disabled).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(content(&f.ws("disabled.txt")), "d\n");

    let external = json!({"permissions": {"type": "external", "network": "restricted"},
                          "windowsSandboxLevel": "disabled"});
    let unrestricted = json!({"permissions": {"type": "managed", "network": "restricted",
                                              "file_system": {"type": "unrestricted"}},
                              "windowsSandboxLevel": "disabled"});
    for (name, sandbox) in [("external", external), ("unrestricted", unrestricted)] {
        let code = format!(
            "attempt('inet', lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))\n\
             open('{name}.txt', 'w').write('{name}')"
        );
        let run = py_in(&mut c, name, &f.ws, &code, sandbox).await;
        // Seccomp is enforced, the file system is the caller's.
        run.assert_has("inet err EPERM");
        assert_eq!(content(&f.ws(&format!("{name}.txt"))), name, "{run:?}");
    }
}

#[tokio::test]
async fn fake_codex_linux_sandbox_on_request_path_is_not_used() {
    require_sandbox!();
    let f = Fixture::new();
    let bin = f.base.join("fakebin");
    std::fs::create_dir(&bin).unwrap();
    let marker = f.base.join("fake-was-used");
    let fake = bin.join("codex-linux-sandbox");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho used > {}\nexit 0\n", s(&marker)),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_server, mut c) = start(&[]).await;
    let script = format!(
        "echo ok > ok.txt; echo x > {} && echo wrote-outside",
        s(&f.out("x"))
    );
    let mut params = params_in(
        "p",
        &f.ws,
        &["/bin/sh", "-c", &script],
        workspace_write(&[&f.ws]),
    );
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    params["env"]["PATH"] = json!(format!("{}:{path}", s(&bin)));
    let run = run_params(&mut c, params).await;
    assert!(!exists(&marker), "the fake wrapper ran: {run:?}");
    assert_eq!(content(&f.ws("ok.txt")), "ok\n", "{run:?}");
    // ... and the real one confined the command.
    run.assert_lacks("wrote-outside");
    assert!(!exists(&f.out("x")), "{run:?}");
}

#[tokio::test]
async fn sandbox_denied_is_true_for_a_denied_write_and_false_on_success() {
    require_sandbox!();
    let f = Fixture::new();
    let (_server, mut c) = start(&[]).await;
    let denied = format!("echo x > {}", s(&f.out("x")));
    let run = sh_in(&mut c, "denied", &f.ws, &denied, workspace_write(&[&f.ws])).await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.denied, "sandboxDenied on a denied write: {run:?}");
    assert!(!exists(&f.out("x")), "{run:?}");

    let run = sh_in(
        &mut c,
        "ok",
        &f.ws,
        "echo ok > ok.txt",
        workspace_write(&[&f.ws]),
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.denied, "no sandboxDenied on exit 0: {run:?}");
    assert_eq!(content(&f.ws("ok.txt")), "ok\n");
}

// ---------------------------------------------------------------------------------------------
// `codex sandbox linux`

#[tokio::test]
async fn codex_sandbox_linux_workspace_write_allows_the_dir_and_refuses_outside() {
    require_sandbox!();
    let f = Fixture::new();
    f.put_ws(".git/config", "original\n");
    let script = format!(
        "echo in > in.txt; echo out > {} && echo wrote-outside; echo x > .git/config",
        s(&f.out("x"))
    );
    let out = cli(
        &["--workspace-write", s(&f.ws)],
        &["/bin/sh", "-c", &script],
        &f.ws,
    )
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(content(&f.ws("in.txt")), "in\n", "{text}");
    assert!(!exists(&f.out("x")), "{text}");
    assert!(!text.contains("wrote-outside"), "{text}");
    assert_eq!(content(&f.ws(".git/config")), "original\n", "{text}");
    assert!(!out.status.success(), "the last write failed: {text}");
}

#[tokio::test]
async fn codex_sandbox_linux_read_only_refuses_every_write() {
    require_sandbox!();
    let f = Fixture::new();
    f.put_ws("readme.txt", "hello\n");
    let out = cli(
        &["--read-only"],
        &[
            "/bin/sh",
            "-c",
            "cat readme.txt; echo x > new.txt && echo created",
        ],
        &f.ws,
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("hello"), "the command ran: {out:?}");
    assert!(!stdout.contains("created"), "{out:?}");
    assert!(!exists(&f.ws("new.txt")), "{out:?}");
}

#[tokio::test]
async fn codex_sandbox_linux_closes_inherited_descriptors() {
    require_sandbox!();
    let f = Fixture::new();
    f.put_out("leak.txt", "original\n");
    let leak = std::fs::OpenOptions::new()
        .append(true)
        .open(f.out("leak.txt"))
        .unwrap();
    let fd = leak.as_raw_fd();
    // bash: dash takes only single-digit descriptors.
    let script = format!("echo pwned >&{fd} && echo wrote-leak; echo ran > ran.txt");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_codex"));
    command
        .args(["sandbox", "linux", "--workspace-write", s(&f.ws), "--"])
        .args(["bash", "-c", &script])
        .current_dir(&f.ws)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    // SAFETY: only fcntl, async-signal-safe, between fork and exec; clears close-on-exec so the
    // sandbox is handed a writable descriptor on a file outside the workspace.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("codex sandbox linux did not finish within the deadline")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(content(&f.ws("ran.txt")), "ran\n", "{text}");
    assert!(!text.contains("wrote-leak"), "{text}");
    assert_eq!(content(&f.out("leak.txt")), "original\n", "{text}");
    drop(leak);
}

// ---------------------------------------------------------------------------------------------
// `fs/*` under a sandbox (the `codex-fs` helper, sandbox.md §5)

async fn fs_write(
    c: &mut Client,
    path: &Path,
    data: &str,
    sandbox: &Value,
) -> Result<Value, RpcError> {
    c.request(
        "fs/writeFile",
        json!({"path": file_uri(path), "dataBase64": b64(data.as_bytes()), "sandbox": sandbox}),
    )
    .await
}

#[track_caller]
fn assert_permission_denied(result: Result<Value, RpcError>, what: &str) {
    match result {
        Err((code, message)) => assert_eq!(code, INVALID_REQUEST, "{what}: {message}"),
        Ok(v) => panic!("{what}: should be refused, got {v}"),
    }
}

/// The workspace-write intent as the Codex CLI sends it on `fs/*`: with the policy `cwd`.
fn fs_workspace_write(ws: &Path) -> Value {
    let mut sandbox = workspace_write(&[ws]);
    sandbox["cwd"] = json!(file_uri(ws));
    sandbox
}

#[tokio::test]
async fn fs_write_file_through_symlinks_to_outside_or_into_git_is_denied() {
    require_sandbox!();
    let f = Fixture::new();
    f.put_out("existing.txt", "original\n");
    f.put_ws(".git/config", "original\n");
    symlink(f.out("existing.txt"), f.ws("filelink")).unwrap();
    symlink(".git", f.ws("alias")).unwrap();
    symlink(".git/config", f.ws("configlink")).unwrap();
    let sandbox = fs_workspace_write(&f.ws);
    let (_server, mut c) = start(&[]).await;
    for rel in ["filelink", "alias/config", "alias/new", "configlink"] {
        let r = fs_write(&mut c, &f.ws(rel), "pwned", &sandbox).await;
        assert_permission_denied(r, rel);
    }
    assert_eq!(content(&f.out("existing.txt")), "original\n");
    assert_eq!(content(&f.ws(".git/config")), "original\n");
    assert!(!exists(&f.ws(".git/new")));
    for link in ["filelink", "configlink"] {
        assert!(
            std::fs::symlink_metadata(f.ws(link))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{link} is still a symlink"
        );
    }
    // Positive control.
    fs_write(&mut c, &f.ws("inside.txt"), "in", &sandbox)
        .await
        .unwrap();
    assert_eq!(content(&f.ws("inside.txt")), "in");
}

#[tokio::test]
async fn fs_write_file_creates_a_top_level_file_under_split_grant_layer() {
    require_sandbox!();
    let f = Fixture::new();
    f.put_ws(".git/config", "original\n");
    f.put_ws(".codex/config.toml", "original\n");
    let sandbox = fs_workspace_write(&f.ws);
    let (_server, mut c) = start(Layer::Split.flags()).await;
    // sandbox.md §9: unlike a process, fs/writeFile creates top-level files (apply_patch).
    fs_write(&mut c, &f.ws("new-top.txt"), "new", &sandbox)
        .await
        .unwrap();
    assert_eq!(content(&f.ws("new-top.txt")), "new");
    for rel in [".git/config", ".git/new", ".codex/config.toml"] {
        let r = fs_write(&mut c, &f.ws(rel), "pwned", &sandbox).await;
        assert_permission_denied(r, rel);
    }
    assert_eq!(content(&f.ws(".git/config")), "original\n");
    assert_eq!(content(&f.ws(".codex/config.toml")), "original\n");
    assert!(!exists(&f.ws(".git/new")));
}

#[tokio::test]
async fn fs_read_file_of_a_glob_denied_file_is_refused() {
    require_sandbox!();
    let f = Fixture::new();
    f.put_ws(".env", "TOP_SECRET=1\n");
    f.put_ws("sub/prod.env", "PROD_SECRET=1\n");
    f.put_ws("readme.txt", "public\n");
    let mut sandbox = restricted(
        json!([
            {"path": special("root"), "access": "read"},
            {"path": special("project_roots"), "access": "write"},
            {"path": {"type": "glob_pattern", "pattern": "**/*.env"}, "access": "deny"},
        ]),
        "restricted",
        &[&f.ws],
    );
    sandbox["cwd"] = json!(file_uri(&f.ws));
    let (_server, mut c) = start(&[]).await;
    for rel in [".env", "sub/prod.env"] {
        let r = c
            .request(
                "fs/readFile",
                json!({"path": file_uri(&f.ws(rel)), "sandbox": sandbox}),
            )
            .await;
        assert_permission_denied(r, rel);
    }
    let ok = c
        .request_ok(
            "fs/readFile",
            json!({"path": file_uri(&f.ws("readme.txt")), "sandbox": sandbox}),
        )
        .await;
    assert_eq!(unb64(ok["dataBase64"].as_str().unwrap()), b"public\n");
}

/// A symlink inside the workspace naming the carve-out (`alias -> .git`) does not bypass it.
#[test_case(Layer::Mount ; "with mount layer")]
#[test_case(Layer::Split ; "with split grant layer")]
#[tokio::test]
async fn symlink_alias_of_git_dir_does_not_bypass_the_carve_out(layer: Layer) {
    require_sandbox!();
    if layer == Layer::Mount {
        require_mount_layer!();
    }
    let f = Fixture::new();
    f.put_ws(".git/config", "original\n");
    f.put_ws("notes.txt", "old\n");
    symlink(".git", f.ws("alias")).unwrap();
    let (_server, mut c) = start(layer.flags()).await;
    let script = "echo pwned > alias/config && echo attack-succeeded; \
                  echo x > alias/new && echo attack-succeeded; echo new > notes.txt";
    let run = sh_in(&mut c, "p", &f.ws, script, workspace_write(&[&f.ws])).await;
    run.assert_lacks("attack-succeeded");
    run.assert_has(layer.carve_out_error());
    assert_eq!(content(&f.ws(".git/config")), "original\n", "{run:?}");
    assert!(!exists(&f.ws(".git/new")), "{run:?}");
    assert_eq!(content(&f.ws("notes.txt")), "new\n", "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// PID namespace (`--linux-sandbox-pid-namespace`)

/// Whether this machine can give a sandboxed process a PID namespace (root, or unprivileged user
/// namespaces): asked of the binary's own start-up probe.
fn pid_namespace_available() -> bool {
    std::process::Command::new(env!("CARGO_BIN_EXE_codex"))
        .args(["sandbox", "probe-pid-namespace"])
        .status()
        .is_ok_and(|s| s.success())
}

/// `require_sandbox!` plus a PID namespace.
macro_rules! require_pid_namespace {
    () => {
        require_sandbox!();
        if !pid_namespace_available() {
            skip("no PID namespace can be had here (neither root nor user namespaces)");
            return;
        }
    };
}

/// Whether any process on the machine runs with exactly `cmdline` (NUL-separated argv).
fn host_process_with_cmdline(cmdline: &[u8]) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|entry| std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == cmdline))
}

/// By default a sandboxed command is PID 2 of a namespace of its own (its init is PID 1), its
/// /proc lists only that namespace (where the mount layer gives it a mount namespace: here the
/// workspace's `.git` carve-out), and the server says so in its capabilities; the same command
/// unsandboxed sees the machine's processes.
#[tokio::test]
async fn sandboxed_command_runs_in_a_pid_namespace_of_its_own() {
    require_pid_namespace!();
    if let Some(reason) = mount_layer_missing().await {
        skip(&reason);
        return;
    }
    let f = Fixture::new();
    f.mkdir_ws(".git");
    let (_server, mut c) = start(&[]).await;
    let info = c.request_ok("environment/info", json!({})).await;
    assert_eq!(info["capabilities"]["sandboxPidNamespace"], true, "{info}");
    let script = "echo pid=$$; echo procs=$(ls /proc | grep -c '^[0-9]')";
    let run = sh_in(&mut c, "iso", &f.ws, script, workspace_write(&[&f.ws])).await;
    assert_eq!(run.code, 0, "{run:?}");
    run.assert_has("pid=2\n");
    // init, sh, ls, grep (and the subshell): a handful, not the machine's.
    let procs: usize = run
        .out
        .split("procs=")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(procs <= 6, "{run:?}");
    let plain = sh_in(&mut c, "plain", &f.ws, script, Value::Null).await;
    plain.assert_lacks("pid=2\n");
}

/// Where the server may make PID namespaces (root), it starts the sandbox wrapper as PID 1 of a
/// new one (`clone3(CLONE_NEWPID)`): the wrapper is the namespace's init and the command its
/// only child, with no supervisor process in front (one process fewer per command, one fewer
/// between the command's end and `exited`). Exit codes, signals to the group and the kill at the
/// end are the init's as before (the other PID namespace tests run this way too).
#[tokio::test]
async fn the_server_starts_the_sandbox_wrapper_as_the_init_of_a_new_pid_namespace() {
    require_pid_namespace!();
    require_mount_layer!();
    if !rustix::process::geteuid().is_root() {
        skip("the server makes PID namespaces itself only as root");
        return;
    }
    let f = Fixture::new();
    let (server, mut c) = start(&[]).await;
    c.start_process(sleeper_in("init", &f.ws)).await;
    let mut wrapper = None;
    wait_until("the command running under a child of the server", || {
        wrapper = descendants(server.pid(), false)
            .into_iter()
            .find(|&w| runs_sleep(w));
        wrapper.is_some()
    })
    .await;
    let wrapper = wrapper.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{wrapper}/status")).unwrap();
    let nspid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .unwrap_or_else(|| panic!("no NSpid in {status}"));
    let ids: Vec<&str> = nspid.split_whitespace().skip(1).collect();
    assert_eq!(
        ids.last(),
        Some(&"1"),
        "the server's child is PID 1 of its own namespace: {nspid}"
    );
    let children = descendants(wrapper, false);
    assert_eq!(children.len(), 1, "the init's children: {children:?}");
    assert!(
        std::fs::read(format!("/proc/{}/cmdline", children[0]))
            .is_ok_and(|c| c.starts_with(b"sleep\0")),
        "the command is the init's child"
    );
    // The group's SIGTERM reaches the command, not the init; the init ends as it did.
    c.request_ok("process/terminate", json!({"processId": "init"}))
        .await;
    let events = c.collect_process_events("init").await;
    let exited = events
        .iter()
        .find(|e| e["method"] == "process/exited")
        .unwrap_or_else(|| panic!("no exited in {events:?}"));
    assert_eq!(exited["params"]["exitCode"], 128 + 15, "{exited}");
}

/// `--pid-namespace-made` only says the namespace *may* have been made by the caller: a wrapper
/// that is not PID 1 (a start without `clone3`, or by a caller that may not make namespaces)
/// makes its own as always, and the command is still PID 2 of a namespace of its own.
#[tokio::test]
async fn a_wrapper_told_its_namespace_was_made_but_not_pid_1_makes_its_own() {
    require_pid_namespace!();
    let f = Fixture::new();
    let profile = json!({"file_system": null, "network": "restricted"}).to_string();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_codex"))
        .arg0("codex-linux-sandbox")
        .args(["--command-cwd"])
        .arg(&f.ws)
        .args(["--permission-profile", &profile])
        .args(["--pid-namespace", "--pid-namespace-made", "--"])
        .args(["/bin/sh", "-c", "echo pid=$$; exit 7"])
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{text}");
    assert!(text.contains("pid=2\n"), "{text}");
}

/// What a sandboxed command leaves running in its namespace is killed when it exits (the
/// namespace ends with its init), so nothing it started outlives it.
#[tokio::test]
async fn background_child_of_a_sandboxed_command_dies_with_it() {
    require_pid_namespace!();
    let f = Fixture::new();
    let (_server, mut c) = start(&[]).await;
    // A unique argv, to find the child among the machine's processes.
    let marker = format!("{}.{}", 600 + std::process::id() % 300, 17);
    let script = format!("sleep {marker} >/dev/null 2>&1 & echo started");
    let run = sh_in(&mut c, "bg", &f.ws, &script, workspace_write(&[&f.ws])).await;
    run.assert_has("started\n");
    // The namespace's init exits only once the kernel has killed and reaped the rest of the
    // namespace, and the command's exit is reported after that: no wait is needed.
    let cmdline = format!("sleep\0{marker}\0");
    assert!(
        !host_process_with_cmdline(cmdline.as_bytes()),
        "`sleep {marker}` outlived the sandboxed command"
    );
    // Control: unsandboxed, the same child does outlive its parent (then we kill it).
    let run = sh_in(
        &mut c,
        "bg-plain",
        &f.ws,
        &format!("{script}; echo $!"),
        Value::Null,
    )
    .await;
    let pid: i32 = run.out.lines().last().unwrap().trim().parse().unwrap();
    assert!(host_process_with_cmdline(cmdline.as_bytes()), "{run:?}");
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    );
}

/// `process/signal interrupt` reaches a sandboxed command that traps it (the supervisor left
/// outside the namespace neither dies of it nor passes it on twice), and its exit code comes
/// back unchanged.
#[tokio::test]
async fn interrupt_reaches_a_trapping_sandboxed_command_once() {
    require_pid_namespace!();
    let f = Fixture::new();
    let (_server, mut c) = start(&[]).await;
    let script = "n=0; trap 'n=$((n+1)); echo got-int-$n' INT; echo ready; \
                  while [ ! -e stop ]; do sleep 0.05; done; echo ints=$n; exit 7";
    c.start_process(params_in(
        "int",
        &f.ws,
        &["/bin/sh", "-c", script],
        workspace_write(&[&f.ws]),
    ))
    .await;
    c.wait_for_output("int", "ready\n").await;
    c.request_ok(
        "process/signal",
        json!({"processId": "int", "signal": "interrupt"}),
    )
    .await;
    c.wait_for_output("int", "got-int-1\n").await;
    put(&f.ws("stop"), "");
    let events = c.collect_process_events("int").await;
    let out = output_text(&events, Some("stdout"));
    assert!(out.contains("ints=1\n"), "{out}");
    assert_eq!(exit_code(&events), 7, "{events:?}");
}

/// A sandboxed command killed by a signal is reported as the same command unsandboxed is.
#[tokio::test]
async fn death_by_signal_is_reported_the_same_in_a_pid_namespace() {
    require_pid_namespace!();
    let f = Fixture::new();
    let (_server, mut c) = start(&[]).await;
    let script = "kill -TERM $$";
    let plain = sh_in(&mut c, "plain", &f.ws, script, Value::Null).await;
    let isolated = sh_in(&mut c, "iso", &f.ws, script, workspace_write(&[&f.ws])).await;
    assert_ne!(plain.code, 0, "{plain:?}");
    assert_eq!(isolated.code, plain.code, "{isolated:?} vs {plain:?}");
}

/// `process/terminate` of a sandboxed command that ignores SIGTERM still ends it (and its
/// namespace) after the grace.
#[tokio::test]
async fn terminate_ends_a_sandboxed_command_that_ignores_term() {
    require_pid_namespace!();
    let f = Fixture::new();
    let (_server, mut c) = start(&["--terminate-grace-ms", "200"]).await;
    c.start_process(params_in(
        "stubborn",
        &f.ws,
        &[
            "/bin/sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.05; done",
        ],
        workspace_write(&[&f.ws]),
    ))
    .await;
    c.wait_for_output("stubborn", "ready\n").await;
    c.request_ok("process/terminate", json!({"processId": "stubborn"}))
        .await;
    let events = c.collect_process_events("stubborn").await;
    assert_ne!(exit_code(&events), 0, "{events:?}");
}

/// `--linux-sandbox-pid-namespace inherit`: sandboxed commands share the server's namespace, and
/// the capability says so.
#[tokio::test]
async fn inherit_mode_shares_the_servers_pid_namespace() {
    require_sandbox!();
    let f = Fixture::new();
    let (_server, mut c) = start(&["--linux-sandbox-pid-namespace", "inherit"]).await;
    let info = c.request_ok("environment/info", json!({})).await;
    assert_eq!(info["capabilities"]["sandboxPidNamespace"], false, "{info}");
    let run = sh_in(
        &mut c,
        "inh",
        &f.ws,
        "echo pid=$$",
        workspace_write(&[&f.ws]),
    )
    .await;
    run.assert_lacks("pid=2\n");
    assert_eq!(run.code, 0, "{run:?}");
}

/// An explicit `isolate` where it can be had starts and isolates; a bad mode is refused at start
/// naming the flag.
#[tokio::test]
async fn explicit_isolate_mode_isolates_and_a_bad_mode_is_refused() {
    require_pid_namespace!();
    let f = Fixture::new();
    let (_server, mut c) = start(&["--linux-sandbox-pid-namespace", "isolate"]).await;
    let run = sh_in(
        &mut c,
        "iso",
        &f.ws,
        "echo pid=$$",
        workspace_write(&[&f.ws]),
    )
    .await;
    run.assert_has("pid=2\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_codex"))
        .args(["exec-server", "--linux-sandbox-pid-namespace", "sometimes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--linux-sandbox-pid-namespace"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Warm starts: the wrapper started ahead of the next command with the same sandbox

/// The server's children waiting as warm sandbox wrappers (`--command-from-fd`).
fn warm_wrappers(server: &Server) -> Vec<i32> {
    descendants(server.pid(), false)
        .into_iter()
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == b"--command-from-fd"))
        })
        .collect()
}

/// The children of `pid` (`/proc/PID/task/*/children`), and theirs if `deep`.
fn descendants(pid: i32, deep: bool) -> Vec<i32> {
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        let tasks = std::fs::read_dir(format!("/proc/{parent}/task"));
        for task in tasks.into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in text
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                found.push(child);
                if deep {
                    frontier.push(child);
                }
            }
        }
    }
    found
}

/// `exec sleep 30` in `ws` under the workspace-write sandbox of `ws`.
fn sleeper_in(id: &str, ws: &Path) -> Value {
    params_in(
        id,
        ws,
        &["/bin/sh", "-c", "exec sleep 30"],
        workspace_write(&[ws]),
    )
}

/// Whether a `sleep` runs below `pid`.
fn runs_sleep(pid: i32) -> bool {
    descendants(pid, true).into_iter().any(|p| {
        std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
    })
}

/// A server whose first sandboxed start (`true` in a workspace with a `.git`) has run, with a
/// warm wrapper waiting for the next: the fixture, the server, its client, the wrapper's pid.
async fn after_a_sandboxed_start() -> (Fixture, Server, Client, i32) {
    let f = Fixture::new();
    f.put_ws(".git/HEAD", "ref\n");
    let (server, mut c) = start(&[]).await;
    let first = sh_in(&mut c, "first", &f.ws, "true", workspace_write(&[&f.ws])).await;
    assert_eq!(first.code, 0, "{first:?}");
    let warm = a_warm_wrapper(&server).await;
    (f, server, c, warm)
}

/// Waits until the server has a warm wrapper waiting; its pid.
async fn a_warm_wrapper(server: &Server) -> i32 {
    let mut found = None;
    wait_until(
        "a warm sandbox wrapper started after a sandboxed start",
        || {
            found = warm_wrappers(server).first().copied();
            found.is_some()
        },
    )
    .await;
    found.unwrap()
}

/// After a sandboxed start, the next one with the same sandbox runs on the wrapper the server
/// started ahead: the command is a descendant of that wrapper, with its own argv, environment
/// and cwd, and as confined as a cold start (the `.git` carve-out holds, the outside is
/// unwritable).
#[tokio::test]
async fn the_next_sandboxed_start_runs_on_a_wrapper_started_ahead() {
    require_sandbox!();
    require_mount_layer!();
    let f = Fixture::new();
    f.put_ws(".git/HEAD", "ref\n");
    let (server, mut c) = start(&[]).await;
    let first = sh_in(
        &mut c,
        "first",
        &f.ws,
        "echo one",
        workspace_write(&[&f.ws]),
    )
    .await;
    assert_eq!(first.code, 0, "{first:?}");
    a_warm_wrapper(&server).await;
    // Two wait per sandbox; the command runs on one of them.
    let warm = warm_wrappers(&server);
    let outside = f.out("escape");
    let script = format!(
        "echo \"var=$WARM_VAR cwd=$(pwd)\"; touch .git/x && echo git-writable; \
         touch '{}' && echo outside-writable; exec sleep 30",
        outside.display()
    );
    // A bare program name: looked up on the command's own PATH.
    let mut params = params_in(
        "second",
        &f.ws,
        &["sh", "-c", &script],
        workspace_write(&[&f.ws]),
    );
    params["env"]["WARM_VAR"] = json!("second's own");
    c.start_process(params).await;
    // The command runs under the warm wrapper: a `sleep 30` below it.
    wait_until("the second command running on a warm wrapper", || {
        warm.iter().any(|&w| runs_sleep(w))
    })
    .await;
    c.request_ok("process/terminate", json!({"processId": "second"}))
        .await;
    let events = c.collect_process_events("second").await;
    let out = output_text(&events, None);
    assert!(
        out.contains(&format!("var=second's own cwd={}", f.ws.display())),
        "{out}"
    );
    assert!(!out.contains("git-writable"), "{out}");
    assert!(!out.contains("outside-writable"), "{out}");
    assert!(!outside.exists());
}

/// Two wrappers wait for the next starts with the same sandbox, so that a command started right
/// after another finds one that has confined itself already; a start takes one of them, and
/// another is started in its place. Different sandboxes share at most four.
#[tokio::test]
async fn two_wrappers_wait_per_sandbox_and_four_at_most_in_all() {
    require_sandbox!();
    require_mount_layer!();
    let f = Fixture::new();
    let (server, mut c) = start(&[]).await;
    let first = sh_in(&mut c, "first", &f.ws, "true", workspace_write(&[&f.ws])).await;
    assert_eq!(first.code, 0, "{first:?}");
    let mut waiting = Vec::new();
    wait_until("two warm wrappers waiting", || {
        waiting = warm_wrappers(&server);
        waiting.len() == 2
    })
    .await;
    c.start_process(sleeper_in("second", &f.ws)).await;
    let mut used = None;
    wait_until("the second command running on a waiting wrapper", || {
        used = waiting.iter().copied().find(|&w| runs_sleep(w));
        used.is_some()
    })
    .await;
    let used = used.unwrap();
    // Another is started in its place: two wait again, the other one of before among them.
    wait_until("two warm wrappers waiting again", || {
        let now: Vec<i32> = warm_wrappers(&server)
            .into_iter()
            .filter(|&w| w != used)
            .collect();
        now.len() == 2 && waiting.iter().all(|w| *w == used || now.contains(w))
    })
    .await;
    // Three more sandboxes (other cwds): never more than four wrappers wait in all.
    for n in 0..3 {
        let dir = f.ws.join(format!("d{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let run = sh_in(
            &mut c,
            &format!("other{n}"),
            &dir,
            "true",
            workspace_write(&[&f.ws]),
        )
        .await;
        assert_eq!(run.code, 0, "{run:?}");
        let idle: Vec<i32> = warm_wrappers(&server)
            .into_iter()
            .filter(|&w| w != used)
            .collect();
        assert!(idle.len() <= 4, "{} wrappers waiting: {idle:?}", idle.len());
    }
    c.request_ok("process/terminate", json!({"processId": "second"}))
        .await;
    c.collect_process_events("second").await;
}

/// A warm-started command's mount namespace is held by the server (an nsfs descriptor) while
/// the command runs, so that its exit does not unmount the namespace and wait for an RCU grace
/// period before the server hears of it; the descriptor goes once the command is reaped.
#[tokio::test]
async fn a_warm_commands_mount_namespace_is_held_by_the_server_until_it_is_reaped() {
    require_sandbox!();
    require_mount_layer!();
    let (f, server, mut c, _) = after_a_sandboxed_start().await;
    // Wait until a waiting wrapper has its command's process in a mount namespace of its own.
    let own = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    wait_until("a warm wrapper confined in its mount namespace", || {
        warm_wrappers(&server).into_iter().any(|w| {
            descendants(w, true)
                .into_iter()
                .any(|p| std::fs::read_link(format!("/proc/{p}/ns/mnt")).is_ok_and(|ns| ns != own))
        })
    })
    .await;
    c.start_process(sleeper_in("held", &f.ws)).await;
    let mut sleeper = None;
    wait_until("the command running", || {
        sleeper = descendants(server.pid(), true).into_iter().find(|&p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
        });
        sleeper.is_some()
    })
    .await;
    let ns = std::fs::read_link(format!("/proc/{}/ns/mnt", sleeper.unwrap())).unwrap();
    assert_ne!(ns, own, "the command has a mount namespace of its own");
    let server_holds = |ns: &std::path::Path| {
        std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .unwrap()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == ns))
    };
    assert!(server_holds(&ns), "the server holds {}", ns.display());
    c.request_ok("process/terminate", json!({"processId": "held"}))
        .await;
    c.collect_process_events("held").await;
    wait_until("the namespace let go of after the reap", || {
        !server_holds(&ns)
    })
    .await;
}

/// A warm wrapper whose carve-out was replaced meanwhile (`.git` removed and made again: its bind
/// mount would hold the old directory) is not used: the start is cold, and the new `.git` is
/// read-only too.
#[tokio::test]
async fn a_warm_wrapper_whose_carve_out_was_replaced_is_not_used() {
    require_sandbox!();
    require_mount_layer!();
    let (f, server, mut c, warm) = after_a_sandboxed_start().await;
    std::fs::remove_dir_all(f.ws(".git")).unwrap();
    f.put_ws(".git/HEAD", "new\n");
    let run = sh_in(
        &mut c,
        "second",
        &f.ws,
        "touch .git/x && echo git-writable; echo done",
        workspace_write(&[&f.ws]),
    )
    .await;
    run.assert_has("done\n");
    run.assert_lacks("git-writable");
    assert!(!f.ws(".git/x").exists());
    // The stale wrapper was let go of (and a fresh one waits for the next start).
    wait_until("the stale warm wrapper let go of", || {
        !warm_wrappers(&server).contains(&warm)
    })
    .await;
}

/// What a client puts in a sandboxed command's environment reaches the command only, never the
/// wrapper, which runs unconfined until it has confined itself: an `LD_PRELOAD` is loaded (here:
/// tried, and reported missing by the loader) by the command's program alone, cold and warm.
#[tokio::test]
async fn a_command_environment_never_reaches_the_sandbox_wrapper() {
    require_sandbox!();
    let f = Fixture::new();
    let (_server, mut c) = start(&[]).await;
    for id in ["cold", "warm"] {
        let mut params = params_in(id, &f.ws, &["/bin/sh", "-c", "exit 0"], read_only());
        params["env"]["LD_PRELOAD"] = json!("/nonexistent/codex-test-preload.so");
        let run = run_params(&mut c, params).await;
        assert_eq!(run.code, 0, "{id}: {run:?}");
        // One exec of a program that may load it: the command's /bin/sh.
        let tries = run.out.matches("codex-test-preload.so").count();
        assert!(
            tries <= 1,
            "{id}: the preload reached more than the command: {run:?}"
        );
    }
}

/// A sandboxed start's `arg0` is the command's `argv[0]`, cold and warm (the wrapper is sent it
/// with the command).
#[tokio::test]
async fn a_sandboxed_command_gets_its_arg0_cold_and_warm() {
    require_sandbox!();
    let f = Fixture::new();
    let (_server, mut c) = start(&[]).await;
    for id in ["cold", "warm"] {
        let mut params = params_in(id, &f.ws, &["/bin/sh", "-c", "echo \"$0\""], read_only());
        params["arg0"] = json!("renamed-shell");
        let run = run_params(&mut c, params).await;
        assert_eq!(run.code, 0, "{id}: {run:?}");
        run.assert_has("renamed-shell\n");
    }
}
