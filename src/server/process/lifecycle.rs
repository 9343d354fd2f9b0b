//! The lifecycle of one process, from its id's reservation to its id being free again.
//!
//! ```text
//!   (table) Starting ──spawned──► Running ──exit──► Exited ──every stream at EOF──► Closed
//!              │                                                                      │
//!              └──spawn failed──► (id free)                  closed TTL ──► (id free again)
//! ```
//! `Starting` is the table's reservation of the id while the child is being spawned (there is no
//! process yet); the rest is [`Lifecycle`], held by the process's output log, which assigns the
//! seqs of `exited` and `closed`. `closed` always comes after `exited`: a child whose streams end
//! first stays `Running` until it is reaped, then goes through `Exited` to `Closed` at once.

/// Where one spawned process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Spawned; not reaped yet.
    Running,
    /// Reaped (`process/exited` has seq `exit_seq`); some output stream still open.
    Exited { exit_seq: u64, code: i32 },
    /// Reaped and every stream at EOF (`process/closed` has seq `closed_seq`): nothing more
    /// will happen to it.
    Closed {
        exit_seq: u64,
        code: i32,
        closed_seq: u64,
    },
}

/// What can happen to a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The child was reaped with `code`; its event got `seq`.
    Exit { seq: u64, code: i32 },
    /// Every output stream reached EOF after the exit; the event got `seq`.
    Close { seq: u64 },
}

/// An event that cannot happen in a state (a bug in the pump, never the client's doing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("process lifecycle: {event:?} cannot happen when {from:?}")]
pub struct Impossible {
    pub from: Lifecycle,
    pub event: Event,
}

impl Lifecycle {
    /// The one transition function: the state after `event`.
    pub fn next(self, event: Event) -> Result<Self, Impossible> {
        match (self, event) {
            (Self::Running, Event::Exit { seq, code }) => Ok(Self::Exited {
                exit_seq: seq,
                code,
            }),
            (Self::Exited { exit_seq, code }, Event::Close { seq }) => Ok(Self::Closed {
                exit_seq,
                code,
                closed_seq: seq,
            }),
            (from, event) => Err(Impossible { from, event }),
        }
    }

    /// Reaped (exited or closed).
    pub fn exited(self) -> bool {
        !matches!(self, Self::Running)
    }

    /// Nothing more will happen: no signal may be sent to its group any more (the pid may be
    /// reused).
    pub fn closed(self) -> bool {
        matches!(self, Self::Closed { .. })
    }

    /// The exit code, once reaped.
    pub fn exit_code(self) -> Option<i32> {
        match self {
            Self::Running => None,
            Self::Exited { code, .. } | Self::Closed { code, .. } => Some(code),
        }
    }

    /// The seq of `process/exited`, once reaped.
    pub fn exit_seq(self) -> Option<u64> {
        match self {
            Self::Running => None,
            Self::Exited { exit_seq, .. } | Self::Closed { exit_seq, .. } => Some(exit_seq),
        }
    }

    /// The seq of `process/closed`, once closed.
    pub fn closed_seq(self) -> Option<u64> {
        match self {
            Self::Closed { closed_seq, .. } => Some(closed_seq),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT: Event = Event::Exit { seq: 3, code: 7 };
    const CLOSE: Event = Event::Close { seq: 4 };

    #[test]
    fn running_then_exit_is_exited_with_its_code_and_seq() {
        let s = Lifecycle::Running.next(EXIT).unwrap();
        assert_eq!(
            s,
            Lifecycle::Exited {
                exit_seq: 3,
                code: 7
            }
        );
        assert!(s.exited() && !s.closed());
        assert_eq!(
            (s.exit_code(), s.exit_seq(), s.closed_seq()),
            (Some(7), Some(3), None)
        );
    }

    #[test]
    fn exited_then_close_is_closed_keeping_the_exit() {
        let s = Lifecycle::Running.next(EXIT).unwrap().next(CLOSE).unwrap();
        assert_eq!(
            s,
            Lifecycle::Closed {
                exit_seq: 3,
                code: 7,
                closed_seq: 4
            }
        );
        assert!(s.exited() && s.closed());
        assert_eq!(
            (s.exit_code(), s.exit_seq(), s.closed_seq()),
            (Some(7), Some(3), Some(4))
        );
    }

    #[test]
    fn running_cannot_close_before_it_exits() {
        assert_eq!(
            Lifecycle::Running.next(CLOSE),
            Err(Impossible {
                from: Lifecycle::Running,
                event: CLOSE
            })
        );
        assert_eq!(Lifecycle::Running.exit_code(), None);
        assert!(!Lifecycle::Running.exited());
    }

    #[test]
    fn a_process_exits_once() {
        let exited = Lifecycle::Running.next(EXIT).unwrap();
        assert!(exited.next(EXIT).is_err());
    }

    #[test]
    fn nothing_happens_after_closed() {
        let closed = Lifecycle::Running.next(EXIT).unwrap().next(CLOSE).unwrap();
        assert!(closed.next(EXIT).is_err());
        assert!(closed.next(CLOSE).is_err());
    }
}
