//! Bad input to `codex exec-server`: frames that are not JSON-RPC objects, wrong or missing
//! params, out-of-order handshakes, oversized and deeply nested values.
//!
//! Each test asserts the code (and the message where the protocol fixes it or names a field), and
//! that the server stays up with another connection's session unaffected: a [`Bystander`] session
//! keeps a `cat` running and must still echo a fresh line afterwards.

mod common;

use common::*;
use serde_json::{Value, json};

/// A server, a bystander session on its own connection, and an initialized client.
async fn setup() -> (Server, Bystander, Client) {
    let server = Server::start(&[]).await;
    let bystander = Bystander::start(&server).await;
    let mut client = server.connect().await;
    client.initialize().await;
    (server, bystander, client)
}

/// The server is up, the bystander's session works, and `client` still gets answers.
async fn assert_unharmed(
    server: &mut Server,
    bystander: &mut Bystander,
    client: Option<&mut Client>,
) {
    server.assert_running();
    bystander.check().await;
    if let Some(client) = client {
        let info = client.request_ok("environment/info", json!({})).await;
        assert_eq!(info["platformOs"], "linux");
    }
}

/// `process/read` of `id` must say it does not exist (nothing was registered).
async fn assert_no_process(client: &mut Client, id: &str) {
    let (code, message) = client
        .request_err("process/read", json!({"processId": id, "afterSeq": 0}))
        .await;
    assert_eq!(code, INVALID_REQUEST, "{message}");
    assert_eq!(message, format!("unknown process id {id}"));
}

#[tokio::test]
async fn json_that_is_not_an_object_is_refused_with_id_minus_one() {
    let (mut server, mut bystander, mut client) = setup().await;
    for frame in ["[1, 2, 3]", "[]", "42", "\"text\"", "null", "true"] {
        client.send_raw_text(frame).await;
        let (code, message) = client.wait_for_parse_error().await;
        assert_eq!(code, INVALID_REQUEST, "frame {frame}: {message}");
    }
    assert_unharmed(&mut server, &mut bystander, Some(&mut client)).await;

    // Also before initialize: the connection stays usable and can still initialize.
    let mut fresh = server.connect().await;
    fresh
        .send_raw_text("[{\"id\": 1, \"method\": \"initialize\"}]")
        .await;
    assert_eq!(fresh.wait_for_parse_error().await.0, INVALID_REQUEST);
    fresh.initialize().await;
}

#[tokio::test]
async fn ill_typed_or_missing_params_are_refused_naming_the_field() {
    let (mut server, mut bystander, mut client) = setup().await;
    let cases: &[(&str, Value, &str)] = &[
        ("argv is a string", json!({"argv": "echo hi"}), "argv"),
        ("argv holds numbers", json!({"argv": [1, 2]}), "argv"),
        ("argv missing", json!({"argv": null}), "argv"),
        ("processId missing", json!({"processId": null}), "processId"),
        ("cwd is a number", json!({"cwd": 5}), "cwd"),
    ];
    for (i, (what, patch, field)) in cases.iter().enumerate() {
        let id = format!("bad-{i}");
        let mut params = sh(&id, "echo should-not-run");
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                params.as_object_mut().unwrap().remove(k);
            } else {
                params[k] = v.clone();
            }
        }
        let (code, message) = client.request_err("process/start", params).await;
        assert_eq!(code, INVALID_PARAMS, "{what}: {message}");
        assert!(
            message.contains(field),
            "{what}: the message should name `{field}`: {message}"
        );
        assert_no_process(&mut client, &id).await;
    }
    // No params at all.
    let (code, message) = client.request_err("process/start", Value::Null).await;
    assert_eq!(
        code, INVALID_PARAMS,
        "process/start without params: {message}"
    );
    assert_unharmed(&mut server, &mut bystander, Some(&mut client)).await;
}

#[tokio::test]
async fn empty_argv_is_refused() {
    let (mut server, mut bystander, mut client) = setup().await;
    let (code, message) = client
        .request_err("process/start", process_params("empty", &[]))
        .await;
    assert_eq!(code, INVALID_PARAMS, "{message}");
    assert_no_process(&mut client, "empty").await;
    assert_unharmed(&mut server, &mut bystander, Some(&mut client)).await;
}

#[tokio::test]
async fn cwd_that_is_not_an_absolute_file_uri_is_refused_and_nothing_runs() {
    let (mut server, mut bystander, mut client) = setup().await;
    let dir = TestDir::new();
    let bad_cwds = [
        dir.path().display().to_string(), // a bare native path
        "file:tmp".to_string(),           // a relative URI
        format!("http://localhost{}", dir.path().display()), // another scheme
        "file:///C:/x".to_string(),       // another OS's shape
        "tmp".to_string(),                // a bare relative path
    ];
    for (i, cwd) in bad_cwds.iter().enumerate() {
        let id = format!("cwd-{i}");
        let marker = dir.join(&format!("marker-{i}"));
        let mut params = sh(&id, &format!("touch '{}'", marker.display()));
        params["cwd"] = json!(cwd);
        let (code, message) = client.request_err("process/start", params).await;
        assert_eq!(code, INVALID_PARAMS, "cwd {cwd:?}: {message}");
        assert_no_process(&mut client, &id).await;
    }
    // The same command with a good cwd does create its marker, and by the time it has closed
    // none of the refused ones has.
    let good = dir.join("marker-good");
    let mut params = sh("cwd-good", &format!("touch '{}'", good.display()));
    params["cwd"] = json!(dir.uri());
    client.start_process(params).await;
    client.collect_process_events("cwd-good").await;
    assert!(good.exists(), "the command creates its marker when it runs");
    for (i, cwd) in bad_cwds.iter().enumerate() {
        assert!(
            !dir.join(&format!("marker-{i}")).exists(),
            "cwd {cwd:?} ran the command"
        );
    }
    assert_unharmed(&mut server, &mut bystander, Some(&mut client)).await;
}

/// A `file:` URI with a query or fragment names no directory: the start is refused with -32602
/// before anything runs (it used to run in the directory before the `?`, as if the rest were
/// not there). The same URI without the suffix runs: the control.
#[tokio::test]
async fn cwd_file_uri_with_a_query_or_fragment_is_refused_and_nothing_runs() {
    let (mut server, mut bystander, mut client) = setup().await;
    let dir = TestDir::new();
    for (i, suffix) in ["?x=1", "#x", "?", "#"].iter().enumerate() {
        let id = format!("query-{i}");
        // Relative: the marker lands in whatever directory the command runs in.
        let mut params = sh(&id, &format!("touch marker-{i}"));
        params["cwd"] = json!(format!("{}{suffix}", dir.uri()));
        let (code, message) = client.request_err("process/start", params).await;
        assert_eq!(code, INVALID_PARAMS, "cwd suffix {suffix:?}: {message}");
        assert!(message.contains("cwd"), "{message}");
        assert_no_process(&mut client, &id).await;
    }
    let mut params = sh("query-control", "touch marker-control");
    params["cwd"] = json!(dir.uri());
    client.start_process(params).await;
    client.collect_process_events("query-control").await;
    assert!(
        dir.join("marker-control").exists(),
        "the control runs in dir"
    );
    for i in 0..4 {
        assert!(!dir.join(&format!("marker-{i}")).exists(), "start {i} ran");
    }
    assert_unharmed(&mut server, &mut bystander, Some(&mut client)).await;
}

/// protocol.md: id in use is -32600 `process ID already exists`, `ID` being the id (the reference
/// says `process dup already exists`).
fn assert_id_in_use(code: i64, message: &str, id: &str) {
    assert_eq!(code, INVALID_REQUEST, "{message}");
    assert!(
        message == format!("process {id} already exists"),
        "id in use: unexpected message {message:?}"
    );
}

#[tokio::test]
async fn process_id_in_use_is_refused() {
    let (mut server, mut bystander, mut client) = setup().await;
    client.start_process(sh("dup", "exec sleep 3")).await;
    let (code, message) = client
        .request_err("process/start", sh("dup", "echo second"))
        .await;
    assert_id_in_use(code, &message, "dup");

    // A closed process is still retained, so its id is still taken.
    client
        .start_process(process_params("dup-closed", &["/bin/true"]))
        .await;
    client.collect_process_events("dup-closed").await;
    let (code, message) = client
        .request_err("process/start", sh("dup-closed", "echo again"))
        .await;
    assert_id_in_use(code, &message, "dup-closed");

    // The first process is untouched.
    let read = client
        .request_ok("process/read", json!({"processId": "dup", "afterSeq": 0}))
        .await;
    assert_eq!(read["exited"], false, "{read}");
    client
        .request_ok("process/terminate", json!({"processId": "dup"}))
        .await;
    assert_unharmed(&mut server, &mut bystander, Some(&mut client)).await;
}

/// A processId over 4096 bytes is refused as invalid params naming the limit; a 1 MiB argument
/// (over the kernel's 128 KiB per argument) is a spawn failure, -32603 with the OS's text and the
/// program. Neither registers a process.
#[tokio::test]
async fn megabyte_process_id_and_argv_element_are_answered() {
    let (mut server, mut bystander, mut client) = setup().await;
    let huge = "p".repeat(1024 * 1024);
    let (code, message) = client
        .request_err("process/start", process_params(&huge, &["/bin/true"]))
        .await;
    assert_eq!(
        (code, message.as_str()),
        (
            INVALID_PARAMS,
            "processId is 1048576 bytes; the limit is 4096"
        )
    );

    let arg = "x".repeat(1024 * 1024);
    let (code, message) = client
        .request_err(
            "process/start",
            process_params("huge-arg", &["/bin/echo", &arg]),
        )
        .await;
    assert_eq!(
        (code, message.as_str()),
        (
            INTERNAL_ERROR,
            "Argument list too long (os error 7): /bin/echo"
        )
    );
    assert_no_process(&mut client, "huge-arg").await;
    assert_unharmed(&mut server, &mut bystander, Some(&mut client)).await;
}

#[tokio::test]
async fn deeply_nested_json_is_answered_without_crash() {
    let (mut server, mut bystander, mut client) = setup().await;
    let depth = 10_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    let in_params =
        format!("{{\"id\": 3, \"method\": \"environment/info\", \"params\": {arrays}}}");
    for (what, frame) in [
        ("arrays", &arrays),
        ("objects", &objects),
        ("nested params", &in_params),
    ] {
        client.send_raw_text(frame).await;
        let (code, message) = client.wait_for_parse_error().await;
        assert_eq!(code, INVALID_REQUEST, "{what}: {message}");
    }
    assert_unharmed(&mut server, &mut bystander, Some(&mut client)).await;
}

#[tokio::test]
async fn write_to_unknown_process_reports_unknown_process() {
    let (mut server, mut bystander, mut client) = setup().await;
    assert_eq!(
        client.write_stdin("nobody", b"x\n", "w1").await,
        "unknownProcess"
    );
    assert_unharmed(&mut server, &mut bystander, Some(&mut client)).await;
}

#[tokio::test]
async fn invalid_base64_and_empty_write_id_are_refused() {
    let (mut server, mut bystander, mut client) = setup().await;
    let mut params = process_params("cat", &["/bin/cat"]);
    params["pipeStdin"] = json!(true);
    client.start_process(params).await;

    let (code, message) = client
        .request_err(
            "process/write",
            json!({"processId": "cat", "chunk": "!!not base64!!", "writeId": "w1"}),
        )
        .await;
    assert_eq!(code, INVALID_PARAMS, "invalid base64: {message}");
    let (code, message) = client
        .request_err(
            "process/write",
            json!({"processId": "cat", "chunk": b64(b"empty-id\n"), "writeId": ""}),
        )
        .await;
    assert_eq!(code, INVALID_PARAMS, "empty writeId: {message}");

    assert_eq!(client.write_stdin("cat", b"ok\n", "w2").await, "accepted");
    client.wait_for_output("cat", "ok\n").await;
    client
        .request_ok("process/terminate", json!({"processId": "cat"}))
        .await;
    let events = client.collect_process_events("cat").await;
    assert_eq!(
        output_text(&events, None),
        "ok\n",
        "the refused writes wrote nothing"
    );
    assert_unharmed(&mut server, &mut bystander, Some(&mut client)).await;
}

/// The first message the client gets is the refusal: an error with id -1, -32600 and `message`;
/// nothing follows it but the close.
async fn assert_refused_with_id_minus_one_then_closed(client: &mut Client, message: &str) {
    let answer = client.next_message().await;
    assert_eq!(
        answer["id"],
        json!(-1),
        "the first message is the refusal: {answer}"
    );
    assert_eq!(
        answer_to_result(answer),
        Err((INVALID_REQUEST, message.to_string()))
    );
    let after = client.wait_for_close().await;
    assert!(after.is_empty(), "messages after the refusal: {after:?}");
}

/// `initialized` before `initialize` is refused like a message the server cannot take: an
/// error with id -1, then the connection is closed, with nothing between (protocol.md).
#[tokio::test]
async fn initialized_before_initialize_is_answered_with_id_minus_one_then_closed() {
    let server = Server::start(&[]).await;
    let mut bystander = Bystander::start(&server).await;
    let mut client = server.connect().await;
    client.notify("initialized", json!({})).await;
    assert_refused_with_id_minus_one_then_closed(
        &mut client,
        "client must call initialize before sending initialized",
    )
    .await;
    bystander.check().await;
}

#[tokio::test]
async fn request_before_initialize_is_refused() {
    let (mut server, mut bystander, _) = setup().await;
    let mut client = server.connect().await;
    for (method, params) in [
        ("process/start", sh("early", "echo early")),
        ("process/read", json!({"processId": "early"})),
        (
            "process/write",
            json!({"processId": "early", "chunk": "", "writeId": "w"}),
        ),
    ] {
        let (code, message) = client.request_err(method, params).await;
        assert_eq!(
            (code, message.as_str()),
            (
                INVALID_REQUEST,
                "client must call initialize before using exec methods"
            ),
            "{method}"
        );
    }
    // Between initialize and initialized.
    client
        .request_ok("initialize", json!({"clientName": "test"}))
        .await;
    let (code, message) = client
        .request_err("process/start", sh("early", "echo early"))
        .await;
    assert_eq!(
        (code, message.as_str()),
        (
            INVALID_REQUEST,
            "client must send initialized before using exec methods"
        )
    );
    client.notify("initialized", json!({})).await;
    client.start_process(sh("early", "echo early")).await;
    let events = client.collect_process_events("early").await;
    assert_eq!(output_text(&events, None), "early\n");
    assert_unharmed(&mut server, &mut bystander, Some(&mut client)).await;
}

#[tokio::test]
async fn initialize_without_client_name_is_refused() {
    let (mut server, mut bystander, _) = setup().await;
    let mut client = server.connect().await;
    let (code, message) = client.request_err("initialize", json!({})).await;
    assert_eq!(code, INVALID_PARAMS, "{message}");
    assert!(
        message.contains("clientName"),
        "the message names clientName: {message}"
    );
    // A failed initialize may be retried.
    client.initialize().await;
    assert_unharmed(&mut server, &mut bystander, Some(&mut client)).await;
}

#[tokio::test]
async fn second_initialize_is_refused() {
    let (mut server, mut bystander, mut client) = setup().await;
    let (code, message) = client
        .request_err("initialize", json!({"clientName": "again"}))
        .await;
    assert_eq!(
        (code, message.as_str()),
        (
            INVALID_REQUEST,
            "initialize may only be sent once per connection"
        )
    );
    let (code, message) = client
        .request_err(
            "initialize",
            json!({"clientName": "again", "resumeSessionId": bystander.session_id}),
        )
        .await;
    assert_eq!(
        code, INVALID_REQUEST,
        "a resume as second initialize: {message}"
    );
    assert_unharmed(&mut server, &mut bystander, Some(&mut client)).await;
}

#[tokio::test]
async fn unknown_method_is_refused() {
    let (mut server, mut bystander, mut client) = setup().await;
    let (code, message) = client.request_err("process/frobnicate", json!({})).await;
    assert_eq!(code, METHOD_NOT_FOUND, "{message}");
    assert_unharmed(&mut server, &mut bystander, Some(&mut client)).await;
}

#[tokio::test]
async fn unknown_notification_closes_the_connection() {
    let (mut server, mut bystander, mut client) = setup().await;
    client.notify("process/frobnicate", json!({})).await;
    client.wait_for_close().await;
    assert_unharmed(&mut server, &mut bystander, None).await;
}

/// The largest message the server reads (protocol.md): 128 MiB.
const MAX_MESSAGE_BYTES: usize = 128 << 20;

/// A WebSocket frame over 128 MiB is answered with an error with id -1 and then the connection
/// is closed, with no other message between. The frame is refused on its header, so the test
/// writes only a header announcing 128 MiB + 1 bytes (masked, as a client's must be) and no
/// payload: the same path as a real one, without sending 128 MiB.
#[tokio::test]
async fn websocket_message_over_128_mib_is_answered_with_id_minus_one_then_closed() {
    let (mut server, mut bystander, mut client) = setup().await;
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(MAX_MESSAGE_BYTES as u64 + 1).to_be_bytes());
    header.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    client.write_raw_bytes(&header).await;
    assert_refused_with_id_minus_one_then_closed(
        &mut client,
        &format!("message too large: the limit is {MAX_MESSAGE_BYTES} bytes"),
    )
    .await;
    assert_unharmed(&mut server, &mut bystander, None).await;
}

/// Over stdio, a line longer than 128 MiB (the real thing: 128 MiB + 1 bytes without a newline,
/// every byte of which the server reads) is answered with an error with id -1, then the server
/// ends the connection, which over stdio is its exit.
#[tokio::test]
async fn stdio_line_over_128_mib_is_answered_with_id_minus_one_then_closed() {
    let (mut server, mut client) = StdioServer::start(&[]).await;
    client.initialize().await;
    client
        .write_raw_bytes(&vec![b'x'; MAX_MESSAGE_BYTES + 1])
        .await;
    assert_refused_with_id_minus_one_then_closed(
        &mut client,
        &format!("message too large: the limit is {MAX_MESSAGE_BYTES} bytes"),
    )
    .await;
    assert!(server.wait_for_exit().await.success());
}
