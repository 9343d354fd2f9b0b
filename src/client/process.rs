//! Processes as the client sees them: the table of live processes (by id), each entry's
//! [`Sequencer`] and the channel to its handle, and the public [`ProcessHandle`] (events) and
//! [`ProcessControl`] (stdin, signals, termination, raw reads).
//!
//! Publishing: whichever task releases events (the reader of a transport for notifications, the
//! recovery task for catch-up reads) takes the entry's async `sender` lock first, asks the
//! sequencer under the entry's std lock what is ready, then sends it, still under the async lock.
//! So events leave in seq order even when two tasks release them. The channel is bounded: a
//! handle that is not read stops the reader of the connection, which is how a slow consumer slows
//! the server (and the process) down instead of filling memory. Read a handle's events in a task
//! of its own while other calls are awaited elsewhere.
//!
//! A terminal failure does not go through the channel (it may be full); it is put in a slot the
//! handle reads after the last queued event, and the sender is dropped so the handle sees the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use tokio::sync::mpsc;

use super::error::ClientError;
use super::sequencer::{ProcessEvent, SequenceError, Sequencer};
use super::{ExecServerClient, Inner};
use crate::protocol::method;
use crate::protocol::process::{
    ReadParams, ReadResult, SandboxType, SignalName, SignalParams, Stream, TerminateParams,
    TerminateResult, WriteParams, WriteResult, WriteStatus,
};

/// Where a process entry is in its life, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `process/start` is in flight: caught up after a reconnect only if the server knows it.
    Starting,
    /// Started: caught up after every reconnect.
    Running,
    /// Closed, failed, or its handle is gone: nothing more is published.
    Finished,
}

/// What publishing did to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// More events may come.
    Open,
    /// The close was published; the entry can leave the table.
    Closed,
    /// The entry failed; it leaves the table and the process is terminated on the server.
    Failed,
}

/// The mutable part of an entry, under a std lock (never held across an await).
#[derive(Debug)]
struct EntryState {
    /// See [`Phase`].
    phase: Phase,
    /// Orders and dedupes the events.
    sequencer: Sequencer,
    /// `(transport id, lowest seq notified on it)`: lets the catch-up reads stop once they reach
    /// what live notifications of the new transport already deliver.
    live: Option<(u64, u64)>,
}

/// One process the client follows.
pub(super) struct ProcessEntry {
    /// The process id.
    id: String,
    /// Phase, sequencer, live marker.
    state: Mutex<EntryState>,
    /// The handle's channel. A tokio lock because it is held while sending (which waits for room)
    /// so that events leave in seq order; `None` once finished.
    sender: tokio::sync::Mutex<Option<mpsc::Sender<ProcessEvent>>>,
    /// The terminal failure, read by the handle after the last queued event.
    failure: Arc<Mutex<Option<ClientError>>>,
}

impl ProcessEntry {
    /// The seq of the last event published to the handle.
    pub(super) fn last_published(&self) -> u64 {
        self.state.lock().unwrap().sequencer.last_published()
    }

    /// The process id.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The lowest seq notified on transport `conn`, if any was.
    pub(super) fn live_since(&self, conn: u64) -> Option<u64> {
        match self.state.lock().unwrap().live {
            Some((c, seq)) if c == conn => Some(seq),
            _ => None,
        }
    }

    /// Records that `seq` arrived as a notification on transport `conn`.
    fn note_live(&self, conn: u64, seq: u64) {
        let mut state = self.state.lock().unwrap();
        state.live = match state.live {
            Some((c, low)) if c == conn => Some((c, low.min(seq))),
            _ => Some((conn, seq)),
        };
    }

    /// Runs `step` on the sequencer and publishes what it releases, in order.
    pub(super) async fn publish(
        &self,
        step: impl FnOnce(&mut Sequencer) -> Result<Vec<ProcessEvent>, SequenceError>,
    ) -> Outcome {
        let mut sender = self.sender.lock().await;
        let released = {
            let mut state = self.state.lock().unwrap();
            if state.phase == Phase::Finished {
                return Outcome::Closed;
            }
            step(&mut state.sequencer).map(|events| (events, state.sequencer.finished()))
        };
        match released {
            Ok((events, finished)) => {
                if let Some(tx) = sender.as_ref() {
                    for event in events {
                        if tx.send(event).await.is_err() {
                            break;
                        }
                    }
                }
                if finished {
                    self.state.lock().unwrap().phase = Phase::Finished;
                    *sender = None;
                    Outcome::Closed
                } else {
                    Outcome::Open
                }
            }
            Err(source) => {
                let error = ClientError::Recovery {
                    process_id: self.id.clone(),
                    source,
                };
                self.finish(&mut sender, error);
                Outcome::Failed
            }
        }
    }

    /// Ends the entry with a terminal failure (unless it already ended).
    pub(super) async fn fail(&self, error: ClientError) {
        let mut sender = self.sender.lock().await;
        self.finish(&mut sender, error);
    }

    /// Marks the entry finished, stores the failure, and closes the channel.
    fn finish(&self, sender: &mut Option<mpsc::Sender<ProcessEvent>>, error: ClientError) {
        let mut state = self.state.lock().unwrap();
        if state.phase == Phase::Finished {
            return;
        }
        state.phase = Phase::Finished;
        self.failure.lock().unwrap().get_or_insert(error);
        *sender = None;
    }
}

/// The processes the client follows, by id.
#[derive(Default)]
pub(super) struct ProcessTable {
    /// Entries; a std lock, never held across an await.
    entries: Mutex<HashMap<String, Arc<ProcessEntry>>>,
}

impl ProcessTable {
    /// Adds an entry in phase `Starting`; returns it with its channel's receiving end.
    fn register(
        &self,
        id: &str,
        buffer: usize,
    ) -> Result<(Arc<ProcessEntry>, mpsc::Receiver<ProcessEvent>), ClientError> {
        let mut entries = self.entries.lock().unwrap();
        if entries.contains_key(id) {
            return Err(ClientError::DuplicateProcessId {
                process_id: id.to_string(),
            });
        }
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let entry = Arc::new(ProcessEntry {
            id: id.to_string(),
            state: Mutex::new(EntryState {
                phase: Phase::Starting,
                sequencer: Sequencer::default(),
                live: None,
            }),
            sender: tokio::sync::Mutex::new(Some(tx)),
            failure: Arc::new(Mutex::new(None)),
        });
        entries.insert(id.to_string(), entry.clone());
        Ok((entry, rx))
    }

    /// Removes `id` if it still names `entry`.
    pub(super) fn remove_if_same(&self, id: &str, entry: &Arc<ProcessEntry>) {
        let mut entries = self.entries.lock().unwrap();
        if matches!(entries.get(id), Some(e) if Arc::ptr_eq(e, entry)) {
            entries.remove(id);
        }
    }

    /// The processes to catch up after a reconnect, each with whether its start is confirmed.
    /// Unconfirmed ones are included too: their start may have been answered just before the
    /// drop, while the caller had not yet seen it; if the server does not know them, they were
    /// not started and the start call settles them.
    pub(super) fn followed(&self) -> Vec<(Arc<ProcessEntry>, bool)> {
        self.entries
            .lock()
            .unwrap()
            .values()
            .filter_map(|e| match e.state.lock().unwrap().phase {
                Phase::Running => Some((e.clone(), true)),
                Phase::Starting => Some((e.clone(), false)),
                Phase::Finished => None,
            })
            .collect()
    }

    /// Empties the table (the session is lost); returns what it held.
    pub(super) fn drain(&self) -> Vec<Arc<ProcessEntry>> {
        self.entries
            .lock()
            .unwrap()
            .drain()
            .map(|(_, e)| e)
            .collect()
    }

    /// Hands one notified event (or why it did not decode) to its process.
    pub(super) async fn route(
        &self,
        inner: &Arc<Inner>,
        conn: u64,
        process_id: &str,
        event: Result<ProcessEvent, String>,
    ) {
        let Some(entry) = self.entries.lock().unwrap().get(process_id).cloned() else {
            tracing::debug!(%process_id, "event of a process nobody follows");
            return;
        };
        let outcome = match event {
            Ok(event) => {
                entry.note_live(conn, event.seq());
                entry.publish(|s| s.push(event)).await
            }
            Err(message) => {
                entry
                    .fail(ClientError::Decode {
                        method: "process notification".into(),
                        message,
                    })
                    .await;
                Outcome::Failed
            }
        };
        inner.settle(&entry, outcome);
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
            None => self.entry.failure.lock().unwrap().take().map(Err),
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
        self.entry.state.lock().unwrap().phase = Phase::Finished;
        self.control
            .client
            .inner
            .processes
            .remove_if_same(self.id(), &self.entry);
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
pub(super) fn mark_started(handle: &mut ProcessHandle, sandbox_type: SandboxType) {
    handle.sandbox_type = sandbox_type;
    let mut state = handle.entry.state.lock().unwrap();
    if state.phase == Phase::Starting {
        state.phase = Phase::Running;
    }
}
