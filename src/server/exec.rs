//! The `process/*` family: one handler fn per method. Each takes its decoded params (the router
//! decodes them), acts on the session it was called in, and returns a result or an [`RpcError`].

use std::time::Duration;

use super::call::Call;
use super::env_policy;
use super::metrics::{ProcessAudit, program_name};
use super::process::output_log::Following;
use super::process::spawn::{SpawnError, SpawnSpec};
use super::process::table::Lookup;
use super::sandboxing;
use crate::path_uri;
use crate::protocol::process::{
    AckParams, CloseStdinParams, ListParams, ListResult, MAX_PTY_DIMENSION, ReadParams, ReadResult,
    ResizeParams, SignalName, SignalParams, StartParams, StartResult, TerminateParams,
    TerminateResult, WriteParams, WriteResult, WriteStatus,
};
use crate::rpc::RpcError;

/// Longest `processId` we accept; the reference has no limit, but a megabyte id is a mistake.
pub const MAX_PROCESS_ID_BYTES: usize = 4096;

/// Longest `shellSnapshot.scopeId`, in bytes (the reference's limit).
pub const MAX_SNAPSHOT_SCOPE_BYTES: usize = 256;

/// The 0.169.0 fields of `process/start` whose capabilities we do not advertise. `metadata` is
/// attribution only. `shellSnapshot` is checked as the reference checks it and then ignored: the
/// command runs as sent, which is what a snapshot only speeds up. `networkProxy` with
/// `enabled: true` is refused: running the command unproxied would drop its network policy.
fn check_0169_fields(p: &StartParams) -> Result<(), RpcError> {
    if let Some(snapshot) = &p.shell_snapshot {
        if snapshot.scope_id.is_empty() || snapshot.scope_id.len() > MAX_SNAPSHOT_SCOPE_BYTES {
            return Err(RpcError::invalid_params(format!(
                "shell snapshot scope must be non-empty and at most {MAX_SNAPSHOT_SCOPE_BYTES} bytes"
            )));
        }
        if !matches!(snapshot.shell.name.as_str(), "bash" | "zsh" | "sh") {
            return Err(RpcError::invalid_params(format!(
                "shell snapshots are unsupported for shell `{}`",
                snapshot.shell.name
            )));
        }
    }
    if p.network_proxy.as_ref().is_some_and(|n| n.proxy.enabled) {
        return Err(RpcError::invalid_params(
            "invalid network proxy config: this executor cannot launch a network proxy \
             (capability networkProxyLaunch is not advertised)",
        ));
    }
    Ok(())
}

/// `process/start`.
pub(super) async fn start(call: &Call, p: StartParams) -> Result<StartResult, RpcError> {
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
    check_0169_fields(&p)?;
    if p.timeout_ms == Some(0) {
        return Err(RpcError::invalid_params("timeoutMs must be at least 1"));
    }
    let pty_size = match p.pty_size {
        None => None,
        Some(_) if !p.tty => {
            return Err(RpcError::invalid_params(
                "ptySize is only valid with tty: true",
            ));
        }
        Some(size) => Some((
            dimension("ptySize.rows", size.rows)?,
            dimension("ptySize.cols", size.cols)?,
        )),
    };
    let env = env_policy::build(std::env::vars_os(), p.env_policy.as_ref(), &p.env);
    let program = program_name(&p.argv[0]);
    let spec = SpawnSpec {
        listed_argv0: p.argv[0].clone(),
        pty_size,
        output_ack: p.output_ack,
        timeout: p.timeout_ms.map(Duration::from_millis),
        argv: p.argv,
        arg0: p.arg0,
        cwd,
        env,
        tty: p.tty,
        pipe_stdin: p.pipe_stdin,
        sandboxed: false,
        new_pid_namespace: false,
    };
    let (state, session) = (call.state.clone(), call.session.clone());
    let (sandbox, managed) = (p.sandbox.clone(), p.managed_network.clone());
    let enforce = p.enforce_managed_network;
    let prepare = move || {
        sandboxing::prepare(
            &state.sandbox,
            &session.split_cost_logged,
            sandbox.as_ref(),
            enforce,
            managed.as_ref(),
            spec,
        )
    };
    let (spec, sandbox_type) = if p.sandbox.as_ref().is_some_and(|s| s.permissions.has_glob()) {
        // Binding a glob scans the file system (up to 200,000 entries): not on an async thread.
        tokio::task::spawn_blocking(prepare)
            .await
            .map_err(|e| RpcError::internal(format!("sandbox binding failed: {e}")))??
    } else {
        prepare()?
    };
    let audit = ProcessAudit {
        metrics: call.state.metrics.clone(),
        session: call.session.id.clone(),
        process_id: p.process_id.clone(),
        program,
        sandbox: sandbox_type,
        tty: p.tty,
        started: std::time::Instant::now(),
    };
    call.session
        .processes
        .start(p.process_id.clone(), spec, audit)
        .map_err(|err| match err {
            SpawnError::DuplicateId => {
                RpcError::invalid_request(format!("process {} already exists", p.process_id))
            }
            too_many @ SpawnError::TooMany(_) => RpcError::invalid_request(too_many.to_string()),
            other => RpcError::internal(other.to_string()),
        })?;
    Ok(StartResult {
        process_id: p.process_id,
        sandbox_type,
    })
}

/// `process/read`.
pub(super) async fn read(call: &Call, p: ReadParams) -> Result<ReadResult, RpcError> {
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
                timed_out: false,
                gap: None,
                exited_seq: None,
                closed_seq: None,
            });
        }
        Lookup::Live(p) => p,
    };
    // Reading after a seq says everything up to it was processed (issue 15).
    if let Some(after_seq) = p.after_seq {
        process.ack(after_seq, Following::Unchanged);
    }
    let wait = Duration::from_millis(p.wait_ms.unwrap_or(0));
    process
        .read(
            p.after_seq.unwrap_or(0),
            p.max_bytes,
            wait,
            call.session.attachment.resumed_elsewhere(call.connection),
        )
        .await
        .map_err(|()| RpcError::invalid_request("session has been resumed by another connection"))
}

/// `process/write`.
pub(super) async fn write(call: &Call, p: WriteParams) -> Result<WriteResult, RpcError> {
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
            .write(&data, &p.write_id, call.session.processes.tracker())
            .map_err(write_error)?,
    };
    Ok(WriteResult { status })
}

/// `process/signal`: unknown ids are answered `{}` like the reference.
pub(super) fn signal(call: &Call, p: SignalParams) {
    use rustix::process::Signal;
    let signal = match p.signal {
        SignalName::Interrupt => Signal::INT,
        SignalName::Terminate => Signal::TERM,
        SignalName::Kill => Signal::KILL,
        SignalName::Hangup => Signal::HUP,
        SignalName::Quit => Signal::QUIT,
        SignalName::User1 => Signal::USR1,
        SignalName::User2 => Signal::USR2,
    };
    if let Lookup::Live(process) = call.session.processes.get(&p.process_id) {
        process.signal(signal);
    }
}

/// `process/terminate`.
pub(super) fn terminate(call: &Call, p: TerminateParams) -> TerminateResult {
    let running = match call.session.processes.get(&p.process_id) {
        Lookup::Live(process) => {
            let table = &call.session.processes;
            process.terminate(table.terminate_grace(), table.tracker())
        }
        Lookup::Missing | Lookup::Starting => false,
    };
    TerminateResult { running }
}

/// A terminal dimension named `field`, checked against `1..=MAX_PTY_DIMENSION`.
fn dimension(field: &str, value: u64) -> Result<u16, RpcError> {
    match u16::try_from(value) {
        Ok(v) if (1..=MAX_PTY_DIMENSION).contains(&value) => Ok(v),
        _ => Err(RpcError::invalid_params(format!(
            "{field} must be between 1 and {MAX_PTY_DIMENSION}, not {value}"
        ))),
    }
}

/// The live process `id`, or the -32600 a call on an unknown (or still starting) one gets.
fn live(call: &Call, id: &str) -> Result<std::sync::Arc<super::process::entry::Process>, RpcError> {
    match call.session.processes.get(id) {
        Lookup::Live(process) => Ok(process),
        Lookup::Missing => Err(RpcError::invalid_request(format!(
            "unknown process id {id}"
        ))),
        Lookup::Starting => Err(RpcError::invalid_request(format!(
            "process {id} is still starting"
        ))),
    }
}

/// `process/list` (issue 14): the calling session's processes.
pub(super) fn list(call: &Call, _p: ListParams) -> ListResult {
    ListResult {
        processes: call.session.processes.list(),
    }
}

/// `process/closeStdin` (issue 14).
pub(super) async fn close_stdin(call: &Call, p: CloseStdinParams) -> Result<(), RpcError> {
    live(call, &p.process_id)?
        .close_stdin(call.session.processes.tracker())
        .map_err(write_error)
}

/// A stdin write's error: a full stdin queue is the caller's to wait out (-32600), a failed
/// write the server's (-32603).
fn write_error(err: super::process::entry::WriteError) -> RpcError {
    match err {
        full @ super::process::entry::WriteError::QueueFull { .. } => {
            RpcError::invalid_request(full.to_string())
        }
        other => RpcError::internal(other.to_string()),
    }
}

/// `process/resize` (issue 14).
pub(super) fn resize(call: &Call, p: ResizeParams) -> Result<(), RpcError> {
    let rows = dimension("rows", p.rows)?;
    let cols = dimension("cols", p.cols)?;
    live(call, &p.process_id)?
        .resize(rows, cols)
        .map_err(|e| match e {
            no_tty @ super::process::entry::ResizeError::NoTerminal(_) => {
                RpcError::invalid_request(no_tty.to_string())
            }
            other => RpcError::internal(other.to_string()),
        })
}

/// `process/ack` (issue 15): output up to `seq` may be dropped; from now on the process's output
/// that was not acknowledged is kept (the process back-pressured) rather than dropped, unless
/// `following: false` says the client no longer follows it.
pub(super) fn ack(call: &Call, p: AckParams) -> Result<(), RpcError> {
    let following = p.following.map_or(Following::Acking, Following::Explicit);
    live(call, &p.process_id)?.ack(p.seq, following);
    Ok(())
}
