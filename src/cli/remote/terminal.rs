//! The local terminal of `codex remote exec --tty`: raw mode while the remote command runs, the
//! previous mode restored on drop (including when the command fails or panics); and its size,
//! which `exec --tty` sends to the remote terminal.

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

/// Our terminal's size as (cols, rows), read from stdin, else stdout; `None` if neither is a
/// terminal (or it reports a zero size).
pub(super) fn local_size() -> Option<(u16, u16)> {
    [rustix::stdio::stdin(), rustix::stdio::stdout()]
        .into_iter()
        .filter(|fd| termios::isatty(*fd))
        .find_map(|fd| termios::tcgetwinsize(fd).ok())
        .filter(|size| size.ws_col > 0 && size.ws_row > 0)
        .map(|size| (size.ws_col.min(10_000), size.ws_row.min(10_000)))
}

/// Our stdin.
fn stdin_fd() -> BorrowedFd<'static> {
    rustix::stdio::stdin()
}
