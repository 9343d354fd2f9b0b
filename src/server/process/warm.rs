//! Warm starts of sandboxed processes: the sandbox wrapper started ahead of the command it will
//! run.
//!
//! Most of a sandboxed spawn is the wrapper's, not the command's: executing the `codex` binary
//! again (the dynamic loader, its relocations), parsing the policy, the PID and mount namespaces,
//! Landlock and seccomp; about 4 ms of the ~6 ms of a sandboxed `true` on a 2-core machine, by
//! `perf` and `strace`. A client sends the same `sandbox` for every command of a session (the
//! Codex CLI does), so after each sandboxed pipe start the server starts one more wrapper with the
//! same arguments (`--command-from-fd 3` instead of a command), in a cgroup of its own where
//! processes get one. It confines itself completely and waits, blocked on reading its command
//! pipe. The next start with the same arguments, cwd and stdin kind sends it the command (argv,
//! `argv[0]`, environment) and closes the pipe: the wrapper executes it at once. What the client
//! sees is the same as a cold start: the process is the wrapper's pid and group, its output the
//! wrapper's pipes, which were made for it.
//!
//! A warm wrapper is not used (it is killed and the start is cold) when it has waited longer than
//! [`WARM_TTL`], when it has died, or when a path of its policy is no longer the file it was when
//! the wrapper confined itself (a carve-out such as `.git` removed and made again: its bind mount
//! would hold the old one). At most [`MAX_WARM`] wait at once, [`PER_KEY`] per set of arguments
//! (two: a command started right after another finds one confined already); closing
//! the pipe (the server gone, or the wrapper discarded) makes a waiting wrapper exit without
//! running anything. PTY starts are always cold (the terminal is made per start).

use std::collections::HashMap;
use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cgroup::{CgroupRoot, ProcessCgroup};
use super::spawn::{SpawnError, SpawnSpec, Spawned, spawn_in_cgroup};
use crate::sandbox::policy::ResolvedPolicy;

/// How long a warm wrapper may wait for its command.
const WARM_TTL: Duration = Duration::from_secs(60);
/// Warm wrappers waiting (or on their way) at most, server-wide.
const MAX_WARM: usize = 4;
/// Warm wrappers at most for one set of arguments.
const PER_KEY: usize = 2;
/// The descriptor a warm wrapper reads its command from.
const COMMAND_FD: i32 = 3;

/// What a warm wrapper can run: the wrapper's own arguments (policy included), where it runs,
/// and whether stdin is a pipe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    wrapper_args: Vec<String>,
    cwd: PathBuf,
    pipe_stdin: bool,
}

/// One waiting wrapper.
struct Warm {
    spawned: Spawned,
    cgroup: Option<ProcessCgroup>,
    /// The write end of its command pipe.
    command: std::io::PipeWriter,
    /// Each path of its policy and the file it was (device, inode) when it started.
    identity: Vec<(PathBuf, Option<(u64, u64)>)>,
    born: Instant,
}

/// The wrappers of one key: those waiting (oldest first) and those on their way (being started
/// on a blocking thread).
#[derive(Default)]
struct Slot {
    waiting: std::collections::VecDeque<Box<Warm>>,
    starting: usize,
}

impl Slot {
    fn count(&self) -> usize {
        self.waiting.len() + self.starting
    }
}

/// The waiting wrappers, server-wide.
#[derive(Default)]
pub struct WarmSandboxes {
    slots: Mutex<HashMap<Key, Slot>>,
}

impl std::fmt::Debug for WarmSandboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let wrappers = self
            .slots
            .lock()
            .map(|w| w.values().map(Slot::count).sum::<usize>())
            .unwrap_or(0);
        f.debug_struct("WarmSandboxes")
            .field("wrappers", &wrappers)
            .finish()
    }
}

impl WarmSandboxes {
    /// Starts `spec` (a sandboxed start) on a waiting wrapper if one fits: its pipes and its
    /// cgroup. `None`: start it cold (also when those for it are all still on their way).
    pub(super) fn take(&self, spec: &SpawnSpec) -> Option<(Spawned, Option<ProcessCgroup>)> {
        let (key, command) = key(spec)?;
        loop {
            let warm = {
                let mut slots = self.slots.lock().unwrap();
                let slot = slots.get_mut(&key)?;
                let warm = slot.waiting.pop_front()?;
                if slot.count() == 0 {
                    slots.remove(&key);
                }
                *warm
            };
            let mut warm = warm;
            let usable = warm.born.elapsed() < WARM_TTL
                && matches!(warm.spawned.child.try_wait(), Ok(None))
                && identity(&key) == warm.identity;
            if !usable {
                discard(warm);
                continue;
            }
            return send(warm, spec, &command).ok();
        }
    }

    /// Starts wrappers for the next starts like `spec` (a sandboxed start) until [`PER_KEY`]
    /// are waiting or on their way, each on a blocking thread: a spawn waits for the child to
    /// execute (and, where a child must move itself into its cgroup, for an RCU grace period),
    /// which the start that called this must not wait for. Two per key, so that a command
    /// started right after another finds one that has confined itself already.
    pub(super) fn prepare(self: &Arc<Self>, spec: &SpawnSpec, cgroups: Option<Arc<CgroupRoot>>) {
        let Some((key, _)) = key(spec) else {
            return;
        };
        let more = {
            let mut slots = self.slots.lock().unwrap();
            let have = slots.get(&key).map_or(0, Slot::count);
            let mut more = PER_KEY.saturating_sub(have);
            let mut total: usize = slots.values().map(Slot::count).sum();
            while more > 0 && total >= MAX_WARM {
                // The oldest waiting one of another key goes (those on their way stay).
                let oldest = slots
                    .iter()
                    .filter(|(k, _)| **k != key)
                    .filter_map(|(k, slot)| slot.waiting.front().map(|w| (k, w.born)))
                    .min_by_key(|(_, born)| *born)
                    .map(|(k, _)| k.clone());
                let Some(old_key) = oldest else {
                    break;
                };
                let slot = slots.get_mut(&old_key).expect("found above");
                let old = slot.waiting.pop_front().expect("found above");
                if slot.count() == 0 {
                    slots.remove(&old_key);
                }
                discard(*old);
                total -= 1;
            }
            more = more.min(MAX_WARM.saturating_sub(total));
            if more > 0 {
                slots.entry(key.clone()).or_default().starting += more;
            }
            more
        };
        for _ in 0..more {
            let this = self.clone();
            let spec = spec.clone();
            let key = key.clone();
            let cgroups = cgroups.clone();
            tokio::task::spawn_blocking(move || {
                let started = start(&key, &spec, cgroups.as_deref());
                let mut slots = this.slots.lock().unwrap();
                let slot = slots.entry(key.clone()).or_default();
                slot.starting = slot.starting.saturating_sub(1);
                match started {
                    Ok(warm) => slot.waiting.push_back(Box::new(warm)),
                    Err(err) => {
                        tracing::debug!(%err, "cannot start a warm sandbox wrapper");
                    }
                }
                if slot.count() == 0 {
                    slots.remove(&key);
                }
            });
        }
    }
}

/// Starts the sandboxed `spec` now (cold): its wrapper as a warm one is started, then sent the
/// command at once. Either way the wrapper's own environment is empty (the command's comes
/// through the pipe): what the client puts in a command's environment (`LD_PRELOAD` and the
/// like) never reaches the wrapper, which runs unconfined until it has confined itself.
pub(super) fn start_now(
    spec: &SpawnSpec,
    cgroups: Option<&CgroupRoot>,
) -> Result<(Spawned, Option<ProcessCgroup>), SpawnError> {
    let spawn_error = |source| SpawnError::Spawn {
        program: spec.argv[0].clone(),
        source,
    };
    let Some((key, command)) = split(spec) else {
        return Err(spawn_error(std::io::Error::other(
            "not a sandbox wrapper's command line",
        )));
    };
    let warm = start(&key, spec, cgroups)?;
    send(warm, spec, &command).map_err(spawn_error)
}

/// Sends `command` (with `spec`'s `argv[0]` and environment) to a waiting wrapper and closes
/// its pipe: it executes the command. A wrapper that cannot be sent it is let go of.
fn send(
    mut warm: Warm,
    spec: &SpawnSpec,
    command: &Command,
) -> std::io::Result<(Spawned, Option<ProcessCgroup>)> {
    let argv: Vec<std::ffi::OsString> = command.argv.iter().map(Into::into).collect();
    let message = crate::sandbox::wrapper::encode_command(
        &argv,
        command.arg0.as_deref().map(std::ffi::OsStr::new),
        &spec.env,
    );
    // Its command's mount namespace (where the wrapper has made one) is held by the server
    // until the command has been reaped: otherwise the command's exit unmounts it and waits for
    // an RCU grace period before its parent even hears of it (~0.4 ms of each sandboxed start).
    let mount_ns = command_mount_namespace(&warm.spawned.child);
    if let Err(err) = warm.command.write_all(&message) {
        discard(warm);
        return Err(err);
    }
    if let Some(fd) = mount_ns {
        warm.spawned.child.hold_until_reaped(fd);
    }
    // Closing the pipe ends the message: the wrapper executes the command.
    drop(warm.command);
    Ok((warm.spawned, warm.cgroup))
}

/// The mount namespace of the process waiting to become the command (an nsfs descriptor), if it
/// has one other than the server's: the wrapper's only descendant chain (the init, then the
/// command's process; or the supervisor first), looked at up to three levels down.
fn command_mount_namespace(child: &super::child::Child) -> Option<std::os::fd::OwnedFd> {
    // The server's own mount namespace, looked up once.
    static OWN: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let own = (*OWN.get_or_init(|| std::fs::metadata("/proc/self/ns/mnt").ok().map(|m| m.ino())))?;
    let mut pid = child.id()?;
    for _ in 0..3 {
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        let mut it = children.split_whitespace();
        let only = it.next()?.parse::<u32>().ok()?;
        if it.next().is_some() {
            return None;
        }
        pid = only;
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
        if ns.metadata().ok()?.ino() != own {
            return Some(ns.into());
        }
    }
    None
}

/// What a wrapper is sent to run: the command after the wrapper's `--`, and the `--arg0` it
/// was given (the wrapper takes it from the pipe, not from its arguments).
struct Command {
    argv: Vec<String>,
    arg0: Option<String>,
}

/// The key of `spec` and its command; `None` for a start that cannot be warm (a tty, or not a
/// wrapper's argv).
fn key(spec: &SpawnSpec) -> Option<(Key, Command)> {
    if spec.tty {
        return None;
    }
    split(spec)
}

/// [`key`] for any sandboxed start, a tty's too.
fn split(spec: &SpawnSpec) -> Option<(Key, Command)> {
    if !spec.sandboxed {
        return None;
    }
    let split = spec.argv.iter().position(|a| a == "--")?;
    let (wrapper, argv) = (&spec.argv[..split], &spec.argv[split + 1..]);
    if argv.is_empty() {
        return None;
    }
    let mut wrapper_args = Vec::with_capacity(wrapper.len());
    let mut arg0 = None;
    let mut args = wrapper.iter();
    while let Some(arg) = args.next() {
        if arg == "--arg0" {
            arg0 = Some(args.next()?.clone());
        } else {
            wrapper_args.push(arg.clone());
        }
    }
    let key = Key {
        wrapper_args,
        cwd: spec.cwd.clone(),
        pipe_stdin: spec.pipe_stdin,
    };
    let command = Command {
        argv: argv.to_vec(),
        arg0,
    };
    Some((key, command))
}

/// The paths of the policy in the wrapper's arguments, each with the file it is now.
fn identity(key: &Key) -> Vec<(PathBuf, Option<(u64, u64)>)> {
    let profile = key
        .wrapper_args
        .iter()
        .position(|a| a == "--permission-profile")
        .and_then(|i| key.wrapper_args.get(i + 1));
    let policy: Option<ResolvedPolicy> = profile.and_then(|p| serde_json::from_str(p).ok());
    let entries = policy.and_then(|p| p.file_system).unwrap_or_default();
    entries
        .into_iter()
        .map(|e| {
            let file = std::fs::metadata(&e.path).ok().map(|m| (m.dev(), m.ino()));
            (e.path, file)
        })
        .collect()
}

/// Starts a wrapper for `key` (with `like`'s terminal or pipes), waiting on its command pipe.
fn start(key: &Key, like: &SpawnSpec, cgroups: Option<&CgroupRoot>) -> Result<Warm, SpawnError> {
    let identity = identity(key);
    let (read, write) = std::io::pipe().map_err(|source| SpawnError::Spawn {
        program: key.wrapper_args[0].clone(),
        source,
    })?;
    let mut argv = key.wrapper_args.clone();
    argv.extend(["--command-from-fd".to_string(), COMMAND_FD.to_string()]);
    let spec = SpawnSpec {
        argv,
        arg0: None,
        env: Vec::new(),
        ..like.clone()
    };
    let pass = std::os::fd::OwnedFd::from(read);
    let (spawned, cgroup) = spawn_in_cgroup(&spec, cgroups, Some((pass.as_fd(), COMMAND_FD)))?;
    drop(pass);
    Ok(Warm {
        spawned,
        cgroup,
        command: write,
        identity,
        born: Instant::now(),
    })
}

/// Lets a waiting wrapper go: its pipe closes (it exits without running anything), it is
/// waited for and its cgroup removed.
fn discard(warm: Warm) {
    let Warm {
        spawned, cgroup, ..
    } = warm;
    let mut child = spawned.child;
    drop(spawned.stdin);
    drop(spawned.output);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let _ = child.start_kill();
        let _ = child.wait().await;
        if let Some(cgroup) = cgroup {
            cgroup.remove(Duration::from_secs(2)).await;
        }
    });
}
