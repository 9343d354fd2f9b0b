//! `codex exec-server`: its flags, and how it runs the server (process-wide start-up, the runtime,
//! the listener, shutdown on SIGTERM/SIGINT).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use crate::server::{self, Metrics, ServerConfig};

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

    /// Behave as if the kernel had no Landlock: restricting sandboxes are refused (for tests of
    /// the fail-closed path).
    #[arg(long, hide = true)]
    sandbox_simulate_no_landlock: bool,

    /// Also serve `GET /metrics` (Prometheus text: connections, sessions, processes, output
    /// bytes, errors, request latencies) and `GET /livez` on this separate address: `IP:PORT` or
    /// `http://IP:PORT` (an IP literal; port 0 picks a free one). Off by default. That port serves
    /// nothing else (404) and asks for no credentials, so bind it where only your scraper can
    /// reach it. Its bound address is printed on stderr as `metrics: http://IP:PORT/metrics`. A
    /// value that is not an IP:PORT, or an address that cannot be bound, stops the start-up.
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_listen)]
    metrics_listen: Option<SocketAddr>,

    /// Format of the log on stderr: `text` (one line per event, for people) or `json` (one JSON
    /// object per line, every field a key: for log collectors). What is logged is chosen by
    /// RUST_LOG (default `warn`; `info` adds the audit records of target `codex::audit`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Parses `--metrics-listen`: `IP:PORT` or `http://IP:PORT`.
pub fn parse_metrics_listen(s: &str) -> Result<SocketAddr, String> {
    let rest = s.strip_prefix("http://").unwrap_or(s);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.parse::<SocketAddr>().map_err(|_| {
        format!(
            "invalid metrics address `{s}`: expected `IP:PORT` or `http://IP:PORT` (an IP \
             literal, v4 or v6, e.g. 127.0.0.1:9464 or http://[::1]:9464)"
        )
    })
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
    let config = ServerConfig {
        detached_session_ttl: Duration::from_millis(args.detached_session_ttl_ms),
        closed_process_ttl: Duration::from_millis(args.closed_process_ttl_ms),
        terminate_grace: Duration::from_millis(args.terminate_grace_ms),
        retained_output_bytes: args.retained_output_bytes,
        sandbox_no_mount_namespace: args.sandbox_no_mount_namespace,
        sandbox_simulate_no_landlock: args.sandbox_simulate_no_landlock,
        ping_interval: Duration::from_millis(args.ping_interval_ms),
        reap_orphans: true,
        metrics: Arc::new(Metrics::new()),
    };
    let metrics = config.metrics.clone();
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
        if let Some(addr) = args.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("failed to bind --metrics-listen {addr}: {e}"),
                )
            })?;
            let local = listener.local_addr()?;
            eprintln!("metrics: http://{local}/metrics");
            tracing::info!(%local, "metrics listening");
            tokio::spawn(server::serve_metrics(listener, metrics));
        }
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
    fn metrics_listen_takes_ip_port_with_or_without_http() {
        let addr: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        assert_eq!(parse_metrics_listen("127.0.0.1:9464"), Ok(addr));
        assert_eq!(parse_metrics_listen("http://127.0.0.1:9464/"), Ok(addr));
        assert_eq!(
            parse_metrics_listen("http://[::1]:0"),
            Ok("[::1]:0".parse().unwrap())
        );
        for bad in [
            "localhost:9464",
            "https://127.0.0.1:1",
            "127.0.0.1",
            "",
            "ws://1.2.3.4:5",
        ] {
            let err = parse_metrics_listen(bad).unwrap_err();
            assert!(err.contains("IP:PORT"), "{bad}: {err}");
        }
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
