//! Sessions: who owns which processes, and which connection (if any) hears their events.
//!
//! ```text
//!   create ──► Attached{conn} ──connection drops──► Detached{epoch} ──TTL──► Expired
//!                  ▲                                     │                 (processes killed,
//!                  └──────── initialize{resume} ─────────┘                  session forgotten)
//! ```
//! A resume while Attached is refused (-32010, retryable): the old connection has not been seen
//! to drop yet. Every transition bumps `generation`, which wakes anything bound to the previous
//! attachment: long-polls fail with "resumed by another connection", blocked notification sends
//! give up (the client catches up with `process/read`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ServerConfig;
use super::process::ProcessTable;
use crate::rpc::Outgoing;

/// Why a resume was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum ResumeError {
    #[error("unknown session id {0}")]
    Unknown(String),
    #[error("session {0} is already attached to another connection")]
    Attached(String),
}

/// Who hears a session's events right now.
#[derive(Debug)]
enum Attachment {
    /// A connection is attached; notifications go to its writer.
    Attached {
        connection: u64,
        outgoing: mpsc::Sender<Outgoing>,
    },
    /// No connection; the expiry timer armed for `epoch` will end the session.
    Detached { epoch: u64 },
    /// The TTL ran out; the session is gone and cannot be resumed.
    Expired,
}

/// One session: its processes and its attachment.
pub(crate) struct Session {
    /// The UUID v4 the client resumes by.
    pub(crate) id: String,
    /// The processes this session owns; no other session can see them.
    pub(crate) processes: ProcessTable,
    /// Which connection hears events; see the module diagram.
    attachment: Mutex<Attachment>,
    /// Bumped on every attach and detach, so work bound to an old attachment can notice.
    generation: watch::Sender<u64>,
    /// The split-grant fallback's cost has been logged for this session.
    pub(crate) split_cost_logged: std::sync::atomic::AtomicBool,
}

impl Session {
    /// The writer of the attached connection, and the generation it belongs to.
    pub(crate) fn notifier(&self) -> Option<(mpsc::Sender<Outgoing>, watch::Receiver<u64>)> {
        let attachment = self.attachment.lock().unwrap();
        match &*attachment {
            Attachment::Attached { outgoing, .. } => {
                Some((outgoing.clone(), self.generation.subscribe()))
            }
            _ => None,
        }
    }

    /// A receiver that changes when the current attachment ends.
    pub(crate) fn watch_generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
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
    next_epoch: std::sync::atomic::AtomicU64,
    /// Server shutdown: timers stop waiting (shutdown kills everything itself).
    cancel: CancellationToken,
}

impl SessionRegistry {
    pub(super) fn new(
        config: ServerConfig,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            sessions: Mutex::new(HashMap::new()),
            config,
            tracker,
            next_epoch: std::sync::atomic::AtomicU64::new(1),
            cancel,
        })
    }

    /// A new session attached to `connection`.
    pub(super) fn create(&self, connection: u64, outgoing: mpsc::Sender<Outgoing>) -> Arc<Session> {
        let id = uuid::Uuid::new_v4().to_string();
        let session = Arc::new(Session {
            id: id.clone(),
            processes: ProcessTable::new(
                self.config.clone(),
                self.tracker.clone(),
                self.cancel.clone(),
            ),
            attachment: Mutex::new(Attachment::Attached {
                connection,
                outgoing,
            }),
            generation: watch::Sender::new(0),
            split_cost_logged: std::sync::atomic::AtomicBool::new(false),
        });
        self.sessions.lock().unwrap().insert(id, session.clone());
        tracing::debug!(session = %session.id, "session created");
        session
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
        {
            let mut attachment = session.attachment.lock().unwrap();
            match &*attachment {
                Attachment::Attached { .. } => return Err(ResumeError::Attached(id.to_string())),
                Attachment::Expired => return Err(ResumeError::Unknown(id.to_string())),
                Attachment::Detached { .. } => {
                    *attachment = Attachment::Attached {
                        connection,
                        outgoing,
                    };
                }
            }
        }
        session.bump();
        tracing::debug!(session = %id, "session resumed");
        Ok(session)
    }

    /// Detaches `session` if `connection` still holds it, and arms its expiry timer.
    pub(super) fn detach(self: &Arc<Self>, session: &Arc<Session>, connection: u64) {
        let epoch = self
            .next_epoch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut attachment = session.attachment.lock().unwrap();
            match &*attachment {
                Attachment::Attached { connection: c, .. } if *c == connection => {
                    *attachment = Attachment::Detached { epoch };
                }
                _ => return,
            }
        }
        session.bump();
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

    /// Ends a session still detached since `epoch`: kills its processes and forgets it.
    fn expire(&self, session: &Arc<Session>, epoch: u64) {
        {
            let mut attachment = session.attachment.lock().unwrap();
            match &*attachment {
                Attachment::Detached { epoch: e } if *e == epoch => {
                    *attachment = Attachment::Expired
                }
                _ => return,
            }
        }
        self.sessions.lock().unwrap().remove(&session.id);
        session.processes.kill_all();
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

impl Session {
    /// The connection this session is attached to, if any.
    pub(crate) fn attached_connection(&self) -> Option<u64> {
        match &*self.attachment.lock().unwrap() {
            Attachment::Attached { connection, .. } => Some(*connection),
            _ => None,
        }
    }

    /// Completes once the session is attached to a connection other than `connection`.
    pub(crate) async fn resumed_elsewhere(&self, connection: u64) {
        let mut generation = self.watch_generation();
        loop {
            if matches!(self.attached_connection(), Some(c) if c != connection) {
                return;
            }
            if generation.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
