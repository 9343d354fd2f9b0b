//! The system calls of managing a child: its set-up between fork and exec, and signalling its
//! process group. Process-wide start-up lives in `server/sys.rs`.
#![allow(unsafe_code)]

use std::io;

/// Arranges for the child to lead a new process group (pipes) or a new session with the
/// terminal on fd 0 as its controlling terminal (tty).
///
/// A pipe child gets no `pre_exec` hook, so std can start it with `posix_spawn` (a vfork) instead
/// of a fork that copies the server's page tables: about half the spawn time, and fan-out no longer
/// grows with the server's heap. The price is no `PR_SET_PDEATHSIG` for pipe children (it only
/// ever covered the direct child, not its group); the server kills every group itself on
/// SIGTERM/SIGINT and on session expiry. A tty child needs `setsid` + `TIOCSCTTY` between fork and
/// exec, so it keeps the hook and the parent-death signal.
pub fn configure_child(cmd: &mut tokio::process::Command, tty: bool) {
    if !tty {
        cmd.process_group(0);
        return;
    }
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (setsid, ioctl, prctl) with no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            // If the server dies without cleaning up, the direct child gets SIGKILL.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends `signal` to every process of the group `pgid`. ESRCH (group already gone) is `Ok`.
pub fn signal_group(pgid: i32, signal: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal pgid <= 1",
        ));
    }
    // SAFETY: kill with a negative pid signals a process group; no memory is involved.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}
