//! `codex exec-server`: its flags, and how it runs the server (process-wide start-up, the runtime,
//! the listener, shutdown on SIGTERM/SIGINT).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use crate::server::{self, PidNamespaceMode, ServerConfig};

/// `codex exec-server` arguments.
#[derive(Debug, clap::Args)]
pub struct ExecServerArgs {
    /// Where to listen: `ws://IP:PORT` (an IP literal, v4 or v6; port 0 picks a free one) or
    /// `stdio` / `stdio://` (one connection over stdin/stdout, newline-delimited JSON).
    #[arg(long, default_value = "ws://127.0.0.1:0", value_parser = parse_listen)]
    listen: Listen,

    /// How long a session whose connection dropped stays resumable, in milliseconds; then its
    /// processes are killed.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    detached_session_ttl_ms: u64,

    /// How long a process stays readable after it closed, in milliseconds; then its id is free.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    closed_process_ttl_ms: u64,

    /// Grace between SIGTERM and SIGKILL when a process is terminated, in milliseconds.
    #[arg(long, default_value_t = 2_000, value_name = "MS")]
    terminate_grace_ms: u64,

    /// Output bytes retained per process for `process/read`; the oldest are dropped first.
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    retained_output_bytes: usize,

    /// Never use a mount namespace for read-only carve-outs (.git etc. inside writable roots):
    /// use the split-grant fallback, whose cost is that entries cannot be created or removed
    /// directly in the directories on the way down to a carve-out.
    #[arg(long)]
    sandbox_no_mount_namespace: bool,

    /// How often a WebSocket peer is pinged, in milliseconds. A peer that sends nothing, not even
    /// the pong, for two intervals is taken for gone (vanished without closing: a suspended
    /// laptop, a pulled cable): its connection ends and its session stays resumable.
    #[arg(long, default_value_t = 30_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    ping_interval_ms: u64,

    // Why half: on 2 cores, 1 thread streamed 12% faster and echoed stdin 25% sooner than 2
    // (`scripts/bench`, commit 470bad5).
    /// Threads that serve connections and relay process output [default: half the CPUs, at
    /// least 1]. The work itself is the processes' and the clients': a relay that takes every
    /// core competes with them. File operations run on their own threads regardless.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,

    /// Accepted for compatibility with the reference exec-server, where 1 (its default) handles a
    /// connection's requests one at a time and N >= 2 up to N at once. This server always handles
    /// a connection's requests concurrently (up to 256 in flight, each in its own task, so a
    /// long-polling `process/read` delays nothing), whatever N is. 0 is refused.
    #[arg(long, value_name = "COUNT", default_value = "1")]
    concurrent_requests: std::num::NonZeroUsize,

    /// Whether a sandboxed process gets a PID namespace of its own, where it sees (in its own
    /// /proc) and can signal only its own descendants, and where whatever it leaves running is
    /// killed when it exits. `isolate`: always, and the server refuses to start where the machine
    /// cannot give one (it needs root, or unprivileged user namespaces; a container started
    /// without CAP_SYS_ADMIN has neither). `inherit`: never; the sandbox's Landlock scope still
    /// keeps the process from signalling anything outside it. Left out: isolate where possible,
    /// else share the server's (said in the log, and as
    /// `environmentInfo.capabilities.sandboxPidNamespace: false`).
    /// The supervisor left outside the namespace passes no signal on: signal the process group,
    /// as the server does (SIGKILL to the supervisor alone ends everything too).
    #[arg(long, value_name = "MODE", value_enum)]
    linux_sandbox_pid_namespace: Option<PidNamespaceArg>,

    /// Behave as if the kernel had no Landlock: restricting sandboxes are refused (for tests of
    /// the fail-closed path).
    #[arg(long, hide = true)]
    sandbox_simulate_no_landlock: bool,

    /// Open WebSocket connections at most [default: a quarter of the open-file limit (`ulimit
    /// -n`), at most 4096: 256 for the usual 1024, as each connection holds two descriptors and
    /// the rest go to processes and files]. One more is answered `503 Service Unavailable` with a
    /// text body naming this flag, before the upgrade; `/readyz` is answered whatever the count.
    /// A connection's place is free again once it has closed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,

    /// Sessions at most, detached ones included (they hold processes for
    /// --detached-session-ttl-ms) [default: twice --max-connections]. One more is refused at
    /// `initialize` with error -32600 naming this flag; resuming an existing session never is.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_sessions: Option<u32>,

    /// Processes one session may hold: starting, running, and finished but still retained for
    /// `process/read` (for --closed-process-ttl-ms after they close). One more `process/start`
    /// is refused with error -32600 naming this flag; other sessions are unaffected.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_processes_per_session: u32,

    /// Streamed `http/request`s (`streamResponse: true`) active at once on one connection, from
    /// the request to the last body delta. One more is refused with error -32600 naming this
    /// flag. Buffered requests are bounded by the 256 requests a connection may have in flight.
    #[arg(long, value_name = "N", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_http_streams_per_connection: u32,

    /// Largest message the server reads, in bytes (a WebSocket message, or a stdio line), from
    /// 2097152 (2 MiB: a 1 MiB `fs/writeBlock` chunk must fit) to 1073741824 (1 GiB). A larger
    /// message is answered with an error with id -1 (code -32600, `message too large: the limit
    /// is N bytes`), then the connection is closed; its session stays resumable. The largest
    /// `fs/writeFile` (and `codex remote cp` upload) is about three quarters of it.
    #[arg(long, value_name = "BYTES", default_value_t = crate::rpc::MAX_MESSAGE_BYTES,
          value_parser = parse_max_message_bytes)]
    max_message_bytes: usize,
}

/// Parses `--max-message-bytes`: a byte count between the floor and the ceiling.
fn parse_max_message_bytes(s: &str) -> Result<usize, String> {
    use crate::server::{MAX_MAX_MESSAGE_BYTES, MIN_MAX_MESSAGE_BYTES};
    let n: usize = s
        .parse()
        .map_err(|e| format!("expected a number of bytes: {e}"))?;
    if !(MIN_MAX_MESSAGE_BYTES..=MAX_MAX_MESSAGE_BYTES).contains(&n) {
        return Err(format!(
            "{n} is not in {MIN_MAX_MESSAGE_BYTES}..={MAX_MAX_MESSAGE_BYTES} (below 2 MiB a 1 MiB \
             fs/writeBlock chunk would not fit in one message)"
        ));
    }
    Ok(n)
}

/// Values of `--linux-sandbox-pid-namespace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PidNamespaceArg {
    /// A PID namespace for every sandboxed process, or no start.
    Isolate,
    /// The server's PID namespace.
    Inherit,
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Ws(SocketAddr),
    Stdio,
}

/// Parses `--listen`.
pub fn parse_listen(s: &str) -> Result<Listen, String> {
    if s == "stdio" || s == "stdio://" {
        return Ok(Listen::Stdio);
    }
    let expected = "expected `ws://IP:PORT` (an IP literal, v4 or v6, e.g. ws://127.0.0.1:0 or ws://[::1]:8080) or `stdio`";
    let Some(rest) = s.strip_prefix("ws://") else {
        return Err(format!("unsupported listen URL `{s}`: {expected}"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.parse::<SocketAddr>()
        .map(Listen::Ws)
        .map_err(|_| format!("invalid listen address `{s}`: {expected}"))
}

/// Runs `codex exec-server`.
pub fn run(args: ExecServerArgs) -> ExitCode {
    // Accepted, not used: requests are always served concurrently (see its --help).
    let _ = args.concurrent_requests;
    if let Err(err) = crate::server::sys::keep_inherited_fds_from_children() {
        // Not fatal: sandboxed children close every fd above stderr themselves.
        tracing::warn!(%err, "could not mark inherited descriptors close-on-exec");
    }
    let max_connections = args
        .max_connections
        .map_or_else(server::default_max_connections, |n| n as usize);
    let config = ServerConfig {
        detached_session_ttl: Duration::from_millis(args.detached_session_ttl_ms),
        closed_process_ttl: Duration::from_millis(args.closed_process_ttl_ms),
        terminate_grace: Duration::from_millis(args.terminate_grace_ms),
        retained_output_bytes: args.retained_output_bytes,
        sandbox_no_mount_namespace: args.sandbox_no_mount_namespace,
        sandbox_simulate_no_landlock: args.sandbox_simulate_no_landlock,
        ping_interval: Duration::from_millis(args.ping_interval_ms),
        reap_orphans: true,
        sandbox_pid_namespace: match args.linux_sandbox_pid_namespace {
            None => PidNamespaceMode::IsolateWherePossible,
            Some(PidNamespaceArg::Isolate) => PidNamespaceMode::Isolate,
            Some(PidNamespaceArg::Inherit) => PidNamespaceMode::Inherit,
        },
        max_connections,
        max_sessions: args
            .max_sessions
            .map_or(max_connections.saturating_mul(2), |n| n as usize),
        max_processes_per_session: args.max_processes_per_session as usize,
        max_http_streams_per_connection: args.max_http_streams_per_connection as usize,
        max_message_bytes: args.max_message_bytes,
    };
    if config.sandbox_pid_namespace == PidNamespaceMode::Isolate && !pid_namespace_available() {
        eprintln!(
            "codex exec-server: --linux-sandbox-pid-namespace isolate: this machine cannot give \
             sandboxed processes a PID namespace of their own (it needs root, or unprivileged \
             user namespaces); use `inherit`, or leave the flag out to isolate where possible"
        );
        return ExitCode::FAILURE;
    }
    let workers = args.worker_threads.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("codex exec-server: failed to start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.listen {
            Listen::Stdio => server::run_stdio(config, shutdown_signal()).await,
            Listen::Ws(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                    std::io::Error::new(e.kind(), format!("failed to bind {addr}: {e}"))
                })?;
                let local = listener.local_addr()?;
                {
                    use std::io::Write;
                    let mut stdout = std::io::stdout().lock();
                    writeln!(stdout, "ws://{local}")?;
                    stdout.flush()?;
                }
                tracing::info!(%local, "listening");
                server::run_ws(listener, config, shutdown_signal()).await
            }
        }
    });
    // stdin's blocking reader thread must not keep the process alive.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("codex exec-server: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Whether a PID namespace can be had here, asked of a throwaway child (this executable's
/// hidden `sandbox probe-pid-namespace`).
fn pid_namespace_available() -> bool {
    std::env::current_exe().is_ok_and(|exe| {
        std::process::Command::new(exe)
            .args(["sandbox", "probe-pid-namespace"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_accepts_ip_literals_and_stdio() {
        assert_eq!(parse_listen("stdio"), Ok(Listen::Stdio));
        assert_eq!(parse_listen("stdio://"), Ok(Listen::Stdio));
        assert_eq!(
            parse_listen("ws://127.0.0.1:0"),
            Ok(Listen::Ws("127.0.0.1:0".parse().unwrap()))
        );
        assert_eq!(
            parse_listen("ws://[::1]:80"),
            Ok(Listen::Ws("[::1]:80".parse().unwrap()))
        );
    }

    #[test]
    fn listen_refuses_host_names_and_other_schemes() {
        assert!(
            parse_listen("ws://localhost:80")
                .unwrap_err()
                .contains("ws://IP:PORT")
        );
        assert!(
            parse_listen("http://127.0.0.1:80")
                .unwrap_err()
                .contains("stdio")
        );
        assert!(parse_listen("ws://127.0.0.1").is_err());
    }
}
