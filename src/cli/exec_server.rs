//! `codex exec-server`: its flags, and how it runs the server (process-wide start-up, the runtime,
//! the listener, shutdown on SIGTERM/SIGINT).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::server::{self, AuthFlags, AuthMode, Authenticator, Door, ServerConfig, TlsServer};

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
}

/// `--ws-auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WsAuth {
    /// A shared bearer token (--ws-token-file or --ws-token-sha256).
    CapabilityToken,
    /// An HS256 JWT signed with --ws-shared-secret-file.
    SignedBearerToken,
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
    let config = ServerConfig {
        detached_session_ttl: Duration::from_millis(args.detached_session_ttl_ms),
        closed_process_ttl: Duration::from_millis(args.closed_process_ttl_ms),
        terminate_grace: Duration::from_millis(args.terminate_grace_ms),
        retained_output_bytes: args.retained_output_bytes,
        sandbox_no_mount_namespace: args.sandbox_no_mount_namespace,
        sandbox_simulate_no_landlock: args.sandbox_simulate_no_landlock,
        ping_interval: Duration::from_millis(args.ping_interval_ms),
        reap_orphans: true,
    };
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
