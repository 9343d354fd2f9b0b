//! The streamed `http/request` bodies of one connection: created by `connection::serve`, every
//! body aborted when the connection ends. Deltas are queued under a budget of bytes per
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
}

impl HttpStreams {
    pub(crate) fn new(out: mpsc::Sender<Outgoing>) -> Self {
        Self {
            active: Mutex::default(),
            cancel: CancellationToken::new(),
            out,
            budget: Arc::new(Semaphore::new(QUEUED_DELTA_BUDGET)),
        }
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

    /// Reserves `id` for a stream, or refuses it while another stream holds it.
    pub(super) fn reserve(self: &Arc<Self>, id: &str) -> Result<Reservation, RpcError> {
        if !self.lock().insert(id.to_string()) {
            return Err(RpcError::invalid_params(format!(
                "http/request streamResponse requestId `{id}` is already active"
            )));
        }
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
