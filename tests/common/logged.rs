//! [`LoggedServer`]: a `codex exec-server` whose stderr the test reads line by line, so it can
//! wait for a log line (a reload, an audit record, the metrics address) instead of guessing when
//! it happened, and signal the server (SIGHUP, SIGTERM). Killed on drop.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{DEADLINE, server_binary};

/// How to start a [`LoggedServer`].
#[derive(Default, Clone)]
pub struct LoggedOptions {
    /// Flags after `exec-server --listen LISTEN`.
    pub flags: Vec<String>,
    /// Variables added to the server's environment (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// The `--listen` address; `ws://127.0.0.1:0` when `None`.
    pub listen: Option<String>,
}

/// A running server whose stderr lines arrive on a channel. Killed on drop.
pub struct LoggedServer {
    child: Child,
    /// The URL the server printed on stdout, e.g. `ws://127.0.0.1:PORT`.
    pub url: String,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every stderr line received so far, in order.
    pub seen: Vec<String>,
}

impl LoggedServer {
    /// Starts a server with `flags` and `RUST_LOG=info`.
    pub async fn start(flags: &[&str]) -> LoggedServer {
        LoggedServer::start_with(LoggedOptions {
            flags: flags.iter().map(|s| s.to_string()).collect(),
            env: vec![("RUST_LOG".into(), "info".into())],
            listen: None,
        })
        .await
    }

    pub async fn start_with(opts: LoggedOptions) -> LoggedServer {
        let listen = opts.listen.as_deref().unwrap_or("ws://127.0.0.1:0");
        let mut child = Command::new(server_binary())
            .args(["exec-server", "--listen", listen])
            .args(&opts.flags)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {}: {e}", server_binary().display()));
        // Every stderr line goes to the channel (lossily decoded) until EOF, so the pipe never
        // fills up; the channel closes when the server's stderr does.
        let (tx, lines) = mpsc::unbounded_channel();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match stderr.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.strip_suffix('\n').unwrap_or(&line).to_string();
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = tokio::time::timeout(DEADLINE, stdout.next_line())
            .await
            .expect("the URL line in time")
            .expect("read stdout")
            .expect("a URL line");
        // Keep stdout open and drained.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        LoggedServer {
            child,
            url,
            lines,
            seen: Vec::new(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `127.0.0.1:PORT` (the URL without `ws://` or `wss://`).
    pub fn addr(&self) -> String {
        let url = self.url.strip_prefix("wss://").unwrap_or(&self.url);
        url.trim_start_matches("ws://").to_string()
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("server still running") as i32
    }

    /// Waits for a log line containing `needle` (one not returned before) and returns it.
    pub async fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                other => panic!(
                    "no log line with {needle:?} ({other:?}); the log so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Sends `signal` to the server.
    pub fn kill_with(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid, not yet reaped (kill_on_drop).
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Sends SIGHUP (reload).
    pub fn hangup(&self) {
        self.kill_with(libc::SIGHUP);
    }

    /// Waits (under the deadline) for the server process to exit.
    pub async fn wait_for_exit(&mut self) -> std::process::ExitStatus {
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("server did not exit within the deadline")
            .expect("wait for server")
    }

    /// Reads stderr to its end (under the deadline) and returns the whole log, every line
    /// followed by `\n`.
    pub async fn log_to_end(&mut self) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => self.seen.push(line),
                Ok(None) => break,
                Err(_) => panic!("stderr did not end within the deadline"),
            }
        }
        self.seen.iter().map(|l| format!("{l}\n")).collect()
    }

    /// Fails the test if the server process has exited.
    pub fn assert_running(&mut self) {
        match self.child.try_wait() {
            Ok(None) => {}
            other => panic!("server is not running any more: {other:?}"),
        }
    }
}
