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
    /// The `cgroup.procs` it writes itself into before executing, where it is not created in
    /// `cgroup_dir` (cgroup v1, or the kernel refused `CLONE_INTO_CGROUP`).
    pub cgroup_procs: Option<BorrowedFd<'a>>,
    /// Start it as PID 1 of a new PID namespace (`CLONE_NEWPID`) if the kernel lets this
    /// process (it needs CAP_SYS_ADMIN); else it starts in ours.
    pub new_pid_namespace: bool,
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
    /// `cgroup_procs` of the setup, written to only when the child is not created in its cgroup.
    procs_fallback: RawFd,
    /// The highest signal number.
    max_signal: libc::c_int,
    /// Set by the child when it fails before or at exec: the errno.
    error: AtomicI32,
}

const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
const CLONE_NEWPID: u64 = 0x2000_0000;
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
    let mut plan = Plan {
        program: setup.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: setup.cwd.as_ptr(),
        dups,
        ndups,
        cgroup_procs: -1,
        procs_fallback: setup.cgroup_procs.map_or(-1, |fd| fd.as_raw_fd()),
        max_signal: libc::SIGRTMAX(),
        error: AtomicI32::new(0),
    };
    // 16-byte aligned, as the ABI wants the stack at a call.
    let mut stack = vec![0u128; STACK_BYTES / 16];
    let mut pidfd: RawFd = -1;
    let into_cgroup = setup
        .cgroup_dir
        .filter(|_| INTO_CGROUP.load(Ordering::Relaxed));
    let new_pid = setup.new_pid_namespace && NEW_PID.load(Ordering::Relaxed);
    let mut ret = clone_child(&mut plan, &mut stack, &mut pidfd, into_cgroup, new_pid);
    if ret < 0 && new_pid && matches!(-ret as i32, libc::EPERM | libc::EINVAL | libc::ENOSPC) {
        // No new PID namespace from here (not root; nesting too deep): the child starts in ours
        // and makes its own.
        if matches!(-ret as i32, libc::EPERM | libc::EINVAL) {
            NEW_PID.store(false, Ordering::Relaxed);
        }
        ret = clone_child(&mut plan, &mut stack, &mut pidfd, into_cgroup, false);
    }
    if ret < 0 && into_cgroup.is_some() && -ret != libc::ENOSYS as isize {
        // CLONE_INTO_CGROUP refused (a kernel before 5.7 says E2BIG or EINVAL; a cgroup may be
        // refused too): the child writes itself into the cgroup instead, as without clone3, and
        // a failure of that write leaves it running outside, reached through its group.
        if matches!(-ret as i32, libc::E2BIG | libc::EINVAL) {
            INTO_CGROUP.store(false, Ordering::Relaxed);
        }
        ret = clone_child(&mut plan, &mut stack, &mut pidfd, None, false);
    }
    drop(held);
    if ret < 0 {
        let errno = -ret as i32;
        // No clone3 (ENOSYS, also what a container's seccomp profile answers), or flags this
        // kernel does not know.
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

/// Whether `CLONE_INTO_CGROUP` is worth trying (cleared when the kernel does not know it).
static INTO_CGROUP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
/// Whether `CLONE_NEWPID` is worth trying (cleared when the kernel refuses it to this process).
static NEW_PID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// One clone3 of the child of `plan`, created in `cgroup` or writing itself into the cgroup of
/// `plan.procs_fallback`; the raw result (a pid, or -errno).
fn clone_child(
    plan: &mut Plan,
    stack: &mut [u128],
    pidfd: &mut RawFd,
    cgroup: Option<BorrowedFd<'_>>,
    new_pid_namespace: bool,
) -> isize {
    let mut args = CloneArgs {
        flags: CLONE_VM | CLONE_VFORK | CLONE_PIDFD,
        pidfd: pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.as_mut_ptr() as u64,
        stack_size: std::mem::size_of_val(stack) as u64,
        ..CloneArgs::default()
    };
    match cgroup {
        Some(dir) => {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = dir.as_raw_fd() as u64;
            plan.cgroup_procs = -1;
        }
        None => plan.cgroup_procs = plan.procs_fallback,
    }
    if new_pid_namespace {
        args.flags |= CLONE_NEWPID;
    }
    plan.error.store(0, Ordering::Relaxed);
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
            plan as *const Plan as *mut libc::c_void,
        )
    };
    restore_mask(&old_mask);
    ret
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
        for signal in 1..=plan.max_signal {
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

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use std::io::Read as _;
    use std::os::fd::AsFd as _;

    use super::*;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn exit_code(pid: i32) -> Option<i32> {
        rustix::process::waitpid(
            rustix::process::Pid::from_raw(pid),
            rustix::process::WaitOptions::empty(),
        )
        .unwrap()
        .and_then(|(_, status)| status.exit_status())
    }

    #[test]
    fn a_cgroup_the_kernel_refuses_falls_back_to_the_childs_own_write_and_the_child_runs() {
        // Not a cgroup: CLONE_INTO_CGROUP is refused (EBADF). The retry has the child write
        // itself ("0") into the fallback `cgroup.procs`, here a pipe we read.
        let not_a_cgroup = std::fs::File::open(std::env::temp_dir()).unwrap();
        let (mut procs_read, procs_write) = std::io::pipe().unwrap();
        let (out_read, out_write) = std::io::pipe().unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let argv = [c("sh"), c("-c"), c("echo ran")];
        let setup = ChildSetup {
            program: &c("/bin/sh"),
            argv: &argv,
            env: &[],
            cwd: &c("/"),
            stdio: [null.as_fd(), out_write.as_fd(), null.as_fd()],
            pass: None,
            cgroup_dir: Some(not_a_cgroup.as_fd()),
            cgroup_procs: Some(procs_write.as_fd()),
            new_pid_namespace: false,
        };
        let started = spawn(&setup).ok().unwrap().unwrap();
        drop((procs_write, out_write));
        assert_eq!(exit_code(started.pid), Some(0));
        let mut written = String::new();
        procs_read.read_to_string(&mut written).unwrap();
        assert_eq!(written, "0", "the child's own write into cgroup.procs");
        let mut out = String::new();
        { out_read }.read_to_string(&mut out).unwrap();
        assert_eq!(out, "ran\n");
    }

    /// Starts `program` in `cwd` with /dev/null as stdio, nothing else.
    fn spawn_plain(program: &str, cwd: &str) -> io::Result<Started> {
        let null = std::fs::File::open("/dev/null").unwrap();
        let argv = [c("x")];
        spawn(&ChildSetup {
            program: &c(program),
            argv: &argv,
            env: &[],
            cwd: &c(cwd),
            stdio: [null.as_fd(), null.as_fd(), null.as_fd()],
            pass: None,
            cgroup_dir: None,
            cgroup_procs: None,
            new_pid_namespace: false,
        })
        .ok()
        .unwrap()
    }

    #[test]
    fn an_exec_failure_is_the_childs_errno_and_the_child_is_reaped() {
        let missing_program = spawn_plain("/nonexistent/x", "/");
        assert_eq!(
            missing_program.err().and_then(|e| e.raw_os_error()),
            Some(libc::ENOENT)
        );
        let missing_cwd = spawn_plain("/bin/true", "/nonexistent-dir");
        assert_eq!(
            missing_cwd.err().and_then(|e| e.raw_os_error()),
            Some(libc::ENOENT)
        );
    }
}
