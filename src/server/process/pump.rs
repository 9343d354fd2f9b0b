//! The pump: one task per child that moves its output into its [`OutputLog`], records its exit
//! and close, sends each event on to the attached connection, and frees the id after the closed
//! TTL. It holds a narrow handle on the world (where to send, how to free its id), not the
//! session.
//!
//! Before each read it decides, from the attachment's [`Flow`], what its log may drop and whether
//! it may read on (issue 15):
//!
//! | flow | the log may drop | the pump stops reading while unacknowledged output is |
//! |---|---|---|
//! | attached, the client does not ack this process | the oldest beyond the retention; output held while detached only once read back (or [`HOLD_AFTER_RESUME`] after the resume) | ≥ window + retention, while output is held |
//! | attached, the client acks this process (`process/ack`) | only acknowledged output | ≥ the window |
//! | detached, `--detached-output block` | only acknowledged output | ≥ the retention |
//! | detached, `--detached-output drop` | the oldest beyond the retention | (never) |
//! | expired, or the server shutting down | the oldest beyond the retention | (never) |
//!
//! The window is the larger of the retention (`--retained-output-bytes`) and the raw bytes
//! `--max-outgoing-bytes` of encoded output carry (what may wait in the queue): an acking
//! client's output after its last acknowledgement may grow that far before the process waits.
//! A client that does not ack gets the retention, as before issue 15: with the defaults (1 MiB
//! of retention, 768 KiB of output in a full queue) what waits in the queue is retained. While it
//! stops reading, the child blocks on its full pipe and the pump waits, without polling, for an
//! acknowledgement, a change of attachment, or shutdown.

use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::process::{ChildStderr, ChildStdout};
use tokio_util::sync::CancellationToken;

use super::child::Child;
use super::entry::Process;
use super::output_log::Retain;
use super::spawn::Output;
use crate::protocol::method;
use crate::protocol::process::{ClosedNotification, ExitedNotification, Stream};
use crate::pty::PtyMaster;
use crate::rpc::Text;
use crate::rpc::encode::{encode_notification, encode_output};
use crate::sandbox::denial;
use crate::server::attachment::{Attachment, Flow};
use crate::server::config::DetachedOutput;
use crate::server::metrics::ProcessAudit;

/// Bytes read from a pipe at a time.
const READ_BUFFER: usize = 64 * 1024;
/// How long a sandboxed process's exit waits for trailing output before `sandboxDenied` is
/// decided from it.
const TRAILING_OUTPUT: std::time::Duration = std::time::Duration::from_millis(20);

/// Frees a process's id in its table (if it still names that process) after the closed TTL.
pub(super) type Release = Box<dyn FnOnce() + Send + Sync>;

/// Moves one child's events into its log and on to the attached connection.
pub(super) struct Pump {
    /// The process whose log this pump fills.
    pub(super) process: Arc<Process>,
    /// Who hears the events: the session's attachment.
    pub(super) attachment: Arc<Attachment>,
    /// Frees the id after the closed TTL.
    pub(super) release: Release,
    /// How long the process stays readable after `closed`.
    pub(super) closed_ttl: std::time::Duration,
    /// Whether the child runs under the sandbox wrapper (exit waits for trailing output, and
    /// `sandboxDenied` is computed).
    pub(super) sandboxed: bool,
    /// Server shutdown: stop waiting out the retention.
    pub(super) cancel: CancellationToken,
    /// Metrics and the audit record of the exit.
    pub(super) audit: ProcessAudit,
    /// What the log does once full while the session is detached.
    pub(super) detached_output: DetachedOutput,
}

impl Pump {
    pub(super) async fn run(self, mut child: Child, output: Output) {
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
        let mut process_changes = self.process.changes.subscribe();
        let mut attachment_changes = self.attachment.changes();
        let mut hold = Hold::default();
        while first.is_some() || second.is_some() || !exited {
            if first.is_none()
                && second.is_none()
                && let Some((status, _)) = pending_exit.take()
            {
                exited = true;
                self.exit(status).await;
                continue;
            }
            if first.is_some() || second.is_some() {
                // Seen before deciding, so a change made after the decision wakes the wait.
                process_changes.borrow_and_update();
                attachment_changes.borrow_and_update();
                if let Err(release) = self.regulate(&mut hold) {
                    // Nothing is read, reaped or recorded until the client catches up (or can
                    // no longer): the child blocks on its full pipe.
                    let release = release.unwrap_or_else(tokio::time::Instant::now);
                    tokio::select! {
                        _ = process_changes.changed() => {}
                        _ = attachment_changes.changed() => {}
                        _ = self.cancel.cancelled() => {}
                        _ = tokio::time::sleep_until(release), if hold.resumed.is_some() => {}
                    }
                    continue;
                }
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
        // A terminal's master goes now, not after the closed TTL (issue 15).
        self.process.release_at_close();
        let seq = self.process.log.lock().unwrap().push_closed();
        self.process.changed();
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
                (self.release)();
                self.process.retire().await;
            }
            // Shutdown kills and removes every cgroup of the server at once.
            _ = self.cancel.cancelled() => {}
        }
    }

    /// Tells the log what it may drop under the current flow (module documentation). `Ok`: the
    /// pump may read more now; `Err(release)`: it must wait, at most until `release` if set.
    fn regulate(&self, hold: &mut Hold) -> Result<(), Option<tokio::time::Instant>> {
        let flow = self.attachment.flow();
        let now = tokio::time::Instant::now();
        match flow {
            Flow::Detached => hold.detached = true,
            Flow::Attached if hold.detached => {
                hold.detached = false;
                hold.resumed = Some(now + HOLD_AFTER_RESUME);
            }
            _ => {}
        }
        let window_raw = self.attachment.budget_bytes() / 4 * 3;
        let mut log = self.process.log.lock().unwrap();
        let limit = log.limit();
        let window = window_raw.max(limit);
        let (retain, threshold) = match flow {
            _ if self.cancel.is_cancelled() => (Retain::Any(limit), None),
            Flow::Expired => (Retain::Any(limit), None),
            Flow::Attached if log.acking() => (Retain::Acked, Some(window)),
            // What was held while detached stays until read back; while it is, new output gets
            // the window on top of it, then the process waits, for HOLD_AFTER_RESUME at most.
            Flow::Attached => match hold.resumed {
                Some(release) if now < release => (Retain::Ring(limit), Some(window + limit)),
                // Nothing held since a resume (output kept for a client that acknowledged is
                // not: it no longer follows the process), or held too long.
                _ => {
                    hold.resumed = None;
                    (Retain::Any(limit), None)
                }
            },
            Flow::Detached => match self.detached_output {
                DetachedOutput::Drop => (Retain::Any(limit), None),
                DetachedOutput::Block => (Retain::Acked, Some(limit)),
            },
        };
        log.set_retain(retain);
        let waits = match (retain, threshold) {
            (_, None) => false,
            (Retain::Ring(_), Some(threshold)) => log.holding() && log.unacked_bytes() >= threshold,
            (_, Some(threshold)) => log.unacked_bytes() >= threshold,
        };
        if !log.holding() {
            hold.resumed = None;
        }
        if waits { Err(hold.resumed) } else { Ok(()) }
    }

    /// Logs what one read returned; EOF or an error closes the source.
    async fn consume(&self, source: &mut Option<Source>, read: std::io::Result<usize>, buf: &[u8]) {
        match (read, source.as_ref().map(Source::stream)) {
            (Ok(n), Some(stream)) if n > 0 => self.output(stream, &buf[..n]).await,
            _ => *source = None,
        }
    }

    async fn output(&self, stream: Stream, data: &[u8]) {
        let (message, dropped) = {
            let mut log = self.process.log.lock().unwrap();
            let message = log.push_output(stream, data.len(), |seq| {
                encode_output(&self.process.id, seq, stream, data)
            });
            (message, log.take_dropped())
        };
        self.process.changed();
        let metrics = &self.audit.metrics;
        metrics.output(stream, data.len());
        metrics.retention_dropped(dropped.0, dropped.1);
        self.notify(message).await;
    }

    async fn exit(&self, status: std::io::Result<std::process::ExitStatus>) {
        let code = match &status {
            Ok(status) => exit_code(*status),
            Err(_) => -1,
        };
        self.audit.exited(status.as_ref().ok().copied());
        let (seq, sandbox_denied, timed_out) = {
            let mut log = self.process.log.lock().unwrap();
            if let Err(err) = &status {
                log.set_failure(format!("failed to wait for process: {err}"));
            }
            let denied = self.sandboxed
                && denial::sandbox_denied(code, || {
                    denial::mentions_sandbox(&log.retained_output())
                });
            (log.push_exit(code, denied), denied, log.timed_out())
        };
        self.process.changed();
        self.notify(encode_notification(
            method::PROCESS_EXITED,
            ExitedNotification {
                process_id: self.process.id.clone(),
                seq,
                exit_code: code,
                sandbox_denied,
                timed_out,
            },
        ))
        .await;
    }

    /// Sends to the attached connection, if any, once it fits in the connection's byte budget.
    /// Gives up when the attachment changes: the client on the next one catches up with
    /// `process/read`, so nothing is lost.
    async fn notify(&self, message: impl Into<Text>) {
        let Some(mut notifier) = self.attachment.notifier() else {
            return;
        };
        notifier.send(message.into()).await;
    }
}

/// How long output held while a session was detached waits, after the resume, for a client
/// that does not acknowledge to read it back (`process/read` past it) before the process may
/// run on and a ring drop it: a client that follows the documented catch-up reads it at once;
/// one that never reads it does not keep the process waiting for ever.
const HOLD_AFTER_RESUME: std::time::Duration = std::time::Duration::from_secs(10);

/// The pump's memory of the attachment, for held output.
#[derive(Debug, Default)]
struct Hold {
    /// The session was detached when last looked at.
    detached: bool,
    /// Since a resume, held output is kept until then (`None`: nothing is held, or no resume).
    resumed: Option<tokio::time::Instant>,
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

/// The exit code in the reference's style: the code, or 128+N for a death by signal N.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => -1,
    }
}
