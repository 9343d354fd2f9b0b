//! `codex remote exec`: runs a command on the executor as if it ran here: output streamed to our
//! stdout and stderr, our stdin and Ctrl-C forwarded, its exit code ours; says on stderr when the
//! connection drops and when it is back.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::terminal::{self, RawMode};
use crate::client::{ConnectionStatus, ExecServerClient, ProcessControl, ProcessEvent};
use crate::path_uri;
use crate::protocol::process::{PtySize, Stream, WriteStatus};

/// `codex remote exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Run under a pseudo-terminal; the local terminal is in raw mode meanwhile. Its size is
    /// our terminal's, at start and on every resize (80x24 when our stdin is no terminal, or
    /// when the server does not advertise `ptyResize`).
    #[arg(short, long)]
    tty: bool,

    /// Do not forward stdin: the remote command's stdin is at EOF. Without it, the remote stdin
    /// is closed when ours reaches EOF (if the server advertises `stdinClose`; otherwise it stays
    /// open).
    #[arg(short = 'n', long)]
    no_stdin: bool,

    /// Stop the command after this long: SIGTERM, then SIGKILL after the server's terminate
    /// grace (exit code 143 or 137). A number with a unit: `500ms`, `30s`, `5m`, `2h` (no unit:
    /// seconds). Default: no limit. Refused if zero or malformed, or if the server does not
    /// advertise `processTimeout`.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    timeout: Option<Duration>,

    /// Start the command and return at once, printing `SESSION_ID PROCESS_ID` on stdout; the
    /// command runs on in the session this client leaves detached, its stdin at EOF. Reach it
    /// later with `codex remote --session SESSION_ID ps` / `kill PROCESS_ID`. It lives as long as
    /// the session: the server's detached-session TTL (30 s by default; each `--session`
    /// command starts it again), after which the server kills it. Not with --tty (nobody would
    /// read the terminal).
    #[arg(long, conflicts_with = "tty")]
    detach: bool,

    /// Working directory on the executor (default: the server's).
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,

    /// Set an environment variable for the command (repeatable); the rest is the server's.
    /// (`--env` is the connection flag naming an environments.toml entry.)
    #[arg(short = 'e', long = "set-env", value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,

    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    argv: Vec<String>,
}

/// Parses `K=V`.
fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected K=V, got `{s}`")),
    }
}

/// Parses `--timeout`: a positive number with an optional unit (ms, s, m, h; default s).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 30s or 500ms, got `{s}`"))?;
    let ms = match unit {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("unknown unit `{unit}` in `{s}`: use ms, s, m or h")),
    };
    match ms {
        Some(0) => Err("the timeout must be more than zero".to_string()),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Err(format!("`{s}` is too long")),
    }
}

/// Runs `exec`: start, stream, forward, propagate the exit code.
pub async fn run(client: ExecServerClient, args: ExecArgs) -> anyhow::Result<u8> {
    let cwd = match &args.cwd {
        Some(dir) => path_uri::from_path(&client.remote_path(dir)),
        None => client
            .environment_info()
            .map(|e| e.cwd)
            .unwrap_or_else(|| "file:///".into()),
    };
    let process_id = format!("remote-{}", uuid::Uuid::new_v4().simple());
    let mut params = crate::client::start_params(&process_id, args.argv, cwd);
    params.tty = args.tty;
    params.pipe_stdin = !args.tty && !args.no_stdin;
    params.env = args.env.into_iter().collect();
    let capabilities = client
        .environment_info()
        .map(|e| e.capabilities)
        .unwrap_or_default();
    if let Some(timeout) = args.timeout {
        if !capabilities.process_timeout {
            anyhow::bail!("--timeout: the server does not support timeouts (processTimeout)");
        }
        params.timeout_ms = Some(timeout.as_millis().try_into().unwrap_or(u64::MAX));
    }
    if args.detach {
        params.pipe_stdin = false;
        let handle = client.start(params).await?;
        super::stdout::print_out(&format!("{} {}\n", client.session_id(), handle.id()))?;
        return Ok(0);
    }
    let resize = args.tty && capabilities.pty_resize;
    if resize && let Some((cols, rows)) = terminal::local_size() {
        params.pty_size = Some(PtySize {
            cols: cols.into(),
            rows: rows.into(),
        });
    }

    // Raw mode only once the command is about to run, so that earlier errors print normally.
    let raw = if args.tty { RawMode::enable()? } else { None };
    let newline = if raw.is_some() { "\r\n" } else { "\n" };
    let (stop_status, status_stopped) = tokio::sync::oneshot::channel();
    let status = tokio::spawn(report_status(
        client.watch_status(),
        newline,
        status_stopped,
    ));

    // Catch SIGINT before the command starts, so an early Ctrl-C is forwarded, not fatal.
    let sigint = match raw {
        Some(_) => None,
        None => Some(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::interrupt(),
        )?),
    };
    let mut handle = client.start(params).await?;
    let control = handle.control();
    let close_at_eof = capabilities.stdin_close;
    let stdin = (args.tty || !args.no_stdin)
        .then(|| tokio::spawn(forward_stdin(control.clone(), close_at_eof)));
    let resizes = if resize {
        let sigwinch =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
        Some(tokio::spawn(forward_resizes(sigwinch, control.clone())))
    } else {
        None
    };
    let interrupts = sigint.map(|sigint| tokio::spawn(forward_interrupts(sigint, control)));

    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut exit_code = None;
    let mut failure = None;
    while let Some(event) = handle.recv().await {
        match event {
            Ok(ProcessEvent::Output { stream, data, .. }) => {
                let out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send) = match stream {
                    Stream::Stdout | Stream::Pty => &mut stdout,
                    Stream::Stderr => &mut stderr,
                };
                // Our stdout may be closed (a pipe to `head`): keep draining the events anyway.
                if out.write_all(&data).await.is_ok() {
                    let _ = out.flush().await;
                }
            }
            Ok(ProcessEvent::Exited {
                exit_code: code, ..
            }) => exit_code = Some(code),
            Ok(ProcessEvent::Closed { .. }) => break,
            Err(err) => failure = Some(err),
        }
    }
    for task in [stdin, interrupts, resizes].into_iter().flatten() {
        task.abort();
    }
    // Let the reporter say "reconnected" for a resume that finished just before the close.
    let _ = stop_status.send(());
    let _ = status.await;
    drop(raw);
    if let Some(err) = failure {
        return Err(err.into());
    }
    // -1 (unknown) becomes 255; 128+N for a signal passes as is.
    Ok(exit_code.map(|c| (c & 0xff) as u8).unwrap_or(255))
}

/// Says on stderr when the connection drops and when it is back; on `stop`, reports a change
/// still pending and returns.
async fn report_status(
    mut status: watch::Receiver<ConnectionStatus>,
    newline: &'static str,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut recovering = false;
    let report = |now: ConnectionStatus, recovering: &mut bool| match now {
        ConnectionStatus::Recovering { reason } => {
            eprint!("codex remote: {reason}; reconnecting…{newline}");
            *recovering = true;
        }
        ConnectionStatus::Connected => {
            if !*recovering {
                // The drop and the resume both happened before we looked.
                eprint!("codex remote: the connection dropped; reconnecting…{newline}");
            }
            eprint!("codex remote: reconnected{newline}");
            *recovering = false;
        }
        ConnectionStatus::Connecting | ConnectionStatus::Failed { .. } => {}
    };
    loop {
        tokio::select! {
            biased;
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
                report(status.borrow_and_update().clone(), &mut recovering);
            }
            _ = &mut stop => {
                // The command's events may all have arrived through the catch-up, before the
                // recovery itself finished: give it a moment to say how it ended.
                let settled = tokio::time::timeout(
                    Duration::from_secs(2),
                    status.wait_for(|s| !matches!(s, ConnectionStatus::Recovering { .. })),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .map(|now| now.clone());
                if let Some(now) = settled
                    && recovering
                {
                    report(now, &mut recovering);
                }
                return;
            }
        }
    }
}

/// Forwards our stdin to the process until EOF or until the process stops taking it; at EOF,
/// closes the remote stdin if `close_at_eof`.
async fn forward_stdin(control: ProcessControl, close_at_eof: bool) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stdin.read(&mut buf).await {
            Ok(0) => {
                if close_at_eof && let Err(err) = control.close_stdin().await {
                    eprintln!("codex remote: could not close the remote stdin: {err}");
                }
                return;
            }
            Err(_) => return,
            Ok(n) => n,
        };
        // `starting` cannot come back: the start was answered, so the process was spawned.
        match control.write(&buf[..n]).await {
            Ok(WriteStatus::Accepted) => {}
            Ok(WriteStatus::StdinClosed | WriteStatus::UnknownProcess | WriteStatus::Starting)
            | Err(_) => return,
        }
    }
}

/// Sends our terminal's size to the remote one on every SIGWINCH.
async fn forward_resizes(mut sigwinch: tokio::signal::unix::Signal, control: ProcessControl) {
    while sigwinch.recv().await.is_some() {
        if let Some((cols, rows)) = terminal::local_size()
            && let Err(err) = control.resize(cols, rows).await
        {
            eprint!("codex remote: could not resize the remote terminal: {err}\r\n");
        }
    }
}

/// Sends every Ctrl-C (SIGINT) we get on to the process group.
async fn forward_interrupts(mut sigint: tokio::signal::unix::Signal, control: ProcessControl) {
    while sigint.recv().await.is_some() {
        if let Err(err) = control.interrupt().await {
            eprintln!("codex remote: could not forward Ctrl-C: {err}");
        }
    }
}
