//! The tunables of one server: TTLs, retention, sandbox switches, keepalive.

use std::sync::Arc;
use std::time::Duration;

use super::metrics::Metrics;

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
    /// What the server counts (`--metrics-listen` serves it); shared by every clone.
    pub metrics: Arc<Metrics>,
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
            metrics: Arc::default(),
        }
    }
}
