//! The processes of one session: the table that owns them, spawning (pipes or PTY), the pump task
//! that moves each child's output into its [`OutputLog`] and on to the attached connection, stdin
//! writes with `writeId` dedupe, signals and termination of the whole process group.
//!
//! Lifecycle of one entry in the table:
//! ```text
//!   Starting ──spawned──► Live(running) ──exit──► Live(exited) ──all streams EOF──► Live(closed)
//!      │                                                                              │
//!      └──spawn failed──► (removed)                     closed TTL ──► (removed, id free again)
//! ```

pub mod output_log;
mod sys;

pub use sys::{ignore_termination_signals, keep_inherited_fds_from_children, release_free_heap};

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ServerConfig;
use super::session::Session;
use crate::protocol::method;
use crate::protocol::process::{
    ClosedNotification, ExitedNotification, ReadResult, Stream, WriteStatus,
};
use crate::pty::{self, PtyMaster};
use crate::rpc::message::encode_notification;
use crate::rpc::{Outgoing, Text};
pub use output_log::OutputLog;

/// How many recent `writeId`s each process remembers for dedupe.
const WRITE_ID_MEMORY: usize = 4096;
/// Bytes read from a pipe at a time.
const READ_BUFFER: usize = 64 * 1024;
/// How long a sandboxed process's exit waits for trailing output before `sandboxDenied` is
/// decided from it.
const TRAILING_OUTPUT: std::time::Duration = std::time::Duration::from_millis(20);

/// What the caller asked to run, already validated.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    pub argv: Vec<String>,
    pub arg0: Option<String>,
    pub cwd: PathBuf,
    pub env: Vec<(OsString, OsString)>,
    pub tty: bool,
    pub pipe_stdin: bool,
    /// Runs under `codex-linux-sandbox`: enables the `sandboxDenied` heuristic.
    pub sandboxed: bool,
}

/// Why a spawn failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("process ID already exists")]
    DuplicateId,
    #[error("failed to open a pseudo-terminal: {0}")]
    Pty(#[source] std::io::Error),
    #[error("{source}: {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a stdin write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("failed to write to process stdin: {0}")]
    Io(#[source] std::io::Error),
}

/// Where `process/write` bytes go.
enum StdinSink {
    Pipe(ChildStdin),
    Pty(Arc<PtyMaster>),
    Closed,
}

/// Write-side state, behind an async lock so writes reach the child in arrival order.
struct StdinState {
    /// The child's stdin, if it has one.
    sink: StdinSink,
    /// The last [`WRITE_ID_MEMORY`] write ids, oldest first.
    recent: VecDeque<String>,
    /// The same ids, for lookup.
    seen: HashSet<String>,
}

/// One running (or finished, still retained) process.
pub struct Process {
    /// The client-chosen id.
    id: String,
    /// The process group to signal: the child's pid (it leads its own group or session).
    pgid: i32,
    /// Events so far; std mutex, never held across an await.
    log: Mutex<OutputLog>,
    /// Bumped after every log change; wakes long-polls.
    changes: watch::Sender<u64>,
    /// Stdin; a tokio mutex because a write may wait on a full pipe and writes must stay ordered.
    stdin: tokio::sync::Mutex<StdinState>,
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
        stdin.recent.push_back(write_id.to_string());
        stdin.seen.insert(write_id.to_string());
        if stdin.recent.len() > WRITE_ID_MEMORY
            && let Some(old) = stdin.recent.pop_front()
        {
            stdin.seen.remove(&old);
        }
        Ok(WriteStatus::Accepted)
    }

    /// Sends SIGINT to the process group, unless everything has already ended.
    pub fn interrupt(&self) {
        if !self.log.lock().unwrap().closed() {
            let _ = sys::signal_group(self.pgid, libc::SIGINT);
        }
    }

    /// SIGTERM to the group now, SIGKILL after `grace` if anything of it is still there.
    /// Returns whether the process itself was still running.
    pub fn terminate(self: &Arc<Self>, grace: std::time::Duration, tracker: &TaskTracker) -> bool {
        let (running, closed) = {
            let log = self.log.lock().unwrap();
            (!log.exited(), log.closed())
        };
        if closed {
            return false;
        }
        let _ = sys::signal_group(self.pgid, libc::SIGTERM);
        let process = self.clone();
        tracker.spawn(async move {
            let mut changes = process.changes.subscribe();
            let wait_closed = async {
                while !process.log.lock().unwrap().closed() {
                    if changes.changed().await.is_err() {
                        break;
                    }
                }
            };
            if tokio::time::timeout(grace, wait_closed).await.is_err() {
                let _ = sys::signal_group(process.pgid, libc::SIGKILL);
            }
        });
        running
    }

    /// SIGKILL to the whole group, unless everything has already ended.
    pub fn kill(&self) {
        if !self.log.lock().unwrap().closed() {
            let _ = sys::signal_group(self.pgid, libc::SIGKILL);
        }
    }
}

/// A slot in the table.
enum Slot {
    /// The id is reserved while the child is being spawned.
    Starting,
    Live(Arc<Process>),
}

/// What a lookup found.
pub enum Lookup {
    Missing,
    Starting,
    Live(Arc<Process>),
}

/// The processes of one session, by client-chosen id.
pub struct ProcessTable {
    /// Entries; std mutex, never held across an await.
    entries: Mutex<HashMap<String, Slot>>,
    /// Retention and TTLs.
    config: ServerConfig,
    /// Where pump and timer tasks are spawned.
    tracker: TaskTracker,
    /// Server shutdown: retention timers stop waiting.
    cancel: CancellationToken,
}

impl ProcessTable {
    pub(super) fn new(
        config: ServerConfig,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            config,
            tracker,
            cancel,
        }
    }

    pub fn get(&self, id: &str) -> Lookup {
        match self.entries.lock().unwrap().get(id) {
            None => Lookup::Missing,
            Some(Slot::Starting) => Lookup::Starting,
            Some(Slot::Live(p)) => Lookup::Live(p.clone()),
        }
    }

    pub fn terminate_grace(&self) -> std::time::Duration {
        self.config.terminate_grace
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Kills every process group of the table (session expiry, shutdown).
    pub fn kill_all(&self) {
        let live: Vec<_> = self
            .entries
            .lock()
            .unwrap()
            .values()
            .filter_map(|s| match s {
                Slot::Live(p) => Some(p.clone()),
                Slot::Starting => None,
            })
            .collect();
        for p in live {
            p.kill();
        }
    }

    /// Spawns `spec` as process `id` of `session`, and starts its pump.
    pub(crate) fn start(
        &self,
        session: &Arc<Session>,
        id: String,
        spec: SpawnSpec,
    ) -> Result<(), SpawnError> {
        {
            let mut entries = self.entries.lock().unwrap();
            if entries.contains_key(&id) {
                return Err(SpawnError::DuplicateId);
            }
            entries.insert(id.clone(), Slot::Starting);
        }
        let spawned = match spawn(&spec) {
            Ok(s) => s,
            Err(err) => {
                self.entries.lock().unwrap().remove(&id);
                return Err(err);
            }
        };
        let pgid = spawned.child.id().map(|p| p as i32).unwrap_or(-1);
        super::reaper::watch(pgid);
        let process = Arc::new(Process {
            id: id.clone(),
            pgid,
            log: Mutex::new(OutputLog::new(self.config.retained_output_bytes)),
            changes: watch::Sender::new(0),
            stdin: tokio::sync::Mutex::new(StdinState {
                sink: spawned.stdin,
                recent: VecDeque::new(),
                seen: HashSet::new(),
            }),
        });
        self.entries
            .lock()
            .unwrap()
            .insert(id, Slot::Live(process.clone()));
        let pump = Pump {
            process,
            session: session.clone(),
            closed_ttl: self.config.closed_process_ttl,
            sandboxed: spec.sandboxed,
            cancel: self.cancel.clone(),
        };
        self.tracker.spawn(pump.run(spawned.child, spawned.output));
        Ok(())
    }

    /// Frees `id` if it still names `process`.
    fn remove_if_same(&self, id: &str, process: &Arc<Process>) {
        let mut entries = self.entries.lock().unwrap();
        if matches!(entries.get(id), Some(Slot::Live(p)) if Arc::ptr_eq(p, process)) {
            entries.remove(id);
            super::reaper::forget(process.pgid);
        }
    }
}

/// The child's output ends.
enum Output {
    Pipes {
        stdout: ChildStdout,
        stderr: ChildStderr,
    },
    Pty(Arc<PtyMaster>),
}

/// A started child and its ends.
struct Spawned {
    child: Child,
    stdin: StdinSink,
    output: Output,
}

fn spawn(spec: &SpawnSpec) -> Result<Spawned, SpawnError> {
    let program = &spec.argv[0];
    // Look a bare name up on the child's PATH here, as execvp would: std falls back from
    // posix_spawn to fork when it has to search a PATH that differs from the server's.
    let resolved = resolve_program(program, &spec.env, &spec.cwd);
    let mut cmd = tokio::process::Command::new(resolved.as_deref().unwrap_or(Path::new(program)));
    if resolved.is_some() && spec.arg0.is_none() {
        cmd.arg0(program);
    }
    cmd.args(&spec.argv[1..])
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(false);
    if let Some(arg0) = &spec.arg0 {
        cmd.arg0(arg0);
    }
    sys::configure_child(&mut cmd, spec.tty);
    let spawn_err = |source| SpawnError::Spawn {
        program: program.clone(),
        source,
    };
    if spec.tty {
        let pair = pty::open(pty::DEFAULT_ROWS, pty::DEFAULT_COLS).map_err(SpawnError::Pty)?;
        let dup =
            |fd: &std::os::fd::OwnedFd| fd.try_clone().map(Stdio::from).map_err(SpawnError::Pty);
        cmd.stdin(dup(&pair.slave)?)
            .stdout(dup(&pair.slave)?)
            .stderr(dup(&pair.slave)?);
        let child = cmd.spawn().map_err(spawn_err)?;
        // Our copy of the slave must go, or the master never sees EOF.
        drop(cmd);
        drop(pair.slave);
        let master = Arc::new(PtyMaster::new(pair.master).map_err(SpawnError::Pty)?);
        Ok(Spawned {
            child,
            stdin: StdinSink::Pty(master.clone()),
            output: Output::Pty(master),
        })
    } else {
        cmd.stdin(if spec.pipe_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let stdin = child
            .stdin
            .take()
            .map(StdinSink::Pipe)
            .unwrap_or(StdinSink::Closed);
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        Ok(Spawned {
            child,
            stdin,
            output: Output::Pipes { stdout, stderr },
        })
    }
}

/// The executable a bare `program` names on the child's `PATH` (execvp's default path when the
/// child has none), or `None` to leave the lookup to the OS (a name with a slash, or not found:
/// then the spawn reports the OS error).
fn resolve_program(program: &str, env: &[(OsString, OsString)], cwd: &Path) -> Option<PathBuf> {
    if program.contains('/') {
        return None;
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| OsString::from("/bin:/usr/bin"));
    which::which_in(program, Some(path), cwd).ok()
}

/// Moves one child's events into its log and on to the attached connection.
struct Pump {
    /// The process whose log this pump fills.
    process: Arc<Process>,
    /// Whose attachment hears the events, and whose table frees the id after the closed TTL.
    session: Arc<Session>,
    /// How long the process stays readable after `closed`.
    closed_ttl: std::time::Duration,
    /// Whether the child runs under the sandbox wrapper (exit waits for trailing output, and
    /// `sandboxDenied` is computed).
    sandboxed: bool,
    /// Server shutdown: stop waiting out the retention.
    cancel: CancellationToken,
}

impl Pump {
    async fn run(self, mut child: Child, output: Output) {
        let (mut first, mut second) = match output {
            Output::Pipes { stdout, stderr } => {
                (Some(Source::Stdout(stdout)), Some(Source::Stderr(stderr)))
            }
            Output::Pty(master) => (Some(Source::Pty(master)), None),
        };
        let mut first_buf = vec![0u8; READ_BUFFER];
        let mut second_buf = vec![0u8; READ_BUFFER];
        // The child was reaped; for a sandboxed one its exit waits ≤ TRAILING_OUTPUT for output.
        let mut reaped = false;
        let mut pending_exit: Option<(
            std::io::Result<std::process::ExitStatus>,
            tokio::time::Instant,
        )> = None;
        let mut exited = false;
        while first.is_some() || second.is_some() || !exited {
            if first.is_none()
                && second.is_none()
                && let Some((status, _)) = pending_exit.take()
            {
                exited = true;
                self.exit(status).await;
                continue;
            }
            let deadline = pending_exit.as_ref().map(|(_, d)| *d);
            // Biased toward output so bytes written before the exit are logged first.
            tokio::select! {
                biased;
                r = read_source(&mut first, &mut first_buf), if first.is_some() => {
                    self.consume(&mut first, r, &first_buf).await;
                }
                r = read_source(&mut second, &mut second_buf), if second.is_some() => {
                    self.consume(&mut second, r, &second_buf).await;
                }
                status = child.wait(), if !reaped => {
                    reaped = true;
                    if self.sandboxed {
                        pending_exit = Some((status, tokio::time::Instant::now() + TRAILING_OUTPUT));
                    } else {
                        exited = true;
                        self.exit(status).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    if let Some((status, _)) = pending_exit.take() {
                        exited = true;
                        self.exit(status).await;
                    }
                }
            }
        }
        // The read buffers (128 KiB of touched heap) must not live on through the closed-TTL
        // wait below: with 100s of finished processes retained they grew the RSS and every
        // later fork's page-table copy (`scripts/bench`, "fan-out", `copy_page_range` by perf).
        drop((first_buf, second_buf, child));
        let seq = self.process.log.lock().unwrap().push_closed();
        self.process.changes.send_modify(|v| *v += 1);
        let id = self.process.id.clone();
        self.notify(encode_notification(
            method::PROCESS_CLOSED,
            ClosedNotification {
                process_id: id.clone(),
                seq,
            },
        ))
        .await;
        tokio::select! {
            _ = tokio::time::sleep(self.closed_ttl) => {
                self.session.processes.remove_if_same(&id, &self.process);
            }
            _ = self.cancel.cancelled() => {}
        }
    }

    /// Logs what one read returned; EOF or an error closes the source.
    async fn consume(&self, source: &mut Option<Source>, read: std::io::Result<usize>, buf: &[u8]) {
        match (read, source.as_ref().map(Source::stream)) {
            (Ok(n), Some(stream)) if n > 0 => self.output(stream, &buf[..n]).await,
            _ => *source = None,
        }
    }

    async fn output(&self, stream: Stream, data: &[u8]) {
        let message = self
            .process
            .log
            .lock()
            .unwrap()
            .push_output(stream, data.len(), |seq| {
                encode_output(&self.process.id, seq, stream, data)
            });
        self.process.changes.send_modify(|v| *v += 1);
        self.notify(message).await;
    }

    async fn exit(&self, status: std::io::Result<std::process::ExitStatus>) {
        let code = match &status {
            Ok(status) => exit_code(*status),
            Err(_) => -1,
        };
        let (seq, sandbox_denied) = {
            let mut log = self.process.log.lock().unwrap();
            if let Err(err) = &status {
                log.set_failure(format!("failed to wait for process: {err}"));
            }
            let denied = self.sandboxed && sandbox_denied(code, log.output_mentions_sandbox());
            (log.push_exit(code, denied), denied)
        };
        self.process.changes.send_modify(|v| *v += 1);
        self.notify(encode_notification(
            method::PROCESS_EXITED,
            ExitedNotification {
                process_id: self.process.id.clone(),
                seq,
                exit_code: code,
                sandbox_denied,
            },
        ))
        .await;
    }

    /// Sends to the attached connection, if any. Gives up when the attachment changes: the client
    /// on the next one catches up with `process/read`, so nothing is lost.
    async fn notify(&self, message: impl Into<Outgoing>) {
        let message = message.into();
        let Some((outgoing, mut generation)) = self.session.notifier() else {
            return;
        };
        tokio::select! {
            _ = outgoing.send(message) => {}
            _ = generation.changed() => {}
        }
    }
}

/// Encodes a `process/output` notification of `data`; returns it and where its base64 is in it.
///
/// The same JSON as [`OutputNotification`](crate::protocol::process::OutputNotification) through
/// [`encode_notification`], but built by hand: the base64 is encoded straight into the message
/// (one buffer, shared with the output log, no copies), and it never needs JSON escaping, so
/// serde_json's byte-by-byte escape scan of it (a third of the server's CPU time while
/// streaming, by `perf`) is skipped.
fn encode_output(
    process_id: &str,
    seq: u64,
    stream: Stream,
    data: &[u8],
) -> (Text, std::ops::Range<usize>) {
    use std::fmt::Write as _;
    let id = serde_json::to_string(process_id).expect("a string always serializes");
    let stream = match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
        Stream::Pty => "pty",
    };
    let mut text = String::with_capacity(data.len().div_ceil(3) * 4 + id.len() + 96);
    let _ = write!(
        text,
        r#"{{"method":"{}","params":{{"processId":{id},"seq":{seq},"stream":"{stream}","chunk":""#,
        method::PROCESS_OUTPUT
    );
    let start = text.len();
    crate::b64::encode_append(data, &mut text);
    let end = text.len();
    text.push_str("\"}}");
    (text.into(), start..end)
}

/// One output source of a child.
enum Source {
    Stdout(ChildStdout),
    Stderr(ChildStderr),
    Pty(Arc<PtyMaster>),
}

impl Source {
    fn stream(&self) -> Stream {
        match self {
            Self::Stdout(_) => Stream::Stdout,
            Self::Stderr(_) => Stream::Stderr,
            Self::Pty(_) => Stream::Pty,
        }
    }
}

/// Reads from a source that is known to be present (the select guard checks).
async fn read_source(source: &mut Option<Source>, buf: &mut [u8]) -> std::io::Result<usize> {
    match source {
        Some(Source::Stdout(s)) => s.read(buf).await,
        Some(Source::Stderr(s)) => s.read(buf).await,
        Some(Source::Pty(m)) => m.read(buf).await,
        None => std::future::pending().await,
    }
}

/// sandbox.md §4.5: did the sandbox (rather than the program) make this exit fail?
pub fn sandbox_denied(exit_code: i32, output_mentions_sandbox: bool) -> bool {
    match exit_code {
        0 => false,
        _ if output_mentions_sandbox => true,
        2 | 126 | 127 => false,
        159 => true,
        _ => false,
    }
}

/// The exit code in the reference's style: the code, or 128+N for a death by signal N.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
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

#[cfg(test)]
mod encode_tests {
    use super::*;
    use crate::protocol::process::OutputNotification;

    #[test]
    fn hand_encoded_output_matches_serde() {
        for (id, stream) in [
            ("p1", Stream::Stdout),
            ("quote\"and\\back\u{1}slash é", Stream::Stderr),
            ("", Stream::Pty),
        ] {
            let data = b"hi\n\xfb\xff";
            let chunk = "aGkK+/8=";
            let by_serde = encode_notification(
                method::PROCESS_OUTPUT,
                OutputNotification {
                    process_id: id.to_string(),
                    seq: 42,
                    stream,
                    chunk: chunk.to_string(),
                },
            );
            let (by_hand, base64) = encode_output(id, 42, stream, data);
            assert_eq!(by_hand.as_str(), by_serde);
            assert_eq!(&by_hand.as_str()[base64], chunk);
        }
    }
}

#[cfg(test)]
mod spawn_tests {
    use super::*;

    #[test]
    fn bare_program_is_found_on_the_childs_path_like_execvp() {
        let env = vec![(
            OsString::from("PATH"),
            OsString::from("/nonexistent:/bin:/usr/bin"),
        )];
        let found = resolve_program("sh", &env, Path::new("/")).expect("sh is on PATH");
        assert!(found.is_absolute() && found.ends_with("sh"), "{found:?}");
        assert_eq!(
            resolve_program("./x", &env, Path::new("/")),
            None,
            "slash: left to the OS"
        );
        assert_eq!(
            resolve_program("no-such-program-xyz", &env, Path::new("/")),
            None
        );
    }
}
