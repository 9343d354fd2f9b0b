//! Sessions: who owns which processes, and which connection (if any) hears their events.
//!
//! A session is created attached to the connection that called `initialize`; when that
//! connection drops it is detached for the TTL, then expires: its processes are killed and it is
//! forgotten. The attachment's state machine is drawn in `attachment.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::attachment::{Attachment, Refused};
use super::config::ServerConfig;
use super::heap_trim::HeapTrim;
use super::process::table::ProcessTable;
use super::reaper::Reaper;
use crate::rpc::Outgoing;

/// Why a resume was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum ResumeError {
    #[error("unknown session id {0}")]
    Unknown(String),
    #[error("session {0} is already attached to another connection")]
    Attached(String),
}

/// Why a new session was refused: the server holds `--max-sessions` of them.
#[derive(Debug, thiserror::Error)]
#[error(
    "too many sessions: the limit is {0} (--max-sessions), detached sessions included; resume \
     one, or retry once one has ended"
)]
pub(super) struct TooManySessions(pub(super) usize);

/// One session: its processes and its attachment.
pub(crate) struct Session {
    /// The UUID v4 the client resumes by.
    pub(crate) id: String,
    /// The processes this session owns; no other session can see them.
    pub(crate) processes: ProcessTable,
    /// Which connection hears events; shared with the process pumps.
    pub(crate) attachment: Arc<Attachment>,
    /// The split-grant fallback's cost has been logged for this session.
    pub(crate) split_cost_logged: AtomicBool,
}

/// Every live session of the server.
pub(crate) struct SessionRegistry {
    /// Sessions by id. A std mutex: never held across an await.
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// TTLs and retention, handed to each process table.
    config: ServerConfig,
    /// Where expiry timers and process tasks are spawned.
    tracker: TaskTracker,
    /// Source of detach epochs, so a stale timer cannot expire a re-detached session early.
    next_epoch: AtomicU64,
    /// Server shutdown: timers stop waiting (shutdown kills everything itself).
    cancel: CancellationToken,
    /// Told about every process group, for the case the server dies without cleaning up.
    reaper: Option<Arc<Reaper>>,
    /// Told when an expiry or a closed record frees memory.
    heap_trim: Arc<HeapTrim>,
}

impl SessionRegistry {
    pub(super) fn new(
        config: ServerConfig,
        tracker: TaskTracker,
        cancel: CancellationToken,
        reaper: Option<Arc<Reaper>>,
        heap_trim: Arc<HeapTrim>,
    ) -> Arc<Self> {
        Arc::new(Self {
            sessions: Mutex::new(HashMap::new()),
            config,
            tracker,
            next_epoch: AtomicU64::new(1),
            cancel,
            reaper,
            heap_trim,
        })
    }

    /// A new session attached to `connection`, unless there are `--max-sessions` already
    /// (detached ones count: they hold processes and output).
    pub(super) fn create(
        &self,
        connection: u64,
        outgoing: mpsc::Sender<Outgoing>,
    ) -> Result<Arc<Session>, TooManySessions> {
        let id = uuid::Uuid::new_v4().to_string();
        let attachment = Arc::new(Attachment::new(
            connection,
            outgoing,
            self.config.max_outgoing_bytes,
        ));
        let session = Arc::new(Session {
            id: id.clone(),
            processes: ProcessTable::new(
                self.config.clone(),
                self.tracker.clone(),
                self.cancel.clone(),
                self.reaper.clone(),
                attachment.clone(),
                self.heap_trim.clone(),
            ),
            attachment,
            split_cost_logged: AtomicBool::new(false),
        });
        {
            let mut sessions = self.sessions.lock().unwrap();
            if sessions.len() >= self.config.max_sessions {
                return Err(TooManySessions(self.config.max_sessions));
            }
            sessions.insert(id, session.clone());
        }
        self.config.metrics.session_created();
        tracing::debug!(session = %session.id, "session created");
        Ok(session)
    }

    /// Re-attaches a detached session to `connection`.
    pub(super) fn resume(
        &self,
        id: &str,
        connection: u64,
        outgoing: mpsc::Sender<Outgoing>,
    ) -> Result<Arc<Session>, ResumeError> {
        let session = self
            .sessions
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| ResumeError::Unknown(id.to_string()))?;
        session
            .attachment
            .reattach(connection, outgoing)
            .map_err(|refused| match refused {
                Refused::Attached => ResumeError::Attached(id.to_string()),
                Refused::Expired => ResumeError::Unknown(id.to_string()),
            })?;
        self.config.metrics.session_resumed();
        tracing::debug!(session = %id, "session resumed");
        Ok(session)
    }

    /// Detaches `session` if `connection` still holds it, and arms its expiry timer.
    pub(super) fn detach(self: &Arc<Self>, session: &Arc<Session>, connection: u64) {
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        if !session.attachment.detach(connection, epoch) {
            return;
        }
        self.config.metrics.session_detached();
        tracing::debug!(session = %session.id, "session detached");
        let registry = self.clone();
        let session = session.clone();
        let ttl = self.config.detached_session_ttl;
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(ttl) => registry.expire(&session, epoch),
                _ = cancel.cancelled() => {}
            }
        });
    }

    /// Ends a session still detached since `epoch`: kills its processes, drops their retained
    /// output (nobody can read it any more: the session cannot be resumed), forgets it, and has
    /// the freed heap given back once the burst of expiries is over.
    fn expire(&self, session: &Arc<Session>, epoch: u64) {
        if !session.attachment.expire(epoch) {
            return;
        }
        self.sessions.lock().unwrap().remove(&session.id);
        self.config.metrics.session_expired();
        session.processes.kill_all();
        session.processes.discard_output();
        self.heap_trim.freed();
        tracing::debug!(session = %session.id, "detached session expired");
    }

    /// Kills every process of every session (server shutdown).
    pub(super) fn kill_all(&self) {
        let sessions: Vec<_> = self.sessions.lock().unwrap().values().cloned().collect();
        for session in sessions {
            session.processes.kill_all();
        }
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
