//! One handler fn per method of the `process/*` family and `environment/info`. Each decodes its
//! params, acts on the session it was called in, and returns a result or an [`RpcError`].
//! The `fs/*` family is in `fs.rs`; [`dispatch`] hands those methods over.
//! The handshake (`initialize`, `initialized`) lives in `connection.rs`, which owns that state.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::ServerState;
use super::env_policy;
use super::process::{Lookup, SpawnError, SpawnSpec};
use super::sandboxing;
use super::session::Session;
use crate::path_uri;
use crate::protocol::method;
use crate::protocol::process::{
    ReadParams, ReadResult, SignalParams, StartParams, StartResult, TerminateParams,
    TerminateResult, WriteParams, WriteResult, WriteStatus,
};
use crate::rpc::{RpcError, decode_params};

/// Longest `processId` we accept; the reference has no limit, but a megabyte id is a mistake.
pub const MAX_PROCESS_ID_BYTES: usize = 4096;

/// What a handler needs to know about the call.
pub(super) struct Call {
    /// Server-wide state (config, environment info, tracker).
    pub state: Arc<ServerState>,
    /// The session the calling connection is attached to.
    pub session: Arc<Session>,
    /// The calling connection, to tell when the session moved elsewhere.
    pub connection: u64,
    /// The connection's `fs/open` handles; closed by `connection::serve` when it ends.
    pub fs_handles: Arc<super::fs::FileHandles>,
}

/// The family a method served by [`dispatch`] belongs to, as handshake errors name it; `None`
/// for a method this server does not implement.
pub(super) fn family(name: &str) -> Option<&'static str> {
    match name {
        method::ENVIRONMENT_INFO => Some("environment info"),
        method::PROCESS_START
        | method::PROCESS_READ
        | method::PROCESS_WRITE
        | method::PROCESS_SIGNAL
        | method::PROCESS_TERMINATE => Some("exec"),
        name if super::fs::METHODS.contains(&name) => Some("filesystem"),
        _ => None,
    }
}

/// A method's result: a JSON value, or JSON text encoded already (a large payload that going
/// through [`Value`] would copy and escape-scan once more), or JSON text made while it is sent
/// (too large to hold at once; see [`crate::rpc::Outgoing::Pieces`]).
pub(super) enum Answer {
    Value(Value),
    Encoded(String),
    Pieces(tokio::sync::mpsc::Receiver<crate::rpc::Piece>),
}

/// Runs one request of an initialized connection.
pub(super) async fn dispatch(call: Call, name: &str, params: Value) -> Result<Answer, RpcError> {
    if super::fs::METHODS.contains(&name) {
        return super::fs::dispatch(&call, name, params).await;
    }
    let value = match name {
        method::ENVIRONMENT_INFO => to_value(&call.state.environment),
        method::PROCESS_START => to_value(&start(&call, decode_params(params)?)?),
        method::PROCESS_READ => to_value(&read(&call, decode_params(params)?).await?),
        method::PROCESS_WRITE => to_value(&write(&call, decode_params(params)?).await?),
        method::PROCESS_SIGNAL => {
            signal(&call, decode_params(params)?);
            Ok(Value::Object(Default::default()))
        }
        method::PROCESS_TERMINATE => to_value(&terminate(&call, decode_params(params)?)),
        other => Err(RpcError::new(
            crate::protocol::ErrorCode::MethodNotFound,
            format!("method not found: {other}"),
        )),
    }?;
    Ok(Answer::Value(value))
}

/// A typed result as the answer's JSON.
pub(super) fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::internal(format!("failed to encode result: {e}")))
}

/// `process/start`.
fn start(call: &Call, p: StartParams) -> Result<StartResult, RpcError> {
    if p.process_id.len() > MAX_PROCESS_ID_BYTES {
        return Err(RpcError::invalid_params(format!(
            "processId is {} bytes; the limit is {MAX_PROCESS_ID_BYTES}",
            p.process_id.len()
        )));
    }
    if p.argv.is_empty() {
        return Err(RpcError::invalid_params("argv must not be empty"));
    }
    if p.argv[0].is_empty() {
        return Err(RpcError::invalid_params(
            "argv[0] must not be empty: missing program",
        ));
    }
    let cwd = path_uri::to_path(&p.cwd)
        .map_err(|e| RpcError::invalid_params(format!("invalid cwd: {e}")))?;
    let env = env_policy::build(std::env::vars_os(), p.env_policy.as_ref(), &p.env);
    let spec = SpawnSpec {
        argv: p.argv,
        arg0: p.arg0,
        cwd,
        env,
        tty: p.tty,
        pipe_stdin: p.pipe_stdin,
        sandboxed: false,
    };
    let (spec, sandbox_type) = sandboxing::prepare(
        &call.state.sandbox,
        &call.session.split_cost_logged,
        p.sandbox.as_ref(),
        p.enforce_managed_network,
        p.managed_network.as_ref(),
        spec,
    )?;
    call.session
        .processes
        .start(&call.session, p.process_id.clone(), spec)
        .map_err(|err| match err {
            SpawnError::DuplicateId => {
                RpcError::invalid_request(format!("process {} already exists", p.process_id))
            }
            other => RpcError::internal(other.to_string()),
        })?;
    Ok(StartResult {
        process_id: p.process_id,
        sandbox_type,
    })
}

/// `process/read`.
async fn read(call: &Call, p: ReadParams) -> Result<ReadResult, RpcError> {
    let process = match call.session.processes.get(&p.process_id) {
        Lookup::Missing => {
            return Err(RpcError::invalid_request(format!(
                "unknown process id {}",
                p.process_id
            )));
        }
        Lookup::Starting => {
            return Ok(ReadResult {
                chunks: Vec::new(),
                next_seq: 1,
                exited: false,
                exit_code: None,
                closed: false,
                failure: None,
                sandbox_denied: false,
            });
        }
        Lookup::Live(p) => p,
    };
    let wait = Duration::from_millis(p.wait_ms.unwrap_or(0));
    process
        .read(
            p.after_seq.unwrap_or(0),
            p.max_bytes,
            wait,
            call.session.resumed_elsewhere(call.connection),
        )
        .await
        .map_err(|()| RpcError::invalid_request("session has been resumed by another connection"))
}

/// `process/write`.
async fn write(call: &Call, p: WriteParams) -> Result<WriteResult, RpcError> {
    if p.write_id.is_empty() {
        return Err(RpcError::invalid_params("writeId must not be empty"));
    }
    let data = crate::b64::decode(p.chunk.as_bytes()).map_err(|e| {
        RpcError::invalid_params(format!("invalid params: chunk: invalid base64: {e}"))
    })?;
    let status = match call.session.processes.get(&p.process_id) {
        Lookup::Missing => WriteStatus::UnknownProcess,
        Lookup::Starting => WriteStatus::Starting,
        Lookup::Live(process) => process
            .write(&data, &p.write_id)
            .await
            .map_err(|e| RpcError::internal(e.to_string()))?,
    };
    Ok(WriteResult { status })
}

/// `process/signal`: unknown ids are answered `{}` like the reference.
fn signal(call: &Call, p: SignalParams) {
    if let Lookup::Live(process) = call.session.processes.get(&p.process_id) {
        process.interrupt();
    }
}

/// `process/terminate`.
fn terminate(call: &Call, p: TerminateParams) -> TerminateResult {
    let running = match call.session.processes.get(&p.process_id) {
        Lookup::Live(process) => {
            let table = &call.session.processes;
            process.terminate(table.terminate_grace(), table.tracker())
        }
        Lookup::Missing | Lookup::Starting => false,
    };
    TerminateResult { running }
}
