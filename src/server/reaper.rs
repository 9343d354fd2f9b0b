//! The reaper: a small helper process (this binary, `codex reap-process-groups`) that outlives
//! the server only to kill what the server leaves behind when it dies without cleaning up
//! (SIGKILL, the OOM killer). The server tells it each process group it starts (`+PGID`) and
//! each it has let go of (`-PGID`), one line at a time on the helper's stdin; when that pipe
//! ends, which the kernel does for every way the server can die, the helper kills the groups it
//! still holds. On a normal shutdown the server has already killed them and the helper finds
//! nothing left.
//!
//! One [`Reaper`] per server, owned by its state: dropping it closes the pipe, which ends the
//! helper (after it kills whatever is still held: nothing, after a clean shutdown). A server that
//! could not start one (the executable gone, say) runs without, and says so.
//!
//! ```text
//!   server ──"+123\n" "-123\n"…──► reaper (own process group; ignores INT/TERM/HUP/QUIT)
//!      ╳ dies                          │ stdin EOF
//!                                      └──► SIGKILL to every group still held, exit
//! ```

use std::collections::HashSet;
use std::io::{BufRead as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::{ChildStdin, Command, ExitCode, Stdio};
use std::sync::Mutex;

/// The subcommand the helper runs as.
pub const SUBCOMMAND: &str = "reap-process-groups";

/// The server's end of the helper: the pipe it is told groups on. Dropping it closes the pipe,
/// and the helper exits.
#[derive(Debug)]
pub struct Reaper {
    /// The helper's stdin, non-blocking (a stopped helper must not stall a spawn).
    stdin: Mutex<ChildStdin>,
}

impl Reaper {
    /// Starts the helper: this executable, run as `codex reap-process-groups`.
    pub fn start() -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg(SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // Its own group: a Ctrl-C at the server's terminal must not take it along.
            .process_group(0)
            .spawn()?;
        let stdin = child.stdin.take().expect("stdin is piped");
        // A stopped helper must not stall the server: a line that does not fit is dropped.
        rustix::io::ioctl_fionbio(&stdin, true)?;
        // Never waited for: it exits when its pipe closes, and is then reaped by init.
        drop(child);
        Ok(Self {
            stdin: Mutex::new(stdin),
        })
    }

    /// Tells the helper about a group to kill if the server dies.
    pub fn watch(&self, pgid: i32) {
        self.tell(format!("+{pgid}\n"));
    }

    /// Tells the helper a group is no longer the server's.
    pub fn forget(&self, pgid: i32) {
        self.tell(format!("-{pgid}\n"));
    }

    fn tell(&self, line: String) {
        // A few bytes into a pipe the helper keeps draining: one non-blocking write, never a
        // wait. If the helper is gone (or stopped, its pipe full), there is nobody to tell.
        let _ = self.stdin.lock().unwrap().write_all(line.as_bytes());
    }
}

/// The helper's main: collects groups until stdin ends, then kills those still held.
pub fn run() -> ExitCode {
    super::sys::ignore_termination_signals();
    let mut groups = HashSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (sign, pgid) = line.split_at(line.len().min(1));
        match (sign, pgid.parse::<i32>()) {
            ("+", Ok(pgid)) if pgid > 1 => {
                groups.insert(pgid);
            }
            ("-", Ok(pgid)) => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    for pgid in groups {
        if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
    ExitCode::SUCCESS
}
