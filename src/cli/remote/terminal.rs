//! The local terminal of `codex remote exec --tty`: raw mode while the remote command runs, the
//! previous mode restored on drop (including when the command fails or panics). Only the mode is
//! handled: the protocol has no window-size call, so the remote terminal stays 80x24.

use std::os::fd::BorrowedFd;

use rustix::termios::{self, OptionalActions, Termios};

/// Raw mode on stdin, undone on drop.
pub(super) struct RawMode {
    /// The mode to restore.
    saved: Termios,
}

impl RawMode {
    /// Puts stdin in raw mode if it is a terminal; `None` if it is not.
    pub(super) fn enable() -> std::io::Result<Option<Self>> {
        let stdin = stdin_fd();
        if !termios::isatty(stdin) {
            return Ok(None);
        }
        let saved = termios::tcgetattr(stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(stdin, OptionalActions::Flush, &raw)?;
        Ok(Some(Self { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(stdin_fd(), OptionalActions::Flush, &self.saved);
    }
}

/// Our stdin.
fn stdin_fd() -> BorrowedFd<'static> {
    rustix::stdio::stdin()
}
