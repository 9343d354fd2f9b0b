//! The one client of `codex exec-server` that the integration tests and the benchmark share
//! (`benches/exec_bench.rs` includes this file with `#[path]`; benches are their own crate): one
//! connection over a WebSocket on loopback, or over a stdio server's pipes.
//!
//! - Requests can be pipelined ([`Client::send_request`] now, [`Client::await_answer`] later);
//!   every message that is not the answer being awaited is kept, in arrival order, for a later
//!   wait.
//! - Every `process/*` notification is counted per process in a [`ProcessTally`] (output bytes,
//!   last seq, exited, closed). A recording client (the default) also keeps each one, by process
//!   and seq, so a test can wait for one notification and still reassemble the whole stream. A
//!   lean client ([`ConnectOptions::lean`], the benchmark's) keeps only the tallies and measures a
//!   chunk's length without decoding it: what it costs to read a stream is then the socket and
//!   the JSON, as it would be for a real client, not a test's bookkeeping.
//! - Two TCP behaviours ([`ConnectOptions::at_once_acks`]): a plain client (Nagle on, the
//!   kernel's delayed ACKs), or one that sets TCP_NODELAY and re-arms TCP_QUICKACK after every
//!   read, so it never delays an ACK.
//!
//! Nothing here sleeps or polls: every wait is on the socket, under a deadline. The `try_*`
//! methods return a [`ClientError`] (the benchmark records it and goes on); the others fail the
//! test with it.

#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::AsFd as _;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::io::{Lines, ReadBuf};
use tokio::net::TcpStream;
use tokio::process::{ChildStdin, ChildStdout};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A JSON-RPC error as `(code, message)`.
pub type RpcError = (i64, String);

/// Largest message or frame the client reads: above the server's 128 MiB limit, so a big answer
/// (a 64 MiB `fs/readFile` is ~86 MiB of base64) is never refused here.
pub const CLIENT_MAX_MESSAGE_BYTES: usize = 256 << 20;

/// How to connect.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOptions {
    /// TCP_NODELAY, and TCP_QUICKACK re-armed after every read: ACKs leave at once. Off: what a
    /// client gets without asking for anything (Nagle on, delayed ACKs).
    pub at_once_acks: bool,
    /// Count process notifications only (see the module docs): for timing.
    pub lean: bool,
}

/// Why a connect, a send or a wait failed: the connection ended, the deadline passed, or the
/// server sent something unusable. The message says what was awaited and what had arrived.
#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

/// What the `process/*` notifications of one process came to so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProcessTally {
    /// Decoded bytes of every `process/output` chunk.
    pub output_bytes: usize,
    /// The highest seq of any of its notifications.
    pub last_seq: i64,
    pub exited: bool,
    pub closed: bool,
}

// ---------------------------------------------------------------------------------------------
// Transport

/// A TCP stream that can re-arm TCP_QUICKACK after every read (the kernel clears it again).
pub struct ClientStream {
    inner: TcpStream,
    quickack: bool,
}

impl ClientStream {
    pub fn tcp(&self) -> &TcpStream {
        &self.inner
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.quickack && matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let _ = rustix::net::sockopt::set_tcp_quickack(self.inner.as_fd(), true);
        }
        result
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(CLIENT_MAX_MESSAGE_BYTES))
        .max_frame_size(Some(CLIENT_MAX_MESSAGE_BYTES))
}

enum Transport {
    Ws(Box<WebSocketStream<ClientStream>>),
    Stdio {
        stdin: Option<ChildStdin>,
        stdout: Lines<BufReader<ChildStdout>>,
    },
}

/// What one read from the transport gave.
enum Read {
    /// A text frame, a binary one that is UTF-8, or a line (held as read, never copied: an
    /// answer can be 86 MiB).
    Text(Utf8Bytes),
    /// A frame that carries no message (a ping, a pong).
    Nothing,
    Ended,
}

// ---------------------------------------------------------------------------------------------
// Messages, as a lean client reads them

/// One message, with what a lean client needs borrowed from the text (a chunk is measured, not
/// copied).
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default)]
    id: Option<Value>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<WireParams<'a>>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireParams<'a> {
    #[serde(borrow, default)]
    process_id: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<i64>,
    #[serde(borrow, default)]
    chunk: Option<Cow<'a, str>>,
}

/// Decoded length of valid base64, without decoding it.
pub fn b64_len(s: &str) -> usize {
    let pad = s.bytes().rev().take_while(|&b| b == b'=').count();
    (s.len() / 4) * 3 - pad
}

// ---------------------------------------------------------------------------------------------
// Client

/// One connection to the server. Not `Clone`: one task drives it.
pub struct Client {
    transport: Transport,
    /// Counts process notifications only (see [`ConnectOptions::lean`]).
    lean: bool,
    /// Next id for [`Client::send_request`].
    next_id: i64,
    /// Messages received but not yet consumed, in arrival order (a lean client keeps answers
    /// only).
    pending: VecDeque<Value>,
    /// Every `process/output|exited|closed` notification received, by process id and seq (not
    /// kept by a lean client).
    events: HashMap<String, BTreeMap<i64, Value>>,
    /// What each process's notifications came to.
    tallies: HashMap<String, ProcessTally>,
    /// Notifications whose (process, seq) had already been received.
    duplicates: Vec<Value>,
    /// WebSocket pings received (each answered by the next read or write).
    pings: usize,
    /// The connection has ended (close frame, EOF or error).
    closed: bool,
}

impl Client {
    fn new(transport: Transport, lean: bool) -> Client {
        Client {
            transport,
            lean,
            next_id: 1,
            pending: VecDeque::new(),
            events: HashMap::new(),
            tallies: HashMap::new(),
            duplicates: Vec::new(),
            pings: 0,
            closed: false,
        }
    }

    /// A WebSocket to `url` (`ws://127.0.0.1:PORT`), not yet initialized. The TCP connect and
    /// the handshake each have [`DEADLINE`].
    pub async fn connect(url: &str, opts: ConnectOptions) -> Result<Client, ClientError> {
        Client::connect_with_headers(url, opts, &[]).await
    }

    /// [`Client::connect`], with extra headers on the upgrade request (`Authorization`).
    pub async fn connect_with_headers(
        url: &str,
        opts: ConnectOptions,
        headers: &[(&str, &str)],
    ) -> Result<Client, ClientError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError(format!("bad URL {url}: {e}")))?;
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| ClientError(format!("bad header name {name}: {e}")))?,
                value
                    .parse()
                    .map_err(|e| ClientError(format!("bad header value: {e}")))?,
            );
        }
        let addr = url
            .strip_prefix("ws://")
            .ok_or_else(|| ClientError(format!("not a ws:// URL: {url}")))?;
        let addr = addr.split('/').next().unwrap_or(addr);
        let tcp = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError(format!("connect to {addr} timed out")))?
            .map_err(|e| ClientError(format!("connect to {addr}: {e}")))?;
        tcp.set_nodelay(opts.at_once_acks)
            .map_err(|e| ClientError(format!("TCP_NODELAY: {e}")))?;
        let stream = ClientStream {
            inner: tcp,
            quickack: opts.at_once_acks,
        };
        let (ws, _response) = tokio::time::timeout(
            DEADLINE,
            tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())),
        )
        .await
        .map_err(|_| ClientError(format!("WebSocket handshake with {url} timed out")))?
        .map_err(|e| ClientError(format!("WebSocket handshake with {url}: {e}")))?;
        Ok(Client::new(Transport::Ws(Box::new(ws)), opts.lean))
    }

    /// The client side of a `--listen stdio` server: its stdin and stdout.
    pub fn over_stdio(stdin: ChildStdin, stdout: ChildStdout) -> Client {
        let transport = Transport::Stdio {
            stdin: Some(stdin),
            stdout: BufReader::new(stdout).lines(),
        };
        Client::new(transport, false)
    }

    // ----- sending

    /// Sends one text frame (one line on stdio) as is.
    pub async fn try_send_text(&mut self, text: String) -> Result<(), ClientError> {
        let result = match &mut self.transport {
            Transport::Ws(ws) => ws
                .send(Message::text(text))
                .await
                .map_err(|e| e.to_string()),
            Transport::Stdio { stdin, .. } => match stdin.as_mut() {
                Some(stdin) => {
                    let mut line = text.into_bytes();
                    line.push(b'\n');
                    stdin.write_all(&line).await.map_err(|e| e.to_string())
                }
                None => Err("stdin already closed".to_string()),
            },
        };
        result.map_err(|e| ClientError(format!("send failed: {e}")))
    }

    /// Sends one text frame (one line on stdio) as is.
    pub async fn send_raw_text(&mut self, text: &str) {
        ok_or_panic(self.try_send_text(text.to_string()).await);
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
            Transport::Ws(ws) => ws.get_mut().inner.write_all(bytes).await,
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

    /// Sends the request text `make(id)` for the next id and returns the id: for a request whose
    /// params are already serialized (the benchmark's large `fs/writeFile`).
    pub async fn try_send_request_text(
        &mut self,
        make: impl FnOnce(i64) -> String,
    ) -> Result<i64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.try_send_text(make(id)).await?;
        Ok(id)
    }

    /// Sends a request and returns its id without waiting for the answer.
    pub async fn try_send_request(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<i64, ClientError> {
        self.try_send_request_text(|id| {
            json!({"id": id, "method": method, "params": params}).to_string()
        })
        .await
    }

    /// Sends a request and returns its id without waiting for the answer.
    pub async fn send_request(&mut self, method: &str, params: Value) -> i64 {
        ok_or_panic(self.try_send_request(method, params).await)
    }

    pub async fn notify(&mut self, method: &str, params: Value) {
        self.send_json(&json!({"method": method, "params": params}))
            .await;
    }

    /// Sends a request and waits up to `within` for its answer.
    pub async fn try_request(
        &mut self,
        method: &str,
        params: Value,
        within: Duration,
    ) -> Result<Result<Value, RpcError>, ClientError> {
        let id = self.try_send_request(method, params).await?;
        self.try_await_answer(id, within).await
    }

    /// Sends a request and waits for its answer.
    pub async fn request(&mut self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.request_within(method, params, DEADLINE).await
    }

    /// Like [`Client::request`], waiting up to `within` for the answer instead of [`DEADLINE`]:
    /// for requests that move a lot of data (a debug build encodes 64 MiB of base64 slowly).
    pub async fn request_within(
        &mut self,
        method: &str,
        params: Value,
        within: Duration,
    ) -> Result<Value, RpcError> {
        ok_or_panic(self.try_request(method, params, within).await)
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

    /// Half-closes the connection (FIN towards the server, or EOF on its stdin) while still
    /// reading from it.
    pub fn shutdown_write(&mut self) {
        match &mut self.transport {
            Transport::Ws(ws) => {
                rustix::net::shutdown(ws.get_ref().inner.as_fd(), rustix::net::Shutdown::Write)
                    .expect("shutdown(SHUT_WR)");
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
            let _ = WebSocketStream::close(ws, None).await;
        }
        self.wait_for_close().await;
    }

    // ----- receiving

    /// One frame or line from the transport.
    async fn read(&mut self) -> Read {
        if self.closed {
            return Read::Ended;
        }
        match &mut self.transport {
            Transport::Ws(ws) => match ws.next().await {
                Some(Ok(Message::Text(t))) => Read::Text(t),
                Some(Ok(Message::Binary(b))) => Read::Text(
                    // A clone of `Bytes` shares the buffer.
                    Utf8Bytes::try_from(b.clone())
                        .unwrap_or_else(|_| String::from_utf8_lossy(&b).into_owned().into()),
                ),
                Some(Ok(Message::Ping(_))) => {
                    self.pings += 1;
                    Read::Nothing
                }
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => Read::Nothing,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Read::Ended,
            },
            Transport::Stdio { stdout, .. } => match stdout.next_line().await {
                Ok(Some(line)) if line.trim().is_empty() => Read::Nothing,
                Ok(Some(line)) => Read::Text(line.into()),
                Ok(None) | Err(_) => Read::Ended,
            },
        }
    }

    /// Reads one frame and files what it carried; `false` once the connection has ended.
    async fn read_one(&mut self) -> Result<bool, ClientError> {
        match self.read().await {
            Read::Text(text) => {
                if self.lean {
                    self.file_lean(text.as_str());
                } else {
                    self.file(text.as_str())?;
                }
                Ok(true)
            }
            Read::Nothing => Ok(true),
            Read::Ended => {
                self.closed = true;
                Ok(false)
            }
        }
    }

    /// A recording client keeps every message, and every process notification by seq too.
    fn file(&mut self, text: &str) -> Result<(), ClientError> {
        let message: Value = serde_json::from_str(text).map_err(|e| {
            ClientError(format!(
                "server sent a frame that is not JSON ({e}): {text:?}"
            ))
        })?;
        if !message.is_object() {
            return Err(ClientError(format!(
                "server sent a non-object message: {message}"
            )));
        }
        if let Some(method) = message.get("method").and_then(Value::as_str)
            && message.get("id").is_none()
        {
            let params = &message["params"];
            if method.starts_with("process/")
                && let (Some(pid), Some(seq)) =
                    (params["processId"].as_str(), params["seq"].as_i64())
            {
                let seqs = self.events.entry(pid.to_string()).or_default();
                match seqs.entry(seq) {
                    std::collections::btree_map::Entry::Occupied(_) => {
                        self.duplicates.push(message.clone())
                    }
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(message.clone());
                        self.count(method, pid, seq, params["chunk"].as_str());
                    }
                }
            }
        }
        self.pending.push_back(message);
        Ok(())
    }

    /// A lean client counts process notifications and keeps answers; it drops anything else,
    /// unparsable frames included.
    fn file_lean(&mut self, text: &str) {
        let Ok(wire) = serde_json::from_str::<Wire>(text) else {
            return;
        };
        if let Some(method) = &wire.method {
            if wire.id.is_none()
                && let Some(params) = &wire.params
                && let (Some(pid), Some(seq)) = (&params.process_id, params.seq)
            {
                self.count(method, pid, seq, params.chunk.as_deref());
            }
            return;
        }
        let Some(id) = wire.id else { return };
        // Built by moving the values in (`json!` would copy a large result).
        let mut answer = serde_json::Map::new();
        answer.insert("id".into(), id);
        match (wire.result, wire.error) {
            (_, Some(error)) => answer.insert("error".into(), error),
            (result, None) => answer.insert("result".into(), result.unwrap_or(Value::Null)),
        };
        self.pending.push_back(Value::Object(answer));
    }

    /// Counts one process notification.
    fn count(&mut self, method: &str, pid: &str, seq: i64, chunk: Option<&str>) {
        if !method.starts_with("process/") {
            return;
        }
        let tally = match self.tallies.get_mut(pid) {
            Some(t) => t,
            None => self.tallies.entry(pid.to_string()).or_default(),
        };
        tally.last_seq = tally.last_seq.max(seq);
        match method {
            "process/output" => tally.output_bytes += chunk.map(b64_len).unwrap_or(0),
            "process/exited" => tally.exited = true,
            "process/closed" => tally.closed = true,
            _ => {}
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

    /// Reads until `pick` finds what it wants among what has arrived, for at most `within`.
    pub async fn try_wait_until<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut pick: impl FnMut(&mut Client) -> Option<T>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = pick(self) {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, self.read_one()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    return Err(ClientError(format!(
                        "connection closed while waiting for {what}; {}",
                        self.summary()
                    )));
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(ClientError(format!(
                        "timed out after {within:?} waiting for {what}; {}",
                        self.summary()
                    )));
                }
            }
        }
    }

    /// [`Client::try_wait_until`] under [`DEADLINE`], failing the test on an error.
    async fn wait_until<T>(&mut self, what: &str, pick: impl FnMut(&mut Client) -> Option<T>) -> T {
        ok_or_panic(self.try_wait_until(what, DEADLINE, pick).await)
    }

    /// The next message not yet consumed, in arrival order.
    pub async fn next_message(&mut self) -> Value {
        self.wait_until("the next message", |c| c.pending.pop_front())
            .await
    }

    /// The next message, or `None` if the connection ends first.
    pub async fn next_message_or_close(&mut self) -> Option<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Some(m);
            }
            match tokio::time::timeout_at(deadline, self.read_one()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return None,
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => {
                    panic!("timed out after {DEADLINE:?} waiting for a message or the close")
                }
            }
        }
    }

    /// Waits until the server ends the connection; returns the messages that came before.
    pub async fn wait_for_close(&mut self) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.read_one()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return self.pending.drain(..).collect(),
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => panic!(
                    "timed out after {DEADLINE:?} waiting for the server to close the connection; {}",
                    self.summary()
                ),
            }
        }
    }

    /// Reads for `period` (so pings are answered) and returns whether the connection is still
    /// open at its end; what arrives meanwhile is kept. For a test whose scenario is a peer that
    /// is idle but alive.
    pub async fn read_idly_for(&mut self, period: Duration) -> bool {
        let until = Instant::now() + period;
        loop {
            match tokio::time::timeout_at(until, self.read_one()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return false,
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => return true,
            }
        }
    }

    /// Waits, without reading (so no ping is answered), until the server has closed its side of
    /// the WebSocket's TCP connection (the kernel reports the FIN as POLLRDHUP; what the server
    /// sent before it stays unread); fails the test after [`DEADLINE`].
    pub async fn wait_for_hang_up_without_reading(&self) {
        let Transport::Ws(ws) = &self.transport else {
            panic!("a hang-up is watched on a WebSocket")
        };
        let fd = ws
            .get_ref()
            .inner
            .as_fd()
            .try_clone_to_owned()
            .expect("dup the socket");
        let watch = tokio::task::spawn_blocking(move || {
            use rustix::event::{PollFd, PollFlags, Timespec};
            let timeout = Timespec {
                tv_sec: DEADLINE.as_secs() as _,
                tv_nsec: 0,
            };
            let mut fds = [PollFd::new(&fd, PollFlags::RDHUP)];
            loop {
                match rustix::event::poll(&mut fds, Some(&timeout)) {
                    Ok(0) => return false,
                    Ok(_) => return true,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => panic!("poll: {e}"),
                }
            }
        });
        assert!(
            watch.await.expect("poll task"),
            "the server did not close the connection within {DEADLINE:?}"
        );
    }

    /// WebSocket pings received so far.
    pub fn pings(&self) -> usize {
        self.pings
    }

    /// The whole answer message (`{"id", "result"|"error"}`) for `id`, which may be any JSON id.
    pub async fn try_await_raw_answer(
        &mut self,
        id: &Value,
        within: Duration,
    ) -> Result<Value, ClientError> {
        let what = format!("the answer to request {id}");
        self.try_wait_until(&what, within, |c| {
            let at = c
                .pending
                .iter()
                .position(|m| is_answer(m) && m.get("id") == Some(id))?;
            c.pending.remove(at)
        })
        .await
    }

    /// The whole answer message (`{"id", "result"|"error"}`) for `id`, which may be any JSON id.
    pub async fn await_raw_answer(&mut self, id: &Value) -> Value {
        ok_or_panic(self.try_await_raw_answer(id, DEADLINE).await)
    }

    /// The answer to request `id` within `within`, as `Ok(result)` or `Err((code, message))`.
    pub async fn try_await_answer(
        &mut self,
        id: i64,
        within: Duration,
    ) -> Result<Result<Value, RpcError>, ClientError> {
        let answer = self.try_await_raw_answer(&json!(id), within).await?;
        try_answer_to_result(answer)
    }

    /// The answer to request `id`, as `Ok(result)` or `Err((code, message))`.
    pub async fn await_answer(&mut self, id: i64) -> Result<Value, RpcError> {
        ok_or_panic(self.try_await_answer(id, DEADLINE).await)
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

    /// Takes the first notification already read that matches `pred` (for
    /// [`Client::try_wait_until`]).
    pub fn take_notification(&mut self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let at = self
            .pending
            .iter()
            .position(|m| !is_answer(m) && m.get("method").is_some() && pred(m))?;
        self.pending.remove(at)
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

    /// `initialize {clientName, resumeSessionId?}`; on success also sends `initialized`.
    pub async fn try_initialize(
        &mut self,
        client_name: &str,
        resume: Option<&str>,
        within: Duration,
    ) -> Result<Result<Value, RpcError>, ClientError> {
        let mut params = json!({"clientName": client_name});
        if let Some(id) = resume {
            params["resumeSessionId"] = json!(id);
        }
        let answer = self.try_request("initialize", params, within).await?;
        if answer.is_ok() {
            self.try_send_text(r#"{"method":"initialized","params":{}}"#.to_string())
                .await?;
        }
        Ok(answer)
    }

    /// `initialize {clientName: "test"}` + `initialized`; returns the session id.
    pub async fn initialize(&mut self) -> String {
        let result = match ok_or_panic(self.try_initialize("test", None, DEADLINE).await) {
            Ok(result) => result,
            Err(e) => panic!("initialize failed: {e:?}"),
        };
        result["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("initialize result without sessionId: {result}"))
            .to_string()
    }

    /// `initialize {clientName, resumeSessionId}`; on success also sends `initialized`.
    pub async fn initialize_resume(&mut self, session_id: &str) -> Result<Value, RpcError> {
        ok_or_panic(
            self.try_initialize("test", Some(session_id), DEADLINE)
                .await,
        )
    }

    // ----- processes

    /// `process/start`, failing the test on an error.
    pub async fn start_process(&mut self, params: Value) -> Value {
        self.request_ok("process/start", params).await
    }

    /// What the notifications of `process_id` came to so far.
    pub fn tally(&self, process_id: &str) -> ProcessTally {
        self.tallies.get(process_id).copied().unwrap_or_default()
    }

    /// Waits (up to `within`) until `process_id` is closed; returns its output bytes.
    pub async fn try_wait_closed(
        &mut self,
        process_id: &str,
        within: Duration,
    ) -> Result<usize, ClientError> {
        let what = format!("process/closed of {process_id}");
        self.try_wait_until(&what, within, |c| {
            let t = c.tallies.get(process_id)?;
            t.closed.then_some(t.output_bytes)
        })
        .await
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
        self.tallies.remove(process_id);
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

fn ok_or_panic<T>(result: Result<T, ClientError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn is_answer(m: &Value) -> bool {
    m.get("id").is_some() && (m.get("result").is_some() || m.get("error").is_some())
}

/// Turns an answer message into `Ok(result)` or `Err((code, message))`; an error when it is
/// neither.
pub fn try_answer_to_result(answer: Value) -> Result<Result<Value, RpcError>, ClientError> {
    let Value::Object(mut members) = answer else {
        return Err(ClientError(format!("answer that is no object: {answer}")));
    };
    if let Some(error) = members.get("error") {
        let (Some(code), Some(message)) = (error["code"].as_i64(), error["message"].as_str())
        else {
            return Err(ClientError(format!(
                "error without an integer code and a message: {error}"
            )));
        };
        return Ok(Err((code, message.to_string())));
    }
    // Moved out, not copied: a result can be 86 MiB.
    match members.remove("result") {
        Some(result) => Ok(Ok(result)),
        None => Err(ClientError(format!(
            "answer without result: {}",
            Value::Object(members)
        ))),
    }
}

/// Turns an answer message into `Ok(result)` or `Err((code, message))`.
pub fn answer_to_result(answer: Value) -> Result<Value, RpcError> {
    ok_or_panic(try_answer_to_result(answer))
}

// ---------------------------------------------------------------------------------------------
// Payloads

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
