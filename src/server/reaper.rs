//! The reaper: a small helper process (this binary, `codex reap-process-groups`) that outlives
//! the server only to kill what the server leaves behind when it dies without cleaning up
//! (SIGKILL, the OOM killer). The server tells it each process group it starts (`+PGID`) and
//! each it has let go of (`-PGID`), one line at a time on the helper's stdin; when that pipe
//! ends, which the kernel does for every way the server can die, the helper kills the groups it
//! still holds. On a normal shutdown the server has already killed them and the helper finds
//! nothing left. Where the server puts each process in a cgroup of its own, it also names the
//! directory holding them all (`cPATH`, once at start): the helper then kills every process
//! under it (descendants that left their process group included) and removes it.
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

use super::process::cgroup;

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
        let mut command = Command::new(exe);
        command
            .arg(SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // Its own group: a Ctrl-C at the server's terminal must not take it along.
            .process_group(0);
        let mut child = super::adopted::spawn(|| command.spawn(), |c| Some(c.id()))?;
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

    /// Tells the helper the cgroup holding every process's cgroup, to kill and remove if the
    /// server dies.
    pub fn watch_cgroup(&self, dir: &std::path::Path) {
        if let Some(dir) = dir.to_str().filter(|d| !d.contains('\n')) {
            self.tell(format!("c{dir}\n"));
        }
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
    let mut cgroups = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if let Some(dir) = line.strip_prefix('c') {
            // Only a directory of ours: a cgroup, named as the server names its own.
            let dir = std::path::PathBuf::from(dir);
            if dir.is_absolute() && dir.join("cgroup.procs").exists() && is_server_cgroup(&dir) {
                cgroups.push(dir);
            }
            continue;
        }
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
    for dir in cgroups {
        let has_kill = dir.join("cgroup.kill").exists();
        cgroup::kill_tree(&dir, has_kill);
        cgroup::remove_tree(&dir, std::time::Duration::from_secs(5));
    }
    ExitCode::SUCCESS
}

/// Whether `dir` is named as the server names its cgroup root (`codex-exec-server.PID`).
fn is_server_cgroup(dir: &std::path::Path) -> bool {
    dir.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(cgroup::is_root_name)
}
