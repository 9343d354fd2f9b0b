//! The system calls of managing a child: its set-up between fork and exec, and signalling its
//! process group. Process-wide start-up lives in `server/sys.rs`.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::fd::{AsRawFd as _, BorrowedFd};

use rustix::process::{Pid, Signal};

/// Arranges for the child to lead a new process group (pipes) or a new session with the
/// terminal on fd 0 as its controlling terminal (tty), and, given its cgroup's `cgroup.procs`,
/// to move itself into that cgroup before it executes anything (so its first fork lands there
/// too).
///
/// A pipe child without a cgroup gets no `pre_exec` hook, so std can start it with `posix_spawn`
/// (a vfork) instead of a fork that copies the server's page tables: about half the spawn time,
/// and fan-out no longer grows with the server's heap. The price is no `PR_SET_PDEATHSIG` for
/// pipe children (it only ever covered the direct child, not its group); the server kills every
/// group itself on SIGTERM/SIGINT and on session expiry. A tty child needs `setsid` +
/// `TIOCSCTTY` between fork and exec, so it keeps the hook and the parent-death signal; so does a
/// child that must enter its cgroup (the write cannot be done by `posix_spawn`, and a write by
/// the parent after the spawn would race with the child's first forks).
pub fn configure_child(
    cmd: &mut tokio::process::Command,
    tty: bool,
    cgroup_procs: Option<BorrowedFd<'_>>,
) {
    let cgroup_procs = cgroup_procs.map(|fd| fd.as_raw_fd());
    if !tty {
        cmd.process_group(0);
        if cgroup_procs.is_none() {
            return;
        }
    }
    // SAFETY: the closure runs between fork and exec and makes only raw system calls (write,
    // setsid, ioctl, prctl through rustix), no allocation and no lock. `cgroup_procs` is open in
    // the parent until the spawn has returned (the caller holds it), so the forked child has it
    // at the same number; fd 0 is the terminal the command was given as stdin, open for the
    // whole call.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = cgroup_procs {
                // "0" moves the writer itself. If it fails the child runs anyway, reached through
                // its process group as before.
                let _ = rustix::io::write(BorrowedFd::borrow_raw(fd), b"0");
            }
            if tty {
                rustix::process::setsid()?;
                rustix::process::ioctl_tiocsctty(BorrowedFd::borrow_raw(0))?;
                // If the server dies without cleaning up, the direct child gets SIGKILL.
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            }
            Ok(())
        });
    }
}

/// Gives the child `fd` at descriptor number `target` (close-on-exec cleared there), e.g. the
/// read end of a warm sandbox wrapper's command pipe as fd 3. `fd` stays open in the parent until
/// the spawn has returned (the caller holds it).
pub fn pass_fd(cmd: &mut tokio::process::Command, fd: BorrowedFd<'_>, target: i32) {
    let fd = fd.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and makes only dup2 and fcntl calls, no
    // allocation and no lock; `fd` is open in the forked child at the same number.
    unsafe {
        cmd.pre_exec(move || {
            if fd == target {
                // dup2 onto itself would leave close-on-exec set.
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, target) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends `signal` to every process of the group `pgid`. ESRCH (group already gone) is `Ok`.
pub fn signal_group(pgid: i32, signal: Signal) -> io::Result<()> {
    let Some(group) = Pid::from_raw(pgid).filter(|_| pgid > 1) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal pgid <= 1",
        ));
    };
    match rustix::process::kill_process_group(group, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// The machine's processes as /proc shows them at one moment: pid, parent and process group.
/// Where a process has no cgroup of its own, its tree is found here (see [`Self::tree`]).
pub struct ProcSnapshot {
    /// (pid, ppid, pgrp) of every process readable in /proc.
    procs: Vec<(i32, i32, i32)>,
}

impl ProcSnapshot {
    /// Reads /proc once (each `/proc/PID/stat`).
    pub fn take() -> Self {
        let procs = std::fs::read_dir("/proc")
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                    .filter_map(|pid| {
                        let (ppid, pgrp) = stat_parent_and_group(pid)?;
                        Some((pid, ppid, pgrp))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { procs }
    }

    /// The live processes of a process's tree that can still be told apart from strangers: the
    /// members of its group `pgid` (if `group_alive`: the id cannot be reused while it has
    /// members), the leader `pgid` itself (if `leader_alive`: not reaped yet), and every
    /// descendant of those, whatever their group or session (`setsid` children of a live
    /// parent). Orphans whose parent has already exited were adopted by init and cannot be told
    /// apart (that needs a cgroup). Each is returned as a pidfd, opened and then checked again
    /// against /proc, so that a pid reused meanwhile is never signalled.
    pub fn tree(&self, pgid: i32, leader_alive: bool, group_alive: bool) -> Vec<OwnedFd> {
        self.tree_pids(pgid, leader_alive, group_alive)
            .into_iter()
            .filter_map(|pid| {
                let fd = rustix::process::pidfd_open(
                    Pid::from_raw(pid)?,
                    rustix::process::PidfdFlags::empty(),
                )
                .ok()?;
                // Still the process seen above: same parent and group.
                let (ppid, pgrp) = stat_parent_and_group(pid)?;
                let known = self
                    .procs
                    .iter()
                    .any(|&(p, pp, pg)| p == pid && pp == ppid && pg == pgrp);
                known.then_some(fd)
            })
            .collect()
    }

    /// The pids of [`Self::tree`], the server's own and init left out.
    fn tree_pids(&self, pgid: i32, leader_alive: bool, group_alive: bool) -> HashSet<i32> {
        let own = std::process::id() as i32;
        let mut members: HashSet<i32> = HashSet::new();
        for &(pid, _, pgrp) in &self.procs {
            if (group_alive && pgrp == pgid) || (leader_alive && pid == pgid) {
                members.insert(pid);
            }
        }
        let mut frontier: Vec<i32> = members.iter().copied().collect();
        while let Some(parent) = frontier.pop() {
            for &(pid, ppid, _) in &self.procs {
                if ppid == parent && members.insert(pid) {
                    frontier.push(pid);
                }
            }
        }
        members.retain(|&pid| pid > 1 && pid != own);
        members
    }
}

/// The parent pid and process group of `pid`, from `/proc/PID/stat`.
fn stat_parent_and_group(pid: i32) -> Option<(i32, i32)> {
    proc_stat(pid).map(|s| (s.ppid, s.pgrp))
}

/// What `/proc/PID/stat` says of a process that the server needs.
pub struct ProcStat {
    /// Its state letter (`Z` for a zombie).
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

/// `/proc/PID/stat`, read after the command name (which may itself hold spaces and
/// parentheses).
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat { state, ppid, pgrp })
}

/// Sends `signal` through each pidfd; one whose process is gone is skipped.
pub fn signal_pidfds(pidfds: &[OwnedFd], signal: Signal) {
    for fd in pidfds {
        let _ = rustix::process::pidfd_send_signal(fd, signal);
    }
}

/// Waits until the process of `pidfd` has exited (a pidfd turns readable then) or `deadline` has
/// passed; true if it exited.
pub async fn pidfd_exited_by(pidfd: &OwnedFd, deadline: tokio::time::Instant) -> bool {
    // SAFETY: the AsyncFd borrows `pidfd`, which outlives it: it is dropped, and so deregistered,
    // at the end of this function, before the caller can close the descriptor.
    let watched = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            pidfd.as_fd(),
            tokio::io::Interest::READABLE,
        )
    };
    match watched {
        Ok(watched) => tokio::time::timeout_at(deadline, watched.readable())
            .await
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_holds_the_group_and_every_descendant_but_no_stranger() {
        let snapshot = ProcSnapshot {
            procs: vec![
                (100, 50, 100), // leader
                (101, 100, 100),
                (102, 100, 102), // left the group (setsid), child of the leader
                (103, 102, 103), // its child
                (104, 1, 100),   // orphan still in the group
                (200, 1, 200),   // stranger
            ],
        };
        let pick = |leader_alive, group_alive| {
            let mut pids: Vec<i32> = snapshot
                .tree_pids(100, leader_alive, group_alive)
                .into_iter()
                .collect();
            pids.sort();
            pids
        };
        assert_eq!(pick(true, true), [100, 101, 102, 103, 104]);
        // The leader reaped, its group gone: nothing can be told apart any more.
        assert_eq!(pick(false, false), Vec::<i32>::new());
        // The leader reaped, its group still there: the members and their descendants.
        assert_eq!(pick(false, true), [100, 101, 102, 103, 104]);
        assert!(stat_parent_and_group(std::process::id() as i32).is_some());
    }
}
