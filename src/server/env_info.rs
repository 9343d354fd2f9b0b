//! `environmentInfo`: what this executor machine looks like, computed once at start; the
//! executable's digest (`providerId`) is computed on the blocking pool at start and awaited by
//! the first answer that needs it.

use std::ffi::OsStr;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use crate::path_uri;
use crate::protocol::session::{Capabilities, EnvironmentInfo, ShellInfo};

/// The executor's environment as the protocol reports it, less `providerId` (see [`ProviderId`]).
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
        temporary_directories: temporary_directories(std::env::var_os("TMPDIR").as_deref(), &cwd),
        cwd: path_uri::from_path(&cwd),
        user_home_dir: path_uri::from_path(&home),
        platform_os: "linux".to_string(),
        temp_dir: path_uri::from_path(&std::env::temp_dir()),
        executor_version: env!("CARGO_PKG_VERSION").to_string(),
        provider_id: None,
        // We put no helper program of ours on a child's PATH: the helpers (codex-linux-sandbox,
        // codex-fs) are run by absolute path.
        prepend_path_dirs: Vec::new(),
        // Each flag is turned on by the change that builds and tests what it promises.
        capabilities: Capabilities {
            environment_config_read: true,
            http_header_env_vars: true,

            fs_watch_missing: true,

            file_write_streaming: true,
            sandboxed_file_streaming: true,

            // Issue 14, part "procx" (tests/process_ext.rs).
            pty_resize: true,
            stdin_close: true,
            process_signals: true,
            process_timeout: true,
            process_list: true,
            // Issue 14, part "gaps" (tests/process_ext.rs, "Gaps").
            read_gaps: true,
            // Issue 14: watches (tests/fs_watch_recursive.rs).
            fs_watch: true,
            // Issue 15, part "flow" (tests/flow.rs).
            output_ack: true,
            ..Capabilities::default()
        },
    }
}

/// `temporaryDirectories` on Unix: `TMPDIR` when set and non-empty, a relative value resolved
/// against `cwd`; otherwise none.
fn temporary_directories(tmpdir: Option<&OsStr>, cwd: &Path) -> Vec<String> {
    match tmpdir {
        Some(dir) if !dir.is_empty() => vec![path_uri::from_path(&cwd.join(dir))],
        _ => Vec::new(),
    }
}

/// `providerId`: `sha256:` + the hex digest of the running executable's bytes, computed once.
#[derive(Clone, Default)]
pub struct ProviderId(Arc<OnceCell<Option<String>>>);

impl ProviderId {
    /// The digest; the first caller computes it on the blocking pool, the others wait for it.
    /// `None` if the executable cannot be read.
    pub async fn get(&self) -> Option<String> {
        self.0
            .get_or_init(|| async {
                tokio::task::spawn_blocking(executable_digest)
                    .await
                    .ok()
                    .flatten()
            })
            .await
            .clone()
    }
}

fn executable_digest() -> Option<String> {
    // /proc/self/exe is the file that runs, even if its path was replaced since.
    let mut file = std::fs::File::open("/proc/self/exe")
        .or_else(|_| std::fs::File::open(std::env::current_exe()?))
        .inspect_err(|err| tracing::warn!(%err, "cannot read the executable for providerId"))
        .ok()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => {
                tracing::warn!(%err, "cannot read the executable for providerId");
                return None;
            }
        }
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(format!("sha256:{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpdir_rule_resolves_relative_and_skips_empty() {
        let cwd = Path::new("/srv/proj");
        assert!(temporary_directories(None, cwd).is_empty());
        assert!(temporary_directories(Some(OsStr::new("")), cwd).is_empty());
        assert_eq!(
            temporary_directories(Some(OsStr::new("/var/tmp")), cwd),
            ["file:///var/tmp"]
        );
        assert_eq!(
            temporary_directories(Some(OsStr::new("t")), cwd),
            ["file:///srv/proj/t"]
        );
    }

    #[test]
    fn digest_is_sha256_hex_of_the_executable() {
        let id = executable_digest().expect("the test binary is readable");
        let hex = id.strip_prefix("sha256:").expect("prefix");
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let bytes = std::fs::read("/proc/self/exe").unwrap();
        let expected: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, expected);
    }
}
