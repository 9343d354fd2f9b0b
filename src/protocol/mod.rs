//! The wire contract: every method name, error code and parameter/result type that crosses the
//! connection. The server and the client both import this module, so the two ends cannot drift.
//!
//! Field names follow the reference (`codex exec-server` of the Codex CLI 0.169.0): camelCase on
//! the envelope and the method params, snake_case inside sandbox permission profiles.

pub mod environment;
pub mod fs;
pub mod http;
pub mod methods;
pub mod process;
pub mod sandbox;
pub mod session;

pub use methods::names as method;
pub use methods::{Direction, Family, Method, Replay};

/// JSON-RPC error codes used on the wire (see protocol.md, "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum ErrorCode {
    /// Protocol state, duplicate or unknown ids, unknown session, malformed message.
    InvalidRequest = -32600,
    /// The method does not exist.
    MethodNotFound = -32601,
    /// Params failed to decode or were semantically invalid.
    InvalidParams = -32602,
    /// Spawn failure, stdin write failure, other I/O.
    Internal = -32603,
    /// Filesystem: not found.
    NotFound = -32004,
    /// Resume refused: the session is still attached to another connection (retryable).
    SessionAttached = -32010,
}

impl ErrorCode {
    /// The numeric code sent on the wire.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The enum value for a numeric code, if it is one of ours.
    pub fn from_code(code: i64) -> Option<Self> {
        [
            Self::InvalidRequest,
            Self::MethodNotFound,
            Self::InvalidParams,
            Self::Internal,
            Self::NotFound,
            Self::SessionAttached,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}

/// Largest message either end accepts in one frame or line. A 64 MiB `fs/writeFile` is ~86 MiB
/// of base64.
pub const MAX_MESSAGE_BYTES: usize = 128 << 20;

/// The id the server uses when answering a message whose own id could not be read.
pub const PARSE_ERROR_ID: i64 = -1;
