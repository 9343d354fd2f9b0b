//! Pseudo-terminals: open a master/slave pair, and drive the master asynchronously. The slave
//! becomes the child's stdin, stdout, stderr and controlling terminal (see
//! `server::process::sys::configure_child`); the master is read for output and written for stdin.
//! The calls are rustix's; the one `unsafe` is tokio's registration of the master.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;

use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Window size given to new terminals unless `process/start` names one (`ptySize`).
pub const DEFAULT_ROWS: u16 = 24;
/// See [`DEFAULT_ROWS`].
pub const DEFAULT_COLS: u16 = 80;

/// A freshly opened terminal pair, both ends close-on-exec.
pub struct PtyPair {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a terminal pair of the given size.
pub fn open(rows: u16, cols: u16) -> io::Result<PtyPair> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    // The peer straight from the master (Linux 4.13+); by its /dev/pts name on older kernels.
    let slave = match rustix::pty::ioctl_tiocgptpeer(&master, flags) {
        Ok(slave) => slave,
        Err(_) => {
            let name = rustix::pty::ptsname(&master, Vec::new())?;
            rustix::fs::open(
                name.as_c_str(),
                OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
                Mode::empty(),
            )?
        }
    };
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&slave, size)?;
    Ok(PtyPair { master, slave })
}

/// The master side of a terminal, readable and writable from tasks at the same time.
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    /// Takes ownership of a master fd and makes it non-blocking.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK)?;
        // SAFETY: `fd` is an open OwnedFd moved into the AsyncFd, so it stays open and names the
        // same file description for the AsyncFd's whole life.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
                .map_err(|e| e.into_parts().1)?;
        Ok(Self { fd })
    }

    /// Sets the terminal's size (TIOCSWINSZ on the master); the kernel sends SIGWINCH to the
    /// terminal's foreground process group.
    pub fn set_size(&self, rows: u16, cols: u16) -> io::Result<()> {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        Ok(rustix::termios::tcsetwinsize(self.fd.get_ref(), size)?)
    }

    /// The terminal's end-of-file character (VEOF) as the child's side has it set now. The master
    /// keeps termios of its own, so this opens the slave side for a moment to ask it.
    pub fn eof_char(&self) -> io::Result<u8> {
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let slave = rustix::pty::ioctl_tiocgptpeer(self.fd.get_ref(), flags)?;
        let termios = rustix::termios::tcgetattr(&slave)?;
        Ok(termios.special_codes[rustix::termios::SpecialCodeIndex::VEOF])
    }

    /// Reads output. `Ok(0)` once every slave fd is closed (Linux reports that as EIO).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let result = guard.try_io(|fd| match rustix::io::read(fd, &mut *buf) {
                Err(rustix::io::Errno::IO) => Ok(0),
                read => Ok(read?),
            });
            match result {
                Ok(read) => return read,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes what the terminal takes of `data` now, without waiting (`WouldBlock` when full).
    pub fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        Ok(rustix::io::write(self.fd.get_ref(), data)?)
    }

    /// Writes all of `data` to the terminal (the child's stdin).
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            let result = guard.try_io(|fd| Ok(rustix::io::write(fd, data)?));
            match result {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn new_terminal_has_the_requested_size_and_carries_bytes_both_ways() {
        let pair = open(40, 132).unwrap();
        let size = rustix::termios::tcgetwinsize(&pair.slave).unwrap();
        assert_eq!((size.ws_row, size.ws_col), (40, 132));
        for fd in [&pair.master, &pair.slave] {
            let fd_flags = rustix::io::fcntl_getfd(fd).unwrap();
            assert!(fd_flags.contains(rustix::io::FdFlags::CLOEXEC));
        }
        let slave = pair.slave;
        let master = PtyMaster::new(pair.master).unwrap();

        master.write_all(b"ping\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = rustix::io::read(&slave, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping\n", "a line reaches the slave");

        // The line is echoed back first (the terminal starts in canonical mode with echo).
        let mut out = Vec::new();
        rustix::io::write(&slave, b"pong").unwrap();
        while !out.ends_with(b"pong") {
            let n = master.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "end of output before pong: {out:?}");
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, b"ping\r\npong");
    }

    #[tokio::test]
    async fn resize_through_the_master_is_seen_on_the_slave_and_eof_char_is_the_default() {
        let pair = open(DEFAULT_ROWS, DEFAULT_COLS).unwrap();
        let slave = pair.slave;
        let master = PtyMaster::new(pair.master).unwrap();
        master.set_size(50, 200).unwrap();
        let size = rustix::termios::tcgetwinsize(&slave).unwrap();
        assert_eq!((size.ws_row, size.ws_col), (50, 200));
        assert_eq!(master.eof_char().unwrap(), 0x04, "Ctrl-D by default");
    }

    #[tokio::test]
    async fn read_reports_end_of_output_once_the_slave_is_closed() {
        let pair = open(DEFAULT_ROWS, DEFAULT_COLS).unwrap();
        let master = PtyMaster::new(pair.master).unwrap();
        rustix::io::write(&pair.slave, b"last").unwrap();
        drop(pair.slave);
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            let n = master.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(
            out, b"last",
            "output written before the close is read first"
        );
    }
}
