//! `codex remote cp`: one file to or from the executor, in pipelined 1 MiB blocks. The transfer,
//! its verification and its
//! recovery from a dropped connection are the library's
//! ([`ExecServerClient::upload_from`], [`ExecServerClient::download_to`]); this draws the
//! progress and says what was copied.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::client::{ExecServerClient, Phase, Progress};

/// The remote side of `cp` is written with this prefix.
pub const REMOTE_PREFIX: &str = "remote:";

/// `codex remote cp`.
#[derive(Debug, clap::Args)]
pub struct CpArgs {
    /// Where from: a local path, or `remote:PATH`.
    source: String,
    /// Where to: a local path, or `remote:PATH`; an existing directory receives the file.
    destination: String,
}

/// Runs `cp`: one side remote.
pub async fn run(client: &ExecServerClient, args: CpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (source, destination) = (args.source.as_str(), args.destination.as_str());
    let mut bar = Bar::default();
    let copied = match (
        source.strip_prefix(REMOTE_PREFIX),
        destination.strip_prefix(REMOTE_PREFIX),
    ) {
        (None, Some(remote)) => {
            let remote = client.remote_path(Path::new(remote));
            let copied = client
                .upload_from(Path::new(source), &remote, |p| bar.show(p))
                .await;
            bar.clear();
            copied?
        }
        (Some(remote), None) => {
            let remote = client.remote_path(Path::new(remote));
            let copied = client
                .download_to(&remote, Path::new(destination), |p| bar.show(p))
                .await;
            bar.clear();
            copied?
        }
        _ => bail!("exactly one side of cp must be remote, written `{REMOTE_PREFIX}PATH`"),
    };
    // The hash is of the bytes sent or received, taken as they went; the size is checked at the
    // other end (a block-by-block copy acknowledged block by block is not read back).
    eprintln!(
        "codex remote: copied {} bytes in {:.1?}, sha256 {}, size verified",
        copied.bytes,
        started.elapsed(),
        copied.sha256
    );
    Ok(())
}

/// The progress bar of the current phase, on stderr (drawn only when stderr is a terminal).
#[derive(Default)]
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    /// Draws one progress event.
    fn show(&mut self, progress: Progress) {
        match progress {
            Progress::Begin { phase, total } => {
                self.clear();
                let bar = new_bar(total, label(phase));
                if phase == Phase::Uploading {
                    // A server without streamed writes takes the file in one message, whose
                    // progress cannot be seen: the bar stays alive meanwhile.
                    bar.enable_steady_tick(Duration::from_millis(200));
                }
                self.0 = Some(bar);
            }
            Progress::Advance { bytes } => {
                if let Some(bar) = &self.0 {
                    bar.inc(bytes);
                }
            }
            Progress::End => self.clear(),
        }
    }

    /// Removes the bar, if any.
    fn clear(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

/// What the bar says during `phase`.
fn label(phase: Phase) -> &'static str {
    match phase {
        Phase::Reading => "reading",
        Phase::Uploading => "uploading",
        Phase::Verifying => "verifying",
        Phase::Downloading => "downloading",
        Phase::Checking => "checking",
    }
}

/// A progress bar of `len` bytes.
fn new_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}
