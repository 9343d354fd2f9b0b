//! `codex remote` (the real binary) against a real server: output and exit code, stdin, the URL
//! from the environment, Ctrl-C, a TTY in raw mode (under a pseudo-terminal the test opens), a
//! 64 MiB copy both ways, and a network blink survived visibly.

#[path = "support/chaos_proxy.rs"]
mod chaos_proxy;
mod common;

use std::os::fd::OwnedFd;
use std::process::{Output, Stdio};
use std::time::Duration;

use chaos_proxy::{ChaosProxy, CutPlan, Rng};
use codex::pty::{self, PtyMaster};
use common::{DEADLINE, Server, TestDir};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// `codex remote --url URL ARGS...`, not yet started.
fn remote(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_codex"));
    cmd.arg("remote")
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("CODEX_EXEC_SERVER_URL")
        .kill_on_drop(true);
    cmd
}

/// Runs a command to completion with `stdin`, within `within`.
async fn run(mut cmd: Command, stdin: &[u8], within: Duration) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn codex remote");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin).await.unwrap();
    drop(pipe);
    tokio::time::timeout(within, child.wait_with_output())
        .await
        .expect("codex remote did not finish in time")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sha256_file(path: &std::path::Path) -> String {
    let digest = Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn remote_exec_streams_stdout_and_stderr_and_propagates_the_exit_code() {
    let server = Server::start(&[]).await;
    let cmd = remote(
        server.url(),
        &["exec", "--", "sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    let out = run(cmd, b"", DEADLINE).await;
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(3));
}

#[tokio::test]
async fn remote_exec_forwards_stdin() {
    let server = Server::start(&[]).await;
    let cmd = remote(server.url(), &["exec", "--", "head", "-n", "2"]);
    let out = run(cmd, b"hello\nworld\nnot read\n", DEADLINE).await;
    assert_eq!(text(&out.stdout), "hello\nworld\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[tokio::test]
async fn remote_exec_without_stdin_gives_the_command_eof() {
    let server = Server::start(&[]).await;
    let cmd = remote(server.url(), &["exec", "-n", "--", "wc", "-c"]);
    let out = run(cmd, b"ignored", DEADLINE).await;
    assert_eq!(text(&out.stdout).trim(), "0");
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test]
async fn remote_info_takes_the_url_from_the_environment() {
    let server = Server::start(&[]).await;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_codex"));
    cmd.args(["remote", "info"])
        .env("CODEX_EXEC_SERVER_URL", server.url())
        .kill_on_drop(true);
    let out = run(cmd, b"", DEADLINE).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["platformOs"], "linux");
}

#[tokio::test]
async fn remote_exec_forwards_ctrl_c_as_an_interrupt() {
    let server = Server::start(&[]).await;
    let mut cmd = remote(
        server.url(),
        &["exec", "-n", "--", "sh", "-c", "echo ready; exec sleep 30"],
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("ready in time")
        .unwrap();
    assert_eq!(first.as_deref(), Some("ready"));
    let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exit in time")
        .unwrap();
    assert_eq!(status.code(), Some(130), "SIGINT reached `sleep` remotely");
}

#[tokio::test]
async fn remote_exec_tty_runs_in_raw_mode_and_restores_the_terminal() {
    let server = Server::start(&[]).await;
    let pair = pty::open(pty::DEFAULT_ROWS, pty::DEFAULT_COLS).unwrap();
    let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
    let mut cmd = remote(
        server.url(),
        &[
            "exec",
            "--tty",
            "--",
            "sh",
            "-c",
            r#"test -t 0 && echo is-a-tty; read line; echo "got:$line"; exit 5"#,
        ],
    );
    cmd.stdin(slave(&pair.slave))
        .stdout(slave(&pair.slave))
        .stderr(slave(&pair.slave));
    let mut child = cmd.spawn().unwrap();
    let master = PtyMaster::new(pair.master).unwrap();

    let mut screen = Vec::new();
    read_until(&master, &mut screen, "is-a-tty").await;
    // Typed once: a local terminal left in cooked mode would echo it a second time.
    master.write_all(b"abc\n").await.unwrap();
    read_until(&master, &mut screen, "got:abc").await;
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exit in time")
        .unwrap();
    assert_eq!(status.code(), Some(5));
    let screen = text(&screen);
    assert_eq!(
        screen.matches("abc").count(),
        2,
        "remote echo + got:abc: {screen:?}"
    );

    let mode = rustix::termios::tcgetattr(&pair.slave).unwrap();
    use rustix::termios::LocalModes;
    assert!(
        mode.local_modes
            .contains(LocalModes::ICANON | LocalModes::ECHO),
        "the terminal was not restored: {:?}",
        mode.local_modes
    );
}

/// Reads the terminal until `needle` has appeared.
async fn read_until(master: &PtyMaster, screen: &mut Vec<u8>, needle: &str) {
    let mut buf = [0u8; 4096];
    while !text(screen).contains(needle) {
        let n = tokio::time::timeout(DEADLINE, master.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} on the terminal: {:?}", text(screen)))
            .unwrap();
        assert!(n > 0, "terminal closed before {needle:?}");
        screen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_cp_copies_64_mib_both_ways_with_equal_hashes() {
    let server = Server::start(&[]).await;
    let dir = TestDir::new();
    let local = dir.join("local.bin");
    std::fs::write(&local, Rng::new(64).bytes(64 << 20)).unwrap();
    std::fs::create_dir(dir.join("remote")).unwrap();
    let remote_file = dir.join("remote/up.bin");
    let back = dir.join("back.bin");
    let within = Duration::from_secs(180);

    let up = format!("remote:{}", remote_file.display());
    let out = run(
        remote(server.url(), &["cp", local.to_str().unwrap(), &up]),
        b"",
        within,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("verified"),
        "{}",
        text(&out.stderr)
    );

    let out = run(
        remote(server.url(), &["cp", &up, back.to_str().unwrap()]),
        b"",
        within,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let sent = sha256_file(&local);
    assert_eq!(sha256_file(&remote_file), sent, "uploaded copy");
    assert_eq!(sha256_file(&back), sent, "downloaded copy");
    assert!(text(&out.stderr).contains(&sent), "{}", text(&out.stderr));
}

#[tokio::test]
async fn remote_cp_needs_exactly_one_remote_side() {
    let server = Server::start(&[]).await;
    let out = run(remote(server.url(), &["cp", "/a", "/b"]), b"", DEADLINE).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("remote:PATH"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn remote_ls_and_stat_show_a_remote_directory() {
    let server = Server::start(&[]).await;
    let dir = TestDir::new();
    std::fs::write(dir.join("f.txt"), b"12345").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    let path = dir.path().to_str().unwrap();
    let out = run(remote(server.url(), &["ls", path]), b"", DEADLINE).await;
    assert_eq!(text(&out.stdout), "f.txt\nsub/\n");
    let file = dir.join("f.txt");
    let out = run(
        remote(server.url(), &["stat", file.to_str().unwrap()]),
        b"",
        DEADLINE,
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("type: file") && stdout.contains("size: 5"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_exec_survives_a_network_blink_and_says_so() {
    let server = Server::start(&["--retained-output-bytes", "8388608"]).await;
    let proxy = ChaosProxy::start(
        &server.addr(),
        CutPlan {
            cuts: 1,
            max_bytes: 300 << 10,
            early_max_bytes: 300 << 10,
            first_min_bytes: 100 << 10,
            seed: 3,
        },
    )
    .await;
    let cmd = remote(&proxy.url(), &["exec", "-n", "--", "seq", "1", "200000"]);
    let out = run(cmd, b"", Duration::from_secs(60)).await;
    assert_eq!(proxy.cuts(), 1);
    let expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert!(
        text(&out.stdout) == expected,
        "stdout differs after the blink"
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("reconnecting…"), "{stderr}");
    assert!(stderr.contains("reconnected"), "{stderr}");
    assert_eq!(out.status.code(), Some(0));
}
