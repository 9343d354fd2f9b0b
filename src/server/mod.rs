//! The exec-server: a listener that spawns one handler task per connection, a registry of
//! sessions that outlive their connections, and the processes each session owns.
//!
//! Shutdown: a `CancellationToken` says stop; every task the server starts is spawned on one
//! `TaskTracker`, so [`run_ws`] and [`run_stdio`] return only after every connection task has
//! ended and every managed process group has been killed.
//!
//! This file only declares the parts and re-exports the entry points: the parts import each
//! other directly, never through here, so no file of the server imports one that imports it
//! (`scripts/check-import-cycles`).

mod adopted;
mod attachment;
mod auth;
mod call;
mod config;
mod connection;
mod env_info;
pub mod env_policy;
mod environment;
mod exec;
mod fs;
mod fs_handles;
mod fs_watch;
mod heap_trim;
mod http;
mod http_request;
mod http_streams;
mod listener;
pub mod metrics;
mod metrics_http;
mod missing_watch;
pub mod process;
pub mod reaper;
mod router;
mod sandboxing;
mod session;
mod state;
pub mod sys;
mod tls;

pub use config::{
    DEFAULT_MAX_OUTGOING_BYTES, DetachedOutput, MAX_MAX_OUTGOING_BYTES, MIN_MAX_OUTGOING_BYTES,
};
pub use config::{PidNamespaceMode, ServerConfig};

pub use auth::{AuthFailure, AuthFlags, AuthMode, Authenticator};
pub use config::{MAX_MAX_MESSAGE_BYTES, MIN_MAX_MESSAGE_BYTES, default_max_connections};

pub use http::Door;
pub use listener::{run_stdio, run_ws};
pub use metrics::Metrics;
pub use metrics_http::serve_metrics;
pub use tls::TlsServer;

// For `crate::fuzzing` (fuzz/, docs/fuzzing.md): one connection served on an in-process server.
pub(crate) use connection::serve as serve_connection;
pub(crate) use state::ServerState;
