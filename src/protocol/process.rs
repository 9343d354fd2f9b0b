//! `process/*` params, results and notifications.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sandbox::SandboxIntent;

/// Which environment the child starts from under an [`EnvPolicy`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum EnvInherit {
    #[default]
    All,
    Core,
    None,
}

/// `envPolicy`: how to build the child's environment from the server's own.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EnvPolicy {
    #[serde(default)]
    pub inherit: EnvInherit,
    #[serde(default)]
    pub ignore_default_excludes: bool,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub include_only: Vec<String>,
}

/// `process/start` params. Unknown members (`metadata`, ...) are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartParams {
    pub process_id: String,
    pub argv: Vec<String>,
    pub cwd: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_policy: Option<EnvPolicy>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub pipe_stdin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg0: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxIntent>,
    #[serde(default)]
    pub enforce_managed_network: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_network: Option<serde_json::Value>,
}

/// The sandbox the executor applied to a started process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum SandboxType {
    None,
    LinuxSeccomp,
    MacosSeatbelt,
    WindowsRestrictedToken,
}

/// `process/start` result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartResult {
    pub process_id: String,
    pub sandbox_type: SandboxType,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum Stream {
    Stdout,
    Stderr,
    Pty,
}

impl Stream {
    /// The wire name (what serde writes).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Pty => "pty",
        }
    }
}

/// `process/read` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadParams {
    pub process_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// One retained output chunk in a `process/read` answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReadChunk {
    pub seq: u64,
    pub stream: Stream,
    /// Base64 of the bytes.
    pub chunk: String,
}

/// `process/read` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReadResult {
    pub chunks: Vec<ReadChunk>,
    pub next_seq: u64,
    pub exited: bool,
    pub exit_code: Option<i32>,
    pub closed: bool,
    pub failure: Option<String>,
    pub sandbox_denied: bool,
}

impl ReadResult {
    /// The same JSON as `serde_json::to_string`, written by hand: the chunks are base64, which
    /// needs no escaping, so a catch-up read of megabytes skips serde's byte-by-byte escape scan
    /// and the copy through a `serde_json::Value` (`scripts/bench`, "reconnect ... caught up").
    /// A chunk that is not plain base64 (never made by the server) goes through serde.
    pub fn to_json(&self) -> String {
        use std::fmt::Write as _;
        let size: usize = self.chunks.iter().map(|c| c.chunk.len() + 48).sum();
        let mut out = String::with_capacity(size + 160);
        out.push_str("{\"chunks\":[");
        for (i, c) in self.chunks.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"seq\":{},\"stream\":\"{}\",\"chunk\":",
                c.seq,
                c.stream.as_str()
            );
            let plain = c
                .chunk
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
            if plain {
                out.push('"');
                out.push_str(&c.chunk);
                out.push('"');
            } else {
                out.push_str(&serde_json::to_string(&c.chunk).expect("a string serializes"));
            }
            out.push('}');
        }
        let exit_code = serde_json::to_string(&self.exit_code).expect("a number serializes");
        let failure = serde_json::to_string(&self.failure).expect("a string serializes");
        let _ = write!(
            out,
            "],\"nextSeq\":{},\"exited\":{},\"exitCode\":{},\"closed\":{},\"failure\":{},\"sandboxDenied\":{}}}",
            self.next_seq, self.exited, exit_code, self.closed, failure, self.sandbox_denied
        );
        out
    }
}

/// `process/write` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteParams {
    pub process_id: String,
    /// Base64 of the bytes to write.
    pub chunk: String,
    pub write_id: String,
}

/// What happened to a `process/write`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum WriteStatus {
    Accepted,
    UnknownProcess,
    StdinClosed,
    Starting,
}

/// `process/write` result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteResult {
    pub status: WriteStatus,
}

/// Signals a client may send.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum SignalName {
    Interrupt,
}

/// `process/signal` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalParams {
    pub process_id: String,
    pub signal: SignalName,
}

/// `process/terminate` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminateParams {
    pub process_id: String,
}

/// `process/terminate` result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminateResult {
    pub running: bool,
}

/// `process/output` notification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OutputNotification {
    pub process_id: String,
    pub seq: u64,
    pub stream: Stream,
    pub chunk: String,
}

/// `process/exited` notification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExitedNotification {
    pub process_id: String,
    pub seq: u64,
    pub exit_code: i32,
    pub sandbox_denied: bool,
}

/// `process/closed` notification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClosedNotification {
    pub process_id: String,
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_read_result_is_the_serde_json() {
        let chunk = |seq, stream, chunk: &str| ReadChunk {
            seq,
            stream,
            chunk: chunk.to_string(),
        };
        let results = [
            ReadResult {
                chunks: vec![],
                next_seq: 1,
                exited: false,
                exit_code: None,
                closed: false,
                failure: None,
                sandbox_denied: false,
            },
            ReadResult {
                chunks: vec![
                    chunk(1, Stream::Stdout, "aGkK"),
                    chunk(3, Stream::Stderr, "+/8="),
                    chunk(4, Stream::Pty, ""),
                    // Not base64 (never made by the server): escaped like serde would.
                    chunk(5, Stream::Stdout, "quote\" back\\ \u{1} é"),
                ],
                next_seq: 9,
                exited: true,
                exit_code: Some(-1),
                closed: true,
                failure: Some("failed to wait: \"x\"\n".into()),
                sandbox_denied: true,
            },
        ];
        for result in results {
            assert_eq!(
                result.to_json(),
                serde_json::to_string(&result).unwrap(),
                "{result:?}"
            );
        }
    }
}
