//! `codex-linux-sandbox`: confine this very process, then exec the command. Single-threaded and
//! run before any async runtime exists. Order (sandbox.md §4.1): chdir → private mount namespace
//! for read-only carve-outs (when one can be had) → no_new_privs → drop every capability →
//! Landlock `restrict_self` → seccomp → close fds above 2 → exec. Any failure refuses the run:
//! `codex-linux-sandbox: <reason>` on stderr, exit 1; the command never starts unconfined.

use std::convert::Infallible;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use landlock::{
    ABI, Access as _, AccessFs, AccessNet, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};

use super::plan::{self, Layer, Rights};
use super::policy::{NetworkMode, ResolvedPolicy};
use super::{LANDLOCK_ABI, seccomp, sys};

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
    /// Behave as if the kernel had no Landlock (tests of the fail-closed path).
    #[arg(long, hide = true)]
    simulate_no_landlock: bool,
    /// Read-only carve-outs inside writable roots are left to the command (the `codex-fs`
    /// helper enforces them itself); deny carve-outs are still split.
    #[arg(long)]
    unsplit_read_carve_outs: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
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
    #[error("failed to set no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
    #[error("failed to drop capabilities: {0}")]
    Capabilities(std::io::Error),
    #[error("Landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    #[error("Landlock rule for {path}: {source}")]
    LandlockPath {
        path: PathBuf,
        source: landlock::PathFdError,
    },
    #[error("Landlock restriction was not enforced by the kernel; refusing to run")]
    NotEnforced,
    #[error("seccomp: {0}")]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("failed to load the seccomp filter: {0}")]
    SeccompLoad(#[from] seccompiler::Error),
    #[error("failed to close inherited file descriptors: {0}")]
    CloseFds(std::io::Error),
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
}

/// Whether this process can enter a private mount namespace (run in a throwaway child: it does
/// enter one). The server asks once at start, to log the split-grant fallback's cost.
pub fn probe_mount_namespace() -> bool {
    sys::enter_mount_namespace().is_ok()
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
    };
    apply(&policy, options)?;
    exec(args.command, args.arg0)
}

/// Confines the current process with `policy`. Irreversible.
pub fn apply(policy: &ResolvedPolicy, options: ApplyOptions) -> Result<(), WrapperError> {
    let abi = if options.simulate_no_landlock {
        0
    } else {
        sys::landlock_abi()
    };
    let managed = policy.network == NetworkMode::Managed;
    let plan = match &policy.file_system {
        None => None,
        Some(entries) => {
            if abi < 1 {
                return Err(WrapperError::NoLandlock);
            }
            let mut layer = Layer::Split;
            if options.unsplit_read_carve_outs {
                let mut plan = plan::build(entries, Layer::Mount);
                plan.read_only_mounts.clear();
                Some(plan)
            } else if options.allow_mount_namespace {
                let mount_plan = plan::build(entries, Layer::Mount);
                if mount_plan.read_only_mounts.is_empty() {
                    layer = Layer::Mount;
                } else {
                    let mounted = sys::enter_mount_namespace().and_then(|()| {
                        mount_plan
                            .read_only_mounts
                            .iter()
                            .try_for_each(|m| sys::bind_read_only(m))
                    });
                    match mounted {
                        Ok(()) => layer = Layer::Mount,
                        // The command's stderr is not ours to write to; the server logs the
                        // fallback once per session, `codex sandbox linux` says it itself.
                        Err(err) if options.report_fallback => eprintln!(
                            "codex sandbox linux: no mount namespace ({err}); read-only carve-outs use split grants: entries cannot be created or removed directly in pass-through directories"
                        ),
                        Err(_) => {}
                    }
                }
                if layer == Layer::Mount {
                    Some(mount_plan)
                } else {
                    Some(plan::build(entries, Layer::Split))
                }
            } else {
                Some(plan::build(entries, layer))
            }
        }
    };
    if managed && abi < 4 {
        return Err(WrapperError::NoLandlockNet(abi));
    }
    sys::set_no_new_privs().map_err(WrapperError::NoNewPrivs)?;
    sys::drop_all_capabilities().map_err(WrapperError::Capabilities)?;
    if plan.is_some() || managed {
        restrict_landlock(plan.as_ref(), policy)?;
    }
    let deny_truncate = plan.is_some() && abi < 3;
    if let Some(program) = seccomp::program(
        policy.network,
        policy.managed_network.as_ref(),
        deny_truncate,
    )? {
        seccompiler::apply_filter(&program)?;
    }
    Ok(())
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

fn restrict_landlock(
    plan: Option<&plan::Plan>,
    policy: &ResolvedPolicy,
) -> Result<(), WrapperError> {
    let abi: ABI = LANDLOCK_ABI;
    let mut ruleset = Ruleset::default();
    if plan.is_some() {
        ruleset = ruleset
            .handle_access(AccessFs::from_all(abi))?
            .scope(Scope::from_all(abi))?;
    }
    let managed = policy.managed_network.clone().unwrap_or_default();
    if policy.network == NetworkMode::Managed {
        let mut net = landlock::BitFlags::from(AccessNet::ConnectTcp);
        if !managed.allow_local_binding {
            net |= AccessNet::BindTcp;
        }
        ruleset = ruleset.handle_access(net)?;
    }
    let mut created = ruleset.create()?;
    if let Some(plan) = plan {
        for (path, rights) in &plan.rules {
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            let access = access_of(*rights, meta.is_dir());
            if access.is_empty() {
                continue;
            }
            let fd = PathFd::new(path).map_err(|source| WrapperError::LandlockPath {
                path: path.clone(),
                source,
            })?;
            created = created.add_rule(PathBeneath::new(fd, access))?;
        }
    }
    if policy.network == NetworkMode::Managed {
        for port in &managed.loopback_ports {
            created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
        }
    }
    let status = created.restrict_self()?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(WrapperError::NotEnforced);
    }
    Ok(())
}

/// Closes every fd above 2, then execs `command` (PATH lookup in the current environment).
pub fn exec(command: Vec<OsString>, arg0: Option<OsString>) -> Result<Infallible, WrapperError> {
    sys::close_fds_above_stderr().map_err(WrapperError::CloseFds)?;
    let mut parts = command.into_iter();
    let program = parts
        .next()
        .ok_or_else(|| WrapperError::Args("missing command".into()))?;
    let mut cmd = std::process::Command::new(&program);
    cmd.args(parts);
    if let Some(a) = arg0 {
        cmd.arg0(a);
    }
    let source = cmd.exec();
    Err(WrapperError::Exec {
        program: program.to_string_lossy().into_owned(),
        source,
    })
}
