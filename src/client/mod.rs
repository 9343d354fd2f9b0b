//! The Rust client of the exec-server, for orchestrators to embed; it shares [`crate::protocol`]
//! with the server, so the two ends cannot drift apart.
//!
//! ```no_run
//! # async fn demo() -> Result<(), codex::client::ClientError> {
//! use codex::client::{ClientOptions, ExecServerClient, ProcessEvent};
//! let client = ExecServerClient::connect("ws://127.0.0.1:8080", ClientOptions::default()).await?;
//! let cwd = client.environment_info().map(|e| e.cwd).unwrap_or_else(|| "file:///".into());
//! let mut process = client.start(codex::client::start_params("p1", ["echo", "hi"], cwd)).await?;
//! while let Some(event) = process.recv().await {
//!     if let ProcessEvent::Output { data, .. } = event? {
//!         print!("{}", String::from_utf8_lossy(&data));
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! What it guarantees: answers are matched to calls by id; each process's events are published
//! strictly in seq order, each once, whatever order notifications arrive in; a dropped transport
//! is resumed (`initialize {resumeSessionId}`) and every live process caught up from the
//! server's retained output, publishing only what is new. What it cannot recover (output the
//! server no longer retains) fails that process alone, with an error that says so.
//!
//! # Layout
//! Bottom up; each file imports only files above it in this list, never this one.
//! - [`sequencer`]: pure ordering, dedupe and catch-up merging of one process's events.
//! - `error.rs`, `status.rs`: [`ClientError`]; [`ClientOptions`], [`ConnectionStatus`],
//!   [`ClientStats`].
//! - [`replay`]: which in-flight calls are resent after a resume (a column of the protocol's
//!   method table).
//! - [`connector`]: opening transports: a WebSocket URL, or a child's stdio (killed with its
//!   process group when the client goes away), or any [`Connect`] (tests use in-memory ones).
//! - `connection.rs`: one transport: requests and their answers by id, the reader task that hands
//!   notifications upward (through a small trait, so it knows nothing above it).
//! - `table.rs`: the processes the client follows, each entry's sequencer and handle channel.
//! - `recovery.rs`: the client's shared core and its state machine Connecting → Connected →
//!   Recovering → Connected | Failed (the diagram is there), the resume and the catch-up reads.
//! - `session.rs`: [`ExecServerClient`]: connecting, the first handshake, typed calls.
//! - `process.rs`: [`ExecServerClient::start`], [`ProcessHandle`] and [`ProcessControl`].
//! - `fs.rs`: typed `fs/*` calls, and streamed downloads over `fs/open`/`fs/readBlock`.
//! - [`environments`]: `$CODEX_HOME/environments.toml`, the Codex CLI's list of executors (the
//!   URL and bearer token, or the program, of each), read the same way here.
//! - `transfer.rs`: whole-file uploads and downloads, verified by sha256, that go on across a
//!   dropped connection (`codex remote cp` is a thin front end on them).
#![warn(clippy::missing_docs_in_private_items)]

mod ack;
mod connection;
pub mod connector;
pub mod environments;
mod error;
mod fs;
mod http;
mod process;
mod recovery;
pub mod replay;
pub mod sequencer;
mod session;
mod status;
mod table;
mod transfer;
mod watches;

pub use connector::{Connect, ConnectFuture, WebSocketConnector};
pub use error::ClientError;
pub use fs::Download;
pub use process::{ProcessControl, ProcessHandle, ProcessOutput, start_params};
pub use sequencer::{ProcessEvent, SequenceError};
pub use session::ExecServerClient;
pub use status::{
    BearerToken, ClientOptions, ClientStats, ConnectionStatus, MAX_BEARER_TOKEN_BYTES,
};
pub use transfer::{MAX_UPLOAD_BYTES, Phase, Progress, TransferError, Transferred};
pub use watches::FileWatch;
