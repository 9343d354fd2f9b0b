//! `codex reap-process-groups` (hidden): the helper `codex exec-server` starts at launch, so that
//! its process groups die with it even when it is killed outright (see `server::reaper`).

use std::process::ExitCode;

/// Runs the reaper until its stdin ends.
pub fn run() -> ExitCode {
    crate::server::reaper::run()
}
