//! Giving freed heap back to the kernel after a burst of frees, once.
//!
//! glibc keeps memory freed in the middle of its heap; after 500 detached sessions that streamed
//! output expired, the server held ~700 MB with no session left, and one `malloc_trim` brought it
//! to a few MB (issue 15). What frees a lot: a session's expiry (its processes' retained output
//! is dropped at once), a closed process's record leaving after the closed TTL, the end of a
//! burst of connections. Each is [`HeapTrim::freed`]; one trim follows a burst of them, once
//! nothing more has been freed for [`QUIET`] (or [`MAX_DELAY`] after the first, if frees never
//! stop), off the async threads. Never per message: a trim walks the whole heap.
//!
//! Why glibc's malloc and a trim rather than an allocator that returns memory by itself
//! (measured 2026-11-28, debug builds, `scripts/soak-memory --sessions 300 --ttl-ms 15000`, RSS
//! idle / peak / after expiry, MiB): main before this 14.0 / 147.5 / 109.2 (200 sessions);
//! glibc + this trim 14.7 / 157.2 / 16.8; jemalloc with background purge
//! (`--features alloc-jemalloc`, `_RJEM_MALLOC_CONF=background_thread:true`) 16.4 / 154.0 / 17.5;
//! mimalloc (`--features alloc-mimalloc`) 22.1 / 168.0 / 48.0; and the case, glibc +
//! this trim, `--sessions 500 --ttl-ms 30000`: 14.5 / 279.7 / 18.1. jemalloc gives the memory back as
//! well, mimalloc does not reach the 2× target; neither is needed for it, and both are a C
//! library to build into every (static) binary. `scripts/bench --quick` (one debug round on a
//! shared machine) had the other allocators ahead on the large-buffer rows (fs/writeFile 64 MiB:
//! glibc 3.1 s, mimalloc 2.0 s, jemalloc 1.2 s) and level elsewhere: worth a release-build
//! measurement of its own, not a reason to give up on returning memory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long nothing more must have been freed before the trim: a burst of expiries (each
/// session's timer fires on its own) and the pumps of the killed processes finishing
/// (their read buffers go when the child's pipes reach EOF) fall within it.
pub(super) const QUIET: Duration = Duration::from_millis(500);
/// The longest a trim waits after the first free of a burst when frees keep coming.
pub(super) const MAX_DELAY: Duration = Duration::from_secs(5);

/// When the next trim is due: the debounce, without the clock or the tasks (unit-tested).
#[derive(Debug, Default)]
struct Debounce {
    /// The first free not trimmed for yet; `None`: nothing pending (no waiter running).
    first: Option<Instant>,
    /// The latest free.
    last: Option<Instant>,
}

impl Debounce {
    /// Notes a free at `now`; true when no trim was pending, so the caller starts the one waiter.
    fn note(&mut self, now: Instant) -> bool {
        self.last = Some(now);
        if self.first.is_none() {
            self.first = Some(now);
            return true;
        }
        false
    }

    /// How much longer the waiter must wait at `now`; `None`: trim now (and nothing is pending
    /// any more: the next free starts a new waiter).
    fn remaining(&mut self, now: Instant) -> Option<Duration> {
        let (Some(first), Some(last)) = (self.first, self.last) else {
            return None;
        };
        let due = (last + QUIET).min(first + MAX_DELAY);
        if now >= due {
            self.first = None;
            None
        } else {
            Some(due - now)
        }
    }
}

/// Gives freed heap back once after each burst of frees. Shared by the session registry and
/// the process tables.
pub(crate) struct HeapTrim {
    debounce: Mutex<Debounce>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    /// Trims done (for tests and the log).
    trims: std::sync::atomic::AtomicU64,
}

impl HeapTrim {
    pub(super) fn new(tracker: TaskTracker, cancel: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            debounce: Mutex::default(),
            tracker,
            cancel,
            trims: Default::default(),
        })
    }

    /// Something large was freed (or is about to be, within [`QUIET`]): trim after the burst.
    /// Cheap: a lock and, for the first free of a burst, one task.
    pub(crate) fn freed(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_err()
            || !self.debounce.lock().unwrap().note(Instant::now())
        {
            return;
        }
        let this = self.clone();
        self.tracker.spawn(async move {
            loop {
                let remaining = this.debounce.lock().unwrap().remaining(Instant::now());
                let Some(wait) = remaining else { break };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = this.cancel.cancelled() => return,
                }
            }
            let _ = tokio::task::spawn_blocking(super::sys::release_free_heap).await;
            let n = this
                .trims
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(trims = n + 1, "gave freed heap back to the kernel");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trim_after_a_burst_once_it_has_been_quiet() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Debounce::default();
        // The first free starts the one waiter; the rest of the burst does not.
        assert!(d.note(t0));
        for n in 1..100 {
            assert!(!d.note(ms(n)), "free {n} started a second waiter");
        }
        // Not before QUIET has passed since the last free.
        assert_eq!(d.remaining(ms(99)), Some(QUIET));
        assert_eq!(
            d.remaining(ms(300)),
            Some(QUIET - Duration::from_millis(201))
        );
        // A free while it waits pushes the trim back.
        assert!(!d.note(ms(400)));
        assert_eq!(
            d.remaining(ms(599)),
            Some(QUIET - Duration::from_millis(199))
        );
        // Then once: trim now, and nothing is pending any more.
        assert_eq!(d.remaining(ms(900)), None);
        assert_eq!(d.remaining(ms(901)), None);
        // The next free starts a new burst.
        assert!(d.note(ms(2000)));
        assert!(d.remaining(ms(2000)).is_some());
    }

    #[test]
    fn frees_that_never_stop_still_trim_after_the_max_delay() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        assert!(d.note(t0));
        let mut at = t0;
        let mut trimmed_at = None;
        // A free every 100 ms, forever: QUIET never passes.
        while at < t0 + MAX_DELAY * 3 {
            at += Duration::from_millis(100);
            if d.note(at) {
                trimmed_at.get_or_insert(at);
                break;
            }
            if d.remaining(at).is_none() {
                trimmed_at = Some(at);
                break;
            }
        }
        assert_eq!(trimmed_at, Some(t0 + MAX_DELAY));
    }

    #[test]
    fn nothing_pending_means_nothing_to_wait_for() {
        let mut d = Debounce::default();
        assert_eq!(d.remaining(Instant::now()), None);
    }
}
