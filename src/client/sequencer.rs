//! The order of one process's events, as the client publishes them: strictly by seq, each seq
//! once. This file is pure (no I/O, no tasks), so every ordering and recovery rule is unit-tested
//! here; `process.rs` feeds it notifications and `recovery.rs` feeds it catch-up reads.
//!
//! Two inputs:
//! - [`Sequencer::push`]: one pushed notification. Seqs at or below the last published one are
//!   duplicates and dropped; a seq above the next one waits in `pending` until the hole fills.
//! - [`Sequencer::recover`]: what `process/read {afterSeq: last published}` returned after a
//!   reconnect ([`CatchUp`]). Its chunks, the live notifications already pending and, at most, one
//!   seq for the exit (a read returns no exit event, only `exited`/`exitCode`) must account for
//!   every seq from the last published one up to the read's end. Anything else is a gap: output
//!   the server no longer retains. Then the process fails with [`SequenceError::Gap`] and nothing
//!   of that catch-up is published (an error leaves the sequencer as it was).
//! - [`Sequencer::take_contiguous`]: while the catch-up reads go on, the chunks that simply
//!   continue the sequence are published at once, so a catch-up cut short by another drop keeps
//!   its progress; only what follows a hole waits for `recover`.

use std::collections::{BTreeMap, VecDeque};

use crate::protocol::process::Stream;

/// One event of a process, decoded, as a handle receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    /// Bytes the process wrote (`process/output`, or a chunk of a catch-up read).
    Output {
        /// Place in the process's sequence.
        seq: u64,
        /// Which stream the bytes came from.
        stream: Stream,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The process exited (`process/exited`). Output may still follow (a child holding a pipe).
    Exited {
        /// Place in the process's sequence.
        seq: u64,
        /// The exit code; 128+N for a death by signal N; -1 when unknown.
        exit_code: i32,
        /// The executor's verdict that the sandbox denied something.
        sandbox_denied: bool,
    },
    /// Every stream reached EOF after the exit (`process/closed`). Always the last event.
    Closed {
        /// Place in the process's sequence.
        seq: u64,
    },
}

impl ProcessEvent {
    /// The event's place in its process's sequence.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Output { seq, .. } | Self::Exited { seq, .. } | Self::Closed { seq } => *seq,
        }
    }

    /// The event's kind, for messages.
    fn kind(&self) -> &'static str {
        match self {
            Self::Output { .. } => "output",
            Self::Exited { .. } => "exit",
            Self::Closed { .. } => "close",
        }
    }
}

/// Why a process's events cannot be published faithfully.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// Events were produced while disconnected and dropped by the server's retention before the
    /// client could read them back.
    #[error(
        "{missing} event(s) starting at seq {first_missing} are no longer retained by the server \
         (the first it still has is seq {first_retained}): output produced while disconnected \
         outran its retention (`--retained-output-bytes`)"
    )]
    Gap {
        /// The first seq nobody accounts for.
        first_missing: u64,
        /// How many seqs nobody accounts for.
        missing: u64,
        /// The first seq after `first_missing` that the read or a notification did return.
        first_retained: u64,
    },
    /// The read says the process exited, but gives no exit code.
    #[error("the server reports that the process exited (seq {seq}) without its exit code")]
    ExitWithoutCode {
        /// The seq the exit must have had.
        seq: u64,
    },
    /// The read says the process exited, but every seq up to its end is taken by other events.
    #[error(
        "the server reports that the process exited, but no seq up to {end_seq} is left for the exit"
    )]
    ExitWithoutSeq {
        /// The last seq the read accounts for.
        end_seq: u64,
    },
    /// The close's seq (the last one) is also an output or exit event, or output follows it.
    #[error(
        "the server reports the close at seq {seq}, which conflicts with output or exit events"
    )]
    CloseConflictsWithOutput {
        /// The close's seq.
        seq: u64,
    },
    /// One seq arrived as two different kinds of event.
    #[error("seq {seq} arrived as both {first} and {second}")]
    Conflict {
        /// The disputed seq.
        seq: u64,
        /// The kind seen first.
        first: &'static str,
        /// The kind seen second.
        second: &'static str,
    },
    /// The server could not observe the process (`failure` in a read).
    #[error("the server reports a failure of the process: {message}")]
    ProcessFailed {
        /// The server's message.
        message: String,
    },
}

/// What the catch-up reads after a reconnect returned, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// The returned chunks as [`ProcessEvent::Output`], ascending by seq.
    pub chunks: Vec<ProcessEvent>,
    /// The last seq the reads account for.
    pub end_seq: u64,
    /// True if `end_seq` is the end of the process's whole history at the last read (the read
    /// was not cut by `maxBytes`): then the exit and the close, if the read reports them, lie at
    /// or below it. False when the reads stopped because live notifications took over: then a
    /// reported exit may still arrive as a notification.
    pub complete: bool,
    /// `exited` of the last read.
    pub exited: bool,
    /// `exitCode` of the last read.
    pub exit_code: Option<i32>,
    /// `closed` of the last read.
    pub closed: bool,
    /// `sandboxDenied` of the last read.
    pub sandbox_denied: bool,
    /// `failure` of the last read.
    pub failure: Option<String>,
    /// `exitedSeq` of the last read (servers with `readGaps`): where the exit sits exactly.
    pub exited_seq: Option<u64>,
    /// `gap` of the reads (servers with `readGaps`), merged: the seqs retention dropped.
    pub gap: Option<(u64, u64)>,
}

/// The ordering state of one process.
#[derive(Debug, Default)]
pub struct Sequencer {
    /// Every event up to this seq has been published, in order; 0 before the first.
    last_published: u64,
    /// Events above `last_published + 1`, waiting for the hole below them to fill.
    pending: BTreeMap<u64, ProcessEvent>,
    /// The exit has been published.
    exit_published: bool,
    /// The close has been published: nothing more will be.
    finished: bool,
}

impl Sequencer {
    /// The seq of the last published event (0 before the first).
    pub fn last_published(&self) -> u64 {
        self.last_published
    }

    /// True once the close has been published.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Takes one pushed event; returns the events it makes publishable, in seq order.
    pub fn push(&mut self, event: ProcessEvent) -> Result<Vec<ProcessEvent>, SequenceError> {
        let seq = event.seq();
        if self.finished || seq <= self.last_published {
            return Ok(Vec::new());
        }
        if let Some(existing) = self.pending.get(&seq) {
            return if existing.kind() == event.kind() {
                Ok(Vec::new())
            } else {
                Err(conflict(existing, &event))
            };
        }
        // A pending close is the highest pending seq: nothing above one is ever accepted.
        let closed_at = match self.pending.last_key_value() {
            Some((seq, ProcessEvent::Closed { .. })) => Some(*seq),
            _ => None,
        };
        match (&event, closed_at) {
            (ProcessEvent::Closed { .. }, _) if self.pending.range(seq + 1..).next().is_some() => {
                return Err(SequenceError::CloseConflictsWithOutput { seq });
            }
            (_, Some(closed)) if seq > closed => {
                return Err(SequenceError::CloseConflictsWithOutput { seq: closed });
            }
            _ => {}
        }
        self.pending.insert(seq, event);
        Ok(self.drain_ready())
    }

    /// Publishes the leading chunks of a catch-up in progress that continue the sequence (or
    /// repeat what was published), and leaves the rest, from the first hole on, in `chunks` for
    /// [`Sequencer::recover`]. So a long catch-up makes progress that survives another cut.
    pub fn take_contiguous(
        &mut self,
        chunks: &mut VecDeque<ProcessEvent>,
    ) -> Result<Vec<ProcessEvent>, SequenceError> {
        let mut released = Vec::new();
        while !self.finished
            && let Some(chunk) = chunks.front()
            && chunk.seq() <= self.last_published + 1
        {
            let chunk = chunks.pop_front().expect("front exists");
            released.extend(self.push(chunk)?);
        }
        Ok(released)
    }

    /// Takes what the catch-up reads returned; returns the events now publishable, in seq order.
    /// On error nothing changes.
    pub fn recover(&mut self, catch_up: CatchUp) -> Result<Vec<ProcessEvent>, SequenceError> {
        if let Some(message) = catch_up.failure {
            return Err(SequenceError::ProcessFailed { message });
        }
        let end = catch_up.end_seq;
        if self.finished || end <= self.last_published {
            return Ok(Vec::new());
        }
        let start = self.last_published + 1;
        let mut found = BTreeMap::new();
        for chunk in catch_up.chunks {
            let seq = chunk.seq();
            if seq < start || seq > end {
                continue;
            }
            if let Some(existing) = self.pending.get(&seq)
                && existing.kind() != chunk.kind()
            {
                return Err(match existing {
                    ProcessEvent::Closed { .. } => SequenceError::CloseConflictsWithOutput { seq },
                    _ => conflict(existing, &chunk),
                });
            }
            found.insert(seq, chunk);
        }
        if catch_up.complete && catch_up.closed {
            let pending_other = matches!(
                self.pending.get(&end),
                Some(e) if !matches!(e, ProcessEvent::Closed { .. })
            );
            let pending_after = self.pending.range(end + 1..).next().is_some();
            if found.contains_key(&end) || pending_other || pending_after {
                return Err(SequenceError::CloseConflictsWithOutput { seq: end });
            }
            found.insert(end, ProcessEvent::Closed { seq: end });
        }

        let covered = |seq: u64, found: &BTreeMap<u64, ProcessEvent>| {
            found.contains_key(&seq) || self.pending.contains_key(&seq)
        };
        // The server says where the exit is: put it there, instead of in the one seq left over.
        let mut exit_placed = false;
        if let Some(exit_seq) = catch_up.exited_seq
            && (start..=end).contains(&exit_seq)
            && !self.exit_published
        {
            let exit = |exit_code| ProcessEvent::Exited {
                seq: exit_seq,
                exit_code,
                sandbox_denied: catch_up.sandbox_denied,
            };
            match found.get(&exit_seq).or(self.pending.get(&exit_seq)) {
                Some(ProcessEvent::Exited { .. }) => {}
                Some(other) => return Err(conflict(other, &exit(0))),
                None => {
                    let Some(exit_code) = catch_up.exit_code else {
                        return Err(SequenceError::ExitWithoutCode { seq: exit_seq });
                    };
                    found.insert(exit_seq, exit(exit_code));
                }
            }
            exit_placed = true;
        }
        // The server says which seqs it dropped: those nobody else accounts for are lost output
        // (the exit's and the close's seqs inside the range never were output).
        if let Some((from, to)) = catch_up.gap {
            let lost: Vec<u64> = (from.max(start)..=to.min(end))
                .filter(|s| !covered(*s, &found) && Some(*s) != catch_up.exited_seq)
                .collect();
            if let Some(&first_missing) = lost.first() {
                return Err(SequenceError::Gap {
                    first_missing,
                    missing: lost.len() as u64,
                    first_retained: (first_missing + 1..=end)
                        .find(|s| covered(*s, &found))
                        .unwrap_or(end + 1),
                });
            }
        }
        let covered_count = found.len() as u64
            + self
                .pending
                .range(start..=end)
                .filter(|(seq, _)| !found.contains_key(seq))
                .count() as u64;
        let missing = (end - start + 1) - covered_count;
        let first_missing = (start..=end).find(|s| !covered(*s, &found));

        let exit_known = self.exit_published
            || self
                .pending
                .values()
                .any(|e| matches!(e, ProcessEvent::Exited { .. }));
        let exit_expected_here =
            catch_up.exited && !exit_known && !exit_placed && (catch_up.complete || missing > 0);
        let gap = |first_missing: u64, missing: u64, found: &BTreeMap<u64, ProcessEvent>| {
            let first_retained = (first_missing + 1..=end)
                .find(|s| covered(*s, found))
                .unwrap_or(end + 1);
            SequenceError::Gap {
                first_missing,
                missing,
                first_retained,
            }
        };
        match (exit_expected_here, first_missing) {
            (true, None) => return Err(SequenceError::ExitWithoutSeq { end_seq: end }),
            (true, Some(slot)) if missing == 1 => {
                let Some(exit_code) = catch_up.exit_code else {
                    return Err(SequenceError::ExitWithoutCode { seq: slot });
                };
                found.insert(
                    slot,
                    ProcessEvent::Exited {
                        seq: slot,
                        exit_code,
                        sandbox_denied: catch_up.sandbox_denied,
                    },
                );
            }
            (_, Some(first)) => {
                // With an exit expected, one of the missing seqs is the exit, not lost output.
                let lost = if exit_expected_here {
                    missing - 1
                } else {
                    missing
                };
                return Err(gap(first, lost.max(1), &found));
            }
            (false, None) => {}
        }
        self.pending.extend(found);
        Ok(self.drain_ready())
    }

    /// Moves the contiguous run after `last_published` out of `pending`.
    fn drain_ready(&mut self) -> Vec<ProcessEvent> {
        let mut ready = Vec::new();
        while let Some(event) = self.pending.remove(&(self.last_published + 1)) {
            self.last_published += 1;
            match event {
                ProcessEvent::Exited { .. } => self.exit_published = true,
                ProcessEvent::Closed { .. } => self.finished = true,
                ProcessEvent::Output { .. } => {}
            }
            ready.push(event);
            if self.finished {
                self.pending.clear();
                break;
            }
        }
        ready
    }
}

/// The error for one seq seen as two kinds of event.
fn conflict(first: &ProcessEvent, second: &ProcessEvent) -> SequenceError {
    if matches!(first, ProcessEvent::Closed { .. }) || matches!(second, ProcessEvent::Closed { .. })
    {
        return SequenceError::CloseConflictsWithOutput { seq: first.seq() };
    }
    SequenceError::Conflict {
        seq: first.seq(),
        first: first.kind(),
        second: second.kind(),
    }
}

#[cfg(test)]
#[path = "sequencer_tests.rs"]
mod tests;
