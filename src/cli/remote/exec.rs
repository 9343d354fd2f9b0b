//! `codex remote exec`: runs a command on the executor as if it ran here: output streamed to our
//! stdout and stderr, our stdin and Ctrl-C forwarded, its exit code ours; says on stderr when the
//! connection drops and when it is back.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::terminal::RawMode;
use crate::client::{ConnectionStatus, ExecServerClient, ProcessControl, ProcessEvent};
use crate::path_uri;
use crate::protocol::process::{Stream, WriteStatus};

/// `codex remote exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Run under a pseudo-terminal (80x24); the local terminal is in raw mode meanwhile.
    #[arg(short, long)]
    tty: bool,

    /// Do not forward stdin: the remote command's stdin is at EOF.
    #[arg(short = 'n', long)]
    no_stdin: bool,

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
    let stdin = (args.tty || !args.no_stdin).then(|| tokio::spawn(forward_stdin(control.clone())));
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
    for task in [stdin, interrupts].into_iter().flatten() {
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

/// Forwards our stdin to the process until EOF or until the process stops taking it.
async fn forward_stdin(control: ProcessControl) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
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

/// Sends every Ctrl-C (SIGINT) we get on to the process group.
async fn forward_interrupts(mut sigint: tokio::signal::unix::Signal, control: ProcessControl) {
    while sigint.recv().await.is_some() {
        if let Err(err) = control.interrupt().await {
            eprintln!("codex remote: could not forward Ctrl-C: {err}");
        }
    }
}
