//! What the client does with a call whose connection dropped after the request was handed to
//! the transport and before the answer came: the server may or may not have acted on it. The
//! decision is a column of the protocol's method table ([`crate::protocol::methods`]);
//! `recovery_tests.rs` iterates the table against a scripted server.
//!
//! A call that never reached the transport, or that is made while the client is recovering,
//! simply waits for the new connection and is sent there, whatever its method.

use crate::protocol::Method;
pub use crate::protocol::Replay;

/// Every method the client sends as a call, with its decision and the reason.
pub fn calls() -> impl Iterator<Item = (&'static str, Replay, &'static str)> {
    Method::ALL
        .iter()
        .map(|m| m.spec())
        .filter(|s| !matches!(s.replay, Replay::NotSent | Replay::Redone))
        .map(|s| (s.name, s.replay, s.replay_reason))
}

/// The decision for `name`. A name outside the table, or one the client has no business
/// sending as a call, is not replayed.
pub fn policy(name: &str) -> Replay {
    match Method::from_name(name).map(|m| m.spec().replay) {
        Some(replay @ (Replay::Resend | Replay::Fail | Replay::TerminateAndReport)) => replay,
        _ => Replay::Fail,
    }
}
