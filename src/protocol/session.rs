//! Handshake and environment types: `initialize`, `environment/info`.

use serde::{Deserialize, Serialize};

/// `initialize` params.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeParams {
    pub client_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_session_id: Option<String>,
}

/// `initialize` result.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeResult {
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_info: Option<EnvironmentInfo>,
}

/// The shell the executor would use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShellInfo {
    pub name: String,
    pub path: String,
}

/// What the executor machine looks like; also the answer of `environment/info`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentInfo {
    pub shell: ShellInfo,
    pub cwd: String,
    pub user_home_dir: String,
    pub platform_os: String,
    pub temp_dir: String,
    pub executor_version: String,
    #[serde(default)]
    pub capabilities: serde_json::Map<String, serde_json::Value>,
}
