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
    init_logging();
    match cli.command {
        Command::ExecServer(args) => exec_server::run(args),
        Command::Remote(args) => remote::run(args),
        Command::Sandbox(command) => sandbox::run(command),
        Command::ReapProcessGroups => reap_process_groups::run(),
    }
}

/// Logs to stderr, at `warn` unless `RUST_LOG` says otherwise.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // tungstenite's client traces the whole upgrade request, `Authorization: Bearer` included:
    // never below debug there, whatever RUST_LOG says.
    let filter = match "tungstenite::handshake::client=debug".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn command_tree_is_consistent() {
        // Catches conflicting flags, bad defaults and misplaced positionals in every subcommand,
        // which clap would otherwise only report when that subcommand is run.
        Cli::command().debug_assert();
    }
}
