//! One process of a session's table: its output log, its stdin (a queue bounded in bytes,
//! written in arrival order in the background, each `writeId` written once), and signals to its
//! process group, and to its whole tree where it has a cgroup of its own.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::sync::{Arc, Mutex};

use rustix::process::Signal;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cgroup::ProcessCgroup;
use super::output_log::OutputLog;
use super::spawn::StdinSink;
use super::sys;
use crate::protocol::process::{ProcessInfo, ProcessState, ReadResult, WriteStatus};
use crate::pty::PtyMaster;

/// How many recent `writeId`s each process remembers for dedupe.
const WRITE_ID_MEMORY: usize = 4096;

/// Bytes of `process/write` data that may wait for a child that does not read its stdin. A write
/// that would take the queue past it is refused, unless nothing waits (one write of any size,
/// up to the message limit, is always taken).
pub const STDIN_QUEUE_BYTES: usize = 1 << 20;

/// Why a stdin write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("failed to write to process stdin: {0}")]
    Io(#[source] std::io::Error),
    /// The child has not read what was written before (the stdin queue is full).
    #[error(
        "stdin queue of process {id} is full: {queued} bytes written earlier wait for the process \
         to read them (the limit is {limit}); retry once it has read some"
    )]
    QueueFull {
        id: String,
        queued: usize,
        limit: usize,
    },
}

/// What waits to be done to the child's stdin, in order.
enum StdinOp {
    /// Bytes to write.
    Data(Vec<u8>),
    /// End the stdin: write these bytes first (a terminal's end-of-file characters; none for a
    /// pipe), then close it.
    Close(Vec<u8>),
}

/// Write-side state. A std mutex, never held across an await: a write that cannot go at once is
/// queued and written by a drain task, which holds the sink meanwhile.
pub(super) struct StdinState {
    /// The child's stdin; `None` while a drain task holds it (the queue is not empty).
    sink: Option<StdinSink>,
    /// Written but not yet taken by the child, oldest first.
    queue: VecDeque<StdinOp>,
    /// Data bytes in `queue` and in the drain task's hands.
    queued_bytes: usize,
    /// `process/closeStdin` was asked (or there is no stdin): later writes answer `stdinClosed`.
    closed: bool,
    /// A queued write failed (the child is gone): later writes answer this error.
    failed: Option<(io::ErrorKind, String)>,
    /// The last [`WRITE_ID_MEMORY`] write ids, oldest first.
    recent: VecDeque<String>,
    /// The same ids, for lookup.
    seen: HashSet<String>,
    /// A terminal's input is at the start of a line (nothing written yet, or a newline last):
    /// one end-of-file character ends it there, after a partial line it takes two.
    at_line_start: bool,
}

impl StdinState {
    fn remember(&mut self, write_id: &str) {
        self.recent.push_back(write_id.to_string());
        self.seen.insert(write_id.to_string());
        if self.recent.len() > WRITE_ID_MEMORY
            && let Some(old) = self.recent.pop_front()
        {
            self.seen.remove(&old);
        }
    }

    /// The error later writes answer after a queued one failed.
    fn failure(&self) -> Option<WriteError> {
        self.failed
            .as_ref()
            .map(|(kind, message)| WriteError::Io(io::Error::new(*kind, message.clone())))
    }
}

/// Writes what it can of `data` now, without waiting: `Ok(n)` bytes taken (0 on a full pipe).
fn write_now(sink: &StdinSink, data: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsFd;
    let written = match sink {
        StdinSink::Pipe(pipe) => rustix::io::write(pipe.as_fd(), data).map_err(io::Error::from),
        StdinSink::Pty(master) => master.try_write(data),
        StdinSink::Closed => return Ok(data.len()),
    };
    match written {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        other => other,
    }
}

/// Writes all of `data`, waiting on a full pipe.
async fn write_all(sink: &mut StdinSink, data: &[u8]) -> io::Result<()> {
    match sink {
        StdinSink::Pipe(pipe) => {
            pipe.write_all(data).await?;
            pipe.flush().await
        }
        StdinSink::Pty(master) => master.write_all(data).await,
        StdinSink::Closed => Ok(()),
    }
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
    /// Stdin: the sink, the queue and the write ids.
    stdin: Mutex<StdinState>,
    /// What `process/list` shows of it besides its log.
    pub(super) meta: Meta,
    /// Started with a terminal.
    tty: bool,
    /// The terminal's master, for a tty process (`process/resize`), until `closed`.
    pty: Mutex<Option<Arc<PtyMaster>>>,
    /// Fired at `closed`: a drain task still waiting on the child's stdin gives up.
    ended: CancellationToken,
    /// Its cgroup, holding it and every descendant, where the server could make one.
    cgroup: Option<ProcessCgroup>,
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
        cgroup: Option<ProcessCgroup>,
    ) -> Self {
        let closed = matches!(sink, StdinSink::Closed);
        Self {
            id,
            pgid,
            meta,
            tty: pty.is_some(),
            pty: Mutex::new(pty),
            ended: CancellationToken::new(),
            cgroup,
            log: Mutex::new(OutputLog::new(retained_bytes)),
            changes: watch::Sender::new(0),
            stdin: Mutex::new(StdinState {
                sink: Some(sink),
                queue: VecDeque::new(),
                queued_bytes: 0,
                closed,
                failed: None,
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

    /// Drops the retained output, now and as it comes (the session expired).
    pub(super) fn discard_output(&self) {
        self.log.lock().unwrap().discard_retained();
    }

    /// At `closed`: lets go of the terminal's master (a closed tty process held it for the
    /// closed TTL, and a client could run the machine out of terminals), and drops what still
    /// waits to be written to its stdin (a drain task gives up). The retained output stays
    /// readable; a later write to a terminal, or to a process whose queued input was dropped,
    /// answers the error.
    pub(super) fn release_at_close(&self) {
        self.ended.cancel();
        self.pty.lock().unwrap().take();
        let mut stdin = self.stdin.lock().unwrap();
        let failure = match (&stdin.sink, stdin.queued_bytes) {
            (Some(StdinSink::Pty(_)), _) => Some("the process has closed its terminal"),
            (None, _) | (_, 1..) => Some("the process has ended"),
            _ => None,
        };
        if let Some(failure) = failure {
            if stdin.sink.is_some() {
                stdin.sink = Some(StdinSink::Closed);
            }
            stdin.queue.clear();
            stdin.queued_bytes = 0;
            stdin
                .failed
                .get_or_insert((io::ErrorKind::BrokenPipe, failure.to_string()));
        }
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

    /// Writes `data` unless `write_id` was already written. Never waits for the child: what it
    /// does not take at once is queued (at most [`STDIN_QUEUE_BYTES`]) and written in order in
    /// the background; `accepted` means written or queued. An error writing now (the child is
    /// gone) is answered; one of a queued write is answered to the writes after it.
    pub fn write(
        self: &Arc<Self>,
        data: &[u8],
        write_id: &str,
        tracker: &TaskTracker,
    ) -> Result<WriteStatus, WriteError> {
        let mut stdin = self.stdin.lock().unwrap();
        if stdin.seen.contains(write_id) {
            return Ok(WriteStatus::Accepted);
        }
        if stdin.closed {
            return Ok(WriteStatus::StdinClosed);
        }
        if let Some(failure) = stdin.failure() {
            return Err(failure);
        }
        if stdin.queued_bytes > 0 && stdin.queued_bytes + data.len() > STDIN_QUEUE_BYTES {
            return Err(WriteError::QueueFull {
                id: self.id.clone(),
                queued: stdin.queued_bytes,
                limit: STDIN_QUEUE_BYTES,
            });
        }
        let mut written = 0;
        if stdin.queue.is_empty()
            && let Some(sink) = &stdin.sink
        {
            written = write_now(sink, data).map_err(WriteError::Io)?;
        }
        if written < data.len() {
            stdin.queued_bytes += data.len() - written;
            stdin
                .queue
                .push_back(StdinOp::Data(data[written..].to_vec()));
            self.start_drain(&mut stdin, tracker);
        }
        if let Some(&last) = data.last() {
            stdin.at_line_start = matches!(last, b'\n' | b'\r');
        }
        stdin.remember(write_id);
        Ok(WriteStatus::Accepted)
    }

    /// Starts the task that empties the queue, unless one runs (it holds the sink).
    fn start_drain(self: &Arc<Self>, stdin: &mut StdinState, tracker: &TaskTracker) {
        if let Some(sink) = stdin.sink.take() {
            tracker.spawn(self.clone().drain(sink));
        }
    }

    /// Writes the queue in order, waiting on the child; gives the sink back when it is empty.
    async fn drain(self: Arc<Self>, mut sink: StdinSink) {
        loop {
            let op = {
                let mut stdin = self.stdin.lock().unwrap();
                match stdin.queue.pop_front() {
                    Some(op) => op,
                    None => {
                        stdin.sink = Some(sink);
                        return;
                    }
                }
            };
            let (bytes, close) = match &op {
                StdinOp::Data(bytes) => (bytes.as_slice(), false),
                StdinOp::Close(bytes) => (bytes.as_slice(), true),
            };
            let result = tokio::select! {
                r = write_all(&mut sink, bytes) => r,
                _ = self.ended.cancelled() => Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the process has ended",
                )),
            };
            let mut stdin = self.stdin.lock().unwrap();
            if !close {
                // Saturating: `release_at_close` may have emptied the queue meanwhile.
                stdin.queued_bytes = stdin.queued_bytes.saturating_sub(bytes.len());
            }
            if let Err(err) = result {
                stdin.failed.get_or_insert((err.kind(), err.to_string()));
                stdin.queue.clear();
                stdin.queued_bytes = 0;
                stdin.sink = Some(StdinSink::Closed);
                return;
            }
            if close {
                sink = StdinSink::Closed;
            }
        }
    }
    /// Sends `signal` to the process group, unless everything has already ended.
    pub fn signal(&self, signal: Signal) {
        if !self.log.lock().unwrap().lifecycle().closed() {
            let _ = sys::signal_group(self.pgid, signal);
        }
    }

    /// Ends the child's stdin after every write queued before it: a pipe is closed; a terminal
    /// gets its end-of-file character (VEOF), which a reader in canonical mode sees as EOF;
    /// after a partial line, twice (the first only hands the line over, as Ctrl-D does). Never
    /// waits for the child. Later writes answer `stdinClosed`; closing again does nothing.
    pub fn close_stdin(self: &Arc<Self>, tracker: &TaskTracker) -> Result<(), WriteError> {
        let mut stdin = self.stdin.lock().unwrap();
        if stdin.closed {
            return Ok(());
        }
        let mut eofs = Vec::new();
        if let Some(StdinSink::Pty(master)) = &stdin.sink {
            let eof = master.eof_char().map_err(WriteError::Io)?;
            eofs = vec![eof; if stdin.at_line_start { 1 } else { 2 }];
        } else if stdin.sink.is_none() {
            // A drain task holds the terminal; ask it the same way.
            if let Some(master) = self.pty.lock().unwrap().clone() {
                let eof = master.eof_char().map_err(WriteError::Io)?;
                eofs = vec![eof; if stdin.at_line_start { 1 } else { 2 }];
            }
        }
        stdin.closed = true;
        let mut written = 0;
        if stdin.queue.is_empty()
            && let Some(sink) = &stdin.sink
        {
            written = write_now(sink, &eofs).unwrap_or(0);
            if written == eofs.len() {
                stdin.sink = Some(StdinSink::Closed);
                return Ok(());
            }
        }
        stdin
            .queue
            .push_back(StdinOp::Close(eofs[written..].to_vec()));
        self.start_drain(&mut stdin, tracker);
        Ok(())
    }

    /// Sets the terminal size of a tty process (nothing to do once it has closed).
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), ResizeError> {
        if !self.tty {
            return Err(ResizeError::NoTerminal(self.id.clone()));
        }
        match self.pty.lock().unwrap().as_ref() {
            Some(master) => master.set_size(rows, cols).map_err(ResizeError::Io),
            None => Ok(()),
        }
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
            tty: self.tty,
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

    /// SIGTERM to the group now (and to every process of its cgroup), SIGKILL after `grace` to
    /// the group if the process has not closed by then, and to whatever is left of the cgroup.
    /// Returns whether the process itself was still running.
    pub fn terminate(self: &Arc<Self>, grace: std::time::Duration, tracker: &TaskTracker) -> bool {
        let (running, closed) = {
            let lifecycle = self.log.lock().unwrap().lifecycle();
            (!lifecycle.exited(), lifecycle.closed())
        };
        let tree = self.cgroup.as_ref().filter(|cgroup| cgroup.populated());
        if closed && tree.is_none() {
            return false;
        }
        // Without a cgroup: the descendants /proc still ties to it, as pidfds.
        let found = if self.cgroup.is_none() {
            sys::ProcSnapshot::take().tree(self.pgid, running, true)
        } else {
            Vec::new()
        };
        if !closed {
            let _ = sys::signal_group(self.pgid, Signal::TERM);
        }
        if let Some(cgroup) = tree {
            cgroup.signal(Signal::TERM);
        }
        sys::signal_pidfds(&found, Signal::TERM);
        let process = self.clone();
        tracker.spawn(async move {
            let deadline = tokio::time::Instant::now() + grace;
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
            if let Some(cgroup) = &process.cgroup {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if !cgroup.wait_empty(left).await {
                    cgroup.kill();
                }
            }
            for pidfd in found {
                if !sys::pidfd_exited_by(&pidfd, deadline).await {
                    sys::signal_pidfds(std::slice::from_ref(&pidfd), Signal::KILL);
                }
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

    /// SIGKILL to the whole group, unless everything has already ended, and to every process of
    /// its cgroup, or, without one, of its tree as found in `snapshot` (one for many processes)
    /// or a new look at /proc.
    pub(super) fn kill_in(&self, snapshot: Option<&sys::ProcSnapshot>) {
        let lifecycle = self.log.lock().unwrap().lifecycle();
        if lifecycle.closed() && self.cgroup.is_none() {
            return;
        }
        if let Some(cgroup) = &self.cgroup {
            if !lifecycle.closed() {
                let _ = sys::signal_group(self.pgid, Signal::KILL);
            }
            cgroup.kill();
            return;
        }
        let taken;
        let snapshot = match snapshot {
            Some(snapshot) => snapshot,
            None => {
                taken = sys::ProcSnapshot::take();
                &taken
            }
        };
        let found = snapshot.tree(self.pgid, !lifecycle.exited(), true);
        let _ = sys::signal_group(self.pgid, Signal::KILL);
        sys::signal_pidfds(&found, Signal::KILL);
    }

    /// Whether its tree is found by its cgroup (else through /proc).
    pub(super) fn has_cgroup(&self) -> bool {
        self.cgroup.is_some()
    }

    /// The process's record is let go of (its closed TTL is over): whatever of its tree outlived
    /// it is killed, and its cgroup removed.
    pub(super) async fn retire(&self) {
        if let Some(cgroup) = &self.cgroup {
            cgroup.remove(RETIRE_WAIT).await;
        }
    }
}

/// How long a retired process's cgroup may take to empty after SIGKILL before it is left behind
/// (it is removed with the server's at shutdown, or by the reaper).
const RETIRE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("id", &self.id)
            .field("pgid", &self.pgid)
            .finish()
    }
}
