//! What every connection of one server shares: the session registry, the task tracker and the
//! stop signal, the environment info, what the sandbox can enforce, the reaper, the count of
//! live connections that decides when freed heap is given back, and the connection limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::ServerConfig;
use super::env_info;
use super::heap_trim::HeapTrim;
use super::metrics::Metrics;
use super::reaper::Reaper;
use super::sandboxing;
use super::session::SessionRegistry;
use crate::protocol::session::EnvironmentInfo;

/// State shared by every connection of one server.
pub(crate) struct ServerState {
    /// Every live session, attached or not.
    pub(super) sessions: Arc<SessionRegistry>,
    /// Owns every task the server spawns, so shutdown can wait for all of them.
    pub(super) tracker: TaskTracker,
    /// Fired once on shutdown; connection handlers stop between messages.
    pub(super) cancel: CancellationToken,
    /// Distinguishes connections, so a stale connection cannot detach a session a newer one holds.
    next_connection_id: AtomicU64,
    /// Computed once at start: the executor's shell, home, temp dir, version.
    environment: EnvironmentInfo,
    /// `providerId`, computed on the blocking pool from start; see [`Self::environment`].
    provider_id: env_info::ProviderId,
    /// What the sandbox can enforce here, and the helper alias links.
    pub(super) sandbox: sandboxing::SandboxSupport,
    /// Live connections, to give the heap back after a burst of them ends.
    connections: std::sync::Mutex<ConnectionCount>,
    /// Kills the groups still held if this process dies without cleaning up; dropped with the
    /// state, which ends the helper. `None` when not asked for or it could not start.
    _reaper: Option<Arc<Reaper>>,
    /// One permit per open WebSocket connection (`--max-connections`).
    connection_slots: Arc<Semaphore>,
    /// The limits every connection applies.
    pub(super) limits: Limits,
    /// What the server counts (`--metrics-listen`).
    pub(super) metrics: Arc<Metrics>,
    /// The server's cgroups, one per process, killed and removed at shutdown.
    process_cgroups: Option<Arc<super::process::cgroup::CgroupRoot>>,
    /// Gives freed heap back after a burst of frees (connections, expiries, closed records).
    heap_trim: Arc<HeapTrim>,
}

/// The limits of [`ServerConfig`] that connections apply (`docs/protocol.md`, "Limits").
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) max_http_streams_per_connection: usize,
    pub(crate) max_message_bytes: usize,
    pub(crate) request_head_timeout: std::time::Duration,
}

/// A WebSocket connection's place in `--max-connections`, given back when dropped.
pub(crate) type ConnectionSlot = tokio::sync::OwnedSemaphorePermit;

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
    pub(super) fn connection_opened(&self) {
        self.connections.lock().unwrap().opened();
    }

    /// Counts a connection out; after a burst of them has at least halved, gives the freed heap
    /// back to the kernel once the burst is over (the connection's transport tasks free their
    /// buffers just after it ends): see `heap_trim.rs`.
    pub(super) fn connection_closed(&self) {
        let trim = self.connections.lock().unwrap().closed();
        if trim {
            self.heap_trim.freed();
        }
    }
}

impl ServerState {
    pub(crate) fn new(mut config: ServerConfig) -> Arc<Self> {
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        if config.reap_orphans {
            // Before the reaper (a child too) starts.
            super::adopted::record_children();
        }
        let reaper = config.reap_orphans.then(Reaper::start).and_then(|started| {
            started
                .inspect_err(|err| {
                    tracing::warn!(%err, "cannot start the reaper: process groups will not be \
                        killed if the server is killed outright")
                })
                .ok()
                .map(Arc::new)
        });
        if config.process_cgroups && config.cgroup_root.is_none() {
            // Made once the reaper runs, and told to it at once: a server killed from here on
            // leaves no cgroup behind.
            config.cgroup_root = process_cgroups(config.cgroup_version, reaper.as_deref());
        }
        if config.reap_orphans {
            adopt_orphans(config.cgroup_root.is_none(), &tracker, &cancel);
        }
        let provider_id = env_info::ProviderId::default();
        if tokio::runtime::Handle::try_current().is_ok() {
            // Start the digest now, so the first `initialize` rarely waits for it.
            let provider_id = provider_id.clone();
            tracker.spawn(async move { provider_id.get().await });
        }
        let heap_trim = HeapTrim::new(tracker.clone(), cancel.clone());
        let sandbox = sandboxing::SandboxSupport::probe(&config);
        let mut environment = env_info::current();
        environment.capabilities.sandbox_pid_namespace = sandbox.isolates_pids();
        let limits = Limits {
            max_connections: config.max_connections,
            max_http_streams_per_connection: config.max_http_streams_per_connection,
            max_message_bytes: config.max_message_bytes,
            request_head_timeout: config.request_head_timeout,
        };
        let connection_slots = Arc::new(Semaphore::new(
            config.max_connections.min(Semaphore::MAX_PERMITS),
        ));
        Arc::new(Self {
            connection_slots,
            limits,
            metrics: config.metrics.clone(),
            sessions: SessionRegistry::new(
                config.clone(),
                tracker.clone(),
                cancel.clone(),
                reaper.clone(),
                heap_trim.clone(),
            ),
            heap_trim,
            _reaper: reaper,
            tracker,
            cancel,
            next_connection_id: AtomicU64::new(1),
            environment,
            provider_id,
            sandbox,
            connections: Default::default(),
            process_cgroups: config.cgroup_root.clone(),
        })
    }

    /// `environmentInfo`, with `providerId` once it is known (waits for the digest).
    pub(super) async fn environment(&self) -> EnvironmentInfo {
        let mut info = self.environment.clone();
        info.provider_id = self.provider_id.get().await;
        info
    }

    /// A place for one more WebSocket connection, or the body of the 503 that refuses it.
    pub(super) fn connection_slot(&self) -> Result<ConnectionSlot, String> {
        self.connection_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                format!(
                    "too many connections: the limit is {} (--max-connections); retry when one has \
                 closed\n",
                    self.limits.max_connections
                )
            })
    }

    pub(super) fn connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Stops everything: connections end, every managed process group is killed.
    pub(super) async fn shutdown(&self) {
        self.cancel.cancel();
        self.sessions.kill_all();
        let killed = super::adopted::kill_all();
        if killed > 0 {
            tracing::debug!(killed, "killed the orphans the server had adopted");
        }
        self.tracker.close();
        // Connection readers blocked on a silent peer are not waited for forever.
        let _ = tokio::time::timeout(Duration::from_secs(3), self.tracker.wait()).await;
        if let Some(cgroups) = self.process_cgroups.clone() {
            // Every process's tree was sent SIGKILL above; what is left now goes too.
            let _ = tokio::task::spawn_blocking(move || {
                cgroups.remove_all(Duration::from_secs(2));
            })
            .await;
        }
    }
}

/// Makes the server adopt orphans where needed ([`super::adopted`]): as PID 1, and as a
/// subreaper when `subreaper` (no cgroups); reaps them on each SIGCHLD until `cancel`.
fn adopt_orphans(subreaper: bool, tracker: &TaskTracker, cancel: &CancellationToken) {
    match super::adopted::start(subreaper) {
        Ok(true) => {}
        Ok(false) => return,
        Err(err) => {
            tracing::warn!(%err, "cannot adopt orphans: those of processes escape to init (or, \
                as PID 1, stay zombies)");
            return;
        }
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let cancel = cancel.clone();
    tracker.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut exits = match signal(SignalKind::child()) {
            Ok(exits) => exits,
            Err(err) => {
                tracing::warn!(%err, "cannot watch SIGCHLD: adopted orphans are not reaped");
                return;
            }
        };
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                got = exits.recv() => {
                    if got.is_none() {
                        return;
                    }
                    let reaped = tokio::task::spawn_blocking(super::adopted::reap)
                        .await
                        .unwrap_or(0);
                    if reaped > 0 {
                        tracing::debug!(reaped, "reaped orphans the server had adopted");
                    }
                }
            }
        }
    });
}

/// The server's cgroup sub-hierarchy (told to `reaper`), or `None` where none can be made here,
/// said once.
fn process_cgroups(
    version: Option<super::process::cgroup::CgroupVersion>,
    reaper: Option<&Reaper>,
) -> Option<Arc<super::process::cgroup::CgroupRoot>> {
    let root = super::process::cgroup::CgroupRoot::create(version)
        .inspect(|root| {
            tracing::debug!(cgroup = %root.dir().display(), version = %root.version(),
                "each process gets a cgroup of its own");
        })
        .inspect_err(|err| {
            tracing::warn!(%err, "cannot make cgroups for processes: descendants that leave a \
                process's group (setsid, daemons) are not killed with it (--no-process-cgroups \
                silences this)")
        })
        .ok()?;
    if let Some(reaper) = reaper {
        reaper.watch_cgroup(root.dir());
    }
    Some(Arc::new(root))
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
