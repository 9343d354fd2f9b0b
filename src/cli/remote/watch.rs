//! `codex remote watch PATH [--recursive]`: prints each change the executor reports for PATH
//! (`fs/watch`), one line per change, `KIND<TAB>PATH`, until Ctrl-C.

use std::path::PathBuf;

use crate::client::ExecServerClient;
use crate::path_uri;

/// `codex remote watch` arguments.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each line is KIND<TAB>PATH, KIND one of created, modified, removed, \
    renamed (the old and the new name each get a line) and overflow (changes were lost; PATH is \
    the watched path: look at it again). Changes are coalesced over 50 ms. Ends with Ctrl-C (exit \
    0), or with exit 1 if the watch cannot start (a missing or unreadable PATH, a server without \
    watches) or ends (the connection dropped)."
)]
pub struct WatchArgs {
    /// The path to watch on the executor: a directory (its entries) or a file. Relative: to the
    /// server's working directory.
    path: PathBuf,

    /// Watch the whole tree under PATH, including directories created later (default: only
    /// PATH's own entries).
    #[arg(short, long)]
    recursive: bool,
}

/// Runs `watch` until Ctrl-C; the exit code.
pub async fn run(client: &ExecServerClient, args: WatchArgs) -> anyhow::Result<u8> {
    let path = client.remote_path(&args.path);
    let mut watch = client
        .fs_watch(&path, args.recursive)
        .await
        .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", path.display()))?;
    eprintln!(
        "codex remote: watching {}{} (Ctrl-C to stop)",
        path.display(),
        if args.recursive {
            " and everything under it"
        } else {
            ""
        }
    );
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let batch = tokio::select! {
            batch = watch.recv() => batch,
            _ = &mut interrupted => return Ok(0),
        };
        let Some(changes) = batch else {
            anyhow::bail!(
                "the watch of {} ended: the connection dropped",
                path.display()
            );
        };
        let mut text = String::new();
        for change in changes {
            let shown = path_uri::to_unresolved_path(&change.path)
                .map(|p| p.display().to_string())
                .unwrap_or(change.path);
            let kind = serde_json::to_value(change.kind)?;
            text.push_str(&format!("{}\t{shown}\n", kind.as_str().unwrap_or("?")));
        }
        if !print(&text)? {
            // Our stdout closed (`| head`): nobody reads any more.
            return Ok(0);
        }
    }
}

/// Writes to stdout and flushes; `false` if it is closed.
fn print(text: &str) -> anyhow::Result<bool> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(err) => Err(err.into()),
    }
}
