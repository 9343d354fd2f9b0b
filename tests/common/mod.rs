//! The integration-test harness: the real `codex exec-server` binary on a real socket.
//!
//! What it owns:
//! - [`Server`]: starts the binary on `ws://127.0.0.1:0` (port 0), reads the URL line it prints,
//!   captures its stderr (dumped only when a test fails) and kills it on drop.
//! - [`Client`]: one WebSocket (or stdio) connection. Requests can be pipelined
//!   ([`Client::send_request`] now, [`Client::await_answer`] later); every message that is not the
//!   answer being awaited is buffered, and every `process/*` notification is also recorded per
//!   process and seq, so a test can wait for one notification and still reassemble the whole stream.
//! - [`Pidfd`]: waits for an OS process to exit without polling (a pidfd becomes readable on exit).
//! - Small helpers: base64, `file:` URIs, default `process/start` params, temporary directories.
//!
//! What it leaves to the tests: every assertion about the protocol. Nothing here sleeps or polls:
//! every wait is on the socket or a file descriptor, under [`DEADLINE`].
//!
//! `CODEX_EXEC_SERVER_TEST_BIN` may name another binary to test (e.g. the reference); by default
//! the tests run `env!("CARGO_BIN_EXE_codex")`.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A JSON-RPC error as `(code, message)`.
pub type RpcError = (i64, String);

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
    let mut cmd = Command::new(server_binary());
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

/// Largest message or frame the test client reads: above the server's 128 MiB limit, so a big
/// answer (a 64 MiB `fs/readFile` is ~86 MiB of base64, in one frame) is never refused here.
pub const CLIENT_MAX_MESSAGE_BYTES: usize = 256 << 20;

fn client_ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(CLIENT_MAX_MESSAGE_BYTES))
        .max_frame_size(Some(CLIENT_MAX_MESSAGE_BYTES))
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
            url.starts_with("ws://127.0.0.1:")
                && url.rsplit(':').next().unwrap().parse::<u16>().is_ok(),
            "the first stdout line must be `ws://127.0.0.1:PORT`, got {line:?}"
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
        self.url.trim_start_matches("ws://").to_string()
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("server still running") as i32
    }

    /// Connects a new WebSocket client (not yet initialized).
    pub async fn connect(&self) -> Client {
        let tcp = tokio::time::timeout(DEADLINE, TcpStream::connect(self.addr()))
            .await
            .expect("connect timed out")
            .expect("connect to server");
        let (ws, _response) = tokio::time::timeout(
            DEADLINE,
            tokio_tungstenite::client_async_with_config(
                self.url.as_str(),
                tcp,
                Some(client_ws_config()),
            ),
        )
        .await
        .expect("WebSocket handshake timed out")
        .expect("WebSocket handshake");
        Client::new(Transport::Ws(ws))
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
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let client = Client::new(Transport::Stdio {
            stdin: Some(stdin),
            stdout,
        });
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

// ---------------------------------------------------------------------------------------------
// Client

enum Transport {
    Ws(WebSocketStream<TcpStream>),
    Stdio {
        stdin: Option<ChildStdin>,
        stdout: Lines<BufReader<ChildStdout>>,
    },
}

/// One connection to the server. Not `Clone`: one test task drives it.
pub struct Client {
    transport: Transport,
    /// Next id for [`Client::send_request`].
    next_id: i64,
    /// Messages received but not yet consumed, in arrival order.
    pending: VecDeque<Value>,
    /// Every `process/output|exited|closed` notification received, by process id and seq.
    events: HashMap<String, BTreeMap<i64, Value>>,
    /// Notifications whose (process, seq) had already been received.
    duplicates: Vec<Value>,
    /// The connection has ended (close frame, EOF or error).
    closed: bool,
}

impl Client {
    fn new(transport: Transport) -> Client {
        Client {
            transport,
            next_id: 1,
            pending: VecDeque::new(),
            events: HashMap::new(),
            duplicates: Vec::new(),
            closed: false,
        }
    }

    // ----- sending

    /// Sends one text frame (one line on stdio) as is.
    pub async fn send_raw_text(&mut self, text: &str) {
        let result = match &mut self.transport {
            Transport::Ws(ws) => ws
                .send(Message::text(text.to_string()))
                .await
                .map_err(|e| e.to_string()),
            Transport::Stdio { stdin, .. } => {
                let stdin = stdin.as_mut().expect("stdin already closed");
                let mut line = text.as_bytes().to_vec();
                line.push(b'\n');
                stdin.write_all(&line).await.map_err(|e| e.to_string())
            }
        };
        result.unwrap_or_else(|e| panic!("send failed: {e}"));
    }

    /// Sends one binary WebSocket frame.
    pub async fn send_raw_binary(&mut self, bytes: Vec<u8>) {
        match &mut self.transport {
            Transport::Ws(ws) => ws
                .send(Message::binary(bytes))
                .await
                .expect("send binary frame"),
            Transport::Stdio { .. } => panic!("binary frames exist only on WebSocket"),
        }
    }

    /// Writes `bytes` as they are to the byte stream under the messages (the TCP socket, or the
    /// server's stdin), with no framing: a hand-made frame header, a line without its end.
    pub async fn write_raw_bytes(&mut self, bytes: &[u8]) {
        let result = match &mut self.transport {
            Transport::Ws(ws) => ws.get_mut().write_all(bytes).await,
            Transport::Stdio { stdin, .. } => {
                stdin
                    .as_mut()
                    .expect("stdin already closed")
                    .write_all(bytes)
                    .await
            }
        };
        result.unwrap_or_else(|e| panic!("raw write failed: {e}"));
    }

    pub async fn send_json(&mut self, message: &Value) {
        self.send_raw_text(&message.to_string()).await;
    }

    /// Sends a request and returns its id without waiting for the answer.
    pub async fn send_request(&mut self, method: &str, params: Value) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_json(&json!({"id": id, "method": method, "params": params}))
            .await;
        id
    }

    pub async fn notify(&mut self, method: &str, params: Value) {
        self.send_json(&json!({"method": method, "params": params}))
            .await;
    }

    /// Sends a request and waits for its answer.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.send_request(method, params).await;
        self.await_answer(id).await
    }

    /// Like [`Client::request`], waiting up to `within` for the answer instead of [`DEADLINE`]:
    /// for requests that move a lot of data (a debug build encodes 64 MiB of base64 slowly).
    pub async fn request_within(
        &mut self,
        method: &str,
        params: Value,
        within: Duration,
    ) -> Result<Value, RpcError> {
        let id = self.send_request(method, params).await;
        let what = format!("the answer to request {id}");
        let answer = self
            .wait_until_within(&what, within, |c| {
                let at = c
                    .pending
                    .iter()
                    .position(|m| is_answer(m) && m["id"] == json!(id))?;
                c.pending.remove(at)
            })
            .await;
        answer_to_result(answer)
    }

    /// Like [`Client::request`], failing the test on an error answer.
    pub async fn request_ok(&mut self, method: &str, params: Value) -> Value {
        match self.request(method, params.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("{method} {params} failed: {e:?}"),
        }
    }

    /// Like [`Client::request`], failing the test on a success answer.
    pub async fn request_err(&mut self, method: &str, params: Value) -> RpcError {
        match self.request(method, params.clone()).await {
            Ok(v) => panic!("{method} {params} should fail, got result {v}"),
            Err(e) => e,
        }
    }

    /// Half-closes the TCP connection (FIN towards the server) while still reading from it.
    pub fn shutdown_write(&mut self) {
        match &mut self.transport {
            Transport::Ws(ws) => {
                let fd = ws.get_ref().as_raw_fd();
                // SAFETY: `fd` is the open socket owned by `ws`; shutdown does not close it.
                let rc = unsafe { libc::shutdown(fd, libc::SHUT_WR) };
                assert_eq!(
                    rc,
                    0,
                    "shutdown(SHUT_WR): {}",
                    std::io::Error::last_os_error()
                );
            }
            Transport::Stdio { stdin, .. } => {
                stdin.take();
            }
        }
    }

    /// stdio only: closes the server's stdin.
    pub fn close_stdin(&mut self) {
        match &mut self.transport {
            Transport::Stdio { stdin, .. } => drop(stdin.take()),
            Transport::Ws(_) => panic!("close_stdin is for the stdio transport"),
        }
    }

    /// Sends a close frame and waits until the server ends the connection.
    pub async fn close(mut self) {
        if let Transport::Ws(ws) = &mut self.transport {
            let _ = ws.close(None).await;
        }
        self.wait_for_close().await;
    }

    // ----- receiving

    /// Reads one message from the transport, `None` once the connection has ended.
    async fn recv(&mut self) -> Option<Value> {
        if self.closed {
            return None;
        }
        let text = loop {
            match &mut self.transport {
                Transport::Ws(ws) => match ws.next().await {
                    Some(Ok(Message::Text(t))) => break t.to_string(),
                    Some(Ok(Message::Binary(b))) => break String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        self.closed = true;
                        return None;
                    }
                },
                Transport::Stdio { stdout, .. } => match stdout.next_line().await {
                    Ok(Some(line)) if line.trim().is_empty() => continue,
                    Ok(Some(line)) => break line,
                    Ok(None) | Err(_) => {
                        self.closed = true;
                        return None;
                    }
                },
            }
        };
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("server sent a frame that is not JSON ({e}): {text:?}"));
        assert!(
            value.is_object(),
            "server sent a non-object message: {value}"
        );
        self.record(&value);
        Some(value)
    }

    fn record(&mut self, message: &Value) {
        let Some(method) = message.get("method").and_then(Value::as_str) else {
            return;
        };
        if message.get("id").is_some() || !method.starts_with("process/") {
            return;
        }
        let params = &message["params"];
        let (Some(pid), Some(seq)) = (params["processId"].as_str(), params["seq"].as_i64()) else {
            return;
        };
        let seqs = self.events.entry(pid.to_string()).or_default();
        match seqs.entry(seq) {
            std::collections::btree_map::Entry::Occupied(_) => {
                self.duplicates.push(message.clone())
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(message.clone());
            }
        }
    }

    fn summary(&self) -> String {
        let mut s = format!("{} unconsumed message(s)", self.pending.len());
        for m in self.pending.iter().take(20) {
            let mut text = m.to_string();
            if text.len() > 300 {
                text.truncate(300);
                text.push('…');
            }
            s.push_str("\n  ");
            s.push_str(&text);
        }
        if self.closed {
            s.push_str("\n(connection closed)");
        }
        s
    }

    /// Reads until `pick` takes a buffered or new message, under the deadline.
    async fn wait_until<T>(&mut self, what: &str, pick: impl FnMut(&mut Client) -> Option<T>) -> T {
        self.wait_until_within(what, DEADLINE, pick).await
    }

    /// [`Client::wait_until`] under another deadline than [`DEADLINE`].
    async fn wait_until_within<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut pick: impl FnMut(&mut Client) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = pick(self) {
                return found;
            }
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(Some(message)) => self.pending.push_back(message),
                Ok(None) => panic!(
                    "connection closed while waiting for {what}; {}",
                    self.summary()
                ),
                Err(_) => panic!(
                    "timed out after {within:?} waiting for {what}; {}",
                    self.summary()
                ),
            }
        }
    }

    /// The next message not yet consumed, in arrival order.
    pub async fn next_message(&mut self) -> Value {
        self.wait_until("the next message", |c| c.pending.pop_front())
            .await
    }

    /// The next message, or `None` if the connection ends first.
    pub async fn next_message_or_close(&mut self) -> Option<Value> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        match tokio::time::timeout(DEADLINE, self.recv()).await {
            Ok(m) => m,
            Err(_) => panic!("timed out after {DEADLINE:?} waiting for a message or the close"),
        }
    }

    /// Waits until the server ends the connection; returns the messages that came before.
    pub async fn wait_for_close(&mut self) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        let mut seen: Vec<Value> = self.pending.drain(..).collect();
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(Some(m)) => seen.push(m),
                Ok(None) => return seen,
                Err(_) => panic!(
                    "timed out after {DEADLINE:?} waiting for the server to close the connection; got {seen:?}"
                ),
            }
        }
    }

    /// The whole answer message (`{"id", "result"|"error"}`) for `id`, which may be any JSON id.
    pub async fn await_raw_answer(&mut self, id: &Value) -> Value {
        let what = format!("the answer to request {id}");
        self.wait_until(&what, |c| {
            let at = c
                .pending
                .iter()
                .position(|m| is_answer(m) && m.get("id") == Some(id))?;
            c.pending.remove(at)
        })
        .await
    }

    /// The answer to request `id`, as `Ok(result)` or `Err((code, message))`.
    pub async fn await_answer(&mut self, id: i64) -> Result<Value, RpcError> {
        answer_to_result(self.await_raw_answer(&json!(id)).await)
    }

    /// Whether the answer to `id` has already been received (and not consumed).
    pub fn has_answer(&self, id: i64) -> bool {
        self.pending
            .iter()
            .any(|m| is_answer(m) && m["id"] == json!(id))
    }

    /// Waits until one of the requests `ids` has been answered and returns the id whose answer
    /// arrived first (nothing is consumed).
    pub async fn wait_for_any_answer(&mut self, ids: &[i64]) -> i64 {
        let what = format!("an answer to one of {} requests", ids.len());
        self.wait_until(&what, |c| {
            c.pending
                .iter()
                .filter(|m| is_answer(m))
                .find_map(|m| m["id"].as_i64().filter(|id| ids.contains(id)))
        })
        .await
    }

    /// Waits for a notification matching `pred` and consumes it.
    pub async fn wait_for_notification(
        &mut self,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_until(what, |c| {
            let at = c
                .pending
                .iter()
                .position(|m| !is_answer(m) && m.get("method").is_some() && pred(m))?;
            c.pending.remove(at)
        })
        .await
    }

    /// Waits for an answer with id -1 (the answer to a frame the server could not parse).
    pub async fn wait_for_parse_error(&mut self) -> RpcError {
        let answer = self.await_raw_answer(&json!(-1)).await;
        match answer_to_result(answer) {
            Ok(v) => panic!("id -1 answer should be an error, got {v}"),
            Err(e) => e,
        }
    }

    // ----- handshake

    /// `initialize {clientName: "test"}` + `initialized`; returns the session id.
    pub async fn initialize(&mut self) -> String {
        let result = self
            .request_ok("initialize", json!({"clientName": "test"}))
            .await;
        let session = result["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("initialize result without sessionId: {result}"))
            .to_string();
        self.notify("initialized", json!({})).await;
        session
    }

    /// `initialize {clientName, resumeSessionId}`; on success also sends `initialized`.
    pub async fn initialize_resume(&mut self, session_id: &str) -> Result<Value, RpcError> {
        let answer = self
            .request(
                "initialize",
                json!({"clientName": "test", "resumeSessionId": session_id}),
            )
            .await;
        if answer.is_ok() {
            self.notify("initialized", json!({})).await;
        }
        answer
    }

    // ----- processes

    /// `process/start`, failing the test on an error.
    pub async fn start_process(&mut self, params: Value) -> Value {
        self.request_ok("process/start", params).await
    }

    /// Every event of `process_id` received so far, sorted by seq.
    pub fn process_events(&self, process_id: &str) -> Vec<Value> {
        self.events
            .get(process_id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets every event of `process_id` received so far: for a test that starts the same id
    /// again once the first has been freed (its seqs start at 1 again).
    pub fn forget_process_events(&mut self, process_id: &str) {
        self.events.remove(process_id);
    }

    /// Notifications received twice for the same (process, seq).
    pub fn duplicate_events(&self) -> &[Value] {
        &self.duplicates
    }

    /// Waits until `process/closed` of `process_id` has arrived and every seq below it too, then
    /// returns all its events sorted by seq. Consumes the process's notifications.
    pub async fn collect_process_events(&mut self, process_id: &str) -> Vec<Value> {
        let what = format!("all events of process {process_id} up to process/closed");
        let pid = process_id.to_string();
        self.wait_until(&what, |c| {
            let seqs = c.events.get(&pid)?;
            let (&last, closed) = seqs.iter().next_back()?;
            if closed["method"] != "process/closed"
                || seqs.len() as i64 != last
                || *seqs.keys().next()? != 1
            {
                return None;
            }
            Some(())
        })
        .await;
        self.pending
            .retain(|m| !(m["params"]["processId"] == json!(pid) && m.get("id").is_none()));
        self.process_events(process_id)
    }

    /// Waits until the output of `process_id` received so far (all streams, seq order) contains
    /// `needle`.
    pub async fn wait_for_output(&mut self, process_id: &str, needle: &str) {
        let what = format!("output {needle:?} from process {process_id}");
        let pid = process_id.to_string();
        self.wait_until(&what, |c| {
            let text =
                String::from_utf8_lossy(&output_bytes(&c.process_events(&pid), None)).into_owned();
            text.contains(needle).then_some(())
        })
        .await;
    }

    /// Waits for a notification `method` of `process_id` (e.g. `process/exited`).
    pub async fn wait_for_process_event(&mut self, process_id: &str, method: &str) -> Value {
        let what = format!("{method} of process {process_id}");
        let pid = process_id.to_string();
        let method = method.to_string();
        self.wait_until(&what, |c| {
            c.events
                .get(&pid)?
                .values()
                .find(|e| e["method"] == json!(method))
                .cloned()
        })
        .await
    }

    /// `process/write` of `data` with `write_id`; returns the `status`.
    pub async fn write_stdin(&mut self, process_id: &str, data: &[u8], write_id: &str) -> String {
        let result = self
            .request_ok(
                "process/write",
                json!({"processId": process_id, "chunk": b64(data), "writeId": write_id}),
            )
            .await;
        result["status"]
            .as_str()
            .unwrap_or_else(|| panic!("process/write result without status: {result}"))
            .to_string()
    }
}

fn is_answer(m: &Value) -> bool {
    m.get("id").is_some() && (m.get("result").is_some() || m.get("error").is_some())
}

/// Turns an answer message into `Ok(result)` or `Err((code, message))`.
pub fn answer_to_result(answer: Value) -> Result<Value, RpcError> {
    if let Some(error) = answer.get("error") {
        let code = error["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("error without integer code: {answer}"));
        let message = error["message"]
            .as_str()
            .unwrap_or_else(|| panic!("error without message: {answer}"));
        return Err((code, message.to_string()));
    }
    Ok(answer
        .get("result")
        .cloned()
        .unwrap_or_else(|| panic!("answer without result: {answer}")))
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

pub fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

pub fn unb64(text: &str) -> Vec<u8> {
    STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("server sent invalid base64 {text:?}: {e}"))
}

/// Concatenated chunks of the `process/output` events, of one stream or (None) all.
pub fn output_bytes(events: &[Value], stream: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        if e["method"] == "process/output" && stream.is_none_or(|s| e["params"]["stream"] == s) {
            out.extend(unb64(
                e["params"]["chunk"].as_str().expect("chunk is a string"),
            ));
        }
    }
    out
}

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

/// Characters escaped in a `file:` URI path.
const PATH_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// `file:///abs/path`, percent-encoded.
pub fn file_uri(path: &Path) -> String {
    assert!(
        path.is_absolute(),
        "file_uri needs an absolute path: {}",
        path.display()
    );
    use std::os::unix::ffi::OsStrExt as _;
    let encoded = percent_encoding::percent_encode(path.as_os_str().as_bytes(), PATH_ESCAPES);
    format!("file://{encoded}")
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
