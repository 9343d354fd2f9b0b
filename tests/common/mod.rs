//! The integration-test harness: the real `codex exec-server` binary on a real socket.
//!
//! What it owns:
//! - [`Server`]: starts the binary on `ws://127.0.0.1:0` (port 0), reads the URL line it prints,
//!   captures its stderr (dumped only when a test fails) and kills it on drop.
//! - [`Client`] (in `client.rs`, shared with the benchmark): one WebSocket (or stdio)
//!   connection; requests pipelined, every `process/*` notification recorded per process and seq.
//! - [`Pidfd`]: waits for an OS process to exit without polling (a pidfd becomes readable on exit).
//! - Small helpers: base64, `file:` URIs, default `process/start` params, temporary directories.
//!
//! What it leaves to the tests: every assertion about the protocol. Nothing here sleeps or polls:
//! every wait is on the socket or a file descriptor, under [`DEADLINE`].
//!
//! `CODEX_EXEC_SERVER_TEST_BIN` may name another binary to test (e.g. the reference); by default
//! the tests run `env!("CARGO_BIN_EXE_codex")`.

#![allow(dead_code)]

mod client;
mod logged;

pub use client::*;
// Not every test binary starts a `LoggedServer`.
#[allow(unused_imports)]
pub use logged::*;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
pub const SESSION_ATTACHED: i64 = -32010;
/// Filesystem: not found.
pub const NOT_FOUND: i64 = -32004;

/// The binary under test.
pub fn server_binary() -> PathBuf {
    match std::env::var_os("CODEX_EXEC_SERVER_TEST_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_codex")),
    }
}

// ---------------------------------------------------------------------------------------------
// Server

/// How to start a server: extra flags and environment.
#[derive(Default, Clone)]
pub struct ServerOptions {
    /// Flags after `exec-server --listen ws://127.0.0.1:0`.
    pub flags: Vec<String>,
    /// Variables added to the server's environment.
    pub env: Vec<(String, String)>,
    /// Start the server with only `env` (no variable inherited from the test process).
    pub env_clear: bool,
    /// Descriptors of the test process (opened close-on-exec, as Rust does) that the server
    /// inherits at the same numbers: close-on-exec is cleared in the server's child only, so no
    /// other server started by a parallel test gets them.
    pub inherited_fds: Vec<i32>,
    /// A command the server runs under (`["unshare", "--pid", "--fork"]`): the server is
    /// started as its last arguments. Empty: started directly.
    pub wrapper: Vec<String>,
}

/// Collects a child's stderr in a task so the pipe never fills up.
fn capture_stderr(mut stderr: tokio::process::ChildStderr) -> Arc<Mutex<Vec<u8>>> {
    use tokio::io::AsyncReadExt as _;
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    tokio::spawn(async move {
        let mut buf = [0u8; 8192];
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    });
    log
}

fn dump_log_if_failing(what: &str, log: &Arc<Mutex<Vec<u8>>>) {
    if std::thread::panicking() {
        let log = log.lock().unwrap();
        eprintln!(
            "----- {what} stderr -----\n{}\n----- end -----",
            String::from_utf8_lossy(&log)
        );
    }
}

fn base_command(opts: &ServerOptions, listen: &str) -> Command {
    let mut cmd = match opts.wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(server_binary());
            cmd
        }
        None => Command::new(server_binary()),
    };
    cmd.arg("exec-server")
        .arg("--listen")
        .arg(listen)
        .args(&opts.flags);
    if opts.env_clear {
        cmd.env_clear();
    }
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    if !opts.inherited_fds.is_empty() {
        let fds = opts.inherited_fds.clone();
        // SAFETY: the closure runs between fork and exec and calls only fcntl, which is
        // async-signal-safe, on descriptors that the forked child holds; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &fds {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A running `codex exec-server` listening on a loopback WebSocket. Killed on drop.
pub struct Server {
    /// The server process; `kill_on_drop` ends it with the test.
    child: Child,
    /// Kept open so the server never sees stdin close (some servers exit on it).
    _stdin: Option<ChildStdin>,
    /// Kept open so a late write to stdout does not fail with EPIPE.
    _stdout: Lines<BufReader<ChildStdout>>,
    /// The URL the server printed, `ws://127.0.0.1:PORT`.
    url: String,
    /// The server's stderr so far, dumped when a test fails.
    log: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    /// Starts a server with extra flags, e.g. `&["--detached-session-ttl-ms", "500"]`.
    pub async fn start(flags: &[&str]) -> Server {
        Server::start_with(ServerOptions {
            flags: flags.iter().map(|s| s.to_string()).collect(),
            ..ServerOptions::default()
        })
        .await
    }

    pub async fn start_with(opts: ServerOptions) -> Server {
        let mut cmd = base_command(&opts, "ws://127.0.0.1:0");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {}: {e}", server_binary().display()));
        let log = capture_stderr(child.stderr.take().unwrap());
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = match tokio::time::timeout(DEADLINE, stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => {
                // Give the stderr thread a moment's worth of data: it is read until EOF, which
                // comes when the process has exited.
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                panic!(
                    "server did not print its URL line ({other:?}); stderr:\n{}",
                    String::from_utf8_lossy(&log.lock().unwrap())
                );
            }
        };
        let url = line.trim().to_string();
        assert!(
            (url.starts_with("ws://127.0.0.1:") || url.starts_with("wss://127.0.0.1:"))
                && url.rsplit(':').next().unwrap().parse::<u16>().is_ok(),
            "the first stdout line must be `ws://127.0.0.1:PORT` (or wss://), got {line:?}"
        );
        Server {
            child,
            _stdin: stdin,
            _stdout: stdout,
            url,
            log,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        let url = self.url.strip_prefix("wss://").unwrap_or(&self.url);
        url.trim_start_matches("ws://").to_string()
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("server still running") as i32
    }

    /// Connects a new WebSocket client (not yet initialized).
    pub async fn connect(&self) -> Client {
        Client::connect(&self.url, ConnectOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits (under the deadline) for the server process to exit.
    pub async fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("server did not exit within the deadline")
            .expect("wait for server")
    }

    /// Fails the test if the server process has exited.
    pub fn assert_running(&mut self) {
        match self.child.try_wait() {
            Ok(None) => {}
            other => panic!("server is not running any more: {other:?}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        dump_log_if_failing("server", &self.log);
    }
}

/// A server started with `--listen stdio`: its stdin/stdout is the one connection.
pub struct StdioServer {
    child: Child,
    log: Arc<Mutex<Vec<u8>>>,
}

impl StdioServer {
    pub async fn start(flags: &[&str]) -> (StdioServer, Client) {
        let opts = ServerOptions {
            flags: flags.iter().map(|s| s.to_string()).collect(),
            ..ServerOptions::default()
        };
        let mut child = base_command(&opts, "stdio")
            .spawn()
            .expect("start stdio server");
        let log = capture_stderr(child.stderr.take().unwrap());
        let client = Client::over_stdio(child.stdin.take().unwrap(), child.stdout.take().unwrap());
        (StdioServer { child, log }, client)
    }

    /// Waits for the server to exit under the deadline and returns its status.
    pub async fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("stdio server did not exit within the deadline")
            .expect("wait for stdio server")
    }
}

impl Drop for StdioServer {
    fn drop(&mut self) {
        dump_log_if_failing("stdio server", &self.log);
    }
}

/// Connects a new client and resumes `session_id` on it, retrying while the server answers
/// -32010 (it has not yet noticed that the old connection dropped; the code is documented as
/// retryable). Every retry waits for the previous answer; the whole loop is under the deadline.
pub async fn resume_on_new_connection(server: &Server, session_id: &str) -> (Client, Value) {
    let mut client = server.connect().await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        match client.initialize_resume(session_id).await {
            Ok(result) => return (client, result),
            Err((SESSION_ATTACHED, _)) if Instant::now() < deadline => {
                tokio::task::yield_now().await
            }
            Err(e) => panic!("resuming session {session_id} failed: {e:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events and params

pub fn output_text(events: &[Value], stream: Option<&str>) -> String {
    String::from_utf8_lossy(&output_bytes(events, stream)).into_owned()
}

/// The `exitCode` of the single `process/exited` event.
pub fn exit_code(events: &[Value]) -> i64 {
    let exited: Vec<&Value> = events
        .iter()
        .filter(|e| e["method"] == "process/exited")
        .collect();
    assert_eq!(
        exited.len(),
        1,
        "expected exactly one process/exited in {events:?}"
    );
    exited[0]["params"]["exitCode"]
        .as_i64()
        .expect("exitCode is an integer")
}

pub fn seq_of(event: &Value) -> i64 {
    event["params"]["seq"]
        .as_i64()
        .unwrap_or_else(|| panic!("event without seq: {event}"))
}

/// Default `process/start` params: cwd is the temp directory, env only `PATH`, no TTY, no stdin.
pub fn process_params(process_id: &str, argv: &[&str]) -> Value {
    json!({
        "processId": process_id,
        "argv": argv,
        "cwd": file_uri(&std::env::temp_dir()),
        "env": {"PATH": std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())},
        "tty": false,
        "pipeStdin": false,
    })
}

/// `process_params` for `/bin/sh -c script`.
pub fn sh(process_id: &str, script: &str) -> Value {
    process_params(process_id, &["/bin/sh", "-c", script])
}

// ---------------------------------------------------------------------------------------------
// OS processes

/// A pidfd: a handle on one process that cannot be confused by pid reuse. Readable once the
/// process has exited. Dropping it sends SIGKILL, so a test that fails never leaks the process.
pub struct Pidfd {
    fd: AsyncFd<OwnedFd>,
    pid: i32,
}

impl Pidfd {
    /// `None` when no process `pid` exists any more.
    pub fn open(pid: i32) -> Option<Pidfd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            let err = std::io::Error::last_os_error();
            assert_eq!(
                err.raw_os_error(),
                Some(libc::ESRCH),
                "pidfd_open({pid}): {err}"
            );
            return None;
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the `OwnedFd` moves into the `AsyncFd`, which keeps it open until it is dropped.
        let fd = unsafe { AsyncFd::register(owned) }.expect("register pidfd");
        Some(Pidfd { fd, pid })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the process has exited (a non-blocking check, no waiting).
    pub fn has_exited(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, timeout 0.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n == 1
    }

    /// Waits for the process to exit; fails the test after `within`.
    pub async fn wait_exit(&self, within: Duration, what: &str) {
        match tokio::time::timeout(within, self.fd.readable()).await {
            Ok(guard) => drop(guard.expect("pidfd readiness")),
            Err(_) => panic!("{what}: process {} still alive after {within:?}", self.pid),
        }
    }
}

impl Drop for Pidfd {
    fn drop(&mut self) {
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags. ESRCH once it is gone.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.get_ref().as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

/// Waits until `pid` has exited (already gone counts), failing the test after `within`.
pub async fn assert_process_exits(pid: i32, within: Duration, what: &str) {
    if let Some(fd) = Pidfd::open(pid) {
        fd.wait_exit(within, what).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Files

/// The ground of the fs sandbox tests: a workspace holding `inside.txt` ("inside the workspace")
/// and `.git/config` ("orig"), and a directory outside it holding `secret` ("secret").
pub fn sandbox_dirs() -> (TestDir, TestDir) {
    let ws = TestDir::new();
    std::fs::create_dir(ws.join(".git")).unwrap();
    std::fs::write(ws.join(".git/config"), b"orig").unwrap();
    std::fs::write(ws.join("inside.txt"), b"inside the workspace").unwrap();
    let outside = TestDir::new();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    (ws, outside)
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir::new_in(&std::env::temp_dir())
    }

    /// A fresh directory under `base` (an existing directory), removed on drop: for tests that
    /// need a directory outside the system temp dir (e.g. outside a sandbox's writable `/tmp`).
    pub fn new_in(base: &Path) -> TestDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("codex-exec-server-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn uri(&self) -> String {
        file_uri(&self.path)
    }

    /// Creates a FIFO named `name` in the directory.
    pub fn mkfifo(&self, name: &str) -> PathBuf {
        use std::os::unix::ffi::OsStrExt as _;
        let path = self.join(name);
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path and a mode.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(
            rc,
            0,
            "mkfifo {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        path
    }
}

impl Default for TestDir {
    fn default() -> Self {
        TestDir::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes `data` to a FIFO (blocks until a reader opens it), under the deadline.
pub async fn write_fifo(path: &Path, data: &'static [u8]) {
    let path = path.to_path_buf();
    let task = tokio::task::spawn_blocking(move || std::fs::write(&path, data));
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("no process opened the FIFO for reading within the deadline")
        .unwrap()
        .expect("write FIFO");
}

/// Reads a FIFO to EOF (blocks until a writer opens and closes it), under the deadline.
pub async fn read_fifo(path: &Path) -> Vec<u8> {
    let path = path.to_path_buf();
    let task = tokio::task::spawn_blocking(move || std::fs::read(&path));
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("no process wrote the FIFO within the deadline")
        .unwrap()
        .expect("read FIFO")
}

// ---------------------------------------------------------------------------------------------
// Bystander

/// A second session on its own connection with a live `cat`, used to show that something done on
/// another connection left the server up and this session unaffected.
pub struct Bystander {
    pub client: Client,
    pub session_id: String,
    checks: usize,
}

pub const BYSTANDER_PROCESS: &str = "bystander-cat";

impl Bystander {
    pub async fn start(server: &Server) -> Bystander {
        let mut client = server.connect().await;
        let session_id = client.initialize().await;
        let mut params = process_params(BYSTANDER_PROCESS, &["/bin/cat"]);
        params["pipeStdin"] = json!(true);
        client.start_process(params).await;
        let mut b = Bystander {
            client,
            session_id,
            checks: 0,
        };
        b.check().await;
        b
    }

    /// Writes a fresh line to the bystander's `cat` and waits for its echo.
    pub async fn check(&mut self) {
        self.checks += 1;
        let line = format!("bystander-check-{}\n", self.checks);
        let status = self
            .client
            .write_stdin(
                BYSTANDER_PROCESS,
                line.as_bytes(),
                &format!("b{}", self.checks),
            )
            .await;
        assert_eq!(status, "accepted", "bystander write");
        self.client.wait_for_output(BYSTANDER_PROCESS, &line).await;
    }
}

/// Waits until `done()` holds, looking again every 10 ms, for what nothing announces (a
/// process's children, a directory's removal); panics naming `what` after [`DEADLINE`].
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not so after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
