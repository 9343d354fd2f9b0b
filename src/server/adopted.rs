//! Orphans the server adopts: it reaps them when they exit, and kills those still running when
//! it stops.
//!
//! A process whose parent exits is re-parented to the nearest ancestor that is a "child
//! subreaper", else to its PID namespace's init. Two cases make that the server:
//!
//! - it *is* PID 1 (the container image starts it as its entrypoint, with no init in front): every
//!   orphan of the container comes to it (`sh -c 'daemon &'`, `setsid -f`, a double fork), and one
//!   that exits stays a zombie until the server reaps it, holding a pid for good;
//! - it runs without a cgroup per process (none can be made here, or `--no-process-cgroups`): it
//!   makes itself a subreaper (`PR_SET_CHILD_SUBREAPER`), so that descendants whose parent has
//!   exited stay under it rather than escape to init, and can be killed when it stops.
//!
//! tokio waits for the children it started by their pids, and so do the server's helpers; a
//! `waitpid(-1)` here would steal their exit statuses. So every child the server starts is
//! recorded ([`spawn`]), and on each SIGCHLD the sweep reaps only the zombies among its children
//! that it did not start. A spawn and a sweep exclude each other (a child that exits before it is
//! recorded is not taken for an orphan). Adopted orphans that still run are not tied to the
//! process they came from (their parent is gone), so `process/terminate` and session expiry
//! cannot single them out; the server's shutdown kills them all.

use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use rustix::process::{Pid, Signal, WaitOptions};

use super::process::proc_stat;

/// Whether the children the server starts are recorded (the server process, from its start).
static RECORDING: AtomicBool = AtomicBool::new(false);
/// Whether orphans are reaped here (the server is PID 1 or a subreaper).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Spawns hold it shared, a sweep exclusively.
static GATE: RwLock<()> = RwLock::new(());
/// The pids of the children the server started itself (those gone are dropped at each sweep).
static OWN: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Records every child started from now on (the server process calls it first thing, before
/// its first helper starts, so that none is taken for an orphan later).
pub(crate) fn record_children() {
    RECORDING.store(true, Ordering::SeqCst);
}

/// Makes the server adopt orphans where that is needed (module documentation): always as PID 1;
/// as a subreaper when `subreaper`. Returns whether it now reaps them.
pub(crate) fn start(subreaper: bool) -> io::Result<bool> {
    let pid1 = std::process::id() == 1;
    if !pid1 && subreaper {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    }
    let active = pid1 || subreaper;
    if active && !proc_is_ours() {
        return Err(io::Error::other(
            "/proc is not mounted for this process's PID namespace (its pids would not be ours)",
        ));
    }
    ACTIVE.store(active, Ordering::SeqCst);
    Ok(active)
}

/// Whether `/proc` numbers processes as this process's PID namespace does (`/proc/self` is
/// this pid), as the sweep needs: a `/proc` of another namespace (a PID namespace entered
/// without mounting its own) would have it wait for the wrong pids.
fn proc_is_ours() -> bool {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|link| link.to_str()?.parse::<u32>().ok())
        == Some(std::process::id())
}

/// Runs `spawn` (a child's start) so that the child is never taken for an orphan: recorded
/// before any sweep can look (`pid` says its pid).
pub(crate) fn spawn<T>(
    spawn: impl FnOnce() -> io::Result<T>,
    pid: impl FnOnce(&T) -> Option<u32>,
) -> io::Result<T> {
    if !RECORDING.load(Ordering::Relaxed) {
        return spawn();
    }
    let _gate = GATE.read().unwrap_or_else(|e| e.into_inner());
    let child = spawn()?;
    if let Some(pid) = pid(&child) {
        OWN.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid as i32);
    }
    Ok(child)
}

/// Reaps the server's exited orphans; returns how many. Called on SIGCHLD.
pub(crate) fn reap() -> usize {
    let _gate = GATE.write().unwrap_or_else(|e| e.into_inner());
    let children = children();
    let mut own = OWN.lock().unwrap_or_else(|e| e.into_inner());
    own.retain(|pid| children.contains(pid));
    let mut reaped = 0;
    for &pid in children.iter().filter(|pid| !own.contains(pid)) {
        if state(pid) != Some('Z') {
            continue;
        }
        let Some(pid) = Pid::from_raw(pid) else {
            continue;
        };
        if let Ok(Some(_)) = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
            reaped += 1;
        }
    }
    reaped
}

/// SIGKILL to every adopted orphan still running (the server's shutdown); returns how many.
pub(crate) fn kill_all() -> usize {
    if !ACTIVE.load(Ordering::SeqCst) {
        return 0;
    }
    let _gate = GATE.write().unwrap_or_else(|e| e.into_inner());
    let own = OWN.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut killed = 0;
    for pid in children().into_iter().filter(|pid| !own.contains(pid)) {
        // Through a pidfd, checked to still be our child: a reused pid is never hit.
        let Some(raw) = Pid::from_raw(pid) else {
            continue;
        };
        let Ok(fd) = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()) else {
            continue;
        };
        if parent(pid) == Some(std::process::id() as i32)
            && rustix::process::pidfd_send_signal(&fd, Signal::KILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

/// The server's children: `/proc/self/task/*/children`, else (a kernel without that file) every
/// process of /proc whose parent is the server.
fn children() -> BTreeSet<i32> {
    let mut found = BTreeSet::new();
    let mut listed = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                listed = true;
                found.extend(
                    text.split_ascii_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    if !listed {
        let own = std::process::id() as i32;
        if let Ok(dir) = std::fs::read_dir("/proc") {
            found.extend(
                dir.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                    .filter(|&pid| parent(pid) == Some(own)),
            );
        }
    }
    found
}

/// The state letter of `pid` (`Z` for a zombie).
fn state(pid: i32) -> Option<char> {
    proc_stat(pid).map(|s| s.state)
}

/// The parent of `pid`.
fn parent(pid: i32) -> Option<i32> {
    proc_stat(pid).map(|s| s.ppid)
}
