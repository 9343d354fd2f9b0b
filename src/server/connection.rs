//! One connection: the handshake state machine, and dispatch of every other request to its own
//! task so a long `process/read` never delays the requests behind it (answers matched by id).
//!
//! ```text
//!   AwaitingInitialize ──initialize ok──► AwaitingInitialized ──initialized──► Ready
//!        │  ▲                                                                  │
//!        └──┘ initialize failed (may retry)       connection ends: detach the session
//! ```

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Semaphore;

use super::call::{Answer, Call};
use super::fs_handles::FileHandles;
use super::fs_watch::Watches;
use super::http_streams::HttpStreams;
use super::missing_watch::MissingWatch;
use super::router;
use super::session::{ResumeError, Session};
use super::state::ServerState;
use crate::protocol::session::{InitializeParams, InitializeResult};
use crate::protocol::{ErrorCode, Family, Method};
use crate::rpc::encode::{
    RAW_RESULT_TAIL, encode_error, encode_parse_error, encode_raw_result, encode_result,
    raw_result_head,
};
use crate::rpc::{Incoming, Outgoing, Pieces, Request, RpcError, Transport, decode_params};

/// Requests of one connection in flight at once; the reader waits when they are all busy.
const MAX_IN_FLIGHT: usize = 256;

/// Where the handshake is.
enum Handshake {
    AwaitingInitialize,
    /// `initialize` succeeded; waiting for the `initialized` notification.
    AwaitingInitialized(Arc<Session>),
    Ready(Arc<Session>),
}

impl Handshake {
    fn session(&self) -> Option<&Arc<Session>> {
        match self {
            Self::AwaitingInitialize => None,
            Self::AwaitingInitialized(s) | Self::Ready(s) => Some(s),
        }
    }
}

/// Serves one connection until the peer goes away, it breaks the protocol, or the server stops.
pub(crate) async fn serve(mut transport: Transport, state: Arc<ServerState>) {
    let connection = state.connection_id();
    let _counted = state.metrics.connection_opened();
    let out = transport.outgoing.clone();
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let fs_handles = Arc::new(FileHandles::default());
    let http = Arc::new(
        HttpStreams::new(out.clone())
            .with_max_streams(state.limits.max_http_streams_per_connection),
    );
    let missing_watch = Arc::new(MissingWatch::new(out.clone()));
    let fs_watches = Arc::new(Watches::new(out.clone(), state.tracker.clone()));
    let mut handshake = Handshake::AwaitingInitialize;
    loop {
        let incoming = tokio::select! {
            m = transport.incoming.recv() => m,
            _ = state.cancel.cancelled() => None,
        };
        let Some(incoming) = incoming else { break };
        match incoming {
            Incoming::Malformed(message) => {
                let _ = out
                    .send(encode_parse_error(&RpcError::invalid_request(message)).into())
                    .await;
            }
            Incoming::TooLarge(limit) => {
                let err = RpcError::invalid_request(format!(
                    "message too large: the limit is {limit} bytes"
                ));
                let _ = out.send(encode_parse_error(&err).into()).await;
                break;
            }
            Incoming::Response { .. } => {
                tracing::debug!("client sent a response: closing connection");
                break;
            }
            Incoming::Notification(n) if n.method == Method::Initialized.name() => {
                match std::mem::replace(&mut handshake, Handshake::AwaitingInitialize) {
                    Handshake::AwaitingInitialized(s) | Handshake::Ready(s) => {
                        handshake = Handshake::Ready(s)
                    }
                    Handshake::AwaitingInitialize => {
                        tracing::debug!("initialized before initialize: closing");
                        let err = RpcError::invalid_request(
                            "client must call initialize before sending initialized",
                        );
                        let _ = out.send(encode_parse_error(&err).into()).await;
                        break;
                    }
                }
            }
            Incoming::Notification(n) => {
                tracing::debug!(method = %n.method, "unknown notification: closing connection");
                break;
            }
            Incoming::Request(mut req) if req.method == Method::Initialize.name() => {
                let started = std::time::Instant::now();
                let answer = match &handshake {
                    Handshake::AwaitingInitialize => {
                        match initialize(&state, connection, &out, req.params.take()).await {
                            Ok((session, result)) => {
                                handshake = Handshake::AwaitingInitialized(session);
                                Ok(result)
                            }
                            Err(err) => Err(err),
                        }
                    }
                    _ => Err(RpcError::invalid_request(
                        "initialize may only be sent once per connection",
                    )),
                };
                let code = answer.as_ref().err().map(|e| e.code);
                state
                    .metrics
                    .request_done(Some(Method::Initialize), started, code);
                let _ = out.send(encode_answer(&req, answer).into()).await;
            }
            Incoming::Request(req) => {
                // A method a client may request; the handshake was served above.
                let Some(method) = Method::from_name(&req.method)
                    .filter(|m| m.is_request() && m.spec().family != Family::Handshake)
                else {
                    let err = router::not_implemented(&req.method);
                    let method = Method::from_name(&req.method);
                    let now = std::time::Instant::now();
                    state.metrics.request_done(method, now, Some(err.code));
                    let _ = out.send(encode_error(&req.id, &err).into()).await;
                    continue;
                };
                let family = method.spec().family.label();
                let session = match &handshake {
                    Handshake::Ready(s) => s.clone(),
                    Handshake::AwaitingInitialize => {
                        let err = RpcError::invalid_request(format!(
                            "client must call initialize before using {family} methods"
                        ));
                        let now = std::time::Instant::now();
                        state
                            .metrics
                            .request_done(Some(method), now, Some(err.code));
                        let _ = out.send(encode_error(&req.id, &err).into()).await;
                        continue;
                    }
                    Handshake::AwaitingInitialized(_) => {
                        let err = RpcError::invalid_request(format!(
                            "client must send initialized before using {family} methods"
                        ));
                        let now = std::time::Instant::now();
                        state
                            .metrics
                            .request_done(Some(method), now, Some(err.code));
                        let _ = out.send(encode_error(&req.id, &err).into()).await;
                        continue;
                    }
                };
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                let call = Call {
                    state: state.clone(),
                    session,
                    connection,
                    fs_handles: fs_handles.clone(),
                    http: http.clone(),
                    missing_watch: missing_watch.clone(),
                    fs_watches: fs_watches.clone(),
                };
                let out = out.clone();
                let metrics = state.metrics.clone();
                state.tracker.spawn(async move {
                    let Request { id, params, .. } = req;
                    let started = std::time::Instant::now();
                    let answer = router::route(call, method, params).await;
                    let code = answer.as_ref().err().map(|e| e.code);
                    metrics.request_done(Some(method), started, code);
                    let mut then = None;
                    let message = match answer {
                        Ok(Answer::Value(v)) => encode_result(&id, v).into(),
                        Ok(Answer::ValueThen(v, sent)) => {
                            then = Some(sent);
                            encode_result(&id, v).into()
                        }
                        Ok(Answer::Encoded(json)) => encode_raw_result(&id, &json).into(),
                        Ok(Answer::Pieces(body)) => Outgoing::Pieces(Pieces {
                            head: raw_result_head(&id),
                            body,
                            tail: RAW_RESULT_TAIL,
                        }),
                        Err(e) => encode_error(&id, &e).into(),
                    };
                    if out.send(message).await.is_ok()
                        && let Some(sent) = then
                    {
                        let _ = sent.send(());
                    }
                    drop(permit);
                });
            }
        }
    }
    fs_handles.close_all();
    http.close_all();
    missing_watch.close();
    fs_watches.close();
    if let Some(session) = handshake.session() {
        state.sessions.detach(session, connection);
    }
}

fn encode_answer(req: &Request, answer: Result<Value, RpcError>) -> String {
    match answer {
        Ok(v) => encode_result(&req.id, v),
        Err(e) => encode_error(&req.id, &e),
    }
}

/// `initialize`: a new session, or the named one re-attached to this connection.
async fn initialize(
    state: &Arc<ServerState>,
    connection: u64,
    out: &tokio::sync::mpsc::Sender<Outgoing>,
    params: Value,
) -> Result<(Arc<Session>, Value), RpcError> {
    let p: InitializeParams = decode_params(params)?;
    let session = match &p.resume_session_id {
        None => state
            .sessions
            .create(connection, out.clone())
            .map_err(|e| RpcError::invalid_request(e.to_string()))?,
        Some(id) => state
            .sessions
            .resume(id, connection, out.clone())
            .map_err(|e| match e {
                ResumeError::Unknown(_) => RpcError::invalid_request(e.to_string()),
                ResumeError::Attached(_) => {
                    RpcError::new(ErrorCode::SessionAttached, e.to_string())
                }
            })?,
    };
    tracing::debug!(client = %p.client_name, session = %session.id, "initialized");
    let result = InitializeResult {
        session_id: session.id.clone(),
        environment_info: Some(state.environment().await),
    };
    let value = serde_json::to_value(result)
        .map_err(|e| RpcError::internal(format!("failed to encode result: {e}")))?;
    Ok((session, value))
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
