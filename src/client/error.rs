//! The client's error: one enum for what a call, a process handle or the session can report.
//! Cloneable, because one failure of the session reaches every waiting caller and every handle.

use super::sequencer::SequenceError;

/// Why a client call or a process failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The transport could not be opened.
    #[error("failed to connect to the exec-server at {target}: {message}")]
    Connect {
        /// The URL or command.
        target: String,
        /// What went wrong.
        message: String,
    },
    /// The server refused the WebSocket upgrade with HTTP 401: the bearer token is wrong or
    /// missing. Final: a resume that meets it gives up at once. `body` is the server's reason
    /// (the token, were the server to echo it, is cut out).
    #[error(
        "the exec-server at {target} refused the connection (HTTP 401 Unauthorized: {body:?}): {}",
        if *token_sent { "the bearer token was refused" } else { "it requires a bearer token and none was given" }
    )]
    Unauthorized {
        /// The URL.
        target: String,
        /// Whether an `Authorization` header was sent.
        token_sent: bool,
        /// The server's answer body (at most a few hundred characters).
        body: String,
    },
    /// A bearer token was to go in clear text to a host that is not loopback (`ws://` to another
    /// machine); nothing was sent.
    #[error(
        "exec-server WebSocket headers require wss:// or a loopback destination (refusing to send \
         the bearer token to {target} unencrypted)"
    )]
    InsecureToken {
        /// The URL.
        target: String,
    },
    /// The client's options cannot work (a bad URL, an unreadable CA file, a bad token).
    #[error("{message}")]
    Config {
        /// What is wrong, naming the option or file.
        message: String,
    },
    /// The server answered with a JSON-RPC error.
    #[error("{method}: {message} (code {code})")]
    Server {
        /// The method called.
        method: String,
        /// The JSON-RPC error code (see [`crate::protocol::ErrorCode`]).
        code: i64,
        /// The server's message.
        message: String,
    },
    /// The answer did not decode into the expected type.
    #[error("{method}: unexpected answer from the exec-server: {message}")]
    Decode {
        /// The method called.
        method: String,
        /// The decoding error.
        message: String,
    },
    /// The connection dropped with the call in flight, and the method is not replayed (see
    /// [`super::replay`]): it may or may not have taken effect.
    #[error(
        "{method}: the connection to the exec-server dropped before the answer arrived; not \
         retried, as the call may or may not have taken effect"
    )]
    Disconnected {
        /// The method called.
        method: String,
    },
    /// The connection dropped before the answer to `process/start` arrived. The start is not
    /// replayed; the client terminated the id on the server instead.
    #[error(
        "process/start `{process_id}`: the connection dropped before the answer arrived, so \
         whether the process started is unknown; the client terminated `{process_id}` on the \
         server"
    )]
    StartAmbiguous {
        /// The id the start was for.
        process_id: String,
    },
    /// The client already has a live handle for this process id.
    #[error("process `{process_id}` is already in use by this client")]
    DuplicateProcessId {
        /// The id.
        process_id: String,
    },
    /// The process's events could not be recovered faithfully after a reconnect; the client
    /// failed it (and terminated it on the server). Other processes go on.
    #[error("process `{process_id}` failed while recovering from a dropped connection: {source}")]
    Recovery {
        /// The failed process.
        process_id: String,
        /// What did not add up.
        source: SequenceError,
    },
    /// The catch-up read of a process was refused (e.g. its id expired on the server).
    #[error("process `{process_id}` could not be caught up after a reconnect: {message}")]
    CatchUp {
        /// The failed process.
        process_id: String,
        /// The server's answer.
        message: String,
    },
    /// The session could not be resumed (deadline, unknown session, a transport that cannot
    /// reconnect): every call and every handle fails with this.
    #[error("the exec-server session is lost: {reason}")]
    SessionLost {
        /// Why.
        reason: String,
    },
    /// [`super::ExecServerClient::close`] was called.
    #[error("the exec-server client was closed")]
    Closed,
}

impl ClientError {
    /// Whether another connection attempt cannot help (a refused token, options that cannot
    /// work): a resume gives up at once instead of retrying until its deadline.
    pub fn is_final_for_connect(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized { .. } | Self::InsecureToken { .. } | Self::Config { .. }
        )
    }

    /// The JSON-RPC error code, if the server answered with an error.
    pub fn server_code(&self) -> Option<i64> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}
