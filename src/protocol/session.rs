//! Handshake and environment types: `initialize`, `environment/info`.

use serde::{Deserialize, Serialize};

/// `initialize` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeParams {
    pub client_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_session_id: Option<String>,
}

/// `initialize` result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeResult {
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_info: Option<EnvironmentInfo>,
}

/// The shell the executor would use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShellInfo {
    pub name: String,
    pub path: String,
}

/// What the executor machine looks like; also the answer of `environment/info`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentInfo {
    pub shell: ShellInfo,
    pub cwd: String,
    pub user_home_dir: String,
    pub platform_os: String,
    pub temp_dir: String,
    pub executor_version: String,
    /// An opaque build identity: `sha256:` + the hex digest of the executable; absent when
    /// unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Directories of helper programs the executor ships, to put first on a child's PATH.
    #[serde(default)]
    pub prepend_path_dirs: Vec<String>,
    /// `TMPDIR` when set and non-empty (relative: against the server's cwd), else empty.
    #[serde(default)]
    pub temporary_directories: Vec<String>,
    #[serde(default)]
    pub capabilities: Capabilities,
}

/// What the executor supports beyond the core, as the reference 0.169.0 names it (every flag
/// `false` when absent). A flag is `true` only where its behaviour is built and tested
/// (docs/protocol.md, "Capabilities"); the client decides what to send by them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Capabilities {
    /// `process/start` accepts `networkProxy` and the executor runs its own proxy.
    pub network_proxy_launch: bool,
    /// The proxy config may carry `reviewDomains` (asked of the client).
    pub network_proxy_review_domains: bool,
    /// The proxy may run the command with dummy credentials and re-inject the real ones.
    pub credential_masking: bool,
    /// The proxy config may carry `credentialProviders`.
    pub credential_masking_custom_providers: bool,
    /// `capabilityRoots/discoverV1` honours each root's `sandbox`.
    pub capability_discovery_sandbox: bool,
    /// `fs/watchMissing` / `fs/missingChanged`.
    pub fs_watch_missing: bool,
    /// `capabilities/discoverV2`.
    pub capability_discovery_v2: bool,
    /// `environmentConfig/read`.
    pub environment_config_read: bool,
    /// `http/request` headers may carry `valueEnvVar`.
    pub http_header_env_vars: bool,
    /// `fs/getMetadata`, `fs/open` + `fs/readBlock`/`fs/writeBlock` under a platform sandbox.
    pub sandboxed_file_streaming: bool,
    /// `fs/open` with `mode: "replace"` and `fs/writeBlock`.
    pub file_write_streaming: bool,
    /// `process/start.shellSnapshot` is honoured.
    pub shell_snapshot_v2: bool,
    /// Windows only: the MXC sandbox backend.
    pub windows_mxc: bool,
    /// The Linux sandbox keeps the standard devices usable when `/` is writable.
    pub linux_root_write_preserves_devices: bool,
    /// Approved root writes keep the devices and denied root-metadata symlink targets denied.
    pub linux_approved_root_write_preserves_restrictions: bool,
    /// Ours (not the reference's): sandboxed processes run in a PID namespace of their own
    /// (`codex exec-server --linux-sandbox-pid-namespace`).
    pub sandbox_pid_namespace: bool,
    // ----- issue 14, part "procx" (ours).
    /// `process/start.ptySize` and `process/resize`.
    pub pty_resize: bool,
    /// `process/closeStdin`.
    pub stdin_close: bool,
    /// `process/signal` takes `terminate`, `kill`, `hangup`, `quit`, `user1`, `user2` too.
    pub process_signals: bool,
    /// `process/start.timeoutMs` and `timedOut`.
    pub process_timeout: bool,
    /// `process/list`.
    pub process_list: bool,
    // ----- issue 14, part "gaps" (ours).
    /// `process/read` answers `gap`, `exitedSeq` and `closedSeq`.
    pub read_gaps: bool,
    // ----- issue 14: watches (ours).
    /// `fs/watch`, `fs/unwatch` and `fs/changed`.
    pub fs_watch: bool,
    // ----- issue 15, part "flow" (ours).
    /// `process/ack`: output the client has not acknowledged is never dropped while the
    /// session lives.
    pub output_ack: bool,
}
