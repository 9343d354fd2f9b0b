//! The tunables of one server: TTLs, retention, sandbox switches, keepalive, limits.

use std::sync::Arc;
use std::time::Duration;

use super::metrics::Metrics;
use super::process::cgroup::{CgroupRoot, CgroupVersion};
use super::process::warm::WarmSandboxes;

/// Tunables of one server. Defaults are the protocol's; tests shorten the TTLs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How long a session whose connection dropped stays resumable before its processes die.
    pub detached_session_ttl: Duration,
    /// How long a process stays readable after `process/closed`, then its id is free again.
    pub closed_process_ttl: Duration,
    /// Grace between SIGTERM and SIGKILL in `process/terminate`.
    pub terminate_grace: Duration,
    /// Output bytes retained per process; the oldest chunks are dropped first.
    pub retained_output_bytes: usize,
    /// Carve-outs use split grants, never a mount namespace.
    pub sandbox_no_mount_namespace: bool,
    /// Act as if the kernel had no Landlock (tests of the fail-closed path).
    pub sandbox_simulate_no_landlock: bool,
    /// How often a WebSocket peer is pinged; one silent for two intervals is dropped.
    pub ping_interval: Duration,
    /// Start the reaper helper ([`super::reaper`]), so process groups die with the server even
    /// when it is killed outright. It runs this executable as `codex reap-process-groups`, so
    /// only a program that is `codex` may turn it on: off by default (a program embedding the
    /// server would be run with an argument it does not know); `codex exec-server` turns it on.
    pub reap_orphans: bool,
    /// Whether sandboxed processes get a PID namespace of their own.
    pub sandbox_pid_namespace: PidNamespaceMode,
    /// Open WebSocket connections at most; an upgrade beyond is answered 503 (`--max-connections`).
    pub max_connections: usize,
    /// Sessions at most, detached ones included; a new one beyond is refused at `initialize`.
    pub max_sessions: usize,
    /// Processes one session may hold, finished ones still retained included.
    pub max_processes_per_session: usize,
    /// Streamed `http/request` bodies active at once on one connection.
    pub max_http_streams_per_connection: usize,
    /// Largest message the server reads (a WebSocket message or a stdio line), in bytes.
    pub max_message_bytes: usize,
    /// What the server counts (`--metrics-listen` serves it); shared by every clone.
    pub metrics: Arc<Metrics>,
    /// How long a new connection may take to send its whole request head (and a TLS handshake,
    /// each); then it is answered 408 and closed, so idle sockets cannot pile up.
    pub request_head_timeout: Duration,
    /// Give each process a cgroup of its own where one can be made, so its whole tree can be
    /// killed ([`super::process::cgroup`]); `codex exec-server` turns it on unless
    /// `--no-process-cgroups`. Off: process groups only.
    pub process_cgroups: bool,
    /// The cgroup version the server's cgroups must be in (`--process-cgroups v1|v2`); `None`:
    /// v2 where it can, else v1. A start whose explicit version cannot be had is refused by the
    /// command line before the state exists.
    pub cgroup_version: Option<CgroupVersion>,
    /// The server's cgroups, made by the server state at start when `process_cgroups` is on and
    /// the machine allows it; shared by every clone, removed at shutdown.
    pub cgroup_root: Option<Arc<CgroupRoot>>,
    /// Sandbox wrappers started ahead of their command ([`super::process::warm`]), shared by
    /// every clone.
    pub warm_sandboxes: Arc<WarmSandboxes>,
    // ----- issue 15, part "flow".
    /// Encoded process output (`process/output`, `exited`, `closed`) that may wait for one
    /// connection's writer, in bytes (`--max-outgoing-bytes`): a client that stops reading holds
    /// at most this much, and the processes whose output goes to it are back-pressured.
    pub max_outgoing_bytes: usize,
    /// What a detached session's process does once its retention is full
    /// (`--detached-output`).
    pub detached_output: DetachedOutput,
}

/// `--detached-output`: what happens to a process's output while its session is detached and its
/// retention is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DetachedOutput {
    /// Stop reading its pipes: the process blocks on a full pipe, nothing is lost before the
    /// session expires, and a detached session costs no CPU.
    #[default]
    Block,
    /// Keep reading, dropping the oldest retained output (the behaviour before issue 15).
    Drop,
}

/// `--max-outgoing-bytes` unless told otherwise: 1 MiB of encoded output is 768 KiB raw, within
/// the default retention (1 MiB), so what may be in the queue when a connection drops is still
/// retained for a client that does not acknowledge.
pub const DEFAULT_MAX_OUTGOING_BYTES: usize = 1 << 20;
/// The smallest `--max-outgoing-bytes`: one 64 KiB read of output, encoded, must fit.
pub const MIN_MAX_OUTGOING_BYTES: usize = 128 << 10;
/// The largest `--max-outgoing-bytes` (a semaphore counts it in `u32` permits).
pub const MAX_MAX_OUTGOING_BYTES: usize = 1 << 30;

/// `--linux-sandbox-pid-namespace`: whether a sandboxed process runs in a PID namespace of its
/// own, where it sees and signals only its own descendants and whatever it leaves behind dies
/// with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PidNamespaceMode {
    /// Isolate where the machine allows it (root, or unprivileged user namespaces); elsewhere
    /// share the server's, said once in the log and in `environmentInfo.capabilities`.
    #[default]
    IsolateWherePossible,
    /// Isolate, or refuse every sandboxed process (the operator asked for it explicitly).
    Isolate,
    /// Share the server's PID namespace.
    Inherit,
}

/// The smallest `--max-message-bytes`: an `fs/writeBlock` of the largest chunk (1 MiB, ~1.4 MB of
/// base64) must still fit, with room for its envelope.
pub const MIN_MAX_MESSAGE_BYTES: usize = 2 << 20;
/// The largest `--max-message-bytes`: one message is held whole while it is decoded.
pub const MAX_MAX_MESSAGE_BYTES: usize = 1 << 30;
/// The cap on the default of `--max-connections` (an idle connection and its session take about
/// 50 KiB: 4096 of them, some 200 MiB).
pub const MAX_DEFAULT_CONNECTIONS: usize = 4096;
/// `--max-processes-per-session` unless told otherwise.
pub const DEFAULT_MAX_PROCESSES_PER_SESSION: usize = 256;
/// `--max-http-streams-per-connection` unless told otherwise.
pub const DEFAULT_MAX_HTTP_STREAMS_PER_CONNECTION: usize = 32;

/// The default of `--max-connections`: a quarter of the open-file limit (the soft
/// `RLIMIT_NOFILE`, `ulimit -n`), at most [`MAX_DEFAULT_CONNECTIONS`], at least 1. A WebSocket
/// connection holds two descriptors (its socket and a duplicate for TCP_QUICKACK), so a quarter
/// leaves half of the descriptors to processes' pipes, files and helpers: with the usual limit of
/// 1024, 256 connections, and the server never reaches EMFILE on connections alone.
pub fn default_max_connections() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    usize::try_from(soft / 4)
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_DEFAULT_CONNECTIONS)
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            detached_session_ttl: Duration::from_secs(30),
            closed_process_ttl: Duration::from_secs(30),
            terminate_grace: Duration::from_secs(2),
            retained_output_bytes: 1 << 20,
            sandbox_no_mount_namespace: false,
            sandbox_simulate_no_landlock: false,
            ping_interval: crate::rpc::ws::PING_INTERVAL,
            reap_orphans: false,
            sandbox_pid_namespace: PidNamespaceMode::default(),
            max_connections: default_max_connections(),
            max_sessions: 2 * default_max_connections(),
            max_processes_per_session: DEFAULT_MAX_PROCESSES_PER_SESSION,
            max_http_streams_per_connection: DEFAULT_MAX_HTTP_STREAMS_PER_CONNECTION,
            max_message_bytes: crate::rpc::MAX_MESSAGE_BYTES,
            metrics: Arc::default(),
            request_head_timeout: Duration::from_secs(10),
            process_cgroups: false,
            cgroup_version: None,
            cgroup_root: None,
            warm_sandboxes: Arc::default(),
            max_outgoing_bytes: DEFAULT_MAX_OUTGOING_BYTES,
            detached_output: DetachedOutput::Block,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_connections_are_a_quarter_of_the_open_file_limit_capped() {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let expected = (soft / 4).clamp(1, MAX_DEFAULT_CONNECTIONS as u64) as usize;
        assert_eq!(default_max_connections(), expected);
        let config = ServerConfig::default();
        assert_eq!(config.max_sessions, 2 * config.max_connections);
        assert_eq!(config.max_message_bytes, crate::rpc::MAX_MESSAGE_BYTES);
        // The floor carries the largest fs/writeBlock: 1 MiB of base64 and its envelope.
        let block_base64 = (1usize << 20).div_ceil(3) * 4;
        assert!(block_base64 + 4096 <= MIN_MAX_MESSAGE_BYTES);
    }
}
