//! The plain types of a client's configuration and observation: [`ClientOptions`],
//! [`ConnectionStatus`], [`ClientStats`].

use std::time::Duration;

use super::error::ClientError;

/// Tunables of a client. The defaults are the reference client's.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `clientName` sent in `initialize`.
    pub client_name: String,
    /// How long a resume may keep trying before the session counts as lost. 25 s leaves a margin
    /// inside the server's 30 s detached-session TTL (the two clocks start independently).
    pub recovery_deadline: Duration,
    /// Pause between resume attempts (after -32010 or a connection error).
    pub retry_interval: Duration,
    /// Events buffered per process before the client stops reading the connection (which in
    /// turn makes the server block the process).
    pub event_buffer: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            client_name: format!("codex-remote/{}", env!("CARGO_PKG_VERSION")),
            recovery_deadline: Duration::from_secs(25),
            retry_interval: Duration::from_millis(100),
            event_buffer: 256,
        }
    }
}

/// The connection as observers see it ([`ExecServerClient::watch_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// The first handshake is under way.
    Connecting,
    /// Calls go out.
    Connected,
    /// The transport dropped; the client is resuming the session. Calls wait.
    Recovering {
        /// Why the transport dropped.
        reason: String,
    },
    /// The session is lost (terminal).
    Failed {
        /// Why.
        error: ClientError,
    },
}

/// Counters, for soak tests and curious operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Resumes that completed.
    pub recoveries: u64,
    /// Output bytes past the last published seq that came back through catch-up reads
    /// (including any that live notifications also delivered).
    pub catch_up_bytes: u64,
    /// The most bytes one process needed caught up after one resume: what the server's
    /// `--retained-output-bytes` had to cover.
    pub largest_catch_up_bytes: u64,
}
