//! `codex sandbox`: `linux`, the server's sandbox for a local command, for users and for
//! debugging policies (binds the policy here, confines this process, then execs the command); and
//! the hidden `probe-mount-namespace` the server runs once at start.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::path_uri;
use crate::protocol::sandbox::SandboxIntent;
use crate::sandbox::policy::{self, BindContext};
use crate::sandbox::wrapper::{self, ApplyOptions};

/// The subcommands of `codex sandbox`.
#[derive(Debug, clap::Subcommand)]
pub enum SandboxCommand {
    /// Run a command confined as the server confines it on Linux: files reachable only as the
    /// policy allows, network only as it allows, no way to gain privileges. Refuses to run the
    /// command unconfined if the kernel lacks what the policy needs.
    Linux(LinuxArgs),
    /// Exit 0 if a private mount namespace can be had here (the server's start-up probe).
    #[command(hide = true)]
    ProbeMountNamespace,
    /// Exit 0 if a PID namespace can be had here (the server's start-up probe).
    #[command(hide = true)]
    ProbePidNamespace,
}

/// Runs `codex sandbox ...`.
pub fn run(command: SandboxCommand) -> ExitCode {
    match command {
        SandboxCommand::Linux(args) => run_linux(args),
        SandboxCommand::ProbeMountNamespace => probe(wrapper::probe_mount_namespace()),
        SandboxCommand::ProbePidNamespace => probe(wrapper::probe_pid_namespace()),
    }
}

/// A probe's answer as the exit code.
fn probe(available: bool) -> ExitCode {
    if available {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `codex sandbox linux` arguments.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("policy_source").required(true).args(["policy", "workspace_write", "read_only"])))]
pub struct LinuxArgs {
    /// A `sandbox` object as sent on `process/start` (see docs/sandbox.md), JSON.
    #[arg(long, value_name = "JSON")]
    policy: Option<String>,
    /// The Codex CLI's workspace-write policy with DIR as the workspace: read everywhere, write in
    /// DIR, /tmp and $TMPDIR, .git/.codex/.agents/.aws read-only, no network.
    #[arg(long, value_name = "DIR")]
    workspace_write: Option<PathBuf>,
    /// Read everywhere, write nowhere, no network.
    #[arg(long)]
    read_only: bool,
    /// Never use a mount namespace for read-only carve-outs (.git etc. inside writable roots):
    /// use the split-grant fallback, whose cost is that entries cannot be created or removed
    /// directly in the directories on the way down to a carve-out.
    #[arg(long)]
    no_mount_namespace: bool,
    /// Run the command in a PID namespace of its own (with its own /proc where the policy's
    /// carve-outs use a mount namespace): it signals only its own descendants, and whatever it
    /// leaves running is killed when it exits. Refuses to run if no PID namespace can be had here.
    #[arg(long)]
    pid_namespace: bool,
    /// The command to run.
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

/// The Codex CLI 0.169.0 workspace-write intent for `roots`.
pub fn workspace_write_intent(roots: &[PathBuf]) -> SandboxIntent {
    let roots: Vec<String> = roots.iter().map(|r| path_uri::from_path(r)).collect();
    let special = |kind: &str| serde_json::json!({"type": "special", "value": {"kind": kind}});
    let protected = |name: &str| {
        serde_json::json!({
        "path": {"type": "special", "value": {"kind": "project_roots", "subpath": name}},
        "access": "read", "missing_path_behavior": "skip"})
    };
    serde_json::from_value(serde_json::json!({
        "permissions": {"type": "managed", "network": "restricted", "file_system": {"type": "restricted", "entries": [
            {"path": special("root"), "access": "read"},
            {"path": special("project_roots"), "access": "write"},
            {"path": special("slash_tmp"), "access": "write"},
            {"path": special("tmpdir"), "access": "write"},
            protected(".git"), protected(".agents"), protected(".codex"), protected(".aws"),
        ]}},
        "windowsSandboxLevel": "disabled",
        "workspaceRoots": roots,
    }))
    .expect("the workspace-write intent is well-formed")
}

/// The Codex CLI 0.169.0 read-only intent.
pub fn read_only_intent() -> SandboxIntent {
    serde_json::from_value(serde_json::json!({
        "permissions": {"type": "managed", "network": "restricted", "file_system": {"type": "restricted", "entries": [
            {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
        ]}},
        "windowsSandboxLevel": "disabled",
    }))
    .expect("the read-only intent is well-formed")
}

/// Runs `codex sandbox linux`.
fn run_linux(args: LinuxArgs) -> ExitCode {
    match run_inner(args) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("codex sandbox linux: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_inner(args: LinuxArgs) -> Result<std::convert::Infallible, String> {
    let cwd =
        std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    let intent = if let Some(json) = &args.policy {
        serde_json::from_str::<SandboxIntent>(json).map_err(|e| format!("invalid --policy: {e}"))?
    } else if let Some(dir) = &args.workspace_write {
        let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        workspace_write_intent(&[dir])
    } else {
        read_only_intent()
    };
    let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let ctx = BindContext {
        cwd: &cwd,
        env: &env,
        workspace_roots_override: None,
        enforce_managed_network: false,
        managed_network: None,
    };
    let resolved = policy::resolve(&intent, &ctx).map_err(|e| e.to_string())?;
    let options = ApplyOptions {
        allow_mount_namespace: !args.no_mount_namespace,
        report_fallback: true,
        isolate_pids: args.pid_namespace,
        ..ApplyOptions::default()
    };
    wrapper::apply(&resolved, options).map_err(|e| e.to_string())?;
    // Same as the wrapper: inherited descriptors do not cross into the sandbox.
    wrapper::exec(args.command, None).map_err(|e| e.to_string())
}
