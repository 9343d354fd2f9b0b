//! What the server counts (`GET /metrics` on `--metrics-listen`, served by `metrics_http.rs`) and
//! the audit records of processes (tracing target [`AUDIT_TARGET`]).
//!
//! Cost: every counter and gauge is an atomic; the handles the hot paths touch (output bytes,
//! retention drops, processes by sandbox type) are made once, here, so recording takes no lock.
//! Per-method request latencies and errors sit in label families (a read lock per request, never
//! taken by the output pump). Label values come only from bounded sets: method names from the
//! method table, error codes of [`ErrorCode`], sandbox types, streams, auth-failure reasons the
//! server names itself; never a string a client sent.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::protocol::process::{SandboxType, Stream};
use crate::protocol::{ErrorCode, Method};

/// The tracing target of audit records (process start and exit; auth failures).
pub const AUDIT_TARGET: &str = "codex::audit";

/// The method label of a request whose method is not in the table.
const UNKNOWN_METHOD: &str = "(unknown)";

type Label = [(&'static str, &'static str); 1];
type ErrorLabels = ([(&'static str, &'static str); 1], [(&'static str, i64); 1]);

/// The server's counters. One per server, shared by every connection, session and process
/// (through [`super::config::ServerConfig::metrics`]).
pub struct Metrics {
    registry: Registry,
    connections_open: Gauge,
    connections: Counter,
    sessions_attached: Gauge,
    sessions_detached: Gauge,
    resumes: Counter,
    /// By [`sandbox_index`].
    processes_running: [Gauge; 2],
    processes_started: [Counter; 2],
    /// By [`stream_index`].
    output_bytes: [Counter; 3],
    retention_dropped_chunks: Counter,
    retention_dropped_bytes: Counter,
    auth_failures: Family<Label, Counter>,
    errors: Family<ErrorLabels, Counter>,
    request_seconds: Family<Label, Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The sandbox types this server can report, as label values (their wire names).
const SANDBOX_LABELS: [&str; 2] = ["none", "linuxSeccomp"];
/// The output streams, as label values (their wire names).
const STREAM_LABELS: [&str; 3] = ["stdout", "stderr", "pty"];

fn sandbox_index(sandbox: SandboxType) -> usize {
    match sandbox {
        SandboxType::None => 0,
        // The only other kind this server starts; the others are never reported here.
        _ => 1,
    }
}

fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::Pty => 2,
    }
}

/// Request latency buckets, in seconds: 0.1 ms to 10 s, three per decade.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-4, 10f64.powf(1.0 / 3.0), 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("codex_exec_server");
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Connections open now (WebSocket or stdio, past the HTTP upgrade)",
            connections_open.clone(),
        );
        let connections = Counter::default();
        registry.register(
            "connections",
            "Connections opened since start",
            connections.clone(),
        );
        let sessions_attached = Gauge::default();
        registry.register(
            "sessions_attached",
            "Sessions attached to a connection",
            sessions_attached.clone(),
        );
        let sessions_detached = Gauge::default();
        registry.register(
            "sessions_detached",
            "Sessions whose connection dropped, still resumable",
            sessions_detached.clone(),
        );
        let resumes = Counter::default();
        registry.register(
            "session_resumes",
            "Sessions resumed on a new connection",
            resumes.clone(),
        );
        let running = Family::<Label, Gauge>::default();
        let started = Family::<Label, Counter>::default();
        let processes_running =
            SANDBOX_LABELS.map(|s| running.get_or_create(&[("sandbox", s)]).clone());
        let processes_started =
            SANDBOX_LABELS.map(|s| started.get_or_create(&[("sandbox", s)]).clone());
        registry.register(
            "processes_running",
            "Processes running (not yet exited), by sandbox type",
            running,
        );
        registry.register(
            "processes_started",
            "Processes started, by sandbox type",
            started,
        );
        let output = Family::<Label, Counter>::default();
        let output_bytes = STREAM_LABELS.map(|s| output.get_or_create(&[("stream", s)]).clone());
        registry.register(
            "output_bytes",
            "Bytes of process output read, by stream",
            output,
        );
        let retention_dropped_chunks = Counter::default();
        registry.register(
            "retention_dropped_chunks",
            "Output chunks dropped from a process's retention budget (no longer readable)",
            retention_dropped_chunks.clone(),
        );
        let retention_dropped_bytes = Counter::default();
        registry.register(
            "retention_dropped_bytes",
            "Output bytes dropped from a process's retention budget (no longer readable)",
            retention_dropped_bytes.clone(),
        );
        let auth_failures = Family::<Label, Counter>::default();
        registry.register(
            "auth_failures",
            "Connections refused by authentication, by reason",
            auth_failures.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "request_errors",
            "Requests answered with an error, by method and JSON-RPC code",
            errors.clone(),
        );
        let request_seconds =
            Family::<Label, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let request_seconds_handle = request_seconds.clone();
        registry.register(
            "request_duration_seconds",
            "Time from a request's dispatch to its answer, by method",
            request_seconds,
        );
        Self {
            registry,
            connections_open,
            connections,
            sessions_attached,
            sessions_detached,
            resumes,
            processes_running,
            processes_started,
            output_bytes,
            retention_dropped_chunks,
            retention_dropped_bytes,
            auth_failures,
            errors,
            request_seconds: request_seconds_handle,
        }
    }

    /// The scrape: Prometheus/OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    /// A connection reached the JSON-RPC stage; it is counted out when the guard drops.
    pub(crate) fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.inc();
        self.connections_open.inc();
        ConnectionGuard(self.clone())
    }

    /// A new session, attached.
    pub(crate) fn session_created(&self) {
        self.sessions_attached.inc();
    }

    /// A detached session was resumed.
    pub(crate) fn session_resumed(&self) {
        self.resumes.inc();
        self.sessions_detached.dec();
        self.sessions_attached.inc();
    }

    /// An attached session lost its connection.
    pub(crate) fn session_detached(&self) {
        self.sessions_attached.dec();
        self.sessions_detached.inc();
    }

    /// A detached session expired.
    pub(crate) fn session_expired(&self) {
        self.sessions_detached.dec();
    }

    /// A connection refused by authentication. Must be called from the 401 path of the upgrade
    /// (one call per refused connection) with a reason from a fixed set (e.g. "missing",
    /// "malformed", "invalid", "expired"), never a string from the request.
    pub fn auth_failed(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// A request answered; `method` is `None` for a name not in the table.
    pub(crate) fn request_done(
        &self,
        method: Option<Method>,
        started: Instant,
        error: Option<ErrorCode>,
    ) {
        let name = method.map_or(UNKNOWN_METHOD, Method::name);
        if method.is_some() {
            self.request_seconds
                .get_or_create(&[("method", name)])
                .observe(started.elapsed().as_secs_f64());
        }
        if let Some(code) = error {
            self.errors
                .get_or_create(&([("method", name)], [("code", code.code())]))
                .inc();
        }
    }

    /// Bytes of output read from a process.
    pub(crate) fn output(&self, stream: Stream, bytes: usize) {
        self.output_bytes[stream_index(stream)].inc_by(bytes as u64);
    }

    /// Output dropped from a retention ring.
    pub(crate) fn retention_dropped(&self, chunks: u64, bytes: u64) {
        if chunks > 0 {
            self.retention_dropped_chunks.inc_by(chunks);
            self.retention_dropped_bytes.inc_by(bytes);
        }
    }
}

/// Counts a connection out when dropped.
pub(crate) struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

/// What the audit records of one process say about it, and its place in the process gauges.
/// Made by `process/start` (which knows the session and the program as the client named it,
/// before any sandbox wrapper); [`Self::started`] counts it in, [`Self::exited`] out.
pub(crate) struct ProcessAudit {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) session: String,
    pub(crate) process_id: String,
    /// The last component of argv[0]; never the arguments.
    pub(crate) program: String,
    pub(crate) sandbox: SandboxType,
    pub(crate) tty: bool,
    pub(crate) started: Instant,
}

/// The program name an audit record shows: the last component of `argv0`, nothing else.
pub(crate) fn program_name(argv0: &str) -> String {
    argv0.rsplit('/').next().unwrap_or(argv0).to_string()
}

fn sandbox_label(sandbox: SandboxType) -> &'static str {
    SANDBOX_LABELS[sandbox_index(sandbox)]
}

impl ProcessAudit {
    /// The child was spawned as `pid`.
    pub(crate) fn started(&self, pid: i32) {
        let i = sandbox_index(self.sandbox);
        self.metrics.processes_started[i].inc();
        self.metrics.processes_running[i].inc();
        tracing::info!(
            target: AUDIT_TARGET,
            event = "process.start",
            session = self.session.as_str(),
            process_id = self.process_id.as_str(),
            program = self.program.as_str(),
            sandbox = sandbox_label(self.sandbox),
            pid,
            tty = self.tty,
            "process started"
        );
    }

    /// The child exited (or could not be waited for: `status` is `None`).
    pub(crate) fn exited(&self, status: Option<std::process::ExitStatus>) {
        use std::os::unix::process::ExitStatusExt;
        self.metrics.processes_running[sandbox_index(self.sandbox)].dec();
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let exit_code = status.and_then(|s| s.code());
        let signal = status.and_then(|s| s.signal());
        tracing::info!(
            target: AUDIT_TARGET,
            event = "process.exit",
            session = self.session.as_str(),
            process_id = self.process_id.as_str(),
            exit_code,
            signal,
            duration_ms,
            "process exited"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_name_is_the_last_component_only() {
        assert_eq!(program_name("/usr/bin/env"), "env");
        assert_eq!(program_name("sh"), "sh");
        assert_eq!(program_name("./a/b/"), "");
    }

    #[test]
    fn scrape_has_every_family_and_counts_what_was_recorded() {
        let m = Arc::new(Metrics::new());
        let guard = m.connection_opened();
        m.session_created();
        m.session_detached();
        m.session_resumed();
        m.output(Stream::Stderr, 5);
        m.retention_dropped(2, 100);
        m.auth_failed("invalid");
        m.request_done(
            Some(Method::FsReadFile),
            Instant::now(),
            Some(ErrorCode::InvalidParams),
        );
        m.request_done(None, Instant::now(), Some(ErrorCode::MethodNotFound));
        drop(guard);
        let text = m.encode();
        for line in [
            "codex_exec_server_connections_total 1",
            "codex_exec_server_connections_open 0",
            "codex_exec_server_sessions_attached 1",
            "codex_exec_server_sessions_detached 0",
            "codex_exec_server_session_resumes_total 1",
            "codex_exec_server_output_bytes_total{stream=\"stderr\"} 5",
            "codex_exec_server_output_bytes_total{stream=\"stdout\"} 0",
            "codex_exec_server_retention_dropped_chunks_total 2",
            "codex_exec_server_retention_dropped_bytes_total 100",
            "codex_exec_server_auth_failures_total{reason=\"invalid\"} 1",
            "codex_exec_server_request_errors_total{method=\"fs/readFile\",code=\"-32602\"} 1",
            "codex_exec_server_request_errors_total{method=\"(unknown)\",code=\"-32601\"} 1",
            "codex_exec_server_request_duration_seconds_count{method=\"fs/readFile\"} 1",
            "codex_exec_server_processes_running{sandbox=\"linuxSeccomp\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
        assert!(!text.contains("request_duration_seconds_count{method=\"(unknown)\"}"));
    }
}
