//! One process of a session's table: its output log, its stdin (writes in arrival order, each
//! `writeId` written once), and signals to its process group.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use rustix::process::Signal;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::output_log::OutputLog;
use super::spawn::StdinSink;
use super::sys;
use crate::protocol::process::{ProcessInfo, ProcessState, ReadResult, WriteStatus};
use crate::pty::PtyMaster;

/// How many recent `writeId`s each process remembers for dedupe.
const WRITE_ID_MEMORY: usize = 4096;

/// Why a stdin write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("failed to write to process stdin: {0}")]
    Io(#[source] std::io::Error),
}

/// Write-side state, behind an async lock so writes reach the child in arrival order.
pub(super) struct StdinState {
    /// The child's stdin, if it has one.
    sink: StdinSink,
    /// The last [`WRITE_ID_MEMORY`] write ids, oldest first.
    recent: VecDeque<String>,
    /// The same ids, for lookup.
    seen: HashSet<String>,
    /// A terminal's input is at the start of a line (nothing written yet, or a newline last):
    /// one end-of-file character ends it there, after a partial line it takes two.
    at_line_start: bool,
}

/// One running (or finished, still retained) process.
pub struct Process {
    /// The client-chosen id.
    pub(super) id: String,
    /// The process group to signal: the child's pid (it leads its own group or session).
    pub(super) pgid: i32,
    /// Events so far; std mutex, never held across an await.
    pub(super) log: Mutex<OutputLog>,
    /// Bumped after every log change; wakes long-polls.
    pub(super) changes: watch::Sender<u64>,
    /// Stdin; a tokio mutex because a write may wait on a full pipe and writes must stay ordered.
    stdin: tokio::sync::Mutex<StdinState>,
    /// What `process/list` shows of it besides its log.
    pub(super) meta: Meta,
    /// The terminal's master, for a tty process (`process/resize`).
    pty: Option<Arc<PtyMaster>>,
}

/// What a process was started as, for `process/list`.
#[derive(Debug, Clone)]
pub(super) struct Meta {
    /// `argv[0]` as the client sent it.
    pub(super) argv0: String,
    /// When it was started, in ms since the Unix epoch.
    pub(super) started_at_ms: u64,
}

/// Why `process/resize` could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    #[error("process {0} has no terminal (it was not started with tty: true)")]
    NoTerminal(String),
    #[error("failed to resize the terminal: {0}")]
    Io(#[source] std::io::Error),
}

impl Process {
    /// A process just spawned, whose stdin is `sink`.
    pub(super) fn new(
        id: String,
        pgid: i32,
        retained_bytes: usize,
        sink: StdinSink,
        meta: Meta,
        pty: Option<Arc<PtyMaster>>,
    ) -> Self {
        Self {
            id,
            pgid,
            meta,
            pty,
            log: Mutex::new(OutputLog::new(retained_bytes)),
            changes: watch::Sender::new(0),
            stdin: tokio::sync::Mutex::new(StdinState {
                sink,
                recent: VecDeque::new(),
                seen: HashSet::new(),
                at_line_start: true,
            }),
        }
    }

    /// Bumps the change counter after the log changed: wakes long-polls.
    pub(super) fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }
}

impl Process {
    /// Reads events after `after_seq`, waiting up to `wait` for something new. Gives up with
    /// `Err(())` if `cancel` fires first (the session was resumed elsewhere).
    pub async fn read(
        &self,
        after_seq: u64,
        max_bytes: Option<u64>,
        wait: std::time::Duration,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<ReadResult, ()> {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        tokio::pin!(cancel);
        loop {
            {
                let log = self.log.lock().unwrap();
                if log.has_news(after_seq) || tokio::time::Instant::now() >= deadline {
                    return Ok(log.read(after_seq, max_bytes));
                }
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(self.log.lock().unwrap().read(after_seq, max_bytes));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
                _ = &mut cancel => return Err(()),
            }
        }
    }

    /// Writes `data` unless `write_id` was already written.
    pub async fn write(&self, data: &[u8], write_id: &str) -> Result<WriteStatus, WriteError> {
        let mut stdin = self.stdin.lock().await;
        if stdin.seen.contains(write_id) {
            return Ok(WriteStatus::Accepted);
        }
        let result = match &mut stdin.sink {
            StdinSink::Closed => return Ok(WriteStatus::StdinClosed),
            StdinSink::Pipe(pipe) => match pipe.write_all(data).await {
                Ok(()) => pipe.flush().await,
                Err(e) => Err(e),
            },
            StdinSink::Pty(master) => master.write_all(data).await,
        };
        result.map_err(WriteError::Io)?;
        if let Some(&last) = data.last() {
            stdin.at_line_start = matches!(last, b'\n' | b'\r');
        }
        stdin.recent.push_back(write_id.to_string());
        stdin.seen.insert(write_id.to_string());
        if stdin.recent.len() > WRITE_ID_MEMORY
            && let Some(old) = stdin.recent.pop_front()
        {
            stdin.seen.remove(&old);
        }
        Ok(WriteStatus::Accepted)
    }

    /// Sends `signal` to the process group, unless everything has already ended.
    pub fn signal(&self, signal: Signal) {
        if !self.log.lock().unwrap().lifecycle().closed() {
            let _ = sys::signal_group(self.pgid, signal);
        }
    }

    /// Ends the child's stdin, after any write still in progress: a pipe is closed; a terminal
    /// gets its end-of-file character (VEOF), which a reader in canonical mode sees as EOF;
    /// after a partial line, twice (the first only hands the line over, as Ctrl-D does).
    /// Later writes answer `stdinClosed`; closing again does nothing.
    pub async fn close_stdin(&self) -> Result<(), WriteError> {
        let mut stdin = self.stdin.lock().await;
        if let StdinSink::Pty(master) = &stdin.sink {
            let eof = master.eof_char().map_err(WriteError::Io)?;
            let eofs = [eof, eof];
            let count = if stdin.at_line_start { 1 } else { 2 };
            master
                .write_all(&eofs[..count])
                .await
                .map_err(WriteError::Io)?;
        }
        stdin.sink = StdinSink::Closed;
        Ok(())
    }

    /// Sets the terminal size of a tty process.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), ResizeError> {
        let master = self
            .pty
            .as_ref()
            .ok_or_else(|| ResizeError::NoTerminal(self.id.clone()))?;
        master.set_size(rows, cols).map_err(ResizeError::Io)
    }

    /// Its row of `process/list`.
    pub fn info(&self) -> ProcessInfo {
        let log = self.log.lock().unwrap();
        let lifecycle = log.lifecycle();
        ProcessInfo {
            process_id: self.id.clone(),
            argv0: self.meta.argv0.clone(),
            state: if lifecycle.closed() {
                ProcessState::Closed
            } else if lifecycle.exited() {
                ProcessState::Exited
            } else {
                ProcessState::Running
            },
            exit_code: lifecycle.exit_code(),
            pid: (!lifecycle.exited() && self.pgid > 0).then_some(self.pgid),
            tty: self.pty.is_some(),
            started_at_ms: self.meta.started_at_ms,
            retained_bytes: log.retained_bytes() as u64,
            next_seq: log.next_seq(),
        }
    }

    /// Stops the process at its deadline: records `timedOut` if it is still running, then
    /// terminates it as `process/terminate` does.
    pub fn time_out(self: &Arc<Self>, grace: std::time::Duration, tracker: &TaskTracker) {
        if self.log.lock().unwrap().mark_timed_out() {
            self.terminate(grace, tracker);
        }
    }

    /// SIGTERM to the group now, SIGKILL after `grace` if anything of it is still there.
    /// Returns whether the process itself was still running.
    pub fn terminate(self: &Arc<Self>, grace: std::time::Duration, tracker: &TaskTracker) -> bool {
        let (running, closed) = {
            let lifecycle = self.log.lock().unwrap().lifecycle();
            (!lifecycle.exited(), lifecycle.closed())
        };
        if closed {
            return false;
        }
        let _ = sys::signal_group(self.pgid, Signal::TERM);
        let process = self.clone();
        tracker.spawn(async move {
            let mut changes = process.changes.subscribe();
            let wait_closed = async {
                while !process.log.lock().unwrap().lifecycle().closed() {
                    if changes.changed().await.is_err() {
                        break;
                    }
                }
            };
            if tokio::time::timeout(grace, wait_closed).await.is_err() {
                let _ = sys::signal_group(process.pgid, Signal::KILL);
            }
        });
        running
    }

    /// The client has processed every event up to `seq` (`process/ack`, or a `process/read`'s
    /// `afterSeq`): output up to it may be dropped, and a pump waiting for room looks again.
    /// `following`: what a `process/ack` says of the client's following of the process.
    pub fn ack(&self, seq: u64, following: super::output_log::Following) {
        let changed = {
            let mut log = self.log.lock().unwrap();
            let mode = log.set_following(following);
            log.ack(seq) || mode
        };
        if changed {
            self.changed();
        }
    }

    /// SIGKILL to the whole group, unless everything has already ended.
    pub fn kill(&self) {
        if !self.log.lock().unwrap().lifecycle().closed() {
            let _ = sys::signal_group(self.pgid, Signal::KILL);
        }
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("id", &self.id)
            .field("pgid", &self.pgid)
            .finish()
    }
}
