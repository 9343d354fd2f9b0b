//! The system calls of managing a child: its set-up between fork and exec, and signalling its
//! process group. Process-wide start-up lives in `server/sys.rs`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd};

use rustix::process::{Pid, Signal};

/// Arranges for the child to lead a new process group (pipes) or a new session with the
/// terminal on fd 0 as its controlling terminal (tty), and, given its cgroup's `cgroup.procs`,
/// to move itself into that cgroup before it executes anything (so its first fork lands there
/// too).
///
/// A pipe child without a cgroup gets no `pre_exec` hook, so std can start it with `posix_spawn`
/// (a vfork) instead of a fork that copies the server's page tables: about half the spawn time,
/// and fan-out no longer grows with the server's heap. The price is no `PR_SET_PDEATHSIG` for
/// pipe children (it only ever covered the direct child, not its group); the server kills every
/// group itself on SIGTERM/SIGINT and on session expiry. A tty child needs `setsid` +
/// `TIOCSCTTY` between fork and exec, so it keeps the hook and the parent-death signal; so does a
/// child that must enter its cgroup (the write cannot be done by `posix_spawn`, and a write by
/// the parent after the spawn would race with the child's first forks).
pub fn configure_child(
    cmd: &mut tokio::process::Command,
    tty: bool,
    cgroup_procs: Option<BorrowedFd<'_>>,
) {
    let cgroup_procs = cgroup_procs.map(|fd| fd.as_raw_fd());
    if !tty {
        cmd.process_group(0);
        if cgroup_procs.is_none() {
            return;
        }
    }
    // SAFETY: the closure runs between fork and exec and makes only raw system calls (write,
    // setsid, ioctl, prctl through rustix), no allocation and no lock. `cgroup_procs` is open in
    // the parent until the spawn has returned (the caller holds it), so the forked child has it
    // at the same number; fd 0 is the terminal the command was given as stdin, open for the
    // whole call.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = cgroup_procs {
                // "0" moves the writer itself. If it fails the child runs anyway, reached through
                // its process group as before.
                let _ = rustix::io::write(BorrowedFd::borrow_raw(fd), b"0");
            }
            if tty {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(BorrowedFd::borrow_raw(0))?;
                // If the server dies without cleaning up, the direct child gets SIGKILL.
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            }
            Ok(())
        });
    }
}

/// Sends `signal` to every process of the group `pgid`. ESRCH (group already gone) is `Ok`.
pub fn signal_group(pgid: i32, signal: Signal) -> io::Result<()> {
    let Some(group) = Pid::from_raw(pgid).filter(|_| pgid > 1) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal pgid <= 1",
        ));
    };
    match rustix::process::kill_process_group(group, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(err) => Err(err.into()),
    }
}
