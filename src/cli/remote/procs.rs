//! `codex remote ps` and `codex remote kill`: the processes of a session resumed with
//! `--session ID` (one left behind by `exec --detach`, or by a client that crashed), found with
//! `process/list` and signalled with `process/signal` / `process/terminate`.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail};

use crate::client::ExecServerClient;
use crate::protocol::process::{ProcessInfo, ProcessState, SignalName};

/// `codex remote ps`.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Print the server's `process/list` answer as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `codex remote kill`.
#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// The process id, as `ps` (or `exec --detach`) shows it.
    process_id: String,

    /// The signal, sent to the process's whole process group: INT, TERM, KILL, HUP, QUIT, USR1,
    /// USR2 (with or without SIG, any case), their numbers (2, 15, 9, 1, 3, 10, 12), or the
    /// protocol's names (interrupt, terminate, kill, hangup, quit, user1, user2). Without it:
    /// `process/terminate` (SIGTERM, then SIGKILL after the server's grace period).
    #[arg(value_parser = parse_signal)]
    signal: Option<SignalName>,
}

/// The error for a command that needs a resumed session.
fn needs_session(command: &str) -> anyhow::Error {
    anyhow!(
        "{command}: needs --session ID (a new session has no processes); `codex remote exec \
         --detach` prints the id of the session it leaves behind"
    )
}

/// Runs `ps`.
pub async fn ps(client: &ExecServerClient, resumed: bool, args: PsArgs) -> anyhow::Result<()> {
    if !resumed {
        return Err(needs_session("ps"));
    }
    let processes = list(client).await?;
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&processes)?)
    } else {
        table(&processes, now_ms())
    };
    super::stdout::print_out(&text)
}

/// Runs `kill`; an id the session does not have is an error (the server would answer it with
/// success, as the reference does).
pub async fn kill(client: &ExecServerClient, resumed: bool, args: KillArgs) -> anyhow::Result<()> {
    if !resumed {
        return Err(needs_session("kill"));
    }
    let processes = list(client).await?;
    let Some(process) = processes.iter().find(|p| p.process_id == args.process_id) else {
        bail!(
            "kill: session {} has no process `{}` (see `codex remote --session {} ps`)",
            client.session_id(),
            args.process_id,
            client.session_id()
        );
    };
    if process.state != ProcessState::Running {
        bail!(
            "kill: process `{}` has already exited (exit code {})",
            args.process_id,
            process
                .exit_code
                .map_or_else(|| "unknown".to_string(), |c| c.to_string())
        );
    }
    match args.signal {
        None => {
            client.terminate_process(&args.process_id).await?;
        }
        Some(signal) => {
            let capabilities = client
                .environment_info()
                .map(|e| e.capabilities)
                .unwrap_or_default();
            if signal != SignalName::Interrupt && !capabilities.process_signals {
                bail!("kill: the server only sends INT (it does not advertise processSignals)");
            }
            client.signal_process(&args.process_id, signal).await?;
        }
    }
    Ok(())
}

/// `process/list`, where the server has it.
async fn list(client: &ExecServerClient) -> anyhow::Result<Vec<ProcessInfo>> {
    let capabilities = client
        .environment_info()
        .map(|e| e.capabilities)
        .unwrap_or_default();
    if !capabilities.process_list {
        bail!("the server cannot list processes (it does not advertise processList)");
    }
    Ok(client.list_processes().await?)
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// The `ps` table, oldest first.
fn table(processes: &[ProcessInfo], now_ms: u64) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "PROCESS_ID".into(),
        "STATE".into(),
        "EXIT".into(),
        "PID".into(),
        "AGE".into(),
        "RETAINED".into(),
        "COMMAND".into(),
    ]];
    let mut sorted: Vec<&ProcessInfo> = processes.iter().collect();
    sorted.sort_by(|a, b| (a.started_at_ms, &a.process_id).cmp(&(b.started_at_ms, &b.process_id)));
    for p in sorted {
        let state = match p.state {
            ProcessState::Running => "running",
            ProcessState::Exited => "exited",
            ProcessState::Closed => "closed",
        };
        let tty = if p.tty { " (tty)" } else { "" };
        rows.push([
            p.process_id.clone(),
            state.into(),
            p.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
            p.pid.map_or_else(|| "-".into(), |c| c.to_string()),
            age(now_ms.saturating_sub(p.started_at_ms)),
            p.retained_bytes.to_string(),
            format!("{}{tty}", p.argv0),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// A short age: `850ms`, `42s`, `3m05s`, `2h07m`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Parses the SIGNAL argument of `kill`.
fn parse_signal(s: &str) -> Result<SignalName, String> {
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    Ok(match name {
        "INT" | "INTERRUPT" | "2" => SignalName::Interrupt,
        "TERM" | "TERMINATE" | "15" => SignalName::Terminate,
        "KILL" | "9" => SignalName::Kill,
        "HUP" | "HANGUP" | "1" => SignalName::Hangup,
        "QUIT" | "3" => SignalName::Quit,
        "USR1" | "USER1" | "10" => SignalName::User1,
        "USR2" | "USER2" | "12" => SignalName::User2,
        _ => {
            return Err(format!(
                "unknown signal `{s}`: use INT, TERM, KILL, HUP, QUIT, USR1 or USR2"
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, started_at_ms: u64, state: ProcessState) -> ProcessInfo {
        ProcessInfo {
            process_id: id.into(),
            argv0: "sleep".into(),
            state,
            exit_code: (state != ProcessState::Running).then_some(0),
            pid: (state == ProcessState::Running).then_some(4242),
            tty: false,
            started_at_ms,
            retained_bytes: 12,
            next_seq: 3,
        }
    }

    #[test]
    fn signal_names_of_every_spelling_map_to_the_protocol_names() {
        for (text, want) in [
            ("INT", SignalName::Interrupt),
            ("sigterm", SignalName::Terminate),
            ("9", SignalName::Kill),
            ("SIGHUP", SignalName::Hangup),
            ("quit", SignalName::Quit),
            ("usr1", SignalName::User1),
            ("user2", SignalName::User2),
        ] {
            assert_eq!(parse_signal(text), Ok(want), "{text}");
        }
        let err = parse_signal("SIGSEGV").unwrap_err();
        assert!(err.contains("SIGSEGV") && err.contains("USR2"), "{err}");
    }

    #[test]
    fn the_table_lists_oldest_first_with_dashes_for_what_is_unknown() {
        let now = 1_000_000;
        let text = table(
            &[
                info("b", now - 1_500, ProcessState::Exited),
                info("a", now - 200_000, ProcessState::Running),
            ],
            now,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("PROCESS_ID"), "{text}");
        assert!(
            lines[1].starts_with("a ") && lines[1].contains("3m20s"),
            "{text}"
        );
        assert!(
            lines[1].contains("4242") && lines[1].contains("running"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("b ") && lines[2].contains(" - "),
            "{text}"
        );
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(850), "850ms");
        assert_eq!(age(42_000), "42s");
        assert_eq!(age(185_000), "3m05s");
        assert_eq!(age(7_620_000), "2h07m");
    }
}
