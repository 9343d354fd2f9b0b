//! What a handler gets ([`Call`]) and gives back ([`Answer`]).

use std::sync::Arc;

use serde_json::Value;

use super::fs_handles::FileHandles;
use super::fs_watch::Watches;
use super::http_streams::HttpStreams;
use super::missing_watch::MissingWatch;
use super::session::Session;
use super::state::ServerState;
use crate::rpc::{Piece, RpcError};

/// What a handler needs to know about the call.
pub(super) struct Call {
    /// Server-wide state (config, environment info, tracker).
    pub state: Arc<ServerState>,
    /// The session the calling connection is attached to.
    pub session: Arc<Session>,
    /// The calling connection, to tell when the session moved elsewhere.
    pub connection: u64,
    /// The connection's `fs/open` handles; closed by `connection::serve` when it ends.
    pub fs_handles: Arc<FileHandles>,
    /// The connection's streamed `http/request` bodies; aborted by `connection::serve` when it
    /// ends.
    pub http: Arc<HttpStreams>,
    /// The connection's `fs/watchMissing` watch; ended by `connection::serve` when it ends.
    pub missing_watch: Arc<MissingWatch>,
    /// The connection's `fs/watch` watches; ended by `connection::serve` when it ends.
    pub fs_watches: Arc<Watches>,
}

/// A method's result: a JSON value, or JSON text encoded already (a large payload that going
/// through [`Value`] would copy and escape-scan once more), or JSON text made while it is sent
/// (too large to hold at once; see [`crate::rpc::Outgoing::Pieces`]).
pub(super) enum Answer {
    Value(Value),
    Encoded(String),
    Pieces(tokio::sync::mpsc::Receiver<Piece>),
    /// A value, and a signal fired once it is queued on the connection (what comes after it,
    /// a streamed `http/request` body, must follow it on the wire).
    ValueThen(Value, tokio::sync::oneshot::Sender<()>),
}

/// A typed result as the answer's JSON.
pub(super) fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::internal(format!("failed to encode result: {e}")))
}
