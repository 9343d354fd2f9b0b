use super::*;

fn table(text: &str) -> toml::Table {
    text.parse().unwrap()
}

fn paths(p: &[&[&str]]) -> Vec<Vec<String>> {
    p.iter()
        .map(|p| p.iter().map(|s| s.to_string()).collect())
        .collect()
}

#[test]
fn projection_keeps_requested_paths_and_drops_missing_ones() {
    let t = table(
        "model = \"m\"\nother = 1\n[features]\nshell_snapshot_v2 = true\nx = 2\n[mcp_servers.a]\nurl = \"u\"\n",
    );
    let out = project(
        &t,
        &paths(&[
            &["model"],
            &["features", "shell_snapshot_v2"],
            &["nope"],
            &["model", "deeper"],
        ]),
    );
    assert_eq!(
        toml::to_string(&out).unwrap(),
        "model = \"m\"\n\n[features]\nshell_snapshot_v2 = true\n"
    );
    // Overlapping paths, in either order, give the whole subtree once.
    for order in [
        paths(&[&["mcp_servers"], &["mcp_servers", "a", "url"]]),
        paths(&[&["mcp_servers", "a", "url"], &["mcp_servers"]]),
    ] {
        assert_eq!(project(&t, &order), table("[mcp_servers.a]\nurl = \"u\"\n"));
    }
    assert!(project(&t, &paths(&[&["nope", "x"]])).is_empty());
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("codex-envcfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn params(config: &[&[&str]], requirements: &[&[&str]]) -> ConfigReadParams {
    ConfigReadParams {
        cwd: "file:///".into(),
        config_paths: paths(config),
        requirements_paths: paths(requirements),
    }
}

#[test]
fn layers_are_system_then_user_and_requirements_from_the_system_dir() {
    let d = temp_dir();
    let (home, sys) = (d.join("codexhome"), d.join("etc"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::write(sys.join("config.toml"), "[mcp_servers.s]\nurl = \"sys\"\n").unwrap();
    std::fs::write(
        home.join("config.toml"),
        "[mcp_servers.u]\nurl = \"user\"\n",
    )
    .unwrap();
    std::fs::write(sys.join("requirements.toml"), "[mcp_servers.s]\nx = 1\n").unwrap();
    let env = Env {
        codex_home: Some(home.clone()),
        home: Some(d.clone()),
        system_dir: sys.clone(),
    };
    let r = read(&env, &params(&[&["mcp_servers"]], &[&["mcp_servers"]])).unwrap();
    let sources: Vec<_> = r.config.layers.iter().map(|l| l.source.clone()).collect();
    assert_eq!(
        sources,
        [
            format!("system ({})", sys.join("config.toml").display()),
            format!("user ({})", home.join("config.toml").display()),
        ]
    );
    assert_eq!(r.config.layers[1].toml, "[mcp_servers.u]\nurl = \"user\"\n");
    assert_eq!(r.config.layers[1].base_dir, path_uri::from_path(&home));
    assert_eq!(r.requirements.layers.len(), 1);
    assert_eq!(r.codex_home_dir, path_uri::from_path(&home));
    // Only requirements asked for: no config layer read.
    let r = read(&env, &params(&[], &[&["mcp_servers"]])).unwrap();
    assert!(r.config.layers.is_empty());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn codex_home_defaults_to_dot_codex_and_must_exist_when_set() {
    let d = temp_dir();
    let env = Env {
        codex_home: None,
        home: Some(d.clone()),
        system_dir: d.join("none"),
    };
    let r = read(&env, &params(&[&["model"]], &[])).unwrap();
    assert_eq!(r.codex_home_dir, path_uri::from_path(&d.join(".codex")));
    assert!(r.config.layers.is_empty());
    let env = Env {
        codex_home: Some(d.join("missing")),
        ..env
    };
    let err = read(&env, &params(&[&["model"]], &[])).unwrap_err();
    assert!(
        err.message.starts_with("failed to find Codex home: "),
        "{err:?}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_or_huge_config_file_is_a_load_error() {
    let d = temp_dir();
    let env = Env {
        codex_home: Some(d.clone()),
        home: None,
        system_dir: d.join("none"),
    };
    std::fs::write(d.join("config.toml"), "model = ").unwrap();
    let err = read(&env, &params(&[&["model"]], &[])).unwrap_err();
    assert!(
        err.message
            .starts_with("failed to load executor-local config: "),
        "{err:?}"
    );
    let big = "#".repeat(MAX_CONFIG_FILE_BYTES as usize + 1);
    std::fs::write(d.join("config.toml"), big).unwrap();
    let err = read(&env, &params(&[&["model"]], &[])).unwrap_err();
    assert!(err.message.contains("larger than the limit"), "{err:?}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn status_takes_nothing_null_or_empty_object_only() {
    assert!(status(Value::Null).is_ok());
    assert!(status(serde_json::json!({})).is_ok());
    let err = status(serde_json::json!({"a": 1})).unwrap_err();
    assert_eq!(err.message, "invalid type: map, expected unit");
    assert!(status(serde_json::json!([1])).is_err());
}

#[test]
fn project_layers_come_from_root_to_cwd_of_a_trusted_project_only() {
    let d = temp_dir().canonicalize().unwrap();
    let (home, repo) = (d.join("codexhome"), d.join("repo"));
    let sub = repo.join("a").join("b");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    for dir in [&d, &repo, &sub] {
        std::fs::create_dir_all(dir.join(".codex")).unwrap();
        let name = dir.file_name().unwrap().to_str().unwrap();
        std::fs::write(
            dir.join(".codex/config.toml"),
            format!("model = \"{name}\"\n"),
        )
        .unwrap();
    }
    let env = Env {
        codex_home: Some(home.clone()),
        home: None,
        system_dir: d.join("none"),
    };
    let mut p = params(&[&["model"]], &[]);
    p.cwd = path_uri::from_path(&sub);
    // Untrusted: no project layer.
    std::fs::write(home.join("config.toml"), "model = \"user\"\n").unwrap();
    let r = read(&env, &p).unwrap();
    assert_eq!(r.config.layers.len(), 1);
    // The project root trusted: the root's layer then cwd's, above the user's; not the parent's
    // of the root.
    std::fs::write(
        home.join("config.toml"),
        format!(
            "model = \"user\"\n[projects.\"{}\"]\ntrust_level = \"trusted\"\n",
            repo.display()
        ),
    )
    .unwrap();
    let r = read(&env, &p).unwrap();
    let tomls: Vec<_> = r.config.layers.iter().map(|l| l.toml.as_str()).collect();
    assert_eq!(
        tomls,
        [
            "model = \"user\"\n",
            "model = \"repo\"\n",
            "model = \"b\"\n"
        ]
    );
    assert_eq!(
        r.config.layers[2].source,
        format!("project ({})", sub.join(".codex/config.toml").display())
    );
    assert_eq!(
        r.config.layers[2].base_dir,
        path_uri::from_path(&sub.join(".codex"))
    );
    // A cwd that does not exist: no project layer, no error.
    p.cwd = path_uri::from_path(&repo.join("missing"));
    assert_eq!(read(&env, &p).unwrap().config.layers.len(), 1);
    std::fs::remove_dir_all(&d).unwrap();
}
