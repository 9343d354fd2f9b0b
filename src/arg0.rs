//! The personalities of the one `codex` executable, chosen by the basename of argv[0] before any
//! flag is parsed. `codex-linux-sandbox` and `codex-fs` are symlinks the server creates itself in a
//! private directory (`sandbox::alias`), never a same-named program from PATH.

use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitCode;

use crate::sandbox::alias::{FS_HELPER_ARG0, LINUX_SANDBOX_ARG0};

/// Which personality argv[0] selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    /// The ordinary command tree (`codex exec-server`, ...).
    Cli,
    LinuxSandbox,
    FsHelper,
}

/// The personality for an argv[0].
pub fn personality(argv0: Option<&OsStr>) -> Personality {
    let name = argv0
        .and_then(|a| Path::new(a).file_name())
        .and_then(OsStr::to_str)
        .unwrap_or_default();
    match name {
        LINUX_SANDBOX_ARG0 => Personality::LinuxSandbox,
        FS_HELPER_ARG0 => Personality::FsHelper,
        _ => Personality::Cli,
    }
}

/// Runs the personality argv[0] selects.
pub fn dispatch() -> ExitCode {
    let argv0 = std::env::args_os().next();
    match personality(argv0.as_deref()) {
        Personality::Cli => crate::cli::main(),
        Personality::LinuxSandbox => crate::sandbox::wrapper::main(),
        Personality::FsHelper => crate::sandbox::fs_helper::main(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basename_selects_the_personality() {
        assert_eq!(
            personality(Some(OsStr::new("/x/y/codex-fs"))),
            Personality::FsHelper
        );
        assert_eq!(
            personality(Some(OsStr::new("codex-linux-sandbox"))),
            Personality::LinuxSandbox
        );
        assert_eq!(
            personality(Some(OsStr::new("/usr/bin/codex"))),
            Personality::Cli
        );
        assert_eq!(personality(None), Personality::Cli);
    }
}
