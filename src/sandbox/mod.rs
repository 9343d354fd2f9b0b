//! The Linux sandbox the executor builds itself: Landlock + seccomp + no_new_privs, plus a private
//! mount namespace for read-only carve-outs where one can be had (sandbox.md).
//!
//! Setup is a pipeline of types: a client's `SandboxIntent` → [`policy::resolve`] (server side,
//! binds symbolic paths) → [`policy::ResolvedPolicy`] (JSON to the wrapper) → [`plan::build`]
//! (pure: Landlock rules and read-only mounts for the chosen carve-out layer) →
//! [`wrapper::apply`] (irreversible, in the `codex-linux-sandbox` process) → exec.
//! Nothing here is ever applied to the server or the test process.

pub mod alias;
pub mod denial;
pub mod fd_handoff;
pub mod fs_helper;
pub mod plan;
pub mod policy;
pub mod seccomp;
pub(crate) mod sys;
pub mod wrapper;

pub use sys::{LANDLOCK_ABI, kernel_landlock_abi};
