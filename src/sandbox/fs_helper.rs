//! `codex-fs`: the file-system helper. The server runs it under `codex-linux-sandbox` for a
//! sandboxed `fs/*` call: one request as JSON on stdin, one answer line on stdout, exit 0
//! (sandbox.md §5). With `--serve` it stays: one request per line on stdin, each
//! `{"id":N,"request":{…}}`, answered in order by one line `{"id":N,"answer":{…}}` on stdout,
//! until stdin ends (the server keeps one per connection and policy, confined once; `fs/open`,
//! which hands a descriptor back, is not served so). The guard is bound again for every
//! request, so a carve-out replaced since the last one is seen as it is now. Its Landlock grants are not split, so it enforces the read-only carve-outs
//! (protected names, read entries inside writable roots) itself: a mutation whose target is, or
//! lies under, a carve-out is refused with EACCES. Carve-outs are recorded by (device, inode) at
//! start, and targets are resolved through the canonical form of their nearest existing ancestor,
//! so a symlink cannot smuggle a write into a carve-out under another name.

use std::io::Read;
use std::os::fd::AsFd as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use super::policy::PROTECTED_NAMES;
use crate::fs_ops::{self, FsError, FsOp};
use crate::protocol::fs::{FsHelperAnswer, FsRequest, FsResponse, OpenMode, OpenResult};

/// What the helper must protect, sent by the server as `--guard JSON`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GuardSpec {
    /// Writable roots: protected names directly inside them stay read-only.
    pub writable_roots: Vec<PathBuf>,
    /// Read or deny entries inside writable roots.
    pub carve_outs: Vec<PathBuf>,
    /// When reads are restricted: the caller's entries, which decide what a read may reach
    /// (the helper's own start-up grants — `minimal`, its executable — are not the caller's).
    /// Landlock does not restrict `stat` or `realpath`, so `fs/getMetadata` and
    /// `fs/canonicalize` are checked against these.
    #[serde(default)]
    pub read_entries: Option<Vec<super::policy::ResolvedEntry>>,
}

/// A [`GuardSpec`] bound to inodes.
struct Guard {
    /// (dev, ino) of each writable root.
    roots: Vec<(u64, u64)>,
    /// Canonical path and (dev, ino) of each existing carve-out.
    carve_outs: Vec<(PathBuf, (u64, u64))>,
    /// The caller's entries when reads are restricted.
    read_entries: Option<Vec<super::policy::ResolvedEntry>>,
}

fn id_of(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn lid_of(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

fn denied(path: &Path) -> FsError {
    FsError::io(std::io::Error::from_raw_os_error(libc::EACCES), path)
}

/// Whether the caller's policy `entries` let a read reach `resolved` (a path with its links
/// resolved): its most specific entry exists and is not a deny.
pub fn read_allowed(entries: &[super::policy::ResolvedEntry], resolved: &Path) -> bool {
    let most_specific = entries
        .iter()
        .filter(|e| resolved.starts_with(&e.path))
        .max_by_key(|e| e.path.as_os_str().len());
    most_specific.is_some_and(|e| e.access != crate::protocol::sandbox::Access::Deny)
}

impl Guard {
    fn bind(spec: &GuardSpec) -> Self {
        Self {
            roots: spec
                .writable_roots
                .iter()
                .filter_map(|r| id_of(r))
                .collect(),
            carve_outs: spec
                .carve_outs
                .iter()
                .filter_map(|c| Some((std::fs::canonicalize(c).ok()?, lid_of(c)?)))
                .collect(),
            read_entries: spec.read_entries.clone(),
        }
    }

    /// EACCES unless the caller's policy lets a read reach `path` (links followed).
    fn check_read(&self, path: &Path) -> Result<(), FsError> {
        let Some(entries) = &self.read_entries else {
            return Ok(());
        };
        let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| {
            let parent = path.parent().unwrap_or(Path::new("/"));
            let parent = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
            match path.file_name() {
                Some(name) => parent.join(name),
                None => parent,
            }
        });
        if read_allowed(entries, &resolved) {
            Ok(())
        } else {
            Err(denied(path))
        }
    }

    fn is_carve_out(&self, id: Option<(u64, u64)>) -> bool {
        id.is_some_and(|id| self.carve_outs.iter().any(|(_, c)| *c == id))
    }

    /// The target to operate on, resolved, or EACCES if it touches a carve-out.
    fn check_target(&self, path: &Path) -> Result<PathBuf, FsError> {
        // Nearest existing ancestor of the parent, canonicalised; the rest is re-appended.
        let mut existing = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut rest: Vec<std::ffi::OsString> = Vec::new();
        if let Some(name) = path.file_name() {
            rest.push(name.to_os_string());
        }
        let canonical = loop {
            match std::fs::canonicalize(&existing) {
                Ok(c) => break c,
                Err(_) => {
                    let Some(name) = existing.file_name() else {
                        break PathBuf::from("/");
                    };
                    rest.insert(0, name.to_os_string());
                    existing = existing.parent().unwrap_or(Path::new("/")).to_path_buf();
                }
            }
        };
        // No ancestor may be a carve-out.
        for ancestor in canonical.ancestors() {
            if self.is_carve_out(id_of(ancestor)) {
                return Err(denied(path));
            }
        }
        // Walk down the missing part: carve-outs.
        let mut cur = canonical;
        for name in &rest {
            cur.push(name);
            if self.is_carve_out(lid_of(&cur)) {
                return Err(denied(path));
            }
        }
        // Protected names directly under a writable root, existing or not, anywhere on the way.
        for ancestor in cur.ancestors() {
            let (Some(name), Some(parent)) = (ancestor.file_name(), ancestor.parent()) else {
                continue;
            };
            let parent_is_root = id_of(parent).is_some_and(|id| self.roots.contains(&id));
            // An entry that grants write on exactly this path lifts the protection.
            let granted = id_of(ancestor).is_some_and(|id| self.roots.contains(&id));
            if parent_is_root
                && !granted
                && PROTECTED_NAMES
                    .iter()
                    .any(|p| name == std::ffi::OsStr::new(p))
            {
                return Err(denied(path));
            }
        }
        // Nor may the target contain one (a recursive remove, a write over a directory).
        if self.carve_outs.iter().any(|(c, _)| c.starts_with(&cur)) {
            return Err(denied(path));
        }
        Ok(cur)
    }

    /// Like [`Self::check_target`], then follows a final symlink (a write goes through it) and
    /// checks where it leads, up to 40 links.
    fn check_target_following(&self, path: &Path) -> Result<PathBuf, FsError> {
        let mut target = self.check_target(path)?;
        for _ in 0..40 {
            let is_link = std::fs::symlink_metadata(&target)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false);
            if !is_link {
                return Ok(target);
            }
            let link = std::fs::read_link(&target).map_err(|e| FsError::io(e, path))?;
            let next = match target.parent() {
                Some(parent) if link.is_relative() => parent.join(link),
                _ => link,
            };
            target = self.check_target(&next).map_err(|_| denied(path))?;
        }
        Err(FsError::io(
            std::io::Error::from_raw_os_error(libc::ELOOP),
            path,
        ))
    }

    /// Rewrites a mutation's target to its checked, resolved form.
    fn check(&self, op: FsOp) -> Result<FsOp, FsError> {
        Ok(match op {
            FsOp::WriteFile { path, base64 } => FsOp::WriteFile {
                path: self.check_target_following(&path)?,
                base64,
            },
            FsOp::CreateDirectory { path, recursive } => FsOp::CreateDirectory {
                path: self.check_target(&path)?,
                recursive,
            },
            FsOp::Remove {
                path,
                recursive,
                force,
            } => FsOp::Remove {
                path: self.check_target(&path)?,
                recursive,
                force,
            },
            FsOp::Copy {
                source,
                destination,
                recursive,
            } => {
                self.check_read(&source)?;
                FsOp::Copy {
                    source,
                    destination: self.check_target_following(&destination)?,
                    recursive,
                }
            }
            FsOp::ReadFile { path } => {
                self.check_read(&path)?;
                FsOp::ReadFile { path }
            }
            FsOp::GetMetadata { path } => {
                self.check_read(&path)?;
                FsOp::GetMetadata { path }
            }
            FsOp::ReadDirectory { path } => {
                self.check_read(&path)?;
                FsOp::ReadDirectory { path }
            }
            FsOp::Canonicalize { path } => {
                self.check_read(&path)?;
                FsOp::Canonicalize { path }
            }
            FsOp::Open {
                path,
                mode: OpenMode::Read,
                handle_id,
            } => {
                self.check_read(&path)?;
                FsOp::Open {
                    path,
                    mode: OpenMode::Read,
                    handle_id,
                }
            }
            FsOp::Open {
                path,
                mode: OpenMode::Replace,
                handle_id,
            } => FsOp::Open {
                path: self.check_target_following(&path)?,
                mode: OpenMode::Replace,
                handle_id,
            },
            FsOp::Walk { path, options } => {
                self.check_read(&path)?;
                FsOp::Walk { path, options }
            }
        })
    }
}

/// The helper's entry point (argv[0] = `codex-fs`).
pub fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fs sandbox helper failed: {err}");
            ExitCode::from(1)
        }
    }
}

/// One request of a `--serve` helper.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServedRequest {
    /// Chosen by the server, echoed in the answer.
    pub id: u64,
    /// The request, as the one-shot helper reads it.
    pub request: FsRequest,
}

/// One answer of a `--serve` helper.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServedAnswer {
    /// The request's id.
    pub id: u64,
    /// The answer, as the one-shot helper writes it.
    pub answer: FsHelperAnswer,
}

/// Runs one request under `spec`'s guard (bound now), except `fs/open`.
fn answer_one(spec: &GuardSpec, request: FsRequest) -> FsHelperAnswer {
    let guard = Guard::bind(spec);
    let outcome = match FsOp::from_request(request).and_then(|op| guard.check(op)) {
        Ok(FsOp::Open { path, .. }) => Err(FsError::io(
            std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "fs/open is not served by a persistent helper",
            ),
            &path,
        )),
        Ok(FsOp::Walk { path, options }) => {
            fs_ops::walk_checked(&path, &options, &|dir| guard.check_read(dir))
                .map(crate::protocol::fs::FsResponse::Walk)
        }
        op => op.and_then(fs_ops::execute),
    };
    fs_ops::helper_answer(outcome)
}

/// `--serve`: answers requests line by line until stdin ends.
fn serve(spec: &GuardSpec) -> Result<(), String> {
    use std::io::{BufRead as _, Write as _};
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut line = String::new();
    loop {
        line.clear();
        let n = input
            .read_line(&mut line)
            .map_err(|e| format!("cannot read a request: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        let served: ServedRequest =
            serde_json::from_str(&line).map_err(|e| format!("invalid request: {e}"))?;
        let answer = ServedAnswer {
            id: served.id,
            answer: answer_one(spec, served.request),
        };
        serde_json::to_writer(&mut out, &answer)
            .map_err(|e| format!("cannot encode the answer: {e}"))?;
        out.write_all(b"\n")
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write the answer: {e}"))?;
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut spec = GuardSpec::default();
    let mut serving = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--guard" => {
                let json = args.next().ok_or("--guard needs a value")?;
                spec = serde_json::from_str(&json).map_err(|e| format!("invalid --guard: {e}"))?;
            }
            "--serve" => serving = true,
            other => return Err(format!("unexpected argument `{other}`")),
        }
    }
    if serving {
        return serve(&spec);
    }
    let guard = Guard::bind(&spec);
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("cannot read the request: {e}"))?;
    let request: FsRequest =
        serde_json::from_str(&input).map_err(|e| format!("invalid request: {e}"))?;
    let outcome = match FsOp::from_request(request).and_then(|op| guard.check(op)) {
        Ok(FsOp::Open {
            path,
            mode,
            handle_id,
        }) => match fs_ops::open_for_handle(&path, mode) {
            // The answer goes with the descriptor over stdout, a Unix socket (fd_handoff.rs).
            Ok(file) => {
                let answer = FsHelperAnswer::Ok(FsResponse::Open(OpenResult { handle_id }));
                let line = serde_json::to_string(&answer)
                    .map_err(|e| format!("cannot encode the answer: {e}"))?;
                return super::fd_handoff::send_with_fd(
                    std::io::stdout().as_fd(),
                    line.as_bytes(),
                    file.as_fd(),
                )
                .map_err(|e| format!("cannot hand the descriptor back: {e}"));
            }
            Err(err) => Err(err),
        },
        // Every directory the walk reads is checked, not only its root.
        Ok(FsOp::Walk { path, options }) => {
            fs_ops::walk_checked(&path, &options, &|dir| guard.check_read(dir))
                .map(crate::protocol::fs::FsResponse::Walk)
        }
        op => op.and_then(fs_ops::execute),
    };
    let answer = fs_ops::helper_answer(outcome);
    let line =
        serde_json::to_string(&answer).map_err(|e| format!("cannot encode the answer: {e}"))?;
    println!("{line}");
    Ok(())
}

/// What the helper does with its input before acting, for `crate::fuzzing`: `guard` as its
/// `--guard` JSON, `request` as its stdin, parsed and checked against the guard (which reads the
/// file system: `stat`, `realpath`), never executed.
pub(crate) fn checked_request(guard: &str, request: &str) -> Result<FsOp, String> {
    let spec: GuardSpec =
        serde_json::from_str(guard).map_err(|e| format!("invalid --guard: {e}"))?;
    let guard = Guard::bind(&spec);
    let request: FsRequest =
        serde_json::from_str(request).map_err(|e| format!("invalid request: {e}"))?;
    FsOp::from_request(request)
        .and_then(|op| guard.check(op))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("codex-guard-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::canonicalize(&d).unwrap()
    }

    #[test]
    fn guard_refuses_writes_into_protected_names_and_carve_outs() {
        let w = tmp();
        std::fs::create_dir(w.join(".git")).unwrap();
        std::fs::create_dir(w.join("ro")).unwrap();
        let guard = Guard::bind(&GuardSpec {
            writable_roots: vec![w.clone()],
            carve_outs: vec![w.join("ro")],
            read_entries: None,
        });
        assert!(guard.check_target(&w.join("a.txt")).is_ok());
        assert!(guard.check_target(&w.join("new/dir/b.txt")).is_ok());
        for bad in [".git/config", ".codex/config.toml", "ro/x", "ro"] {
            let err = guard.check_target(&w.join(bad)).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{bad}");
        }
        // Removing the root would remove the carve-out inside it.
        assert!(guard.check_target(&w).is_err());
    }

    #[test]
    fn guard_follows_a_final_symlink_into_a_carve_out() {
        let w = tmp();
        std::fs::create_dir(w.join(".git")).unwrap();
        std::fs::write(w.join(".git/config"), "orig").unwrap();
        std::os::unix::fs::symlink(".git/config", w.join("configlink")).unwrap();
        std::os::unix::fs::symlink("plain.txt", w.join("plainlink")).unwrap();
        let guard = Guard::bind(&GuardSpec {
            writable_roots: vec![w.clone()],
            carve_outs: vec![w.join(".git")],
            read_entries: None,
        });
        assert!(guard.check_target_following(&w.join("configlink")).is_err());
        assert_eq!(
            guard.check_target_following(&w.join("plainlink")).unwrap(),
            w.join("plain.txt")
        );
    }

    #[test]
    fn guard_sees_through_symlinks_to_carve_outs() {
        let w = tmp();
        std::fs::create_dir(w.join("ro")).unwrap();
        std::os::unix::fs::symlink(w.join("ro"), w.join("alias")).unwrap();
        let guard = Guard::bind(&GuardSpec {
            writable_roots: vec![w.clone()],
            carve_outs: vec![w.join("ro")],
            read_entries: None,
        });
        assert!(guard.check_target(&w.join("alias/x")).is_err());
    }
}
