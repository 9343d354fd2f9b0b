//! The processes of one session, by client-chosen id: reserving an id (at most
//! `--max-processes-per-session` of them), spawning, starting the pump, freeing the id after the
//! closed TTL, killing everything on expiry or shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::entry::{Meta, Process};
use super::pump::Pump;
use super::spawn::{Output, SpawnError, SpawnSpec, spawn_in_cgroup};
use crate::protocol::process::ProcessInfo;
use crate::server::attachment::Attachment;
use crate::server::config::ServerConfig;
use crate::server::heap_trim::HeapTrim;
use crate::server::metrics::ProcessAudit;
use crate::server::reaper::Reaper;

/// A closed record that retained at least this much output has the heap trimmed after it
/// leaves (after the burst of such, see `heap_trim.rs`).
const TRIM_AFTER_RECORD_BYTES: usize = 64 * 1024;

/// A slot in the table.
pub(super) enum Slot {
    /// The id is reserved while the child is being spawned.
    Starting,
    Live(Arc<Process>),
}

/// What a lookup found.
pub enum Lookup {
    Missing,
    Starting,
    Live(Arc<Process>),
}

/// The processes of one session, by client-chosen id.
pub struct ProcessTable {
    /// Entries; std mutex, never held across an await. Shared with each pump's release handle.
    entries: Arc<Mutex<HashMap<String, Slot>>>,
    /// Retention and TTLs.
    config: ServerConfig,
    /// Where pump and timer tasks are spawned.
    tracker: TaskTracker,
    /// Server shutdown: retention timers stop waiting.
    cancel: CancellationToken,
    /// Told each process group started and let go of.
    reaper: Option<Arc<Reaper>>,
    /// Who hears the session's events; each pump gets a clone.
    attachment: Arc<Attachment>,
    /// Told when a closed record leaves (its retained output is freed).
    heap_trim: Arc<HeapTrim>,
}

impl ProcessTable {
    pub(crate) fn new(
        config: ServerConfig,
        tracker: TaskTracker,
        cancel: CancellationToken,
        reaper: Option<Arc<Reaper>>,
        attachment: Arc<Attachment>,
        heap_trim: Arc<HeapTrim>,
    ) -> Self {
        Self {
            entries: Arc::new(Mutex::new(HashMap::new())),
            config,
            tracker,
            cancel,
            reaper,
            attachment,
            heap_trim,
        }
    }

    pub fn get(&self, id: &str) -> Lookup {
        match self.entries.lock().unwrap().get(id) {
            None => Lookup::Missing,
            Some(Slot::Starting) => Lookup::Starting,
            Some(Slot::Live(p)) => Lookup::Live(p.clone()),
        }
    }

    pub fn terminate_grace(&self) -> std::time::Duration {
        self.config.terminate_grace
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// The processes spawned so far (those being spawned left out), copied out of the lock.
    fn live(&self) -> Vec<Arc<Process>> {
        self.entries
            .lock()
            .unwrap()
            .values()
            .filter_map(|s| match s {
                Slot::Live(p) => Some(p.clone()),
                Slot::Starting => None,
            })
            .collect()
    }

    /// Kills every process group of the table, and every process's cgroup (session expiry,
    /// shutdown).
    pub fn kill_all(&self) {
        let live = self.live();
        // One look at /proc for every process without a cgroup.
        let snapshot = live
            .iter()
            .any(|p| !p.has_cgroup())
            .then(super::sys::ProcSnapshot::take);
        for p in live {
            p.kill_in(snapshot.as_ref());
        }
    }

    /// Drops every process's retained output, now and from now on (session expiry: nobody can
    /// read it any more). The records stay, empty, until their closed TTL.
    pub fn discard_output(&self) {
        for p in self.live() {
            p.discard_output();
        }
    }

    /// The session's processes (those being spawned left out), oldest first.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let mut infos: Vec<_> = self.live().iter().map(|p| p.info()).collect();
        infos.sort_by(|a, b| {
            (a.started_at_ms, &a.process_id).cmp(&(b.started_at_ms, &b.process_id))
        });
        infos
    }

    /// Stops `process` at its deadline unless it exits first or the server shuts down.
    fn arm_timeout(&self, process: &Arc<Process>, timeout: std::time::Duration) {
        let process = process.clone();
        let grace = self.config.terminate_grace;
        let tracker = self.tracker.clone();
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let mut changes = process.changes.subscribe();
            let exited = async {
                while !process.log.lock().unwrap().lifecycle().exited() {
                    if changes.changed().await.is_err() {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(timeout) => process.time_out(grace, &tracker),
                _ = exited => {}
                _ = cancel.cancelled() => {}
            }
        });
    }

    /// Spawns `spec` as process `id`, and starts its pump; `audit` records the start and exit.
    pub(crate) fn start(
        &self,
        id: String,
        spec: SpawnSpec,
        audit: ProcessAudit,
    ) -> Result<(), SpawnError> {
        {
            let mut entries = self.entries.lock().unwrap();
            if entries.contains_key(&id) {
                return Err(SpawnError::DuplicateId);
            }
            // Starting, running, and finished but retained for `process/read`: each holds
            // memory (its retained output), the first two descriptors and a child too.
            if entries.len() >= self.config.max_processes_per_session {
                return Err(SpawnError::TooMany(self.config.max_processes_per_session));
            }
            entries.insert(id.clone(), Slot::Starting);
        }
        let warm = self.config.warm_sandboxes.take(&spec);
        let (spawned, cgroup) = match warm {
            Some(warm) => warm,
            None if spec.sandboxed => {
                match super::warm::start_now(&spec, self.config.cgroup_root.as_deref()) {
                    Ok(cold) => cold,
                    Err(err) => {
                        self.entries.lock().unwrap().remove(&id);
                        return Err(err);
                    }
                }
            }
            None => match spawn_in_cgroup(&spec, self.config.cgroup_root.as_deref(), None) {
                Ok(cold) => cold,
                Err(err) => {
                    self.entries.lock().unwrap().remove(&id);
                    return Err(err);
                }
            },
        };
        let pgid = spawned.child.id().map(|p| p as i32).unwrap_or(-1);
        audit.started(pgid);
        if let Some(reaper) = &self.reaper {
            reaper.watch(pgid);
        }
        let started_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let pty = match &spawned.output {
            Output::Pty(master) => Some(master.clone()),
            Output::Pipes { .. } => None,
        };
        let meta = Meta {
            argv0: spec.listed_argv0.clone(),
            started_at_ms,
        };
        let process = Arc::new(Process::new(
            id.clone(),
            pgid,
            self.config.retained_output_bytes,
            spawned.stdin,
            meta,
            pty,
            cgroup,
        ));
        if spec.output_ack {
            let following = super::output_log::Following::Acking;
            process.log.lock().unwrap().set_following(following);
        }
        self.entries
            .lock()
            .unwrap()
            .insert(id.clone(), Slot::Live(process.clone()));
        let release = {
            let entries = self.entries.clone();
            let reaper = self.reaper.clone();
            let process = process.clone();
            let heap_trim = self.heap_trim.clone();
            Box::new(move || {
                let removed = {
                    let mut entries = entries.lock().unwrap();
                    let ours =
                        matches!(entries.get(&id), Some(Slot::Live(p)) if Arc::ptr_eq(p, &process));
                    if ours {
                        if let Some(reaper) = &reaper {
                            reaper.forget(process.pgid);
                        }
                        entries.remove(&id)
                    } else {
                        None
                    }
                };
                // The record's output goes with the last reference, a moment after this; only
                // a record that held much is worth a trim (a `true` retains nothing).
                let held = process.log.lock().unwrap().retained_bytes();
                drop(removed);
                if held >= TRIM_AFTER_RECORD_BYTES {
                    heap_trim.freed();
                }
            })
        };
        let pump = Pump {
            process: process.clone(),
            attachment: self.attachment.clone(),
            release,
            closed_ttl: self.config.closed_process_ttl,
            sandboxed: spec.sandboxed,
            cancel: self.cancel.clone(),
            audit,
            detached_output: self.config.detached_output,
        };
        self.tracker.spawn(pump.run(spawned.child, spawned.output));
        if let Some(timeout) = spec.timeout {
            self.arm_timeout(&process, timeout);
        }
        // The next start like this one finds its wrapper waiting.
        self.config
            .warm_sandboxes
            .prepare(&spec, self.config.cgroup_root.clone());
        Ok(())
    }
}
