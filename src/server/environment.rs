//! `environment/status` (a liveness probe) and `environmentConfig/read` (the executor's own Codex
//! config layers, projected by key path: how a client discovers executor-side MCP servers).
//!
//! Layers read, lowest precedence first: the system config `/etc/codex/config.toml`, the user
//! config `$CODEX_HOME/config.toml` (`CODEX_HOME` defaults to `~/.codex`), then, for a trusted
//! project only, `.codex/config.toml` of each directory from the project root (the nearest
//! ancestor of `cwd` holding `.git`, else `cwd`) down to `cwd`. A project is trusted when the
//! user config says `trust_level = "trusted"` under `[projects."<cwd or project root>"]`.
//! Requirements come from `/etc/codex/requirements.toml`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::call::Call;
use crate::path_uri;
use crate::protocol::environment::{
    ConfigReadParams, ConfigReadResult, EnvironmentStatus, Layer, LayerStack, StatusResult,
};
use crate::rpc::RpcError;

/// Largest config file read; a bigger one is an error, not a memory spike.
pub(super) const MAX_CONFIG_FILE_BYTES: u64 = 4 << 20;

/// Where the system layers live.
const SYSTEM_DIR: &str = "/etc/codex";

/// `environment/status`: params none, `null` or `{}` (anything else is refused as the reference
/// does: "invalid type: map, expected unit").
pub(super) fn status(params: Value) -> Result<StatusResult, RpcError> {
    match params {
        Value::Null => {}
        Value::Object(ref m) if m.is_empty() => {}
        other => {
            let err = serde_json::from_value::<()>(other)
                .err()
                .map_or_else(|| "expected unit".to_string(), |e| e.to_string());
            return Err(RpcError::invalid_params(err));
        }
    }
    Ok(StatusResult {
        status: EnvironmentStatus::Ready,
    })
}

/// `environmentConfig/read`.
pub(super) async fn config_read(
    _call: &Call,
    p: ConfigReadParams,
) -> Result<ConfigReadResult, RpcError> {
    if !p.cwd.contains(':') {
        return Err(RpcError::invalid_params(
            "invalid URI: relative URL without a base",
        ));
    }
    path_uri::to_path(&p.cwd).map_err(|e| RpcError::invalid_params(format!("invalid URI: {e}")))?;
    if p.config_paths.is_empty() && p.requirements_paths.is_empty() {
        return Err(RpcError::invalid_params(
            "at least one config or requirements path is required",
        ));
    }
    if p.config_paths
        .iter()
        .chain(&p.requirements_paths)
        .any(Vec::is_empty)
    {
        return Err(RpcError::invalid_params(
            "TOML paths must contain at least one key segment",
        ));
    }
    let env = Env {
        codex_home: std::env::var_os("CODEX_HOME").map(PathBuf::from),
        home: std::env::var_os("HOME").map(PathBuf::from),
        system_dir: PathBuf::from(SYSTEM_DIR),
    };
    tokio::task::spawn_blocking(move || read(&env, &p))
        .await
        .map_err(|e| RpcError::internal(format!("failed to load executor-local config: {e}")))?
}

/// Where the files are (the process environment, or a test's).
pub(super) struct Env {
    pub codex_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub system_dir: PathBuf,
}

/// Reads and projects every layer (blocking).
pub(super) fn read(env: &Env, p: &ConfigReadParams) -> Result<ConfigReadResult, RpcError> {
    let codex_home = codex_home(env)?;
    let user_file = codex_home.join("config.toml");
    let mut config = LayerStack::default();
    let mut requirements = LayerStack::default();
    if !p.config_paths.is_empty() {
        let system_file = env.system_dir.join("config.toml");
        let user = load(&user_file)?;
        let mut files = vec![
            ("system", system_file.clone(), load(&system_file)?),
            ("user", user_file.clone(), user.clone()),
        ];
        if let Ok(cwd) = path_uri::to_path(&p.cwd) {
            for file in project_files(&cwd, &codex_home, user.as_ref()) {
                let table = load(&file)?;
                files.push(("project", file, table));
            }
        }
        for (label, file, table) in &files {
            if let Some(table) = table
                && let Some(layer) = layer(label, file, table, &p.config_paths)?
            {
                config.layers.push(layer);
            }
        }
    }
    if !p.requirements_paths.is_empty() {
        let file = env.system_dir.join("requirements.toml");
        if let Some(table) = load(&file)?
            && let Some(layer) = layer("system", &file, &table, &p.requirements_paths)?
        {
            requirements.layers.push(layer);
        }
    }
    Ok(ConfigReadResult {
        user_home_dir: env.home.as_deref().map(path_uri::from_path),
        codex_home_dir: path_uri::from_path(&codex_home),
        hostname: hostname(),
        config,
        requirements,
    })
}

/// `CODEX_HOME` when set and non-empty (it must exist), else `~/.codex` (it need not).
fn codex_home(env: &Env) -> Result<PathBuf, RpcError> {
    let fail = |why: String| RpcError::internal(format!("failed to find Codex home: {why}"));
    match &env.codex_home {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::canonicalize(dir)
            .map_err(|e| fail(format!("CODEX_HOME {}: {e}", dir.display()))),
        _ => match &env.home {
            Some(home) if home.is_absolute() => Ok(home.join(".codex")),
            _ => Err(fail("no home directory".to_string())),
        },
    }
}

/// The `.codex/config.toml` files of a trusted project, from its root down to `cwd` (a missing
/// `cwd`, an untrusted project, or a directory whose `.codex` is `CODEX_HOME` gives none).
fn project_files(cwd: &Path, codex_home: &Path, user: Option<&toml::Table>) -> Vec<PathBuf> {
    let Ok(cwd) = std::fs::canonicalize(cwd) else {
        return Vec::new();
    };
    let root = cwd
        .ancestors()
        .find(|dir| dir.join(".git").exists())
        .unwrap_or(&cwd)
        .to_path_buf();
    let trusted = |dir: &Path| {
        user.and_then(|u| u.get("projects"))
            .and_then(|p| p.get(dir.to_str()?))
            .and_then(|p| p.get("trust_level"))
            .and_then(toml::Value::as_str)
            == Some("trusted")
    };
    if !trusted(&cwd) && !trusted(&root) {
        return Vec::new();
    }
    let home = std::fs::canonicalize(codex_home).unwrap_or_else(|_| codex_home.to_path_buf());
    let mut dirs: Vec<&Path> = cwd
        .ancestors()
        .take_while(|d| d.starts_with(&root))
        .collect();
    dirs.reverse();
    dirs.into_iter()
        .map(|d| d.join(".codex"))
        .filter(|d| *d != home)
        .map(|d| d.join("config.toml"))
        .filter(|f| f.is_file())
        .collect()
}

/// A config file as a table; `None` if it does not exist.
fn load(file: &Path) -> Result<Option<toml::Table>, RpcError> {
    let load_err = |why: String| {
        RpcError::internal(format!(
            "failed to load executor-local config: {}: {why}",
            file.display()
        ))
    };
    let text = match read_bounded(file) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(None),
        Err(e) => return Err(load_err(e)),
    };
    text.parse()
        .map(Some)
        .map_err(|e: toml::de::Error| load_err(e.to_string()))
}

/// One file's table as a projected layer; `None` when nothing asked for is in it.
fn layer(
    label: &str,
    file: &Path,
    table: &toml::Table,
    paths: &[Vec<String>],
) -> Result<Option<Layer>, RpcError> {
    let selected = project(table, paths);
    if selected.is_empty() {
        return Ok(None);
    }
    let toml = toml::to_string(&selected).map_err(|e| {
        RpcError::internal(format!("failed to serialize executor-local config: {e}"))
    })?;
    let base_dir = file.parent().unwrap_or(Path::new("/"));
    Ok(Some(Layer {
        source: format!("{label} ({})", file.display()),
        base_dir: path_uri::from_path(base_dir),
        toml,
    }))
}

/// The file's text; `None` if it does not exist.
fn read_bounded(file: &Path) -> Result<Option<String>, String> {
    use std::io::Read as _;
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(format!(
            "larger than the limit of {MAX_CONFIG_FILE_BYTES} bytes"
        ));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| "not valid UTF-8".to_string())
}

/// The keys of `table` at `paths`, each at the same place in a new table; missing keys are
/// skipped.
pub(super) fn project(table: &toml::Table, paths: &[Vec<String>]) -> toml::Table {
    let mut out = toml::Table::new();
    'paths: for path in paths {
        let Some((last, parents)) = path.split_last() else {
            continue;
        };
        let mut src = table;
        let mut found = true;
        for key in parents {
            match src.get(key).and_then(toml::Value::as_table) {
                Some(t) => src = t,
                None => {
                    found = false;
                    break;
                }
            }
        }
        let Some(value) = found.then(|| src.get(last)).flatten() else {
            continue;
        };
        let mut dst = &mut out;
        for key in parents {
            let entry = dst
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            // A parent already copied whole holds this key already.
            match entry {
                toml::Value::Table(t) => dst = t,
                _ => continue 'paths,
            }
        }
        dst.insert(last.clone(), value.clone());
    }
    out
}

/// The machine's host name, for per-host requirements.
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
#[path = "environment_tests.rs"]
mod tests;
