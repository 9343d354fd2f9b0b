//! From a client's sandbox intent to a [`ResolvedPolicy`]: every symbolic entry bound on this
//! executor (project roots, tmpdir, /tmp, ...), globs expanded, missing paths handled, protected
//! names (`.git`, `.agents`, `.codex`, `.aws`) made read-only inside writable roots. Server side;
//! it reads the file system (existence, symlinks) but changes nothing. The result travels to the
//! `codex-linux-sandbox` wrapper as JSON.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::path_uri;
use crate::protocol::sandbox::{
    Access, FileSystemEntry, FileSystemPath, FileSystemPolicy, MissingPathBehavior, NetworkAccess,
    PermissionProfile, SandboxIntent, SpecialPath,
};

/// Names that stay read-only directly inside every writable root.
pub const PROTECTED_NAMES: &[&str] = &[".git", ".agents", ".codex", ".aws"];
/// The `minimal` special path: what a program needs to start.
const MINIMAL_PATHS: &[&str] = &[
    "/bin",
    "/sbin",
    "/usr",
    "/etc",
    "/lib",
    "/lib64",
    "/nix/store",
    "/run/current-system/sw",
];
/// The existing paths of the `minimal` special path.
pub fn minimal_paths() -> Vec<PathBuf> {
    MINIMAL_PATHS
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect()
}

/// Most glob matches one policy may expand to.
const MAX_GLOB_MATCHES: usize = 8192;
/// Default directory depth of a glob scan.
const DEFAULT_GLOB_DEPTH: u32 = 16;
/// Most directory entries one glob scan may visit: a glob relative to `/` at the default depth
/// would otherwise walk the whole file system while the request waits (found by fuzzing).
/// Fuzz builds (`--cfg fuzzing`, set by cargo-fuzz) scan at most 2,000: a bounded scan of the
/// fuzzing machine's real `/` is not what the target tests, and at 200,000 entries one input
/// took 15 s on a loaded machine (a libFuzzer timeout). The bound itself is tested either way.
const MAX_GLOB_SCAN_ENTRIES: usize = if cfg!(fuzzing) { 2_000 } else { 200_000 };

/// What the network may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// No network filter.
    Unrestricted,
    /// Only `AF_VSOCK` sockets are denied (fs-restricted profile with network enabled).
    Vsock,
    /// Sockets other than `AF_UNIX` and all socket calls that reach the network are denied.
    Restricted,
    /// Only TCP to the client's loopback proxy ports.
    Managed,
}

/// The managed-network settings the executor enforces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedNetwork {
    #[serde(default)]
    pub loopback_ports: Vec<u16>,
    #[serde(default)]
    pub allow_local_binding: bool,
    #[serde(default)]
    pub allow_unix_sockets: Vec<String>,
    #[serde(default)]
    pub dangerously_allow_all_unix_sockets: bool,
}

/// One bound path and its access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedEntry {
    pub path: PathBuf,
    pub access: Access,
}

/// A policy with nothing symbolic left: native absolute paths only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedPolicy {
    /// `None`: the file system is not confined.
    pub file_system: Option<Vec<ResolvedEntry>>,
    pub network: NetworkMode,
    #[serde(default)]
    pub managed_network: Option<ManagedNetwork>,
}

impl ResolvedPolicy {
    /// True when nothing is enforced at all (the process may run unwrapped).
    pub fn is_noop(&self) -> bool {
        self.file_system.is_none() && self.network == NetworkMode::Unrestricted
    }
}

/// Why a sandbox intent cannot be bound here. All are the caller's mistakes (-32602).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid sandbox path: {0}")]
    InvalidPath(#[from] path_uri::PathUriError),
    #[error("sandbox subpath `{0}` must be relative and must not contain `..`")]
    BadSubpath(String),
    #[error("invalid sandbox glob pattern `{pattern}`: {reason}")]
    BadGlob { pattern: String, reason: String },
    #[error("sandbox glob `{0}` matches more than {MAX_GLOB_MATCHES} paths")]
    TooManyGlobMatches(String),
    #[error(
        "cannot enforce sandbox read-only path {} because it crosses writable symlink {}",
        path.display(),
        symlink.display()
    )]
    CrossesWritableSymlink { path: PathBuf, symlink: PathBuf },
    #[error("invalid managedNetwork: {0}")]
    ManagedNetwork(String),
    #[error(
        "sandbox glob `{0}` scans more than {MAX_GLOB_SCAN_ENTRIES} entries: \
         narrow it or lower glob_scan_max_depth"
    )]
    GlobScanTooLarge(String),
}

/// What binding needs besides the intent.
pub struct BindContext<'a> {
    /// The request's cwd (process) — used when the intent has no `cwd`.
    pub cwd: &'a Path,
    /// The child's final environment (for `tmpdir`).
    pub env: &'a [(OsString, OsString)],
    /// Workspace roots that win over the intent's (fs `policyContext`).
    pub workspace_roots_override: Option<&'a [String]>,
    pub enforce_managed_network: bool,
    pub managed_network: Option<&'a serde_json::Value>,
}

/// Binds `intent` on this executor.
pub fn resolve(
    intent: &SandboxIntent,
    ctx: &BindContext<'_>,
) -> Result<ResolvedPolicy, PolicyError> {
    let policy_cwd = match &intent.cwd {
        Some(uri) => path_uri::to_path(uri)?,
        None => ctx.cwd.to_path_buf(),
    };
    let roots_uris: &[String] = match ctx.workspace_roots_override {
        Some(r) => r,
        None => intent.workspace_roots.as_deref().unwrap_or_default(),
    };
    let roots = roots_uris
        .iter()
        .map(|u| path_uri::to_path(u))
        .collect::<Result<Vec<_>, _>>()?;

    let managed = if ctx.enforce_managed_network {
        let m: ManagedNetwork = match ctx.managed_network {
            Some(v) if !v.is_null() => serde_json::from_value(v.clone())
                .map_err(|e| PolicyError::ManagedNetwork(e.to_string()))?,
            _ => ManagedNetwork::default(),
        };
        Some(m)
    } else {
        None
    };

    let (file_system, network) = match &intent.permissions {
        PermissionProfile::Disabled => (None, NetworkAccess::Enabled),
        PermissionProfile::External { network } => (None, *network),
        PermissionProfile::Managed {
            file_system,
            network,
        } => match file_system {
            FileSystemPolicy::Unrestricted => (None, *network),
            // `root` write without a carve-out confines nothing (sandbox.md §3, row 1).
            FileSystemPolicy::Restricted { .. } if !intent.permissions.restricts_file_system() => {
                (None, *network)
            }
            FileSystemPolicy::Restricted {
                entries,
                glob_scan_max_depth,
            } => {
                let bound =
                    bind_entries(entries, &roots, &policy_cwd, ctx.env, *glob_scan_max_depth)?;
                (finish_entries(bound)?, *network)
            }
        },
    };
    let mode = match (managed.is_some(), network, file_system.is_some()) {
        (true, _, _) => NetworkMode::Managed,
        (false, NetworkAccess::Restricted, _) => NetworkMode::Restricted,
        (false, NetworkAccess::Enabled, true) => NetworkMode::Vsock,
        (false, NetworkAccess::Enabled, false) => NetworkMode::Unrestricted,
    };
    Ok(ResolvedPolicy {
        file_system,
        network: mode,
        managed_network: managed,
    })
}

/// An entry bound to a path, before missing-path handling.
struct Bound {
    path: PathBuf,
    access: Access,
    skip_if_missing: bool,
}

fn check_subpath(subpath: &Option<String>) -> Result<(), PolicyError> {
    if let Some(s) = subpath {
        let p = Path::new(s);
        if p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
            return Err(PolicyError::BadSubpath(s.clone()));
        }
    }
    Ok(())
}

fn join_subpath(root: &Path, subpath: &Option<String>) -> PathBuf {
    match subpath {
        Some(s) if !s.is_empty() => root.join(s),
        _ => root.to_path_buf(),
    }
}

fn bind_entries(
    entries: &[FileSystemEntry],
    roots: &[PathBuf],
    policy_cwd: &Path,
    env: &[(OsString, OsString)],
    glob_depth: Option<u32>,
) -> Result<Vec<Bound>, PolicyError> {
    let mut out = Vec::new();
    for entry in entries {
        let skip = entry.missing_path_behavior == Some(MissingPathBehavior::Skip);
        let mut push = |path: PathBuf, access: Access| {
            out.push(Bound {
                path,
                access,
                skip_if_missing: skip,
            })
        };
        match &entry.path {
            FileSystemPath::Path { path } => push(path_uri::to_path(path)?, entry.access),
            FileSystemPath::GlobPattern { pattern } => {
                // Globs deny, whatever access the entry names.
                for m in expand_glob(
                    pattern,
                    policy_cwd,
                    glob_depth.unwrap_or(DEFAULT_GLOB_DEPTH),
                )? {
                    push(m, Access::Deny);
                }
            }
            FileSystemPath::Special { value } => match value {
                SpecialPath::Root => push(PathBuf::from("/"), entry.access),
                SpecialPath::Minimal => {
                    for p in MINIMAL_PATHS {
                        if Path::new(p).exists() {
                            push(PathBuf::from(p), entry.access);
                        }
                    }
                }
                SpecialPath::ProjectRoots { subpath }
                | SpecialPath::CurrentWorkingDirectory { subpath } => {
                    check_subpath(subpath)?;
                    for root in roots {
                        push(join_subpath(root, subpath), entry.access);
                    }
                }
                SpecialPath::Tmpdir => {
                    let tmpdir = env
                        .iter()
                        .rev()
                        .find(|(k, _)| k == "TMPDIR")
                        .map(|(_, v)| PathBuf::from(v));
                    if let Some(t) = tmpdir.filter(|t| t.is_absolute()) {
                        push(t, entry.access);
                    }
                }
                SpecialPath::SlashTmp => {
                    if Path::new("/tmp").is_dir() {
                        push(PathBuf::from("/tmp"), entry.access);
                    }
                }
                SpecialPath::Unknown { .. } => {}
            },
        }
    }
    Ok(out)
}

/// Expands a deny glob to the existing paths it matches.
fn expand_glob(pattern: &str, cwd: &Path, depth: u32) -> Result<Vec<PathBuf>, PolicyError> {
    expand_glob_within(pattern, cwd, depth, MAX_GLOB_SCAN_ENTRIES)
}

/// [`expand_glob`], visiting at most `max_visited` directory entries.
fn expand_glob_within(
    pattern: &str,
    cwd: &Path,
    depth: u32,
    max_visited: usize,
) -> Result<Vec<PathBuf>, PolicyError> {
    let absolute = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        cwd.join(pattern)
    };
    let text = absolute.to_string_lossy().into_owned();
    let glob = globset::GlobBuilder::new(&text)
        .literal_separator(true)
        .build()
        .map_err(|e| PolicyError::BadGlob {
            pattern: pattern.to_string(),
            reason: e.to_string(),
        })?
        .compile_matcher();
    // Walk from the longest prefix without glob characters.
    let mut base = PathBuf::from("/");
    for comp in absolute.components().skip(1) {
        let s = comp.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[', '{']) {
            break;
        }
        base.push(comp);
    }
    let mut matches = Vec::new();
    let mut visited = 0usize;
    let mut stack = vec![(base, 0u32)];
    while let Some((dir, level)) = stack.pop() {
        if glob.is_match(&dir) {
            matches.push(dir.clone());
            if matches.len() > MAX_GLOB_MATCHES {
                return Err(PolicyError::TooManyGlobMatches(pattern.to_string()));
            }
        }
        if level >= depth {
            continue;
        }
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in read.flatten() {
            visited += 1;
            if visited > max_visited {
                return Err(PolicyError::GlobScanTooLarge(pattern.to_string()));
            }
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let path = entry.path();
            if is_dir {
                stack.push((path, level + 1));
            } else if glob.is_match(&path) {
                matches.push(path);
                if matches.len() > MAX_GLOB_MATCHES {
                    return Err(PolicyError::TooManyGlobMatches(pattern.to_string()));
                }
            }
        }
    }
    Ok(matches)
}

/// Two entries on the same path: deny > write > read.
fn tie_winner(a: Access, b: Access) -> Access {
    let order = |x: Access| match x {
        Access::Deny => 2,
        Access::Write => 1,
        Access::Read => 0,
    };
    if order(b) > order(a) { b } else { a }
}

/// Strength of an access, for carve-outs: deny < read < write.
pub fn rank(a: Access) -> u8 {
    match a {
        Access::Deny => 0,
        Access::Read => 1,
        Access::Write => 2,
    }
}

/// Missing paths, ties, protected names, the symlink check; canonical paths out.
fn finish_entries(bound: Vec<Bound>) -> Result<Option<Vec<ResolvedEntry>>, PolicyError> {
    // Missing paths: skip → dropped; write → dropped; read/deny → nearest existing ancestor.
    let mut by_path: BTreeMap<PathBuf, Access> = BTreeMap::new();
    let mut add = |path: PathBuf, access: Access| {
        by_path
            .entry(path)
            .and_modify(|a| *a = tie_winner(*a, access))
            .or_insert(access);
    };
    for b in bound {
        if b.path.exists() {
            add(b.path, b.access);
        } else if b.skip_if_missing || b.access == Access::Write {
            continue;
        } else {
            let mut ancestor = b.path.parent();
            while let Some(a) = ancestor {
                if a.exists() {
                    add(a.to_path_buf(), b.access);
                    break;
                }
                ancestor = a.parent();
            }
        }
    }

    // Protected names inside every writable root.
    let writable: Vec<PathBuf> = by_path
        .iter()
        .filter(|(_, a)| **a == Access::Write)
        .map(|(p, _)| p.clone())
        .collect();
    for root in &writable {
        for name in PROTECTED_NAMES {
            let p = root.join(name);
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if by_path.get(&p) == Some(&Access::Write) {
                continue;
            }
            if meta.file_type().is_symlink() {
                return Err(PolicyError::CrossesWritableSymlink {
                    path: p.clone(),
                    symlink: p,
                });
            }
            by_path.entry(p.clone()).or_insert(Access::Read);
            if *name == ".git"
                && meta.is_file()
                && let Some(target) = gitdir_target(&p, root)
                && target.exists()
            {
                by_path.entry(target).or_insert(Access::Read);
            }
        }
    }

    // A carve-out (weaker entry inside a writable root) must not be or cross a symlink.
    for (path, access) in &by_path {
        let Some((root, _)) = by_path
            .iter()
            .filter(|(r, a)| **a == Access::Write && path.starts_with(r) && *r != path)
            .max_by_key(|(r, _)| r.as_os_str().len())
        else {
            continue;
        };
        if rank(*access) >= rank(Access::Write) {
            continue;
        }
        let mut cur = root.clone();
        for comp in path
            .strip_prefix(root)
            .unwrap_or(Path::new(""))
            .components()
        {
            cur.push(comp);
            if std::fs::symlink_metadata(&cur)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false)
            {
                return Err(PolicyError::CrossesWritableSymlink {
                    path: path.clone(),
                    symlink: cur,
                });
            }
        }
    }

    // Canonical paths: Landlock binds inodes, and the plan compares prefixes.
    let mut out: BTreeMap<PathBuf, Access> = BTreeMap::new();
    for (path, access) in by_path {
        let canonical = std::fs::canonicalize(&path).unwrap_or(path);
        out.entry(canonical)
            .and_modify(|a| *a = tie_winner(*a, access))
            .or_insert(access);
    }
    Ok(Some(
        out.into_iter()
            .map(|(path, access)| ResolvedEntry { path, access })
            .collect(),
    ))
}

/// The directory a `.git` file points at (`gitdir: PATH`), resolved against the root.
fn gitdir_target(git_file: &Path, root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(git_file).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("gitdir:"))?.trim();
    let p = Path::new(line);
    Some(if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    })
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
