//! What the client does with a call whose connection dropped after the request was handed to
//! the transport and before the answer came: the server may or may not have acted on it. One
//! table decides, per method; `recovery_tests.rs` iterates it against a scripted server.
//!
//! A call that never reached the transport, or that is made while the client is recovering,
//! simply waits for the new connection and is sent there, whatever its method.

use crate::protocol::method;

/// The decision for one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Sent again on the new connection once the session is resumed: doing it twice is harmless.
    Resend,
    /// Not sent again; the caller gets [`super::ClientError::Disconnected`].
    Fail,
    /// `process/start`: not sent again; the client terminates the process id on the resumed
    /// session and the caller gets [`super::ClientError::StartAmbiguous`].
    TerminateAndReport,
}

/// Every method the client sends, with its decision and the reason.
pub const METHODS: &[(&str, Replay, &str)] = &[
    (method::ENVIRONMENT_INFO, Replay::Resend, "reads only"),
    (
        method::PROCESS_START,
        Replay::TerminateAndReport,
        "a second start would fail as a duplicate or run the command twice",
    ),
    (
        method::PROCESS_READ,
        Replay::Resend,
        "reads only; the retained output is still there",
    ),
    (
        method::PROCESS_WRITE,
        Replay::Resend,
        "sent with the same writeId, which the server writes once",
    ),
    (
        method::PROCESS_SIGNAL,
        Replay::Fail,
        "a second SIGINT is not the same as one",
    ),
    (
        method::PROCESS_TERMINATE,
        Replay::Resend,
        "terminating a terminated group changes nothing (`running` may then say false)",
    ),
    (
        method::FS_READ_FILE,
        Replay::Fail,
        "fs calls fail with the disconnect error",
    ),
    (
        method::FS_WRITE_FILE,
        Replay::Fail,
        "fs calls fail with the disconnect error",
    ),
    (
        method::FS_CREATE_DIRECTORY,
        Replay::Fail,
        "fs calls fail with the disconnect error",
    ),
    (
        method::FS_GET_METADATA,
        Replay::Fail,
        "fs calls fail with the disconnect error",
    ),
    (
        method::FS_READ_DIRECTORY,
        Replay::Fail,
        "fs calls fail with the disconnect error",
    ),
    (
        method::FS_REMOVE,
        Replay::Fail,
        "fs calls fail with the disconnect error",
    ),
    (
        method::FS_COPY,
        Replay::Fail,
        "fs calls fail with the disconnect error",
    ),
    (
        method::FS_CANONICALIZE,
        Replay::Fail,
        "fs calls fail with the disconnect error",
    ),
    (
        method::FS_OPEN,
        Replay::Fail,
        "file handles belong to the dropped connection",
    ),
    (
        method::FS_READ_BLOCK,
        Replay::Fail,
        "file handles belong to the dropped connection",
    ),
    (
        method::FS_CLOSE,
        Replay::Fail,
        "file handles belong to the dropped connection",
    ),
];

/// The decision for `method`; a method missing from [`METHODS`] is not replayed.
pub fn policy(name: &str) -> Replay {
    METHODS
        .iter()
        .find(|(m, _, _)| *m == name)
        .map(|(_, replay, _)| *replay)
        .unwrap_or(Replay::Fail)
}
