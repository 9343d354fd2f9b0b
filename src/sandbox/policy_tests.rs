use std::fs;

use super::*;
use crate::protocol::sandbox::WindowsSandboxLevel;

fn tmp() -> PathBuf {
    let d = std::env::temp_dir().join(format!("codex-policy-{}", uuid::Uuid::new_v4()));
    fs::create_dir_all(&d).unwrap();
    fs::canonicalize(&d).unwrap()
}

fn intent(entries: serde_json::Value, network: &str, roots: &[&Path]) -> SandboxIntent {
    serde_json::from_value(serde_json::json!({
        "permissions": {"type": "managed", "file_system": {"type": "restricted", "entries": entries},
                        "network": network},
        "windowsSandboxLevel": "disabled",
        "workspaceRoots": roots.iter().map(|r| path_uri::from_path(r)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn ctx(cwd: &Path) -> BindContext<'_> {
    BindContext {
        cwd,
        env: &[],
        workspace_roots_override: None,
        enforce_managed_network: false,
        managed_network: None,
    }
}

fn workspace_write() -> serde_json::Value {
    serde_json::json!([
        {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
        {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": "write"},
        {"path": {"type": "special", "value": {"kind": "project_roots", "subpath": ".git"}}, "access": "read", "missing_path_behavior": "skip"},
    ])
}

#[test]
fn codex_cli_workspace_write_binds_roots_and_protects_git() {
    let w = tmp();
    fs::create_dir(w.join(".git")).unwrap();
    fs::create_dir(w.join(".codex")).unwrap();
    let p = resolve(&intent(workspace_write(), "restricted", &[&w]), &ctx(&w)).unwrap();
    let fs_entries = p.file_system.unwrap();
    let get = |path: &Path| fs_entries.iter().find(|e| e.path == path).map(|e| e.access);
    assert_eq!(get(Path::new("/")), Some(Access::Read));
    assert_eq!(get(&w), Some(Access::Write));
    assert_eq!(get(&w.join(".git")), Some(Access::Read));
    assert_eq!(
        get(&w.join(".codex")),
        Some(Access::Read),
        "protected name added"
    );
    assert_eq!(
        get(&w.join(".aws")),
        None,
        "missing protected names are not invented"
    );
    assert_eq!(p.network, NetworkMode::Restricted);
}

#[test]
fn empty_workspace_roots_grant_nothing() {
    let w = tmp();
    let p = resolve(&intent(workspace_write(), "enabled", &[]), &ctx(&w)).unwrap();
    let fs_entries = p.file_system.unwrap();
    assert!(
        fs_entries.iter().all(|e| e.access != Access::Write),
        "{fs_entries:?}"
    );
    assert_eq!(p.network, NetworkMode::Vsock);
}

#[test]
fn subpath_with_parent_or_absolute_is_refused() {
    let w = tmp();
    for sub in ["../x", "/etc"] {
        let entries = serde_json::json!([
            {"path": {"type": "special", "value": {"kind": "project_roots", "subpath": sub}}, "access": "write"}
        ]);
        let err = resolve(&intent(entries, "enabled", &[&w]), &ctx(&w)).unwrap_err();
        assert!(matches!(err, PolicyError::BadSubpath(_)), "{err}");
    }
}

#[test]
fn protected_name_that_is_a_symlink_refuses_the_run() {
    let w = tmp();
    let decoy = tmp();
    std::os::unix::fs::symlink(&decoy, w.join(".codex")).unwrap();
    let err = resolve(&intent(workspace_write(), "enabled", &[&w]), &ctx(&w)).unwrap_err();
    assert!(
        err.to_string().contains("crosses writable symlink"),
        "{err}"
    );
}

#[test]
fn missing_deny_without_skip_protects_nearest_existing_ancestor() {
    let w = tmp();
    fs::create_dir(w.join("a")).unwrap();
    let entries = serde_json::json!([
        {"path": {"type": "path", "path": path_uri::from_path(&w)}, "access": "write"},
        {"path": {"type": "path", "path": path_uri::from_path(&w.join("a/missing/x"))}, "access": "deny"},
    ]);
    let p = resolve(&intent(entries, "enabled", &[]), &ctx(&w)).unwrap();
    let e = p.file_system.unwrap();
    assert!(
        e.contains(&ResolvedEntry {
            path: w.join("a"),
            access: Access::Deny
        }),
        "{e:?}"
    );
}

#[test]
fn a_glob_whose_scan_visits_too_many_entries_is_refused_not_walked_to_the_end() {
    // Found by fuzzing (fuzz target `sandbox_policy`): `*.env` relative to `/` at the default
    // depth walked the whole file system while the request waited.
    let w = tmp();
    for i in 0..5 {
        fs::create_dir(w.join(format!("d{i}"))).unwrap();
        fs::write(w.join(format!("d{i}/f")), "x").unwrap();
    }
    let pattern = "**/*.env";
    let err = expand_glob_within(pattern, &w, DEFAULT_GLOB_DEPTH, 6).unwrap_err();
    assert!(matches!(err, PolicyError::GlobScanTooLarge(_)), "{err}");
    assert!(err.to_string().contains("scans more than"), "{err}");
    // Within the budget, the same scan completes.
    assert_eq!(
        expand_glob_within(pattern, &w, DEFAULT_GLOB_DEPTH, 10).unwrap(),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn glob_deny_expands_to_existing_matches() {
    let w = tmp();
    fs::create_dir(w.join("sub")).unwrap();
    fs::write(w.join("sub/.env"), "x").unwrap();
    fs::write(w.join("keep.txt"), "x").unwrap();
    let entries = serde_json::json!([
        {"path": {"type": "path", "path": path_uri::from_path(&w)}, "access": "write"},
        {"path": {"type": "glob_pattern", "pattern": "**/*.env"}, "access": "deny"},
    ]);
    let mut i = intent(entries, "enabled", &[]);
    i.cwd = Some(path_uri::from_path(&w));
    let p = resolve(&i, &ctx(&w)).unwrap();
    let e = p.file_system.unwrap();
    assert!(
        e.contains(&ResolvedEntry {
            path: w.join("sub/.env"),
            access: Access::Deny
        }),
        "{e:?}"
    );
    assert!(!e.iter().any(|x| x.path == w.join("keep.txt")));
}

#[test]
fn ties_prefer_deny_then_write_then_read() {
    assert_eq!(tie_winner(Access::Read, Access::Deny), Access::Deny);
    assert_eq!(tie_winner(Access::Write, Access::Read), Access::Write);
    assert_eq!(tie_winner(Access::Deny, Access::Write), Access::Deny);
}

#[test]
fn disabled_and_external_profiles_leave_the_file_system_alone() {
    let w = tmp();
    let disabled: SandboxIntent = serde_json::from_value(serde_json::json!({
        "permissions": {"type": "disabled"}, "windowsSandboxLevel": "disabled"}))
    .unwrap();
    assert!(resolve(&disabled, &ctx(&w)).unwrap().is_noop());
    let external = SandboxIntent {
        permissions: PermissionProfile::External {
            network: NetworkAccess::Restricted,
        },
        windows_sandbox_level: WindowsSandboxLevel::Disabled,
        cwd: None,
        workspace_roots: None,
        policy_context: None,
    };
    let p = resolve(&external, &ctx(&w)).unwrap();
    assert_eq!((p.file_system, p.network), (None, NetworkMode::Restricted));
}
