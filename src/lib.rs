//! `codex`: a remote execution server for coding agents and other orchestrators, in one binary.
//!
//! # Layout
//! - `main.rs`: arg0 dispatch only ([`arg0`]).
//! - [`cli`] — the clap command tree (`codex exec-server ...`).
//! - [`protocol`] — every wire type, method name and error code; server and client share it.
//! - [`path_uri`] — `file:` URIs on the wire, native paths inside.
//! - [`rpc`] — JSON-RPC framing over WebSocket and stdio, as channels of messages.
//! - [`server`] — listener, connections, sessions, processes, output log, env policy.
//! - [`pty`] — pseudo-terminals.
//!
//! See `../shared/docs/design.md` for the picture these modules implement.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::await_holding_lock)]

pub mod arg0;
pub mod cli;
pub mod path_uri;
pub mod protocol;
pub mod pty;
pub mod rpc;
pub mod server;
