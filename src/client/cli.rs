//! `codex remote`: the command-line client, built on [`super::ExecServerClient`].
//!
//! - `exec [--tty] [-n] [--cwd DIR] [-e K=V]... -- CMD...`: runs CMD on the executor; its stdout
//!   and stderr stream to ours, our stdin is forwarded (`pipeStdin`), its exit code becomes ours,
//!   Ctrl-C is sent as `process/signal interrupt`. With `--tty` it runs under a PTY and our
//!   terminal is in raw mode until it ends (Ctrl-C then travels as a byte, like every key).
//!   The protocol cannot close a remote stdin: after our stdin's EOF the remote one stays open
//!   (use `-n` for a command that must see EOF, or send `^D` on a TTY).
//! - `info`: `environment/info` as JSON.
//! - `cp SRC DST`, one side written `remote:PATH`: a file either way, with a progress bar and a
//!   sha256 check of what landed against what was sent (the upload is read back; the download is
//!   re-read from disk and its size checked against `fs/getMetadata`).
//! - `ls PATH`, `stat PATH`: `fs/readDirectory`, `fs/getMetadata`.
//!
//! Relative remote paths are taken from the server's working directory. A dropped connection is
//! resumed by the library; the CLI says so on stderr ("reconnecting…"). Errors of the client
//! itself exit with 255 (`exec`) or 1 (the file commands).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::terminal::RawMode;
use super::{ClientError, ClientOptions, ConnectionStatus, ExecServerClient, ProcessEvent};
use crate::path_uri;
use crate::protocol::process::{Stream, WriteStatus};

/// Name of the environment variable that may give `--url`.
pub const URL_ENV: &str = "CODEX_EXEC_SERVER_URL";
/// The remote side of `cp` is written with this prefix.
pub const REMOTE_PREFIX: &str = "remote:";
/// Largest upload: `fs/writeFile` carries the whole file in one message (base64 of 90 MiB is
/// 120 MiB, under the server's 128 MiB message limit).
pub const MAX_UPLOAD_BYTES: u64 = 90 << 20;
/// Block size of downloads and read-backs (the protocol's largest `fs/readBlock`).
const BLOCK: u64 = 1 << 20;
/// How often a download reopens the file after a dropped connection before giving up.
const MAX_REOPENS: u32 = 20;

/// Talk to an exec-server: run commands, move files.
#[derive(Debug, clap::Args)]
pub struct RemoteArgs {
    /// The exec-server, `ws://HOST:PORT`.
    #[arg(long, env = URL_ENV, value_name = "URL")]
    url: String,

    /// What to do.
    #[command(subcommand)]
    command: RemoteCommand,
}

/// The subcommands of `codex remote`.
#[derive(Debug, clap::Subcommand)]
enum RemoteCommand {
    /// Run a command on the executor, streaming its output and forwarding stdin and Ctrl-C;
    /// exits with its exit code.
    Exec(ExecArgs),
    /// Print the executor's environment (`environment/info`) as JSON.
    Info,
    /// Copy one file to or from the executor; write the remote side as `remote:PATH`.
    Cp(CpArgs),
    /// List a directory on the executor.
    Ls(PathArg),
    /// Show the metadata of a path on the executor.
    Stat(PathArg),
}

/// `codex remote exec`.
#[derive(Debug, clap::Args)]
struct ExecArgs {
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
    #[arg(short, long = "env", value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,

    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    argv: Vec<String>,
}

/// `codex remote cp`.
#[derive(Debug, clap::Args)]
struct CpArgs {
    /// Where from: a local path, or `remote:PATH`.
    source: String,
    /// Where to: a local path, or `remote:PATH`; an existing directory receives the file.
    destination: String,
}

/// A remote path argument.
#[derive(Debug, clap::Args)]
struct PathArg {
    /// A path on the executor (relative: to the server's working directory).
    path: PathBuf,
}

/// Parses `K=V`.
fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected K=V, got `{s}`")),
    }
}

/// Runs `codex remote ...`.
pub fn run(args: RemoteArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("codex remote: failed to start the runtime: {err}");
            return ExitCode::from(255);
        }
    };
    let code = runtime.block_on(async move {
        let exec = matches!(args.command, RemoteCommand::Exec(_));
        match dispatch(args).await {
            Ok(code) => code,
            Err(err) => {
                eprintln!("codex remote: {err:#}");
                if exec { 255 } else { 1 }
            }
        }
    });
    // The stdin forwarder may sit in a blocking read; it must not keep us alive.
    runtime.shutdown_background();
    ExitCode::from(code)
}

/// Connects and runs one subcommand; returns the exit code.
async fn dispatch(args: RemoteArgs) -> anyhow::Result<u8> {
    let client = ExecServerClient::connect(&args.url, ClientOptions::default()).await?;
    match args.command {
        RemoteCommand::Exec(exec_args) => exec(client, exec_args).await,
        RemoteCommand::Info => {
            let info = client.environment().await?;
            print_out(&format!("{}\n", serde_json::to_string_pretty(&info)?))?;
            Ok(0)
        }
        RemoteCommand::Cp(cp_args) => cp(&client, cp_args).await.map(|()| 0),
        RemoteCommand::Ls(arg) => ls(&client, &arg.path).await.map(|()| 0),
        RemoteCommand::Stat(arg) => stat(&client, &arg.path).await.map(|()| 0),
    }
}

/// `exec`: start, stream, forward, propagate the exit code.
async fn exec(client: ExecServerClient, args: ExecArgs) -> anyhow::Result<u8> {
    let cwd = match &args.cwd {
        Some(dir) => path_uri::from_path(&remote_path(&client, dir)),
        None => client
            .environment_info()
            .map(|e| e.cwd)
            .unwrap_or_else(|| "file:///".into()),
    };
    let process_id = format!("remote-{}", uuid::Uuid::new_v4().simple());
    let mut params = super::start_params(&process_id, args.argv, cwd);
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
async fn forward_stdin(control: super::ProcessControl) {
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
async fn forward_interrupts(
    mut sigint: tokio::signal::unix::Signal,
    control: super::ProcessControl,
) {
    while sigint.recv().await.is_some() {
        if let Err(err) = control.interrupt().await {
            eprintln!("codex remote: could not forward Ctrl-C: {err}");
        }
    }
}

/// A remote path made absolute against the server's working directory.
fn remote_path(client: &ExecServerClient, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    let cwd = client
        .environment_info()
        .and_then(|e| path_uri::to_path(&e.cwd).ok())
        .unwrap_or_else(|| PathBuf::from("/"));
    cwd.join(path)
}

/// `ls`.
async fn ls(client: &ExecServerClient, path: &Path) -> anyhow::Result<()> {
    let mut entries = client.read_directory(&remote_path(client, path)).await?;
    entries.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    let mut text = String::new();
    for entry in entries {
        let suffix = if entry.is_directory { "/" } else { "" };
        text.push_str(&format!("{}{suffix}\n", entry.file_name));
    }
    print_out(&text)
}

/// Writes to stdout; a closed stdout (`| head`) is not an error.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}

/// `stat`.
async fn stat(client: &ExecServerClient, path: &Path) -> anyhow::Result<()> {
    let path = remote_path(client, path);
    let m = client.metadata(&path).await?;
    let kind = match (m.is_directory, m.is_file) {
        (true, _) => "directory",
        (_, true) => "file",
        _ => "other",
    };
    let symlink = if m.is_symlink { " (symlink)" } else { "" };
    print_out(&format!(
        "path: {}\ntype: {kind}{symlink}\nsize: {}\nmodified_ms: {}\ncreated_ms: {}\n",
        path.display(),
        m.size,
        m.modified_at_ms,
        m.created_at_ms
    ))
}

/// `cp`: one side remote.
async fn cp(client: &ExecServerClient, args: CpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (source, destination) = (args.source.as_str(), args.destination.as_str());
    let (copied, hash) = match (
        source.strip_prefix(REMOTE_PREFIX),
        destination.strip_prefix(REMOTE_PREFIX),
    ) {
        (None, Some(remote)) => {
            upload(
                client,
                Path::new(source),
                &remote_path(client, Path::new(remote)),
            )
            .await?
        }
        (Some(remote), None) => {
            download(
                client,
                &remote_path(client, Path::new(remote)),
                Path::new(destination),
            )
            .await?
        }
        _ => bail!("exactly one side of cp must be remote, written `{REMOTE_PREFIX}PATH`"),
    };
    eprintln!(
        "codex remote: copied {copied} bytes in {:.1?}, sha256 {hash} verified",
        started.elapsed()
    );
    Ok(())
}

/// A progress bar on stderr (drawn only when stderr is a terminal).
fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// Hex of a digest.
fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Retries an idempotent file call across dropped connections (the library resumes the session
/// meanwhile; the fs calls themselves are not replayed, see `replay.rs`).
async fn retry_idempotent<T, F, Fut>(mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut attempts = 0;
    loop {
        match call().await {
            Err(ClientError::Disconnected { .. }) if attempts < MAX_REOPENS => attempts += 1,
            other => return other,
        }
    }
}

/// Uploads `local` to `remote` (or into it, if it is a directory) and verifies it by reading it
/// back. Returns the size and the sha256.
async fn upload(
    client: &ExecServerClient,
    local: &Path,
    remote: &Path,
) -> anyhow::Result<(u64, String)> {
    let size = tokio::fs::metadata(local)
        .await
        .with_context(|| format!("cannot read {}", local.display()))?
        .len();
    if size > MAX_UPLOAD_BYTES {
        bail!(
            "{} is {size} bytes; uploads are limited to {MAX_UPLOAD_BYTES} bytes (one fs/writeFile message)",
            local.display()
        );
    }
    let mut target = remote.to_path_buf();
    if let Ok(m) = client.metadata(remote).await
        && m.is_directory
    {
        let name = local
            .file_name()
            .with_context(|| format!("{} has no file name", local.display()))?;
        target.push(name);
    }

    let bar = progress(size, "reading");
    let mut file = tokio::fs::File::open(local)
        .await
        .with_context(|| format!("cannot open {}", local.display()))?;
    let mut data = Vec::with_capacity(size as usize);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BLOCK as usize];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        data.extend_from_slice(&buf[..n]);
        bar.inc(n as u64);
    }
    let sent = hex(&hasher.finalize());
    bar.set_message("uploading");
    bar.enable_steady_tick(Duration::from_millis(200));
    retry_idempotent(|| client.write_file(&target, &data))
        .await
        .with_context(|| format!("cannot write remote {}", target.display()))?;
    drop(data);
    bar.finish_and_clear();

    let (landed, remote_size) = remote_sha256(client, &target).await?;
    if remote_size != size || landed != sent {
        bail!(
            "verification failed: sent {size} bytes with sha256 {sent}, remote {} has {remote_size} bytes with sha256 {landed}",
            target.display()
        );
    }
    Ok((size, sent))
}

/// Reads a remote file back block by block; returns its sha256 and size.
async fn remote_sha256(client: &ExecServerClient, path: &Path) -> anyhow::Result<(String, u64)> {
    let size = client.metadata(path).await?.size;
    let bar = progress(size, "verifying");
    let mut hasher = Sha256::new();
    let read = stream_remote(client, path, |block| {
        hasher.update(block);
        bar.inc(block.len() as u64);
        Ok(())
    })
    .await;
    bar.finish_and_clear();
    let read = read?;
    Ok((hex(&hasher.finalize()), read))
}

/// Reads a remote file block by block into `sink`, reopening it after a dropped connection.
/// Returns the bytes read.
async fn stream_remote(
    client: &ExecServerClient,
    path: &Path,
    mut sink: impl FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut reopens = 0;
    let mut download = client
        .open_download(path)
        .await
        .with_context(|| format!("cannot open remote {}", path.display()))?;
    loop {
        match download.next_block(BLOCK).await {
            Ok(Some(block)) => sink(&block)?,
            Ok(None) => break,
            Err(ClientError::Disconnected { .. }) if reopens < MAX_REOPENS => {
                reopens += 1;
                let offset = download.offset();
                download = client.open_download(path).await?;
                download.seek(offset);
            }
            Err(err) => return Err(err.into()),
        }
    }
    let read = download.offset();
    // The handle dies with the connection anyway; a failed close changes nothing.
    let _ = download.close().await;
    Ok(read)
}

/// Downloads `remote` to `local` (or into it, if it is a directory), checks the size against
/// `fs/getMetadata` and the sha256 of the stream against a re-read of the local file.
async fn download(
    client: &ExecServerClient,
    remote: &Path,
    local: &Path,
) -> anyhow::Result<(u64, String)> {
    let meta = client
        .metadata(remote)
        .await
        .with_context(|| format!("cannot stat remote {}", remote.display()))?;
    if meta.is_directory {
        bail!(
            "remote {} is a directory; cp copies files",
            remote.display()
        );
    }
    let mut target = local.to_path_buf();
    if target.is_dir() {
        let name = remote
            .file_name()
            .with_context(|| format!("{} has no file name", remote.display()))?;
        target.push(name);
    }
    let bar = progress(meta.size, "downloading");
    let mut file = std::fs::File::create(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let mut hasher = Sha256::new();
    let read = stream_remote(client, remote, |block| {
        use std::io::Write;
        hasher.update(block);
        file.write_all(block)
            .with_context(|| format!("cannot write {}", target.display()))?;
        bar.inc(block.len() as u64);
        Ok(())
    })
    .await;
    bar.finish_and_clear();
    let read = match read {
        Ok(read) => read,
        Err(err) => {
            drop(file);
            let _ = std::fs::remove_file(&target);
            return Err(err);
        }
    };
    file.sync_all()?;
    drop(file);
    let received = hex(&hasher.finalize());
    if read != meta.size {
        bail!(
            "verification failed: remote {} has {} bytes, received {read}",
            remote.display(),
            meta.size
        );
    }
    let on_disk = local_sha256(&target).await?;
    if on_disk != received {
        bail!(
            "verification failed: received sha256 {received}, but {} has sha256 {on_disk}",
            target.display()
        );
    }
    Ok((read, received))
}

/// The sha256 of a local file.
async fn local_sha256(path: &Path) -> anyhow::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BLOCK as usize];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}
