//! `environment/status` and `environmentConfig/read`.

use serde::{Deserialize, Serialize};

/// `environment/status` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusResult {
    pub status: EnvironmentStatus,
}

/// What `environment/status` reports; `ready` is the only state an answering server has.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum EnvironmentStatus {
    Ready,
}

/// `environmentConfig/read` params (every field required, as in the reference).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigReadParams {
    /// The project directory whose layers apply (a `file:` URI).
    pub cwd: String,
    /// TOML key paths to keep from the config layers.
    pub config_paths: Vec<Vec<String>>,
    /// TOML key paths to keep from the requirements layers.
    pub requirements_paths: Vec<Vec<String>>,
}

/// `environmentConfig/read` result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigReadResult {
    pub user_home_dir: Option<String>,
    pub codex_home_dir: String,
    pub hostname: Option<String>,
    pub config: LayerStack,
    pub requirements: LayerStack,
}

/// Layers from lowest to highest precedence.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LayerStack {
    pub layers: Vec<Layer>,
    /// Where the client inserts layers it gets elsewhere (cloud).
    pub cloud_insertion_index: usize,
}

/// One config layer, projected.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    /// For diagnostics only, e.g. `user (/home/u/.codex/config.toml)`.
    pub source: String,
    /// The directory relative paths in the layer resolve against (a `file:` URI).
    pub base_dir: String,
    /// The selected keys, as TOML text.
    pub toml: String,
}
