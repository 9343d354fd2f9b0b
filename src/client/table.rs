//! The processes the client follows, by id: each entry's [`Sequencer`] and the channel to its
//! handle.
//!
//! Publishing: whichever task releases events (the reader of a transport for notifications, the
//! recovery task for catch-up reads) takes the entry's async `sender` lock first, asks the
//! sequencer under the entry's std lock what is ready, then sends it, still under the async lock.
//! So events leave in seq order even when two tasks release them. The channel is bounded: a
//! handle that is not read stops the reader of the connection, which is how a slow consumer slows
//! the server (and the process) down instead of filling memory. Read a handle's events in a task
//! of its own while other calls are awaited elsewhere.
//!
//! A terminal failure does not go through the channel (it may be full); it is put in a slot the
//! handle reads after the last queued event, and the sender is dropped so the handle sees the end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::error::ClientError;
use super::sequencer::{ProcessEvent, SequenceError, Sequencer};

/// Where a process entry is in its life, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `process/start` is in flight: caught up after a reconnect only if the server knows it.
    Starting,
    /// Started: caught up after every reconnect.
    Running,
    /// Closed, failed, or its handle is gone: nothing more is published.
    Finished,
}

/// What publishing did to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// More events may come.
    Open,
    /// The close was published; the entry can leave the table.
    Closed,
    /// The entry failed; it leaves the table and the process is terminated on the server.
    Failed,
}

/// The mutable part of an entry, under a std lock (never held across an await).
#[derive(Debug)]
struct EntryState {
    /// See [`Phase`].
    phase: Phase,
    /// Orders and dedupes the events.
    sequencer: Sequencer,
    /// `(transport id, lowest seq notified on it)`: lets the catch-up reads stop once they reach
    /// what live notifications of the new transport already deliver.
    live: Option<(u64, u64)>,
}

/// One process the client follows.
pub(super) struct ProcessEntry {
    /// The process id.
    pub(super) id: String,
    /// Phase, sequencer, live marker.
    state: Mutex<EntryState>,
    /// The handle's channel. A tokio lock because it is held while sending (which waits for room)
    /// so that events leave in seq order; `None` once finished.
    sender: tokio::sync::Mutex<Option<mpsc::Sender<ProcessEvent>>>,
    /// The terminal failure, read by the handle after the last queued event.
    failure: Arc<Mutex<Option<ClientError>>>,
}

impl ProcessEntry {
    /// `process/start` was answered: the entry is caught up after every reconnect from now on.
    pub(super) fn mark_started(&self) {
        let mut state = self.state.lock().unwrap();
        if state.phase == Phase::Starting {
            state.phase = Phase::Running;
        }
    }

    /// The handle is gone: nothing more is published.
    pub(super) fn mark_finished(&self) {
        self.state.lock().unwrap().phase = Phase::Finished;
    }

    /// The terminal failure, once (the handle reads it after the last queued event).
    pub(super) fn take_failure(&self) -> Option<ClientError> {
        self.failure.lock().unwrap().take()
    }
}

impl ProcessEntry {
    /// The seq of the last event published to the handle.
    pub(super) fn last_published(&self) -> u64 {
        self.state.lock().unwrap().sequencer.last_published()
    }

    /// The close was published: nothing more will be.
    pub(super) fn closed(&self) -> bool {
        self.state.lock().unwrap().sequencer.finished()
    }

    /// The process id.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The lowest seq notified on transport `conn`, if any was.
    pub(super) fn live_since(&self, conn: u64) -> Option<u64> {
        match self.state.lock().unwrap().live {
            Some((c, seq)) if c == conn => Some(seq),
            _ => None,
        }
    }

    /// Records that `seq` arrived as a notification on transport `conn`.
    fn note_live(&self, conn: u64, seq: u64) {
        let mut state = self.state.lock().unwrap();
        state.live = match state.live {
            Some((c, low)) if c == conn => Some((c, low.min(seq))),
            _ => Some((conn, seq)),
        };
    }

    /// Runs `step` on the sequencer and publishes what it releases, in order.
    pub(super) async fn publish(
        &self,
        step: impl FnOnce(&mut Sequencer) -> Result<Vec<ProcessEvent>, SequenceError>,
    ) -> Outcome {
        let mut sender = self.sender.lock().await;
        let released = {
            let mut state = self.state.lock().unwrap();
            if state.phase == Phase::Finished {
                return Outcome::Closed;
            }
            step(&mut state.sequencer).map(|events| (events, state.sequencer.finished()))
        };
        match released {
            Ok((events, finished)) => {
                if let Some(tx) = sender.as_ref() {
                    for event in events {
                        if tx.send(event).await.is_err() {
                            break;
                        }
                    }
                }
                if finished {
                    self.state.lock().unwrap().phase = Phase::Finished;
                    *sender = None;
                    Outcome::Closed
                } else {
                    Outcome::Open
                }
            }
            Err(source) => {
                let error = ClientError::Recovery {
                    process_id: self.id.clone(),
                    source,
                };
                self.finish(&mut sender, error);
                Outcome::Failed
            }
        }
    }

    /// Ends the entry with a terminal failure (unless it already ended).
    pub(super) async fn fail(&self, error: ClientError) {
        let mut sender = self.sender.lock().await;
        self.finish(&mut sender, error);
    }

    /// Marks the entry finished, stores the failure, and closes the channel.
    fn finish(&self, sender: &mut Option<mpsc::Sender<ProcessEvent>>, error: ClientError) {
        let mut state = self.state.lock().unwrap();
        if state.phase == Phase::Finished {
            return;
        }
        state.phase = Phase::Finished;
        self.failure.lock().unwrap().get_or_insert(error);
        *sender = None;
    }
}

/// The processes the client follows, by id.
#[derive(Default)]
pub(super) struct ProcessTable {
    /// Entries; a std lock, never held across an await.
    entries: Mutex<HashMap<String, Arc<ProcessEntry>>>,
}

impl ProcessTable {
    /// Adds an entry in phase `Starting`; returns it with its channel's receiving end.
    pub(super) fn register(
        &self,
        id: &str,
        buffer: usize,
    ) -> Result<(Arc<ProcessEntry>, mpsc::Receiver<ProcessEvent>), ClientError> {
        let mut entries = self.entries.lock().unwrap();
        if entries.contains_key(id) {
            return Err(ClientError::DuplicateProcessId {
                process_id: id.to_string(),
            });
        }
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let entry = Arc::new(ProcessEntry {
            id: id.to_string(),
            state: Mutex::new(EntryState {
                phase: Phase::Starting,
                sequencer: Sequencer::default(),
                live: None,
            }),
            sender: tokio::sync::Mutex::new(Some(tx)),
            failure: Arc::new(Mutex::new(None)),
        });
        entries.insert(id.to_string(), entry.clone());
        Ok((entry, rx))
    }

    /// Removes `id` if it still names `entry`.
    pub(super) fn remove_if_same(&self, id: &str, entry: &Arc<ProcessEntry>) {
        let mut entries = self.entries.lock().unwrap();
        if matches!(entries.get(id), Some(e) if Arc::ptr_eq(e, entry)) {
            entries.remove(id);
        }
    }

    /// The processes to catch up after a reconnect, each with whether its start is confirmed.
    /// Unconfirmed ones are included too: their start may have been answered just before the
    /// drop, while the caller had not yet seen it; if the server does not know them, they were
    /// not started and the start call settles them.
    pub(super) fn followed(&self) -> Vec<(Arc<ProcessEntry>, bool)> {
        self.entries
            .lock()
            .unwrap()
            .values()
            .filter_map(|e| match e.state.lock().unwrap().phase {
                Phase::Running => Some((e.clone(), true)),
                Phase::Starting => Some((e.clone(), false)),
                Phase::Finished => None,
            })
            .collect()
    }

    /// Empties the table (the session is lost); returns what it held.
    pub(super) fn drain(&self) -> Vec<Arc<ProcessEntry>> {
        self.entries
            .lock()
            .unwrap()
            .drain()
            .map(|(_, e)| e)
            .collect()
    }

    /// Hands one notified event (or why it did not decode) to its process; returns the entry
    /// and what publishing did to it, for the caller to settle (`recovery.rs`).
    pub(super) async fn route(
        &self,
        conn: u64,
        process_id: &str,
        event: Result<ProcessEvent, String>,
    ) -> Option<(Arc<ProcessEntry>, Outcome)> {
        let Some(entry) = self.entries.lock().unwrap().get(process_id).cloned() else {
            tracing::debug!(%process_id, "event of a process nobody follows");
            return None;
        };
        let outcome = match event {
            Ok(event) => {
                entry.note_live(conn, event.seq());
                entry.publish(|s| s.push(event)).await
            }
            Err(message) => {
                entry
                    .fail(ClientError::Decode {
                        method: "process notification".into(),
                        message,
                    })
                    .await;
                Outcome::Failed
            }
        };
        Some((entry, outcome))
    }
}
