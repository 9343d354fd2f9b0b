//! `environmentInfo`: what this executor machine looks like, computed once at start.

use std::path::PathBuf;

use crate::path_uri;
use crate::protocol::session::{Capabilities, EnvironmentInfo, ShellInfo};

/// The executor's environment as the protocol reports it.
pub fn current() -> EnvironmentInfo {
    let shell_path = std::env::var_os("SHELL")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/bin/sh"));
    let shell_name = shell_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sh".to_string());
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    EnvironmentInfo {
        shell: ShellInfo {
            name: shell_name,
            path: shell_path.display().to_string(),
        },
        cwd: path_uri::from_path(&cwd),
        user_home_dir: path_uri::from_path(&home),
        platform_os: "linux".to_string(),
        temp_dir: path_uri::from_path(&std::env::temp_dir()),
        executor_version: env!("CARGO_PKG_VERSION").to_string(),
        // Each flag is turned on by the change that builds and tests what it promises.
        capabilities: Capabilities {
            environment_config_read: false,
            http_header_env_vars: false,

            fs_watch_missing: true,

            file_write_streaming: false,
            sandboxed_file_streaming: false,
            ..Capabilities::default()
        },
    }
}
