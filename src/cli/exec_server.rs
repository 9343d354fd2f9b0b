//! `codex exec-server`: its flags, and how it runs the server (process-wide start-up, the runtime,
//! the listener, shutdown on SIGTERM/SIGINT).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::server::{
    self, AuthFlags, AuthMode, Authenticator, Door, PidNamespaceMode, ServerConfig, TlsServer,
};
use std::sync::Arc;

use crate::server::Metrics;
use crate::server::process::cgroup::{CgroupRoot, CgroupVersion};

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

    /// Whether a sandboxed process gets a PID namespace of its own, where it can signal only its
    /// own descendants (and see only them in /proc, where its carve-outs use a mount namespace),
    /// and where whatever it leaves running is killed when it exits. `isolate`: always, and the server refuses to start where the machine
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

    // ----- Authentication and TLS (docs/protocol.md, "Authentication and TLS"; README, "Security")
    /// Require every WebSocket upgrade to carry `Authorization: Bearer TOKEN` [default: none,
    /// allowed only on a loopback --listen]. `capability-token`: TOKEN is a shared secret given by
    /// --ws-token-file or --ws-token-sha256. `signed-bearer-token`: TOKEN is an HS256 JWT signed
    /// with --ws-shared-secret-file, with `exp` required. A refused upgrade gets HTTP 401 before
    /// any JSON-RPC. Not with `--listen stdio`. SIGHUP re-reads the token or secret file.
    #[arg(long, value_enum, value_name = "MODE")]
    ws_auth: Option<WsAuth>,

    /// The capability token, in a file (surrounding whitespace trimmed; a relative path is
    /// taken from the working directory). Read at start and on SIGHUP; only its SHA-256 is kept.
    /// An empty or unreadable file stops the start (or, on SIGHUP, keeps the old token).
    #[arg(long, value_name = "PATH")]
    ws_token_file: Option<PathBuf>,

    /// The capability token given by its SHA-256 digest, 64 hex digits (instead of
    /// --ws-token-file), e.g. from `printf %s TOKEN | sha256sum`. Anything else stops the start.
    #[arg(long, value_name = "HEX")]
    ws_token_sha256: Option<String>,

    /// The HS256 secret of `signed-bearer-token`, in a file (trimmed; at least 32 bytes, or the
    /// start is refused). Read at start and on SIGHUP.
    #[arg(long, value_name = "PATH")]
    ws_shared_secret_file: Option<PathBuf>,

    /// With `signed-bearer-token`: the JWT's `iss` must equal this [default: not checked].
    #[arg(long, value_name = "ISSUER")]
    ws_issuer: Option<String>,

    /// With `signed-bearer-token`: the JWT's `aud` (a string, or a list) must contain this
    /// [default: not checked].
    #[arg(long, value_name = "AUDIENCE")]
    ws_audience: Option<String>,

    /// With `signed-bearer-token`: how far the clocks may disagree when `exp` and `nbf` are
    /// checked, in seconds [default: 30].
    #[arg(long, value_name = "SECONDS")]
    ws_max_clock_skew_seconds: Option<u64>,

    /// Listen on a non-loopback address without --ws-auth. WARNING: anyone who can reach the
    /// port can then run any command as this user and read or write any file it can. Without
    /// this flag such a --listen is refused at start [default: refused].
    #[arg(long)]
    allow_unauthenticated_non_loopback: bool,

    /// Serve `wss://` (TLS 1.2 or 1.3) with this certificate chain, a PEM file (leaf first);
    /// needs --tls-key. Re-read with the key on SIGHUP (a pair that does not load keeps the old
    /// one). The printed URL then starts with `wss://` [default: plain `ws://`].
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert, a PEM file (PKCS#8, PKCS#1 or SEC1); needs --tls-cert. A
    /// key that does not match the certificate stops the start.
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,

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

    /// How long a new connection may take to complete its TLS handshake, and then to send its
    /// whole HTTP request head, in milliseconds each. A peer too slow (or silent) is answered
    /// `408 Request Timeout` and closed, so idle sockets cannot pile up before the
    /// --max-connections check.
    #[arg(long, default_value_t = 10_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    request_head_timeout_ms: u64,

    /// Do not give each process a cgroup of its own. By default, where cgroup v2 is mounted and
    /// the server may write under its own cgroup (root, or a delegated subtree), each process and
    /// all its descendants live in `<the server's cgroup>/codex-exec-server.PID/pN`, so that
    /// `process/terminate`, session expiry and the server's exit (even by SIGKILL) also kill
    /// descendants that left the process group (`setsid`, daemons). Where no cgroup can be made
    /// the server runs without, and says so once at start. With this flag, or without cgroups:
    /// process groups, plus the descendants /proc still ties to a process; an orphan whose
    /// parent already exited (`setsid -f`, a double fork) then survives. A pipe child is
    /// created in its cgroup (`clone3`), at little cost; a terminal child, or any child where the
    /// kernel refuses `clone3` or on cgroup v1, moves itself in, which costs an RCU grace period
    /// (1.5 to 3 ms per spawn on a busy 2-core machine): use this flag if that matters more.
    #[arg(long)]
    no_process_cgroups: bool,
    /// Which cgroup version holds the processes' cgroups: `v2` (the unified hierarchy) or `v1`
    /// (a hierarchy of the `freezer` or `pids` controller, for machines that mount no cgroup v2
    /// the server may write to). Given, the server refuses to start if it cannot make its
    /// cgroups there. Left out: v2 where it can, else v1, else none (said once at start).
    #[arg(long, value_name = "VERSION", conflicts_with = "no_process_cgroups")]
    process_cgroups: Option<CgroupVersionArg>,
    // ----- issue 15, part "flow"
    /// Process output waiting to be sent to one connection, in bytes of encoded messages, from
    /// 131072 (128 KiB) to 1073741824 (1 GiB) [default: 1048576, 1 MiB]. A client that reads
    /// slowly, or not at all, holds at most about this much of the server's memory: the
    /// processes whose output goes to it wait (they block on a full pipe) until it reads. It is
    /// also what may be in flight when a connection drops: a client that never sends
    /// `process/ack` finds it all still retained at its resume only if three quarters of it (the
    /// output that much base64 carries) fits in --retained-output-bytes, as the defaults do. A
    /// value out of range stops the start.
    #[arg(long, value_name = "BYTES", default_value_t = crate::server::DEFAULT_MAX_OUTGOING_BYTES,
          value_parser = parse_max_outgoing_bytes)]
    max_outgoing_bytes: usize,

    /// What a process of a detached session (its client's connection dropped, not yet resumed)
    /// does once its retained output (--retained-output-bytes) is full. `block` (the default):
    /// the server stops reading its output, so the process blocks on its next write and nothing
    /// is lost before the session expires (--detached-session-ttl-ms); a detached session then
    /// costs no CPU. `drop`: the server keeps reading and drops the oldest retained output, so
    /// the process never waits but a client that resumes late loses what was dropped (its
    /// `process/read` answers a `gap`).
    #[arg(long, value_enum, default_value_t = DetachedOutputArg::Block, value_name = "MODE")]
    detached_output: DetachedOutputArg,
}

/// Values of `--detached-output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DetachedOutputArg {
    /// Stop reading the process's output until the client resumes: nothing is lost.
    Block,
    /// Keep reading and drop the oldest retained output.
    Drop,
}

/// Parses `--max-outgoing-bytes`: a byte count between the floor and the ceiling.
fn parse_max_outgoing_bytes(s: &str) -> Result<usize, String> {
    use crate::server::{MAX_MAX_OUTGOING_BYTES, MIN_MAX_OUTGOING_BYTES};
    let n: usize = s
        .parse()
        .map_err(|e| format!("expected a number of bytes: {e}"))?;
    if !(MIN_MAX_OUTGOING_BYTES..=MAX_MAX_OUTGOING_BYTES).contains(&n) {
        return Err(format!(
            "{n} is not in {MIN_MAX_OUTGOING_BYTES}..={MAX_MAX_OUTGOING_BYTES} (below 128 KiB one \
             64 KiB read of output, encoded, would not fit)"
        ));
    }
    Ok(n)
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

/// Values of `--process-cgroups`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CgroupVersionArg {
    /// cgroup v1 (a `freezer` or `pids` hierarchy).
    V1,
    /// cgroup v2.
    V2,
}

/// Values of `--linux-sandbox-pid-namespace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PidNamespaceArg {
    /// A PID namespace for every sandboxed process, or no start.
    Isolate,
    /// The server's PID namespace.
    Inherit,
}

/// `--ws-auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WsAuth {
    /// A shared bearer token (--ws-token-file or --ws-token-sha256).
    CapabilityToken,
    /// An HS256 JWT signed with --ws-shared-secret-file.
    SignedBearerToken,
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

/// Checks the authentication and TLS flags against each other and the listen address, and
/// reads the token or secret and the certificate. The errors are the reference's texts where it
/// has them, and otherwise name the flag.
fn door(args: &ExecServerArgs) -> Result<Door, String> {
    let stdio = args.listen == Listen::Stdio;
    if stdio && args.ws_auth.is_some() {
        return Err("WebSocket auth requires a WebSocket listener, not stdio".into());
    }
    let auth = Authenticator::from_flags(AuthFlags {
        mode: args.ws_auth.map(|mode| match mode {
            WsAuth::CapabilityToken => AuthMode::CapabilityToken,
            WsAuth::SignedBearerToken => AuthMode::SignedBearerToken,
        }),
        token_file: args.ws_token_file.clone(),
        token_sha256: args.ws_token_sha256.clone(),
        shared_secret_file: args.ws_shared_secret_file.clone(),
        issuer: args.ws_issuer.clone(),
        audience: args.ws_audience.clone(),
        max_clock_skew_seconds: args.ws_max_clock_skew_seconds,
    })?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err("`--tls-cert` needs `--tls-key` (the certificate's private key)".into());
        }
        (None, Some(_)) => {
            return Err("`--tls-key` needs `--tls-cert` (the certificate chain)".into());
        }
        (Some(_), Some(_)) if stdio => {
            return Err(
                "`--tls-cert` and `--tls-key` require a WebSocket listener, not stdio".into(),
            );
        }
        (Some(cert), Some(key)) => Some(TlsServer::load(cert, key)?),
    };
    if let Listen::Ws(addr) = args.listen
        && !addr.ip().is_loopback()
        && auth.is_none()
    {
        if !args.allow_unauthenticated_non_loopback {
            return Err(format!(
                "refusing to start non-loopback websocket listener {addr} without auth; configure \
                 `--ws-auth capability-token` or `--ws-auth signed-bearer-token`"
            ));
        }
        tracing::warn!(
            %addr,
            "listening without authentication on a non-loopback address \
             (--allow-unauthenticated-non-loopback): anyone who reaches it runs commands as this user"
        );
    }
    Ok(Door {
        auth: auth.map(std::sync::Arc::new),
        tls: tls.map(std::sync::Arc::new),
    })
}

/// Runs `codex exec-server`.
pub fn run(args: ExecServerArgs) -> ExitCode {
    // Accepted, not used: requests are always served concurrently (see its --help).
    let _ = args.concurrent_requests;
    let door = match door(&args) {
        Ok(door) => door,
        Err(err) => {
            eprintln!("codex exec-server: {err}");
            return ExitCode::FAILURE;
        }
    };
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
        metrics: Arc::new(Metrics::new()),
        request_head_timeout: Duration::from_millis(args.request_head_timeout_ms),
        process_cgroups: !args.no_process_cgroups,
        cgroup_version: args.process_cgroups.map(|v| match v {
            CgroupVersionArg::V1 => CgroupVersion::V1,
            CgroupVersionArg::V2 => CgroupVersion::V2,
        }),
        cgroup_root: None,
        warm_sandboxes: Arc::default(),
        max_outgoing_bytes: args.max_outgoing_bytes,
        detached_output: match args.detached_output {
            DetachedOutputArg::Block => crate::server::DetachedOutput::Block,
            DetachedOutputArg::Drop => crate::server::DetachedOutput::Drop,
        },
    };
    if config.sandbox_pid_namespace == PidNamespaceMode::Isolate && !pid_namespace_available() {
        eprintln!(
            "codex exec-server: --linux-sandbox-pid-namespace isolate: this machine cannot give \
             sandboxed processes a PID namespace of their own (it needs root, or unprivileged \
             user namespaces); use `inherit`, or leave the flag out to isolate where possible"
        );
        return ExitCode::FAILURE;
    }
    if let Some(version) = config.cgroup_version
        && let Err(err) = CgroupRoot::create(Some(version))
    {
        // The probe's cgroup is removed as it is dropped; the server state makes its own.
        eprintln!(
            "codex exec-server: --process-cgroups {version}: cannot make the processes' cgroups \
             here: {err}; leave the flag out to take whichever version the machine has"
        );
        return ExitCode::FAILURE;
    }
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
                // Before the URL is printed, so a SIGHUP sent as soon as it is seen reloads
                // rather than ends the server.
                let hangups = if door.reloadable() {
                    Some(tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::hangup(),
                    )?)
                } else {
                    None
                };
                let scheme = if door.tls.is_some() { "wss" } else { "ws" };
                {
                    use std::io::Write;
                    let mut stdout = std::io::stdout().lock();
                    writeln!(stdout, "{scheme}://{local}")?;
                    stdout.flush()?;
                }
                tracing::info!(%local, scheme, auth = door.auth.is_some(), "listening");
                tokio::select! {
                    result = server::run_ws(listener, config, door.clone(), shutdown_signal()) => result,
                    never = reload_on_sighup(door, hangups) => match never {},
                }
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

/// Re-reads the door's files on every SIGHUP (off the async threads); never completes.
async fn reload_on_sighup(
    door: Door,
    hangups: Option<tokio::signal::unix::Signal>,
) -> std::convert::Infallible {
    if let Some(mut hangups) = hangups {
        while hangups.recv().await.is_some() {
            let door = door.clone();
            let _ = tokio::task::spawn_blocking(move || door.reload()).await;
        }
    }
    std::future::pending().await
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

    fn door_of(args: &[&str]) -> Result<Door, String> {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ExecServerArgs,
        }
        let parsed = <Wrapper as clap::Parser>::try_parse_from(
            std::iter::once("exec-server").chain(args.iter().copied()),
        )
        .unwrap();
        door(&parsed.args)
    }

    /// Decided before binding, so no test ever exposes a port.
    #[test]
    fn a_non_loopback_listen_needs_auth_or_the_explicit_flag() {
        let refused = "refusing to start non-loopback websocket listener 0.0.0.0:8080 without \
                       auth; configure `--ws-auth capability-token` or `--ws-auth signed-bearer-token`";
        assert_eq!(
            door_of(&["--listen", "ws://0.0.0.0:8080"]).unwrap_err(),
            refused
        );
        let door = door_of(&[
            "--listen",
            "ws://0.0.0.0:8080",
            "--allow-unauthenticated-non-loopback",
        ])
        .unwrap();
        assert!(door.auth.is_none() && !door.reloadable());
        let door = door_of(&[
            "--listen",
            "ws://[::]:8080",
            "--ws-auth",
            "capability-token",
            "--ws-token-sha256",
            &"0f".repeat(32),
        ])
        .unwrap();
        assert!(door.auth.is_some() && door.reloadable());
        for loopback in ["ws://127.0.0.1:1", "ws://127.8.9.10:1", "ws://[::1]:1"] {
            assert!(door_of(&["--listen", loopback]).is_ok(), "{loopback}");
        }
        assert!(door_of(&["--listen", "ws://10.0.0.1:1"]).is_err());
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
