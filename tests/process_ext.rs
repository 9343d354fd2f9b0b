//! Process extensions beyond the reference (issue 14), through the real binary: `process/list`,
//! `process/closeStdin`, the extra `process/signal` names, `timeoutMs`, and `ptySize` +
//! `process/resize`, and the explicit `gap`, `exitedSeq` and `closedSeq` of `process/read`; each
//! with its bad inputs and its capability flag.

mod common;

use common::*;
use serde_json::{Value, json};
use test_case::test_case;

async fn started() -> (Server, Client, String) {
    started_with(&[]).await
}

async fn started_with(flags: &[&str]) -> (Server, Client, String) {
    let server = Server::start(flags).await;
    let mut client = server.connect().await;
    let session = client.initialize().await;
    (server, client, session)
}

fn tty(mut params: Value) -> Value {
    params["tty"] = json!(true);
    params
}

/// The row of `process/list` for `id`.
async fn listed(c: &mut Client, id: &str) -> Option<Value> {
    let answer = c.request_ok("process/list", json!({})).await;
    answer["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("list without processes: {answer}"))
        .iter()
        .find(|p| p["processId"] == id)
        .cloned()
}

fn assert_error(err: &RpcError, code: i64, needles: &[&str]) {
    assert_eq!(err.0, code, "{err:?}");
    for needle in needles {
        assert!(err.1.contains(needle), "{needle:?} not in {err:?}");
    }
}

#[tokio::test]
async fn every_extension_is_advertised_in_environment_info() {
    let (_server, mut c, _) = started().await;
    let info = c.request_ok("environment/info", json!({})).await;
    for key in [
        "ptyResize",
        "stdinClose",
        "processSignals",
        "processTimeout",
        "processList",
        "readGaps",
    ] {
        assert_eq!(info["capabilities"][key], true, "{key}: {info}");
    }
}

// ---------------------------------------------------------------------------------------------
// process/list

#[tokio::test]
async fn list_shows_running_and_closed_processes_of_this_session_only() {
    let (server, mut c, _) = started().await;
    c.start_process(sh("sleeper", "echo $$; exec sleep 30"))
        .await;
    c.wait_for_output("sleeper", "\n").await;
    c.start_process(sh("done", "printf hi")).await;
    c.collect_process_events("done").await;

    let done = listed(&mut c, "done").await.expect("done is listed");
    assert_eq!(done["state"], "closed", "{done}");
    assert_eq!(done["exitCode"], 0, "{done}");
    assert_eq!(done["pid"], Value::Null, "reaped: {done}");
    assert_eq!(done["argv0"], "/bin/sh", "{done}");
    assert_eq!(done["tty"], false, "{done}");
    assert_eq!(done["retainedBytes"], 2, "{done}");
    assert_eq!(done["nextSeq"], 4, "output, exited, closed: {done}");
    assert!(
        done["startedAtMs"].as_u64().unwrap() > 1_600_000_000_000,
        "{done}"
    );

    let sleeper = listed(&mut c, "sleeper").await.expect("sleeper is listed");
    assert_eq!(sleeper["state"], "running", "{sleeper}");
    assert_eq!(sleeper["exitCode"], Value::Null, "{sleeper}");
    let pid = sleeper["pid"]
        .as_i64()
        .expect("a running process has a pid");
    // The pid the shell printed (before exec'ing sleep): the child's, not the server's.
    let printed = output_text(&c.process_events("sleeper"), Some("stdout"));
    assert_eq!(printed.trim(), pid.to_string(), "the pid is the child's");

    let mut other = server.connect().await;
    other.initialize().await;
    let answer = other.request_ok("process/list", Value::Null).await;
    assert_eq!(
        answer,
        json!({"processes": []}),
        "another session sees none"
    );

    c.request_ok("process/terminate", json!({"processId": "sleeper"}))
        .await;
    c.collect_process_events("sleeper").await;
    let sleeper = listed(&mut c, "sleeper").await.unwrap();
    assert_eq!(sleeper["state"], "closed", "{sleeper}");
    assert_eq!(sleeper["exitCode"], 143, "{sleeper}");
}

#[tokio::test]
async fn a_new_client_resuming_the_session_finds_and_stops_what_the_old_one_started() {
    let (server, mut first, session) = started().await;
    first
        .start_process(sh("orphan", "echo up; exec sleep 30"))
        .await;
    first.wait_for_output("orphan", "up").await;
    first.close().await;

    let (mut second, _) = resume_on_new_connection(&server, &session).await;
    let orphan = listed(&mut second, "orphan").await.expect("still listed");
    assert_eq!(orphan["state"], "running", "{orphan}");
    second
        .request_ok(
            "process/signal",
            json!({"processId": "orphan", "signal": "kill"}),
        )
        .await;
    let read = second
        .request_ok(
            "process/read",
            json!({"processId": "orphan", "afterSeq": 1, "waitMs": 10_000}),
        )
        .await;
    assert_eq!(read["exitCode"], 137, "{read}");
}

// ---------------------------------------------------------------------------------------------
// process/closeStdin

#[tokio::test]
async fn close_stdin_gives_cat_eof_on_a_pipe_and_later_writes_are_refused() {
    let (_server, mut c, _) = started().await;
    let mut params = sh("cat", "cat; echo \"<done $?>\"");
    params["pipeStdin"] = json!(true);
    c.start_process(params).await;
    assert_eq!(c.write_stdin("cat", b"abc", "w1").await, "accepted");
    let answer = c
        .request_ok("process/closeStdin", json!({"processId": "cat"}))
        .await;
    assert_eq!(answer, json!({}));
    assert_eq!(c.write_stdin("cat", b"more", "w2").await, "stdinClosed");
    let again = c
        .request_ok("process/closeStdin", json!({"processId": "cat"}))
        .await;
    assert_eq!(again, json!({}), "closing twice");
    let events = c.collect_process_events("cat").await;
    assert_eq!(output_text(&events, Some("stdout")), "abc<done 0>\n");
    assert_eq!(exit_code(&events), 0);
}

#[tokio::test]
async fn close_stdin_on_a_tty_sends_the_terminals_eof_character() {
    let (_server, mut c, _) = started().await;
    c.start_process(tty(sh(
        "ttycat",
        "stty -echo; echo ready; cat; echo \"<eof seen>\"",
    )))
    .await;
    c.wait_for_output("ttycat", "ready").await;
    assert_eq!(c.write_stdin("ttycat", b"line\n", "w1").await, "accepted");
    c.request_ok("process/closeStdin", json!({"processId": "ttycat"}))
        .await;
    assert_eq!(c.write_stdin("ttycat", b"x", "w2").await, "stdinClosed");
    let events = c.collect_process_events("ttycat").await;
    let text = output_text(&events, Some("pty"));
    assert!(text.contains("line\r\n<eof seen>"), "{text:?}");
    assert_eq!(exit_code(&events), 0);
}

#[tokio::test]
async fn close_stdin_of_a_process_without_stdin_is_empty() {
    let (_server, mut c, _) = started().await;
    c.start_process(sh("nostdin", "exec sleep 30")).await;
    let answer = c
        .request_ok("process/closeStdin", json!({"processId": "nostdin"}))
        .await;
    assert_eq!(answer, json!({}));
    c.request_ok("process/terminate", json!({"processId": "nostdin"}))
        .await;
}

#[test_case(json!({"processId": "ghost"}), INVALID_REQUEST, &["unknown process id ghost"]; "unknown process")]
#[test_case(json!({}), INVALID_PARAMS, &["processId"]; "missing id")]
#[test_case(json!({"processId": null}), INVALID_PARAMS, &["processId"]; "null id")]
#[test_case(json!({"processId": 7}), INVALID_PARAMS, &["processId"]; "ill-typed id")]
#[tokio::test]
async fn close_stdin_bad_input_is_refused(params: Value, code: i64, needles: &[&str]) {
    let (_server, mut c, _) = started().await;
    let err = c.request_err("process/closeStdin", params).await;
    assert_error(&err, code, needles);
}

// ---------------------------------------------------------------------------------------------
// process/signal

#[test_case("hangup", "HUP")]
#[test_case("quit", "QUIT")]
#[test_case("user1", "USR1")]
#[test_case("user2", "USR2")]
#[test_case("terminate", "TERM")]
#[test_case("interrupt", "INT")]
#[tokio::test]
async fn each_signal_name_reaches_a_trap(name: &str, trap: &str) {
    let (_server, mut c, _) = started().await;
    let script = format!(
        "trap 'echo \"<got {trap}>\"; kill $!; exit 3' {trap}; \
         sleep 30 >/dev/null 2>&1 & echo ready; wait"
    );
    c.start_process(sh("trap", &script)).await;
    c.wait_for_output("trap", "ready").await;
    let answer = c
        .request_ok(
            "process/signal",
            json!({"processId": "trap", "signal": name}),
        )
        .await;
    assert_eq!(answer, json!({}));
    let events = c.collect_process_events("trap").await;
    assert!(
        output_text(&events, Some("stdout")).contains(&format!("<got {trap}>")),
        "{events:?}"
    );
    assert_eq!(exit_code(&events), 3);
}

#[tokio::test]
async fn kill_ends_a_process_that_ignores_terminate() {
    let (_server, mut c, _) = started().await;
    c.start_process(sh("stubborn", "trap '' TERM; echo ready; exec sleep 30"))
        .await;
    c.wait_for_output("stubborn", "ready").await;
    c.request_ok(
        "process/signal",
        json!({"processId": "stubborn", "signal": "kill"}),
    )
    .await;
    let events = c.collect_process_events("stubborn").await;
    assert_eq!(exit_code(&events), 137);
}

#[tokio::test]
async fn an_unknown_signal_name_is_refused_listing_the_accepted_ones() {
    let (_server, mut c, _) = started().await;
    let err = c
        .request_err(
            "process/signal",
            json!({"processId": "p", "signal": "bogus"}),
        )
        .await;
    assert_error(
        &err,
        INVALID_PARAMS,
        &[
            "signal",
            "bogus",
            "interrupt",
            "terminate",
            "kill",
            "hangup",
            "quit",
            "user1",
            "user2",
        ],
    );
}

#[tokio::test]
async fn a_new_signal_to_an_unknown_process_is_empty_like_the_reference() {
    let (_server, mut c, _) = started().await;
    let answer = c
        .request_ok(
            "process/signal",
            json!({"processId": "ghost", "signal": "kill"}),
        )
        .await;
    assert_eq!(answer, json!({}));
}

// ---------------------------------------------------------------------------------------------
// timeoutMs

#[tokio::test]
async fn a_deadline_stops_the_process_keeping_its_output_and_says_timed_out() {
    let (_server, mut c, _) = started().await;
    let mut params = sh("slow", "echo partial; exec sleep 30");
    // Long enough for the shell to print first, even on a loaded machine.
    params["timeoutMs"] = json!(1000);
    c.start_process(params).await;
    let events = c.collect_process_events("slow").await;
    assert_eq!(output_text(&events, Some("stdout")), "partial\n");
    assert_eq!(exit_code(&events), 143, "SIGTERM");
    let exited = events
        .iter()
        .find(|e| e["method"] == "process/exited")
        .unwrap();
    assert_eq!(exited["params"]["timedOut"], true, "{exited}");
    let read = c
        .request_ok("process/read", json!({"processId": "slow"}))
        .await;
    assert_eq!(read["timedOut"], true, "{read}");
    assert_eq!(
        unb64(read["chunks"][0]["chunk"].as_str().unwrap()),
        b"partial\n"
    );
}

#[tokio::test]
async fn a_deadline_escalates_to_kill_after_the_terminate_grace() {
    let (_server, mut c, _) = started_with(&["--terminate-grace-ms", "200"]).await;
    let mut params = sh(
        "stubborn",
        "trap '' TERM; echo ready; while :; do sleep 0.05; done",
    );
    // Long enough for the trap to be set first, even on a loaded machine.
    params["timeoutMs"] = json!(1500);
    c.start_process(params).await;
    let events = c.collect_process_events("stubborn").await;
    assert_eq!(exit_code(&events), 137, "SIGKILL: {events:?}");
    let exited = events
        .iter()
        .find(|e| e["method"] == "process/exited")
        .unwrap();
    assert_eq!(exited["params"]["timedOut"], true, "{exited}");
}

#[tokio::test]
async fn a_process_that_ends_before_its_deadline_is_not_timed_out() {
    let (_server, mut c, _) = started().await;
    let mut params = sh("quick", "echo hi");
    params["timeoutMs"] = json!(60_000);
    c.start_process(params).await;
    let events = c.collect_process_events("quick").await;
    assert_eq!(exit_code(&events), 0);
    let exited = events
        .iter()
        .find(|e| e["method"] == "process/exited")
        .unwrap();
    assert_eq!(exited["params"].get("timedOut"), None, "{exited}");
    let read = c
        .request_ok("process/read", json!({"processId": "quick"}))
        .await;
    assert_eq!(read.get("timedOut"), None, "{read}");
}

#[test_case(json!(0), &["timeoutMs must be at least 1"]; "zero")]
#[test_case(json!(-1), &["timeoutMs"]; "negative")]
#[test_case(json!("100"), &["timeoutMs"]; "ill-typed")]
#[test_case(json!(1e30), &["timeoutMs"]; "huge")]
#[test_case(json!(1.5), &["timeoutMs"]; "fractional")]
#[tokio::test]
async fn a_bad_timeout_is_refused_naming_it(timeout: Value, needles: &[&str]) {
    let (_server, mut c, _) = started().await;
    let mut params = sh("t", "true");
    params["timeoutMs"] = timeout;
    let err = c.request_err("process/start", params).await;
    assert_error(&err, INVALID_PARAMS, needles);
    assert_eq!(listed(&mut c, "t").await, None, "nothing started");
}

#[tokio::test]
async fn a_null_timeout_means_none() {
    let (_server, mut c, _) = started().await;
    let mut params = sh("t", "true");
    params["timeoutMs"] = Value::Null;
    c.start_process(params).await;
    let events = c.collect_process_events("t").await;
    assert_eq!(exit_code(&events), 0);
}

// ---------------------------------------------------------------------------------------------
// ptySize and process/resize

#[test_case(Some((132, 40)), "40 132"; "given size")]
#[test_case(None, "24 80"; "default size")]
#[tokio::test]
async fn stty_size_shows_the_size_given_at_start(size: Option<(u64, u64)>, expected: &str) {
    let (_server, mut c, _) = started().await;
    let mut params = tty(sh("size", "stty size"));
    if let Some((cols, rows)) = size {
        params["ptySize"] = json!({"cols": cols, "rows": rows});
    }
    c.start_process(params).await;
    let events = c.collect_process_events("size").await;
    assert_eq!(output_text(&events, Some("pty")).trim(), expected);
}

#[tokio::test]
async fn resize_sends_sigwinch_and_stty_size_shows_the_new_size() {
    let (_server, mut c, _) = started().await;
    let script = "trap 'stty size; kill $!; exit 0' WINCH; \
                  sleep 30 >/dev/null 2>&1 & echo ready; wait";
    c.start_process(tty(sh("winch", script))).await;
    c.wait_for_output("winch", "ready").await;
    let answer = c
        .request_ok(
            "process/resize",
            json!({"processId": "winch", "cols": 100, "rows": 30}),
        )
        .await;
    assert_eq!(answer, json!({}));
    let events = c.collect_process_events("winch").await;
    assert!(
        output_text(&events, Some("pty")).contains("30 100"),
        "{events:?}"
    );
    assert_eq!(exit_code(&events), 0);
}

#[tokio::test]
async fn resize_of_a_process_without_a_terminal_is_refused_naming_that() {
    let (_server, mut c, _) = started().await;
    c.start_process(sh("pipes", "exec sleep 30")).await;
    let err = c
        .request_err(
            "process/resize",
            json!({"processId": "pipes", "cols": 100, "rows": 30}),
        )
        .await;
    assert_error(&err, INVALID_REQUEST, &["pipes", "no terminal"]);
    c.request_ok("process/terminate", json!({"processId": "pipes"}))
        .await;
}

#[test_case(json!({"processId": "ghost", "cols": 80, "rows": 24}), INVALID_REQUEST, &["unknown process id ghost"]; "unknown process")]
#[test_case(json!({"processId": "ghost", "cols": 0, "rows": 24}), INVALID_PARAMS, &["cols", "between 1 and 10000"]; "zero cols")]
#[test_case(json!({"processId": "ghost", "cols": 80, "rows": 10001}), INVALID_PARAMS, &["rows", "between 1 and 10000"]; "too many rows")]
#[test_case(json!({"processId": "ghost", "cols": 70000, "rows": 24}), INVALID_PARAMS, &["cols"]; "cols over u16")]
#[test_case(json!({"processId": "ghost", "cols": -1, "rows": 24}), INVALID_PARAMS, &["cols"]; "negative cols")]
#[test_case(json!({"processId": "ghost", "cols": 1e30, "rows": 24}), INVALID_PARAMS, &["cols"]; "huge cols")]
#[test_case(json!({"processId": "ghost", "cols": null, "rows": 24}), INVALID_PARAMS, &["cols"]; "null cols")]
#[test_case(json!({"processId": "ghost", "cols": "80", "rows": 24}), INVALID_PARAMS, &["cols"]; "ill-typed cols")]
#[test_case(json!({"processId": "ghost", "cols": 80}), INVALID_PARAMS, &["rows"]; "missing rows")]
#[test_case(json!({"cols": 80, "rows": 24}), INVALID_PARAMS, &["processId"]; "missing id")]
#[tokio::test]
async fn resize_bad_input_is_refused(params: Value, code: i64, needles: &[&str]) {
    let (_server, mut c, _) = started().await;
    let err = c.request_err("process/resize", params).await;
    assert_error(&err, code, needles);
}

#[test_case(json!({"cols": 0, "rows": 24}), &["ptySize.cols", "between 1 and 10000"]; "zero cols")]
#[test_case(json!({"cols": 80, "rows": 10001}), &["ptySize.rows", "between 1 and 10000"]; "too many rows")]
#[test_case(json!({"cols": 80}), &["ptySize", "rows"]; "missing rows")]
#[test_case(json!({"cols": -3, "rows": 24}), &["ptySize.cols"]; "negative cols")]
#[test_case(json!({"cols": 1e30, "rows": 24}), &["ptySize.cols"]; "huge cols")]
#[test_case(json!("80x24"), &["ptySize"]; "ill-typed")]
#[tokio::test]
async fn a_bad_pty_size_at_start_is_refused_naming_the_field(size: Value, needles: &[&str]) {
    let (_server, mut c, _) = started().await;
    let mut params = tty(sh("s", "true"));
    params["ptySize"] = size;
    let err = c.request_err("process/start", params).await;
    assert_error(&err, INVALID_PARAMS, needles);
    assert_eq!(listed(&mut c, "s").await, None, "nothing started");
}

#[tokio::test]
async fn a_pty_size_without_a_tty_is_refused() {
    let (_server, mut c, _) = started().await;
    let mut params = sh("s", "true");
    params["ptySize"] = json!({"cols": 80, "rows": 24});
    let err = c.request_err("process/start", params).await;
    assert_error(&err, INVALID_PARAMS, &["ptySize", "tty"]);
}

// ---------------------------------------------------------------------------------------------
// codex remote exec: --timeout, the remote stdin closed at our EOF, the terminal's size

/// `codex remote --url URL ARGS...` with `stdin`, run to completion under the deadline.
async fn remote(url: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_codex"))
        .arg("remote")
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("CODEX_EXEC_SERVER_URL")
        .kill_on_drop(true)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn codex remote");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin).await.unwrap();
    drop(pipe);
    tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("codex remote did not finish in time")
        .unwrap()
}

#[tokio::test]
async fn remote_exec_closes_the_remote_stdin_at_local_eof() {
    let server = Server::start(&[]).await;
    let out = remote(server.url(), &["exec", "--", "cat"], b"to the end").await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to the end");
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test]
async fn remote_exec_timeout_stops_the_command_after_its_output() {
    let server = Server::start(&[]).await;
    let out = remote(
        server.url(),
        &[
            "exec",
            "--timeout",
            "1000ms",
            "--",
            "sh",
            "-c",
            "echo partial; exec sleep 30",
        ],
        b"",
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "partial\n");
    assert_eq!(out.status.code(), Some(143), "SIGTERM at the deadline");
}

#[test_case("0"; "zero")]
#[test_case("5x"; "unknown unit")]
#[test_case("soon"; "not a number")]
#[test_case("99999999999999999h"; "too long")]
#[tokio::test]
async fn remote_exec_refuses_a_bad_timeout_naming_the_flag(value: &str) {
    let server = Server::start(&[]).await;
    let out = remote(
        server.url(),
        &["exec", "--timeout", value, "--", "true"],
        b"",
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--timeout"), "{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
}

#[tokio::test]
async fn remote_exec_tty_sends_the_local_size_at_start_and_after_sigwinch() {
    use codex::pty::{self, PtyMaster};
    use std::os::fd::OwnedFd;
    let server = Server::start(&[]).await;
    let pair = pty::open(40, 132).unwrap();
    let slave = |fd: &OwnedFd| std::process::Stdio::from(fd.try_clone().unwrap());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_codex"))
        .args(["remote", "--url", server.url(), "exec", "--tty", "--"])
        .args([
            "sh",
            "-c",
            "stty size; trap 'stty size; kill $!; exit 4' WINCH; \
             sleep 30 >/dev/null 2>&1 & echo armed; wait",
        ])
        .env_remove("CODEX_EXEC_SERVER_URL")
        .kill_on_drop(true)
        .stdin(slave(&pair.slave))
        .stdout(slave(&pair.slave))
        .stderr(slave(&pair.slave))
        .spawn()
        .unwrap();
    let master = PtyMaster::new(pair.master).unwrap();
    let mut screen = Vec::new();
    let read_until = async |screen: &mut Vec<u8>, needle: &str| {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(screen).contains(needle) {
            let n = tokio::time::timeout(DEADLINE, master.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?}: {:?}", String::from_utf8_lossy(screen)))
                .unwrap();
            assert!(n > 0, "terminal closed before {needle:?}");
            screen.extend_from_slice(&buf[..n]);
        }
    };
    read_until(&mut screen, "armed").await;
    assert!(
        String::from_utf8_lossy(&screen).contains("40 132"),
        "{screen:?}"
    );
    master.set_size(50, 100).unwrap();
    // The test's terminal is not the controlling terminal of `codex remote`, so the kernel
    // does not signal it: send the SIGWINCH a real terminal would.
    let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::WINCH).unwrap();
    read_until(&mut screen, "50 100").await;
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exit in time")
        .unwrap();
    assert_eq!(status.code(), Some(4));
}

// ---------------------------------------------------------------------------------------------
// The client library

#[tokio::test]
async fn the_client_library_lists_signals_resizes_and_closes_stdin() {
    use codex::client::{ClientOptions, ExecServerClient, start_params};
    use codex::protocol::process::{ProcessState, SignalName};
    let server = Server::start(&[]).await;
    let client = ExecServerClient::connect(server.url(), ClientOptions::default())
        .await
        .unwrap();
    let cwd = file_uri(&std::env::temp_dir());
    let script = "trap 'stty size; exit 5' USR2; echo ready; read line; echo \"<$line>\"; \
                  sleep 30 >/dev/null 2>&1 & wait";
    let mut params = start_params("lib", ["sh", "-c", script], cwd);
    params.tty = true;
    let mut handle = client.start(params).await.unwrap();
    let control = handle.control();

    let listed = client.list_processes().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            listed[0].process_id.as_str(),
            listed[0].state,
            listed[0].tty
        ),
        ("lib", ProcessState::Running, true)
    );

    let mut screen = String::new();
    let mut until = async |needle: &str| {
        while !screen.contains(needle) {
            match tokio::time::timeout(DEADLINE, handle.recv())
                .await
                .ok()
                .flatten()
            {
                Some(Ok(codex::client::ProcessEvent::Output { data, .. })) => {
                    screen.push_str(&String::from_utf8_lossy(&data))
                }
                other => panic!("{needle:?} not seen: {other:?} after {screen:?}"),
            }
        }
    };
    until("ready").await;
    control.write(b"typed").await.unwrap();
    control.close_stdin().await.unwrap();
    until("<typed>").await;
    control.resize(120, 33).await.unwrap();
    control.signal(SignalName::User2).await.unwrap();
    until("33 120").await;
}

// ---------------------------------------------------------------------------------------------
// Gaps

/// `cat` with `--retained-output-bytes 1024` fed four 600-byte chunks one at a time (each
/// echoed before the next is written, so each is one chunk of its own): seqs 1..=3 are dropped,
/// 4 is retained.
async fn cat_with_a_forced_gap() -> (Server, Client) {
    let (server, mut c, _) = started_with(&["--retained-output-bytes", "1024"]).await;
    let mut params = process_params("gappy", &["cat"]);
    params["pipeStdin"] = json!(true);
    c.start_process(params).await;
    for (i, letter) in ["a", "b", "c", "d"].iter().enumerate() {
        let chunk = letter.repeat(600);
        let write_id = format!("w{i}");
        assert_eq!(
            c.write_stdin("gappy", chunk.as_bytes(), &write_id).await,
            "accepted"
        );
        c.wait_for_output("gappy", &chunk).await;
    }
    (server, c)
}

fn read_seqs(read: &Value) -> Vec<u64> {
    read["chunks"]
        .as_array()
        .unwrap_or_else(|| panic!("no chunks: {read}"))
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_forced_gap_names_the_dropped_seqs_and_the_data_after_it() {
    let (_server, mut c) = cat_with_a_forced_gap().await;
    let read = c
        .request_ok("process/read", json!({"processId": "gappy", "afterSeq": 0}))
        .await;
    assert_eq!(read["gap"], json!({"fromSeq": 1, "toSeq": 3}), "{read}");
    assert_eq!(read_seqs(&read), vec![4], "{read}");
    assert_eq!(
        unb64(read["chunks"][0]["chunk"].as_str().unwrap()),
        "d".repeat(600).as_bytes()
    );
    // Running: no exit or close seq yet.
    assert_eq!(read.get("exitedSeq"), None, "{read}");
    assert_eq!(read.get("closedSeq"), None, "{read}");
    let read = c
        .request_ok("process/read", json!({"processId": "gappy", "afterSeq": 2}))
        .await;
    assert_eq!(read["gap"], json!({"fromSeq": 3, "toSeq": 3}), "{read}");
    let read = c
        .request_ok("process/read", json!({"processId": "gappy", "afterSeq": 3}))
        .await;
    assert_eq!(read.get("gap"), None, "nothing after 3 was dropped: {read}");
    assert_eq!(read_seqs(&read), vec![4], "{read}");
}

#[tokio::test]
async fn a_gap_then_the_exit_are_told_apart() {
    let (_server, mut c) = cat_with_a_forced_gap().await;
    c.request_ok("process/closeStdin", json!({"processId": "gappy"}))
        .await;
    let closed = c.wait_for_process_event("gappy", "process/closed").await;
    let exited = c.wait_for_process_event("gappy", "process/exited").await;
    let read = c
        .request_ok("process/read", json!({"processId": "gappy", "afterSeq": 0}))
        .await;
    assert_eq!(read["gap"], json!({"fromSeq": 1, "toSeq": 3}), "{read}");
    assert_eq!(read_seqs(&read), vec![4], "{read}");
    assert_eq!(
        read["exitedSeq"], exited["params"]["seq"],
        "{read} {exited}"
    );
    assert_eq!(
        read["closedSeq"], closed["params"]["seq"],
        "{read} {closed}"
    );
    assert_eq!(
        (&read["exitedSeq"], &read["closedSeq"]),
        (&json!(5), &json!(6))
    );
    assert_eq!(read["nextSeq"], 7, "{read}");
}

#[tokio::test]
async fn no_gap_when_nothing_was_dropped_and_exit_seqs_once_known() {
    let (_server, mut c, _) = started().await;
    let mut params = process_params("whole", &["cat"]);
    params["pipeStdin"] = json!(true);
    c.start_process(params).await;
    assert_eq!(c.write_stdin("whole", b"hello", "w1").await, "accepted");
    c.wait_for_output("whole", "hello").await;
    let read = c
        .request_ok("process/read", json!({"processId": "whole", "afterSeq": 0}))
        .await;
    for key in ["gap", "exitedSeq", "closedSeq"] {
        assert_eq!(read.get(key), None, "{key}: {read}");
    }
    c.request_ok("process/closeStdin", json!({"processId": "whole"}))
        .await;
    c.wait_for_process_event("whole", "process/closed").await;
    let read = c
        .request_ok("process/read", json!({"processId": "whole", "afterSeq": 0}))
        .await;
    assert_eq!(read.get("gap"), None, "{read}");
    assert_eq!(read_seqs(&read), vec![1], "{read}");
    assert_eq!(
        (&read["exitedSeq"], &read["closedSeq"]),
        (&json!(2), &json!(3))
    );
}

/// A TCP proxy that can be cut and held shut: while shut, every new connection is dropped at
/// once, so a client keeps retrying its resume until it is opened again.
struct Gate {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pairs: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    async fn start(upstream: String) -> Gate {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let pairs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (open, pairs) = (open.clone(), pairs.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue;
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    pairs.lock().unwrap().push(tokio::spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }));
                }
            }
        });
        Gate {
            addr,
            open,
            pairs,
            task,
        }
    }

    /// Cuts every connection and refuses new ones.
    fn shut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for pair in self.pairs.lock().unwrap().drain(..) {
            pair.abort();
        }
    }

    fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
        self.shut();
    }
}

#[tokio::test]
async fn the_client_library_fails_only_the_process_whose_output_fell_into_a_gap() {
    use codex::client::SequenceError;
    use codex::client::{ClientError, ClientOptions, ExecServerClient, ProcessEvent, start_params};
    // `drop`: while detached, output beyond the retention is dropped (the default, `block`,
    // would keep the process waiting instead: no gap; tests/flow.rs).
    let server = Server::start(&[
        "--retained-output-bytes",
        "1024",
        "--detached-output",
        "drop",
    ])
    .await;
    let gate = Gate::start(server.addr()).await;
    let client =
        ExecServerClient::connect(&format!("ws://{}", gate.addr), ClientOptions::default())
            .await
            .unwrap();
    let dir = TestDir::new();
    let go = dir.join("go");
    let done = dir.mkfifo("done");
    // Four 600-byte writes half a second apart (four chunks: the server reads each long before
    // the next), while the client is cut off; then `done` through a fifo.
    let script = format!(
        "echo ready; while [ ! -e '{go}' ]; do sleep 0.01; done; \
         for l in a b c d; do head -c 600 /dev/zero | tr '\\0' $l; sleep 0.5; done; \
         echo done > '{done}'; exec sleep 30",
        go = go.display(),
        done = done.display()
    );
    let cwd = file_uri(&std::env::temp_dir());
    let mut gappy = client
        .start(start_params(
            "gappy",
            ["sh", "-c", script.as_str()],
            cwd.clone(),
        ))
        .await
        .unwrap();
    let mut quiet = client
        .start(start_params(
            "quiet",
            ["sh", "-c", "echo hi; exec sleep 30"],
            cwd,
        ))
        .await
        .unwrap();
    match tokio::time::timeout(DEADLINE, gappy.recv()).await {
        Ok(Some(Ok(ProcessEvent::Output { seq: 1, data, .. }))) => assert_eq!(data, b"ready\n"),
        other => panic!("no ready: {other:?}"),
    }
    gate.shut();
    std::fs::write(&go, b"").unwrap();
    tokio::time::timeout(DEADLINE, read_fifo(&done))
        .await
        .expect("the writes ended in time");
    gate.open();
    match tokio::time::timeout(DEADLINE, gappy.recv()).await {
        Ok(Some(Err(ClientError::Recovery {
            process_id,
            source: SequenceError::Gap { first_missing, .. },
        }))) => assert_eq!((process_id.as_str(), first_missing), ("gappy", 2)),
        other => panic!("no gap error: {other:?}"),
    }
    // The other process goes on.
    match tokio::time::timeout(DEADLINE, quiet.recv()).await {
        Ok(Some(Ok(ProcessEvent::Output { data, .. }))) => assert_eq!(data, b"hi\n"),
        other => panic!("the quiet process failed too: {other:?}"),
    }
}
