//! `codex`: a remote execution server for coding agents and other orchestrators, in one binary.
//!
//! # Layout
//! - `main.rs`: arg0 dispatch only (`arg0`: the `codex`, `codex-linux-sandbox` and `codex-fs`
//!   personalities).
//! - `cli` — the command line: the clap tree and one file per subcommand (`exec-server`,
//!   `remote`, `sandbox`, the hidden `reap-process-groups`).
//! - [`protocol`] — every wire type and error code, and the one method table
//!   ([`protocol::methods`]) that the server's router and the client's replay policy follow.
//! - [`path_uri`] — `file:` URIs on the wire, native paths inside.
//! - [`rpc`] — JSON-RPC framing over WebSocket and stdio, as channels of messages (a message
//!   too large to hold at once goes in pieces: one fragmented WebSocket message, one stdio line).
//! - [`b64`] — base64 on the hot paths (SIMD), as strict as the wire demands.
//! - `fs_ops` — the `fs/*` operations on native paths, shared by the server and the `codex-fs`
//!   helper; knows nothing of JSON-RPC.
//! - `client` — the client library orchestrators embed (resume, ordered events, file transfers
//!   that survive a dropped connection).
//! - `server` — listener, connections, the router, sessions, processes, output log, env policy.
//! - `pty` — pseudo-terminals.
//! - `sandbox` — the Linux sandbox: policy binding, Landlock/seccomp plan, the
//!   `codex-linux-sandbox` wrapper, the `codex-fs` helper, alias links.
//!
//! # Features
//! One package, three cargo features, each gating whole modules here:
//! - `client`: `client` on top of `protocol`, `rpc`, `path_uri` and `b64` (always built). An
//!   orchestrator embedding the client compiles no Landlock, seccomp, clap or indicatif.
//! - `server`: `server`, `sandbox`, `pty` and `fs_ops`, with Landlock, seccomp and clap (the
//!   `codex-linux-sandbox` wrapper parses its argv with it).
//! - `cli` (default): both, plus `cli`, `arg0` and the `codex` binary.
//!
//! No file of `src/` imports one that imports it (`scripts/check-import-cycles`, run by CI).
//! See `docs/design.md` for the picture these modules implement. On the path of one
//! byte of output, the bytes are base64-encoded once, straight into the text of their
//! `process/output` notification; the output log keeps a slice of that text for `process/read`,
//! and the WebSocket writer sends it as is.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks, clippy::await_holding_lock)]

pub mod b64;
pub mod path_uri;
pub mod protocol;
pub mod rpc;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "server")]
pub mod fs_ops;
#[cfg(feature = "server")]
pub mod pty;
#[cfg(feature = "server")]
pub mod sandbox;
#[cfg(feature = "server")]
pub mod server;

#[cfg(feature = "cli")]
pub mod arg0;
#[cfg(feature = "cli")]
pub mod cli;

/// Entry points of the fuzz targets under `fuzz/` (docs/fuzzing.md); not an API.
#[cfg(feature = "server")]
#[doc(hidden)]
pub mod fuzzing;
