//! The exec-server: a listener that spawns one handler task per connection, a registry of
//! sessions that outlive their connections, and the processes each session owns.
//!
//! Shutdown: a [`CancellationToken`] says stop; every task the server starts is spawned on one
//! [`TaskTracker`], so [`run_ws`] and [`run_stdio`] return only after every connection task has
//! ended and every managed process group has been killed.

mod connection;
mod env_info;
pub mod env_policy;
mod fs;
mod handlers;
mod http;
pub mod process;
pub mod reaper;
mod sandboxing;
mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::protocol::session::EnvironmentInfo;
use session::SessionRegistry;

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
        }
    }
}

/// State shared by every connection of one server.
pub(crate) struct ServerState {
    /// Every live session, attached or not.
    sessions: Arc<SessionRegistry>,
    /// Owns every task the server spawns, so shutdown can wait for all of them.
    tracker: TaskTracker,
    /// Fired once on shutdown; connection handlers stop between messages.
    cancel: CancellationToken,
    /// Distinguishes connections, so a stale connection cannot detach a session a newer one holds.
    next_connection_id: AtomicU64,
    /// Computed once at start: the executor's shell, home, temp dir, version.
    environment: EnvironmentInfo,
    /// What the sandbox can enforce here, and the helper alias links.
    sandbox: sandboxing::SandboxSupport,
    /// Live connections, to give the heap back after a burst of them ends.
    connections: std::sync::Mutex<ConnectionCount>,
}

/// Live connections, and the most there were since the heap was last given back.
#[derive(Default)]
struct ConnectionCount {
    live: usize,
    peak: usize,
}

/// A burst this large that has at least halved is worth giving the freed heap back for.
const HEAP_TRIM_PEAK: usize = 64;

impl ConnectionCount {
    fn opened(&mut self) {
        self.live += 1;
        self.peak = self.peak.max(self.live);
    }

    /// True when this close is the one after which to give the heap back: a burst of at least
    /// [`HEAP_TRIM_PEAK`] has at least halved since the last time.
    fn closed(&mut self) -> bool {
        self.live -= 1;
        let trim = self.peak >= HEAP_TRIM_PEAK && self.live * 2 <= self.peak;
        if trim {
            self.peak = self.live;
        }
        trim
    }
}

impl ServerState {
    /// Counts a connection in.
    fn connection_opened(&self) {
        self.connections.lock().unwrap().opened();
    }

    /// Counts a connection out; after a burst of them has at least halved, gives the freed heap
    /// back to the kernel, off the async threads and a moment later (the connection's transport
    /// tasks free their buffers just after it ends).
    fn connection_closed(&self) {
        let trim = self.connections.lock().unwrap().closed();
        if trim {
            self.tracker.spawn(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = tokio::task::spawn_blocking(process::release_free_heap).await;
            });
        }
    }
}

impl ServerState {
    fn new(config: ServerConfig) -> Arc<Self> {
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        Arc::new(Self {
            sessions: SessionRegistry::new(config.clone(), tracker.clone(), cancel.clone()),
            tracker,
            cancel,
            next_connection_id: AtomicU64::new(1),
            environment: env_info::current(),
            sandbox: sandboxing::SandboxSupport::probe(&config),
            connections: Default::default(),
        })
    }

    fn connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Stops everything: connections end, every managed process group is killed.
    async fn shutdown(&self) {
        self.cancel.cancel();
        self.sessions.kill_all();
        self.tracker.close();
        // Connection readers blocked on a silent peer are not waited for forever.
        let _ = tokio::time::timeout(Duration::from_secs(3), self.tracker.wait()).await;
    }
}

/// Serves WebSocket connections on a bound listener until `shutdown` completes.
pub async fn run_ws(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let ping = config.ping_interval;
    let state = ServerState::new(config);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(err) => {
                        // EMFILE and friends: keep serving the connections we have.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state2 = state.clone();
                state.tracker.spawn(async move {
                    tracing::debug!(%peer, "connection");
                    state2.connection_opened();
                    if let Some(transport) = http::accept(stream, &state2.tracker, ping).await {
                        connection::serve(transport, state2.clone()).await;
                    }
                    state2.connection_closed();
                });
            }
        }
    }
    drop(listener);
    state.shutdown().await;
    Ok(())
}

/// Serves exactly one connection over stdin/stdout; returns when it ends or on `shutdown`.
pub async fn run_stdio(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let state = ServerState::new(config);
    let transport =
        crate::rpc::stdio::spawn(tokio::io::stdin(), tokio::io::stdout(), &state.tracker);
    tokio::select! {
        _ = shutdown => {}
        _ = connection::serve(transport, state.clone()) => {}
    }
    state.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_is_given_back_once_per_halved_burst_and_never_for_a_few_connections() {
        let mut count = ConnectionCount::default();
        // A few connections coming and going: never.
        for _ in 0..10 {
            count.opened();
            assert!(!count.closed());
        }
        // A burst of 100: once, when it has halved; not again on the way down to 25.
        for _ in 0..100 {
            count.opened();
        }
        let trims: Vec<usize> = (0..75)
            .filter_map(|_| count.closed().then_some(count.live))
            .collect();
        assert_eq!(trims, [50]);
        // A second burst from 25 to 125: once more, at 62.
        for _ in 0..100 {
            count.opened();
        }
        let trims: Vec<usize> = (0..125)
            .filter_map(|_| count.closed().then_some(count.live))
            .collect();
        assert_eq!(trims, [62]);
    }
}
