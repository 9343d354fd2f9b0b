//! Processes as the caller sees them: [`ExecServerClient::start`], the public [`ProcessHandle`]
//! (events, in seq order, each once) and [`ProcessControl`] (stdin, signals, termination, raw
//! reads). The table they are followed in is `table.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use tokio::sync::mpsc;

use super::error::ClientError;
use super::sequencer::ProcessEvent;
use super::session::ExecServerClient;
use super::table::ProcessEntry;
use crate::protocol::method;
use crate::protocol::process::{
    CloseStdinParams, EnvPolicy, ListParams, ListResult, ProcessInfo, ReadParams, ReadResult,
    ResizeParams, SandboxType, SignalName, SignalParams, StartParams, StartResult, Stream,
    TerminateParams, TerminateResult, WriteParams, WriteResult, WriteStatus,
};

impl ExecServerClient {
    /// The session's processes on the server (`process/list`, capability `processList`),
    /// including those this client does not follow (started before a restart).
    pub async fn list_processes(&self) -> Result<Vec<ProcessInfo>, ClientError> {
        let result: ListResult = self.call(method::PROCESS_LIST, &ListParams {}).await?;
        Ok(result.processes)
    }

    /// Sends `signal` to the process group of `process_id`, one this client may not follow (found
    /// by [`ExecServerClient::list_processes`] after [`ExecServerClient::resume`]). The server
    /// answers an unknown id with success, as the reference does.
    pub async fn signal_process(
        &self,
        process_id: &str,
        signal: SignalName,
    ) -> Result<(), ClientError> {
        let params = SignalParams {
            process_id: process_id.to_string(),
            signal,
        };
        let _: serde_json::Value = self.call(method::PROCESS_SIGNAL, &params).await?;
        Ok(())
    }

    /// Terminates the process group of `process_id` (`process/terminate`: SIGTERM, then SIGKILL
    /// after the server's grace period), one this client may not follow; returns whether it was
    /// still running.
    pub async fn terminate_process(&self, process_id: &str) -> Result<bool, ClientError> {
        let params = TerminateParams {
            process_id: process_id.to_string(),
        };
        let result: TerminateResult = self.call(method::PROCESS_TERMINATE, &params).await?;
        Ok(result.running)
    }

    /// Starts a process and returns its handle. If the transport drops before the answer, the
    /// start is not replayed: the client terminates `processId` on the resumed session and
    /// returns [`ClientError::StartAmbiguous`].
    pub async fn start(&self, mut params: StartParams) -> Result<ProcessHandle, ClientError> {
        let mut handle = new_handle(self, &params.process_id)?;
        // On a server that takes acknowledgements, they cover the output from its first byte.
        params.output_ack |= self
            .inner
            .environment
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|env| env.capabilities.output_ack);
        let result: StartResult = self.call(method::PROCESS_START, &params).await?;
        mark_started(&mut handle, result.sandbox_type);
        Ok(handle)
    }
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
        metadata: None,
        shell_snapshot: None,
        network_proxy: None,
        timeout_ms: None,
        pty_size: None,
        output_ack: false,
    }
}

/// The events of one started process, and a [`ProcessControl`] for it.
///
/// [`recv`](Self::recv) yields the events strictly in seq order, each once, ending after
/// [`ProcessEvent::Closed`], or with one `Err` when the process or the session failed. Dropping
/// the handle stops following the process (it keeps running on the server).
pub struct ProcessHandle {
    /// Stdin, signals, termination.
    control: ProcessControl,
    /// Events, in seq order.
    events: mpsc::Receiver<ProcessEvent>,
    /// The entry, to read its terminal failure and to leave the table on drop.
    entry: Arc<ProcessEntry>,
    /// What the server applied (from the `process/start` answer).
    sandbox_type: SandboxType,
}

impl ProcessHandle {
    /// The process id.
    pub fn id(&self) -> &str {
        self.control.id()
    }

    /// The sandbox the server applied.
    pub fn sandbox_type(&self) -> SandboxType {
        self.sandbox_type
    }

    /// The next event; `None` after the close or after the failure was returned.
    pub async fn recv(&mut self) -> Option<Result<ProcessEvent, ClientError>> {
        match self.events.recv().await {
            Some(event) => Some(Ok(event)),
            None => self.entry.take_failure().map(Err),
        }
    }

    /// A cloneable control for stdin, signals and termination, usable from another task.
    pub fn control(&self) -> ProcessControl {
        self.control.clone()
    }

    /// Writes to the process's stdin (see [`ProcessControl::write`]).
    pub async fn write(&self, data: &[u8]) -> Result<WriteStatus, ClientError> {
        self.control.write(data).await
    }

    /// Sends SIGINT to the process group.
    pub async fn interrupt(&self) -> Result<(), ClientError> {
        self.control.interrupt().await
    }

    /// Terminates the process group; returns whether the process was still running.
    pub async fn terminate(&self) -> Result<bool, ClientError> {
        self.control.terminate().await
    }

    /// Reads every event until the close and returns the output by stream and the exit code.
    pub async fn wait(mut self) -> Result<ProcessOutput, ClientError> {
        let mut output = ProcessOutput::default();
        while let Some(event) = self.recv().await {
            match event? {
                ProcessEvent::Output { stream, data, .. } => match stream {
                    Stream::Stdout => output.stdout.extend(data),
                    Stream::Stderr => output.stderr.extend(data),
                    Stream::Pty => output.pty.extend(data),
                },
                ProcessEvent::Exited { exit_code, .. } => output.exit_code = Some(exit_code),
                ProcessEvent::Closed { .. } => break,
            }
        }
        Ok(output)
    }
}

impl Drop for ProcessHandle {
    fn drop(&mut self) {
        self.entry.mark_finished();
        let inner = &self.control.client.inner;
        inner.processes.remove_if_same(self.id(), &self.entry);
        // A process nobody follows any more must not wait for acknowledgements.
        inner.unfollow(&self.entry);
    }
}

/// Everything a process printed, by stream, and its exit code ([`ProcessHandle::wait`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessOutput {
    /// `stdout` bytes.
    pub stdout: Vec<u8>,
    /// `stderr` bytes.
    pub stderr: Vec<u8>,
    /// `pty` bytes (a TTY process).
    pub pty: Vec<u8>,
    /// The exit code, if the exit was seen.
    pub exit_code: Option<i32>,
}

/// Sends to one process: stdin, signals, termination, raw reads. Cheap to clone; clones share
/// the write order and the `writeId` counter.
#[derive(Clone)]
pub struct ProcessControl {
    /// The client the calls go through (and which it keeps alive).
    client: ExecServerClient,
    /// The process id.
    process_id: Arc<str>,
    /// Shared by clones: write ids and write order.
    writes: Arc<WriteState>,
}

/// Write-side state shared by the clones of a [`ProcessControl`].
struct WriteState {
    /// Makes write ids unique across clients and processes.
    prefix: String,
    /// The next write's number.
    next: AtomicU64,
    /// Held across a whole write (retries included), so writes reach the process in call order.
    /// A tokio lock because it is held across the call.
    order: tokio::sync::Mutex<()>,
}

impl ProcessControl {
    /// The process id.
    pub fn id(&self) -> &str {
        &self.process_id
    }

    /// Writes `data` to the process's stdin. Each write has its own `writeId`; if the connection
    /// drops before the answer, the write is sent again with the same id after the reconnect and
    /// the server writes it once. Concurrent writes are serialized in call order.
    pub async fn write(&self, data: &[u8]) -> Result<WriteStatus, ClientError> {
        let _order = self.writes.order.lock().await;
        let n = self.writes.next.fetch_add(1, Ordering::Relaxed);
        let params = WriteParams {
            process_id: self.process_id.to_string(),
            chunk: base64::engine::general_purpose::STANDARD.encode(data),
            write_id: format!("{}-{n}", self.writes.prefix),
        };
        let result: WriteResult = self.client.call(method::PROCESS_WRITE, &params).await?;
        Ok(result.status)
    }

    /// Sends SIGINT to the process group (`process/signal interrupt`).
    pub async fn interrupt(&self) -> Result<(), ClientError> {
        let params = SignalParams {
            process_id: self.process_id.to_string(),
            signal: SignalName::Interrupt,
        };
        let _: serde_json::Value = self.client.call(method::PROCESS_SIGNAL, &params).await?;
        Ok(())
    }

    /// Sends `signal` to the process group (`process/signal`; names other than `interrupt` need
    /// the capability `processSignals`).
    pub async fn signal(&self, signal: SignalName) -> Result<(), ClientError> {
        let params = SignalParams {
            process_id: self.process_id.to_string(),
            signal,
        };
        let _: serde_json::Value = self.client.call(method::PROCESS_SIGNAL, &params).await?;
        Ok(())
    }

    /// Ends the process's stdin after the writes already made (`process/closeStdin`, capability
    /// `stdinClose`): EOF on a pipe, the terminal's EOF character on a tty.
    pub async fn close_stdin(&self) -> Result<(), ClientError> {
        let params = CloseStdinParams {
            process_id: self.process_id.to_string(),
        };
        let _: serde_json::Value = self
            .client
            .call(method::PROCESS_CLOSE_STDIN, &params)
            .await?;
        Ok(())
    }

    /// Sets the terminal size of a tty process (`process/resize`, capability `ptyResize`).
    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), ClientError> {
        let params = ResizeParams {
            process_id: self.process_id.to_string(),
            cols: cols.into(),
            rows: rows.into(),
        };
        let _: serde_json::Value = self.client.call(method::PROCESS_RESIZE, &params).await?;
        Ok(())
    }

    /// Terminates the process group; returns whether the process was still running.
    pub async fn terminate(&self) -> Result<bool, ClientError> {
        let params = TerminateParams {
            process_id: self.process_id.to_string(),
        };
        let result: TerminateResult = self.client.call(method::PROCESS_TERMINATE, &params).await?;
        Ok(result.running)
    }

    /// A raw `process/read` (retried after a reconnect). The handle's events do not need it;
    /// it is for callers that poll instead.
    pub async fn read(
        &self,
        after_seq: u64,
        max_bytes: Option<u64>,
        wait_ms: Option<u64>,
    ) -> Result<ReadResult, ClientError> {
        let params = ReadParams {
            process_id: self.process_id.to_string(),
            after_seq: Some(after_seq),
            max_bytes,
            wait_ms,
        };
        self.client.call(method::PROCESS_READ, &params).await
    }
}

/// Registers `process_id` and builds its handle (not yet started: phase `Starting`).
pub(super) fn new_handle(
    client: &ExecServerClient,
    process_id: &str,
) -> Result<ProcessHandle, ClientError> {
    let inner = &client.inner;
    let (entry, events) = inner
        .processes
        .register(process_id, inner.options.event_buffer)?;
    let control = ProcessControl {
        client: client.clone(),
        process_id: process_id.into(),
        writes: Arc::new(WriteState {
            prefix: uuid::Uuid::new_v4().simple().to_string(),
            next: AtomicU64::new(1),
            order: tokio::sync::Mutex::new(()),
        }),
    };
    Ok(ProcessHandle {
        control,
        events,
        entry,
        sandbox_type: SandboxType::None,
    })
}

/// Marks a handle's process started, with what the server applied.
fn mark_started(handle: &mut ProcessHandle, sandbox_type: SandboxType) {
    handle.sandbox_type = sandbox_type;
    handle.entry.mark_started();
}
