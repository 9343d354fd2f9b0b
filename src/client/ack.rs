//! Acknowledging output as it is published (`process/ack`, capability `outputAck`, issue 15).
//!
//! A server that advertises `outputAck` never drops output the client has not acknowledged
//! while the session lives; it back-pressures the process instead. So the client tells it what
//! it has published to the handles, batched: one `process/ack` per process at most every
//! [`ACK_INTERVAL`], or sooner once [`ACK_BYTES`] of output were published since the last batch.
//! This file only collects and batches; `recovery.rs` sends each batch.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// A batch goes out at most this long after the first publish it covers.
pub(super) const ACK_INTERVAL: Duration = Duration::from_millis(50);
/// A batch goes out as soon as this much output was published since the last one.
pub(super) const ACK_BYTES: u64 = 256 * 1024;

/// What is published and not yet acknowledged.
#[derive(Debug, Default)]
struct Pending {
    /// The highest published seq of each process.
    seqs: HashMap<String, u64>,
    /// Output bytes published since the last batch.
    bytes: u64,
}

/// The acknowledgements waiting to be sent.
#[derive(Debug, Default)]
pub(super) struct Acks {
    /// What waits for the next batch.
    pending: Mutex<Pending>,
    /// Something is pending (starts the interval).
    ready: Notify,
    /// [`ACK_BYTES`] are pending: send now.
    full: Notify,
    /// The task that sends the batches was started.
    started: AtomicBool,
}

impl Acks {
    /// Records that `process_id`'s events up to `seq` were published, `bytes` of output among
    /// them.
    pub(super) fn note(&self, process_id: &str, seq: u64, bytes: u64) {
        let mut pending = self.pending.lock().unwrap();
        let was_empty = pending.seqs.is_empty();
        match pending.seqs.get_mut(process_id) {
            Some(known) => *known = (*known).max(seq),
            None => {
                pending.seqs.insert(process_id.to_string(), seq);
            }
        }
        pending.bytes += bytes;
        if was_empty {
            self.ready.notify_one();
        }
        if pending.bytes >= ACK_BYTES {
            self.full.notify_one();
        }
    }

    /// True the first time only: the caller starts the task that sends the batches.
    pub(super) fn start(&self) -> bool {
        !self.started.swap(true, Ordering::Relaxed)
    }

    /// Waits for the next batch: `(processId, seq)` pairs, at most one per process.
    pub(super) async fn next_batch(&self) -> Vec<(String, u64)> {
        self.ready.notified().await;
        tokio::select! {
            _ = tokio::time::sleep(ACK_INTERVAL) => {}
            _ = self.full.notified() => {}
        }
        let mut pending = self.pending.lock().unwrap();
        pending.bytes = 0;
        pending.seqs.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_batch_waits_for_the_interval_and_keeps_the_highest_seq_per_process() {
        let acks = Acks::default();
        acks.note("a", 3, 10);
        acks.note("a", 2, 10);
        acks.note("b", 1, 10);
        let started = tokio::time::Instant::now();
        let mut batch = acks.next_batch().await;
        batch.sort();
        assert_eq!(batch, vec![("a".to_string(), 3), ("b".to_string(), 1)]);
        assert!(started.elapsed() >= ACK_INTERVAL);
    }

    #[tokio::test(start_paused = true)]
    async fn enough_bytes_send_the_batch_before_the_interval() {
        let acks = Acks::default();
        acks.note("a", 1, 1);
        acks.note("a", 2, ACK_BYTES);
        let started = tokio::time::Instant::now();
        assert_eq!(acks.next_batch().await, vec![("a".to_string(), 2)]);
        assert!(started.elapsed() < ACK_INTERVAL);
    }
}
