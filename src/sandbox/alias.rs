//! The server's private directory of alias symlinks (`codex-linux-sandbox`, `codex-fs`) to its own
//! executable. The server runs helpers through these links by absolute path, never through PATH.
//! The directory is 0700 and never under /tmp or $TMPDIR, which sandboxed processes may write.
//! The link names are defined here; the executable's arg0 dispatch (`crate::arg0`) matches on them.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Name of the sandbox wrapper personality: the link the server runs it through.
pub const LINUX_SANDBOX_ARG0: &str = "codex-linux-sandbox";
/// Name of the filesystem helper personality: the link the server runs it through.
pub const FS_HELPER_ARG0: &str = "codex-fs";

/// A created alias directory; removed on drop.
#[derive(Debug)]
pub struct AliasDir {
    /// The directory holding the links.
    dir: PathBuf,
    /// The real executable the links point at.
    exe: PathBuf,
}

impl AliasDir {
    /// Creates the links in the first usable private location.
    pub fn create() -> io::Result<Self> {
        let exe = std::fs::canonicalize(std::env::current_exe()?)?;
        let mut bases: Vec<PathBuf> = Vec::new();
        if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
            && runtime.is_absolute()
        {
            bases.push(runtime);
        }
        bases.push(PathBuf::from("/run/codex-exec-server"));
        if let Some(parent) = exe.parent() {
            bases.push(parent.to_path_buf());
        }
        let mut last_err = io::Error::other("no location for the alias directory");
        for base in bases {
            let dir = base.join(format!(".codex-aliases-{}", uuid::Uuid::new_v4()));
            let made = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .and_then(|()| std::os::unix::fs::symlink(&exe, dir.join(LINUX_SANDBOX_ARG0)))
                .and_then(|()| std::os::unix::fs::symlink(&exe, dir.join(FS_HELPER_ARG0)));
            match made {
                Ok(()) => return Ok(Self { dir, exe }),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    last_err = e;
                }
            }
        }
        Err(last_err)
    }

    /// The directory of links.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The real executable.
    pub fn exe(&self) -> &Path {
        &self.exe
    }

    /// Absolute path of the `codex-linux-sandbox` link.
    pub fn linux_sandbox(&self) -> PathBuf {
        self.dir.join(LINUX_SANDBOX_ARG0)
    }

    /// Absolute path of the `codex-fs` link.
    pub fn fs_helper(&self) -> PathBuf {
        self.dir.join(FS_HELPER_ARG0)
    }
}

impl Drop for AliasDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
