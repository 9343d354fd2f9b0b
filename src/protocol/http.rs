//! `http/request` and its `http/request/bodyDelta` notifications: an HTTP request made by the
//! executor on the client's behalf (the reference client reaches executor-side MCP servers so).

use serde::{Deserialize, Serialize};

/// The most decoded bytes one `http/request/bodyDelta` carries (the reference's limit).
pub const MAX_HTTP_BODY_DELTA_BYTES: usize = 1024 * 1024;

/// Variables a `valueEnvVar` header may never read (compared case-insensitively): the
/// executor's own credentials stay on the executor.
pub const DENIED_HEADER_ENV_VARS: &[&str] = &[
    "CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN",
    "OPENAI_FEDERATION_RULE_ID",
    "OPENAI_IDENTITY_TOKEN_FILE",
    "OPENAI_WORKLOAD_IDENTITY_CONTEXT",
    "OPENAI_API_KEY",
    "CODEX_API_KEY",
    "CODEX_ACCESS_TOKEN",
    "CODEX_CONNECTORS_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
];

/// Whether `valueEnvVar` may not name `var`.
pub fn is_denied_header_env_var(var: &str) -> bool {
    DENIED_HEADER_ENV_VARS
        .iter()
        .any(|d| d.eq_ignore_ascii_case(var))
}

/// One request header. With `valueEnvVar`, the value sent is `value` followed by that variable
/// of the executor's environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestHeader {
    pub name: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_env_var: Option<String>,
}

/// One response header (never a `valueEnvVar`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

/// Whether a 3xx answer is followed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedirectPolicy {
    #[default]
    Follow,
    Stop,
}

/// `http/request` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestParams {
    pub method: String,
    pub url: String,
    /// Sent in this order, repeats included.
    #[serde(default)]
    pub headers: Option<Vec<HttpRequestHeader>>,
    #[serde(default)]
    pub body_base64: Option<String>,
    /// None: no timeout.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Unique on the connection while a streamed body with this id is active.
    pub request_id: String,
    #[serde(default)]
    pub stream_response: Option<bool>,
    #[serde(default)]
    pub redirect_policy: Option<RedirectPolicy>,
}

/// `http/request` result. `bodyBase64` is empty when the body is streamed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestResponse {
    pub status: u16,
    pub headers: Vec<HttpHeader>,
    pub body_base64: String,
}

/// `http/request/bodyDelta` params: a piece of a streamed body (`seq` from 1), or its end
/// (`done`, empty delta), or a read failure (`done` and `error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequestBodyDelta {
    pub request_id: String,
    pub seq: u64,
    pub delta_base64: String,
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub error: Option<String>,
}
