//! What the server can enforce, probed once at start; how a sandboxed `process/start` is wrapped;
//! and where a sandboxed `fs/*` call runs (in-process or in the `codex-fs` helper). Wrapping: `<aliasdir>/codex-linux-sandbox --sandbox-policy-cwd … --command-cwd …
//! --permission-profile <resolved JSON> [--arg0 …] -- <argv…>` (sandbox.md §4.1).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use super::config::{PidNamespaceMode, ServerConfig};
use super::process::spawn::SpawnSpec;
use crate::protocol::ErrorCode;
use crate::protocol::fs::{FsHelperAnswer, FsRequest, FsResponse};
use crate::protocol::process::SandboxType;
use crate::protocol::sandbox::{Access, SandboxIntent};
use crate::rpc::RpcError;
use crate::sandbox::alias::AliasDir;
use crate::sandbox::fs_helper::{GuardSpec, ServedAnswer, ServedRequest};
use crate::sandbox::policy::{self, BindContext, NetworkMode, ResolvedEntry, ResolvedPolicy};

/// The executor's sandbox capabilities.
#[derive(Debug)]
pub(crate) struct SandboxSupport {
    /// The alias links, or why they could not be made (then nothing can be wrapped).
    pub(crate) alias: Result<AliasDir, String>,
    /// The kernel's Landlock ABI (0: none, or simulated none).
    landlock_abi: i32,
    /// Pass `--no-mount-namespace` to the wrapper.
    no_mount_namespace: bool,
    /// Pass `--simulate-no-landlock` to the wrapper.
    simulate_no_landlock: bool,
    /// Read-only carve-outs use split grants (no mount namespace here, or configured so): the
    /// cost is logged once per session.
    split_grants: bool,
    /// Sandboxed processes get a PID namespace of their own (`--pid-namespace` to the wrapper);
    /// or why they cannot although the configuration demands it (then none is started).
    pid_namespace: Result<bool, String>,
}

impl SandboxSupport {
    pub(crate) fn probe(config: &ServerConfig) -> Self {
        let landlock_abi = if config.sandbox_simulate_no_landlock {
            0
        } else {
            crate::sandbox::kernel_landlock_abi()
        };
        let alias = AliasDir::create()
            .map_err(|e| format!("cannot create the helper alias directory: {e}"));
        if let Err(e) = &alias {
            tracing::warn!("{e}; sandboxed requests will be refused");
        }
        let split_grants = config.sandbox_no_mount_namespace || !mount_namespace_available(&alias);
        let pid_namespace = match config.sandbox_pid_namespace {
            PidNamespaceMode::Inherit => Ok(false),
            mode => {
                let available = probe_available(&alias, "probe-pid-namespace");
                match (available, mode) {
                    (true, _) => Ok(true),
                    (false, PidNamespaceMode::Isolate) => {
                        let why = "this machine gives no PID namespace to the sandbox (it needs \
                            root, or unprivileged user namespaces), and \
                            --linux-sandbox-pid-namespace isolate demands one";
                        tracing::warn!("{why}; sandboxed processes will be refused");
                        Err(why.to_string())
                    }
                    (false, _) => {
                        tracing::warn!(
                            "sandbox: no PID namespace can be had here (it needs root, or \
                             unprivileged user namespaces): sandboxed processes share the \
                             server's (environmentInfo.capabilities.sandboxPidNamespace is false)"
                        );
                        Ok(false)
                    }
                }
            }
        };
        Self {
            alias,
            landlock_abi,
            no_mount_namespace: config.sandbox_no_mount_namespace,
            simulate_no_landlock: config.sandbox_simulate_no_landlock,
            split_grants,
            pid_namespace,
        }
    }

    /// Why `policy` cannot be enforced here, if it cannot.
    pub(crate) fn unenforceable(&self, policy: &ResolvedPolicy) -> Option<String> {
        if let Err(e) = &self.alias {
            return Some(e.clone());
        }
        if policy.file_system.is_some() && self.landlock_abi < 1 {
            return Some("Landlock is not available on this kernel".into());
        }
        if policy.network == NetworkMode::Managed && self.landlock_abi < 4 {
            return Some(format!(
                "managed network needs Landlock ABI 4 or newer (kernel has {})",
                self.landlock_abi
            ));
        }
        None
    }

    /// The wrapper argv for running `spec` under `policy`.
    pub(crate) fn wrap(
        &self,
        policy: &ResolvedPolicy,
        mut spec: SpawnSpec,
    ) -> Result<SpawnSpec, String> {
        let alias = self.alias.as_ref().map_err(Clone::clone)?;
        let isolate_pids = self.pid_namespace.clone()?;
        let json =
            serde_json::to_string(policy).map_err(|e| format!("cannot encode the policy: {e}"))?;
        let cwd = spec.cwd.display().to_string();
        let mut argv = vec![
            alias.linux_sandbox().display().to_string(),
            "--sandbox-policy-cwd".into(),
            cwd.clone(),
            "--command-cwd".into(),
            cwd.clone(),
            "--permission-profile".into(),
            json,
        ];
        if let Some(arg0) = spec.arg0.take() {
            argv.push("--arg0".into());
            argv.push(arg0);
        }
        if self.no_mount_namespace {
            argv.push("--no-mount-namespace".into());
        }
        if isolate_pids {
            argv.push("--pid-namespace".into());
            // The server starts it as PID 1 of a new namespace where it may (root): one process
            // fewer per sandboxed command, and one fewer between its end and `exited`.
            argv.push("--pid-namespace-made".into());
            spec.new_pid_namespace = true;
        }
        if self.simulate_no_landlock {
            argv.push("--simulate-no-landlock".into());
        }
        argv.push("--".into());
        argv.append(&mut spec.argv);
        spec.argv = argv;
        spec.env.retain(|(k, _)| k != "PWD");
        spec.env.push((OsString::from("PWD"), OsString::from(cwd)));
        spec.sandboxed = true;
        Ok(spec)
    }

    /// Whether sandboxed processes run in a PID namespace of their own.
    pub(crate) fn isolates_pids(&self) -> bool {
        self.pid_namespace == Ok(true)
    }
}

/// Asks a throwaway child whether a private mount namespace can be had here.
fn mount_namespace_available(alias: &Result<AliasDir, String>) -> bool {
    probe_available(alias, "probe-mount-namespace")
}

/// Runs `codex sandbox <probe>` in a throwaway child: whether it exits 0.
fn probe_available(alias: &Result<AliasDir, String>, probe: &str) -> bool {
    let Ok(alias) = alias else { return false };
    let mut cmd = std::process::Command::new(alias.exe());
    cmd.args(["sandbox", probe])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    super::adopted::spawn(|| cmd.spawn(), |c| Some(c.id()))
        .and_then(|mut child| child.wait())
        .is_ok_and(|s| s.success())
}

/// Applies a request's sandbox fields to `spec`: returns the spec to spawn and the
/// `sandboxType` to answer.
pub(crate) fn prepare(
    support: &SandboxSupport,
    split_cost_logged: &std::sync::atomic::AtomicBool,
    sandbox: Option<&SandboxIntent>,
    enforce_managed_network: bool,
    managed_network: Option<&serde_json::Value>,
    spec: SpawnSpec,
) -> Result<(SpawnSpec, SandboxType), RpcError> {
    let policy = match sandbox {
        None if !enforce_managed_network => return Ok((spec, SandboxType::None)),
        None => {
            // The reference ignores enforceManagedNetwork without a sandbox; we enforce it.
            let disabled: SandboxIntent = serde_json::from_value(serde_json::json!({
                "permissions": {"type": "disabled"}, "windowsSandboxLevel": "disabled"}))
            .expect("the disabled intent is well-formed");
            resolve(&disabled, &spec, enforce_managed_network, managed_network)?
        }
        Some(intent) => resolve(intent, &spec, enforce_managed_network, managed_network)?,
    };
    if policy.is_noop() {
        return Ok((spec, SandboxType::LinuxSeccomp));
    }
    if let Some(reason) = support.unenforceable(&policy) {
        return Err(RpcError::invalid_params(format!(
            "sandbox intent cannot be enforced on this executor: {reason}"
        )));
    }
    if support.split_grants
        && policy.file_system.is_some()
        && !split_cost_logged.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::warn!(
            "sandbox: no mount namespace for read-only carve-outs, using split grants: sandboxed \
             processes of this session cannot create, delete or rename entries directly in \
             directories that contain a protected path (e.g. the workspace root)"
        );
    }
    let spec = support.wrap(&policy, spec).map_err(|reason| {
        RpcError::invalid_params(format!(
            "sandbox intent cannot be enforced on this executor: {reason}"
        ))
    })?;
    Ok((spec, SandboxType::LinuxSeccomp))
}

fn resolve(
    intent: &SandboxIntent,
    spec: &SpawnSpec,
    enforce_managed_network: bool,
    managed_network: Option<&serde_json::Value>,
) -> Result<ResolvedPolicy, RpcError> {
    let ctx = BindContext {
        cwd: &spec.cwd,
        env: &spec.env,
        workspace_roots_override: None,
        enforce_managed_network,
        managed_network,
    };
    policy::resolve(intent, &ctx)
        .map_err(|e| RpcError::invalid_params(format!("failed to prepare process sandbox: {e}")))
}

/// Where an `fs/*` call runs.
pub(crate) enum FsRoute {
    /// In the server: no sandbox, or one that does not restrict this kind of call.
    InProcess,
    /// In the `codex-fs` helper under `codex-linux-sandbox`.
    Helper(Box<FsHelperPlan>),
}

/// How to run one sandboxed fs call.
pub(crate) struct FsHelperPlan {
    /// The helper's own policy: the call's grants (unsplit), network off, and if reads are
    /// restricted what the helper needs to start.
    policy: ResolvedPolicy,
    /// The carve-outs the helper enforces itself.
    guard: GuardSpec,
    /// The policy cwd, for the wrapper's `--sandbox-policy-cwd`.
    cwd: PathBuf,
    /// The helper's whole environment (the allowlist of the server's).
    env: Vec<(OsString, OsString)>,
}

impl FsHelperPlan {
    /// The caller's entries when reads are restricted (then a read is allowed where
    /// `sandbox::fs_helper::read_allowed` says); `None` when reads are not restricted.
    pub(crate) fn read_entries(&self) -> Option<&[ResolvedEntry]> {
        self.guard.read_entries.as_deref()
    }
}

/// The server variables the helper may see (sandbox.md §5).
const FS_HELPER_ENV: &[&str] = &["PATH", "TMPDIR", "TMP", "TEMP"];

/// The server's values of [`FS_HELPER_ENV`].
fn fs_helper_env() -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| FS_HELPER_ENV.iter().any(|n| k == n))
        .collect()
}

/// Decides where an fs call with `sandbox` runs (sandbox.md §5): mutations go to the helper if the
/// file system is restricted without full write; reads if reads are restricted (no full read, or a
/// deny or glob entry). Everything else runs in-process.
pub(crate) fn fs_route(
    support: &SandboxSupport,
    sandbox: Option<&SandboxIntent>,
    mutation: bool,
) -> Result<FsRoute, RpcError> {
    let Some(intent) = sandbox else {
        return Ok(FsRoute::InProcess);
    };
    if !intent.permissions.restricts_file_system() {
        return Ok(FsRoute::InProcess);
    }
    let context = intent.policy_context.clone().unwrap_or_default();
    let cwd_uri = context
        .cwd
        .as_ref()
        .or(intent.cwd.as_ref())
        .ok_or_else(|| {
            RpcError::invalid_params(
                "file system sandbox context with dynamic permissions requires cwd",
            )
        })?;
    let cwd = crate::path_uri::to_path(cwd_uri)
        .map_err(|e| RpcError::invalid_params(format!("invalid sandbox cwd: {e}")))?;
    if !mutation && reads_everything(intent, context.workspace_roots.as_deref()) {
        return Ok(FsRoute::InProcess);
    }
    let env = fs_helper_env();
    let ctx = BindContext {
        cwd: &cwd,
        env: &env,
        workspace_roots_override: context.workspace_roots.as_deref(),
        enforce_managed_network: false,
        managed_network: None,
    };
    let policy = policy::resolve(intent, &ctx).map_err(|e| {
        RpcError::invalid_params(format!("failed to prepare file system sandbox: {e}"))
    })?;
    let Some(entries) = policy.file_system else {
        return Ok(FsRoute::InProcess);
    };
    let full_read = entries
        .iter()
        .any(|e| e.path == Path::new("/") && e.access != Access::Deny);
    let reads_restricted = !full_read || entries.iter().any(|e| e.access == Access::Deny);
    if !mutation && !reads_restricted {
        return Ok(FsRoute::InProcess);
    }
    let writable: Vec<PathBuf> = entries
        .iter()
        .filter(|e| e.access == Access::Write)
        .map(|e| e.path.clone())
        .collect();
    let carve_outs = entries
        .iter()
        .filter(|e| e.access != Access::Write && writable.iter().any(|w| e.path.starts_with(w)))
        .map(|e| e.path.clone())
        .collect();
    let mut helper_entries = entries.clone();
    if reads_restricted {
        let alias = support.alias.as_ref().map_err(|e| fs_unenforceable(e))?;
        let extra = policy::minimal_paths()
            .into_iter()
            .chain([alias.dir().to_path_buf()])
            .chain(alias.exe().parent().map(Path::to_path_buf));
        for path in extra {
            helper_entries.push(ResolvedEntry {
                path,
                access: Access::Read,
            });
        }
    }
    let helper_policy = ResolvedPolicy {
        file_system: Some(helper_entries),
        network: NetworkMode::Restricted,
        managed_network: None,
    };
    if let Some(reason) = support.unenforceable(&helper_policy) {
        return Err(fs_unenforceable(&reason));
    }
    Ok(FsRoute::Helper(Box::new(FsHelperPlan {
        policy: helper_policy,
        guard: GuardSpec {
            writable_roots: writable,
            carve_outs,
            read_entries: reads_restricted.then_some(entries),
        },
        cwd,
        env,
    })))
}

/// Whether `intent`, bound, provably lets a read reach every path, judged from the intent alone
/// (no file system): a restricted file system with a `root` entry that reads or writes and no
/// entry that denies (no `deny`, no glob, which are always deny). Binding makes no `deny` entry of
/// others (a missing entry protects its ancestor with its own access; protected names are read),
/// and `/` is bound whatever exists, so the bound policy has full read and no deny: what
/// [`fs_route`] would run in-process, and what Landlock would allow anyway. The checks binding
/// makes without the file system (URIs, subpaths) must pass, else this says no and binding
/// answers its exact error. What it skips are refusals that protect nothing a read could reach
/// (a carve-out crossing a writable symlink).
fn reads_everything(intent: &SandboxIntent, roots_override: Option<&[String]>) -> bool {
    use crate::protocol::sandbox::{
        FileSystemPath, FileSystemPolicy, PermissionProfile, SpecialPath,
    };
    let PermissionProfile::Managed {
        file_system: FileSystemPolicy::Restricted { entries, .. },
        ..
    } = &intent.permissions
    else {
        return false;
    };
    let parses = |uri: &String| crate::path_uri::to_path(uri).is_ok();
    if intent.cwd.as_ref().is_some_and(|c| !parses(c)) {
        return false;
    }
    let roots = roots_override.unwrap_or(intent.workspace_roots.as_deref().unwrap_or_default());
    if !roots.iter().all(parses) {
        return false;
    }
    let subpath_ok = |subpath: &Option<String>| {
        subpath.as_deref().is_none_or(|s| {
            let p = Path::new(s);
            !p.is_absolute() && !p.components().any(|c| c == std::path::Component::ParentDir)
        })
    };
    let mut root_read = false;
    for entry in entries {
        if entry.access == Access::Deny {
            return false;
        }
        match &entry.path {
            FileSystemPath::GlobPattern { .. } => return false,
            FileSystemPath::Path { path } if !parses(path) => return false,
            FileSystemPath::Path { .. } => {}
            FileSystemPath::Special { value } => match value {
                SpecialPath::Root => root_read = true,
                SpecialPath::Minimal | SpecialPath::Tmpdir | SpecialPath::SlashTmp => {}
                SpecialPath::CurrentWorkingDirectory { subpath }
                | SpecialPath::ProjectRoots { subpath } => {
                    if !subpath_ok(subpath) {
                        return false;
                    }
                }
                SpecialPath::Unknown { .. } => return false,
            },
        }
    }
    root_read
}

fn fs_unenforceable(reason: &str) -> RpcError {
    RpcError::invalid_request(format!(
        "filesystem sandbox cannot be enforced on this executor: {reason}"
    ))
}

/// The `codex-fs` helper under `codex-linux-sandbox` for `request`, and its stdin line; stdout is
/// the caller's to set.
fn fs_helper_command(
    support: &SandboxSupport,
    plan: &FsHelperPlan,
    request: &FsRequest,
) -> Result<(tokio::process::Command, Vec<u8>), RpcError> {
    let mut message = serde_json::to_value(request).map_err(helper_codec)?;
    message["params"]["sandbox"] = serde_json::Value::Null;
    let input = serde_json::to_vec(&message).map_err(helper_codec)?;
    Ok((sandboxed_helper_command(support, plan, &[])?, input))
}

/// `codex-fs --guard GUARD EXTRA...` under `codex-linux-sandbox` confined by `plan`, with the
/// plan's environment only; stdin and stderr piped, stdout the caller's to set.
fn sandboxed_helper_command(
    support: &SandboxSupport,
    plan: &FsHelperPlan,
    extra: &[&str],
) -> Result<tokio::process::Command, RpcError> {
    let alias = support.alias.as_ref().map_err(|e| fs_unenforceable(e))?;
    let profile = serde_json::to_string(&plan.policy).map_err(helper_codec)?;
    let guard = serde_json::to_string(&plan.guard).map_err(helper_codec)?;
    let mut cmd = tokio::process::Command::new(alias.linux_sandbox());
    cmd.arg("--sandbox-policy-cwd").arg(&plan.cwd).args([
        "--command-cwd",
        "/",
        "--permission-profile",
        &profile,
        "--unsplit-read-carve-outs",
    ]);
    if support.simulate_no_landlock {
        cmd.arg("--simulate-no-landlock");
    }
    cmd.arg("--")
        .arg(alias.fs_helper())
        .args(["--guard", &guard])
        .args(extra)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Ok(cmd)
}

fn helper_codec(e: serde_json::Error) -> RpcError {
    RpcError::internal(format!(
        "failed to encode or decode fs sandbox helper message: {e}"
    ))
}

/// Runs the spawned helper to its end: writes `input` to its stdin (the helper reads all of it
/// before it writes; a helper that died early shows in its status, so a failed write is not an
/// error of its own) and refuses a failed exit. Returns its stdout if piped.
async fn finish_fs_helper(
    mut child: tokio::process::Child,
    input: Vec<u8>,
) -> Result<Vec<u8>, RpcError> {
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let writer = async move {
        let _ = stdin.write_all(&input).await;
        drop(stdin);
    };
    let (_, output) = tokio::join!(writer, child.wait_with_output());
    let output = output
        .map_err(|e| RpcError::internal(format!("failed to run the fs sandbox helper: {e}")))?;
    if !output.status.success() {
        return Err(RpcError::internal(format!(
            "fs sandbox helper failed with status {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(output.stdout)
}

/// The helper's answer for `expected`: its result, or its error as a JSON-RPC error.
fn helper_result(expected: &str, stdout: &[u8]) -> Result<FsResponse, RpcError> {
    let answer: FsHelperAnswer = serde_json::from_slice(stdout).map_err(helper_codec)?;
    answer_result(expected, answer)
}

/// [`helper_result`] of an answer already decoded.
fn answer_result(expected: &str, answer: FsHelperAnswer) -> Result<FsResponse, RpcError> {
    match answer {
        FsHelperAnswer::Ok(response) => {
            if response.method() != expected {
                return Err(RpcError::internal(format!(
                    "unexpected fs sandbox helper response: expected {expected}, got {}",
                    response.method()
                )));
            }
            Ok(response)
        }
        FsHelperAnswer::Error(e) => Err(RpcError::new(
            ErrorCode::from_code(e.code).unwrap_or(ErrorCode::Internal),
            e.message,
        )),
    }
}

/// Distinct policies a connection keeps a helper for; a new one beyond replaces the oldest.
const MAX_HELPER_POLICIES: usize = 4;
/// Helpers per policy: calls beyond wait for one to be free.
const HELPERS_PER_POLICY: usize = 2;
/// What is kept of a failed helper's stderr for the error.
const HELPER_STDERR_BYTES: u64 = 4096;

/// The persistent `codex-fs --serve` helpers of one connection (sandbox.md §5): at most
/// [`HELPERS_PER_POLICY`] for each of at most [`MAX_HELPER_POLICIES`] policies, each confined
/// once when it starts. They die with the connection ([`FsHelperPool::close_all`], and
/// `kill_on_drop`): their stdin closes and they are killed. A helper found dead is replaced; one
/// that dies during a call fails that call (-32603) and is replaced on the next.
#[derive(Default)]
pub(crate) struct FsHelperPool {
    /// (policy key, its helpers), oldest first. A `std` mutex: never held across an `.await`.
    policies: std::sync::Mutex<Vec<(String, Vec<Arc<HelperSlot>>)>>,
    /// The next request id.
    next_id: std::sync::atomic::AtomicU64,
}

/// One helper, or room for one. A tokio mutex: held across the request's write and the
/// answer's read, which is what keeps one exchange at a time on the helper's pipes.
#[derive(Default)]
struct HelperSlot(tokio::sync::Mutex<Option<ServingHelper>>);

/// A running `codex-fs --serve`.
struct ServingHelper {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
    /// An exchange began and did not finish (its call was dropped half-way): the pipes hold
    /// half a request or an unread answer, so the helper is not used again.
    busy: bool,
}

impl FsHelperPool {
    /// Ends every helper (the connection ended). A call in flight keeps its own until it ends.
    pub(crate) fn close_all(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Vec<Arc<HelperSlot>>)>> {
        self.policies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for `key`: a free one if any, else a new one while there is room, else the
    /// least recently handed out (the caller waits for it).
    fn slot(&self, key: &str) -> Arc<HelperSlot> {
        let mut policies = self.lock();
        let index = match policies.iter().position(|(k, _)| k == key) {
            Some(i) => i,
            None => {
                if policies.len() >= MAX_HELPER_POLICIES {
                    policies.remove(0);
                }
                policies.push((key.to_string(), Vec::new()));
                policies.len() - 1
            }
        };
        // Most recently used last.
        let entry = policies.remove(index);
        policies.push(entry);
        let slots = &mut policies.last_mut().expect("just pushed").1;
        if let Some(i) = slots.iter().position(|s| s.0.try_lock().is_ok()) {
            let slot = slots.remove(i);
            slots.push(slot.clone());
            return slot;
        }
        if slots.len() < HELPERS_PER_POLICY {
            let slot = Arc::new(HelperSlot::default());
            slots.push(slot.clone());
            return slot;
        }
        let slot = slots.remove(0);
        slots.push(slot.clone());
        slot
    }
}

/// What tells one helper's policy from another: everything it was started with, and the
/// identity (device, inode) of each existing entry path, since Landlock binds its rules to
/// inodes when the helper confines itself (a root removed and made again is another inode:
/// another helper).
fn helper_key(plan: &FsHelperPlan) -> Result<String, RpcError> {
    use std::fmt::Write as _;
    use std::os::unix::fs::MetadataExt as _;
    let mut key =
        serde_json::to_string(&(&plan.policy, &plan.guard, &plan.cwd)).map_err(helper_codec)?;
    for (k, v) in &plan.env {
        let _ = write!(key, "\0{}={}", k.to_string_lossy(), v.to_string_lossy());
    }
    for entry in plan.policy.file_system.iter().flatten() {
        match std::fs::metadata(&entry.path) {
            Ok(m) => {
                let _ = write!(key, "\0{}:{}", m.dev(), m.ino());
            }
            Err(_) => key.push_str("\0-"),
        }
    }
    Ok(key)
}

/// Starts a `codex-fs --serve` under `codex-linux-sandbox` for `plan`.
fn start_serving_helper(
    support: &SandboxSupport,
    plan: &FsHelperPlan,
) -> Result<ServingHelper, RpcError> {
    let mut cmd = sandboxed_helper_command(support, plan, &["--serve"])?;
    cmd.stdout(Stdio::piped());
    let mut child = super::adopted::spawn(|| cmd.spawn(), tokio::process::Child::id)
        .map_err(|e| RpcError::internal(format!("failed to start the fs sandbox helper: {e}")))?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    Ok(ServingHelper {
        child,
        stdin,
        stdout: tokio::io::BufReader::new(stdout),
        busy: false,
    })
}

/// The error for a helper that died: its status and the start of its stderr.
async fn helper_died(mut helper: ServingHelper) -> RpcError {
    use tokio::io::AsyncReadExt as _;
    drop(helper.stdin);
    let status = match helper.child.try_wait() {
        Ok(Some(status)) => Some(status),
        _ => {
            let _ = helper.child.start_kill();
            helper.child.wait().await.ok()
        }
    };
    let mut stderr = Vec::new();
    if let Some(err) = helper.child.stderr.take() {
        let _ = err.take(HELPER_STDERR_BYTES).read_to_end(&mut stderr).await;
    }
    let status = status.map_or_else(|| "unknown".to_string(), |s| s.to_string());
    RpcError::internal(format!(
        "fs sandbox helper failed with status {status}: {}",
        String::from_utf8_lossy(&stderr).trim()
    ))
}

/// Runs one self-contained fs call in this connection's persistent helper for `plan`: started
/// (and confined) on first use, replaced if found dead.
pub(crate) async fn run_fs_helper(
    support: &SandboxSupport,
    pool: &FsHelperPool,
    plan: &FsHelperPlan,
    request: FsRequest,
) -> Result<serde_json::Value, RpcError> {
    use tokio::io::AsyncBufReadExt as _;
    let expected = request.method();
    let key = helper_key(plan)?;
    let id = pool
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut line = {
        let mut message =
            serde_json::to_value(ServedRequest { id, request }).map_err(helper_codec)?;
        message["request"]["params"]["sandbox"] = serde_json::Value::Null;
        serde_json::to_vec(&message).map_err(helper_codec)?
    };
    line.push(b'\n');
    let slot = pool.slot(&key);
    let mut guard = slot.0.lock().await;
    // A helper that exited since its last call, or was left half-way, is replaced.
    let reusable = match guard.as_mut() {
        Some(h) => !h.busy && matches!(h.child.try_wait(), Ok(None)),
        None => false,
    };
    if !reusable {
        *guard = None;
        *guard = Some(start_serving_helper(support, plan)?);
    }
    let helper = guard.as_mut().expect("a helper was just ensured");
    helper.busy = true;
    let mut answer = Vec::new();
    let exchanged = async {
        helper.stdin.write_all(&line).await?;
        helper.stdin.flush().await?;
        helper.stdout.read_until(b'\n', &mut answer).await
    }
    .await;
    drop(line);
    match exchanged {
        Ok(n) if n > 0 && answer.ends_with(b"\n") => helper.busy = false,
        _ => {
            let dead = guard.take().expect("the helper is there");
            return Err(helper_died(dead).await);
        }
    }
    drop(guard);
    let served: ServedAnswer = serde_json::from_slice(&answer).map_err(helper_codec)?;
    if served.id != id {
        return Err(RpcError::internal(format!(
            "unexpected fs sandbox helper response: expected request {id}, got {}",
            served.id
        )));
    }
    answer_result(expected, served.answer)?
        .into_result()
        .map_err(helper_codec)
}

/// `fs/open` under a sandbox (`sandboxedFileStreaming`): the helper opens the file, within its
/// sandbox and guard, and hands the descriptor back over its stdout, a Unix socket
/// (`sandbox::fd_handoff`). The server never opens the path itself.
pub(crate) async fn open_in_fs_helper(
    support: &SandboxSupport,
    plan: &FsHelperPlan,
    request: FsRequest,
) -> Result<std::fs::File, RpcError> {
    debug_assert_eq!(request.method(), crate::protocol::method::FS_OPEN);
    let (mut cmd, input) = fs_helper_command(support, plan, &request)?;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| RpcError::internal(format!("failed to create a socket pair: {e}")))?;
    cmd.stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
    let child = super::adopted::spawn(|| cmd.spawn(), tokio::process::Child::id)
        .map_err(|e| RpcError::internal(format!("failed to start the fs sandbox helper: {e}")))?;
    // Our copy of the helper's end goes, so the read below ends when the helper does.
    drop(cmd);
    receive_opened_file(child, ours, input).await
}

/// Feeds the spawned helper `input` and takes the opened file it hands back on `ours` (the other
/// end is its stdout, which the caller no longer holds).
async fn receive_opened_file(
    child: tokio::process::Child,
    ours: std::os::unix::net::UnixStream,
    input: Vec<u8>,
) -> Result<std::fs::File, RpcError> {
    let reader =
        tokio::task::spawn_blocking(move || crate::sandbox::fd_handoff::recv_to_end_with_fd(&ours));
    let (finished, received) = tokio::join!(finish_fs_helper(child, input), reader);
    finished?;
    let (answer, fd) = received
        .map_err(|e| RpcError::internal(format!("fs sandbox helper task failed: {e}")))?
        .map_err(|e| RpcError::internal(format!("failed to read the fs sandbox helper: {e}")))?;
    helper_result(crate::protocol::method::FS_OPEN, &answer)?;
    let fd = fd.ok_or_else(|| {
        RpcError::internal("fs sandbox helper did not transfer its opened file descriptor")
    })?;
    Ok(std::fs::File::from(fd))
}

#[cfg(test)]
mod open_tests {
    use super::*;

    /// `receive_opened_file` for a stand-in helper: `sh -c SCRIPT` with the socket as stdout.
    async fn receive_from(script: &str) -> Result<std::fs::File, RpcError> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().unwrap();
        drop(cmd);
        receive_opened_file(child, ours, b"{}".to_vec()).await
    }

    #[tokio::test]
    async fn a_helper_that_dies_before_the_handoff_is_an_internal_error() {
        let err = receive_from("cat >/dev/null; printf '{\"status\":'; kill -9 $$")
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Internal);
        assert!(
            err.message
                .starts_with("fs sandbox helper failed with status signal: 9"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn an_ok_answer_without_a_descriptor_is_an_internal_error() {
        let err = receive_from(
            r#"cat >/dev/null; printf '{"status":"ok","payload":{"operation":"fs/open","response":{"handleId":"h"}}}'"#,
        )
        .await
        .unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (
                ErrorCode::Internal,
                "fs sandbox helper did not transfer its opened file descriptor"
            )
        );
    }

    #[tokio::test]
    async fn the_helper_error_answer_is_passed_on() {
        let err = receive_from(
            r#"cat >/dev/null; printf '{"status":"error","payload":{"code":-32600,"message":"Permission denied (os error 13): /x"}}'"#,
        )
        .await
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert_eq!(err.message, "Permission denied (os error 13): /x");
    }
}

#[cfg(test)]
mod route_tests {
    use super::*;

    fn intent(entries: serde_json::Value) -> SandboxIntent {
        serde_json::from_value(serde_json::json!({
            "permissions": {"type": "managed", "network": "restricted",
                            "file_system": {"type": "restricted", "entries": entries}},
            "windowsSandboxLevel": "disabled",
            "cwd": "file:///w",
            "workspaceRoots": ["file:///w"]
        }))
        .unwrap()
    }

    fn special(kind: &str, access: &str) -> serde_json::Value {
        serde_json::json!({"path": {"type": "special", "value": {"kind": kind}}, "access": access})
    }

    #[test]
    fn reads_everything_only_with_root_readable_and_nothing_denied() {
        let ws = |extra: serde_json::Value| {
            let mut e = vec![
                special("root", "read"),
                special("project_roots", "write"),
                special("slash_tmp", "write"),
                special("tmpdir", "write"),
                serde_json::json!({"path": {"type": "special",
                    "value": {"kind": "project_roots", "subpath": ".git"}},
                    "access": "read", "missing_path_behavior": "skip"}),
            ];
            if !extra.is_null() {
                e.push(extra);
            }
            intent(serde_json::Value::Array(e))
        };
        // The Codex CLI's workspace-write: every read allowed.
        assert!(reads_everything(&ws(serde_json::Value::Null), None));
        // A deny (or `none`) entry, a glob (always deny), an unknown kind: binding decides.
        assert!(!reads_everything(&ws(special("minimal", "deny")), None));
        assert!(!reads_everything(&ws(special("minimal", "none")), None));
        let glob = serde_json::json!({"path": {"type": "glob_pattern", "pattern": "**/*.env"},
                                      "access": "deny"});
        assert!(!reads_everything(&ws(glob), None));
        // No root entry: reads are restricted.
        assert!(!reads_everything(
            &intent(serde_json::json!([special("project_roots", "write")])),
            None
        ));
        // Root write counts as read.
        assert!(reads_everything(
            &intent(serde_json::json!([
                special("root", "write"),
                special("tmpdir", "read")
            ])),
            None
        ));
        // What binding would refuse without the file system is left to binding (its error).
        let bad_subpath = serde_json::json!({"path": {"type": "special",
            "value": {"kind": "project_roots", "subpath": "../x"}}, "access": "read"});
        assert!(!reads_everything(&ws(bad_subpath), None));
        let bad_path = serde_json::json!({"path": {"type": "path", "path": "file:rel"},
                                          "access": "read"});
        assert!(!reads_everything(&ws(bad_path), None));
        assert!(!reads_everything(
            &ws(serde_json::Value::Null),
            Some(&["not a uri".to_string()])
        ));
    }
}
