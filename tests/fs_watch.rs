//! `fs/watchMissing` and `fs/missingChanged` as a client sees them, over a real socket: what
//! fires (a missing path appears, its next missing component appears, the present path goes),
//! what does not, one-shot, one watch per connection replaced by each call, the `watching:false`
//! cases, bounds and bad input.
//!
//! Waiting for a notification is on the socket under the harness's deadline. That something did
//! NOT fire is checked by reading for a short window and then, on the same watch, making a change
//! that does fire (the positive control).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// How long a change that must not fire is given to (wrongly) fire.
const QUIET: Duration = Duration::from_millis(300);

async fn ready() -> (Server, Client) {
    let server = Server::start(&[]).await;
    let mut client = server.connect().await;
    client.initialize().await;
    (server, client)
}

async fn watch(c: &mut Client, id: u64, missing: &[String], present: Option<String>) -> bool {
    let r = c
        .request_ok(
            "fs/watchMissing",
            json!({"watchId": id, "missing": missing, "present": present}),
        )
        .await;
    r["watching"].as_bool().expect("watching")
}

async fn fired(c: &mut Client) -> Value {
    let n = c
        .wait_for_notification("fs/missingChanged", |m| m["method"] == "fs/missingChanged")
        .await;
    n["params"].clone()
}

/// Reads for [`QUIET`] and asserts no `fs/missingChanged` came: after the window, the next
/// message not yet consumed is the answer to a request sent then, not a notification.
async fn assert_quiet(c: &mut Client, why: &str) {
    assert!(c.read_idly_for(QUIET).await, "connection closed");
    let id = c.send_request("environment/info", json!({})).await;
    let next = c.next_message().await;
    assert_eq!(next["id"], json!(id), "fired on {why}: {next}");
}

#[tokio::test]
async fn a_missing_path_that_appears_fires_once() {
    let (_s, mut c) = ready().await;
    let d = TestDir::new();
    let target = d.join("AGENTS.md");
    assert!(watch(&mut c, 1, &[file_uri(&target)], None).await);
    std::fs::write(d.join("unrelated"), b"x").unwrap();
    assert_quiet(&mut c, "an unrelated sibling").await;
    std::fs::write(&target, b"x").unwrap();
    assert_eq!(fired(&mut c).await, json!({"watchId": 1}));
    // One-shot: gone after it fired.
    std::fs::remove_file(&target).unwrap();
    std::fs::write(&target, b"y").unwrap();
    assert_quiet(&mut c, "a change after the watch fired").await;
}

#[tokio::test]
async fn a_deep_missing_path_fires_on_its_next_missing_component() {
    let (_s, mut c) = ready().await;
    let d = TestDir::new();
    let deep = d.join("u/v/w.txt");
    assert!(watch(&mut c, 1, &[file_uri(&deep)], None).await);
    std::fs::create_dir(d.join("u")).unwrap();
    assert_eq!(fired(&mut c).await, json!({"watchId": 1}));
    // With `u` present: `u/other` does not fire, `u/v` does.
    assert!(watch(&mut c, 2, &[file_uri(&deep)], None).await);
    std::fs::write(d.join("u/other"), b"x").unwrap();
    assert_quiet(&mut c, "a sibling of the next component").await;
    std::fs::create_dir(d.join("u/v")).unwrap();
    assert_eq!(fired(&mut c).await, json!({"watchId": 2}));
}

#[tokio::test]
async fn the_present_path_going_fires_and_a_file_inside_it_does_not() {
    let (_s, mut c) = ready().await;
    let d = TestDir::new();
    let present = d.join(".git");
    std::fs::create_dir(&present).unwrap();
    let missing = d.join(".agents/skills");
    assert!(watch(&mut c, 1, &[file_uri(&missing)], Some(file_uri(&present))).await);
    std::fs::write(present.join("HEAD"), b"ref").unwrap();
    assert_quiet(&mut c, "a new file inside the present directory").await;
    std::fs::remove_dir_all(&present).unwrap();
    assert_eq!(fired(&mut c).await, json!({"watchId": 1}));
}

#[tokio::test]
async fn each_call_replaces_the_connections_watch_even_when_refused() {
    let (_s, mut c) = ready().await;
    let d = TestDir::new();
    let (a, b) = (d.join("a"), d.join("b"));
    assert!(watch(&mut c, 1, &[file_uri(&a)], None).await);
    assert!(watch(&mut c, 2, &[file_uri(&b)], None).await);
    std::fs::write(&a, b"x").unwrap();
    assert_quiet(&mut c, "the replaced watch's path").await;
    std::fs::write(&b, b"x").unwrap();
    assert_eq!(fired(&mut c).await, json!({"watchId": 2}));
    // A refused registration (empty `missing`) also ends the watch it replaces.
    let c_path = d.join("c");
    assert!(watch(&mut c, 3, &[file_uri(&c_path)], None).await);
    assert!(!watch(&mut c, 4, &[], None).await);
    std::fs::write(&c_path, b"x").unwrap();
    assert_quiet(&mut c, "a watch replaced by a refused call").await;
}

#[tokio::test]
async fn watching_is_false_in_the_reference_cases() {
    let (_s, mut c) = ready().await;
    let d = TestDir::new();
    std::fs::write(d.join("exists"), b"x").unwrap();
    let missing = file_uri(&d.join("missing"));
    let one = [missing.clone()];
    assert!(!watch(&mut c, 1, &[], None).await, "empty missing");
    assert!(
        !watch(
            &mut c,
            2,
            &[missing.clone(), file_uri(&d.join("exists"))],
            None
        )
        .await,
        "a missing path exists"
    );
    assert!(
        !watch(&mut c, 3, &one, Some(file_uri(&d.join("nope")))).await,
        "present does not exist"
    );
    assert!(!watch(&mut c, 0, &one, None).await, "id 0");
    assert!(watch(&mut c, 10, &one, None).await);
    assert!(!watch(&mut c, 10, &one, None).await, "a repeated id");
    assert!(!watch(&mut c, 5, &one, None).await, "a lower id");
    // A second connection keeps its own watch, and may reuse an id.
    let mut other = _s.connect().await;
    other.initialize().await;
    assert!(watch(&mut other, 10, &one, None).await);
    std::fs::write(d.join("missing"), b"x").unwrap();
    assert_eq!(fired(&mut other).await, json!({"watchId": 10}));
}

#[tokio::test]
async fn a_watch_on_ten_thousand_paths_is_answered_and_fires() {
    let (_s, mut c) = ready().await;
    let d = TestDir::new();
    let many: Vec<String> = (0..10_000)
        .map(|i| file_uri(&d.join(&format!("m{i}"))))
        .collect();
    assert!(watch(&mut c, 1, &many, None).await);
    std::fs::write(d.join("m9999"), b"x").unwrap();
    assert_eq!(fired(&mut c).await, json!({"watchId": 1}));
    // Past the bound (10,000 paths, or 1,024 watched directories) the answer is watching:false.
    let too_many: Vec<String> = (0..10_001)
        .map(|i| file_uri(&d.join(&format!("m{i}x"))))
        .collect();
    assert!(!watch(&mut c, 2, &too_many, None).await);
    for i in 0..1025 {
        std::fs::create_dir(d.join(&format!("dir{i}"))).unwrap();
    }
    let spread: Vec<String> = (0..1025)
        .map(|i| file_uri(&d.join(&format!("dir{i}/m"))))
        .collect();
    assert!(!watch(&mut c, 3, &spread, None).await);
    assert!(watch(&mut c, 4, &spread[..1024], None).await);
    std::fs::write(d.join("dir1023/m"), b"x").unwrap();
    assert_eq!(fired(&mut c).await, json!({"watchId": 4}));
}

#[tokio::test]
async fn watch_missing_refuses_missing_ill_typed_and_null_fields() {
    let (_s, mut c) = ready().await;
    let d = TestDir::new();
    let m = file_uri(&d.join("m"));
    for (params, needle) in [
        (json!({"missing": [m]}), "missing field `watchId`"),
        (json!({"watchId": 1}), "missing field `missing`"),
        (
            json!({"watchId": "1", "missing": [m]}),
            "invalid type: string",
        ),
        (json!({"watchId": -1, "missing": [m]}), "invalid value"),
        (
            json!({"watchId": null, "missing": [m]}),
            "invalid type: null",
        ),
        (json!({"watchId": 1, "missing": null}), "invalid type: null"),
        (json!({"watchId": 1, "missing": m}), "invalid type: string"),
        (
            json!({"watchId": 1, "missing": [7]}),
            "invalid type: integer",
        ),
        (
            json!({"watchId": 1, "missing": [m], "present": [m]}),
            "invalid type: sequence",
        ),
        (
            json!({"watchId": 1, "missing": ["relative/x"]}),
            "invalid missing",
        ),
        (
            json!({"watchId": 1, "missing": [m], "present": "nope"}),
            "invalid present",
        ),
    ] {
        let (code, message) = c.request_err("fs/watchMissing", params.clone()).await;
        assert_eq!(code, -32602, "{params}: {message}");
        assert!(message.contains(needle), "{params}: {message}");
    }
    // A huge path (1 MiB, 500,000 components) is answered at once, not walked up.
    let huge = format!("file:///{}", "a/".repeat(500_000));
    let r = c
        .request_ok("fs/watchMissing", json!({"watchId": 1, "missing": [huge]}))
        .await;
    assert_eq!(r, json!({"watching": false}));
    let r = c
        .request_ok(
            "fs/watchMissing",
            json!({"watchId": 2, "missing": [m], "present": huge}),
        )
        .await;
    assert_eq!(r, json!({"watching": false}));
    // An extra `sandbox` is ignored, and the connection still serves.
    let r = c
        .request_ok(
            "fs/watchMissing",
            json!({"watchId": 3, "missing": [m], "sandbox": {"x": 1}}),
        )
        .await;
    assert_eq!(r, json!({"watching": true}));
}

#[tokio::test]
async fn fs_watch_missing_is_advertised_and_serves_the_clients_session_start_watch() {
    let server = Server::start(&[]).await;
    let mut c = server.connect().await;
    let init = c
        .try_initialize("codex", None, DEADLINE)
        .await
        .expect("initialize answered")
        .expect("initialize succeeded");
    assert_eq!(
        init["environmentInfo"]["capabilities"]["fsWatchMissing"],
        json!(true),
        "{init}"
    );
    // As the client sends it after its session-start probes: the project's `.agents/skills`
    // and `.git` of the cwd and each ancestor, `present` null, id 1.
    let d = TestDir::new();
    let cwd = d.join("project");
    std::fs::create_dir(&cwd).unwrap();
    let mut missing = vec![file_uri(&cwd.join(".agents/skills"))];
    let mut dir = Some(cwd.as_path());
    while let Some(p) = dir {
        if !p.join(".git").exists() {
            missing.push(file_uri(&p.join(".git")));
        }
        dir = p.parent();
    }
    let r = c
        .request_ok(
            "fs/watchMissing",
            json!({"watchId": 1, "missing": missing, "present": null}),
        )
        .await;
    assert_eq!(r, json!({"watching": true}));
    std::fs::create_dir(cwd.join(".git")).unwrap();
    assert_eq!(fired(&mut c).await, json!({"watchId": 1}));
}
