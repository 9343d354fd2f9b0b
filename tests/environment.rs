//! `environment/status`, `environmentConfig/read`, the handshake's `environmentInfo` and the
//! 0.169.0 fields of `process/start`, as a client sees them over a real socket: the answers, the
//! gate before `initialize` and before `initialized`, and bad input (missing, ill-typed, null and
//! huge fields).

mod common;

use common::*;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// A server with `CODEX_HOME` (and `TMPDIR`) set, and an initialized client on it.
async fn ready_with_env(env: &[(&str, &str)]) -> (Server, Client) {
    let server = Server::start_with(ServerOptions {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ServerOptions::default()
    })
    .await;
    let mut client = server.connect().await;
    client.initialize().await;
    (server, client)
}

fn config_params(cwd: &str, config: Value, requirements: Value) -> Value {
    json!({"cwd": cwd, "configPaths": config, "requirementsPaths": requirements})
}

// ---------------------------------------------------------------------------------------------
// environment/status

#[tokio::test]
async fn status_is_ready_with_no_null_or_empty_params() {
    let server = Server::start(&[]).await;
    let mut c = server.connect().await;
    c.initialize().await;
    assert_eq!(
        c.request_ok("environment/status", json!({})).await,
        json!({"status": "ready"})
    );
    assert_eq!(
        c.request_ok("environment/status", Value::Null).await,
        json!({"status": "ready"})
    );
    c.send_json(&json!({"id": 77, "method": "environment/status"}))
        .await;
    assert_eq!(c.await_answer(77).await, Ok(json!({"status": "ready"})));
}

#[tokio::test]
async fn status_with_any_param_is_refused_as_the_reference_does() {
    let server = Server::start(&[]).await;
    let mut c = server.connect().await;
    c.initialize().await;
    let (code, message) = c
        .request_err("environment/status", json!({"environmentId": "x"}))
        .await;
    assert_eq!(code, INVALID_PARAMS);
    assert_eq!(message, "invalid type: map, expected unit");
    let (code, _) = c.request_err("environment/status", json!([1, 2])).await;
    assert_eq!(code, INVALID_PARAMS);
    let huge = "x".repeat(1 << 20);
    let (code, _) = c
        .request_err("environment/status", json!({ "big": huge }))
        .await;
    assert_eq!(code, INVALID_PARAMS);
    // The connection still serves.
    c.request_ok("environment/status", json!({})).await;
}

#[tokio::test]
async fn status_and_config_are_gated_by_the_handshake_with_their_family_names() {
    let server = Server::start(&[]).await;
    let mut c = server.connect().await;
    let config = config_params("file:///", json!([["model"]]), json!([]));
    let (code, message) = c.request_err("environment/status", json!({})).await;
    assert_eq!(code, INVALID_REQUEST);
    assert_eq!(
        message,
        "client must call initialize before using environment status methods"
    );
    let (code, message) = c
        .request_err("environmentConfig/read", config.clone())
        .await;
    assert_eq!(code, INVALID_REQUEST);
    assert_eq!(
        message,
        "client must call initialize before using environment config methods"
    );
    c.request_ok("initialize", json!({"clientName": "test"}))
        .await;
    let (code, message) = c.request_err("environment/status", json!({})).await;
    assert_eq!(code, INVALID_REQUEST);
    assert_eq!(
        message,
        "client must send initialized before using environment status methods"
    );
    let (code, message) = c
        .request_err("environmentConfig/read", config.clone())
        .await;
    assert_eq!(code, INVALID_REQUEST);
    assert_eq!(
        message,
        "client must send initialized before using environment config methods"
    );
    c.notify("initialized", json!({})).await;
    c.request_ok("environment/status", json!({})).await;
    c.request_ok("environmentConfig/read", config).await;
}

// ---------------------------------------------------------------------------------------------
// environmentConfig/read

#[tokio::test]
async fn config_read_returns_executor_mcp_servers_in_the_user_layer() {
    let home = TestDir::new();
    std::fs::write(
        home.join("config.toml"),
        "model = \"probe-model\"\n\n[features]\nshell_snapshot_v2 = true\nother = 1\n\n\
         [mcp_servers.probe_http]\nurl = \"http://127.0.0.1:9/mcp\"\n\
         bearer_token_env_var = \"PROBE_SECRET\"\n",
    )
    .unwrap();
    let codex_home = home.path().canonicalize().unwrap();
    let (_server, mut c) = ready_with_env(&[("CODEX_HOME", codex_home.to_str().unwrap())]).await;
    // What the 0.169.0 client asks for to discover MCP servers.
    let r = c
        .request_ok(
            "environmentConfig/read",
            config_params(
                "file:///nonexistent/project",
                json!([["mcp_servers"]]),
                json!([["mcp_servers"]]),
            ),
        )
        .await;
    let user_file = codex_home.join("config.toml");
    assert_eq!(r["codexHomeDir"], json!(file_uri(&codex_home)));
    assert!(r["userHomeDir"].is_string() || r["userHomeDir"].is_null());
    assert!(r["hostname"].is_string() || r["hostname"].is_null());
    let layers = r["config"]["layers"].as_array().unwrap();
    let user = layers.last().expect("the user layer");
    assert_eq!(
        user,
        &json!({
            "source": format!("user ({})", user_file.display()),
            "baseDir": file_uri(&codex_home),
            "toml": "[mcp_servers.probe_http]\nurl = \"http://127.0.0.1:9/mcp\"\n\
                     bearer_token_env_var = \"PROBE_SECRET\"\n",
        })
    );
    assert_eq!(r["config"]["cloudInsertionIndex"], json!(0));
    assert_eq!(r["requirements"]["cloudInsertionIndex"], json!(0));
    // Projection: only the asked keys, missing ones dropped.
    let r = c
        .request_ok(
            "environmentConfig/read",
            config_params(
                "file:///",
                json!([["model"], ["features", "shell_snapshot_v2"], ["nope"]]),
                json!([]),
            ),
        )
        .await;
    assert_eq!(
        r["config"]["layers"].as_array().unwrap().last().unwrap()["toml"],
        json!("model = \"probe-model\"\n\n[features]\nshell_snapshot_v2 = true\n")
    );
    // Nothing selected: no user layer.
    let r = c
        .request_ok(
            "environmentConfig/read",
            config_params("file:///", json!([["nope"]]), json!([["nope"]])),
        )
        .await;
    let sources: Vec<&str> = r["config"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["source"].as_str().unwrap())
        .collect();
    assert!(
        sources.iter().all(|s| !s.starts_with("user ")),
        "{sources:?}"
    );
}

#[tokio::test]
async fn config_read_includes_project_layers_of_a_trusted_project_only() {
    let dir = TestDir::new();
    let root = dir.path().canonicalize().unwrap();
    let (home, trusted, untrusted) = (root.join("home"), root.join("t"), root.join("u"));
    for d in [&home, &trusted.join(".codex"), &untrusted.join(".codex")] {
        std::fs::create_dir_all(d).unwrap();
    }
    for d in [&trusted, &untrusted] {
        std::fs::write(
            d.join(".codex/config.toml"),
            "[mcp_servers.proj]\nurl = \"http://127.0.0.1:9/p\"\n",
        )
        .unwrap();
    }
    std::fs::write(
        home.join("config.toml"),
        format!(
            "[projects.\"{}\"]\ntrust_level = \"trusted\"\n",
            trusted.display()
        ),
    )
    .unwrap();
    let (_server, mut c) = ready_with_env(&[("CODEX_HOME", home.to_str().unwrap())]).await;
    let sources = |r: &Value| -> Vec<String> {
        r["config"]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["source"].as_str().unwrap().to_string())
            .collect()
    };
    let r = c
        .request_ok(
            "environmentConfig/read",
            config_params(&file_uri(&trusted), json!([["mcp_servers"]]), json!([])),
        )
        .await;
    let project_file = trusted.join(".codex/config.toml");
    assert_eq!(
        sources(&r).last().map(String::as_str),
        Some(format!("project ({})", project_file.display()).as_str())
    );
    let r = c
        .request_ok(
            "environmentConfig/read",
            config_params(&file_uri(&untrusted), json!([["mcp_servers"]]), json!([])),
        )
        .await;
    assert!(
        sources(&r).iter().all(|s| !s.starts_with("project ")),
        "{r}"
    );
}

#[tokio::test]
async fn config_read_with_an_unusable_codex_home_or_config_is_an_internal_error() {
    let home = TestDir::new();
    let missing = home.join("missing");
    let (_server, mut c) = ready_with_env(&[("CODEX_HOME", missing.to_str().unwrap())]).await;
    let params = config_params("file:///", json!([["model"]]), json!([]));
    let (code, message) = c
        .request_err("environmentConfig/read", params.clone())
        .await;
    assert_eq!(code, INTERNAL_ERROR);
    assert!(
        message.starts_with("failed to find Codex home: "),
        "{message}"
    );
    drop(c);

    std::fs::write(home.join("config.toml"), "model = = 1\n").unwrap();
    let (_server, mut c) = ready_with_env(&[("CODEX_HOME", home.path().to_str().unwrap())]).await;
    let (code, message) = c.request_err("environmentConfig/read", params).await;
    assert_eq!(code, INTERNAL_ERROR);
    assert!(
        message.starts_with("failed to load executor-local config: "),
        "{message}"
    );
}

#[tokio::test]
async fn config_read_bad_input_is_refused_with_the_reference_texts() {
    let home = TestDir::new();
    let (_server, mut c) = ready_with_env(&[("CODEX_HOME", home.path().to_str().unwrap())]).await;
    let cases: Vec<(Value, &str)> = vec![
        (
            config_params("file:///", json!([]), json!([])),
            "at least one config or requirements path is required",
        ),
        (
            config_params("file:///", json!([["model"], []]), json!([])),
            "TOML paths must contain at least one key segment",
        ),
        (
            config_params("file:///", json!([]), json!([[]])),
            "TOML paths must contain at least one key segment",
        ),
        (
            config_params("relative/dir", json!([["model"]]), json!([])),
            "invalid URI: relative URL without a base",
        ),
    ];
    for (params, expected) in cases {
        let (code, message) = c
            .request_err("environmentConfig/read", params.clone())
            .await;
        assert_eq!(
            (code, message.as_str()),
            (INVALID_PARAMS, expected),
            "{params}"
        );
    }
    // Missing, null and ill-typed fields.
    let full = config_params("file:///", json!([["model"]]), json!([]));
    for field in ["cwd", "configPaths", "requirementsPaths"] {
        let mut missing = full.clone();
        missing.as_object_mut().unwrap().remove(field);
        let mut null = full.clone();
        null[field] = Value::Null;
        let mut ill = full.clone();
        ill[field] = json!(7);
        for params in [missing, null, ill] {
            let (code, message) = c
                .request_err("environmentConfig/read", params.clone())
                .await;
            assert_eq!(code, INVALID_PARAMS, "{params}");
            assert!(
                message.contains(field) || message.contains("invalid type"),
                "{message}"
            );
        }
    }
    let (code, _) = c
        .request_err(
            "environmentConfig/read",
            config_params("file:///", json!([["model", 1]]), json!([])),
        )
        .await;
    assert_eq!(code, INVALID_PARAMS);
    for params in [Value::Null, json!({}), json!([1])] {
        let (code, _) = c.request_err("environmentConfig/read", params).await;
        assert_eq!(code, INVALID_PARAMS);
    }
    // Huge: 100,000 paths of a long key, answered (nothing selected) without harm.
    let long_key = "k".repeat(64);
    let many: Vec<Value> = (0..100_000).map(|_| json!([long_key, "x"])).collect();
    let r = c
        .request_ok(
            "environmentConfig/read",
            config_params("file:///", Value::Array(many), json!([])),
        )
        .await;
    assert!(r["config"]["layers"].is_array());
    c.request_ok("environment/status", json!({})).await;
}

// ---------------------------------------------------------------------------------------------
// The handshake's environmentInfo

fn binary_digest() -> String {
    let bytes = std::fs::read(server_binary()).unwrap();
    let hex: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

#[tokio::test]
async fn initialize_carries_the_full_environment_info() {
    let tmp = TestDir::new();
    let server = Server::start_with(ServerOptions {
        env: vec![("TMPDIR".into(), tmp.path().to_str().unwrap().into())],
        ..ServerOptions::default()
    })
    .await;
    let mut c = server.connect().await;
    let result = c
        .request_ok(
            "initialize",
            json!({"clientName": "codex-environment", "resumeSessionId": null}),
        )
        .await;
    let info = &result["environmentInfo"];
    assert_eq!(info["providerId"], json!(binary_digest()));
    assert_eq!(info["prependPathDirs"], json!([]));
    assert_eq!(info["temporaryDirectories"], json!([tmp.uri()]));
    assert_eq!(info["platformOs"], json!("linux"));
    assert_eq!(info["capabilities"]["environmentConfigRead"], json!(true));
    for key in [
        "shell",
        "executorVersion",
        "cwd",
        "userHomeDir",
        "tempDir",
        "capabilities",
    ] {
        assert!(!info[key].is_null(), "{key} in {info}");
    }
    c.notify("initialized", json!({})).await;
    assert_eq!(&c.request_ok("environment/info", json!({})).await, info);
}

#[tokio::test]
async fn provider_id_is_stable_across_starts_and_no_tmpdir_means_no_temporary_directories() {
    let server = Server::start_with(ServerOptions {
        env: vec![("TMPDIR".into(), String::new())],
        ..ServerOptions::default()
    })
    .await;
    let mut c = server.connect().await;
    c.initialize().await;
    let first = c.request_ok("environment/info", json!({})).await;
    assert_eq!(first["temporaryDirectories"], json!([]));
    let other = Server::start(&[]).await;
    let mut c = other.connect().await;
    c.initialize().await;
    let second = c.request_ok("environment/info", json!({})).await;
    assert_eq!(first["providerId"], second["providerId"]);
    assert_eq!(first["providerId"], json!(binary_digest()));
}

// ---------------------------------------------------------------------------------------------
// process/start: metadata, shellSnapshot, networkProxy

async fn ready() -> (Server, Client) {
    let server = Server::start(&[]).await;
    let mut c = server.connect().await;
    c.initialize().await;
    (server, c)
}

/// `sh -c "echo <word>"` with `field` set to `value`.
fn echo_with(id: &str, word: &str, field: &str, value: Value) -> Value {
    let mut p = sh(id, &format!("echo {word}"));
    p[field] = value;
    p
}

async fn runs_and_prints(c: &mut Client, params: Value, id: &str, word: &str) {
    c.start_process(params).await;
    c.wait_for_output(id, word).await;
    c.wait_for_process_event(id, "process/closed").await;
}

#[tokio::test]
async fn start_accepts_metadata_and_refuses_a_thread_id_that_is_not_a_uuid() {
    let (_server, mut c) = ready().await;
    let meta =
        json!({"threadId": "0190a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b", "toolCallId": "call_shell_1"});
    runs_and_prints(
        &mut c,
        echo_with("m1", "meta-ok", "metadata", meta),
        "m1",
        "meta-ok",
    )
    .await;
    runs_and_prints(
        &mut c,
        echo_with("m2", "empty-ok", "metadata", json!({})),
        "m2",
        "empty-ok",
    )
    .await;
    runs_and_prints(
        &mut c,
        echo_with("m3", "null-ok", "metadata", Value::Null),
        "m3",
        "null-ok",
    )
    .await;
    let bad = json!({"threadId": "not-a-uuid"});
    let (code, message) = c
        .request_err("process/start", echo_with("m4", "x", "metadata", bad))
        .await;
    assert_eq!(code, INVALID_PARAMS);
    assert!(
        message.contains("metadata.threadId") && message.contains("invalid character"),
        "{message}"
    );
    for bad in [
        json!(7),
        json!({"toolCallId": 1}),
        json!({"threadId": "x".repeat(1 << 20)}),
    ] {
        let (code, _) = c
            .request_err("process/start", echo_with("m5", "x", "metadata", bad))
            .await;
        assert_eq!(code, INVALID_PARAMS);
    }
}

#[tokio::test]
async fn start_checks_a_shell_snapshot_as_the_reference_does_and_runs_the_command_as_sent() {
    let (_server, mut c) = ready().await;
    let mut p = process_params("s1", &["/bin/sh", "-lc", "echo snap-ok"]);
    p["shellSnapshot"] =
        json!({"scopeId": "thread:env", "shell": {"name": "sh", "path": "/bin/sh"}});
    runs_and_prints(&mut c, p, "s1", "snap-ok").await;
    let snapshot = |scope: &str, name: &str| json!({"scopeId": scope, "shell": {"name": name, "path": "/bin/sh"}});
    let cases = [
        (
            snapshot("", "bash"),
            "shell snapshot scope must be non-empty and at most 256 bytes",
        ),
        (
            snapshot(&"s".repeat(257), "bash"),
            "shell snapshot scope must be non-empty and at most 256 bytes",
        ),
        (
            snapshot("t", "fish"),
            "shell snapshots are unsupported for shell `fish`",
        ),
    ];
    for (value, expected) in cases {
        let (code, message) = c
            .request_err(
                "process/start",
                echo_with("s2", "x", "shellSnapshot", value),
            )
            .await;
        assert_eq!((code, message.as_str()), (INVALID_PARAMS, expected));
    }
    // 256 bytes is within the limit.
    runs_and_prints(
        &mut c,
        echo_with(
            "s3",
            "edge-ok",
            "shellSnapshot",
            snapshot(&"s".repeat(256), "zsh"),
        ),
        "s3",
        "edge-ok",
    )
    .await;
    for bad in [
        json!({"scopeId": "t"}),
        json!({"shell": {"name": "sh", "path": "/bin/sh"}}),
        json!({"scopeId": "t", "shell": {"name": "sh"}}),
        json!("x"),
    ] {
        let (code, _) = c
            .request_err("process/start", echo_with("s4", "x", "shellSnapshot", bad))
            .await;
        assert_eq!(code, INVALID_PARAMS);
    }
}

fn proxy(enabled: bool) -> Value {
    json!({
        "proxy": {
            "enabled": enabled, "enableSocks5": true, "enableSocks5Udp": false,
            "allowUpstreamProxy": false, "dangerouslyAllowAllUnixSockets": false,
            "mode": "limited", "allowLocalBinding": false,
            "domains": {"example.com": "allow"},
        },
        "auditMetadata": {"conversationId": "c"},
        "environmentId": "remote",
        "executionId": null,
    })
}

#[tokio::test]
async fn start_refuses_an_enabled_network_proxy_rather_than_run_unproxied() {
    let (_server, mut c) = ready().await;
    let (code, message) = c
        .request_err(
            "process/start",
            echo_with("n1", "x", "networkProxy", proxy(true)),
        )
        .await;
    assert_eq!(code, INVALID_PARAMS);
    assert!(
        message.starts_with("invalid network proxy config: "),
        "{message}"
    );
    // Nothing started: the id is free.
    runs_and_prints(&mut c, sh("n1", "echo free-ok"), "n1", "free-ok").await;
    // A disabled proxy asks for nothing: the command runs.
    runs_and_prints(
        &mut c,
        echo_with("n2", "off-ok", "networkProxy", proxy(false)),
        "n2",
        "off-ok",
    )
    .await;
    // Missing required members, ill-typed ones, null.
    let mut missing = proxy(true);
    missing["proxy"]
        .as_object_mut()
        .unwrap()
        .remove("enableSocks5");
    let (code, message) = c
        .request_err(
            "process/start",
            echo_with("n3", "x", "networkProxy", missing),
        )
        .await;
    assert_eq!(code, INVALID_PARAMS);
    assert!(
        message.contains("missing field `enableSocks5`"),
        "{message}"
    );
    let mut bad_mode = proxy(false);
    bad_mode["proxy"]["mode"] = json!("open");
    for bad in [json!({}), json!(7), bad_mode] {
        let (code, _) = c
            .request_err("process/start", echo_with("n4", "x", "networkProxy", bad))
            .await;
        assert_eq!(code, INVALID_PARAMS);
    }
    runs_and_prints(
        &mut c,
        echo_with("n5", "null-ok", "networkProxy", Value::Null),
        "n5",
        "null-ok",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// --concurrent-requests

#[tokio::test]
async fn concurrent_requests_of_zero_or_not_a_count_is_refused_naming_the_flag() {
    for value in ["0", "abc", "-1", "99999999999999999999999"] {
        let out = std::process::Command::new(server_binary())
            .args(["exec-server", &format!("--concurrent-requests={value}")])
            .output()
            .expect("run codex");
        assert_eq!(out.status.code(), Some(2), "{value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--concurrent-requests"),
            "{value}: {stderr}"
        );
    }
}

/// N is accepted (up to the largest count) and changes nothing: with 1, the reference's
/// one-at-a-time default, a long-polling `process/read` still delays nothing behind it.
#[tokio::test]
async fn concurrent_requests_is_accepted_and_requests_stay_concurrent() {
    let _big = Server::start(&["--concurrent-requests", &usize::MAX.to_string()]).await;
    let server = Server::start(&["--concurrent-requests", "1"]).await;
    let mut c = server.connect().await;
    c.initialize().await;
    c.start_process(sh("quiet", "exec sleep 30")).await;
    let read = c
        .send_request(
            "process/read",
            json!({"processId": "quiet", "afterSeq": 0, "waitMs": 20000}),
        )
        .await;
    assert_eq!(
        c.request_ok("environment/status", json!({})).await,
        json!({"status": "ready"})
    );
    assert!(!c.has_answer(read), "the long-poll should still be waiting");
    c.request_ok("process/terminate", json!({"processId": "quiet"}))
        .await;
    let answer = c.await_answer(read).await.expect("process/read");
    assert_eq!(answer["exited"], true, "{answer}");
}
