//! `codex-linux-sandbox`: confine this very process, then exec the command. Single-threaded and
//! run before any async runtime exists. Order (sandbox.md §4.1): chdir → refuse what cannot be
//! enforced (no Landlock; managed network below ABI 4) → private mount namespace for read-only
//! carve-outs (when one can be had; else split grants) → no_new_privs → drop every capability and
//! verify → Landlock `restrict_self` → seccomp → close fds above 2 → exec. Every step goes through
//! [`Kernel`](super::sys::Kernel) (unit tests: `wrapper_tests.rs`). Any failure refuses the run:
//! `codex-linux-sandbox: <reason>` on stderr, exit 1; the command never starts unconfined.

use std::convert::Infallible;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use landlock::{Access as _, AccessFs, AccessNet, RulesetStatus};
use rustix::fs::StatVfsMountFlags;
use rustix::mount::MountFlags;

use super::plan::{self, Layer, Rights};
use super::policy::{NetworkMode, ResolvedEntry, ResolvedPolicy};
use super::sys::{Kernel, LandlockRuleset, LinuxKernel};
use super::{LANDLOCK_ABI, seccomp};

/// Command line of the wrapper (built by the server; not meant for people).
#[derive(Debug, Parser)]
#[command(
    name = "codex-linux-sandbox",
    about = "Apply a sandbox policy to this process, then exec a command"
)]
pub struct WrapperArgs {
    /// The policy's cwd (informational; paths in the profile are already absolute).
    #[arg(long)]
    sandbox_policy_cwd: Option<PathBuf>,
    /// Directory to run the command in.
    #[arg(long)]
    command_cwd: PathBuf,
    /// The resolved policy, JSON.
    #[arg(long)]
    permission_profile: String,
    /// argv[0] for the command.
    #[arg(long)]
    arg0: Option<OsString>,
    /// Never use a mount namespace; carve-outs use the split-grant layer.
    #[arg(long)]
    no_mount_namespace: bool,
    /// Run the command in a PID namespace of its own (refuse to run if none can be had).
    #[arg(long)]
    pid_namespace: bool,
    /// With --pid-namespace: the caller may have started this process as PID 1 of a new PID
    /// namespace (the server does, with clone3); if so it is that namespace's init at once.
    #[arg(long, hide = true, requires = "pid_namespace")]
    pid_namespace_made: bool,
    /// Behave as if the kernel had no Landlock (tests of the fail-closed path).
    #[arg(long, hide = true)]
    simulate_no_landlock: bool,
    /// Read-only carve-outs inside writable roots are left to the command (the `codex-fs`
    /// helper enforces them itself); deny carve-outs are still split.
    #[arg(long)]
    unsplit_read_carve_outs: bool,
    /// Read the command (argv, argv[0], environment) from this descriptor once confined,
    /// instead of the command line: the server starts a wrapper ahead of the command it will run
    /// (a warm start, `server::process::warm`). End of input without a command: exit 1 and run
    /// nothing.
    #[arg(long, hide = true, value_name = "FD", conflicts_with_all = ["command", "arg0"])]
    command_from_fd: Option<i32>,
    /// The command and its arguments.
    #[arg(last = true, required_unless_present = "command_from_fd")]
    command: Vec<OsString>,
}

/// Why the sandbox could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum WrapperError {
    #[error("invalid arguments: {0}")]
    Args(String),
    #[error("invalid permission profile: {0}")]
    Profile(#[from] serde_json::Error),
    #[error("failed to enter {path}: {source}")]
    Chdir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "Landlock is not available on this kernel; refusing to run without the file-system sandbox"
    )]
    NoLandlock,
    #[error("managed network needs Landlock ABI 4 or newer (kernel has {0}); refusing to run")]
    NoLandlockNet(i32),
    #[error("failed to enter a PID namespace of its own: {0}")]
    PidNamespace(std::io::Error),
    #[error("failed to set no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
    #[error("failed to drop capabilities: {0}")]
    Capabilities(std::io::Error),
    #[error(
        "failed to drop capabilities: Linux sandbox retained effective or permitted capabilities"
    )]
    CapabilitiesRetained,
    #[error("Landlock: {0}")]
    Landlock(std::io::Error),
    #[error("Landlock restriction was not enforced by the kernel; refusing to run")]
    NotEnforced,
    #[error("seccomp: {0}")]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("failed to load the seccomp filter: {0}")]
    SeccompLoad(std::io::Error),
    #[error("failed to close inherited file descriptors: {0}")]
    CloseFds(std::io::Error),
    #[error("no command to run came on descriptor {fd}: {why}")]
    NoCommand { fd: i32, why: String },
    #[error("failed to execute {program}: {source}")]
    Exec {
        program: String,
        source: std::io::Error,
    },
}

/// How to apply a policy.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Try a private mount namespace for read-only carve-outs.
    pub allow_mount_namespace: bool,
    /// Behave as if the kernel had no Landlock.
    pub simulate_no_landlock: bool,
    /// Leave read-only carve-outs inside writable roots to the command (the fs helper).
    pub unsplit_read_carve_outs: bool,
    /// Say on stderr when the split-grant fallback is used (the local CLI only).
    pub report_fallback: bool,
    /// Run what follows in a PID namespace of its own ([`Kernel::isolate_pids`]); a failure to
    /// get one refuses the run.
    pub isolate_pids: bool,
    /// With `isolate_pids`: the caller may have made the namespace, this process its PID 1.
    pub pid_namespace_made: bool,
}

/// Whether this process can enter a private mount namespace (run in a throwaway child: it does
/// enter one). The server asks once at start, to log the split-grant fallback's cost.
pub fn probe_mount_namespace() -> bool {
    LinuxKernel.enter_mount_namespace().is_ok()
}

/// Whether this process can enter a PID namespace (run in a throwaway child: it does enter one).
/// The server asks once at start (`--linux-sandbox-pid-namespace`).
pub fn probe_pid_namespace() -> bool {
    super::sys::probe_pid_namespace()
}

/// The wrapper's entry point (argv[0] = `codex-linux-sandbox`).
pub fn main() -> ExitCode {
    let args = match WrapperArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(1);
        }
    };
    match run(args) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("codex-linux-sandbox: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: WrapperArgs) -> Result<Infallible, WrapperError> {
    let policy: ResolvedPolicy = serde_json::from_str(&args.permission_profile)?;
    std::env::set_current_dir(&args.command_cwd).map_err(|source| WrapperError::Chdir {
        path: args.command_cwd.clone(),
        source,
    })?;
    let options = ApplyOptions {
        allow_mount_namespace: !args.no_mount_namespace,
        simulate_no_landlock: args.simulate_no_landlock,
        unsplit_read_carve_outs: args.unsplit_read_carve_outs,
        report_fallback: false,
        isolate_pids: args.pid_namespace,
        pid_namespace_made: args.pid_namespace_made,
    };
    apply(&policy, options)?;
    match args.command_from_fd {
        Some(fd) => {
            let (command, arg0, env) = read_command(fd)?;
            exec_with(&LinuxKernel, command, arg0, Some(&env))
        }
        None => exec(args.command, args.arg0),
    }
}

/// A command sent to a warm wrapper: argv, `argv[0]` if not the program, environment.
pub type SentCommand = (Vec<OsString>, Option<OsString>, Vec<(OsString, OsString)>);

/// Encodes a command for [`read_command`]: every string as its length (u32, little-endian) and
/// bytes: argc, the args, 0 or 1 and `argv[0]`, envc, each key and value.
pub fn encode_command(
    argv: &[OsString],
    arg0: Option<&OsStr>,
    env: &[(OsString, OsString)],
) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut out = Vec::new();
    let mut put = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    put(&(argv.len() as u32).to_le_bytes());
    for arg in argv {
        put(arg.as_bytes());
    }
    match arg0 {
        Some(arg0) => {
            put(&[1]);
            put(arg0.as_bytes());
        }
        None => put(&[0]),
    }
    put(&(env.len() as u32).to_le_bytes());
    for (key, value) in env {
        put(key.as_bytes());
        put(value.as_bytes());
    }
    out
}

/// Decodes [`encode_command`]'s bytes.
pub fn decode_command(bytes: &[u8]) -> Option<SentCommand> {
    use std::os::unix::ffi::OsStringExt as _;
    let mut rest = bytes;
    let mut take = || -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let field = rest.get(4..4 + len)?.to_vec();
        rest = &rest[4 + len..];
        Some(field)
    };
    let count = |field: Vec<u8>| -> Option<usize> {
        Some(u32::from_le_bytes(field.try_into().ok()?) as usize)
    };
    let argc = count(take()?)?;
    let mut argv = Vec::new();
    for _ in 0..argc {
        argv.push(OsString::from_vec(take()?));
    }
    let arg0 = match take()?.as_slice() {
        [0] => None,
        [1] => Some(OsString::from_vec(take()?)),
        _ => return None,
    };
    let envc = count(take()?)?;
    let mut env = Vec::new();
    for _ in 0..envc {
        env.push((OsString::from_vec(take()?), OsString::from_vec(take()?)));
    }
    (rest.is_empty() && !argv.is_empty()).then_some((argv, arg0, env))
}

/// Reads the command from descriptor `fd` (the server's pipe) to its end.
fn read_command(fd: i32) -> Result<SentCommand, WrapperError> {
    use std::io::Read as _;
    let no_command = |why: String| WrapperError::NoCommand { fd, why };
    let mut input = super::sys::take_fd(fd).map_err(|e| no_command(e.to_string()))?;
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| no_command(e.to_string()))?;
    if bytes.is_empty() {
        return Err(no_command("the server sent none".into()));
    }
    decode_command(&bytes).ok_or_else(|| no_command("malformed".into()))
}

/// Confines the current process with `policy`. Irreversible.
pub fn apply(policy: &ResolvedPolicy, options: ApplyOptions) -> Result<(), WrapperError> {
    apply_with(&LinuxKernel, policy, options)
}

/// [`apply`] through `kernel`, in the order of sandbox.md §4.1. Every refusal (no Landlock, an ABI
/// too old for the managed network) comes before the first call that changes anything.
pub(crate) fn apply_with(
    kernel: &impl Kernel,
    policy: &ResolvedPolicy,
    options: ApplyOptions,
) -> Result<(), WrapperError> {
    let abi = if options.simulate_no_landlock {
        0
    } else {
        kernel.landlock_abi()
    };
    let managed = policy.network == NetworkMode::Managed;
    if policy.file_system.is_some() && abi < 1 {
        return Err(WrapperError::NoLandlock);
    }
    if managed && abi < 4 {
        return Err(WrapperError::NoLandlockNet(abi));
    }
    if options.isolate_pids {
        // First: only what is forked after it is in the namespace.
        kernel
            .isolate_pids(options.pid_namespace_made)
            .map_err(WrapperError::PidNamespace)?;
    }
    let plan = policy
        .file_system
        .as_deref()
        .map(|entries| file_system_plan(kernel, entries, options));
    kernel
        .set_no_new_privs()
        .map_err(WrapperError::NoNewPrivs)?;
    kernel
        .drop_capabilities()
        .map_err(WrapperError::Capabilities)?;
    let left = kernel.capabilities().map_err(WrapperError::Capabilities)?;
    if !left.effective.is_empty() || !left.permitted.is_empty() {
        return Err(WrapperError::CapabilitiesRetained);
    }
    if plan.is_some() || managed {
        let ruleset = landlock_ruleset(plan.as_ref(), policy);
        let status = kernel
            .landlock_restrict_self(&ruleset)
            .map_err(WrapperError::Landlock)?;
        if status == RulesetStatus::NotEnforced {
            return Err(WrapperError::NotEnforced);
        }
    }
    let deny_truncate = plan.is_some() && abi < 3;
    if let Some(program) = seccomp::program(
        policy.network,
        policy.managed_network.as_ref(),
        deny_truncate,
    )? {
        kernel
            .load_seccomp(&program)
            .map_err(WrapperError::SeccompLoad)?;
    }
    Ok(())
}

/// The plan for a confined file system: the mount layer when its read-only mounts could be made
/// (or none are needed), else the split-grant layer.
fn file_system_plan(
    kernel: &impl Kernel,
    entries: &[ResolvedEntry],
    options: ApplyOptions,
) -> plan::Plan {
    if options.unsplit_read_carve_outs {
        let mut plan = plan::build(entries, Layer::Mount);
        plan.read_only_mounts.clear();
        return plan;
    }
    if !options.allow_mount_namespace {
        return plan::build(entries, Layer::Split);
    }
    let mount_plan = plan::build(entries, Layer::Mount);
    if mount_plan.read_only_mounts.is_empty() {
        return mount_plan;
    }
    let mounted = kernel.enter_mount_namespace().and_then(|()| {
        if options.isolate_pids {
            // The namespace's own /proc, now that a mount namespace is there anyway (one only for
            // it would cost a few ms a start). Best effort: it changes what the command sees,
            // not what it may do.
            let _ = kernel.mount_proc();
        }
        mount_plan
            .read_only_mounts
            .iter()
            .try_for_each(|path| bind_read_only(kernel, path))
    });
    match mounted {
        Ok(()) => mount_plan,
        Err(err) => {
            // The command's stderr is not ours to write to; the server logs the fallback once per
            // session, `codex sandbox linux` says it itself.
            if options.report_fallback {
                eprintln!(
                    "codex sandbox linux: no mount namespace ({err}); read-only carve-outs use split grants: entries cannot be created or removed directly in pass-through directories"
                );
            }
            plan::build(entries, Layer::Split)
        }
    }
}

/// Bind-mounts `path` onto itself and remounts it read-only.
fn bind_read_only(kernel: &impl Kernel, path: &Path) -> std::io::Result<()> {
    kernel.bind_mount(path)?;
    let current = kernel.mount_flags(path)?;
    kernel.remount(path, read_only_remount_flags(current))
}

/// Flags of the read-only remount of a bind mount whose file system has `current` flags: the
/// noexec and atime flags are kept, as the kernel refuses to change them when they are locked
/// (a mount inherited into a user namespace).
fn read_only_remount_flags(current: StatVfsMountFlags) -> MountFlags {
    let mut flags = MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
    for (kept, flag) in [
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ] {
        if current.contains(kept) {
            flags |= flag;
        }
    }
    flags
}

fn access_of(rights: Rights, is_dir: bool) -> landlock::BitFlags<AccessFs> {
    let abi = LANDLOCK_ABI;
    let all = match rights {
        Rights::Write => AccessFs::from_all(abi),
        Rights::Read => AccessFs::from_read(abi),
        Rights::ReadDir => AccessFs::ReadDir.into(),
    };
    if is_dir {
        all
    } else {
        all & AccessFs::from_file(abi)
    }
}

/// The Landlock ruleset for `plan` (the file system; `None`: not confined) and the policy's
/// network. Paths that no longer exist get no rule.
fn landlock_ruleset(plan: Option<&plan::Plan>, policy: &ResolvedPolicy) -> LandlockRuleset {
    let mut ruleset = LandlockRuleset::default();
    if let Some(plan) = plan {
        ruleset.handled_fs = AccessFs::from_all(LANDLOCK_ABI);
        ruleset.scoped = true;
        for (path, rights) in &plan.rules {
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            let access = access_of(*rights, meta.is_dir());
            if !access.is_empty() {
                ruleset.paths.push((path.clone(), access));
            }
        }
    }
    if policy.network == NetworkMode::Managed {
        let managed = policy.managed_network.clone().unwrap_or_default();
        ruleset.handled_net = AccessNet::ConnectTcp.into();
        if !managed.allow_local_binding {
            ruleset.handled_net |= AccessNet::BindTcp;
        }
        ruleset.connect_ports = managed.loopback_ports.clone();
    }
    ruleset
}

/// Closes every fd above 2, then execs `command` (PATH lookup in the current environment).
pub fn exec(command: Vec<OsString>, arg0: Option<OsString>) -> Result<Infallible, WrapperError> {
    exec_with(&LinuxKernel, command, arg0, None)
}

/// [`exec`] through `kernel`.
pub(crate) fn exec_with(
    kernel: &impl Kernel,
    command: Vec<OsString>,
    arg0: Option<OsString>,
    env: Option<&[(OsString, OsString)]>,
) -> Result<Infallible, WrapperError> {
    let Some((program, args)) = command.split_first() else {
        return Err(WrapperError::Args("missing command".into()));
    };
    kernel
        .close_fds_above_stderr()
        .map_err(WrapperError::CloseFds)?;
    let source = match kernel.exec(program, args, arg0.as_deref(), env) {
        Ok(never) => match never {},
        Err(source) => source,
    };
    Err(WrapperError::Exec {
        program: program.to_string_lossy().into_owned(),
        source,
    })
}

#[cfg(test)]
#[path = "wrapper_tests.rs"]
mod tests;
