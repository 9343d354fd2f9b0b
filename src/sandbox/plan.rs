//! From a [`ResolvedPolicy`]'s file-system entries to Landlock rules, with carve-outs (a weaker
//! entry inside a stronger one) done by one of two layers (sandbox.md §4.3):
//!
//! - [`Layer::Mount`]: read-only carve-outs inside writable roots become read-only bind mounts
//!   (done by the wrapper in a private mount namespace); the writable root keeps one plain rule.
//! - [`Layer::Split`]: the grant is split: each directory on the way down to a carve-out is
//!   pass-through (READ, or READ_DIR only when a deny is below), every other entry of a
//!   pass-through directory gets the full grant, the carve-out gets its own rule.
//!
//! Deny carve-outs are always split (a read-only mount would still let them be read).
//! Pure apart from listing pass-through directories; unit-tested without privileges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::policy::{ResolvedEntry, rank};
use crate::protocol::sandbox::Access;

/// Which carve-out layer the wrapper could set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Mount,
    Split,
}

/// Abstract rights of one rule; `sandbox::landlock` maps them onto the pinned ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rights {
    /// List directory entries only.
    ReadDir,
    /// Read and execute.
    Read,
    /// Every file-system right.
    Write,
}

/// What the wrapper must do for the file system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Landlock rules: path (directory or file) and rights beneath it.
    pub rules: Vec<(PathBuf, Rights)>,
    /// Paths to bind-mount read-only (mount layer only).
    pub read_only_mounts: Vec<PathBuf>,
    /// Directories whose direct entries cannot be created, removed or renamed (split layer's
    /// cost), for the log.
    pub pass_through: Vec<PathBuf>,
}

/// Device files every confined process may use.
const DEVICE_FILES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
];

/// Builds the plan for `entries` with `layer`.
pub fn build(entries: &[ResolvedEntry], layer: Layer) -> Plan {
    let map: BTreeMap<&Path, Access> = entries
        .iter()
        .map(|e| (e.path.as_path(), e.access))
        .collect();
    let mut plan = Plan::default();
    let mut rules: BTreeMap<PathBuf, Rights> = BTreeMap::new();
    let grant = |rules: &mut BTreeMap<PathBuf, Rights>, path: PathBuf, rights: Rights| {
        let r = rules.entry(path).or_insert(rights);
        if rights > *r {
            *r = rights;
        }
    };

    for (path, access) in &map {
        let Some(rights) = rights_of(*access) else {
            continue;
        };
        // Carve-outs: entries strictly below with a weaker access.
        let mut carve_outs: Vec<(&Path, Access)> = map
            .iter()
            .filter(|(p, a)| p.starts_with(path) && *p != path && rank(**a) < rank(*access))
            .map(|(p, a)| (*p, *a))
            .collect();
        if layer == Layer::Mount && *access == Access::Write {
            carve_outs.retain(|(p, a)| {
                if *a == Access::Read {
                    plan.read_only_mounts.push(p.to_path_buf());
                    false
                } else {
                    true
                }
            });
        }
        if carve_outs.is_empty() {
            grant(&mut rules, path.to_path_buf(), rights);
            continue;
        }
        // Pass-through directories: from `path` down to each carve-out, exclusive.
        let mut pass: BTreeSet<PathBuf> = BTreeSet::new();
        for (c, _) in &carve_outs {
            let mut cur = c.parent();
            while let Some(dir) = cur {
                if !dir.starts_with(path) {
                    break;
                }
                pass.insert(dir.to_path_buf());
                cur = dir.parent();
            }
        }
        let carve_set: BTreeSet<&Path> = carve_outs.iter().map(|(p, _)| *p).collect();
        for dir in &pass {
            let deny_below = carve_outs
                .iter()
                .any(|(c, a)| c.starts_with(dir) && *a == Access::Deny);
            let dir_rights = if deny_below {
                Rights::ReadDir
            } else {
                Rights::Read.min(rights)
            };
            grant(&mut rules, dir.clone(), dir_rights);
            plan.pass_through.push(dir.clone());
            let Ok(read) = std::fs::read_dir(dir) else {
                continue;
            };
            for child in read.flatten() {
                let child_path = child.path();
                if pass.contains(&child_path) || carve_set.contains(child_path.as_path()) {
                    continue;
                }
                let Ok(ft) = child.file_type() else { continue };
                // Symlinks and special files get nothing: a rule would bind their target.
                if ft.is_dir() || ft.is_file() {
                    grant(&mut rules, child_path, rights);
                }
            }
        }
    }

    // Always, when the file system is confined.
    for dev in DEVICE_FILES {
        if Path::new(dev).exists() {
            grant(&mut rules, PathBuf::from(dev), Rights::Write);
        }
    }
    if Path::new("/dev/pts").is_dir() {
        grant(&mut rules, PathBuf::from("/dev/pts"), Rights::Write);
    }
    if Path::new("/proc").is_dir() {
        grant(&mut rules, PathBuf::from("/proc"), Rights::Read);
    }
    plan.rules = rules.into_iter().collect();
    plan.read_only_mounts.sort();
    plan.read_only_mounts.dedup();
    plan
}

fn rights_of(access: Access) -> Option<Rights> {
    match access {
        Access::Deny => None,
        Access::Read => Some(Rights::Read),
        Access::Write => Some(Rights::Write),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tmp() -> PathBuf {
        let d = std::env::temp_dir().join(format!("codex-plan-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&d).unwrap();
        fs::canonicalize(&d).unwrap()
    }

    fn e(path: &Path, access: Access) -> ResolvedEntry {
        ResolvedEntry {
            path: path.to_path_buf(),
            access,
        }
    }

    fn rule(plan: &Plan, p: &Path) -> Option<Rights> {
        plan.rules.iter().find(|(q, _)| q == p).map(|(_, r)| *r)
    }

    #[test]
    fn mount_layer_keeps_one_plain_write_rule_and_mounts_the_carve_out() {
        let w = tmp();
        fs::create_dir(w.join(".git")).unwrap();
        let plan = build(
            &[e(&w, Access::Write), e(&w.join(".git"), Access::Read)],
            Layer::Mount,
        );
        assert_eq!(rule(&plan, &w), Some(Rights::Write));
        assert_eq!(plan.read_only_mounts, vec![w.join(".git")]);
        assert!(plan.pass_through.is_empty());
    }

    #[test]
    fn split_layer_makes_the_root_pass_through_and_grants_siblings() {
        let w = tmp();
        fs::create_dir(w.join(".git")).unwrap();
        fs::create_dir(w.join("src")).unwrap();
        fs::write(w.join("a.txt"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", w.join("link")).unwrap();
        let plan = build(
            &[e(&w, Access::Write), e(&w.join(".git"), Access::Read)],
            Layer::Split,
        );
        assert_eq!(rule(&plan, &w), Some(Rights::Read), "pass-through");
        assert_eq!(rule(&plan, &w.join("src")), Some(Rights::Write));
        assert_eq!(rule(&plan, &w.join("a.txt")), Some(Rights::Write));
        assert_eq!(rule(&plan, &w.join(".git")), Some(Rights::Read));
        assert_eq!(rule(&plan, &w.join("link")), None, "symlinks get nothing");
        assert!(plan.read_only_mounts.is_empty());
    }

    #[test]
    fn deny_carve_out_is_split_even_with_the_mount_layer() {
        let w = tmp();
        fs::create_dir_all(w.join("a/secret")).unwrap();
        fs::create_dir_all(w.join("a/open")).unwrap();
        let plan = build(
            &[e(&w, Access::Read), e(&w.join("a/secret"), Access::Deny)],
            Layer::Mount,
        );
        assert_eq!(rule(&plan, &w), Some(Rights::ReadDir));
        assert_eq!(rule(&plan, &w.join("a")), Some(Rights::ReadDir));
        assert_eq!(rule(&plan, &w.join("a/open")), Some(Rights::Read));
        assert_eq!(rule(&plan, &w.join("a/secret")), None);
    }

    #[test]
    fn devices_and_proc_are_always_granted() {
        let plan = build(&[], Layer::Split);
        assert_eq!(rule(&plan, Path::new("/dev/null")), Some(Rights::Write));
        assert_eq!(rule(&plan, Path::new("/proc")), Some(Rights::Read));
    }
}
