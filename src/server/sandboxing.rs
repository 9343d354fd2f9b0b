//! What the server can enforce, probed once at start, and how a sandboxed `process/start` is
//! wrapped: `<aliasdir>/codex-linux-sandbox --sandbox-policy-cwd … --command-cwd …
//! --permission-profile <resolved JSON> [--arg0 …] -- <argv…>` (sandbox.md §4.1).

use std::ffi::OsString;

use super::ServerConfig;
use super::process::SpawnSpec;
use crate::protocol::process::SandboxType;
use crate::protocol::sandbox::SandboxIntent;
use crate::rpc::RpcError;
use crate::sandbox::alias::AliasDir;
use crate::sandbox::policy::{self, BindContext, NetworkMode, ResolvedPolicy};

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
        Self {
            alias,
            landlock_abi,
            no_mount_namespace: config.sandbox_no_mount_namespace,
            simulate_no_landlock: config.sandbox_simulate_no_landlock,
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
}

/// Applies a request's sandbox fields to `spec`: returns the spec to spawn and the
/// `sandboxType` to answer.
pub(crate) fn prepare(
    support: &SandboxSupport,
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
