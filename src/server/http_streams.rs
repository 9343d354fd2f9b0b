//! The streamed `http/request` bodies of one connection: created by `connection::serve`, every
//! body aborted when the connection ends, at most `--max-http-streams-per-connection` at once. Deltas are queued under a budget of bytes per
//! connection, returned as the writer drops each delta's text: a client that does not read its
//! socket stops the body's reads, so the server never holds more than the budget of any body.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::protocol::http::HttpRequestBodyDelta;
use crate::protocol::method;
use crate::rpc::encode::encode_notification;
use crate::rpc::{Outgoing, RpcError};

/// JSON text of deltas queued on one connection and not yet written, at most.
const QUEUED_DELTA_BUDGET: usize = 8 * 1024 * 1024;

/// The streamed bodies of one connection.
pub(crate) struct HttpStreams {
    /// `requestId`s of the streams still active.
    active: Mutex<HashSet<String>>,
    /// Cancelled when the connection ends: every body task stops.
    cancel: CancellationToken,
    /// The connection's outgoing queue.
    out: mpsc::Sender<Outgoing>,
    /// Bytes of delta text queued and not yet written ([`QUEUED_DELTA_BUDGET`]).
    budget: Arc<Semaphore>,
    /// Streams active at once, at most (`--max-http-streams-per-connection`).
    max_streams: usize,
}

impl HttpStreams {
    pub(crate) fn new(out: mpsc::Sender<Outgoing>) -> Self {
        Self {
            active: Mutex::default(),
            cancel: CancellationToken::new(),
            out,
            budget: Arc::new(Semaphore::new(QUEUED_DELTA_BUDGET)),
            max_streams: crate::server::config::DEFAULT_MAX_HTTP_STREAMS_PER_CONNECTION,
        }
    }

    /// At most `max` streams active at once; a stream beyond is refused.
    pub(crate) fn with_max_streams(mut self, max: usize) -> Self {
        self.max_streams = max;
        self
    }

    /// Aborts every body of the connection.
    pub(crate) fn close_all(&self) {
        self.cancel.cancel();
    }

    /// Completes when the connection has ended.
    pub(super) async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Queues one delta once the connection's budget has room; false if the connection is gone.
    pub(super) async fn send(&self, delta: &HttpRequestBodyDelta) -> bool {
        let text = encode_notification(method::HTTP_REQUEST_BODY_DELTA, delta);
        let cost = u32::try_from(text.len().min(QUEUED_DELTA_BUDGET)).unwrap_or(u32::MAX);
        let permit = tokio::select! {
            p = self.budget.clone().acquire_many_owned(cost) => p,
            _ = self.cancel.cancelled() => return false,
        };
        let Ok(permit) = permit else { return false };
        // The permit goes back when the writer drops the text, after writing it.
        let bytes = bytes::Bytes::from_owner(Queued {
            text,
            _permit: permit,
        });
        let Ok(text) = crate::rpc::Text::try_from(bytes) else {
            return false;
        };
        tokio::select! {
            r = self.out.send(Outgoing::Message(text)) => r.is_ok(),
            _ = self.cancel.cancelled() => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reserves `id` for a stream, or refuses it while another stream holds it or while the
    /// connection has its most streams active (a stream counts from its request, before any
    /// answer, to its terminal delta).
    pub(super) fn reserve(self: &Arc<Self>, id: &str) -> Result<Reservation, RpcError> {
        let mut active = self.lock();
        if active.contains(id) {
            return Err(RpcError::invalid_params(format!(
                "http/request streamResponse requestId `{id}` is already active"
            )));
        }
        if active.len() >= self.max_streams {
            return Err(RpcError::invalid_request(format!(
                "too many http/request streams on this connection: the limit is {} \
                 (--max-http-streams-per-connection); retry once one has ended",
                self.max_streams
            )));
        }
        active.insert(id.to_string());
        drop(active);
        Ok(Reservation {
            streams: self.clone(),
            id: Some(id.to_string()),
        })
    }
}

/// A reserved `requestId`, freed when dropped (or explicitly, before the terminal delta is sent,
/// so a client that reuses the id on seeing it never races the release).
pub(super) struct Reservation {
    streams: Arc<HttpStreams>,
    id: Option<String>,
}

impl Reservation {
    pub(super) fn release(&mut self) {
        if let Some(id) = self.id.take() {
            self.streams.lock().remove(&id);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

/// A delta's text and its share of the budget.
struct Queued {
    text: String,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Queued {
    fn as_ref(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_beyond_the_limit_are_refused_and_a_released_one_frees_its_place() {
        let streams = Arc::new(HttpStreams::new(mpsc::channel(1).0).with_max_streams(2));
        let mut a = streams.reserve("a").unwrap();
        let _b = streams.reserve("b").unwrap();
        // A duplicate id is still the params error; a new one is the limit.
        assert_eq!(streams.reserve("a").err().unwrap().code.code(), -32602);
        let err = streams.reserve("c").err().unwrap();
        assert_eq!(err.code.code(), -32600);
        assert!(
            err.message
                .contains("the limit is 2 (--max-http-streams-per-connection)"),
            "{}",
            err.message
        );
        a.release();
        let _c = streams.reserve("c").unwrap();
        drop(_b);
        let _d = streams.reserve("d").unwrap();
    }
}
