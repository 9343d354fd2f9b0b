//! The client's connection state machine, and the resume that drives it.
//!
//! ```text
//!                initialize ok
//!   Connecting ─────────────────► Connected{conn} ◄────────────────────┐
//!       │                            │                                  │ resumed, and every
//!       │ failed: the constructor    │ transport drops                  │ live process caught up
//!       │ returns the error          ▼                                  │
//!       │                         Recovering{reason} ── attempt ────────┘
//!       │                            │   ▲  connect, initialize{resumeSessionId}, initialized,
//!       │                            │   │  process/read {afterSeq: last published} per process;
//!       │                            │   └─ -32010 or a connection error: again in 100 ms
//!       │                            │
//!       │                            │ deadline (25 s), session refused, or a transport
//!       ▼                            ▼ that cannot reconnect (a stdio child)
//!     (error)                     Failed{error}  ◄── close() from any state
//! ```
//!
//! - Connected: calls go out on `conn`.
//! - Recovering: new calls wait. Calls that were in flight when the transport dropped follow
//!   [`super::replay`]: resent after the resume, failed, or (`process/start`) terminated and
//!   reported as ambiguous. The new transport's reader runs from the first message, so
//!   notifications that precede the `initialize` answer are kept. Each live process is caught up
//!   with `process/read {afterSeq: last published}` (more reads while the answer was cut by
//!   `maxBytes`), and its sequencer publishes only what is new; a gap fails only that process.
//!   What each read brings that simply continues the sequence is published at once, so a catch-up
//!   cut short by the next drop keeps its progress.
//! - Failed: terminal. Every waiting call and every handle gets the error; nothing waits forever.
//!
//! The transitions are one pure fn, [`next`]; [`Inner::apply`] runs it under the state's lock and
//! starts what a new state needs (the resume task, failing every handle).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ack::Acks;
use super::connection::{self, CallError, Conn, Events};
use super::connector::Connect;
use super::error::ClientError;
use super::replay::{self, Replay};
use super::sequencer::{CatchUp, ProcessEvent};
use super::status::{ClientOptions, ClientStats, ConnectionStatus};
use super::table::{Outcome, ProcessEntry, ProcessTable};
use super::watches::WatchTable;
use crate::protocol::fs::ChangedParams;
use crate::protocol::process::{ReadParams, ReadResult};
use crate::protocol::session::{EnvironmentInfo, InitializeParams, InitializeResult};
use crate::protocol::{ErrorCode, method};

/// Largest `maxBytes` of one catch-up read; the reads loop while the answer was cut short. Small
/// enough that on a connection that keeps dropping each read still gets through, and what it
/// brought is published at once (progress survives the next cut).
const CATCH_UP_MAX_BYTES: u64 = 256 << 10;

/// Where the connection is; see the module diagram. Each variant holds only its own data.
pub(super) enum State {
    /// The first handshake is under way.
    Connecting,
    /// Calls go out on this transport.
    Connected(Arc<Conn>),
    /// The transport dropped; the resume task is at work.
    Recovering {
        /// Why the transport dropped.
        reason: String,
    },
    /// Terminal.
    Failed(ClientError),
}

/// What happened to the connection.
pub(super) enum Transition {
    /// A transport's reader ended.
    Dropped {
        /// Which transport.
        conn: u64,
        /// Why.
        reason: String,
        /// Whether the client can open another one (false for a stdio child).
        can_reconnect: bool,
    },
    /// A handshake (the first, or a resume with every process caught up) completed on `conn`.
    Resumed(Arc<Conn>),
    /// The resume gave up, or the client was closed.
    GaveUp(ClientError),
}

/// The state after `transition`, or `None` if it changes nothing (e.g. the drop of a transport
/// that is no longer the current one, or a resume on a transport that already closed).
pub(super) fn next(state: &State, transition: Transition) -> Option<State> {
    match (state, transition) {
        (State::Failed(_), _) => None,
        (
            State::Connected(current),
            Transition::Dropped {
                conn,
                reason,
                can_reconnect,
            },
        ) if current.id == conn => Some(if can_reconnect {
            State::Recovering { reason }
        } else {
            State::Failed(ClientError::SessionLost { reason })
        }),
        (State::Connecting | State::Recovering { .. }, Transition::Resumed(conn))
            if !conn.is_closed() =>
        {
            Some(State::Connected(conn))
        }
        (_, Transition::GaveUp(error)) => Some(State::Failed(error)),
        _ => None,
    }
}

/// The public view of a state.
fn status_of(state: &State) -> ConnectionStatus {
    match state {
        State::Connecting => ConnectionStatus::Connecting,
        State::Connected(_) => ConnectionStatus::Connected,
        State::Recovering { reason } => ConnectionStatus::Recovering {
            reason: reason.clone(),
        },
        State::Failed(error) => ConnectionStatus::Failed {
            error: error.clone(),
        },
    }
}

/// How one resume attempt failed.
enum Attempt {
    /// Worth another try after the retry interval (-32010, connection errors).
    Retry(String),
    /// The session cannot be resumed.
    Fatal(ClientError),
}

/// Closes a transport on drop unless defused: an abandoned attempt must not leave its reader and
/// socket behind.
struct CloseOnDrop(Option<Arc<Conn>>);

impl CloseOnDrop {
    /// Keeps the transport open.
    fn defuse(mut self) -> Arc<Conn> {
        self.0.take().expect("defused once")
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            conn.close();
        }
    }
}

/// State shared by the client's clones and its tasks.
pub(super) struct Inner {
    /// Name, deadlines, buffer sizes.
    pub(super) options: ClientOptions,
    /// Opens transports for resume attempts; `None` when the transport cannot be reopened (a
    /// stdio child: its end is the server's end).
    pub(super) connector: Option<Arc<dyn Connect>>,
    /// The state machine (`recovery.rs`); a watch so that callers can wait for a change.
    pub(super) state: watch::Sender<State>,
    /// The public view of `state`.
    pub(super) status: watch::Sender<ConnectionStatus>,
    /// The session to resume, from the first `initialize` answer.
    pub(super) session_id: OnceLock<String>,
    /// From the last `initialize` answer.
    pub(super) environment: Mutex<Option<EnvironmentInfo>>,
    /// The processes the client follows.
    pub(super) processes: ProcessTable,
    /// The next JSON-RPC request id; unique across transports, so a stale answer never matches.
    pub(super) next_request_id: AtomicI64,
    /// The next transport id.
    pub(super) next_conn_id: AtomicU64,
    /// Where every task of the client runs (transport pumps, readers, the resume).
    pub(super) tracker: TaskTracker,
    /// Fired when the last user-facing clone is gone: every task stops.
    pub(super) cancel: CancellationToken,
    /// See [`ClientStats`].
    pub(super) stats: Mutex<ClientStats>,
    /// The `fs/watch` watches the client follows.
    pub(super) watches: WatchTable,
    /// Published output waiting to be acknowledged (`process/ack`, issue 15).
    pub(super) acks: Acks,
}

impl Inner {
    /// A fresh request id.
    pub(super) fn next_request_id(&self) -> i64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh transport id.
    pub(super) fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}

impl Inner {
    /// Wraps a new transport and starts its reader.
    pub(super) fn open(self: &Arc<Self>, transport: crate::rpc::Transport) -> Arc<Conn> {
        connection::start(
            self,
            self.next_conn_id(),
            transport,
            &self.tracker,
            &self.cancel,
        )
    }
}

impl Events for Inner {
    async fn process_event(
        self: &Arc<Self>,
        conn: u64,
        process_id: String,
        event: Result<ProcessEvent, String>,
    ) {
        let bytes = match &event {
            Ok(ProcessEvent::Output { data, .. }) => data.len() as u64,
            _ => 0,
        };
        if let Some((entry, outcome)) = self.processes.route(conn, &process_id, event).await {
            if outcome == Outcome::Open {
                self.note_published(&entry, bytes);
            }
            self.settle(&entry, outcome);
        }
    }

    fn transport_ended(self: &Arc<Self>, conn: u64, reason: String) {
        let dropped = self.apply(Transition::Dropped {
            conn,
            reason,
            can_reconnect: self.connector.is_some(),
        });
        if dropped {
            // The server ended the connection's watches with it.
            self.watches.end_all();
        }
    }

    fn fs_changed(self: &Arc<Self>, changed: ChangedParams) {
        self.watches.deliver(changed);
    }
}

impl Inner {
    /// Runs a transition; on entering Recovering starts the resume task, on entering Failed fails
    /// every handle. Returns whether the state changed.
    pub(super) fn apply(self: &Arc<Self>, transition: Transition) -> bool {
        let mut entered = None;
        self.state
            .send_if_modified(|state| match next(state, transition) {
                Some(new) => {
                    entered = Some(status_of(&new));
                    *state = new;
                    true
                }
                None => false,
            });
        let Some(status) = entered else {
            return false;
        };
        tracing::debug!(?status, "connection state");
        self.status.send_replace(status.clone());
        match status {
            ConnectionStatus::Recovering { reason } => {
                let inner = self.clone();
                self.tracker
                    .spawn(async move { inner.recover(reason).await });
            }
            ConnectionStatus::Failed { error } => {
                self.watches.end_all();
                let entries = self.processes.drain();
                self.tracker.spawn(async move {
                    for entry in entries {
                        entry.fail(error.clone()).await;
                    }
                });
            }
            ConnectionStatus::Connecting | ConnectionStatus::Connected => {}
        }
        true
    }

    /// The current transport; waits while connecting or recovering.
    pub(super) async fn connection(&self) -> Result<Arc<Conn>, ClientError> {
        let mut state = self.state.subscribe();
        loop {
            match &*state.borrow_and_update() {
                State::Connected(conn) if !conn.is_closed() => return Ok(conn.clone()),
                State::Failed(error) => return Err(error.clone()),
                _ => {}
            }
            if state.changed().await.is_err() {
                return Err(ClientError::Closed);
            }
        }
    }

    /// One call, following [`replay`] when the transport drops under it.
    pub(super) async fn call_value(
        self: &Arc<Self>,
        method: &str,
        params: Value,
    ) -> Result<Value, ClientError> {
        self.call_params(method, &params).await
    }

    /// [`Self::call_value`] with params of either kind ([`CallParams`]).
    pub(super) async fn call_params(
        self: &Arc<Self>,
        method: &str,
        params: &(impl CallParams + ?Sized),
    ) -> Result<Value, ClientError> {
        loop {
            let conn = self.connection().await?;
            let id = self.next_request_id();
            match conn.request_text(id, params.request(id, method)).await {
                Ok(value) => return Ok(value),
                Err(CallError::Server { code, message }) => {
                    return Err(ClientError::Server {
                        method: method.to_string(),
                        code,
                        message,
                    });
                }
                Err(CallError::NotSent) => {
                    // The writer is gone: make sure the reader notices too, then wait for the
                    // next transport.
                    conn.close();
                }
                Err(CallError::Lost) => match replay::policy(method) {
                    Replay::Resend => {}
                    Replay::Fail | Replay::Redone | Replay::NotSent => {
                        return Err(ClientError::Disconnected {
                            method: method.to_string(),
                        });
                    }
                    Replay::TerminateAndReport => {
                        let process_id = params.process_id().unwrap_or_default();
                        let terminate = Box::pin(self.call_value(
                            method::PROCESS_TERMINATE,
                            json!({ "processId": process_id }),
                        ));
                        if let Err(err) = terminate.await {
                            tracing::warn!(%process_id, %err, "terminating an ambiguous start");
                        }
                        return Err(ClientError::StartAmbiguous { process_id });
                    }
                },
            }
        }
    }

    /// Whether the server takes acknowledgements (`outputAck`).
    fn acks_taken(&self) -> bool {
        self.environment
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|env| env.capabilities.output_ack)
    }

    /// Records what `entry` has published (`bytes` of output just now) for the next
    /// `process/ack`, if the server takes acknowledgements (`outputAck`).
    fn note_published(self: &Arc<Self>, entry: &ProcessEntry, bytes: u64) {
        let acks_taken = self.acks_taken();
        if !acks_taken {
            return;
        }
        self.acks.note(entry.id(), entry.last_published(), bytes);
        if self.acks.start() {
            let inner = self.clone();
            self.tracker.spawn(async move {
                tokio::select! {
                    _ = inner.send_acks() => {}
                    _ = inner.cancel.cancelled() => {}
                }
            });
        }
    }

    /// The handle of `entry` is gone before its close: if the server takes acknowledgements,
    /// tell it the client no longer follows the process (`following: false`), so its output
    /// goes back to a ring instead of waiting for acknowledgements that will not come.
    pub(super) fn unfollow(self: &Arc<Self>, entry: &ProcessEntry) {
        let acks_taken = self.acks_taken();
        if !acks_taken || entry.closed() || self.cancel.is_cancelled() {
            return;
        }
        let params = json!({
            "processId": entry.id(),
            "seq": entry.last_published(),
            "following": false,
        });
        let inner = self.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = inner.call_value(method::PROCESS_ACK, params) => {}
                _ = inner.cancel.cancelled() => {}
            }
        });
    }

    /// Sends each batch of acknowledgements, one `process/ack` per process; a refused one (the
    /// process is gone) changes nothing.
    async fn send_acks(self: &Arc<Self>) {
        loop {
            for (process_id, seq) in self.acks.next_batch().await {
                if seq == 0 {
                    continue;
                }
                let params = json!({ "processId": process_id, "seq": seq });
                if let Err(err) = self.call_value(method::PROCESS_ACK, params).await {
                    tracing::debug!(%err, "process/ack refused");
                }
            }
        }
    }

    /// Settles an entry after publishing: a closed one leaves the table, a failed one leaves it
    /// and is terminated on the server (in the background, once a transport is there).
    pub(super) fn settle(self: &Arc<Self>, entry: &Arc<ProcessEntry>, outcome: Outcome) {
        match outcome {
            Outcome::Open => {}
            Outcome::Closed => self.processes.remove_if_same(entry.id(), entry),
            Outcome::Failed => {
                self.processes.remove_if_same(entry.id(), entry);
                let inner = self.clone();
                let process_id = entry.id().to_string();
                self.tracker.spawn(async move {
                    let terminate = inner.call_value(
                        method::PROCESS_TERMINATE,
                        json!({ "processId": process_id }),
                    );
                    tokio::select! {
                        _ = terminate => {}
                        _ = inner.cancel.cancelled() => {}
                    }
                });
            }
        }
    }

    /// The resume task: attempts until one succeeds, the session is refused, or the deadline.
    async fn recover(self: Arc<Self>, reason: String) {
        let deadline = Instant::now() + self.options.recovery_deadline;
        let mut last_error = reason.clone();
        let error = loop {
            let attempt = tokio::select! {
                a = tokio::time::timeout_at(deadline, self.resume_once()) => a,
                _ = self.cancel.cancelled() => return,
            };
            match attempt {
                Ok(Ok(conn)) => {
                    if self.apply(Transition::Resumed(conn)) {
                        self.stats.lock().unwrap().recoveries += 1;
                        return;
                    }
                    last_error = "the new connection closed right after the resume".into();
                }
                Ok(Err(Attempt::Retry(error))) => last_error = error,
                Ok(Err(Attempt::Fatal(error))) => break error,
                Err(_elapsed) => break self.deadline_error(&reason, &last_error),
            }
            let now = Instant::now();
            if now >= deadline {
                break self.deadline_error(&reason, &last_error);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.min(now + self.options.retry_interval)) => {}
                _ = self.cancel.cancelled() => return,
            }
        };
        self.apply(Transition::GaveUp(error));
    }

    /// The error of a resume that ran out of time.
    fn deadline_error(&self, reason: &str, last_error: &str) -> ClientError {
        ClientError::SessionLost {
            reason: format!(
                "{reason}; could not resume the session within {:?} (last attempt: {last_error})",
                self.options.recovery_deadline
            ),
        }
    }

    /// Counts the bytes one catch-up brought back.
    fn note_catch_up(&self, bytes: u64) {
        let mut stats = self.stats.lock().unwrap();
        stats.catch_up_bytes += bytes;
        stats.largest_catch_up_bytes = stats.largest_catch_up_bytes.max(bytes);
    }

    /// One attempt: connect, resume, catch every live process up.
    async fn resume_once(self: &Arc<Self>) -> Result<Arc<Conn>, Attempt> {
        let Some(connector) = self.connector.as_ref() else {
            return Err(Attempt::Fatal(ClientError::SessionLost {
                reason: "the transport cannot be reopened".into(),
            }));
        };
        let transport = connector.connect(&self.tracker).await.map_err(|e| {
            if e.is_final_for_connect() {
                Attempt::Fatal(e)
            } else {
                Attempt::Retry(e.to_string())
            }
        })?;
        let conn = self.open(transport);
        let guard = CloseOnDrop(Some(conn.clone()));
        let session_id = self.session_id.get().cloned().unwrap_or_default();
        let params = InitializeParams {
            client_name: self.options.client_name.clone(),
            resume_session_id: Some(session_id.clone()),
        };
        match conn
            .request(self.next_request_id(), method::INITIALIZE, &params)
            .await
        {
            Ok(value) => {
                if let Ok(result) = serde_json::from_value::<InitializeResult>(value)
                    && result.environment_info.is_some()
                {
                    *self.environment.lock().unwrap() = result.environment_info;
                }
            }
            Err(CallError::Server { code, message })
                if code == ErrorCode::SessionAttached.code() =>
            {
                return Err(Attempt::Retry(message));
            }
            Err(CallError::Server { code, message }) => {
                return Err(Attempt::Fatal(ClientError::SessionLost {
                    reason: format!(
                        "the server refused to resume session {session_id}: {message} (code {code})"
                    ),
                }));
            }
            Err(CallError::NotSent | CallError::Lost) => {
                return Err(Attempt::Retry(
                    "the connection closed during initialize".into(),
                ));
            }
        }
        conn.notify(method::INITIALIZED, json!({}))
            .await
            .map_err(|_| Attempt::Retry("the connection closed after initialize".into()))?;
        for (entry, started) in self.processes.followed() {
            self.catch_up(&conn, &entry, started).await?;
        }
        Ok(guard.defuse())
    }

    /// Reads what `entry` missed and publishes what is new; a process whose events cannot be
    /// recovered fails alone. For a process whose start is not confirmed (`started` false), a
    /// refused read means it never started: its start call reports that, not the catch-up.
    async fn catch_up(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        entry: &Arc<ProcessEntry>,
        started: bool,
    ) -> Result<(), Attempt> {
        let process_id = entry.id().to_string();
        let mut cursor = entry.last_published();
        let mut chunks = VecDeque::new();
        let mut bytes = 0u64;
        let mut gap: Option<(u64, u64)> = None;
        let catch_up = loop {
            let params = ReadParams {
                process_id: process_id.clone(),
                after_seq: Some(cursor),
                max_bytes: Some(CATCH_UP_MAX_BYTES),
                wait_ms: Some(0),
            };
            let answer = conn
                .request(self.next_request_id(), method::PROCESS_READ, &params)
                .await;
            let read = match answer {
                Ok(value) => {
                    serde_json::from_value::<ReadResult>(value).map_err(|e| ClientError::Decode {
                        method: method::PROCESS_READ.into(),
                        message: e.to_string(),
                    })
                }
                Err(CallError::Server { .. }) if !started => return Ok(()),
                Err(CallError::Server { message, .. }) => Err(ClientError::CatchUp {
                    process_id: process_id.clone(),
                    message,
                }),
                Err(CallError::NotSent | CallError::Lost) => {
                    return Err(Attempt::Retry(format!(
                        "the connection closed while catching up process {process_id}"
                    )));
                }
            };
            let read = match read {
                Ok(read) => read,
                Err(error) => {
                    entry.fail(error).await;
                    self.settle(entry, Outcome::Failed);
                    return Ok(());
                }
            };
            let ReadResult {
                chunks: read_chunks,
                next_seq,
                exited,
                exit_code,
                closed,
                failure,
                sandbox_denied,
                timed_out: _,
                gap: read_gap,
                exited_seq,
                closed_seq: _,
            } = read;
            let last = read_chunks.last().map(|c| c.seq);
            for chunk in read_chunks.into_iter().filter(|c| c.seq > cursor) {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(chunk.chunk.as_bytes())
                    .map_err(|e| ClientError::Decode {
                        method: method::PROCESS_READ.into(),
                        message: format!("invalid base64 in chunk {}: {e}", chunk.seq),
                    });
                let data = match data {
                    Ok(data) => data,
                    Err(error) => {
                        entry.fail(error).await;
                        self.settle(entry, Outcome::Failed);
                        return Ok(());
                    }
                };
                bytes += data.len() as u64;
                chunks.push_back(ProcessEvent::Output {
                    seq: chunk.seq,
                    stream: chunk.stream,
                    data,
                });
            }
            if !chunks.is_empty() {
                match entry.publish(|s| s.take_contiguous(&mut chunks)).await {
                    Outcome::Open => {}
                    outcome => {
                        self.note_catch_up(bytes);
                        self.settle(entry, outcome);
                        return Ok(());
                    }
                }
            }
            if let Some(g) = read_gap {
                gap = Some(match gap {
                    Some((from, to)) => (g.from_seq.min(from), g.to_seq.max(to)),
                    None => (g.from_seq, g.to_seq),
                });
            }
            let partial = CatchUp {
                exited_seq,
                gap,
                exited,
                exit_code,
                sandbox_denied,
                failure,
                ..CatchUp::default()
            };
            match last {
                // Cut short by maxBytes: more is retained after `last`.
                Some(last) if next_seq <= last + 1 => {
                    cursor = last;
                    // Live notifications on this transport already cover what follows.
                    if entry
                        .live_since(conn.id)
                        .is_some_and(|low| low <= cursor + 1)
                    {
                        break CatchUp {
                            chunks: chunks.into(),
                            end_seq: cursor,
                            complete: false,
                            ..partial
                        };
                    }
                }
                _ => {
                    break CatchUp {
                        chunks: chunks.into(),
                        end_seq: next_seq.saturating_sub(1),
                        complete: true,
                        closed,
                        ..partial
                    };
                }
            }
        };
        self.note_catch_up(bytes);
        let outcome = entry.publish(|s| s.recover(catch_up)).await;
        if outcome == Outcome::Open {
            self.note_published(entry, bytes);
        }
        self.settle(entry, outcome);
        Ok(())
    }
}

#[cfg(test)]
#[path = "recovery_tests.rs"]
mod tests;

/// A call's params, encoded into a request again for each attempt (each has its own id).
pub(crate) trait CallParams: Sync {
    /// The request `id` calling `method` with these params.
    fn request(&self, id: i64, method: &str) -> String;
    /// Their `processId` (what an ambiguous `process/start` terminates).
    fn process_id(&self) -> Option<String>;
}

impl CallParams for Value {
    fn request(&self, id: i64, method: &str) -> String {
        crate::rpc::encode::encode_request(&crate::rpc::RequestId::Int(id), method, self)
    }

    fn process_id(&self) -> Option<String> {
        self.get("processId")?.as_str().map(str::to_string)
    }
}

/// Params the caller encoded itself, a JSON object it vouches for: spliced into each request as
/// they are (a transfer's megabyte of base64 per block is neither copied into a [`Value`] nor
/// scanned for escapes).
pub(crate) struct EncodedParams(pub String);

impl CallParams for EncodedParams {
    fn request(&self, id: i64, method: &str) -> String {
        crate::rpc::encode::encode_request_with_params_text(
            &crate::rpc::RequestId::Int(id),
            method,
            &self.0,
        )
    }

    fn process_id(&self) -> Option<String> {
        None
    }
}
