//! One transport to the server, as the client uses it: requests go out with an id and their
//! callers wait for the answer with that id; one reader task takes every incoming message, hands
//! answers to their callers and process notifications to the process table, and reports the end
//! of the transport to the state machine (`recovery.rs`). Framing is `rpc/`'s business; what to
//! do after a drop is `recovery.rs`'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::sequencer::ProcessEvent;
use crate::protocol::fs::ChangedParams;
use crate::protocol::method;
use crate::protocol::process::{ClosedNotification, ExitedNotification, OutputNotification};
use crate::rpc::encode::{encode_notification, encode_request};
use crate::rpc::{Incoming, Notification, Outgoing, RequestId, Transport};

/// An answer as the reader hands it over: the result, or the error's code and message.
type Answer = Result<Value, (i64, String)>;

/// How a request on one transport ended, when it did not get a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CallError {
    /// The request never reached the transport (it had already ended): safe to send again.
    NotSent,
    /// The transport ended after the request was handed to it and before the answer came: the
    /// server may or may not have seen it.
    Lost,
    /// The server answered with an error.
    Server {
        /// The JSON-RPC error code.
        code: i64,
        /// The server's message.
        message: String,
    },
}

/// One live transport.
pub(super) struct Conn {
    /// Distinguishes transports, so the end of an old one cannot disturb a newer one.
    pub(super) id: u64,
    /// Encoded messages to the server; the transport's writer ends when this is dropped.
    outgoing: mpsc::Sender<Outgoing>,
    /// Callers waiting for an answer, by request id. `None` once the transport ended, so a late
    /// caller fails at once instead of waiting for an answer that cannot come.
    calls: Mutex<Option<HashMap<i64, oneshot::Sender<Answer>>>>,
    /// Fired when the transport ended (or the client closed it); stops the reader.
    closed: CancellationToken,
}

impl Conn {
    /// Sends a request and waits for its answer.
    pub(super) async fn request<P: Serialize>(
        &self,
        id: i64,
        method: &str,
        params: &P,
    ) -> Result<Value, CallError> {
        self.request_text(id, encode_request(&RequestId::Int(id), method, params))
            .await
    }

    /// Sends the request `text` (already encoded, under `id`) and waits for its answer.
    pub(super) async fn request_text(&self, id: i64, text: String) -> Result<Value, CallError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut calls = self.calls.lock().unwrap();
            let Some(calls) = calls.as_mut() else {
                return Err(CallError::NotSent);
            };
            calls.insert(id, tx);
        }
        if self.outgoing.send(text.into()).await.is_err() {
            if let Some(calls) = self.calls.lock().unwrap().as_mut() {
                calls.remove(&id);
            }
            return Err(CallError::NotSent);
        }
        match rx.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err((code, message))) => Err(CallError::Server { code, message }),
            Err(_) => Err(CallError::Lost),
        }
    }

    /// Sends a notification.
    pub(super) async fn notify<P: Serialize>(
        &self,
        method: &str,
        params: P,
    ) -> Result<(), CallError> {
        self.outgoing
            .send(encode_notification(method, params).into())
            .await
            .map_err(|_| CallError::NotSent)
    }

    /// True once the transport has ended.
    pub(super) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Ends the transport from our side (an abandoned resume attempt).
    pub(super) fn close(&self) {
        self.closed.cancel();
    }

    /// Hands an answer to its caller.
    fn answer(&self, id: RequestId, result: Answer) {
        let RequestId::Int(id) = id else {
            tracing::debug!(%id, "answer with an id we never use");
            return;
        };
        let caller = self
            .calls
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|c| c.remove(&id));
        match caller {
            Some(caller) => {
                let _ = caller.send(result);
            }
            None => tracing::debug!(id, "answer nobody waits for"),
        }
    }

    /// Marks the transport ended: every waiting caller gets [`CallError::Lost`].
    fn finish(&self) {
        self.closed.cancel();
        self.calls.lock().unwrap().take();
    }
}

/// What a transport's reader hands upward; the client's core implements it (`recovery.rs`), so
/// this file knows nothing above it.
pub(super) trait Events: Send + Sync + 'static {
    /// One decoded process notification from transport `conn` (or why it did not decode).
    fn process_event(
        self: &Arc<Self>,
        conn: u64,
        process_id: String,
        event: Result<ProcessEvent, String>,
    ) -> impl std::future::Future<Output = ()> + Send;

    /// The reader of transport `conn` ended, for `reason`.
    fn transport_ended(self: &Arc<Self>, conn: u64, reason: String);

    /// An `fs/changed` notification (issue 14: watches); ignored unless the core follows watches.
    fn fs_changed(self: &Arc<Self>, _changed: ChangedParams) {}
}

/// Wraps a transport and starts its reader. Notifications are routed from the first message on,
/// before any answer: on resume the server may send them ahead of the `initialize` answer.
pub(super) fn start<E: Events>(
    events: &Arc<E>,
    id: u64,
    transport: Transport,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> Arc<Conn> {
    let conn = Arc::new(Conn {
        id,
        outgoing: transport.outgoing,
        calls: Mutex::new(Some(HashMap::new())),
        closed: CancellationToken::new(),
    });
    let mut incoming = transport.incoming;
    let reader_conn = conn.clone();
    let events = events.clone();
    let cancel = cancel.clone();
    tracker.spawn(async move {
        let conn = reader_conn;
        let reason = loop {
            let message = tokio::select! {
                m = incoming.recv() => m,
                _ = conn.closed.cancelled() => break "the client closed the connection",
                _ = cancel.cancelled() => break "the client was dropped",
            };
            let Some(message) = message else {
                break "the connection to the exec-server closed";
            };
            match message {
                Incoming::Response { id, result } => conn.answer(id, result),
                Incoming::Notification(n) => route(&events, conn.id, n).await,
                Incoming::Request(r) => {
                    tracing::debug!(method = %r.method, "ignoring a request from the server")
                }
                // Not the parser's message: it may quote a value of the payload.
                Incoming::Malformed(_) => tracing::warn!("malformed message from the server"),
                Incoming::TooLarge(_) => break "the exec-server sent a message over the size limit",
            }
        };
        conn.finish();
        drop(incoming);
        events.transport_ended(conn.id, reason.to_string());
    });
    conn
}

/// Decodes a process notification and hands it upward.
async fn route<E: Events>(events: &Arc<E>, conn: u64, n: Notification) {
    if n.method == method::FS_CHANGED {
        match serde_json::from_value::<ChangedParams>(n.params) {
            Ok(changed) => events.fs_changed(changed),
            Err(err) => {
                tracing::warn!(method = %n.method, category = ?err.classify(), "undecodable notification")
            }
        }
        return;
    }
    let decoded = match n.method.as_str() {
        method::PROCESS_OUTPUT => serde_json::from_value::<OutputNotification>(n.params).map(|o| {
            let data = base64::engine::general_purpose::STANDARD.decode(o.chunk.as_bytes());
            let event = data
                .map(|data| ProcessEvent::Output {
                    seq: o.seq,
                    stream: o.stream,
                    data,
                })
                .map_err(|e| format!("invalid base64 in process/output seq {}: {e}", o.seq));
            (o.process_id, event)
        }),
        method::PROCESS_EXITED => serde_json::from_value::<ExitedNotification>(n.params).map(|e| {
            let event = ProcessEvent::Exited {
                seq: e.seq,
                exit_code: e.exit_code,
                sandbox_denied: e.sandbox_denied,
            };
            (e.process_id, Ok(event))
        }),
        method::PROCESS_CLOSED => serde_json::from_value::<ClosedNotification>(n.params)
            .map(|c| (c.process_id, Ok(ProcessEvent::Closed { seq: c.seq }))),
        other => {
            tracing::debug!(method = %other, "ignoring a notification");
            return;
        }
    };
    match decoded {
        Ok((process_id, event)) => events.process_event(conn, process_id, event).await,
        // The category only: serde's message may quote a value of the payload.
        Err(err) => {
            tracing::warn!(method = %n.method, category = ?err.classify(), "undecodable notification")
        }
    }
}

/// A transport with no peer, for tests of the state machine.
#[cfg(test)]
pub(super) fn test_conn(id: u64, closed: bool) -> Arc<Conn> {
    let (outgoing, _) = mpsc::channel(1);
    let conn = Arc::new(Conn {
        id,
        outgoing,
        calls: Mutex::new(Some(HashMap::new())),
        closed: CancellationToken::new(),
    });
    if closed {
        conn.finish();
    }
    conn
}
