//! Every kernel operation the sandbox wrapper performs, named by the [`Kernel`] trait. The wrapper
//! (`wrapper::apply_with`) reaches the kernel only through it, so its order of steps and its
//! fallbacks are unit-tested against the recording [`fake::FakeKernel`] without privileges and
//! without confining the test process; [`LinuxKernel`] makes the real calls (exercised by the
//! sandbox integration tests, in `codex-linux-sandbox` children only).
//!
//! The real calls go through `rustix`, `landlock` and `seccompiler`. The only `unsafe` of
//! `sandbox/` is here: the two calls the crates do not cover (the Landlock ABI probe,
//! `close_range`) and rustix's `unshare`, unsafe by signature.
#![allow(unsafe_code)]

use std::convert::Infallible;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use landlock::{
    Access as _, AccessFs, AccessNet, BitFlags, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};
use rustix::fs::StatVfsMountFlags;
use rustix::mount::{MountFlags, MountPropagationFlags};
use rustix::thread::{CapabilitySet, CapabilitySets, UnshareFlags};
use seccompiler::BpfProgram;

/// The Landlock ABI this program is written against (pinned); handled rights are this ABI's,
/// best effort down to the kernel's.
pub const LANDLOCK_ABI: landlock::ABI = landlock::ABI::V7;

/// The running kernel's Landlock ABI (0: none).
pub fn kernel_landlock_abi() -> i32 {
    LinuxKernel.landlock_abi()
}

/// A Landlock ruleset to create and enforce on the calling thread, as planned by the wrapper.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LandlockRuleset {
    /// File-system rights the ruleset handles (empty: the file system is not confined).
    pub handled_fs: BitFlags<AccessFs>,
    /// Set every scope of the pinned ABI (signals, abstract unix sockets).
    pub scoped: bool,
    /// Network rights the ruleset handles (empty: the network is not confined by Landlock).
    pub handled_net: BitFlags<AccessNet>,
    /// Paths (directory or file) and the rights granted beneath each.
    pub paths: Vec<(PathBuf, BitFlags<AccessFs>)>,
    /// TCP ports `connect` is allowed to.
    pub connect_ports: Vec<u16>,
}

/// The kernel operations of the sandbox wrapper, each one step of sandbox.md §4.1.
pub trait Kernel {
    /// The Landlock ABI version of the running kernel; 0 when Landlock is missing or disabled.
    fn landlock_abi(&self) -> i32;
    /// Enters a private mount namespace (inside a new user namespace when not root) whose mounts
    /// no longer propagate to or from the parent's.
    fn enter_mount_namespace(&self) -> io::Result<()>;
    /// Moves what follows into a new PID namespace (inside a new user namespace when not root):
    /// the caller stays outside as a supervisor, a forked child becomes the namespace's init, and
    /// a child of that one returns from this call to be confined and exec the command (PID 2
    /// inside). The supervisor and the init never return: they exit with the command's status.
    /// With `made`, the caller (the server) may have started this process as the init of a new
    /// PID namespace already (`clone3(CLONE_NEWPID)`): if it is PID 1, it becomes that init at
    /// once (no supervisor; it exits with the command's code, 128+N for a death by signal N, as
    /// the server reports it anyway); else it makes one as above.
    fn isolate_pids(&self, made: bool) -> io::Result<()>;
    /// Mounts a procfs of this process's PID namespace over `/proc` (in a mount namespace of its
    /// own, entered before).
    fn mount_proc(&self) -> io::Result<()>;
    /// `mount(path, path, NULL, MS_BIND | MS_REC, NULL)`.
    fn bind_mount(&self, path: &Path) -> io::Result<()>;
    /// The mount flags of the file system holding `path` (`statvfs(path).f_flag`).
    fn mount_flags(&self, path: &Path) -> io::Result<StatVfsMountFlags>;
    /// `mount(NULL, path, NULL, MS_REMOUNT | flags, NULL)`.
    fn remount(&self, path: &Path, flags: MountFlags) -> io::Result<()>;
    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
    fn set_no_new_privs(&self) -> io::Result<()>;
    /// Empties the bounding and ambient sets, then the effective, permitted and inheritable sets
    /// (`capset`).
    fn drop_capabilities(&self) -> io::Result<()>;
    /// This thread's effective, permitted and inheritable sets (`capget`).
    fn capabilities(&self) -> io::Result<CapabilitySets>;
    /// Creates `ruleset`, adds its rules and enforces it on the calling thread.
    fn landlock_restrict_self(&self, ruleset: &LandlockRuleset) -> io::Result<RulesetStatus>;
    /// Loads a compiled seccomp filter on the calling thread.
    fn load_seccomp(&self, program: &BpfProgram) -> io::Result<()>;
    /// Closes every file descriptor from 3 up.
    fn close_fds_above_stderr(&self) -> io::Result<()>;
    /// Replaces this process with `program` (PATH lookup in the current environment); returns
    /// only on failure.
    /// Executes `program` (PATH lookup in `env`, else the current environment), with `env` as
    /// its whole environment if given.
    fn exec(
        &self,
        program: &OsStr,
        args: &[OsString],
        arg0: Option<&OsStr>,
        env: Option<&[(OsString, OsString)]>,
    ) -> io::Result<Infallible>;
}

/// The running Linux kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxKernel;

impl Kernel for LinuxKernel {
    fn landlock_abi(&self) -> i32 {
        const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
        // SAFETY: with a null attr and size 0, the call reads no memory and only returns the ABI
        // version (neither rustix nor the landlock crate exposes this probe).
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<libc::c_void>(),
                0usize,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        };
        if v < 0 { 0 } else { v as i32 }
    }

    fn enter_mount_namespace(&self) -> io::Result<()> {
        unshare_as_root_or_in_user_namespace(UnshareFlags::NEWNS)?;
        make_mounts_private()
    }

    fn isolate_pids(&self, made: bool) -> io::Result<()> {
        if made && rustix::process::getpid().as_raw_nonzero().get() == 1 {
            return pid_namespace::init_here();
        }
        unshare_pid_namespace()?;
        pid_namespace::supervise()
    }

    fn mount_proc(&self) -> io::Result<()> {
        Ok(rustix::mount::mount(
            "proc",
            "/proc",
            "proc",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            None,
        )?)
    }

    fn bind_mount(&self, path: &Path) -> io::Result<()> {
        Ok(rustix::mount::mount_bind_recursive(path, path)?)
    }

    fn mount_flags(&self, path: &Path) -> io::Result<StatVfsMountFlags> {
        Ok(rustix::fs::statvfs(path)?.f_flag)
    }

    fn remount(&self, path: &Path, flags: MountFlags) -> io::Result<()> {
        Ok(rustix::mount::mount_remount(path, flags, "")?)
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        Ok(rustix::thread::set_no_new_privs(true)?)
    }

    fn drop_capabilities(&self) -> io::Result<()> {
        for cap in 0..u64::BITS {
            match rustix::thread::remove_capability_from_bounding_set(
                CapabilitySet::from_bits_retain(1 << cap),
            ) {
                Ok(()) => {}
                // Past the last capability this kernel knows.
                Err(rustix::io::Errno::INVAL) => break,
                // No CAP_SETPCAP: there is nothing this process could use them for.
                Err(rustix::io::Errno::PERM) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match rustix::thread::clear_ambient_capability_set() {
            // EINVAL: a kernel without ambient capabilities.
            Ok(()) | Err(rustix::io::Errno::INVAL) => {}
            Err(e) => return Err(e.into()),
        }
        let none = CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        };
        Ok(rustix::thread::set_capabilities(None, none)?)
    }

    fn capabilities(&self) -> io::Result<CapabilitySets> {
        Ok(rustix::thread::capabilities(None)?)
    }

    fn landlock_restrict_self(&self, planned: &LandlockRuleset) -> io::Result<RulesetStatus> {
        let mut ruleset = Ruleset::default();
        if !planned.handled_fs.is_empty() {
            ruleset = ruleset
                .handle_access(planned.handled_fs)
                .map_err(io::Error::other)?;
        }
        if planned.scoped {
            ruleset = ruleset
                .scope(Scope::from_all(LANDLOCK_ABI))
                .map_err(io::Error::other)?;
        }
        if !planned.handled_net.is_empty() {
            ruleset = ruleset
                .handle_access(planned.handled_net)
                .map_err(io::Error::other)?;
        }
        let mut created = ruleset.create().map_err(io::Error::other)?;
        for (path, access) in &planned.paths {
            let fd = PathFd::new(path).map_err(io::Error::other)?;
            created = created
                .add_rule(PathBeneath::new(fd, *access))
                .map_err(io::Error::other)?;
        }
        for port in &planned.connect_ports {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(io::Error::other)?;
        }
        Ok(created.restrict_self().map_err(io::Error::other)?.ruleset)
    }

    fn load_seccomp(&self, program: &BpfProgram) -> io::Result<()> {
        seccompiler::apply_filter(program).map_err(io::Error::other)
    }

    fn close_fds_above_stderr(&self) -> io::Result<()> {
        // SAFETY: close_range takes no memory. Closing descriptors other code may own is the
        // point: only the single-threaded wrapper calls it, right before exec.
        let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn exec(
        &self,
        program: &OsStr,
        args: &[OsString],
        arg0: Option<&OsStr>,
        env: Option<&[(OsString, OsString)]>,
    ) -> io::Result<Infallible> {
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        if let Some(a) = arg0 {
            cmd.arg0(a);
        }
        if let Some(env) = env {
            cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        }
        Err(cmd.exec())
    }
}

/// Takes ownership of descriptor `fd`, which this process was started with for one use (the
/// warm wrapper's command pipe); an error if it is not open.
pub fn take_fd(fd: i32) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: F_GETFD reads no memory; it only tells whether `fd` is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (checked above) and was handed to this process for this one use;
    // nothing else in the process owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// `unshare(flags)`: as root directly; when not root, or when root may not (a container
/// without CAP_SYS_ADMIN), inside a new user namespace where this uid and gid map to themselves.
fn unshare_as_root_or_in_user_namespace(flags: UnshareFlags) -> io::Result<()> {
    if rustix::process::geteuid().is_root() {
        // SAFETY: without CLONE_FILES the file-descriptor table stays shared, so no thread can be
        // left holding descriptors of a table it no longer sees.
        if unsafe { rustix::thread::unshare_unsafe(flags) }.is_ok() {
            return Ok(());
        }
    }
    let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
    // SAFETY: as above, CLONE_FILES is not among the flags.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | flags) }?;
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("{0} {0} 1", uid.as_raw()))?;
    std::fs::write("/proc/self/gid_map", format!("{0} {0} 1", gid.as_raw()))?;
    Ok(())
}

/// `unshare(CLONE_NEWPID)` (see [`unshare_as_root_or_in_user_namespace`]): only children forked
/// afterwards are in the new namespace.
fn unshare_pid_namespace() -> io::Result<()> {
    unshare_as_root_or_in_user_namespace(UnshareFlags::NEWPID)
}

/// Whether a PID namespace can be had here: run in a throwaway process (it does enter one, and
/// forks a child into it to be sure the kernel accepts the first process of the namespace).
pub fn probe_pid_namespace() -> bool {
    if unshare_pid_namespace().is_err() {
        return false;
    }
    // SAFETY: the probe process is single-threaded (a hidden subcommand run before any runtime);
    // the child only calls `_exit`.
    match unsafe { libc::fork() } {
        -1 => false,
        0 => {
            // SAFETY: `_exit` is async-signal-safe and ends the child at once.
            unsafe { libc::_exit(0) }
        }
        child => matches!(
            rustix::process::waitpid(
                rustix::process::Pid::from_raw(child),
                rustix::process::WaitOptions::empty()
            ),
            Ok(Some((_, status))) if status.exit_status() == Some(0)
        ),
    }
}

/// The three processes of an isolated run. The supervisor is what the server started (its pid,
/// its process group: the server's signals reach the whole group, the command included); the
/// namespace's init reaps orphans and, when the command ends, hands its wait status to the
/// supervisor through a pipe and exits, which makes the kernel kill whatever the command left
/// behind in the namespace; the supervisor then ends the way the command ended.
///
/// Why not exec the command as the init: an init only receives the signals it installed a
/// handler for, so `sleep` as init would ignore the server's SIGINT and SIGTERM.
mod pid_namespace {
    use std::io::{self, Read as _, Write as _};

    use rustix::process::{Pid, WaitOptions, WaitStatus};

    /// The signals the server forwards to the process group. The supervisor ignores them (the
    /// command receives its own copy); the init cannot receive them from outside anyway.
    const GROUP_SIGNALS: [libc::c_int; 7] = [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGPIPE,
    ];

    /// How the command ended, as the init tells the supervisor.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Ended {
        Code(i32),
        Signal(i32),
    }

    impl Ended {
        fn of(status: WaitStatus) -> Option<Self> {
            match (status.exit_status(), status.terminating_signal()) {
                (Some(code), _) => Some(Self::Code(code)),
                (None, Some(signal)) => Some(Self::Signal(signal)),
                _ => None,
            }
        }

        fn encode(self) -> [u8; 5] {
            let (kind, value) = match self {
                Self::Code(v) => (0u8, v),
                Self::Signal(v) => (1u8, v),
            };
            let mut out = [kind, 0, 0, 0, 0];
            out[1..].copy_from_slice(&value.to_ne_bytes());
            out
        }

        fn decode(raw: [u8; 5]) -> Option<Self> {
            let value = i32::from_ne_bytes([raw[1], raw[2], raw[3], raw[4]]);
            match raw[0] {
                0 => Some(Self::Code(value)),
                1 => Some(Self::Signal(value)),
                _ => None,
            }
        }
    }

    /// Forks the init; returns in the command's process only.
    pub(super) fn supervise() -> io::Result<()> {
        // std's pipes are close-on-exec.
        let (status_read, status_write) = io::pipe()?;
        // The group signals are blocked across the fork: the command may print and be signalled
        // before the supervisor has run a single line after it, and the supervisor must not die
        // of a signal meant for the command. Each side sets its mask back once it is ready.
        let old_mask = block(&GROUP_SIGNALS);
        // SAFETY: the wrapper is single-threaded (it runs before any runtime exists), so the child
        // may go on running ordinary code.
        match unsafe { libc::fork() } {
            -1 => {
                let err = io::Error::last_os_error();
                set_mask(&old_mask);
                Err(err)
            }
            0 => {
                drop(status_read);
                // A signal that came while blocked is delivered now, as it would have been.
                set_mask(&old_mask);
                init(status_write)
            }
            init_pid => {
                drop(status_write);
                supervisor(Pid::from_raw(init_pid), status_read, &old_mask)
            }
        }
    }

    /// Makes this process, PID 1 of a PID namespace its parent made, the namespace's init: forks
    /// the command's process (PID 2), which returns; the init reaps until the command has ended,
    /// then exits with its code (128+N for a death by signal N). Signals from outside the
    /// namespace, such as the server's to the process group, do not reach an init without
    /// handlers, and SIGKILL ends it and the namespace.
    pub(super) fn init_here() -> io::Result<()> {
        // SAFETY: the wrapper is single-threaded (it runs before any runtime exists), so the child
        // may go on running ordinary code.
        let command = match unsafe { libc::fork() } {
            -1 => return Err(io::Error::last_os_error()),
            0 => return Ok(()),
            pid => pid,
        };
        let status = loop {
            match rustix::process::wait(WaitOptions::empty()) {
                Ok(Some((pid, status))) if pid.as_raw_nonzero().get() == command => break status,
                Ok(_) | Err(rustix::io::Errno::INTR) => continue,
                Err(_) => quick_exit(1),
            }
        };
        match Ended::of(status) {
            Some(Ended::Code(code)) => quick_exit(code),
            Some(Ended::Signal(signal)) => quick_exit(128 + signal),
            None => quick_exit(1),
        }
    }

    /// Blocks `signals`; returns the mask before.
    fn block(signals: &[libc::c_int]) -> libc::sigset_t {
        // SAFETY: sigset_t is plain data that sigemptyset initializes; sigprocmask only reads
        // `set` and writes `old`, both valid for the call; single-threaded.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &signal in signals {
                libc::sigaddset(&mut set, signal);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
            old
        }
    }

    /// Sets the signal mask to `mask`.
    fn set_mask(mask: &libc::sigset_t) {
        // SAFETY: `mask` is a valid sigset_t read by the call; single-threaded.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
    }

    /// The supervisor: waits for the init, then ends as the command did.
    fn supervisor(
        init: Option<Pid>,
        mut status_read: io::PipeReader,
        old_mask: &libc::sigset_t,
    ) -> ! {
        for signal in GROUP_SIGNALS {
            // SAFETY: SIG_IGN installs no handler code; single-threaded. A signal pending since
            // the fork is discarded by it.
            unsafe { libc::signal(signal, libc::SIG_IGN) };
        }
        set_mask(old_mask);
        let init_status = loop {
            match rustix::process::waitpid(init, WaitOptions::empty()) {
                Ok(Some((_, status))) => break Ended::of(status),
                Err(rustix::io::Errno::INTR) => continue,
                _ => break None,
            }
        };
        let mut raw = [0u8; 5];
        let reported = status_read
            .read_exact(&mut raw)
            .ok()
            .and_then(|()| Ended::decode(raw));
        // The init did not report (killed outright): end as it did.
        match reported.or(init_status) {
            Some(ended) => end_as(ended),
            None => quick_exit(1),
        }
    }

    /// Ends this process as the command ended: the same exit code, or death by the same signal
    /// (with no core dump of ours).
    fn end_as(ended: Ended) -> ! {
        match ended {
            Ended::Code(code) => quick_exit(code),
            Ended::Signal(signal) => {
                // SAFETY: plain libc calls on this single-threaded process: no core file of the
                // supervisor, default action for the signal, unblocked, then raised.
                unsafe {
                    libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
                    libc::signal(signal, libc::SIG_DFL);
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, signal);
                    libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                    libc::raise(signal);
                }
                quick_exit(128 + signal)
            }
        }
    }

    /// The namespace's init: forks the command's process, then reaps until the command has
    /// ended.
    fn init(status_write: io::PipeWriter) -> io::Result<()> {
        // The supervisor's death (the server killed it alone) ends the namespace.
        let _ =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
        // SAFETY: still single-threaded (a fork of the single-threaded wrapper).
        let command = match unsafe { libc::fork() } {
            -1 => {
                let err = io::Error::last_os_error();
                std::process::exit(report_failure(&err));
            }
            0 => {
                drop(status_write);
                return Ok(());
            }
            pid => pid,
        };
        let status = loop {
            match rustix::process::wait(WaitOptions::empty()) {
                Ok(Some((pid, status))) if pid.as_raw_nonzero().get() == command => break status,
                Ok(_) | Err(rustix::io::Errno::INTR) => continue,
                // No child left without having seen the command's end: cannot happen.
                Err(_) => std::process::exit(1),
            }
        };
        if let Some(ended) = Ended::of(status) {
            let mut status_write = status_write;
            let _ = status_write.write_all(&ended.encode());
        }
        quick_exit(0)
    }

    /// Ends this process at once: nothing of the C library's exit (atexit handlers, the dynamic
    /// loader's finalizers) is needed by the init or the supervisor, and their exit is on the
    /// path from the command's end to `exited`.
    fn quick_exit(code: i32) -> ! {
        // SAFETY: _exit ends the process; nothing is left to flush (these processes write only
        // with unbuffered calls).
        unsafe { libc::_exit(code) }
    }

    /// Says why the command's process could not be forked; the exit code to use.
    fn report_failure(err: &io::Error) -> i32 {
        eprintln!("codex-linux-sandbox: failed to start the command in its PID namespace: {err}");
        1
    }
}

/// Makes every mount of the new namespace private, so bind mounts made here stay here.
fn make_mounts_private() -> io::Result<()> {
    Ok(rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )?)
}

/// A recording [`Kernel`] for unit tests: every call is stored with its arguments, and any call
/// can be made to fail. Nothing reaches the real kernel.
#[cfg(test)]
pub mod fake {
    use std::cell::RefCell;

    use super::*;

    /// One recorded call.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        LandlockAbi,
        EnterMountNamespace,
        IsolatePids,
        MountProc,
        BindMount(PathBuf),
        MountFlags(PathBuf),
        Remount(PathBuf, MountFlags),
        SetNoNewPrivs,
        DropCapabilities,
        Capabilities,
        LandlockRestrictSelf(LandlockRuleset),
        /// The filter's length in instructions.
        LoadSeccomp(usize),
        CloseFdsAboveStderr,
        Exec {
            program: OsString,
            args: Vec<OsString>,
            arg0: Option<OsString>,
        },
    }

    /// The operation of a [`Call`], without its arguments.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Op {
        EnterMountNamespace,
        IsolatePids,
        MountProc,
        BindMount,
        MountFlags,
        Remount,
        SetNoNewPrivs,
        DropCapabilities,
        Capabilities,
        LandlockRestrictSelf,
        LoadSeccomp,
        CloseFdsAboveStderr,
        Exec,
    }

    impl Call {
        /// The operation; `None` for the infallible ABI probe.
        pub fn op(&self) -> Option<Op> {
            Some(match self {
                Call::LandlockAbi => return None,
                Call::EnterMountNamespace => Op::EnterMountNamespace,
                Call::IsolatePids => Op::IsolatePids,
                Call::MountProc => Op::MountProc,
                Call::BindMount(_) => Op::BindMount,
                Call::MountFlags(_) => Op::MountFlags,
                Call::Remount(..) => Op::Remount,
                Call::SetNoNewPrivs => Op::SetNoNewPrivs,
                Call::DropCapabilities => Op::DropCapabilities,
                Call::Capabilities => Op::Capabilities,
                Call::LandlockRestrictSelf(_) => Op::LandlockRestrictSelf,
                Call::LoadSeccomp(_) => Op::LoadSeccomp,
                Call::CloseFdsAboveStderr => Op::CloseFdsAboveStderr,
                Call::Exec { .. } => Op::Exec,
            })
        }
    }

    /// A kernel with Landlock ABI 7 (by default), where every call succeeds unless told to fail.
    /// `exec` never replaces the test process: it fails with `ENOEXEC` unless told otherwise.
    #[derive(Debug)]
    pub struct FakeKernel {
        /// What [`Kernel::landlock_abi`] answers.
        pub abi: i32,
        /// What [`Kernel::mount_flags`] answers.
        pub mount_flags: StatVfsMountFlags,
        /// What [`Kernel::capabilities`] answers.
        pub capabilities: CapabilitySets,
        /// Whether [`Kernel::landlock_restrict_self`] reports the ruleset as not enforced.
        pub not_enforced: bool,
        calls: RefCell<Vec<Call>>,
        /// (operation, which call of it (0-based; `None`: every call), errno).
        failures: Vec<(Op, Option<usize>, i32)>,
    }

    impl Default for FakeKernel {
        fn default() -> Self {
            Self {
                abi: 7,
                mount_flags: StatVfsMountFlags::empty(),
                capabilities: CapabilitySets {
                    effective: CapabilitySet::empty(),
                    permitted: CapabilitySet::empty(),
                    inheritable: CapabilitySet::empty(),
                },
                not_enforced: false,
                calls: RefCell::default(),
                failures: Vec::new(),
            }
        }
    }

    impl FakeKernel {
        /// A kernel with Landlock ABI `abi`.
        pub fn with_abi(abi: i32) -> Self {
            Self {
                abi,
                ..Self::default()
            }
        }

        /// Every call of `op` fails with `errno`.
        pub fn fail(mut self, op: Op, errno: i32) -> Self {
            self.failures.push((op, None, errno));
            self
        }

        /// The `nth` call (0-based) of `op` fails with `errno`.
        pub fn fail_nth(mut self, op: Op, nth: usize, errno: i32) -> Self {
            self.failures.push((op, Some(nth), errno));
            self
        }

        /// Every call made so far, in order.
        pub fn calls(&self) -> Vec<Call> {
            self.calls.borrow().clone()
        }

        /// The operations called so far, in order (the ABI probe left out).
        pub fn ops(&self) -> Vec<Op> {
            self.calls.borrow().iter().filter_map(Call::op).collect()
        }

        /// The rulesets given to `landlock_restrict_self`.
        pub fn rulesets(&self) -> Vec<LandlockRuleset> {
            self.calls
                .borrow()
                .iter()
                .filter_map(|c| match c {
                    Call::LandlockRestrictSelf(r) => Some(r.clone()),
                    _ => None,
                })
                .collect()
        }

        /// Records `call`; the injected error, if this call of its operation is to fail.
        fn record(&self, call: Call) -> io::Result<()> {
            let op = call.op();
            let mut calls = self.calls.borrow_mut();
            let nth = calls.iter().filter(|c| c.op() == op).count();
            calls.push(call);
            match self
                .failures
                .iter()
                .find(|(o, n, _)| Some(*o) == op && n.is_none_or(|n| n == nth))
            {
                Some((_, _, errno)) => Err(io::Error::from_raw_os_error(*errno)),
                None => Ok(()),
            }
        }
    }

    impl Kernel for FakeKernel {
        fn landlock_abi(&self) -> i32 {
            self.calls.borrow_mut().push(Call::LandlockAbi);
            self.abi
        }

        fn enter_mount_namespace(&self) -> io::Result<()> {
            self.record(Call::EnterMountNamespace)
        }

        fn isolate_pids(&self, _made: bool) -> io::Result<()> {
            self.record(Call::IsolatePids)
        }

        fn mount_proc(&self) -> io::Result<()> {
            self.record(Call::MountProc)
        }

        fn bind_mount(&self, path: &Path) -> io::Result<()> {
            self.record(Call::BindMount(path.to_path_buf()))
        }

        fn mount_flags(&self, path: &Path) -> io::Result<StatVfsMountFlags> {
            self.record(Call::MountFlags(path.to_path_buf()))
                .map(|()| self.mount_flags)
        }

        fn remount(&self, path: &Path, flags: MountFlags) -> io::Result<()> {
            self.record(Call::Remount(path.to_path_buf(), flags))
        }

        fn set_no_new_privs(&self) -> io::Result<()> {
            self.record(Call::SetNoNewPrivs)
        }

        fn drop_capabilities(&self) -> io::Result<()> {
            self.record(Call::DropCapabilities)
        }

        fn capabilities(&self) -> io::Result<CapabilitySets> {
            self.record(Call::Capabilities).map(|()| self.capabilities)
        }

        fn landlock_restrict_self(&self, ruleset: &LandlockRuleset) -> io::Result<RulesetStatus> {
            self.record(Call::LandlockRestrictSelf(ruleset.clone()))?;
            Ok(if self.not_enforced {
                RulesetStatus::NotEnforced
            } else {
                RulesetStatus::FullyEnforced
            })
        }

        fn load_seccomp(&self, program: &BpfProgram) -> io::Result<()> {
            self.record(Call::LoadSeccomp(program.len()))
        }

        fn close_fds_above_stderr(&self) -> io::Result<()> {
            self.record(Call::CloseFdsAboveStderr)
        }

        fn exec(
            &self,
            program: &OsStr,
            args: &[OsString],
            arg0: Option<&OsStr>,
            _env: Option<&[(OsString, OsString)]>,
        ) -> io::Result<Infallible> {
            self.record(Call::Exec {
                program: program.to_owned(),
                args: args.to_vec(),
                arg0: arg0.map(OsStr::to_owned),
            })?;
            Err(io::Error::from_raw_os_error(libc::ENOEXEC))
        }
    }
}
