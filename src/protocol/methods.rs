//! The one method table: every method the protocol knows, declared once with its name, the family
//! handshake errors name, its direction, and what the client does with it after a reconnect.
//!
//! Everything else is driven by it: the server's router matches on [`Method`] (so a method
//! without a handler does not compile), the connection refuses a request for a method that is not
//! a client request, handshake errors name the family, and the client's replay policy
//! (`client::replay`) reads [`Spec::replay`]. Adding a method is one line of [`methods!`] below
//! plus its handler.

/// Which family a method belongs to; handshake errors name it ("client must call initialize
/// before using exec methods").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `initialize` and `initialized`: they make the handshake, so they are never gated by it.
    Handshake,
    /// `environment/info`.
    EnvironmentInfo,
    /// `environment/status`.
    EnvironmentStatus,
    /// `environmentConfig/*`.
    EnvironmentConfig,
    /// `process/*`.
    Exec,
    /// `fs/*`.
    Filesystem,
    /// `http/*`.
    Http,
}

impl Family {
    /// The family's name as handshake errors spell it (the reference's wording).
    pub const fn label(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::EnvironmentInfo => "environment info",
            Self::EnvironmentStatus => "environment status",
            Self::EnvironmentConfig => "environment config",
            Self::Exec => "exec",
            Self::Filesystem => "filesystem",
            Self::Http => "http",
        }
    }
}

/// Who sends a method, and whether it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → server, answered with a result or an error.
    Request,
    /// Client → server, never answered.
    ClientNotification,
    /// Server → client, never answered.
    ServerNotification,
}

/// What the client does with a call whose connection dropped after the request was handed to the
/// transport and before its answer came (the server may or may not have acted on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Sent again on the new connection once the session is resumed: doing it twice is harmless.
    Resend,
    /// Not sent again; the caller gets a disconnect error.
    Fail,
    /// `process/start`: not sent again; the client terminates the process id on the resumed
    /// session and tells the caller the start is ambiguous.
    TerminateAndReport,
    /// The handshake: the client's recovery sends it itself on every new connection.
    Redone,
    /// Not something the client sends (a server notification).
    NotSent,
}

/// Everything the table says about one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The `method` member on the wire.
    pub name: &'static str,
    /// The family named in handshake errors.
    pub family: Family,
    /// Who sends it, and whether it is answered.
    pub direction: Direction,
    /// The client's decision after a reconnect.
    pub replay: Replay,
    /// Why that decision is safe.
    pub replay_reason: &'static str,
}

/// Declares [`Method`], its [`Spec`]s, and the name constants of [`method`](super::method).
macro_rules! methods {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident, $konst:ident = $name:literal, $family:ident, $direction:ident,
        $replay:ident: $why:literal;
    )*) => {
        /// A method of the protocol. Match on it where every method must be handled: the
        /// compiler then holds each place to the table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Method {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl Method {
            /// Every method, in table order.
            pub const ALL: &'static [Method] = &[$(Method::$variant,)*];

            /// The method named `name` on the wire.
            pub fn from_name(name: &str) -> Option<Method> {
                match name {
                    $( $name => Some(Method::$variant), )*
                    _ => None,
                }
            }

            /// Its row of the table.
            pub const fn spec(self) -> Spec {
                match self {
                    $( Method::$variant => Spec {
                        name: $name,
                        family: Family::$family,
                        direction: Direction::$direction,
                        replay: Replay::$replay,
                        replay_reason: $why,
                    }, )*
                }
            }
        }

        /// Method names, as they appear in the `method` member of a message (from the table).
        pub mod names {
            $( #[doc = concat!("`", $name, "`")] pub const $konst: &str = $name; )*
        }
    };
}

methods! {
    /// Opens or resumes a session.
    Initialize, INITIALIZE = "initialize", Handshake, Request,
        Redone: "the recovery sends it (with resumeSessionId) on every new connection";
    /// Ends the handshake.
    Initialized, INITIALIZED = "initialized", Handshake, ClientNotification,
        Redone: "the recovery sends it after every initialize";
    /// The executor's shell, home, temp dir, version and capabilities.
    EnvironmentInfo, ENVIRONMENT_INFO = "environment/info", EnvironmentInfo, Request,
        Resend: "reads only";
    /// Starts a process.
    ProcessStart, PROCESS_START = "process/start", Exec, Request,
        TerminateAndReport: "a second start would fail as a duplicate or run the command twice";
    /// Retained output after a seq (long-polls).
    ProcessRead, PROCESS_READ = "process/read", Exec, Request,
        Resend: "reads only; the retained output is still there";
    /// Writes to a process's stdin.
    ProcessWrite, PROCESS_WRITE = "process/write", Exec, Request,
        Resend: "sent with the same writeId, which the server writes once";
    /// Sends a signal to a process group.
    ProcessSignal, PROCESS_SIGNAL = "process/signal", Exec, Request,
        Fail: "a second SIGINT is not the same as one";
    /// SIGTERM, then SIGKILL after a grace.
    ProcessTerminate, PROCESS_TERMINATE = "process/terminate", Exec, Request,
        Resend: "terminating a terminated group changes nothing (`running` may then say false)";
    /// A chunk of output.
    ProcessOutput, PROCESS_OUTPUT = "process/output", Exec, ServerNotification,
        NotSent: "sent by the server";
    /// The process exited.
    ProcessExited, PROCESS_EXITED = "process/exited", Exec, ServerNotification,
        NotSent: "sent by the server";
    /// Every stream of the process ended after its exit: the last event.
    ProcessClosed, PROCESS_CLOSED = "process/closed", Exec, ServerNotification,
        NotSent: "sent by the server";
    /// Reads a whole file.
    FsReadFile, FS_READ_FILE = "fs/readFile", Filesystem, Request,
        Fail: "fs calls fail with the disconnect error";
    /// Writes a whole file.
    FsWriteFile, FS_WRITE_FILE = "fs/writeFile", Filesystem, Request,
        Fail: "fs calls fail with the disconnect error";
    /// Creates a directory.
    FsCreateDirectory, FS_CREATE_DIRECTORY = "fs/createDirectory", Filesystem, Request,
        Fail: "fs calls fail with the disconnect error";
    /// Type, size and times of a path.
    FsGetMetadata, FS_GET_METADATA = "fs/getMetadata", Filesystem, Request,
        Fail: "fs calls fail with the disconnect error";
    /// Entries of a directory.
    FsReadDirectory, FS_READ_DIRECTORY = "fs/readDirectory", Filesystem, Request,
        Fail: "fs calls fail with the disconnect error";
    /// Removes a path.
    FsRemove, FS_REMOVE = "fs/remove", Filesystem, Request,
        Fail: "fs calls fail with the disconnect error";
    /// Copies a file or a tree.
    FsCopy, FS_COPY = "fs/copy", Filesystem, Request,
        Fail: "fs calls fail with the disconnect error";
    /// Resolves a path.
    FsCanonicalize, FS_CANONICALIZE = "fs/canonicalize", Filesystem, Request,
        Fail: "fs calls fail with the disconnect error";
    /// Opens a file for `fs/readBlock`.
    FsOpen, FS_OPEN = "fs/open", Filesystem, Request,
        Fail: "file handles belong to the dropped connection";
    /// Reads a block of an open file.
    FsReadBlock, FS_READ_BLOCK = "fs/readBlock", Filesystem, Request,
        Fail: "file handles belong to the dropped connection";
    /// Closes an open file.
    FsClose, FS_CLOSE = "fs/close", Filesystem, Request,
        Fail: "file handles belong to the dropped connection";
    // ----- issue 11, part "config": environment status and config.
    /// A liveness probe: `{"status":"ready"}`.
    EnvironmentStatus, ENVIRONMENT_STATUS = "environment/status", EnvironmentStatus, Request,
        Resend: "reads only";
    /// The executor's own config layers, projected by key path.
    EnvironmentConfigRead, ENVIRONMENT_CONFIG_READ = "environmentConfig/read", EnvironmentConfig,
        Request, Resend: "reads only";
    // Issue 11, streamed writes (`fileWriteStreaming`).
    /// Writes a block of a file opened with `mode: "replace"`.
    FsWriteBlock, FS_WRITE_BLOCK = "fs/writeBlock", Filesystem, Request,
        Fail: "file handles belong to the dropped connection";
    // Part: http (issue 11, item 1).
    /// An HTTP request made by the executor; its body buffered or streamed.
    HttpRequest, HTTP_REQUEST = "http/request", Http, Request,
        Fail: "a request may not be safe to send twice; a streamed body belongs to the dropped connection";
    /// A piece of a streamed `http/request` body, or its end.
    HttpRequestBodyDelta, HTTP_REQUEST_BODY_DELTA = "http/request/bodyDelta", Http,
        ServerNotification, NotSent: "sent by the server";
    // Issue 11, items 4 and 5: fs/walk, fs/watchMissing, fs/missingChanged.
    /// A breadth-first, bounded listing of a tree.
    FsWalk, FS_WALK = "fs/walk", Filesystem, Request,
        Fail: "fs calls fail with the disconnect error";
    /// A one-shot watch of missing paths (and one present path), one per connection.
    FsWatchMissing, FS_WATCH_MISSING = "fs/watchMissing", Filesystem, Request,
        Fail: "the watch belongs to the dropped connection";
    /// A `fs/watchMissing` watch fired.
    FsMissingChanged, FS_MISSING_CHANGED = "fs/missingChanged", Filesystem, ServerNotification,
        NotSent: "sent by the server";
    // ----- issue 14, part "procx": process extensions (ours).
    /// The session's processes.
    ProcessList, PROCESS_LIST = "process/list", Exec, Request,
        Resend: "reads only";
    /// Ends a process's stdin (EOF).
    ProcessCloseStdin, PROCESS_CLOSE_STDIN = "process/closeStdin", Exec, Request,
        Resend: "closing a closed stdin is `{}` and changes nothing";
    /// Sets a tty process's terminal size.
    ProcessResize, PROCESS_RESIZE = "process/resize", Exec, Request,
        Resend: "setting the same size again changes nothing";
    // ----- issue 14: watches (ours).
    /// Starts a (recursive) watch of a path; changes come as `fs/changed`.
    FsWatch, FS_WATCH = "fs/watch", Filesystem, Request,
        Fail: "watches belong to the dropped connection";
    /// Ends a watch.
    FsUnwatch, FS_UNWATCH = "fs/unwatch", Filesystem, Request,
        Fail: "watches belong to the dropped connection";
    /// Coalesced changes seen by a watch.
    FsChanged, FS_CHANGED = "fs/changed", Filesystem, ServerNotification,
        NotSent: "sent by the server";
    // ----- issue 15: ack (ours).
    /// The client has processed a process's events up to a seq.
    ProcessAck, PROCESS_ACK = "process/ack", Exec, Request,
        Resend: "acknowledging the same seq again changes nothing";
}

impl Method {
    /// The name on the wire.
    pub const fn name(self) -> &'static str {
        self.spec().name
    }

    /// Whether a client sends it as a request (and the server must answer it).
    pub const fn is_request(self) -> bool {
        matches!(self.spec().direction, Direction::Request)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_round_trips_through_its_name_and_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &m in Method::ALL {
            assert_eq!(Method::from_name(m.name()), Some(m));
            assert!(seen.insert(m.name()), "{} twice", m.name());
        }
        assert_eq!(Method::from_name("process/nope"), None);
        assert_eq!(
            Method::from_name("Process/Start"),
            None,
            "names are case-sensitive"
        );
    }

    #[test]
    fn table_rows_are_consistent() {
        for &m in Method::ALL {
            let spec = m.spec();
            match spec.direction {
                Direction::ServerNotification => assert_eq!(spec.replay, Replay::NotSent, "{m}"),
                _ => assert_ne!(spec.replay, Replay::NotSent, "{m}: the client sends it"),
            }
            assert_eq!(
                spec.family == Family::Handshake,
                spec.replay == Replay::Redone,
                "{m}: only the handshake is redone by the recovery"
            );
            let expected = match spec.name.split('/').collect::<Vec<_>>()[..] {
                ["process", ..] => Family::Exec,
                ["fs", ..] => Family::Filesystem,
                ["http", ..] => Family::Http,
                ["environment", "info"] => Family::EnvironmentInfo,
                ["environment", "status"] => Family::EnvironmentStatus,
                ["environmentConfig", ..] => Family::EnvironmentConfig,
                _ => Family::Handshake,
            };
            assert_eq!(spec.family, expected, "{m}");
            assert!(!spec.replay_reason.is_empty());
        }
    }
}
