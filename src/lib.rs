//! `codex`: a remote execution server for coding agents and other orchestrators, in one binary.
//!
//! # Layout
//! - `main.rs`: arg0 dispatch only ([`arg0`]).
//! - [`cli`] — the clap command tree (`codex exec-server ...`).
//! - [`protocol`] — every wire type, method name and error code; server and client share it.
//! - [`path_uri`] — `file:` URIs on the wire, native paths inside.
//! - [`rpc`] — JSON-RPC framing over WebSocket and stdio, as channels of messages.
//! - [`fs_ops`] — the `fs/*` operations on native paths, shared by the server and the `codex-fs`
//!   helper.
//! - [`client`] — the client library orchestrators embed (resume, ordered events) and
//!   `codex remote`, the command-line client on it.
//! - [`server`] — listener, connections, sessions, processes, output log, env policy.
//! - [`pty`] — pseudo-terminals.
//! - [`sandbox`] — the Linux sandbox: policy binding, Landlock/seccomp plan, the
//!   `codex-linux-sandbox` wrapper, the `codex-fs` helper, `codex sandbox linux`, alias links.
//!
//! See `../shared/docs/design.md` for the picture these modules implement.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::await_holding_lock)]

pub mod arg0;
pub mod b64;
pub mod cli;
pub mod client;
pub mod fs_ops;
pub mod path_uri;
pub mod protocol;
pub mod pty;
pub mod rpc;
pub mod sandbox;
pub mod server;
