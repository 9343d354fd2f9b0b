//! The Rust client of the exec-server, for orchestrators to embed; it shares [`crate::protocol`]
//! with the server, so the two ends cannot drift apart.
//!
//! ```no_run
//! # async fn demo() -> Result<(), codex::client::ClientError> {
//! use codex::client::{ClientOptions, ExecServerClient, ProcessEvent};
//! let client = ExecServerClient::connect("ws://127.0.0.1:8080", ClientOptions::default()).await?;
//! let cwd = client.environment_info().map(|e| e.cwd).unwrap_or_else(|| "file:///".into());
//! let mut process = client.start(codex::client::start_params("p1", ["echo", "hi"], cwd)).await?;
//! while let Some(event) = process.recv().await {
//!     if let ProcessEvent::Output { data, .. } = event? {
//!         print!("{}", String::from_utf8_lossy(&data));
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! What it guarantees: answers are matched to calls by id; each process's events are published
//! strictly in seq order, each once, whatever order notifications arrive in; a dropped transport
//! is resumed (`initialize {resumeSessionId}`) and every live process caught up from the
//! server's retained output, publishing only what is new. What it cannot recover (output the
//! server no longer retains) fails that process alone, with an error that says so.
//!
//! # Layout
//! - [`connector`]: opening transports: a WebSocket URL, or a child's stdio (killed with its
//!   process group when the client goes away), or any [`Connect`] (tests use in-memory ones).
//! - `connection.rs`: one transport: requests and their answers by id, the reader task that routes
//!   notifications.
//! - `recovery.rs`: the state machine Connecting → Connected → Recovering → Connected | Failed (the
//!   diagram is there), the resume and the catch-up reads.
//! - [`replay`]: the one table of which in-flight calls are resent after a resume.
//! - [`sequencer`]: pure ordering, dedupe and catch-up merging of one process's events.
//! - `process.rs`: the process table, [`ProcessHandle`] and [`ProcessControl`].
//! - `fs.rs`: typed `fs/*` calls, and streamed downloads over `fs/open`/`fs/readBlock`.
//! - `transfer.rs`: whole-file uploads and downloads, verified by sha256, that go on across a
//!   dropped connection (`codex remote cp` is a thin front end on them).
#![warn(clippy::missing_docs_in_private_items)]

mod connection;
pub mod connector;
mod error;
mod fs;
mod process;
mod recovery;
pub mod replay;
pub mod sequencer;
mod transfer;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use connector::{Connect, ConnectFuture, WebSocketConnector};
pub use error::ClientError;
pub use fs::Download;
pub use process::{ProcessControl, ProcessHandle, ProcessOutput};
pub use sequencer::{ProcessEvent, SequenceError};
pub use transfer::{MAX_UPLOAD_BYTES, Phase, Progress, TransferError, Transferred};

use connection::CallError;
use connector::ChildGroup;
use process::ProcessTable;
use recovery::{State, Transition};

use crate::protocol::method;
use crate::protocol::process::{EnvPolicy, StartParams, StartResult};
use crate::protocol::session::{EnvironmentInfo, InitializeParams, InitializeResult};

/// Tunables of a client. The defaults are the reference client's.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `clientName` sent in `initialize`.
    pub client_name: String,
    /// How long a resume may keep trying before the session counts as lost. 25 s leaves a margin
    /// inside the server's 30 s detached-session TTL (the two clocks start independently).
    pub recovery_deadline: Duration,
    /// Pause between resume attempts (after -32010 or a connection error).
    pub retry_interval: Duration,
    /// Events buffered per process before the client stops reading the connection (which in
    /// turn makes the server block the process).
    pub event_buffer: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            client_name: format!("codex-remote/{}", env!("CARGO_PKG_VERSION")),
            recovery_deadline: Duration::from_secs(25),
            retry_interval: Duration::from_millis(100),
            event_buffer: 256,
        }
    }
}

/// The connection as observers see it ([`ExecServerClient::watch_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// The first handshake is under way.
    Connecting,
    /// Calls go out.
    Connected,
    /// The transport dropped; the client is resuming the session. Calls wait.
    Recovering {
        /// Why the transport dropped.
        reason: String,
    },
    /// The session is lost (terminal).
    Failed {
        /// Why.
        error: ClientError,
    },
}

/// Counters, for soak tests and curious operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Resumes that completed.
    pub recoveries: u64,
    /// Output bytes past the last published seq that came back through catch-up reads
    /// (including any that live notifications also delivered).
    pub catch_up_bytes: u64,
    /// The most bytes one process needed caught up after one resume: what the server's
    /// `--retained-output-bytes` had to cover.
    pub largest_catch_up_bytes: u64,
}

/// State shared by the client's clones and its tasks.
struct Inner {
    /// Name, deadlines, buffer sizes.
    options: ClientOptions,
    /// Opens transports for resume attempts; `None` when the transport cannot be reopened (a
    /// stdio child: its end is the server's end).
    connector: Option<Arc<dyn Connect>>,
    /// The state machine (`recovery.rs`); a watch so that callers can wait for a change.
    state: watch::Sender<State>,
    /// The public view of `state`.
    status: watch::Sender<ConnectionStatus>,
    /// The session to resume, from the first `initialize` answer.
    session_id: OnceLock<String>,
    /// From the last `initialize` answer.
    environment: Mutex<Option<EnvironmentInfo>>,
    /// The processes the client follows.
    processes: ProcessTable,
    /// The next JSON-RPC request id; unique across transports, so a stale answer never matches.
    next_request_id: AtomicI64,
    /// The next transport id.
    next_conn_id: AtomicU64,
    /// Where every task of the client runs (transport pumps, readers, the resume).
    tracker: TaskTracker,
    /// Fired when the last user-facing clone is gone: every task stops.
    cancel: CancellationToken,
    /// See [`ClientStats`].
    stats: Mutex<ClientStats>,
}

impl Inner {
    /// A fresh request id.
    fn next_request_id(&self) -> i64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh transport id.
    fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Ends the client's tasks (and kills a stdio child's process group) when the last user-facing
/// clone of the client is dropped. The client's own tasks do not hold it.
struct Guard {
    /// Stops every task of the client.
    cancel: CancellationToken,
    /// The server child of [`ExecServerClient::spawn_stdio`].
    _child: Option<ChildGroup>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A connection to one exec-server session that survives dropped transports. Cheap to clone;
/// the connection ends when the last clone and the last [`ProcessHandle`] are gone.
#[derive(Clone)]
pub struct ExecServerClient {
    /// Shared state.
    inner: Arc<Inner>,
    /// Held by user-facing clones only; see [`Guard`].
    _guard: Arc<Guard>,
}

impl ExecServerClient {
    /// Connects to `ws://IP:PORT` and starts a new session.
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Self, ClientError> {
        Self::connect_with(Arc::new(WebSocketConnector::new(url)), options).await
    }

    /// Connects with `connector` (also used for every resume) and starts a new session.
    pub async fn connect_with(
        connector: Arc<dyn Connect>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let tracker = TaskTracker::new();
        let transport = connector.connect(&tracker).await?;
        let target = connector.target();
        Self::handshake(transport, Some(connector), None, tracker, options, target).await
    }

    /// Spawns `command` (e.g. `codex exec-server --listen stdio`, perhaps behind `ssh`) in a
    /// process group of its own and speaks to it over its stdin/stdout. The group is killed when
    /// the client goes away. Such a transport cannot be reopened: when it ends, the session is
    /// lost.
    pub async fn spawn_stdio(
        command: std::process::Command,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let tracker = TaskTracker::new();
        let target = format!("{command:?}");
        let (transport, child) = connector::spawn_stdio(command, &tracker)?;
        Self::handshake(transport, None, Some(child), tracker, options, target).await
    }

    /// Builds the client around its first transport and runs `initialize`/`initialized`.
    async fn handshake(
        transport: crate::rpc::Transport,
        connector: Option<Arc<dyn Connect>>,
        child: Option<ChildGroup>,
        tracker: TaskTracker,
        options: ClientOptions,
        target: String,
    ) -> Result<Self, ClientError> {
        let cancel = CancellationToken::new();
        let inner = Arc::new(Inner {
            options,
            connector,
            state: watch::Sender::new(State::Connecting),
            status: watch::Sender::new(ConnectionStatus::Connecting),
            session_id: OnceLock::new(),
            environment: Mutex::new(None),
            processes: ProcessTable::default(),
            next_request_id: AtomicI64::new(1),
            next_conn_id: AtomicU64::new(1),
            tracker,
            cancel: cancel.clone(),
            stats: Mutex::new(ClientStats::default()),
        });
        let client = Self {
            inner: inner.clone(),
            _guard: Arc::new(Guard {
                cancel,
                _child: child,
            }),
        };
        let conn = connection::start(&inner, transport);
        let params = InitializeParams {
            client_name: inner.options.client_name.clone(),
            resume_session_id: None,
        };
        let lost = |what: &str| ClientError::Connect {
            target: target.clone(),
            message: format!("the connection closed {what}"),
        };
        let answer = conn
            .request(inner.next_request_id(), method::INITIALIZE, &params)
            .await;
        let result: InitializeResult = match answer {
            Ok(value) => decode(method::INITIALIZE, value)?,
            Err(CallError::Server { code, message }) => {
                return Err(ClientError::Server {
                    method: method::INITIALIZE.into(),
                    code,
                    message,
                });
            }
            Err(CallError::NotSent | CallError::Lost) => return Err(lost("during initialize")),
        };
        let _ = inner.session_id.set(result.session_id);
        *inner.environment.lock().unwrap() = result.environment_info;
        conn.notify(method::INITIALIZED, json!({}))
            .await
            .map_err(|_| lost("after initialize"))?;
        if !inner.apply(Transition::Resumed(conn)) {
            return Err(lost("right after initialize"));
        }
        Ok(client)
    }

    /// The session id (what a resume names).
    pub fn session_id(&self) -> &str {
        self.inner
            .session_id
            .get()
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The executor's description from the last `initialize` answer.
    pub fn environment_info(&self) -> Option<EnvironmentInfo> {
        self.inner.environment.lock().unwrap().clone()
    }

    /// The connection's state now.
    pub fn status(&self) -> ConnectionStatus {
        self.inner.status.borrow().clone()
    }

    /// A receiver that sees every change of the connection's state.
    pub fn watch_status(&self) -> watch::Receiver<ConnectionStatus> {
        self.inner.status.subscribe()
    }

    /// Counters since the client started.
    pub fn stats(&self) -> ClientStats {
        *self.inner.stats.lock().unwrap()
    }

    /// Calls `method` and decodes its answer. Waits while the client is recovering; if the
    /// transport drops with the call in flight, [`replay`] decides.
    pub async fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<R, ClientError> {
        let params = serde_json::to_value(params).map_err(|e| ClientError::Decode {
            method: method.to_string(),
            message: format!("params do not encode: {e}"),
        })?;
        decode(method, self.inner.call_value(method, params).await?)
    }

    /// `environment/info`.
    pub async fn environment(&self) -> Result<EnvironmentInfo, ClientError> {
        self.call(method::ENVIRONMENT_INFO, &json!({})).await
    }

    /// Starts a process and returns its handle. If the transport drops before the answer, the
    /// start is not replayed: the client terminates `processId` on the resumed session and
    /// returns [`ClientError::StartAmbiguous`].
    pub async fn start(&self, params: StartParams) -> Result<ProcessHandle, ClientError> {
        let mut handle = process::new_handle(self, &params.process_id)?;
        let result: StartResult = self.call(method::PROCESS_START, &params).await?;
        process::mark_started(&mut handle, result.sandbox_type);
        Ok(handle)
    }

    /// Ends the session from our side: every call and handle fails with [`ClientError::Closed`].
    pub fn close(&self) {
        self.inner.apply(Transition::GaveUp(ClientError::Closed));
        self.inner.cancel.cancel();
    }
}

/// Decodes an answer.
fn decode<R: DeserializeOwned>(method: &str, value: serde_json::Value) -> Result<R, ClientError> {
    serde_json::from_value(value).map_err(|e| ClientError::Decode {
        method: method.to_string(),
        message: e.to_string(),
    })
}

/// `process/start` params with the usual defaults: the server's environment (minus its default
/// excludes), pipes, stdin at EOF.
pub fn start_params<I, S>(process_id: &str, argv: I, cwd: String) -> StartParams
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    StartParams {
        process_id: process_id.to_string(),
        argv: argv.into_iter().map(Into::into).collect(),
        cwd,
        env: BTreeMap::new(),
        env_policy: Some(EnvPolicy::default()),
        tty: false,
        pipe_stdin: false,
        arg0: None,
        sandbox: None,
        enforce_managed_network: false,
        managed_network: None,
    }
}
