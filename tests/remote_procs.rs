//! `codex remote exec --detach`, `--session ID`, `ps` and `kill` (the real binary against a
//! real server): a command left running in a detached session is found again, listed, and
//! signalled by a later invocation.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{DEADLINE, Server, TestDir};
use tokio::process::Command;

/// `codex remote --url URL ARGS...`, run to completion with stdin at EOF.
async fn remote(url: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_codex"));
    cmd.arg("remote")
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("CODEX_EXEC_SERVER_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("codex remote did not finish in time")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The command failed with `code` and its stderr says each of `needles`.
fn assert_failed(out: &Output, code: i32, needles: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "no `{needle}` in: {err}");
    }
}

/// `exec --detach -- ARGV`: the session and process ids it prints.
async fn detach(server: &Server, argv: &[&str]) -> (String, String) {
    let mut args = vec!["exec", "--detach", "--"];
    args.extend_from_slice(argv);
    let out = remote(server.url(), &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    let mut words = line.split_whitespace();
    let session = words.next().expect("a session id").to_string();
    let process = words.next().expect("a process id").to_string();
    assert_eq!(words.next(), None, "one line of two words: {line:?}");
    (session, process)
}

/// `--session S ps --json`, parsed.
async fn ps_json(server: &Server, session: &str) -> Vec<serde_json::Value> {
    let out = remote(server.url(), &["--session", session, "ps", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ps --json prints a JSON array")
}

/// Waits until `ps` shows `process` in `state`; returns its entry.
async fn wait_for_state(
    server: &Server,
    session: &str,
    process: &str,
    state: &str,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let list = ps_json(server, session).await;
        let entry = list
            .iter()
            .find(|p| p["processId"] == process)
            .unwrap_or_else(|| panic!("{process} not listed: {list:?}"))
            .clone();
        if entry["state"] == state {
            return entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{process} never became {state}: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for a file to hold a pid.
async fn read_pid(path: &std::path::Path) -> i32 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && let Ok(pid) = s.trim().parse()
        {
            return pid;
        }
        assert!(tokio::time::Instant::now() < deadline, "no pid in {path:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_detached_command_is_listed_by_ps_and_killed_by_kill_from_a_later_invocation() {
    let server = Server::start(&[]).await;
    let dir = TestDir::new();
    let pidfile = dir.join("pid");
    let script = format!("echo $$ > {}; exec sleep 1000", pidfile.display());
    let (session, process) = detach(&server, &["sh", "-c", &script]).await;
    let pid = read_pid(&pidfile).await;

    let out = remote(server.url(), &["--session", &session, "ps"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with(&process))
        .unwrap_or_else(|| panic!("{process} not in the table:\n{table}"));
    assert!(
        row.contains("running") && row.contains(&pid.to_string()),
        "{row}"
    );
    assert!(table.starts_with("PROCESS_ID"), "{table}");

    let out = remote(server.url(), &["--session", &session, "kill", &process]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    common::assert_process_exits(pid, DEADLINE, "the killed detached command").await;
    let entry = wait_for_state(&server, &session, &process, "closed").await;
    assert_eq!(entry["exitCode"], 143, "{entry}");
}

#[tokio::test]
async fn kill_with_a_signal_name_delivers_that_signal_to_the_commands_trap() {
    let server = Server::start(&[]).await;
    let script = "trap 'echo got-usr1; exit 7' USR1; echo ready; while :; do sleep 0.05; done";
    let (session, process) = detach(&server, &["sh", "-c", script]).await;
    // The trap is set once `ready` is retained.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while ps_json(&server, &session).await[0]["retainedBytes"] == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = remote(
        server.url(),
        &["--session", &session, "kill", &process, "SIGUSR1"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let entry = wait_for_state(&server, &session, &process, "closed").await;
    assert_eq!(entry["exitCode"], 7, "{entry}");
    // `ready` and `got-usr1`, and perhaps the shell's report of its `sleep` (which got the
    // signal too: it goes to the whole group).
    let retained = entry["retainedBytes"].as_u64().unwrap();
    assert!(retained >= "ready\ngot-usr1\n".len() as u64, "{entry}");

    // Killing it again names what happened.
    let out = remote(server.url(), &["--session", &session, "kill", &process]).await;
    assert_failed(&out, 1, &["already exited (exit code 7)"]);
}

#[tokio::test]
async fn exec_in_a_resumed_session_is_listed_beside_the_first_command() {
    let server = Server::start(&[]).await;
    let (session, first) = detach(&server, &["sleep", "1000"]).await;
    let out = remote(
        server.url(),
        &[
            "--session",
            &session,
            "exec",
            "--",
            "sh",
            "-c",
            "echo second; exit 4",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "second\n");
    let list = ps_json(&server, &session).await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(
        list.iter()
            .any(|p| p["processId"] == first && p["state"] == "running")
    );
    assert!(
        list.iter()
            .any(|p| p["argv0"] == "sh" && p["exitCode"] == 4)
    );
    let out = remote(
        server.url(),
        &["--session", &session, "kill", &first, "kill"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let entry = wait_for_state(&server, &session, &first, "closed").await;
    assert_eq!(entry["exitCode"], 137, "{entry}");
}

#[tokio::test]
async fn kill_of_a_process_the_session_does_not_have_names_it() {
    let server = Server::start(&[]).await;
    let (session, _) = detach(&server, &["true"]).await;
    let out = remote(
        server.url(),
        &["--session", &session, "kill", "no-such-process"],
    )
    .await;
    assert_failed(&out, 1, &["no process `no-such-process`", &session]);
}

#[tokio::test]
async fn kill_refuses_a_signal_it_does_not_know_before_connecting() {
    let server = Server::start(&[]).await;
    let out = remote(server.url(), &["--session", "x", "kill", "p", "SIGSEGV"]).await;
    assert_failed(&out, 2, &["unknown signal `SIGSEGV`"]);
}

#[tokio::test]
async fn ps_and_kill_without_a_session_say_how_to_get_one() {
    let server = Server::start(&[]).await;
    for args in [&["ps"][..], &["kill", "p"][..]] {
        let out = remote(server.url(), args).await;
        assert_failed(&out, 1, &["needs --session ID", "--detach"]);
    }
}

#[tokio::test]
async fn an_unknown_session_is_an_error_naming_it() {
    let server = Server::start(&[]).await;
    let out = remote(server.url(), &["--session", "no-such-session", "ps"]).await;
    assert_failed(&out, 1, &["--session no-such-session", "no such session"]);
}

#[tokio::test]
async fn a_session_lives_on_after_each_command_until_its_ttl() {
    // A short TTL: the detached command is killed by the server once nobody resumes the
    // session, and the session is then unknown.
    let server = Server::start(&["--detached-session-ttl-ms", "1500"]).await;
    let dir = TestDir::new();
    let pidfile = dir.join("pid");
    let script = format!("echo $$ > {}; exec sleep 1000", pidfile.display());
    let (session, _) = detach(&server, &["sh", "-c", &script]).await;
    let pid = read_pid(&pidfile).await;
    common::assert_process_exits(pid, DEADLINE, "the command of the expired session").await;
    let out = remote(server.url(), &["--session", &session, "ps"]).await;
    assert_failed(&out, 1, &["no such session"]);
}
