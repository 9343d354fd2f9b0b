//! A pipe child started with `clone3`: straight into its cgroup, without copying the server's
//! page tables, and with a pidfd.
//!
//! std starts a child with `posix_spawn` (a vfork: nothing copied) only when it has no
//! `pre_exec` hook, and a child that must enter its cgroup needs one (it writes itself into
//! `cgroup.procs`). That costs twice: a full fork of the server (its page tables copied, its
//! pages then copied on write), and, for the write, the kernel's write side of the cgroup
//! thread-group lock, which waits for an RCU grace period and is taken by one spawn at a time
//! (100 starts at once queue for it). `clone3(CLONE_INTO_CGROUP)` puts the child in its cgroup as
//! it is created (the read side only), and `CLONE_VM | CLONE_VFORK` on a stack of its own is how
//! glibc's `posix_spawn` avoids the copy; no crate offers that combination (rustix and nix wrap
//! no `clone3`, glibc 2.36 exports none and its `clone` takes 32 flag bits), so it is written here,
//! as glibc does, with the child running only raw system calls until it executes the program.
//!
//! x86_64 only (the entry needs a few instructions of assembly); elsewhere, and on kernels
//! without `clone3` or `CLONE_INTO_CGROUP` (before 5.7), [`spawn`] says [`Unsupported`] and the
//! caller uses std.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The child could not be started this way (no `clone3`, or no `CLONE_INTO_CGROUP`): use std.
#[derive(Debug)]
pub struct Unsupported;

/// What the child is given, all prepared before the clone (the child allocates nothing).
pub struct ChildSetup<'a> {
    /// The file to execute.
    pub program: &'a CStr,
    /// `argv`, `argv[0]` first.
    pub argv: &'a [CString],
    /// `KEY=VALUE` entries: the whole environment.
    pub env: &'a [CString],
    pub cwd: &'a CStr,
    /// Descriptors 0, 1 and 2 of the child, in order.
    pub stdio: [BorrowedFd<'a>; 3],
    /// A descriptor given to the child at a number of its own (after stdio).
    pub pass: Option<(BorrowedFd<'a>, RawFd)>,
    /// The cgroup (v2) directory it is created in.
    pub cgroup_dir: Option<BorrowedFd<'a>>,
    /// A cgroup (v1) `cgroup.procs` it writes itself into before executing.
    pub cgroup_procs: Option<BorrowedFd<'a>>,
}

/// A started child: its pid and a pidfd for it.
pub struct Started {
    pub pid: i32,
    pub pidfd: OwnedFd,
}

/// What the child reads, laid out before the clone.
struct Plan {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    /// (source, target) pairs, applied in order.
    dups: [(RawFd, RawFd); 4],
    ndups: usize,
    cgroup_procs: RawFd,
    /// Set by the child when it fails before or at exec: the errno.
    error: AtomicI32,
}

const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// Enough for the child's few frames (libc's `execve` included); glibc's `posix_spawn` uses
/// less.
const STACK_BYTES: usize = 64 * 1024;

/// `struct clone_args` of linux/sched.h (the fields up to `cgroup`, version 2).
#[repr(C, align(8))]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Starts the child of `setup`: in its own process group, with stdio and `pass` in place, in its
/// cgroup, executing `setup.program`. Returns when it has executed it (or failed to: the error
/// is the child's, as std reports it, and the child is reaped).
pub fn spawn(setup: &ChildSetup<'_>) -> Result<io::Result<Started>, Unsupported> {
    if !cfg!(target_arch = "x86_64") {
        return Err(Unsupported);
    }
    // Sources must not sit on a number a later dup2 overwrites (0..=2, or the passed target):
    // such a source is copied above them first.
    let mut held = Vec::new();
    let mut lift = |fd: BorrowedFd<'_>| -> io::Result<RawFd> {
        if fd.as_raw_fd() > 9 {
            return Ok(fd.as_raw_fd());
        }
        let copy = rustix::io::fcntl_dupfd_cloexec(fd, 10)?;
        let raw = copy.as_raw_fd();
        held.push(copy);
        Ok(raw)
    };
    let mut dups = [(-1, -1); 4];
    let mut ndups = 0;
    for (target, fd) in setup.stdio.iter().enumerate() {
        match lift(*fd) {
            Ok(raw) => dups[target] = (raw, target as RawFd),
            Err(err) => return Ok(Err(err)),
        }
        ndups += 1;
    }
    if let Some((fd, target)) = setup.pass {
        match lift(fd) {
            Ok(raw) => dups[ndups] = (raw, target),
            Err(err) => return Ok(Err(err)),
        }
        ndups += 1;
    }
    let argv = pointers(setup.argv);
    let envp = pointers(setup.env);
    let plan = Plan {
        program: setup.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: setup.cwd.as_ptr(),
        dups,
        ndups,
        cgroup_procs: setup.cgroup_procs.map_or(-1, |fd| fd.as_raw_fd()),
        error: AtomicI32::new(0),
    };
    // 16-byte aligned, as the ABI wants the stack at a call.
    let mut stack = vec![0u128; STACK_BYTES / 16];
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: CLONE_VM | CLONE_VFORK | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.as_mut_ptr() as u64,
        stack_size: STACK_BYTES as u64,
        ..CloneArgs::default()
    };
    if let Some(dir) = setup.cgroup_dir {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = dir.as_raw_fd() as u64;
    }
    // Every signal is blocked across the clone: the child shares the server's memory, and a
    // handler of the server's must never run on it. The child resets the handlers, then the
    // mask, before it executes.
    let old_mask = block_all();
    // SAFETY: `args` is a valid clone_args whose stack is `stack` (alive until the child has
    // executed or exited: CLONE_VFORK suspends this thread until then) and whose pidfd slot is
    // `pidfd`; `child_main` receives `plan`, which outlives the child's use of it for the same
    // reason, and makes only async-signal-safe calls.
    let ret = unsafe {
        clone3(
            &mut args,
            child_main,
            &plan as *const Plan as *mut libc::c_void,
        )
    };
    restore_mask(&old_mask);
    drop(held);
    if ret < 0 {
        let errno = -ret as i32;
        // No clone3 (ENOSYS), or no CLONE_INTO_CGROUP (E2BIG / EINVAL on an older kernel).
        if matches!(errno, libc::ENOSYS | libc::E2BIG | libc::EINVAL) {
            return Err(Unsupported);
        }
        return Ok(Err(io::Error::from_raw_os_error(errno)));
    }
    let pid = ret as i32;
    // SAFETY: CLONE_PIDFD stored a new descriptor, owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let error = plan.error.load(Ordering::Acquire);
    if error != 0 {
        // It exited (127) without executing anything: reap it.
        let _ = rustix::process::waitpid(
            rustix::process::Pid::from_raw(pid),
            rustix::process::WaitOptions::empty(),
        );
        return Ok(Err(io::Error::from_raw_os_error(error)));
    }
    Ok(Ok(Started { pid, pidfd }))
}

/// A null-terminated array of pointers to `strings` (valid while they are).
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn block_all() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialized by sigfillset; pthread_sigmask reads `all` and
    // writes `old`.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

fn restore_mask(mask: &libc::sigset_t) {
    // SAFETY: `mask` is a valid sigset_t.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
}

/// `clone3(args)`; the child runs `child(arg)` on the new stack and never returns.
///
/// # Safety
/// `args` must be valid for clone3 with a stack of its own; `child` must not return and may
/// make only async-signal-safe calls (it shares this process's memory).
#[cfg(target_arch = "x86_64")]
unsafe fn clone3(
    args: &mut CloneArgs,
    child: extern "C" fn(*mut libc::c_void) -> !,
    arg: *mut libc::c_void,
) -> isize {
    let ret: isize;
    // SAFETY: the syscall returns in both processes; the parent (rax != 0) jumps past the
    // child's part with only rax, rcx and r11 changed (declared). The child (rax == 0) runs on
    // the new stack, which the kernel set, 16-byte aligned: it calls `child(arg)`, which never
    // returns.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 as isize => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") child,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3(
    _args: &mut CloneArgs,
    _child: extern "C" fn(*mut libc::c_void) -> !,
    _arg: *mut libc::c_void,
) -> isize {
    -(libc::ENOSYS as isize)
}

/// The child, between the clone and the exec: raw system calls only, no allocation, no lock.
extern "C" fn child_main(arg: *mut libc::c_void) -> ! {
    // SAFETY: `arg` is the parent's `Plan`, alive and unchanged while this runs (the parent is
    // suspended until the exec or the exit). Every call below is async-signal-safe.
    unsafe {
        let plan = &*(arg as *const Plan);
        let fail = |plan: &Plan| -> ! {
            let errno = *libc::__errno_location();
            plan.error.store(
                if errno == 0 { libc::EIO } else { errno },
                Ordering::Release,
            );
            libc::_exit(127)
        };
        // No handler of the server's may run here or in the program: every caught signal goes
        // back to its default action (an ignored one stays ignored, as across any exec), and
        // SIGPIPE, which Rust ignores, to its default as std does for its children.
        for signal in 1..libc::SIGRTMAX() {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            let caught = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
            if caught || signal == libc::SIGPIPE {
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &new, std::ptr::null_mut());
            }
        }
        if plan.cgroup_procs >= 0 {
            // If it fails the child runs anyway, reached through its process group.
            libc::write(plan.cgroup_procs, b"0".as_ptr().cast(), 1);
        }
        if libc::setpgid(0, 0) != 0 {
            fail(plan);
        }
        for &(source, target) in &plan.dups[..plan.ndups] {
            if libc::dup2(source, target) < 0 {
                fail(plan);
            }
        }
        if libc::chdir(plan.cwd) != 0 {
            fail(plan);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(plan.program, plan.argv, plan.envp);
        fail(plan)
    }
}

/// Registers a child's pidfd with the runtime, to be woken when the child exits.
pub fn watch_pidfd(pidfd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the descriptor: it stays open while registered and is closed only
    // when the AsyncFd drops, after deregistering.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
            .map_err(io::Error::from)
    }
}
