//! The client library over a child's stdio (`codex exec-server --listen stdio`): it runs
//! processes like over a WebSocket; dropping the client ends the child's process group and,
//! through the server's own shutdown, every process it manages; a child that dies fails the
//! session at once (stdio cannot be reopened).

mod common;

use std::time::Duration;

use codex::client::{ClientError, ClientOptions, ExecServerClient, ProcessEvent, start_params};
use common::{DEADLINE, Pidfd, file_uri};

fn stdio_server() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_codex"));
    cmd.args(["exec-server", "--listen", "stdio"]);
    cmd
}

/// Starts `echo $PPID $$; exec sleep 60` and returns its handle, the server's pid and its own.
async fn sleeper(client: &ExecServerClient) -> (codex::client::ProcessHandle, i32, i32) {
    let params = start_params(
        "sleeper",
        ["sh", "-c", "echo $PPID $$; exec sleep 60"],
        file_uri(&std::env::temp_dir()),
    );
    let mut handle = client.start(params).await.expect("start");
    let line = match tokio::time::timeout(DEADLINE, handle.recv()).await {
        Ok(Some(Ok(ProcessEvent::Output { data, .. }))) => String::from_utf8(data).unwrap(),
        other => panic!("expected the pids, got {other:?}"),
    };
    let mut pids = line.split_whitespace().map(|p| p.parse::<i32>().unwrap());
    (handle, pids.next().unwrap(), pids.next().unwrap())
}

#[tokio::test]
async fn stdio_client_runs_a_process_and_its_drop_ends_the_server_and_its_processes() {
    let client = ExecServerClient::spawn_stdio(stdio_server(), ClientOptions::default())
        .await
        .expect("spawn the stdio server");
    let info = client.environment().await.unwrap();
    assert_eq!(info.platform_os, "linux");
    let (handle, server_pid, sleeper_pid) = sleeper(&client).await;
    let server = Pidfd::open(server_pid).expect("server running");
    let sleeper = Pidfd::open(sleeper_pid).expect("sleeper running");
    drop(handle);
    drop(client);
    server.wait_exit(DEADLINE, "the stdio server").await;
    sleeper.wait_exit(DEADLINE, "the server's process").await;
}

#[tokio::test]
async fn stdio_server_death_fails_the_session_without_retrying() {
    let client = ExecServerClient::spawn_stdio(stdio_server(), ClientOptions::default())
        .await
        .unwrap();
    let (mut handle, server_pid, sleeper_pid) = sleeper(&client).await;
    let pid = rustix::process::Pid::from_raw(server_pid).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let failure = tokio::time::timeout(Duration::from_secs(5), handle.recv())
        .await
        .expect("the handle fails at once, without a 25 s resume");
    assert!(
        matches!(failure, Some(Err(ClientError::SessionLost { .. }))),
        "{failure:?}"
    );
    // A SIGKILLed server could not stop its processes; do it for it.
    let sleeper = rustix::process::Pid::from_raw(sleeper_pid).unwrap();
    let _ = rustix::process::kill_process_group(sleeper, rustix::process::Signal::KILL);
}

/// Over stdio an `fs/readFile` answer sent in pieces is one line like any other.
#[tokio::test]
async fn stdio_read_file_of_a_megabyte_arrives_whole() {
    use base64::Engine as _;
    let client = ExecServerClient::spawn_stdio(stdio_server(), ClientOptions::default())
        .await
        .expect("spawn the stdio server");
    let dir = common::TestDir::new();
    let path = dir.join("mib.bin");
    let data: Vec<u8> = (0..(1u32 << 20) + 7)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let answer: serde_json::Value = client
        .call("fs/readFile", &serde_json::json!({"path": file_uri(&path)}))
        .await
        .expect("fs/readFile");
    let back = base64::engine::general_purpose::STANDARD
        .decode(answer["dataBase64"].as_str().expect("dataBase64"))
        .unwrap();
    assert!(back == data, "read bytes differ");
    // And the session goes on.
    client.environment().await.expect("a request after it");
}
