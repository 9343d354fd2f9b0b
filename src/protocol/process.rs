//! `process/*` params, results and notifications.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sandbox::SandboxIntent;

/// Which environment the child starts from under an [`EnvPolicy`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum EnvInherit {
    #[default]
    All,
    Core,
    None,
}

/// `envPolicy`: how to build the child's environment from the server's own. On the wire it is an
/// object with `inherit` (as the reference requires: `{}` is -32602 ``missing field `inherit` ``,
/// and an array is refused, where a derived struct would take one); the other members default.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EnvPolicy {
    pub inherit: EnvInherit,
    pub ignore_default_excludes: bool,
    pub exclude: Vec<String>,
    pub set: BTreeMap<String, String>,
    pub include_only: Vec<String>,
}

/// [`EnvPolicy`] as decoded from an object: `inherit` required, the rest defaulted.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvPolicyObject {
    inherit: EnvInherit,
    #[serde(default)]
    ignore_default_excludes: bool,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    include_only: Vec<String>,
}

impl<'de> Deserialize<'de> for EnvPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> serde::de::Visitor<'de> for ObjectOnly {
            type Value = EnvPolicy;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object with `inherit`")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<EnvPolicy, A::Error> {
                let o = EnvPolicyObject::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(EnvPolicy {
                    inherit: o.inherit,
                    ignore_default_excludes: o.ignore_default_excludes,
                    exclude: o.exclude,
                    set: o.set,
                    include_only: o.include_only,
                })
            }
        }
        deserializer.deserialize_map(ObjectOnly)
    }
}

/// `process/start` params. Unknown members are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartParams {
    pub process_id: String,
    pub argv: Vec<String>,
    pub cwd: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_policy: Option<EnvPolicy>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub pipe_stdin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg0: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxIntent>,
    #[serde(default)]
    pub enforce_managed_network: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_network: Option<serde_json::Value>,
    /// Attribution for telemetry (0.169.0); parsed and otherwise ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ExecMetadata>,
    /// A shell-state snapshot to reuse (capability `shellSnapshotV2`, not advertised): its shape
    /// and limits are checked, and the command runs as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell_snapshot: Option<ShellSnapshotRequest>,
    /// An executor-local network proxy to launch (capability `networkProxyLaunch`, not
    /// advertised): one with `enabled: true` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_proxy: Option<NetworkProxyLaunch>,
    /// Ours (issue 14, `processTimeout`): SIGTERM to the group after this many ms, then SIGKILL
    /// after the terminate grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Ours (issue 14, `ptyResize`): the terminal's size at start (tty only; default 80×24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty_size: Option<PtySize>,
    /// Ours (issue 15, `outputAck`): the client acknowledges this process's output with
    /// `process/ack` from its first byte on (as if it had sent `process/ack {seq: 0}` at once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_ack: bool,
}

/// A terminal size (`process/start.ptySize`). Each member must be in
/// `1..=`[`MAX_PTY_DIMENSION`]; wider integers are taken so that the range error can name the
/// field.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PtySize {
    pub cols: u64,
    pub rows: u64,
}

/// The largest `cols` or `rows` accepted.
pub const MAX_PTY_DIMENSION: u64 = 10_000;

/// `process/start.metadata`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExecMetadata {
    /// A UUID (anything else is refused, as the reference does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<uuid::Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// `process/start.shellSnapshot`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ShellSnapshotRequest {
    pub scope_id: String,
    pub shell: ShellSnapshotShell,
}

/// The shell of a [`ShellSnapshotRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShellSnapshotShell {
    pub name: String,
    pub path: String,
}

/// `process/start.networkProxy`: the launch config (its required members as the reference
/// requires them; the rest kept as sent).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkProxyLaunch {
    pub proxy: NetworkProxyConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_metadata: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_decision_timeout_ms: Option<u64>,
}

/// The proxy of a [`NetworkProxyLaunch`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkProxyConfig {
    pub enabled: bool,
    pub enable_socks5: bool,
    pub enable_socks5_udp: bool,
    pub allow_upstream_proxy: bool,
    pub dangerously_allow_all_unix_sockets: bool,
    pub mode: NetworkProxyMode,
    pub allow_local_binding: bool,
    /// `domains`, `unixSockets`, `reviewDomains`, `credentialMasking`, `credentialProviders`.
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

/// `networkProxy.proxy.mode`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum NetworkProxyMode {
    Limited,
    Full,
}

/// The sandbox the executor applied to a started process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum SandboxType {
    None,
    LinuxSeccomp,
    MacosSeatbelt,
    WindowsRestrictedToken,
}

/// `process/start` result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartResult {
    pub process_id: String,
    pub sandbox_type: SandboxType,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum Stream {
    Stdout,
    Stderr,
    Pty,
}

/// `process/read` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadParams {
    pub process_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// One retained output chunk in a `process/read` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReadChunk {
    pub seq: u64,
    pub stream: Stream,
    /// Base64 of the bytes.
    pub chunk: String,
}

/// `process/read` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReadResult {
    pub chunks: Vec<ReadChunk>,
    pub next_seq: u64,
    pub exited: bool,
    pub exit_code: Option<i32>,
    pub closed: bool,
    pub failure: Option<String>,
    pub sandbox_denied: bool,
    /// Ours (issue 14): the process was stopped by its `timeoutMs` (absent when false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub timed_out: bool,
    /// Ours (issue 14, `readGaps`): the seqs after `afterSeq` that retention dropped before this
    /// read could return them (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<ReadGap>,
    /// Ours (`readGaps`): the seq of `process/exited`, once reaped (absent before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_seq: Option<u64>,
    /// Ours (`readGaps`): the seq of `process/closed`, once closed (absent before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_seq: Option<u64>,
}

/// An inclusive range of seqs whose output retention dropped (`process/read`'s `gap`). It may
/// span the seq of `exited` (output can follow the exit); `exitedSeq` tells it apart.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReadGap {
    pub from_seq: u64,
    pub to_seq: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `process/write` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteParams {
    pub process_id: String,
    /// Base64 of the bytes to write.
    pub chunk: String,
    pub write_id: String,
}

/// What happened to a `process/write`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum WriteStatus {
    Accepted,
    UnknownProcess,
    StdinClosed,
    Starting,
}

/// `process/write` result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteResult {
    pub status: WriteStatus,
}

/// Signals a client may send.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum SignalName {
    /// SIGINT (the reference's only one).
    Interrupt,
    /// SIGTERM (ours, issue 14, as are the rest).
    Terminate,
    /// SIGKILL.
    Kill,
    /// SIGHUP.
    Hangup,
    /// SIGQUIT.
    Quit,
    /// SIGUSR1.
    User1,
    /// SIGUSR2.
    User2,
}

/// `process/signal` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalParams {
    pub process_id: String,
    pub signal: SignalName,
}

/// `process/terminate` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminateParams {
    pub process_id: String,
}

/// `process/terminate` result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminateResult {
    pub running: bool,
}

/// `process/output` notification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OutputNotification {
    pub process_id: String,
    pub seq: u64,
    pub stream: Stream,
    pub chunk: String,
}

/// `process/exited` notification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExitedNotification {
    pub process_id: String,
    pub seq: u64,
    pub exit_code: i32,
    pub sandbox_denied: bool,
    /// Ours (issue 14): the process was stopped by its `timeoutMs` (absent when false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub timed_out: bool,
}

/// `process/closed` notification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClosedNotification {
    pub process_id: String,
    pub seq: u64,
}

/// `process/closeStdin` params (issue 14).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseStdinParams {
    pub process_id: String,
}

/// `process/resize` params (issue 14).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResizeParams {
    pub process_id: String,
    pub cols: u64,
    pub rows: u64,
}

/// `process/list` params (issue 14): none; unknown members are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListParams {}

/// Where a listed process is.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ProcessState {
    Running,
    Exited,
    Closed,
}

/// One process of `process/list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    pub process_id: String,
    /// `argv[0]` as the client sent it.
    pub argv0: String,
    pub state: ProcessState,
    /// Null while running.
    pub exit_code: Option<i32>,
    /// The child's pid (its process group's id); null once reaped.
    pub pid: Option<i32>,
    pub tty: bool,
    /// When it was started, in ms since the Unix epoch.
    pub started_at_ms: u64,
    /// Decoded bytes of output retained for `process/read`.
    pub retained_bytes: u64,
    /// The seq the next event will get.
    pub next_seq: u64,
}

/// `process/list` result (issue 14).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListResult {
    pub processes: Vec<ProcessInfo>,
}

/// `process/ack` params (issue 15): the client has processed every event of `processId` up to
/// `seq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AckParams {
    pub process_id: String,
    pub seq: u64,
    /// `false`: the client no longer follows the process (its handle is gone): its output goes
    /// back to a ring, as for a client that never acknowledges, and later acknowledgements
    /// without this field do not change that. `true`: it follows it again. Absent: it
    /// acknowledges (unless it said `false` before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub following: Option<bool>,
}
