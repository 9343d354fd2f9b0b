//! How the client opens a transport: the [`Connect`] trait (a WebSocket URL here; tests plug in
//! in-memory transports), and a child process spoken to over its stdio, whose process group is
//! killed when the client goes away ([`ChildGroup`]).

use std::future::Future;
use std::pin::Pin;

use tokio_util::task::TaskTracker;

use super::error::ClientError;
use crate::rpc::{self, Transport};

/// A boxed future returned by [`Connect::connect`].
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Transport, ClientError>> + Send + 'a>>;

/// Opens transports to one server, as often as the client needs (the first connection and every
/// resume attempt).
pub trait Connect: Send + Sync + 'static {
    /// Opens a new transport; its reader and writer tasks go on `tracker`.
    fn connect<'a>(&'a self, tracker: &'a TaskTracker) -> ConnectFuture<'a>;

    /// The server, for messages (a URL).
    fn target(&self) -> String;
}

/// Connects to `ws://HOST:PORT` (no `Origin` header, so the server's browser guard lets us in).
#[derive(Debug, Clone)]
pub struct WebSocketConnector {
    /// The URL as the user gave it.
    url: String,
}

impl WebSocketConnector {
    /// A connector for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into() }
    }
}

impl Connect for WebSocketConnector {
    fn connect<'a>(&'a self, tracker: &'a TaskTracker) -> ConnectFuture<'a> {
        Box::pin(async move {
            let (ws, _response) = tokio_tungstenite::connect_async_with_config(
                &self.url,
                Some(rpc::ws::config()),
                true,
            )
            .await
            .map_err(|e| ClientError::Connect {
                target: self.url.clone(),
                message: e.to_string(),
            })?;
            Ok(rpc::ws::spawn(ws, tracker, rpc::ws::PING_INTERVAL))
        })
    }

    fn target(&self) -> String {
        self.url.clone()
    }
}

/// Grace between SIGTERM and SIGKILL to a stdio child's process group.
const CHILD_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A server child spoken to over its stdin/stdout, in a process group of its own. Dropping this
/// ends the whole group: SIGTERM first (our server then kills every process it manages and
/// exits), SIGKILL to the group after [`CHILD_GRACE`] (or at once when the leader is gone, to
/// catch stragglers), then the child is reaped. The waiting happens on a short-lived thread,
/// which waits on a pidfd, so drop never blocks.
#[derive(Debug)]
pub(super) struct ChildGroup {
    /// The child, which leads its own process group; `None` once handed to the reaper thread.
    child: Option<std::process::Child>,
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
        let reaper = std::thread::Builder::new()
            .name("codex-stdio-reaper".into())
            .spawn(move || {
                if let Ok(pidfd) =
                    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                {
                    let grace = rustix::event::Timespec {
                        tv_sec: CHILD_GRACE.as_secs() as _,
                        tv_nsec: 0,
                    };
                    let mut fds = [rustix::event::PollFd::new(
                        &pidfd,
                        rustix::event::PollFlags::IN,
                    )];
                    let _ = rustix::event::poll(&mut fds, Some(&grace));
                }
                // The leader is not reaped yet, so its group id cannot have been reused.
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                let _ = child.wait();
            });
        if reaper.is_err() {
            tracing::warn!("could not start the thread that reaps the stdio server");
        }
    }
}

/// Spawns `command` in a new process group with piped stdin/stdout and wraps its stdio as a
/// transport (newline-delimited JSON). Must run inside a tokio runtime.
pub(super) fn spawn_stdio(
    mut command: std::process::Command,
    tracker: &TaskTracker,
) -> Result<(Transport, ChildGroup), ClientError> {
    use std::os::unix::process::CommandExt;
    let target = format!("{command:?}");
    let failed = |message: String| ClientError::Connect {
        target: target.clone(),
        message,
    };
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().map_err(|e| failed(e.to_string()))?;
    let pipes = (child.stdin.take(), child.stdout.take());
    let group = ChildGroup { child: Some(child) };
    let (Some(stdin), Some(stdout)) = pipes else {
        return Err(failed("the child has no stdin or stdout pipe".into()));
    };
    let stdin = tokio::process::ChildStdin::from_std(stdin).map_err(|e| failed(e.to_string()))?;
    let stdout =
        tokio::process::ChildStdout::from_std(stdout).map_err(|e| failed(e.to_string()))?;
    let transport = rpc::stdio::spawn(stdout, stdin, tracker);
    Ok((transport, group))
}
