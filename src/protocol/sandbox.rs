//! The sandbox intent a client attaches to `process/start` (and, later, `fs/*`): shapes only.
//! What each shape means on this executor is decided in `server::sandbox_gate`.
//!
//! camelCase outside `permissions`, snake_case inside it, as the reference sends them.

use serde::{Deserialize, Serialize};

/// The `sandbox` member of a request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SandboxIntent {
    pub permissions: PermissionProfile,
    /// Windows only; required on the wire, ignored here.
    pub windows_sandbox_level: WindowsSandboxLevel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_roots: Option<Vec<String>>,
    /// fs calls only: the policy's cwd and roots; its roots win over `workspaceRoots`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_context: Option<PolicyContext>,
}

/// `policyContext` of an fs call's sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PolicyContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_roots: Option<Vec<String>>,
}

/// `windowsSandboxLevel` values.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WindowsSandboxLevel {
    Disabled,
    RestrictedToken,
    Elevated,
    Mxc,
}

/// What the sandboxed code may touch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PermissionProfile {
    /// No sandbox at all.
    Disabled,
    /// The caller confines the filesystem; the executor enforces only the network.
    External { network: NetworkAccess },
    /// The executor confines both.
    Managed {
        file_system: FileSystemPolicy,
        network: NetworkAccess,
    },
}

/// Network access of a profile.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NetworkAccess {
    Restricted,
    Enabled,
}

/// Filesystem part of a managed profile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileSystemPolicy {
    Unrestricted,
    Restricted {
        entries: Vec<FileSystemEntry>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        glob_scan_max_depth: Option<u32>,
    },
}

/// One path grant or denial.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileSystemEntry {
    pub path: FileSystemPath,
    pub access: Access,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_path_behavior: Option<MissingPathBehavior>,
}

/// Access level of an entry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
    #[serde(alias = "none")]
    Deny,
}

/// What to do when an entry's path does not exist.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MissingPathBehavior {
    Skip,
}

/// The path an entry names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FileSystemPath {
    Path { path: String },
    GlobPattern { pattern: String },
    Special { value: SpecialPath },
}

/// Symbolic paths bound on the executor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SpecialPath {
    Root,
    Minimal,
    CurrentWorkingDirectory {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subpath: Option<String>,
    },
    ProjectRoots {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subpath: Option<String>,
    },
    Tmpdir,
    SlashTmp,
    Unknown {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subpath: Option<String>,
    },
}

impl PermissionProfile {
    /// True when an entry is a glob pattern: binding it scans the file system.
    pub fn has_glob(&self) -> bool {
        matches!(self, Self::Managed { file_system: FileSystemPolicy::Restricted { entries, .. }, .. }
            if entries.iter().any(|e| matches!(e.path, FileSystemPath::GlobPattern { .. })))
    }

    /// The network access this profile asks for.
    pub fn network(&self) -> NetworkAccess {
        match self {
            Self::Disabled => NetworkAccess::Enabled,
            Self::External { network } | Self::Managed { network, .. } => *network,
        }
    }

    /// True when the executor must confine the filesystem for this profile.
    pub fn restricts_file_system(&self) -> bool {
        match self {
            Self::Disabled | Self::External { .. } => false,
            Self::Managed { file_system, .. } => match file_system {
                FileSystemPolicy::Unrestricted => false,
                FileSystemPolicy::Restricted { entries, .. } => !grants_full_write(entries),
            },
        }
    }
}

/// A restricted policy that writes `/` with no weaker entry restricts nothing.
fn grants_full_write(entries: &[FileSystemEntry]) -> bool {
    let root_write = entries.iter().any(|e| {
        e.access == Access::Write
            && matches!(
                &e.path,
                FileSystemPath::Special {
                    value: SpecialPath::Root
                }
            )
    });
    root_write && entries.iter().all(|e| e.access == Access::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_has_a_glob_only_with_a_glob_pattern_entry() {
        let profile = |entries: serde_json::Value| -> PermissionProfile {
            serde_json::from_value(
                serde_json::json!({"type": "managed", "network": "restricted",
                "file_system": {"type": "restricted", "entries": entries}}),
            )
            .unwrap()
        };
        let root = serde_json::json!({"path": {"type": "special", "value": {"kind": "root"}},
            "access": "read"});
        let glob = serde_json::json!({"path": {"type": "glob_pattern", "pattern": "**/*.env"},
            "access": "deny"});
        assert!(!profile(serde_json::json!([root])).has_glob());
        assert!(profile(serde_json::json!([root, glob])).has_glob());
        assert!(!PermissionProfile::Disabled.has_glob());
    }

    fn intent(json: &str) -> Result<SandboxIntent, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn codex_cli_workspace_write_shape_decodes_and_restricts() {
        let s = intent(
            r#"{"permissions":{"type":"managed","file_system":{"type":"restricted","entries":[
            {"path":{"type":"special","value":{"kind":"root"}},"access":"read"},
            {"path":{"type":"special","value":{"kind":"project_roots"}},"access":"write"},
            {"path":{"type":"special","value":{"kind":"project_roots","subpath":".git"}},"access":"read","missing_path_behavior":"skip"}
            ]},"network":"restricted"},"windowsSandboxLevel":"disabled","cwd":"file:///w","workspaceRoots":["file:///w"]}"#,
        )
        .unwrap();
        assert!(s.permissions.restricts_file_system());
        assert_eq!(s.permissions.network(), NetworkAccess::Restricted);
    }

    #[test]
    fn disabled_profile_restricts_nothing() {
        let s = intent(r#"{"permissions":{"type":"disabled"},"windowsSandboxLevel":"disabled"}"#)
            .unwrap();
        assert!(!s.permissions.restricts_file_system());
        assert_eq!(s.permissions.network(), NetworkAccess::Enabled);
    }

    #[test]
    fn legacy_workspace_write_shape_is_refused() {
        let err = intent(
            r#"{"permissions":{"type":"workspace-write"},"windowsSandboxLevel":"disabled"}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown variant `workspace-write`"),
            "{err}"
        );
    }

    #[test]
    fn missing_permissions_is_refused() {
        let err = intent(r#"{"windowsSandboxLevel":"disabled"}"#).unwrap_err();
        assert!(
            err.to_string().contains("missing field `permissions`"),
            "{err}"
        );
    }
}
