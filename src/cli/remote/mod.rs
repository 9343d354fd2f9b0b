//! `codex remote`: the command-line client, built on [`crate::client::ExecServerClient`]. This
//! front end parses, prints and shows progress; what survives a dropped connection (the session
//! resume, a transfer going on after it) is the library's.
//!
//! - `exec [--tty] [-n] [--timeout D] [--cwd DIR] [-e K=V]... -- CMD...` ([`exec`]): runs CMD on
//!   the executor; its stdout and stderr stream to ours, our stdin is forwarded (`pipeStdin`),
//!   its exit code becomes ours, Ctrl-C is sent as `process/signal interrupt`. With `--tty` it
//!   runs under a PTY of our terminal's size (kept in step on SIGWINCH) and our terminal is in
//!   raw mode until it ends (Ctrl-C then travels as a byte, like every key). At our stdin's EOF
//!   the remote stdin is closed (`process/closeStdin`, where the server has `stdinClose`).
//!   `--timeout` is `timeoutMs`.
//! - `info`: `environment/info` as JSON.
//! - `cp SRC DST` ([`cp`]), one side written `remote:PATH`: a file either way, with a progress
//!   bar and a sha256 check of what landed against what was sent
//!   ([`crate::client::ExecServerClient::upload_from`] / `download_to`).
//! - `ls PATH`, `stat PATH`: `fs/readDirectory`, `fs/getMetadata`.
//! - `ps`, `kill ID [SIGNAL]` ([`procs`]): the processes of a session resumed with `--session
//!   ID` (`process/list`, `process/signal`, `process/terminate`). `exec --detach` starts a
//!   command, prints `SESSION_ID PROCESS_ID` and leaves it running in the detached session.
//! - `watch PATH [--recursive]` ([`watch`]): `fs/watch`, one `KIND<TAB>PATH` line per change
//!   until Ctrl-C.
//!
//! Connection flags ([`connect`]): `--url`, or `--env ID` (an entry of the Codex CLI's
//! `environments.toml`), a bearer token from `--token-file`/`--token-env`, `--ca-file` for
//! `wss://`; each before or after the subcommand.
//!
//! Relative remote paths are taken from the server's working directory. A dropped connection is
//! resumed by the library; the CLI says so on stderr ("reconnecting…"). Errors of the client
//! itself exit with 255 (`exec`) or 1 (the file commands).

pub mod connect;
pub mod cp;
pub mod exec;
pub mod procs;
mod stdout;
mod terminal;
pub mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::client::ExecServerClient;
use stdout::print_out;

pub use connect::URL_ENV;

/// Talk to an exec-server: run commands, move files.
#[derive(Debug, clap::Args)]
#[command(after_help = connect::PRECEDENCE_HELP)]
pub struct RemoteArgs {
    /// Where the server is and how to authenticate (global: before or after the subcommand).
    #[command(flatten)]
    connection: connect::ConnectArgs,

    /// What to do.
    #[command(subcommand)]
    command: RemoteCommand,
}

/// The subcommands of `codex remote`.
#[derive(Debug, clap::Subcommand)]
enum RemoteCommand {
    /// Run a command on the executor, streaming its output and forwarding stdin and Ctrl-C;
    /// exits with its exit code.
    Exec(exec::ExecArgs),
    /// Print the executor's environment (`environment/info`) as JSON.
    Info,
    /// Copy one file to or from the executor; write the remote side as `remote:PATH`.
    Cp(cp::CpArgs),
    /// List a directory on the executor.
    Ls(PathArg),
    /// Show the metadata of a path on the executor.
    Stat(PathArg),
    /// List the processes of the session resumed with --session ID (running, exited, closed).
    Ps(procs::PsArgs),
    /// Signal a process of the session resumed with --session ID (default: terminate it).
    Kill(procs::KillArgs),
    /// Print changes under a path on the executor (`KIND<TAB>PATH` per line) until Ctrl-C.
    Watch(watch::WatchArgs),
}

/// A remote path argument.
#[derive(Debug, clap::Args)]
struct PathArg {
    /// A path on the executor (relative: to the server's working directory).
    path: PathBuf,
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
    let client = connect::connect(&args.connection).await?;
    let resumed = args.connection.session.is_some();
    match args.command {
        RemoteCommand::Exec(exec_args) => exec::run(client, exec_args).await,
        RemoteCommand::Info => {
            let info = client.environment().await?;
            print_out(&format!("{}\n", serde_json::to_string_pretty(&info)?))?;
            Ok(0)
        }
        RemoteCommand::Cp(cp_args) => cp::run(&client, cp_args).await.map(|()| 0),
        RemoteCommand::Ls(arg) => ls(&client, &arg.path).await.map(|()| 0),
        RemoteCommand::Stat(arg) => stat(&client, &arg.path).await.map(|()| 0),
        RemoteCommand::Ps(ps_args) => procs::ps(&client, resumed, ps_args).await.map(|()| 0),
        RemoteCommand::Kill(kill_args) => {
            procs::kill(&client, resumed, kill_args).await.map(|()| 0)
        }
        RemoteCommand::Watch(watch_args) => watch::run(&client, watch_args).await,
    }
}

/// `ls`.
async fn ls(client: &ExecServerClient, path: &Path) -> anyhow::Result<()> {
    let mut entries = client.read_directory(&client.remote_path(path)).await?;
    entries.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    let mut text = String::new();
    for entry in entries {
        let suffix = if entry.is_directory { "/" } else { "" };
        text.push_str(&format!("{}{suffix}\n", entry.file_name));
    }
    print_out(&text)
}

/// `stat`.
async fn stat(client: &ExecServerClient, path: &Path) -> anyhow::Result<()> {
    let path = client.remote_path(path);
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
