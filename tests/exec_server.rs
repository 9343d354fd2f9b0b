//! Behaviour of `codex exec-server` as a client sees it, over a real socket: the event sequence,
//! retention, `process/read` long-polls, stdin, PTYs, signals, sessions and resume, the
//! environment policy, the stdio transport and the HTTP side of the listener.
//!
//! Bad input (malformed frames, wrong params, protocol-state errors) is in `bad_input.rs`; the
//! harness is `common/mod.rs`. Every test starts its own server.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use test_case::test_case;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

const MIB: usize = 1024 * 1024;

/// Reads every retained chunk of `process_id` after `after_seq`, page by page, until a read
/// returns no chunk. Returns the chunks and the last answer.
async fn read_retained(
    client: &mut Client,
    process_id: &str,
    after_seq: i64,
) -> (Vec<Value>, Value) {
    let mut after = after_seq;
    let mut chunks = Vec::new();
    loop {
        let answer = client
            .request_ok(
                "process/read",
                json!({"processId": process_id, "afterSeq": after}),
            )
            .await;
        let page = answer["chunks"]
            .as_array()
            .unwrap_or_else(|| panic!("read without chunks: {answer}"))
            .clone();
        if page.is_empty() {
            return (chunks, answer);
        }
        for chunk in &page {
            let seq = seq_of_chunk(chunk);
            assert!(
                seq > after,
                "process/read afterSeq {after} returned seq {seq}"
            );
            after = seq;
        }
        chunks.extend(page);
    }
}

fn seq_of_chunk(chunk: &Value) -> i64 {
    chunk["seq"]
        .as_i64()
        .unwrap_or_else(|| panic!("chunk without seq: {chunk}"))
}

fn chunk_bytes(chunk: &Value) -> Vec<u8> {
    unb64(
        chunk["chunk"]
            .as_str()
            .unwrap_or_else(|| panic!("chunk without data: {chunk}")),
    )
}

fn find_event<'a>(events: &'a [Value], method: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["method"] == method)
        .unwrap_or_else(|| panic!("no {method} among {events:?}"))
}

/// The seq of the first output event whose chunk contains `needle`.
fn output_seq_containing(events: &[Value], needle: &str) -> i64 {
    events
        .iter()
        .find(|e| {
            e["method"] == "process/output"
                && String::from_utf8_lossy(&unb64(e["params"]["chunk"].as_str().unwrap()))
                    .contains(needle)
        })
        .map(seq_of)
        .unwrap_or_else(|| panic!("no output chunk containing {needle:?} in {events:?}"))
}

async fn started_client(server: &Server) -> (Client, String) {
    let mut client = server.connect().await;
    let session = client.initialize().await;
    (client, session)
}

/// Which transport a test talks over.
#[derive(Debug, Clone, Copy)]
enum Over {
    /// A WebSocket to a server started with these flags.
    WebSocket(&'static [&'static str]),
    /// The stdio of a `--listen stdio` server.
    Stdio,
}

/// A running server of either kind; it ends when this is dropped.
enum Running {
    WebSocket { _server: Server },
    Stdio { _server: StdioServer },
}

/// A server and an initialized client on it, over `over`.
async fn serve(over: Over) -> (Running, Client) {
    match over {
        Over::WebSocket(flags) => {
            let server = Server::start(flags).await;
            let (client, _) = started_client(&server).await;
            (Running::WebSocket { _server: server }, client)
        }
        Over::Stdio => {
            let (server, mut client) = StdioServer::start(&[]).await;
            client.initialize().await;
            (Running::Stdio { _server: server }, client)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events and retention

/// The thread count is a choice, not a requirement: three threads serve like the default (a case
/// of `output_exit_closed_share_one_sequence`), and zero is refused before anything starts,
/// naming the flag.
#[tokio::test]
async fn worker_threads_flag_of_zero_is_refused_naming_it() {
    let out = std::process::Command::new(server_binary())
        .args(["exec-server", "--worker-threads", "0"])
        .output()
        .expect("run codex");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--worker-threads"), "{stderr}");
}

#[test_case(Over::WebSocket(&[]) ; "over websocket")]
#[test_case(Over::WebSocket(&["--worker-threads", "3"]) ; "over websocket with three worker threads")]
#[test_case(Over::Stdio ; "over stdio")]
#[tokio::test]
async fn output_exit_closed_share_one_sequence(over: Over) {
    let (_server, mut client) = serve(over).await;
    let c = &mut client;
    let started = c
        .start_process(sh("p1", "echo out; echo err >&2; exit 3"))
        .await;
    assert_eq!(
        started["processId"], "p1",
        "process/start answer: {started}"
    );
    assert_eq!(
        started["sandboxType"], "none",
        "no sandbox asked: {started}"
    );

    // collect_process_events returns only once seqs 1..=closed all arrived.
    let events = c.collect_process_events("p1").await;
    let seqs: Vec<i64> = events.iter().map(seq_of).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "one sequence from 1: {events:?}"
    );
    assert!(
        c.duplicate_events().is_empty(),
        "no seq twice: {:?}",
        c.duplicate_events()
    );
    assert_eq!(
        events.last().unwrap()["method"],
        "process/closed",
        "closed is last: {events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["method"] == "process/closed")
            .count(),
        1
    );
    assert_eq!(exit_code(&events), 3);
    assert_eq!(
        find_event(&events, "process/exited")["params"]["sandboxDenied"],
        false
    );
    assert_eq!(output_text(&events, Some("stdout")), "out\n");
    assert_eq!(output_text(&events, Some("stderr")), "err\n");

    // process/read tells the same story from the log.
    let read = c
        .request_ok("process/read", json!({"processId": "p1", "afterSeq": 0}))
        .await;
    let outputs: Vec<&Value> = events
        .iter()
        .filter(|e| e["method"] == "process/output")
        .collect();
    let chunks = read["chunks"].as_array().expect("chunks");
    assert_eq!(
        chunks.len(),
        outputs.len(),
        "read {read} vs notifications {outputs:?}"
    );
    for (chunk, event) in chunks.iter().zip(&outputs) {
        assert_eq!(chunk["seq"], event["params"]["seq"]);
        assert_eq!(chunk["stream"], event["params"]["stream"]);
        assert_eq!(chunk["chunk"], event["params"]["chunk"]);
    }
    let closed_seq = seq_of(events.last().unwrap());
    assert_eq!(
        read["nextSeq"],
        json!(closed_seq + 1),
        "nextSeq is past the close: {read}"
    );
    assert_eq!(read["exited"], true);
    assert_eq!(read["exitCode"], 3);
    assert_eq!(read["closed"], true);
}

#[tokio::test]
async fn echo_output_arrives_as_base64_chunk() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    c.start_process(sh("hi", "echo hi")).await;
    let events = c.collect_process_events("hi").await;
    let chunks: Vec<&Value> = events
        .iter()
        .filter(|e| e["method"] == "process/output")
        .map(|e| &e["params"]["chunk"])
        .collect();
    assert_eq!(
        chunks,
        vec![&json!("aGkK")],
        "README: `echo hi` gives chunk aGkK; events {events:?}"
    );
    assert_eq!(
        find_event(&events, "process/output")["params"]["stream"],
        "stdout"
    );
}

#[tokio::test]
async fn late_output_after_parent_exit_is_delivered_before_closed() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    c.start_process(sh("late", "(sleep 1; echo late) & echo early"))
        .await;

    // The parent exits at once; a background child still holds stdout for a second.
    c.wait_for_process_event("late", "process/exited").await;
    let read = c
        .request_ok("process/read", json!({"processId": "late", "afterSeq": 0}))
        .await;
    assert_eq!(read["exited"], true, "{read}");
    assert_eq!(
        read["closed"], false,
        "a child still holds the pipe, so not closed yet: {read}"
    );

    let events = c.collect_process_events("late").await;
    let exited = seq_of(find_event(&events, "process/exited"));
    let late = output_seq_containing(&events, "late");
    let closed = seq_of(find_event(&events, "process/closed"));
    assert!(
        exited < late,
        "late output (seq {late}) comes after exited (seq {exited})"
    );
    assert!(
        late < closed,
        "closed (seq {closed}) comes after the late output (seq {late})"
    );
    assert_eq!(closed, seq_of(events.last().unwrap()));
    assert_eq!(output_text(&events, Some("stdout")), "early\nlate\n");
    assert_eq!(exit_code(&events), 0);
}

#[tokio::test]
async fn retention_drops_oldest_chunks_without_renumbering() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    let lines = 400_000;
    let expected: String = (1..=lines).map(|i| format!("{i}\n")).collect();
    assert!(expected.len() > 2 * MIB);

    c.start_process(process_params(
        "big",
        &["/usr/bin/seq", "1", &lines.to_string()],
    ))
    .await;
    let events = c.collect_process_events("big").await;
    assert_eq!(
        output_text(&events, Some("stdout")),
        expected,
        "notifications carry everything"
    );
    let exited_seq = seq_of(find_event(&events, "process/exited"));
    let closed_seq = seq_of(find_event(&events, "process/closed"));
    let by_seq: HashMap<i64, &Value> = events.iter().map(|e| (seq_of(e), e)).collect();
    let max_chunk = events
        .iter()
        .filter(|e| e["method"] == "process/output")
        .map(|e| unb64(e["params"]["chunk"].as_str().unwrap()).len())
        .max()
        .unwrap();

    let (chunks, last) = read_retained(&mut c, "big", 0).await;
    assert_eq!(last["closed"], true);
    let first = seq_of_chunk(&chunks[0]);
    assert!(
        first > 1,
        "the oldest chunks are dropped, so the first retained seq is > 1, got {first}"
    );

    // Seqs are the original ones: each retained chunk is the notification with that seq, and
    // the retained chunks are every output seq from the first retained one to the close.
    let mut retained = Vec::new();
    for chunk in &chunks {
        let seq = seq_of_chunk(chunk);
        let event = by_seq
            .get(&seq)
            .unwrap_or_else(|| panic!("retained seq {seq} was never notified"));
        assert_eq!(event["method"], "process/output", "seq {seq} renumbered?");
        assert_eq!(
            chunk["chunk"], event["params"]["chunk"],
            "seq {seq} has other bytes than its notification"
        );
        retained.extend(chunk_bytes(chunk));
    }
    let retained_seqs: Vec<i64> = chunks.iter().map(seq_of_chunk).collect();
    let contiguous: Vec<i64> = (first..closed_seq).filter(|s| *s != exited_seq).collect();
    assert_eq!(
        retained_seqs, contiguous,
        "retained seqs are contiguous after the first"
    );

    let limit = MIB;
    assert!(
        retained.len() <= limit + max_chunk,
        "retained {} bytes, more than 1 MiB + one chunk ({max_chunk})",
        retained.len()
    );
    assert!(
        retained.len() + max_chunk >= limit,
        "retained only {} bytes: the last 1 MiB must stay readable (chunk size {max_chunk})",
        retained.len()
    );
    assert!(
        expected.as_bytes().ends_with(&retained),
        "retained bytes are the tail of the output; they end with {:?}",
        String::from_utf8_lossy(&retained[retained.len().saturating_sub(40)..])
    );
}

// ---------------------------------------------------------------------------------------------
// process/read and process/write

#[test_case(Over::WebSocket(&[]) ; "over websocket")]
#[test_case(Over::Stdio ; "over stdio")]
#[tokio::test]
async fn read_long_poll_wakes_on_output(over: Over) {
    let (_server, mut client) = serve(over).await;
    let c = &mut client;
    let mut params = sh("poll", "read line; echo \"got $line\"");
    params["pipeStdin"] = json!(true);
    c.start_process(params).await;

    let read = c
        .send_request(
            "process/read",
            json!({"processId": "poll", "afterSeq": 0, "waitMs": 10000}),
        )
        .await;
    // A round trip on the same connection: the read has reached the server and is still parked.
    c.request_ok("environment/info", json!({})).await;
    assert!(
        !c.has_answer(read),
        "the long-poll answered before there was anything to read"
    );

    let written = Instant::now();
    assert_eq!(c.write_stdin("poll", b"hello\n", "w1").await, "accepted");
    let answer = c.await_answer(read).await.expect("process/read");
    let waited = written.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "the long-poll woke {waited:?} after the output, not promptly"
    );
    let chunks = answer["chunks"].as_array().expect("chunks");
    assert!(!chunks.is_empty(), "woke without the chunk: {answer}");
    assert_eq!(chunks[0]["seq"], 1);
    assert_eq!(chunks[0]["stream"], "stdout");
    let text: Vec<u8> = chunks.iter().flat_map(chunk_bytes).collect();
    assert!(
        String::from_utf8_lossy(&text).starts_with("got"),
        "chunk {:?}",
        String::from_utf8_lossy(&text)
    );
    let events = c.collect_process_events("poll").await;
    assert_eq!(output_text(&events, Some("stdout")), "got hello\n");
}

#[tokio::test]
async fn long_poll_read_does_not_delay_other_requests() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    c.start_process(sh("quiet", "exec sleep 3")).await;
    let read = c
        .send_request(
            "process/read",
            json!({"processId": "quiet", "afterSeq": 0, "waitMs": 10000}),
        )
        .await;

    let asked = Instant::now();
    let info = c.request_ok("environment/info", json!(null)).await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "environment/info waited {:?} behind a long-poll",
        asked.elapsed()
    );
    assert_eq!(info["platformOs"], "linux", "{info}");
    assert!(!c.has_answer(read), "the long-poll should still be waiting");

    // The exit is "something new": terminating wakes the read.
    let term = c
        .request_ok("process/terminate", json!({"processId": "quiet"}))
        .await;
    assert_eq!(term, json!({"running": true}));
    let answer = c.await_answer(read).await.expect("process/read");
    assert_eq!(answer["exited"], true, "{answer}");
    c.collect_process_events("quiet").await;
}

#[test_case(Over::WebSocket(&[]) ; "over websocket")]
#[test_case(Over::Stdio ; "over stdio")]
#[tokio::test]
async fn write_dedupes_repeated_write_id(over: Over) {
    let (_server, mut client) = serve(over).await;
    let c = &mut client;
    let mut params = process_params("head", &["/usr/bin/head", "-n", "2"]);
    params["pipeStdin"] = json!(true);
    c.start_process(params).await;

    assert_eq!(c.write_stdin("head", b"one\n", "w1").await, "accepted");
    assert_eq!(
        c.write_stdin("head", b"one\n", "w1").await,
        "accepted",
        "a retried writeId is accepted"
    );
    assert_eq!(c.write_stdin("head", b"two\n", "w2").await, "accepted");
    let events = c.collect_process_events("head").await;
    assert_eq!(
        output_text(&events, Some("stdout")),
        "one\ntwo\n",
        "the repeated writeId was written again"
    );
    assert_eq!(exit_code(&events), 0);
}

#[tokio::test]
async fn write_without_pipe_stdin_reports_stdin_closed() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    // Without pipeStdin the child's stdin is at EOF: cat ends at once, then the shell lingers.
    c.start_process(sh("nostdin", "cat; echo eof; exec sleep 5"))
        .await;
    c.wait_for_output("nostdin", "eof\n").await;

    assert_eq!(
        c.write_stdin("nostdin", b"data\n", "w1").await,
        "stdinClosed"
    );
    let term = c
        .request_ok("process/terminate", json!({"processId": "nostdin"}))
        .await;
    assert_eq!(term, json!({"running": true}));
    let events = c.collect_process_events("nostdin").await;
    assert_eq!(
        output_text(&events, None),
        "eof\n",
        "nothing was written to the child"
    );
}

// ---------------------------------------------------------------------------------------------
// PTY, terminate, signal

#[test_case(Over::WebSocket(&[]) ; "over websocket")]
#[test_case(Over::Stdio ; "over stdio")]
#[tokio::test]
async fn tty_process_sees_a_terminal(over: Over) {
    let (_server, mut client) = serve(over).await;
    let c = &mut client;
    let mut params = sh("tty", "test -t 0 && test -t 1 && echo tty");
    params["tty"] = json!(true);
    c.start_process(params).await;
    let events = c.collect_process_events("tty").await;
    let outputs: Vec<&Value> = events
        .iter()
        .filter(|e| e["method"] == "process/output")
        .collect();
    assert!(!outputs.is_empty(), "no output: {events:?}");
    for o in &outputs {
        assert_eq!(o["params"]["stream"], "pty", "TTY output stream: {o}");
    }
    let text = output_text(&events, Some("pty"));
    assert!(
        text.contains("tty"),
        "stdin and stdout should be a terminal, output {text:?}"
    );
    assert_eq!(exit_code(&events), 0);
}

#[tokio::test]
async fn tty_process_reads_written_input() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    let mut params = sh("ttyin", "stty -echo; echo ready; read x; echo \"in:$x\"");
    params["tty"] = json!(true);
    c.start_process(params).await;
    c.wait_for_output("ttyin", "ready").await;
    assert_eq!(c.write_stdin("ttyin", b"abc\n", "w1").await, "accepted");
    let events = c.collect_process_events("ttyin").await;
    assert!(
        output_text(&events, Some("pty")).contains("in:abc"),
        "{:?}",
        output_text(&events, None)
    );
}

#[tokio::test]
async fn terminate_kills_the_whole_process_group() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    c.start_process(sh("group", "sleep 30 & echo $!; wait"))
        .await;
    c.wait_for_output("group", "\n").await;
    let text = output_text(&c.process_events("group"), Some("stdout"));
    let grandchild: i32 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("expected a pid, got {text:?}"));
    let pidfd = Pidfd::open(grandchild).expect("the backgrounded sleep is running");

    let term = c
        .request_ok("process/terminate", json!({"processId": "group"}))
        .await;
    assert_eq!(term, json!({"running": true}));
    pidfd
        .wait_exit(
            DEADLINE,
            "the backgrounded grandchild after process/terminate",
        )
        .await;
    let events = c.collect_process_events("group").await;
    // The shell dies of the SIGTERM, well within the grace: 128 + 15, never the SIGKILL's 137.
    assert_eq!(exit_code(&events), 143);
}

#[tokio::test]
async fn terminate_after_closed_reports_not_running() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    c.start_process(process_params("done", &["/bin/true"]))
        .await;
    c.collect_process_events("done").await;
    let term = c
        .request_ok("process/terminate", json!({"processId": "done"}))
        .await;
    assert_eq!(term, json!({"running": false}));
}

#[test_case(Over::WebSocket(&[]) ; "over websocket")]
#[test_case(Over::Stdio ; "over stdio")]
#[tokio::test]
async fn interrupt_delivers_sigint(over: Over) {
    let (_server, mut client) = serve(over).await;
    let c = &mut client;
    c.start_process(sh(
        "int",
        "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.1; done",
    ))
    .await;
    c.wait_for_output("int", "ready\n").await;
    let answer = c
        .request_ok(
            "process/signal",
            json!({"processId": "int", "signal": "interrupt"}),
        )
        .await;
    assert_eq!(answer, json!({}));
    let events = c.collect_process_events("int").await;
    assert!(
        output_text(&events, Some("stdout")).contains("got-int"),
        "{events:?}"
    );
    assert_eq!(exit_code(&events), 7);
}

#[tokio::test]
async fn signal_to_unknown_process_answers_empty() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    let answer = c
        .request_ok(
            "process/signal",
            json!({"processId": "ghost", "signal": "interrupt"}),
        )
        .await;
    assert_eq!(answer, json!({}));
}

// ---------------------------------------------------------------------------------------------
// Sessions

#[tokio::test]
async fn session_survives_disconnect_and_resumes_without_loss() {
    let server = Server::start(&[]).await;
    let dir = TestDir::new();
    let go = dir.mkfifo("go");
    let done = dir.mkfifo("done");
    // Lines 1-5 while attached; 6-30 once the test has dropped the connection (it opens `go`
    // after the drop, and `done` says they are all written); 31-40 after the resume's write.
    let script = format!(
        r#"i=1
while [ $i -le 5 ]; do echo line-$i; i=$((i+1)); done
read x < '{go}'
while [ $i -le 30 ]; do echo line-$i; i=$((i+1)); done
echo done > '{done}'
read y
while [ $i -le 40 ]; do echo line-$i; i=$((i+1)); done"#,
        go = go.display(),
        done = done.display()
    );
    let expected: String = (1..=40).map(|i| format!("line-{i}\n")).collect();

    let mut a = server.connect().await;
    let session = a.initialize().await;
    let mut params = sh("lines", &script);
    params["pipeStdin"] = json!(true);
    a.start_process(params).await;
    a.wait_for_output("lines", "line-5\n").await;
    let seen_on_a = a.process_events("lines");
    let mut last_seen = 0;
    for e in &seen_on_a {
        if seq_of(e) == last_seen + 1 {
            last_seen += 1;
        }
    }
    drop(a); // the connection drops without a close frame

    write_fifo(&go, b"go\n").await;
    assert_eq!(read_fifo(&done).await, b"done\n");

    let (mut b, resumed) = resume_on_new_connection(&server, &session).await;
    assert_eq!(
        resumed["sessionId"],
        json!(session),
        "resume keeps the session id"
    );
    assert_eq!(
        b.write_stdin("lines", b"y\n", "after-resume").await,
        "accepted"
    );

    // Everything after what A saw, from the log.
    let mut from_reads: BTreeMap<i64, Value> = BTreeMap::new();
    let mut after = last_seen;
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(
            Instant::now() < deadline,
            "process/read never reported the close"
        );
        let answer = b
            .request_ok(
                "process/read",
                json!({"processId": "lines", "afterSeq": after, "waitMs": 2000}),
            )
            .await;
        let chunks = answer["chunks"].as_array().unwrap().clone();
        for chunk in &chunks {
            after = after.max(seq_of_chunk(chunk));
            from_reads.insert(seq_of_chunk(chunk), chunk.clone());
        }
        if answer["closed"] == true && chunks.is_empty() {
            break;
        }
    }
    let closed = b.wait_for_process_event("lines", "process/closed").await;
    let closed_seq = seq_of(&closed);
    let on_b = b.process_events("lines");
    let exited = b.wait_for_process_event("lines", "process/exited").await;
    assert_eq!(exited["params"]["exitCode"], 0);
    assert!(
        b.duplicate_events().is_empty(),
        "duplicated notifications on B: {:?}",
        b.duplicate_events()
    );

    // Reassemble by seq from the three sources; where they overlap they must agree.
    let mut assembled: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    let mut put = |seq: i64, bytes: Vec<u8>, source: &str| {
        if let Some(existing) = assembled.get(&seq) {
            assert_eq!(
                existing, &bytes,
                "seq {seq} differs between sources ({source})"
            );
        }
        assembled.insert(seq, bytes);
    };
    for e in seen_on_a
        .iter()
        .chain(&on_b)
        .filter(|e| e["method"] == "process/output")
    {
        put(
            seq_of(e),
            unb64(e["params"]["chunk"].as_str().unwrap()),
            "notification",
        );
    }
    for (seq, chunk) in &from_reads {
        put(*seq, chunk_bytes(chunk), "process/read");
    }
    let exited_seq = seq_of(&exited);
    for seq in 1..closed_seq {
        assert!(
            seq == exited_seq || assembled.contains_key(&seq),
            "seq {seq} is missing: neither notified nor readable after the resume"
        );
    }
    assert!(
        from_reads.keys().any(|s| *s > last_seen),
        "output produced while detached must be readable after the resume"
    );
    let text: Vec<u8> = assembled.values().flatten().copied().collect();
    assert_eq!(
        String::from_utf8_lossy(&text),
        expected,
        "reassembled output has gaps or duplicates"
    );
}

#[tokio::test]
async fn detached_session_expires_and_kills_processes() {
    let server = Server::start(&["--detached-session-ttl-ms", "500"]).await;
    let mut a = server.connect().await;
    let session = a.initialize().await;
    a.start_process(sh("sleeper", "echo $$; exec sleep 30"))
        .await;
    a.wait_for_output("sleeper", "\n").await;
    let text = output_text(&a.process_events("sleeper"), Some("stdout"));
    let pid: i32 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("expected a pid, got {text:?}"));
    let pidfd = Pidfd::open(pid).expect("the process is running");

    drop(a);
    assert!(
        !pidfd.has_exited(),
        "a detached session's processes keep running until the TTL"
    );
    pidfd
        .wait_exit(DEADLINE, "the process of an expired detached session")
        .await;

    let mut b = server.connect().await;
    let (code, message) = b
        .initialize_resume(&session)
        .await
        .expect_err("the session has expired");
    assert_eq!(code, INVALID_REQUEST, "{message}");
    assert!(message.contains("unknown session id"), "message: {message}");
    assert!(
        message.contains(&session),
        "message names the id: {message}"
    );
    // A failed initialize may be retried on the same connection.
    let fresh = b.initialize().await;
    assert_ne!(fresh, session);
}

/// A peer that vanished without closing (no FIN: a suspended laptop, a pulled cable) answers no
/// ping; after two ping intervals its connection ends and its session, processes and all, can
/// be resumed elsewhere. Before that, the resume is refused as attached (the control).
#[tokio::test]
async fn silent_peer_is_dropped_after_two_ping_intervals_and_its_session_resumes() {
    let server = Server::start(&["--ping-interval-ms", "300"]).await;
    let (mut silent, session) = started_client(&server).await;
    silent.start_process(sh("kept", "exec sleep 30")).await;
    // From here on `silent` neither reads nor writes: the server's pings go unanswered.
    let quiet_since = Instant::now();

    let mut b = server.connect().await;
    let (code, _) = b
        .initialize_resume(&session)
        .await
        .expect_err("the silent peer is still attached at first");
    assert_eq!(code, SESSION_ATTACHED);

    // The server hangs up on the silent peer (watched without reading, which would answer the
    // pings); not before two intervals (600 ms) of silence.
    silent.wait_for_hang_up_without_reading().await;
    assert!(
        quiet_since.elapsed() >= Duration::from_millis(500),
        "dropped too early: {:?}",
        quiet_since.elapsed()
    );
    // The session is detached with that (a retry covers the server still getting there). On a
    // new connection: `b` sat silent through those intervals too, so the server may have
    // dropped it as well.
    drop(b);
    let mut b = server.connect().await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        match b.initialize_resume(&session).await {
            Ok(_) => break,
            Err((SESSION_ATTACHED, _)) if Instant::now() < deadline => continue,
            Err(e) => panic!("resume after the silent peer was dropped: {e:?}"),
        }
    }
    let read = b
        .request_ok("process/read", json!({"processId": "kept", "afterSeq": 0}))
        .await;
    assert_eq!(read["exited"], false, "the process lives on: {read}");
    // And the server did close the silent peer's socket.
    silent.wait_for_close().await;
    b.request_ok("process/terminate", json!({"processId": "kept"}))
        .await;
}

/// A peer that is idle but alive (its WebSocket answers pings) stays connected for many ping
/// intervals: silence means no frame at all, not no requests.
#[tokio::test]
async fn idle_peer_that_answers_pings_stays_connected() {
    let server = Server::start(&["--ping-interval-ms", "100"]).await;
    let (mut c, _) = started_client(&server).await;
    // Reading (which answers pings) and nothing else, for ten intervals: the idleness is the
    // scenario.
    assert!(
        c.read_idly_for(Duration::from_secs(1)).await,
        "the server closed an idle, live connection"
    );
    assert!(
        c.pings() >= 5,
        "the server pinged {} times in ten intervals",
        c.pings()
    );
    c.request_ok("environment/info", json!({})).await;
}

/// A large message arriving slowly is not silence: a peer whose 1 MiB `fs/writeFile` frame takes
/// several silence limits to arrive (sending no whole frame, answering no ping meanwhile) is
/// kept, and gets its answer.
#[tokio::test]
async fn slow_large_frame_is_not_taken_for_silence() {
    let server = Server::start(&["--ping-interval-ms", "200"]).await;
    let dir = TestDir::new();
    let path = dir.join("slow.bin");
    let (mut c, _) = started_client(&server).await;

    let data = vec![b'q'; 1 << 20];
    let text = json!({"id": "slow", "method": "fs/writeFile",
                      "params": {"path": file_uri(&path), "dataBase64": b64(&data)}})
    .to_string();
    // One masked text frame (RFC 6455 §5.2), written by hand so it can be sent slowly: 15 pieces
    // 100 ms apart, 1.5 s in all, past three silence limits (2 × 200 ms).
    let mask = [0x5a, 0xc3, 0x17, 0x9e];
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(text.len() as u64).to_be_bytes());
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    for piece in frame.chunks(frame.len().div_ceil(15)) {
        c.write_raw_bytes(piece).await;
        // The slowness is the scenario.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = c.await_raw_answer(&json!("slow")).await;
    assert_eq!(answer_to_result(answer), Ok(json!({})));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
}

/// A server killed outright (SIGKILL, the OOM killer) cannot clean up, yet leaves nothing
/// running: its reaper sees it die and kills every process group it managed, a background
/// grandchild in the group included.
#[tokio::test]
async fn processes_die_with_a_server_killed_outright() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    c.start_process(sh("orphan", "sleep 300 & echo $!; wait"))
        .await;
    c.wait_for_output("orphan", "\n").await;
    let events = c.process_events("orphan");
    let pid: i32 = output_text(&events, None).trim().parse().unwrap();
    let grandchild = Pidfd::open(pid).expect("the background sleep runs");
    // SAFETY: kill(2) with a pid and a signal number; no memory involved.
    assert_eq!(unsafe { libc::kill(server.pid(), libc::SIGKILL) }, 0);
    grandchild
        .wait_exit(DEADLINE, "the process of a server killed outright")
        .await;
}

/// The reaper itself: at the end of its input it kills the groups it was told of (`+PGID`) and
/// spares those let go of since (`-PGID`: the server forgets a process it no longer holds, whose
/// group id may be reused by someone else's).
#[tokio::test]
async fn reaper_kills_the_groups_it_holds_and_spares_those_let_go() {
    use std::io::Write as _;
    use std::os::unix::process::CommandExt as _;
    let sleeper = || {
        std::process::Command::new("sleep")
            .arg("300")
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let (mut held, mut let_go) = (sleeper(), sleeper());
    let held_fd = Pidfd::open(held.id() as i32).unwrap();
    let mut reaper = std::process::Command::new(server_binary())
        .arg("reap-process-groups")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = reaper.stdin.take().unwrap();
    write!(
        stdin,
        "+{}\n+{}\n-{}\nnoise\n+1\n",
        held.id(),
        let_go.id(),
        let_go.id()
    )
    .unwrap();
    drop(stdin);
    assert!(reaper.wait().unwrap().success());
    held_fd.wait_exit(DEADLINE, "the held group").await;
    let _ = held.wait();
    assert!(
        let_go.try_wait().unwrap().is_none(),
        "a group let go of was killed"
    );
    let _ = let_go.kill();
    let _ = let_go.wait();
}

#[tokio::test]
async fn resume_while_attached_is_refused_with_32010() {
    let server = Server::start(&[]).await;
    let (mut a, session) = started_client(&server).await;
    a.start_process(sh("keep", "exec sleep 3")).await;

    let mut b = server.connect().await;
    let (code, message) = b
        .initialize_resume(&session)
        .await
        .expect_err("A is still attached");
    assert_eq!(code, SESSION_ATTACHED, "message: {message}");

    // A keeps its session.
    let read = a
        .request_ok("process/read", json!({"processId": "keep", "afterSeq": 0}))
        .await;
    assert_eq!(read["exited"], false);
    // B may try again on the same connection.
    let other = b.initialize().await;
    assert_ne!(other, session);
    a.request_ok("process/terminate", json!({"processId": "keep"}))
        .await;
}

/// The protocol lets a resume succeed only once the old connection is detached, i.e. once the
/// server has seen it drop. The closest a client can get to a long-poll outliving its
/// connection is a half-close: it sends FIN but keeps reading. The server then ends that
/// connection (a close, and no answer to the parked long-poll: neither a success nor waiting out
/// its 30 s), and the session lives on where it was resumed. (The -32600 `session has been resumed
/// by another connection` a long-poll gets while its connection still exists is tested in
/// src/server/connection_tests.rs, where that order can be made.)
#[tokio::test]
async fn long_poll_on_old_connection_ends_with_it_after_resume() {
    let server = Server::start(&[]).await;
    let (mut a, session) = started_client(&server).await;
    a.start_process(sh("quiet", "exec sleep 5")).await;
    let read = a
        .send_request(
            "process/read",
            json!({"processId": "quiet", "afterSeq": 0, "waitMs": 30000}),
        )
        .await;
    a.request_ok("environment/info", json!({})).await;
    assert!(!a.has_answer(read), "the long-poll should be parked");

    a.shutdown_write();
    let (mut b, _) = resume_on_new_connection(&server, &session).await;
    // Within the deadline (10 s), so well before the 30 s of the long-poll.
    let last = a.wait_for_close().await;
    assert!(
        !last.iter().any(|m| m.get("id") == Some(&json!(read))),
        "the old long-poll was answered: {last:?}"
    );

    // The session itself lives on B.
    let r = b
        .request_ok("process/read", json!({"processId": "quiet", "afterSeq": 0}))
        .await;
    assert_eq!(r["exited"], false, "{r}");
    b.request_ok("process/terminate", json!({"processId": "quiet"}))
        .await;
}

#[tokio::test]
async fn sessions_cannot_touch_each_others_processes() {
    let server = Server::start(&[]).await;
    let (mut a, _) = started_client(&server).await;
    let (mut b, _) = started_client(&server).await;
    let mut params = sh("shared", "read x; echo \"A got $x\"");
    params["pipeStdin"] = json!(true);
    a.start_process(params).await;

    let (code, message) = b
        .request_err(
            "process/read",
            json!({"processId": "shared", "afterSeq": 0}),
        )
        .await;
    assert_eq!(
        (code, message.as_str()),
        (INVALID_REQUEST, "unknown process id shared")
    );
    assert_eq!(
        b.write_stdin("shared", b"from B\n", "bw").await,
        "unknownProcess"
    );
    let term = b
        .request_ok("process/terminate", json!({"processId": "shared"}))
        .await;
    assert_eq!(term, json!({"running": false}));
    let sig = b
        .request_ok(
            "process/signal",
            json!({"processId": "shared", "signal": "interrupt"}),
        )
        .await;
    assert_eq!(sig, json!({}));
    // Ids are per session: B may use the same id for its own process.
    b.start_process(sh("shared", "echo B")).await;
    let b_events = b.collect_process_events("shared").await;
    assert_eq!(output_text(&b_events, None), "B\n");

    assert_eq!(a.write_stdin("shared", b"hello\n", "aw").await, "accepted");
    let a_events = a.collect_process_events("shared").await;
    assert_eq!(
        output_text(&a_events, None),
        "A got hello\n",
        "A's process saw nothing of B"
    );
    assert_eq!(
        exit_code(&a_events),
        0,
        "A's process was neither terminated nor interrupted"
    );
}

// ---------------------------------------------------------------------------------------------
// Environment policy

const SERVER_ENV: &[(&str, &str)] = &[
    ("HOME", "/tmp/exec-test-home"),
    ("LANG", "C.UTF-8"),
    ("LC_ALL", "C.UTF-8"),
    ("LC_CTYPE", "C.UTF-8"),
    ("LOGNAME", "tester"),
    ("SHELL", "/bin/sh"),
    ("TMPDIR", "/tmp"),
    ("USER", "tester"),
    ("TEMP", "/tmp"),
    ("TMP", "/tmp"),
    ("EXEC_TEST_PLAIN", "plain"),
    ("EXEC_TEST_DROPME", "d"),
    ("EXEC_TEST_Q1", "q1"),
    ("EXEC_TEST_Q12", "q12"),
    ("EXEC_TEST_API_KEY", "k"),
    ("EXEC_TEST_SECRET_X", "s"),
    ("exec_test_token_lower", "t"),
    ("Exec_Test_Keyring", "kr"),
    ("NODE_REPL_AUTH_TOKEN", "n"),
    ("OPENAI_FEDERATION_RULE_ID", "r"),
    ("OPENAI_WORKLOAD_IDENTITY_CONTEXT", "w"),
];

const CREDENTIALS: &[&str] = &[
    "NODE_REPL_AUTH_TOKEN",
    "OPENAI_IDENTITY_TOKEN_FILE",
    "CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN",
    "OPENAI_FEDERATION_RULE_ID",
    "OPENAI_WORKLOAD_IDENTITY_CONTEXT",
    "CODEX_EXEC_SERVER_EXIT_ON_STDIN_CLOSE",
];

type Env = BTreeMap<String, String>;

fn env_of(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs `env -0` with `envPolicy` (or none) and `env`; returns the child's environment.
async fn child_env(c: &mut Client, id: &str, policy: Option<Value>, env: Value) -> Env {
    let mut params = process_params(id, &["/usr/bin/env", "-0"]);
    params["env"] = env;
    if let Some(policy) = policy {
        params["envPolicy"] = policy;
    }
    c.start_process(params.clone()).await;
    let events = c.collect_process_events(id).await;
    assert_eq!(exit_code(&events), 0, "{params}: {events:?}");
    let out = output_bytes(&events, Some("stdout"));
    out.split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (k, v) = entry
                .split_once('=')
                .unwrap_or_else(|| panic!("bad env entry {entry:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[tokio::test]
async fn env_policy_builds_environment_in_documented_order() {
    let mut server_env = env_of(SERVER_ENV);
    server_env.insert(
        "PATH".into(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
    );
    let server = Server::start_with(ServerOptions {
        env: server_env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        env_clear: true,
        ..ServerOptions::default()
    })
    .await;
    let (mut c, _) = started_client(&server).await;
    let without = |env: &Env, names: &[&str]| -> Env {
        env.iter()
            .filter(|(k, _)| !names.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let default_excluded = [
        "EXEC_TEST_API_KEY",
        "EXEC_TEST_SECRET_X",
        "exec_test_token_lower",
        "Exec_Test_Keyring",
        "NODE_REPL_AUTH_TOKEN",
    ];

    // inherit all: the server's environment less *KEY*/*SECRET*/*TOKEN* (any case) and credentials.
    let all = child_env(&mut c, "all", Some(json!({"inherit": "all"})), json!({})).await;
    let all_expected = without(&without(&server_env, &default_excluded), CREDENTIALS);
    assert_eq!(all, all_expected, "inherit all");

    // ignoreDefaultExcludes keeps *KEY* etc., but never the server's credentials.
    let raw = child_env(
        &mut c,
        "raw",
        Some(json!({"inherit": "all", "ignoreDefaultExcludes": true})),
        json!({}),
    )
    .await;
    assert_eq!(
        raw,
        without(&server_env, CREDENTIALS),
        "inherit all, ignoreDefaultExcludes"
    );

    // inherit core: only the core names (TEMP and TMP because they are set).
    let core = child_env(&mut c, "core", Some(json!({"inherit": "core"})), json!({})).await;
    let core_names = [
        "HOME", "LANG", "LC_ALL", "LC_CTYPE", "LOGNAME", "PATH", "SHELL", "TMPDIR", "USER", "TEMP",
        "TMP",
    ];
    let core_expected: Env = server_env
        .iter()
        .filter(|(k, _)| core_names.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(core, core_expected, "inherit core");

    // inherit none + set.
    let none = child_env(
        &mut c,
        "none",
        Some(json!({"inherit": "none", "set": {"A_SET": "1"}})),
        json!({}),
    )
    .await;
    assert_eq!(none, env_of(&[("A_SET", "1")]), "inherit none");

    // exclude globs, case-insensitive, `?` is exactly one character.
    let excl = child_env(
        &mut c,
        "exclude",
        Some(json!({"inherit": "all", "exclude": ["exec_test_drop*", "EXEC_TEST_Q?"]})),
        json!({}),
    )
    .await;
    assert_eq!(
        excl,
        without(&all_expected, &["EXEC_TEST_DROPME", "EXEC_TEST_Q1"]),
        "exclude globs"
    );

    // Order: default excludes, exclude, set, includeOnly, env overlay, credentials last.
    let ordered = child_env(
        &mut c,
        "ordered",
        Some(json!({
            "inherit": "all",
            "exclude": ["EXEC_TEST_PLAIN", "exec_test_drop*"],
            "set": {"EXEC_TEST_DROPME": "from-set", "SET_TOKEN": "st", "NOT_INCLUDED": "x"},
            "includeOnly": ["exec_test_*", "path", "set_*"],
        })),
        json!({
            "EXEC_TEST_PLAIN": "from-env",
            "OVERLAY_X": "o",
            "OPENAI_IDENTITY_TOKEN_FILE": "/x",
            "NODE_REPL_AUTH_TOKEN": "y",
            "CODEX_EXEC_SERVER_NOISE_AUTH_TOKEN": "z",
            "CODEX_EXEC_SERVER_EXIT_ON_STDIN_CLOSE": "1",
            "OPENAI_FEDERATION_RULE_ID": "f",
            "OPENAI_WORKLOAD_IDENTITY_CONTEXT": "w",
        }),
    )
    .await;
    let mut ordered_expected = env_of(&[
        ("EXEC_TEST_PLAIN", "from-env"), // excluded, then overlaid by env after includeOnly
        ("EXEC_TEST_DROPME", "from-set"), // excluded, then set
        ("EXEC_TEST_Q1", "q1"),
        ("EXEC_TEST_Q12", "q12"),
        ("SET_TOKEN", "st"), // set comes after the default excludes
        ("OVERLAY_X", "o"),  // env comes after includeOnly
    ]);
    ordered_expected.insert("PATH".into(), server_env["PATH"].clone());
    assert_eq!(
        ordered, ordered_expected,
        "policy steps in order; credentials dropped even from env"
    );

    // Without envPolicy, env is the whole environment.
    let bare = child_env(&mut c, "bare", None, json!({"ONLY": "1"})).await;
    assert_eq!(bare, env_of(&[("ONLY", "1")]), "no envPolicy");
}

// ---------------------------------------------------------------------------------------------
// Transports and HTTP

#[tokio::test]
async fn stdio_transport_serves_one_connection() {
    let (mut server, mut c) = StdioServer::start(&[]).await;
    let session = c.initialize().await;
    assert!(!session.is_empty());
    c.start_process(sh("hi", "echo hi")).await;
    let events = c.collect_process_events("hi").await;
    assert_eq!(output_text(&events, Some("stdout")), "hi\n");
    assert_eq!(exit_code(&events), 0);
    let info = c.request_ok("environment/info", json!({})).await;
    assert_eq!(info["platformOs"], "linux");
    // The scenarios that do not depend on the transport run over stdio as cases of their own.

    c.close_stdin();
    let status = server.wait_for_exit().await;
    assert!(
        status.success(),
        "the stdio server exits cleanly when stdin closes: {status}"
    );
}

/// Sends a raw HTTP request and returns the response head (status line and headers).
async fn http_exchange(addr: &str, request: &str) -> String {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tcp.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if response.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&response).into_owned()
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("HTTP exchange timed out")
}

fn status_of(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

#[tokio::test]
async fn origin_header_is_refused() {
    let server = Server::start(&[]).await;
    let addr = server.addr();
    let upgrade = |origin: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
        )
    };

    let refused = http_exchange(&addr, &upgrade("Origin: http://evil.example\r\n")).await;
    assert!(
        status_of(&refused).starts_with("HTTP/1.1 403"),
        "upgrade with Origin: {refused:?}"
    );
    let accepted = http_exchange(&addr, &upgrade("")).await;
    assert!(
        status_of(&accepted).starts_with("HTTP/1.1 101"),
        "upgrade without Origin: {accepted:?}"
    );

    let ready = http_exchange(
        &addr,
        &format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
    )
    .await;
    assert!(
        status_of(&ready).starts_with("HTTP/1.1 200"),
        "GET /readyz: {ready:?}"
    );
    let ready_origin = http_exchange(
        &addr,
        &format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\n\r\n"),
    )
    .await;
    assert!(
        status_of(&ready_origin).starts_with("HTTP/1.1 403"),
        "Origin is refused on every path: {ready_origin:?}"
    );

    // The server still serves WebSocket clients.
    let (mut c, _) = started_client(&server).await;
    c.request_ok("environment/info", json!({})).await;
}

#[tokio::test]
async fn malformed_frame_keeps_connection_open() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    c.send_raw_text("this is not json {").await;
    let (code, message) = c.wait_for_parse_error().await;
    assert_eq!(code, INVALID_REQUEST, "{message}");
    let info = c.request_ok("environment/info", json!({})).await;
    assert_eq!(info["platformOs"], "linux");
}

// ---------------------------------------------------------------------------------------------
// Wire edge cases

#[tokio::test]
async fn string_and_integer_ids_are_echoed_unchanged() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    for id in [json!("abc"), json!("92"), json!(92), json!(0)] {
        c.send_json(&json!({"id": id, "method": "environment/info", "params": {}}))
            .await;
        let answer = c.await_raw_answer(&id).await;
        assert!(answer.get("result").is_some(), "id {id}: {answer}");
        assert!(
            answer.get("jsonrpc").is_none(),
            "no jsonrpc member is sent: {answer}"
        );
    }
}

#[tokio::test]
async fn environment_info_accepts_null_and_absent_params() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    c.send_json(&json!({"id": 1, "method": "environment/info"}))
        .await;
    let absent = c.await_raw_answer(&json!(1)).await;
    c.send_json(&json!({"id": 2, "method": "environment/info", "params": null}))
        .await;
    let null = c.await_raw_answer(&json!(2)).await;
    for answer in [&absent, &null] {
        let info = &answer["result"];
        assert_eq!(info["platformOs"], "linux", "{answer}");
        for field in ["cwd", "userHomeDir", "tempDir"] {
            let uri = info[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field} missing: {answer}"));
            assert!(uri.starts_with("file:///"), "{field} is a file: URI: {uri}");
        }
        assert!(info["shell"]["path"].is_string(), "{answer}");
    }
}

#[tokio::test]
async fn jsonrpc_member_and_unknown_fields_are_ignored() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    let mut params = sh("extra", "echo extra");
    // metadata.threadId must be a UUID (as in the reference); unknown members inside are ignored.
    params["metadata"] =
        json!({"threadId": "0190a2b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b", "anything": [1, 2]});
    params["someFutureField"] = json!({"x": 1});
    c.send_json(&json!({"jsonrpc": "2.0", "id": 7, "method": "process/start", "params": params}))
        .await;
    let answer =
        answer_to_result(c.await_raw_answer(&json!(7)).await).expect("unknown fields are ignored");
    assert_eq!(answer["processId"], "extra");
    let events = c.collect_process_events("extra").await;
    assert_eq!(output_text(&events, None), "extra\n");
}

#[tokio::test]
async fn binary_frame_is_accepted_like_text() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    let request = json!({"id": 5, "method": "environment/info", "params": {}});
    c.send_raw_binary(request.to_string().into_bytes()).await;
    let answer = c.await_raw_answer(&json!(5)).await;
    assert_eq!(answer["result"]["platformOs"], "linux", "{answer}");
}

#[tokio::test]
async fn sigterm_stops_server_and_kills_every_process_group() {
    let mut server = Server::start(&[]).await;
    // One process on an attached session, one on a detached one; both ignore SIGTERM and have a
    // backgrounded child in their group.
    let script = "trap '' TERM; sleep 30 & echo $$ $!; wait";
    let (mut a, _) = started_client(&server).await;
    a.start_process(sh("attached", script)).await;
    a.wait_for_output("attached", "\n").await;
    let (mut b, _) = started_client(&server).await;
    b.start_process(sh("detached", script)).await;
    b.wait_for_output("detached", "\n").await;
    let mut pids = Vec::new();
    for (client, id) in [(&a, "attached"), (&b, "detached")] {
        let text = output_text(&client.process_events(id), Some("stdout"));
        for pid in text.split_whitespace() {
            let pid: i32 = pid
                .parse()
                .unwrap_or_else(|_| panic!("expected pids, got {text:?}"));
            pids.push(Pidfd::open(pid).expect("process is running"));
        }
    }
    b.close().await;

    // SAFETY: kill(2) touches no memory; the pid is the server this test started.
    let rc = unsafe { libc::kill(server.pid(), libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = server.wait_for_exit().await;
    assert_eq!(status.code(), Some(0), "server exit status {status:?}");
    for pidfd in &pids {
        pidfd
            .wait_exit(DEADLINE, "a managed process after server shutdown")
            .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Limits: closed-process TTL, in-flight requests, remembered writeIds, request head size

/// A closed process keeps its id for `--closed-process-ttl-ms` (its output can still be read),
/// then frees it: before the TTL the same id is "already exists", after it the id starts again.
#[tokio::test]
async fn closed_process_ttl_frees_the_process_id() {
    let ttl = Duration::from_millis(1000);
    let server = Server::start(&["--closed-process-ttl-ms", "1000"]).await;
    let (mut c, _) = started_client(&server).await;
    // Before the start: the server's TTL clock starts after this instant.
    let before_start = Instant::now();
    c.start_process(sh("again", "echo first")).await;
    let events = c.collect_process_events("again").await;
    let closed_seen = Instant::now();
    assert_eq!(output_text(&events, Some("stdout")), "first\n");
    c.forget_process_events("again");

    let (code, message) = c
        .request_err("process/start", sh("again", "echo second"))
        .await;
    assert_eq!(
        (code, message.as_str()),
        (INVALID_REQUEST, "process again already exists"),
        "within the TTL"
    );
    let read = c
        .request_ok("process/read", json!({"processId": "again", "afterSeq": 0}))
        .await;
    assert_eq!(
        read["closed"], true,
        "still readable within the TTL: {read}"
    );

    // The TTL running out is the scenario: wait it out from when `closed` arrived (the server
    // started it earlier), then retry until the id is free; every retry is a round trip.
    tokio::time::sleep_until(closed_seen + ttl).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        match c.request("process/start", sh("again", "echo second")).await {
            Ok(_) => break,
            Err((INVALID_REQUEST, m)) if m.contains("already exists") => {
                assert!(Instant::now() < deadline, "the id was never freed: {m}");
            }
            Err(e) => panic!("restart after the TTL: {e:?}"),
        }
    }
    assert!(
        before_start.elapsed() >= ttl,
        "the id was freed before the TTL: {:?}",
        before_start.elapsed()
    );
    let events = c.collect_process_events("again").await;
    assert_eq!(output_text(&events, Some("stdout")), "second\n");
}

/// One connection runs at most 256 requests at once; the 257th waits, unread, until one of them
/// ends. With 256 long-polls parked, `environment/info` is answered only after a long-poll has
/// answered; with 255 (the control) it is answered while they are all still parked.
#[tokio::test]
async fn requests_beyond_256_in_flight_wait_for_a_free_slot() {
    const MAX_IN_FLIGHT: usize = 256;
    let server = Server::start(&[]).await;
    for parked in [MAX_IN_FLIGHT - 1, MAX_IN_FLIGHT] {
        let (mut c, _) = started_client(&server).await;
        let dir = TestDir::new();
        let fifo = dir.mkfifo("wake");
        // Quiet until the test writes the FIFO: no request of this connection can wake it.
        c.start_process(sh("quiet", &format!("cat '{}'", fifo.display())))
            .await;
        let mut ids = Vec::with_capacity(parked);
        for _ in 0..parked {
            ids.push(
                c.send_request(
                    "process/read",
                    json!({"processId": "quiet", "afterSeq": 0, "waitMs": 30000}),
                )
                .await,
            );
        }
        let info = c.send_request("environment/info", json!({})).await;
        if parked < MAX_IN_FLIGHT {
            // A free slot: answered at once, every long-poll still parked.
            c.await_answer(info).await.expect("environment/info");
            assert!(
                !ids.iter().any(|&id| c.has_answer(id)),
                "a long-poll answered before any output"
            );
            write_fifo(&fifo, b"wake\n").await;
        } else {
            // No free slot: the answer can only come after output wakes the long-polls, which
            // the FIFO write below causes; so it must come after a long-poll's answer.
            write_fifo(&fifo, b"wake\n").await;
            let first = c
                .wait_for_any_answer(&ids.iter().copied().chain([info]).collect::<Vec<_>>())
                .await;
            assert_ne!(
                first, info,
                "environment/info was answered while 256 requests were in flight"
            );
            c.await_answer(info).await.expect("environment/info");
        }
        for id in ids {
            let read = c.await_answer(id).await.expect("process/read");
            assert_eq!(read["chunks"][0]["seq"], 1, "{read}");
        }
        c.collect_process_events("quiet").await;
    }
}

/// A process remembers its 4096 most recent `writeId`s: a repeat of one of them is accepted and
/// not written again, but after 4096 newer ids the oldest is forgotten and a repeat is written.
#[tokio::test]
async fn oldest_write_id_is_forgotten_after_4096_newer_ones() {
    const REMEMBERED: usize = 4096;
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    // Exactly the bytes expected below; anything more or less shows in the output.
    let expected_len = 2 + REMEMBERED + 2;
    let mut params = process_params("head", &["head", "-c", &expected_len.to_string()]);
    params["pipeStdin"] = json!(true);
    c.start_process(params).await;

    assert_eq!(c.write_stdin("head", b"A\n", "w0").await, "accepted");
    // w1..=w4096, pipelined: 4096 newer ids push w0 out of the memory.
    let mut ids = Vec::with_capacity(REMEMBERED);
    for n in 1..=REMEMBERED {
        ids.push(
            c.send_request(
                "process/write",
                json!({"processId": "head", "chunk": b64(b"."), "writeId": format!("w{n}")}),
            )
            .await,
        );
    }
    for id in ids {
        let answer = c.await_answer(id).await.expect("process/write");
        assert_eq!(answer["status"], "accepted", "{answer}");
    }
    // w1 is still remembered: accepted, not written. w0 was forgotten: written again.
    assert_eq!(c.write_stdin("head", b"B\n", "w1").await, "accepted");
    assert_eq!(c.write_stdin("head", b"C\n", "w0").await, "accepted");
    let events = c.collect_process_events("head").await;
    let expected = format!("A\n{}C\n", ".".repeat(REMEMBERED));
    assert_eq!(output_text(&events, Some("stdout")), expected);
    assert_eq!(exit_code(&events), 0);
}

/// A request head over 16 KiB, or with more than 64 headers, is answered 431 and closed; the
/// same request within both limits is served (the control).
#[tokio::test]
async fn oversized_request_head_is_answered_431() {
    let server = Server::start(&[]).await;
    let addr = server.addr();
    let ready = |extra: &str| format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n");

    let within = ready(&format!("X-Pad: {}\r\n", "a".repeat(15 * 1024)));
    let response = http_exchange(&addr, &within).await;
    assert!(
        status_of(&response).starts_with("HTTP/1.1 200"),
        "a 15 KiB head: {response:?}"
    );
    // 16 KiB without the blank line that ends a head: every byte is read, then 431.
    let mut long = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nX-Pad: ");
    long.push_str(&"a".repeat(16 * 1024 - long.len()));
    assert_eq!(long.len(), 16 * 1024);
    let response = http_exchange(&addr, &long).await;
    assert!(
        status_of(&response).starts_with("HTTP/1.1 431"),
        "a 16 KiB head: {response:?}"
    );

    let headers = |n: usize| (0..n).map(|i| format!("X-H{i}: v\r\n")).collect::<String>();
    // Host and 63 more: 64 headers, served.
    let response = http_exchange(&addr, &ready(&headers(63))).await;
    assert!(
        status_of(&response).starts_with("HTTP/1.1 200"),
        "64 headers: {response:?}"
    );
    let response = http_exchange(&addr, &ready(&headers(64))).await;
    assert!(
        status_of(&response).starts_with("HTTP/1.1 431"),
        "65 headers: {response:?}"
    );

    // The server still serves WebSocket clients.
    let (mut c, _) = started_client(&server).await;
    c.request_ok("environment/info", json!({})).await;
}

// ---------------------------------------------------------------------------------------------
// Sessions: resume against the detached TTL

/// Starts `echo $$; exec sleep 30` as `id` and returns a pidfd on it.
async fn sleeper_pidfd(c: &mut Client, id: &str) -> Pidfd {
    c.start_process(sh(id, "echo $$; exec sleep 30")).await;
    c.wait_for_output(id, "\n").await;
    let text = output_text(&c.process_events(id), Some("stdout"));
    let pid: i32 = text
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("expected a pid, got {text:?}"));
    Pidfd::open(pid).expect("the process is running")
}

/// How a resume attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Resumed {
    /// Resumed, and the process was alive and answered for.
    Alive,
    /// Refused as unknown, and the process was killed.
    Expired,
}

/// Resumes `session` on a new connection (retrying while the server has not yet seen the old
/// one drop) and checks that the outcome is whole: resumed with `process` alive, or refused as
/// unknown with it killed.
async fn resume_is_whole(server: &Server, session: &str, process: &str, pidfd: &Pidfd) -> Resumed {
    let mut c = server.connect().await;
    let deadline = Instant::now() + DEADLINE;
    let answer = loop {
        match c.initialize_resume(session).await {
            Err((SESSION_ATTACHED, _)) if Instant::now() < deadline => continue,
            other => break other,
        }
    };
    match answer {
        Ok(_) => {
            let read = c
                .request_ok("process/read", json!({"processId": process, "afterSeq": 0}))
                .await;
            assert_eq!(
                read["exited"], false,
                "resumed, but its process ended: {read}"
            );
            assert!(!pidfd.has_exited(), "resumed, but its process was killed");
            let term = c
                .request_ok("process/terminate", json!({"processId": process}))
                .await;
            assert_eq!(term, json!({"running": true}));
            Resumed::Alive
        }
        Err((code, message)) => {
            assert_eq!(
                (code, message),
                (INVALID_REQUEST, format!("unknown session id {session}"))
            );
            pidfd
                .wait_exit(DEADLINE, "the process of a session refused as expired")
                .await;
            Resumed::Expired
        }
    }
}

/// Resumes timed around the detached TTL after a drop, so that some land on the TTL itself: each either resumes with its process alive or is refused as unknown with
/// its process killed, never half (refused with the process alive, or resumed with it dead). The
/// first (at once) must resume and the last (at 3 TTLs) must be refused, so both sides are seen.
#[tokio::test]
async fn resume_racing_the_detached_ttl_is_whole_either_way() {
    const SESSIONS: u32 = 16;
    let ttl = Duration::from_millis(300);
    let server = Server::start(&["--detached-session-ttl-ms", "300"]).await;
    let mut setups = Vec::new();
    for i in 0..SESSIONS {
        let (mut c, session) = started_client(&server).await;
        let process = format!("race-{i}");
        let pidfd = sleeper_pidfd(&mut c, &process).await;
        setups.push((c, session, process, pidfd));
    }
    let dropped = Instant::now();
    let setups: Vec<_> = setups
        .into_iter()
        .map(|(c, session, process, pidfd)| {
            drop(c);
            (session, process, pidfd)
        })
        .collect();
    let outcomes = futures_util::future::join_all(setups.iter().enumerate().map(
        |(i, (session, process, pidfd))| {
            let server = &server;
            async move {
                // The timing is the scenario: the first at once, the last three TTLs after
                // the drop, the others spread over 0.8 to 1.2 TTLs after it (the server's clock
                // starts a little after the drop, when it sees it).
                let i = i as u32;
                let at = dropped
                    + match i {
                        0 => Duration::ZERO,
                        i if i == SESSIONS - 1 => ttl * 3,
                        i => ttl * 4 / 5 + ttl * 2 / 5 * (i - 1) / (SESSIONS - 3),
                    };
                tokio::time::sleep_until(at).await;
                resume_is_whole(server, session, process, pidfd).await
            }
        },
    ))
    .await;
    assert_eq!(outcomes[0], Resumed::Alive, "{outcomes:?}");
    assert_eq!(
        outcomes[SESSIONS as usize - 1],
        Resumed::Expired,
        "{outcomes:?}"
    );
}

/// The old connection's detach armed an expiry timer; a resume on a new connection takes the
/// session over before it fires. When it fires, the session (held by the new connection) must
/// not end. Once the new connection drops in turn, the session does expire: the control.
#[tokio::test]
async fn old_connections_expiry_timer_leaves_a_session_resumed_elsewhere() {
    let ttl = Duration::from_millis(300);
    let server = Server::start(&["--detached-session-ttl-ms", "300"]).await;
    let (mut a, session) = started_client(&server).await;
    let pidfd = sleeper_pidfd(&mut a, "kept").await;
    let dropped = Instant::now();
    drop(a);
    let (mut b, _) = resume_on_new_connection(&server, &session).await;

    // Past the old timer (armed at A's detach, after `dropped`): the time is the scenario. A
    // round trip on B then shows the server has run whatever was due.
    tokio::time::sleep_until(dropped + ttl * 2).await;
    let read = b
        .request_ok("process/read", json!({"processId": "kept", "afterSeq": 0}))
        .await;
    assert_eq!(read["exited"], false, "{read}");
    assert!(!pidfd.has_exited(), "the old timer killed the process");
    // B still holds the session.
    let mut c = server.connect().await;
    let (code, _) = c
        .initialize_resume(&session)
        .await
        .expect_err("B still holds the session");
    assert_eq!(code, SESSION_ATTACHED);

    drop(b);
    pidfd
        .wait_exit(DEADLINE, "the process once the new connection dropped too")
        .await;
}

// ---------------------------------------------------------------------------------------------
// Starting a child (the server's own clone3 start, or std's where the kernel has no clone3)

/// The child starts with nothing of the server's signal set-up: no signal blocked, no handler,
/// SIGPIPE (which Rust ignores in the server) back to its default, so `yes | head -1` ends; a
/// signal the server was started with ignored stays ignored, as across any exec.
#[tokio::test]
async fn a_started_child_has_no_signal_blocked_and_only_inherited_ones_ignored() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    c.start_process(process_params("status", &["/bin/cat", "/proc/self/status"]))
        .await;
    let events = c.collect_process_events("status").await;
    let child = output_text(&events, Some("stdout"));
    let own = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let mask = |status: &str, field: &str| -> u64 {
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        u64::from_str_radix(line[field.len()..].trim(), 16).unwrap()
    };
    assert_eq!(mask(&child, "SigBlk:"), 0, "blocked signals in the child");
    let sigpipe = 1u64 << (libc::SIGPIPE - 1);
    assert_ne!(
        mask(&own, "SigIgn:") & sigpipe,
        0,
        "the server ignores SIGPIPE"
    );
    assert_eq!(
        mask(&child, "SigIgn:"),
        mask(&own, "SigIgn:") & !sigpipe,
        "ignored signals in the child"
    );
    c.start_process(sh("pipe", "yes | head -1")).await;
    let events = c.collect_process_events("pipe").await;
    assert_eq!(output_text(&events, Some("stdout")), "y\n");
}

/// A start that cannot execute answers the OS error and the program, as before; nothing is left
/// running or unreaped, and the next start works.
#[tokio::test]
async fn a_start_that_cannot_execute_answers_the_os_error_naming_the_program() {
    let server = Server::start(&[]).await;
    let (mut c, _) = started_client(&server).await;
    let dir = TestDir::new();
    let not_executable = dir.path().join("data.txt");
    std::fs::write(&not_executable, "not a program").unwrap();
    let not_executable = not_executable.to_str().unwrap().to_string();
    let cases: [(&str, Vec<&str>, &str); 4] = [
        (
            "missing",
            vec!["/nonexistent/prog"],
            "No such file or directory (os error 2): /nonexistent/prog",
        ),
        (
            "bare",
            vec!["no-such-program-xyz"],
            "No such file or directory (os error 2): no-such-program-xyz",
        ),
        (
            "noexec",
            vec![not_executable.as_str()],
            "Permission denied (os error 13)",
        ),
        ("nul", vec!["/bin/echo", "a\u{0}b"], "nul byte found"),
    ];
    for (id, argv, expected) in cases {
        let (_, message) = c
            .request_err("process/start", process_params(id, &argv))
            .await;
        assert!(
            message.contains(expected),
            "{id}: expected {expected:?} in {message:?}"
        );
    }
    // A cwd that is gone by the time the child changes into it.
    let gone = TestDir::new();
    let mut params = process_params("cwd", &["/bin/true"]);
    params["cwd"] = json!(file_uri(gone.path()));
    drop(gone);
    let answer = c.request("process/start", params).await;
    if let Err((_, message)) = &answer {
        assert!(message.contains("os error"), "cwd: {message}");
    }
    c.start_process(sh("after", "echo ok")).await;
    let events = c.collect_process_events("after").await;
    assert_eq!(output_text(&events, Some("stdout")), "ok\n");
    // No zombie of a failed start stays behind the server.
    let server_pid = server.pid().to_string();
    wait_until("no zombie child of the server", || {
        std::fs::read_dir("/proc").unwrap().flatten().all(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let after = stat.rsplit(')').next().unwrap_or("");
            let fields: Vec<&str> = after.split_whitespace().collect();
            !(fields.first() == Some(&"Z") && fields.get(1) == Some(&server_pid.as_str()))
        })
    })
    .await;
}
