//! A started child, however it was started: by std (tokio's `Child`), or by the server's own
//! `clone3` spawn (`spawn_sys.rs`), which hands back a pidfd. Either is waited for without
//! polling: tokio's on SIGCHLD, ours when its pidfd becomes readable (the process exited).

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt as _;
use std::process::ExitStatus;

use rustix::process::{Pid, Signal, WaitOptions};
use tokio::io::unix::AsyncFd;

/// A child of the server.
pub enum Child {
    Std(tokio::process::Child),
    Own(OwnChild),
}

impl Child {
    /// Keeps `fd` open until the child has been reaped, then closes it on a blocking thread (for
    /// a sandboxed command's mount namespace: `warm.rs`). A child started by std closes it now.
    pub fn hold_until_reaped(&mut self, fd: OwnedFd) {
        if let Self::Own(c) = self {
            c.held = Some(fd);
        }
    }

    /// Its pid (`None` once tokio has reaped it, as tokio says).
    pub fn id(&self) -> Option<u32> {
        match self {
            Self::Std(c) => c.id(),
            Self::Own(c) => Some(c.pid as u32),
        }
    }

    /// Its exit status if it has exited (it is reaped then), else `None`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self {
            Self::Std(c) => c.try_wait(),
            Self::Own(c) => c.try_wait(),
        }
    }

    /// Sends it SIGKILL (nothing once it is reaped).
    pub fn start_kill(&mut self) -> io::Result<()> {
        match self {
            Self::Std(c) => c.start_kill(),
            Self::Own(c) => c.start_kill(),
        }
    }

    /// Waits for it to exit and reaps it. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Self::Std(c) => c.wait().await,
            Self::Own(c) => c.wait().await,
        }
    }
}

/// A child started with a pidfd.
pub struct OwnChild {
    pid: i32,
    /// `None` only while dropping.
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    /// Closed once it is reaped ([`Child::hold_until_reaped`]).
    held: Option<OwnedFd>,
}

impl OwnChild {
    /// Takes over the child `pid` and its pidfd (within a tokio runtime).
    pub fn new(pid: i32, pidfd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            pid,
            pidfd: Some(super::spawn_sys::watch_pidfd(pidfd)?),
            status: None,
            held: None,
        })
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let reaped = reap(self.pid, WaitOptions::NOHANG)?;
        self.status = reaped;
        if reaped.is_some() {
            self.release();
        }
        Ok(reaped)
    }

    fn start_kill(&mut self) -> io::Result<()> {
        match (&self.pidfd, self.status) {
            (Some(fd), None) => {
                match rustix::process::pidfd_send_signal(fd.get_ref(), Signal::KILL) {
                    Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
                    Err(err) => Err(err.into()),
                }
            }
            _ => Ok(()),
        }
    }

    async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            let Some(fd) = &self.pidfd else {
                return Err(io::Error::other("child handle dropped"));
            };
            // Readable once the process has exited; looked at again before waiting more.
            let mut ready = fd.readable().await?;
            if let Some(status) = reap(self.pid, WaitOptions::NOHANG)? {
                self.status = Some(status);
                self.release();
                return Ok(status);
            }
            ready.clear_ready();
        }
    }
}

impl OwnChild {
    /// Closes what was held until the reap, off the async threads: the last reference to a mount
    /// namespace unmounts its tree and waits for an RCU grace period in `close`.
    fn release(&mut self) {
        let Some(fd) = self.held.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(move || drop(fd))),
            Err(_) => drop(fd),
        }
    }
}

impl Drop for OwnChild {
    fn drop(&mut self) {
        self.release();
        if self.status.is_some() || matches!(self.try_wait(), Ok(Some(_)) | Err(_)) {
            return;
        }
        // Still running: reaped in the background when it exits (as tokio does with a dropped
        // child), so that it does not stay a zombie.
        let (pid, Some(fd)) = (self.pid, self.pidfd.take()) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                loop {
                    let Ok(mut ready) = fd.readable().await else {
                        return;
                    };
                    match reap(pid, WaitOptions::NOHANG) {
                        Ok(None) => ready.clear_ready(),
                        _ => return,
                    }
                }
            });
        }
    }
}

/// waitpid on `pid` with `options`: its status if it was reaped.
fn reap(pid: i32, options: WaitOptions) -> io::Result<Option<ExitStatus>> {
    loop {
        match rustix::process::waitpid(Pid::from_raw(pid), options) {
            Ok(Some((_, status))) => {
                return Ok(Some(ExitStatus::from_raw(status.as_raw())));
            }
            Ok(None) => return Ok(None),
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
}
