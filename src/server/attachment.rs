//! Who hears a session's events right now: the connection it is attached to, if any.
//!
//! ```text
//!   new ──► Attached{conn} ──connection drops──► Detached{epoch} ──TTL──► Expired
//!              ▲                                     │
//!              └──────── initialize{resume} ─────────┘
//! ```
//! A resume while Attached is refused (-32010, retryable): the old connection has not been seen
//! to drop yet. Every transition bumps a generation, which wakes anything bound to the previous
//! attachment: long-polls fail with "resumed by another connection", blocked notification sends
//! give up (the client catches up with `process/read`).
//!
//! The session owns one, and so does each of its process pumps: a pump needs only this (where to
//! send, and whether it may read on: [`Flow`]), not the session.
//!
//! Each attachment carries a byte budget for the process output sent to its connection
//! (`--max-outgoing-bytes`): a pump takes a message's size from it before queueing the message,
//! and the writer gives it back once the message is in the socket's hands. A connection that
//! stops reading so holds at most that many bytes of output, and its pumps wait.

use std::sync::Arc;
use std::sync::Mutex;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::rpc::Outgoing;

/// The states of the diagram.
#[derive(Debug)]
enum State {
    /// A connection is attached; notifications go to its writer.
    Attached {
        connection: u64,
        outgoing: mpsc::Sender<Outgoing>,
        /// This connection's byte budget for process output.
        budget: Arc<Semaphore>,
    },
    /// No connection; the expiry timer armed for `epoch` will end the session.
    Detached { epoch: u64 },
    /// The TTL ran out; the session is gone and cannot be resumed.
    Expired,
}

/// Why a re-attach was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Another connection still holds it.
    Attached,
    /// It expired.
    Expired,
}

/// One session's attachment.
#[derive(Debug)]
pub(crate) struct Attachment {
    /// The current state; a std mutex, never held across an await.
    state: Mutex<State>,
    /// Bumped on every attach, detach and expiry, so work bound to an old attachment can notice.
    generation: watch::Sender<u64>,
    /// Each connection's budget for process output, in bytes (`--max-outgoing-bytes`).
    budget_bytes: usize,
}

/// Where a session's output can go now, as a process's pump sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// A connection is attached.
    Attached,
    /// No connection; the session may still be resumed.
    Detached,
    /// Nobody can ever read the output again (the session expired).
    Expired,
}

/// Where to send one notification: the attached connection's writer and byte budget, and a
/// receiver that changes when that attachment ends.
pub(crate) struct Notifier {
    /// The connection's writer.
    outgoing: mpsc::Sender<Outgoing>,
    /// The connection's byte budget for process output.
    budget: Arc<Semaphore>,
    /// Its size: a larger message takes all of it.
    budget_bytes: usize,
    /// Changes when the attachment this notifier belongs to ends.
    pub(crate) generation: watch::Receiver<u64>,
}

impl Notifier {
    /// Queues `text` on the connection's writer once its size fits in the connection's byte
    /// budget (a message larger than the whole budget takes all of it). Gives up (the message
    /// is not sent) when the attachment ends meanwhile or the connection is gone.
    pub(crate) async fn send(&mut self, text: crate::rpc::Text) {
        let Self {
            outgoing,
            budget,
            budget_bytes,
            generation,
        } = self;
        let Ok(size) = u32::try_from(text.len().clamp(1, *budget_bytes)) else {
            return;
        };
        let send = async move {
            let permit: OwnedSemaphorePermit = match budget.clone().acquire_many_owned(size).await {
                Ok(permit) => permit,
                Err(_) => return,
            };
            let _ = outgoing.send(Outgoing::Budgeted(text, permit)).await;
        };
        tokio::select! {
            _ = send => {}
            _ = generation.changed() => {}
        }
    }
}

impl Attachment {
    /// Attached to `connection`, which hears events on `outgoing`.
    /// Each connection it is attached to may have `budget_bytes` of process output queued.
    pub(crate) fn new(
        connection: u64,
        outgoing: mpsc::Sender<Outgoing>,
        budget_bytes: usize,
    ) -> Self {
        let budget_bytes = budget_bytes.clamp(1, u32::MAX as usize);
        Self {
            state: Mutex::new(State::Attached {
                connection,
                outgoing,
                budget: Arc::new(Semaphore::new(budget_bytes)),
            }),
            generation: watch::Sender::new(0),
            budget_bytes,
        }
    }

    /// Where to send a notification now, if a connection is attached.
    pub(crate) fn notifier(&self) -> Option<Notifier> {
        match &*self.state.lock().unwrap() {
            State::Attached {
                outgoing, budget, ..
            } => Some(Notifier {
                outgoing: outgoing.clone(),
                budget: budget.clone(),
                budget_bytes: self.budget_bytes,
                generation: self.generation.subscribe(),
            }),
            _ => None,
        }
    }

    /// Where the output can go now.
    pub(crate) fn flow(&self) -> Flow {
        match &*self.state.lock().unwrap() {
            State::Attached { .. } => Flow::Attached,
            State::Detached { .. } => Flow::Detached,
            State::Expired => Flow::Expired,
        }
    }

    /// A receiver that changes on every attach, detach and expiry.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The per-connection byte budget.
    pub(crate) fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }

    /// The connection attached, if any.
    pub(crate) fn attached_connection(&self) -> Option<u64> {
        match &*self.state.lock().unwrap() {
            State::Attached { connection, .. } => Some(*connection),
            _ => None,
        }
    }

    /// Completes once attached to a connection other than `connection`.
    pub(crate) async fn resumed_elsewhere(&self, connection: u64) {
        let mut generation = self.generation.subscribe();
        loop {
            if matches!(self.attached_connection(), Some(c) if c != connection) {
                return;
            }
            if generation.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Detached → Attached to `connection`.
    pub(crate) fn reattach(
        &self,
        connection: u64,
        outgoing: mpsc::Sender<Outgoing>,
    ) -> Result<(), Refused> {
        {
            let mut state = self.state.lock().unwrap();
            match &*state {
                State::Attached { .. } => return Err(Refused::Attached),
                State::Expired => return Err(Refused::Expired),
                State::Detached { .. } => {
                    *state = State::Attached {
                        connection,
                        outgoing,
                        budget: Arc::new(Semaphore::new(self.budget_bytes)),
                    }
                }
            }
        }
        self.bump();
        Ok(())
    }

    /// Attached to `connection` → Detached for `epoch`. False (nothing changes) when another
    /// connection holds it now: a stale connection cannot detach a newer one.
    pub(crate) fn detach(&self, connection: u64, epoch: u64) -> bool {
        {
            let mut state = self.state.lock().unwrap();
            match &*state {
                State::Attached { connection: c, .. } if *c == connection => {
                    *state = State::Detached { epoch }
                }
                _ => return false,
            }
        }
        self.bump();
        true
    }

    /// Detached since `epoch` → Expired. False when it was re-attached (or detached again,
    /// with a newer timer) meanwhile.
    pub(crate) fn expire(&self, epoch: u64) -> bool {
        {
            let mut state = self.state.lock().unwrap();
            match &*state {
                State::Detached { epoch: e } if *e == epoch => *state = State::Expired,
                _ => return false,
            }
        }
        // Pumps waiting for a resume drain what is left.
        self.bump();
        true
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(connection: u64) -> (Attachment, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(1);
        (Attachment::new(connection, tx, 1 << 20), rx)
    }

    #[test]
    fn a_stale_connection_cannot_detach_the_one_that_resumed() {
        let (a, _rx) = attached(1);
        assert!(a.detach(1, 10));
        let (tx2, _rx2) = mpsc::channel(1);
        assert_eq!(a.reattach(2, tx2), Ok(()));
        assert!(!a.detach(1, 11), "connection 1 no longer holds it");
        assert_eq!(a.attached_connection(), Some(2));
    }

    #[test]
    fn resume_while_attached_is_refused_and_after_expiry_too() {
        let (a, _rx) = attached(1);
        let (tx, _rx2) = mpsc::channel(1);
        assert_eq!(a.reattach(2, tx.clone()), Err(Refused::Attached));
        assert!(a.detach(1, 5));
        assert!(a.expire(5));
        assert_eq!(a.reattach(2, tx), Err(Refused::Expired));
        assert!(a.notifier().is_none());
    }

    #[test]
    fn a_timer_armed_for_an_older_detach_does_not_expire_a_newer_one() {
        let (a, _rx) = attached(1);
        assert!(a.detach(1, 5));
        let (tx, _rx2) = mpsc::channel(1);
        a.reattach(2, tx).unwrap();
        assert!(a.detach(2, 6));
        assert!(!a.expire(5), "the epoch-5 timer is stale");
        assert!(a.expire(6));
    }

    #[tokio::test]
    async fn every_transition_wakes_what_was_bound_to_the_attachment_before() {
        let (a, _rx) = attached(1);
        let mut generation = a.notifier().unwrap().generation;
        assert!(a.detach(1, 1));
        assert!(generation.has_changed().unwrap());
        generation.mark_unchanged();
        let (tx, _rx2) = mpsc::channel(1);
        a.reattach(2, tx).unwrap();
        assert!(generation.has_changed().unwrap());
        // Connection 1's long-poll gives up now that connection 2 holds the session.
        tokio::time::timeout(std::time::Duration::from_secs(5), a.resumed_elsewhere(1))
            .await
            .expect("resumed elsewhere");
    }
}
