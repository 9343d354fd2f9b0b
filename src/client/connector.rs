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
            Ok(rpc::ws::spawn(ws, tracker))
        })
    }

    fn target(&self) -> String {
        self.url.clone()
    }
}

/// A server child spoken to over its stdin/stdout, in a process group of its own. Dropping this
/// kills the whole group, so nothing the server started outlives the client.
#[derive(Debug)]
pub(super) struct ChildGroup {
    /// The child's pid, which is also its process group id.
    pid: Option<rustix::process::Pid>,
    /// Reaps the child (kill_on_drop as a second line of defense).
    _child: tokio::process::Child,
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Spawns `command` in a new process group with piped stdin/stdout and wraps its stdio as a
/// transport (newline-delimited JSON).
pub(super) fn spawn_stdio(
    mut command: tokio::process::Command,
    tracker: &TaskTracker,
) -> Result<(Transport, ChildGroup), ClientError> {
    let target = format!("{:?}", command.as_std());
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| ClientError::Connect {
        target: target.clone(),
        message: e.to_string(),
    })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(ClientError::Connect {
            target,
            message: "the child has no stdin or stdout pipe".into(),
        });
    };
    let pid = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32));
    let transport = rpc::stdio::spawn(stdout, stdin, tracker);
    Ok((transport, ChildGroup { pid, _child: child }))
}
