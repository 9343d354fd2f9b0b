//! The system calls of process management: child set-up between fork and exec, signalling a
//! process group, descriptors kept from children; and giving freed heap back. The only `unsafe`
//! of `server/`.
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

/// Marks every descriptor above stderr close-on-exec. Called once as the server starts, before
/// it opens any of its own: whatever its parent leaked to it (an fd opened without
/// close-on-exec) then stays with the server, and no child, sandboxed or not, inherits it. One
/// `close_range(CLOSE_RANGE_CLOEXEC)` (Linux 5.11); on an older kernel, each fd in
/// /proc/self/fd.
pub fn keep_inherited_fds_from_children() -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on a range of descriptors;
    // no memory is involved.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD on a descriptor number; one that is gone by now (the
        // directory's own) fails with EBADF, which is ignored.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// Gives the heap that is free back to the kernel (glibc's `malloc_trim`; a no-op elsewhere).
/// Free memory in the middle of the heap is otherwise kept: after 1000 sessions came and went,
/// 47 MiB of RSS stayed (`scripts/bench`, "sessions dropped").
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Ignores SIGINT, SIGTERM, SIGHUP and SIGQUIT (the reaper's: only the server's end ends it).
pub fn ignore_termination_signals() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: installs SIG_IGN, no handler code; the process is single-threaded here.
        unsafe {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
}
