//! The command line of the `codex` personality: the clap tree and [`main`]. Each subcommand's
//! arguments and what it does live in its own file; this one only parses and dispatches.
//!
//! - [`exec_server`]: `codex exec-server`, the server.
//! - [`remote`]: `codex remote`, the command-line client on [`crate::client`].
//! - [`sandbox`]: `codex sandbox linux` (and the server's hidden start-up probe).
//! - [`reap_process_groups`]: the hidden helper the server starts to clean up after it.

pub mod exec_server;
pub mod reap_process_groups;
pub mod remote;
pub mod sandbox;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// One binary for remote execution: the exec-server and its helpers.
#[derive(Debug, Parser)]
#[command(name = "codex", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the exec-server protocol: start processes, stream their output, take their stdin,
    /// over JSON-RPC on a WebSocket (or stdio). Prints the bound URL as one line on stdout.
    ExecServer(exec_server::ExecServerArgs),
    /// Talk to an exec-server: run a command remotely (`exec`), show it (`info`), move files
    /// (`cp`, `ls`, `stat`). Survives a dropped connection by resuming the session.
    Remote(remote::RemoteArgs),
    /// Run a local command confined by a sandbox policy, as the server confines a process
    /// started with `sandbox` (to try a policy, or to work under one).
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    /// The server's reaper helper: kills the process groups named on stdin once stdin ends.
    #[command(name = crate::server::reaper::SUBCOMMAND, hide = true)]
    ReapProcessGroups,
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::ExecServer(args) => args.log_format,
        _ => exec_server::LogFormat::Text,
    };
    init_logging(format);
    match cli.command {
        Command::ExecServer(args) => exec_server::run(args),
        Command::Remote(args) => remote::run(args),
        Command::Sandbox(command) => sandbox::run(command),
        Command::ReapProcessGroups => reap_process_groups::run(),
    }
}

/// Dependencies that log frames, headers or payloads at `debug`/`trace` (a WebSocket frame
/// carries a process's env and argv, an `fs/writeFile` body; an HTTP client logs headers): they
/// are capped at `info` unless `RUST_LOG` names them itself.
const CAPPED_CRATES: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "reqwest",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "notify",
    "mio",
    "want",
    "tower",
];

/// Whether a `RUST_LOG` value names `krate` (or one of its modules) as a directive's target.
fn names_crate(rust_log: &str, krate: &str) -> bool {
    rust_log.split(',').any(|directive| {
        let target = directive
            .split(['=', '['])
            .next()
            .unwrap_or_default()
            .trim();
        target == krate
            || target
                .strip_prefix(krate)
                .is_some_and(|rest| rest.starts_with("::"))
    })
}

/// Logs to stderr in `format`, at `warn` unless `RUST_LOG` says otherwise, with the crates of
/// [`CAPPED_CRATES`] capped at `info` unless `RUST_LOG` names them.
fn init_logging(format: exec_server::LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let rust_log = std::env::var("RUST_LOG").unwrap_or_default();
    let filter = EnvFilter::try_new(if rust_log.trim().is_empty() {
        "warn"
    } else {
        &rust_log
    })
    .unwrap_or_else(|_| EnvFilter::new("warn"));
    // A named crate gets an explicit "no cap": `Targets` matches by prefix, so `hyper_util`
    // would otherwise fall under the cap of `hyper`.
    let caps = CAPPED_CRATES.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |t, krate| {
            let cap = if names_crate(&rust_log, krate) {
                LevelFilter::TRACE
            } else {
                LevelFilter::INFO
            };
            t.with_target(*krate, cap)
        },
    );
    // tungstenite's client traces the whole upgrade request, `Authorization: Bearer` included:
    // never below debug there, even when RUST_LOG names tungstenite (the most specific wins).
    let caps = caps.with_target("tungstenite::handshake::client", LevelFilter::DEBUG);
    let layer = match format {
        exec_server::LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
        exec_server::LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter.and(caps)))
        .init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn rust_log_names_a_crate_only_by_a_directive_target() {
        use super::names_crate;
        assert!(names_crate("trace,tungstenite=trace", "tungstenite"));
        assert!(names_crate("tungstenite::protocol=debug", "tungstenite"));
        assert!(names_crate("hyper[span]=trace", "hyper"));
        assert!(!names_crate("trace", "tungstenite"));
        assert!(!names_crate("tokio_tungstenite=trace", "tungstenite"));
        assert!(!names_crate("hyper_util=trace", "hyper"));
        assert!(!names_crate("codex=trace", "h2"));
    }

    #[test]
    fn command_tree_is_consistent() {
        // Catches conflicting flags, bad defaults and misplaced positionals in every subcommand,
        // which clap would otherwise only report when that subcommand is run.
        Cli::command().debug_assert();
    }
}
