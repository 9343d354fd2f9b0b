//! Process-wide set-up of a server process, each a thin safe fn over the kernel: descriptors kept
//! from children, freed heap given back, the reaper's signal disposition. (The child set-up calls
//! are in `process/sys.rs`.)
#![allow(unsafe_code)]

use std::io;

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

/// `file` registered with the runtime's reactor for priority readiness (POLLPRI), as the mount
/// table (`/proc/self/mounts`) signals a change. Must be called inside the tokio runtime.
pub fn watch_priority(file: std::fs::File) -> io::Result<tokio::io::unix::AsyncFd<std::fs::File>> {
    // SAFETY: the AsyncFd owns `file`, so its descriptor stays open for as long as it is
    // registered, and is deregistered before the file is closed (AsyncFd's drop).
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(file, tokio::io::Interest::PRIORITY) }
        .map_err(io::Error::from)
}
