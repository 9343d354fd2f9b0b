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
//! send), not the session.

use std::sync::Mutex;

use tokio::sync::{mpsc, watch};

use crate::rpc::Outgoing;

/// The states of the diagram.
#[derive(Debug)]
enum State {
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
    /// Bumped on every attach and detach, so work bound to an old attachment can notice.
    generation: watch::Sender<u64>,
}

impl Attachment {
    /// Attached to `connection`, which hears events on `outgoing`.
    pub(crate) fn new(connection: u64, outgoing: mpsc::Sender<Outgoing>) -> Self {
        Self {
            state: Mutex::new(State::Attached {
                connection,
                outgoing,
            }),
            generation: watch::Sender::new(0),
        }
    }

    /// The writer of the attached connection, and a receiver that changes when that attachment
    /// ends.
    pub(crate) fn notifier(&self) -> Option<(mpsc::Sender<Outgoing>, watch::Receiver<u64>)> {
        match &*self.state.lock().unwrap() {
            State::Attached { outgoing, .. } => {
                Some((outgoing.clone(), self.generation.subscribe()))
            }
            _ => None,
        }
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
        let mut state = self.state.lock().unwrap();
        match &*state {
            State::Detached { epoch: e } if *e == epoch => {
                *state = State::Expired;
                true
            }
            _ => false,
        }
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
        (Attachment::new(connection, tx), rx)
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
        let (_, mut generation) = a.notifier().unwrap();
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
