//! The plain types of a client's configuration and observation: [`ClientOptions`],
//! [`BearerToken`], [`ConnectionStatus`], [`ClientStats`].

use std::path::PathBuf;
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
    /// Sent as `Authorization: Bearer <token>` on every WebSocket upgrade (the first connection
    /// and every resume). Only over `wss://` or to a loopback host: connecting refuses to send it
    /// in clear text anywhere else.
    pub bearer_token: Option<BearerToken>,
    /// A PEM file of extra certificate authorities trusted for `wss://`, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// How long one WebSocket connection (TCP, TLS and the upgrade) may take; `None`: as long as
    /// the system allows.
    pub connect_timeout: Option<Duration>,
    /// How long the first `initialize` may wait for its answer; `None`: no limit.
    pub initialize_timeout: Option<Duration>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            client_name: format!("codex-remote/{}", env!("CARGO_PKG_VERSION")),
            recovery_deadline: Duration::from_secs(25),
            retry_interval: Duration::from_millis(100),
            event_buffer: 256,
            bearer_token: None,
            ca_file: None,
            connect_timeout: None,
            initialize_timeout: None,
        }
    }
}

/// A bearer token for the server's WebSocket authentication. Its `Debug` prints `<redacted>`,
/// and nothing in the client prints or logs it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// The token, with surrounding whitespace (a token file's final newline) removed. Refused
    /// when empty or when it holds anything but visible ASCII (it goes into an HTTP header); the
    /// error never quotes it.
    pub fn new(token: impl Into<String>) -> Result<Self, ClientError> {
        let token = token.into();
        let trimmed = token.trim();
        if trimmed.is_empty() {
            return Err(ClientError::Config {
                message: "the bearer token is empty".into(),
            });
        }
        if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::Config {
                message: "the bearer token may hold only visible ASCII characters (no spaces or \
                          control characters): it is sent in an HTTP header"
                    .into(),
            });
        }
        Ok(Self(trimmed.to_string()))
    }

    /// The token itself, for the `Authorization` header.
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_token_debug_prints_redacted_even_inside_the_options() {
        let options = ClientOptions {
            bearer_token: Some(BearerToken::new("s3cret-token\n").unwrap()),
            ..ClientOptions::default()
        };
        let shown = format!("{options:?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn a_bearer_token_is_trimmed_and_refused_when_empty_or_not_visible_ascii() {
        assert_eq!(BearerToken::new("  abc\n").unwrap().secret(), "abc");
        for bad in ["", " \n ", "ab cd", "ab\u{7f}", "tök"] {
            let err = BearerToken::new(bad).unwrap_err().to_string();
            assert!(err.contains("bearer token"), "{err}");
            assert!(bad.trim().is_empty() || !err.contains(bad.trim()), "{err}");
        }
    }
}
