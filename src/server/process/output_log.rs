//! The output log of one process: the single source of truth for its events. It assigns the one
//! sequence shared by output, exit and close, retains the newest output up to a byte budget
//! (oldest chunks dropped first, seqs never renumbered), and answers `process/read`.
//! Notifications and reads both come from here, which is what makes resume lossless.
//!
//! What may be dropped (issue 15) is set by the pump ([`OutputLog::set_retain`], [`Retain`]):
//! output up to the client's last known position (`acked`: its `process/ack`s and
//! `process/read`'s `afterSeq`) always may, oldest first, beyond the budget; output after it
//! only in a ring. Output logged while nothing unacknowledged could be dropped is *held*: a ring
//! keeps it until it is acknowledged (a client that resumes and reads it back), unless the holds
//! are released ([`Retain::Any`]). The pump stops
//! reading while [`OutputLog::unacked_bytes`] is at its threshold.

use std::collections::VecDeque;

use base64::Engine;
use bytes::Bytes;

use super::lifecycle::{Event, Lifecycle};
use crate::protocol::process::{ReadChunk, ReadGap, ReadResult, Stream};
use crate::rpc::Text;

/// One retained chunk.
#[derive(Debug, Clone)]
struct LogChunk {
    /// Its place in the process's sequence.
    seq: u64,
    /// Where it came from.
    stream: Stream,
    /// Base64 of the bytes: a slice of the `process/output` notification that carried them, so
    /// they are encoded once, for the notification and every read, and held once.
    base64: Bytes,
    /// Raw length, for the retention budget and `maxBytes`.
    len: usize,
}

/// What the log may drop, oldest first, once over a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retain {
    /// Only acknowledged output, beyond the retention limit; what is logged now is held.
    Acked,
    /// Any output beyond this many bytes, except held output not yet acknowledged.
    Ring(usize),
    /// Any output beyond this many bytes; holds are released.
    Any(usize),
}

/// A process's events so far.
#[derive(Debug)]
pub struct OutputLog {
    /// The next unused seq; seqs start at 1.
    next_seq: u64,
    /// Retained output, oldest first.
    chunks: VecDeque<LogChunk>,
    /// Sum of `len` over `chunks`.
    retained: usize,
    /// Retention budget in raw bytes.
    limit: usize,
    /// Running, exited or closed, with the seqs and code of those events.
    lifecycle: Lifecycle,
    /// Set when the process could not be waited for.
    failure: Option<String>,
    /// The sandbox heuristic's verdict at exit.
    sandbox_denied: bool,
    /// Chunks and raw bytes dropped from retention since [`Self::take_dropped`] (for metrics).
    dropped: (u64, u64),
    /// The process was stopped by its `timeoutMs`.
    timed_out: bool,
    /// The highest seq retention ever dropped (0: none); every output seq up to it is gone.
    dropped_through: u64,
    /// The client's last known position: every seq up to it was processed.
    acked: u64,
    /// Sum of `len` over the chunks after `acked`.
    unacked: usize,
    /// What may be dropped.
    retain: Retain,
    /// Output up to this seq logged under [`Retain::Acked`] is held until acknowledged.
    held_through: u64,
    /// Whether the client acknowledges this process's output: `None` until its first
    /// `process/ack`; `Some(true)` since (what it has not acknowledged is kept while the session
    /// lives); `Some(false)` once it said it no longer follows the process.
    acking: Option<bool>,
    /// Nothing is retained any more, not even the newest chunk ([`Self::discard_retained`]).
    discarding: bool,
}

/// What a `process/ack` says of the client's following of the process, besides its seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Following {
    /// Nothing (a `process/read`'s `afterSeq`).
    Unchanged,
    /// `process/ack` without `following`: the client acknowledges, unless it already said it
    /// no longer follows the process (a late batch must not undo that).
    Acking,
    /// `process/ack` with `following`.
    Explicit(bool),
}

impl OutputLog {
    pub fn new(limit: usize) -> Self {
        Self {
            next_seq: 1,
            chunks: VecDeque::new(),
            retained: 0,
            limit,
            lifecycle: Lifecycle::Running,
            failure: None,
            sandbox_denied: false,
            dropped: (0, 0),
            timed_out: false,
            dropped_through: 0,
            acked: 0,
            unacked: 0,
            retain: Retain::Any(limit),
            held_through: 0,
            acking: None,
            discarding: false,
        }
    }

    /// Drops every retained chunk, now and as output comes (its session expired: nobody can
    /// read it any more). Seqs go on; the drops are counted like retention's.
    pub fn discard_retained(&mut self) {
        self.discarding = true;
        self.trim();
    }

    /// Whether the client acknowledges this process's output.
    pub fn acking(&self) -> bool {
        self.acking == Some(true)
    }

    /// The oldest unacknowledged output is held: a ring cannot drop it, nor what follows.
    pub fn holding(&self) -> bool {
        self.chunks
            .front()
            .is_some_and(|c| c.seq > self.acked && c.seq <= self.held_through)
    }

    /// Takes what a `process/ack` says of the client's following. Returns whether the mode
    /// changed.
    pub fn set_following(&mut self, following: Following) -> bool {
        let acking = match following {
            Following::Unchanged => return false,
            Following::Acking => Some(self.acking != Some(false)),
            Following::Explicit(following) => Some(following),
        };
        std::mem::replace(&mut self.acking, acking) != acking
    }

    /// The retention budget, in raw bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Raw bytes retained after the client's last known position.
    pub fn unacked_bytes(&self) -> usize {
        self.unacked
    }

    /// Says what may be dropped from now on (see the module documentation), and drops it.
    pub fn set_retain(&mut self, retain: Retain) {
        self.retain = retain;
        if matches!(retain, Retain::Any(_)) {
            self.held_through = 0;
        }
        self.trim();
    }

    /// The client has processed every event up to `seq`: output up to it may be dropped. Later
    /// or repeated acknowledgements of less change nothing; a seq not yet given is taken as the
    /// last one given. Returns whether the position moved.
    pub fn ack(&mut self, seq: u64) -> bool {
        let seq = seq.min(self.next_seq - 1);
        if seq <= self.acked {
            return false;
        }
        let from = self.chunks.partition_point(|c| c.seq <= self.acked);
        let to = self.chunks.partition_point(|c| c.seq <= seq);
        for c in self.chunks.range(from..to) {
            self.unacked -= c.len;
        }
        self.acked = seq;
        self.trim();
        true
    }

    /// Drops the oldest chunks that may be dropped, while over budget; keeps the newest chunk
    /// even if it alone is over budget. Once discarding, drops everything.
    fn trim(&mut self) {
        while let Some(front) = self.chunks.front() {
            let is_unacked = front.seq > self.acked;
            let over = self.discarding
                || self.chunks.len() > 1
                    && match self.retain {
                        Retain::Acked => !is_unacked && self.retained > self.limit,
                        // Held output stays until acknowledged (or released).
                        Retain::Ring(_) if is_unacked && front.seq <= self.held_through => false,
                        Retain::Ring(ring) | Retain::Any(ring) => self.retained > ring,
                    };
            if !over {
                break;
            }
            let dropped = self.chunks.pop_front().expect("a front chunk");
            self.retained -= dropped.len;
            if is_unacked {
                self.unacked -= dropped.len;
            }
            self.dropped.0 += 1;
            self.dropped.1 += dropped.len as u64;
            self.dropped_through = dropped.seq;
        }
    }

    /// Chunks and raw bytes dropped from retention since the last call.
    pub fn take_dropped(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.dropped)
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Appends `len` bytes of output: `encode(seq)` makes the message that carries them and
    /// says where their base64 is in it (it is kept for reads). Returns the message.
    pub fn push_output(
        &mut self,
        stream: Stream,
        len: usize,
        encode: impl FnOnce(u64) -> (Text, std::ops::Range<usize>),
    ) -> Text {
        let seq = self.take_seq();
        let (message, base64) = encode(seq);
        self.chunks.push_back(LogChunk {
            seq,
            stream,
            base64: AsRef::<Bytes>::as_ref(&message).slice(base64),
            len,
        });
        self.retained += len;
        self.unacked += len;
        if self.retain == Retain::Acked {
            self.held_through = seq;
        }
        self.trim();
        message
    }

    /// Records the exit; returns its seq.
    pub fn push_exit(&mut self, code: i32, sandbox_denied: bool) -> u64 {
        let seq = self.take_seq();
        self.apply(Event::Exit { seq, code });
        self.sandbox_denied = sandbox_denied;
        seq
    }

    /// Moves the lifecycle on. An impossible event is the pump's bug: logged, state kept.
    fn apply(&mut self, event: Event) {
        match self.lifecycle.next(event) {
            Ok(next) => self.lifecycle = next,
            Err(err) => tracing::error!(%err, "ignored"),
        }
    }

    /// Records that the deadline came while the process was still running (then true); after
    /// its exit it changes nothing (false).
    pub fn mark_timed_out(&mut self) -> bool {
        if self.lifecycle.exited() {
            return false;
        }
        self.timed_out = true;
        true
    }

    /// Whether the process was stopped by its deadline.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Decoded bytes retained.
    pub fn retained_bytes(&self) -> usize {
        self.retained
    }

    /// The seq the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Records a failure to observe the process (its exit code is unknown: -1).
    pub fn set_failure(&mut self, failure: String) {
        self.failure = Some(failure);
    }

    /// Records the close; returns its seq.
    pub fn push_closed(&mut self) -> u64 {
        let seq = self.take_seq();
        self.apply(Event::Close { seq });
        seq
    }

    /// The retained output, decoded, oldest first (for the sandbox-denial heuristic).
    pub fn retained_output(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.retained);
        for c in &self.chunks {
            if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(&c.base64) {
                bytes.extend_from_slice(&decoded);
            }
        }
        bytes
    }

    /// Where the process is.
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle
    }

    /// True if anything with a seq above `after_seq` happened.
    pub fn has_news(&self, after_seq: u64) -> bool {
        self.next_seq - 1 > after_seq
    }

    /// The seqs after `after_seq` whose output retention dropped, as one inclusive range. Only
    /// output is ever dropped, oldest first, so they run from just after `after_seq` to the last
    /// seq dropped; the range is trimmed of the exit's and close's seqs at its ends (they were
    /// never output), but one inside it is covered: `exitedSeq` tells it apart.
    fn gap_after(&self, after_seq: u64) -> Option<ReadGap> {
        let not_output = |seq: u64| {
            Some(seq) == self.lifecycle.exit_seq() || Some(seq) == self.lifecycle.closed_seq()
        };
        let mut from_seq = after_seq + 1;
        while from_seq <= self.dropped_through && not_output(from_seq) {
            from_seq += 1;
        }
        (from_seq <= self.dropped_through).then_some(ReadGap {
            from_seq,
            to_seq: self.dropped_through,
        })
    }

    /// The `process/read` answer for chunks after `after_seq`, at most `max_bytes` of them
    /// (but always the first).
    pub fn read(&self, after_seq: u64, max_bytes: Option<u64>) -> ReadResult {
        let start = self.chunks.partition_point(|c| c.seq <= after_seq);
        let mut chunks = Vec::new();
        let mut bytes = 0u64;
        let mut cut_short = false;
        for c in self.chunks.range(start..) {
            if let Some(max) = max_bytes
                && !chunks.is_empty()
                && bytes + c.len as u64 > max
            {
                cut_short = true;
                break;
            }
            bytes += c.len as u64;
            chunks.push(ReadChunk {
                seq: c.seq,
                stream: c.stream,
                // Base64 is ASCII: the lossy conversion never replaces anything.
                chunk: String::from_utf8_lossy(&c.base64).into_owned(),
            });
        }
        let next_seq = match (cut_short, chunks.last()) {
            (true, Some(last)) => last.seq + 1,
            _ => self.next_seq,
        };
        ReadResult {
            gap: self.gap_after(after_seq),
            exited_seq: self.lifecycle.exit_seq(),
            closed_seq: self.lifecycle.closed_seq(),
            chunks,
            next_seq,
            exited: self.lifecycle.exited(),
            exit_code: self.lifecycle.exit_code(),
            closed: self.lifecycle.closed(),
            failure: self.failure.clone(),
            sandbox_denied: self.sandbox_denied,
            timed_out: self.timed_out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test stand-in for the notification: just the base64, so the whole message is the slice.
    fn push(log: &mut OutputLog, stream: Stream, data: &[u8]) -> u64 {
        let mut seq = 0;
        log.push_output(stream, data.len(), |s| {
            seq = s;
            let text = base64::engine::general_purpose::STANDARD.encode(data);
            let len = text.len();
            (Text::from(text), 0..len)
        });
        seq
    }

    #[test]
    fn output_exit_and_close_share_one_sequence() {
        let mut log = OutputLog::new(1024);
        assert_eq!(push(&mut log, Stream::Stdout, b"a"), 1);
        assert_eq!(log.push_exit(0, false), 2);
        assert_eq!(push(&mut log, Stream::Stderr, b"b"), 3);
        assert_eq!(log.push_closed(), 4);
        let r = log.read(0, None);
        assert_eq!(
            r.chunks.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(r.next_seq, 5);
        assert!(r.exited && r.closed);
        assert_eq!(r.exit_code, Some(0));
    }

    #[test]
    fn retention_drops_are_counted_once() {
        let mut log = OutputLog::new(10);
        push(&mut log, Stream::Stdout, b"123456");
        push(&mut log, Stream::Stdout, b"abcdef");
        push(&mut log, Stream::Stdout, b"ABCDEFG");
        assert_eq!(log.take_dropped(), (2, 12));
        assert_eq!(log.take_dropped(), (0, 0));
    }

    #[test]
    fn retention_drops_oldest_without_renumbering() {
        let mut log = OutputLog::new(10);
        for _ in 0..5 {
            push(&mut log, Stream::Stdout, b"1234");
        }
        let r = log.read(0, None);
        assert_eq!(
            r.chunks.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert_eq!(r.next_seq, 6);
    }

    #[test]
    fn oversized_single_chunk_is_kept() {
        let mut log = OutputLog::new(2);
        push(&mut log, Stream::Stdout, b"12345");
        assert_eq!(log.read(0, None).chunks.len(), 1);
    }

    #[test]
    fn max_bytes_returns_the_first_chunk_and_moves_next_seq_back() {
        let mut log = OutputLog::new(1024);
        push(&mut log, Stream::Stdout, b"12345");
        push(&mut log, Stream::Stdout, b"67");
        log.push_exit(0, false);
        let r = log.read(0, Some(1));
        assert_eq!(r.chunks.len(), 1);
        assert_eq!(r.next_seq, 2);
        let r = log.read(1, Some(100));
        assert_eq!(r.chunks.len(), 1);
        assert_eq!(r.next_seq, 4);
    }

    #[test]
    fn timed_out_is_recorded_only_while_running() {
        let mut log = OutputLog::new(1024);
        assert!(log.mark_timed_out());
        log.push_exit(143, false);
        assert!(log.read(0, None).timed_out);
        let mut late = OutputLog::new(1024);
        late.push_exit(0, false);
        assert!(
            !late.mark_timed_out(),
            "a deadline after the exit is no timeout"
        );
        assert!(!late.read(0, None).timed_out);
    }

    #[test]
    fn a_gap_names_exactly_the_dropped_seqs_after_after_seq() {
        let mut log = OutputLog::new(10);
        for _ in 0..5 {
            push(&mut log, Stream::Stdout, b"1234");
        }
        // Seqs 1..=3 dropped, 4 and 5 kept.
        assert_eq!(
            log.read(0, None).gap,
            Some(ReadGap {
                from_seq: 1,
                to_seq: 3
            })
        );
        assert_eq!(
            log.read(2, None).gap,
            Some(ReadGap {
                from_seq: 3,
                to_seq: 3
            })
        );
        assert_eq!(log.read(3, None).gap, None);
        assert_eq!(log.read(4, Some(1)).gap, None);
    }

    #[test]
    fn no_gap_when_nothing_was_dropped() {
        let mut log = OutputLog::new(1024);
        push(&mut log, Stream::Stdout, b"a");
        let r = log.read(0, None);
        assert_eq!((r.gap, r.exited_seq, r.closed_seq), (None, None, None));
    }

    #[test]
    fn exit_and_close_seqs_are_reported_and_kept_out_of_the_gap_ends() {
        let mut log = OutputLog::new(4);
        push(&mut log, Stream::Stdout, b"1234"); // 1
        assert_eq!(log.push_exit(0, false), 2);
        push(&mut log, Stream::Stdout, b"5678"); // 3: drops 1
        let r = log.read(0, None);
        assert_eq!(
            r.gap,
            Some(ReadGap {
                from_seq: 1,
                to_seq: 1
            })
        );
        assert_eq!((r.exited_seq, r.closed_seq), (Some(2), None));
        push(&mut log, Stream::Stdout, b"9abc"); // 4: drops 3
        assert_eq!(log.push_closed(), 5);
        // After 1: seq 2 is the exit, not a dropped chunk.
        let r = log.read(1, None);
        assert_eq!(
            r.gap,
            Some(ReadGap {
                from_seq: 3,
                to_seq: 3
            })
        );
        assert_eq!((r.exited_seq, r.closed_seq), (Some(2), Some(5)));
        // From 0 the range covers the exit's seq; exitedSeq tells it apart.
        assert_eq!(
            log.read(0, None).gap,
            Some(ReadGap {
                from_seq: 1,
                to_seq: 3
            })
        );
    }

    #[test]
    fn discarded_output_is_gone_now_and_later_with_seqs_going_on() {
        let mut log = OutputLog::new(1024);
        push(&mut log, Stream::Stdout, b"abc");
        log.discard_retained();
        assert_eq!(log.retained_bytes(), 0);
        assert_eq!(push(&mut log, Stream::Stdout, b"def"), 2);
        assert_eq!(log.retained_bytes(), 0);
        let r = log.read(0, None);
        assert!(r.chunks.is_empty());
        assert_eq!(
            r.gap,
            Some(ReadGap {
                from_seq: 1,
                to_seq: 2
            })
        );
        assert_eq!(log.take_dropped(), (2, 6));
    }

    #[test]
    fn unacknowledged_output_is_kept_until_acknowledged_then_trimmed_to_the_budget() {
        let mut log = OutputLog::new(8);
        log.set_retain(Retain::Acked);
        for _ in 0..5 {
            push(&mut log, Stream::Stdout, b"1234");
        }
        assert_eq!((log.retained_bytes(), log.unacked_bytes()), (20, 20));
        assert_eq!(log.read(0, None).gap, None);
        log.ack(3);
        assert_eq!(log.unacked_bytes(), 8);
        // Seqs 1..=3 were acknowledged and the budget is 8: all three go.
        assert_eq!(
            log.read(0, None)
                .chunks
                .iter()
                .map(|c| c.seq)
                .collect::<Vec<_>>(),
            vec![4, 5]
        );
        // Acknowledging less, or past the end, is harmless.
        log.ack(1);
        log.ack(99);
        assert_eq!(log.unacked_bytes(), 0);
        assert_eq!(log.retained_bytes(), 8);
    }

    #[test]
    fn a_ring_keeps_held_output_until_acknowledged_and_any_releases_it() {
        let mut log = OutputLog::new(8);
        log.set_retain(Retain::Acked);
        for _ in 0..3 {
            push(&mut log, Stream::Stdout, b"1234"); // 1..=3, held
        }
        log.set_retain(Retain::Ring(4));
        assert!(log.holding());
        push(&mut log, Stream::Stdout, b"1234"); // 4: nothing goes past the held 1
        assert_eq!((log.retained_bytes(), log.unacked_bytes()), (16, 16));
        assert_eq!(log.take_dropped(), (0, 0));
        // Read back up to 2: those go, the held 3 stays, and 4 behind it.
        log.ack(2);
        assert_eq!((log.retained_bytes(), log.unacked_bytes()), (8, 8));
        log.ack(3);
        assert!(!log.holding());
        assert_eq!((log.retained_bytes(), log.unacked_bytes()), (4, 4));
        // Output never held is a plain ring.
        push(&mut log, Stream::Stdout, b"1234"); // 5
        assert_eq!((log.retained_bytes(), log.unacked_bytes()), (4, 4));
        assert_eq!(log.take_dropped(), (4, 16));
        log.set_retain(Retain::Acked);
        push(&mut log, Stream::Stdout, b"1234"); // 6, held
        push(&mut log, Stream::Stdout, b"1234"); // 7, held
        log.set_retain(Retain::Any(4));
        assert!(!log.holding());
        assert_eq!(log.retained_bytes(), 4);
    }

    #[test]
    fn an_ack_without_following_does_not_undo_an_unfollow() {
        let mut log = OutputLog::new(8);
        assert!(!log.acking());
        assert!(log.set_following(Following::Acking));
        assert!(log.acking());
        assert!(log.set_following(Following::Explicit(false)));
        assert!(!log.set_following(Following::Acking));
        assert!(!log.acking());
        assert!(!log.set_following(Following::Unchanged));
        assert!(log.set_following(Following::Explicit(true)));
        assert!(log.acking());
    }

    #[test]
    fn news_counts_every_event_kind() {
        let mut log = OutputLog::new(1024);
        assert!(!log.has_news(0));
        log.push_exit(1, false);
        assert!(log.has_news(0));
        assert!(!log.has_news(1));
    }
}
