//! The state machine's edges, and the resume against a scripted in-memory server: replay of
//! in-flight calls (one scenario per entry of the replay table), catch-up reads, the errors that
//! fail one process, and the deadline that fails the session.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::*;
use crate::client::connection::test_conn;
use crate::client::replay::{self, Replay};
use crate::client::{
    ClientOptions, Connect, ConnectFuture, ConnectionStatus, ExecServerClient, ProcessEvent,
    ProcessHandle, SequenceError, start_params,
};
use crate::protocol::process::Stream;
use crate::rpc::{Incoming, Transport};

/// How long any wait of these tests may take.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The transitions, one test per edge.

fn dropped(conn: u64, can_reconnect: bool) -> Transition {
    Transition::Dropped {
        conn,
        reason: "gone".into(),
        can_reconnect,
    }
}

fn kind(state: Option<State>) -> &'static str {
    match state {
        None => "unchanged",
        Some(State::Connecting) => "connecting",
        Some(State::Connected(_)) => "connected",
        Some(State::Recovering { .. }) => "recovering",
        Some(State::Failed(_)) => "failed",
    }
}

#[test]
fn connecting_handshake_connects() {
    let s = State::Connecting;
    assert_eq!(
        kind(next(&s, Transition::Resumed(test_conn(1, false)))),
        "connected"
    );
}

#[test]
fn connected_drop_of_the_current_transport_starts_recovering() {
    let s = State::Connected(test_conn(1, false));
    assert_eq!(kind(next(&s, dropped(1, true))), "recovering");
}

#[test]
fn connected_drop_of_an_older_transport_changes_nothing() {
    let s = State::Connected(test_conn(2, false));
    assert_eq!(kind(next(&s, dropped(1, true))), "unchanged");
}

#[test]
fn connected_drop_of_a_transport_that_cannot_reconnect_fails() {
    let s = State::Connected(test_conn(1, false));
    assert_eq!(kind(next(&s, dropped(1, false))), "failed");
}

#[test]
fn recovering_resume_connects() {
    let s = State::Recovering { reason: "x".into() };
    assert_eq!(
        kind(next(&s, Transition::Resumed(test_conn(2, false)))),
        "connected"
    );
}

#[test]
fn recovering_resume_on_a_transport_that_already_closed_changes_nothing() {
    let s = State::Recovering { reason: "x".into() };
    assert_eq!(
        kind(next(&s, Transition::Resumed(test_conn(2, true)))),
        "unchanged"
    );
}

#[test]
fn recovering_drop_of_an_attempts_transport_changes_nothing() {
    let s = State::Recovering { reason: "x".into() };
    assert_eq!(kind(next(&s, dropped(2, true))), "unchanged");
}

#[test]
fn recovering_giving_up_fails() {
    let s = State::Recovering { reason: "x".into() };
    assert_eq!(
        kind(next(&s, Transition::GaveUp(ClientError::Closed))),
        "failed"
    );
}

#[test]
fn connected_close_fails() {
    let s = State::Connected(test_conn(1, false));
    assert_eq!(
        kind(next(&s, Transition::GaveUp(ClientError::Closed))),
        "failed"
    );
}

#[test]
fn failed_is_terminal() {
    let s = State::Failed(ClientError::Closed);
    assert_eq!(
        kind(next(&s, Transition::Resumed(test_conn(3, false)))),
        "unchanged"
    );
    assert_eq!(
        kind(next(&s, Transition::GaveUp(ClientError::Closed))),
        "unchanged"
    );
}

// ---------------------------------------------------------------------------------------------
// A scripted server.

/// The server's end of one in-memory transport.
struct Peer {
    /// Messages to the client.
    to_client: mpsc::Sender<Incoming>,
    /// What the client sent.
    from_client: mpsc::Receiver<crate::rpc::Outgoing>,
}

impl Peer {
    async fn next(&mut self) -> Value {
        let text = tokio::time::timeout(DEADLINE, self.from_client.recv())
            .await
            .expect("the client sent nothing in time")
            .expect("the client closed the transport")
            .into_text()
            .await
            .expect("a whole message");
        serde_json::from_str(&text).unwrap()
    }

    /// The next request; asserts its method. Returns its id and params.
    async fn request(&mut self, method: &str) -> (i64, Value) {
        let m = self.next().await;
        assert_eq!(m["method"], method, "{m}");
        (m["id"].as_i64().expect("a request"), m["params"].clone())
    }

    async fn send(&self, message: Value) {
        let _ = self
            .to_client
            .send(Incoming::parse(message.to_string().as_bytes()))
            .await;
    }

    async fn answer(&self, id: i64, result: Value) {
        self.send(json!({"id": id, "result": result})).await;
    }

    async fn error(&self, id: i64, code: i64, message: &str) {
        self.send(json!({"id": id, "error": {"code": code, "message": message}}))
            .await;
    }

    /// `initialize` (asserting `resumeSessionId`) answered with session `s1`, then `initialized`.
    async fn handshake(&mut self, resume: Option<&str>) {
        let (id, params) = self.request(method::INITIALIZE).await;
        assert_eq!(
            params.get("resumeSessionId").and_then(Value::as_str),
            resume
        );
        self.answer(id, json!({"sessionId": "s1"})).await;
        let m = self.next().await;
        assert_eq!(m["method"], method::INITIALIZED);
    }

    async fn output(&self, process: &str, seq: u64, text: &str) {
        self.send(json!({"method": method::PROCESS_OUTPUT, "params": {
            "processId": process, "seq": seq, "stream": "stdout", "chunk": b64(text)}}))
            .await;
    }
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Hands out in-memory transports; every connect gives the test a [`Peer`].
struct FakeConnector {
    /// Where new peers go.
    peers: mpsc::UnboundedSender<Peer>,
    /// Refuse every connect (the server is unreachable).
    refuse: Arc<AtomicBool>,
}

impl Connect for FakeConnector {
    fn connect<'a>(&'a self, _tracker: &'a TaskTracker) -> ConnectFuture<'a> {
        Box::pin(async move {
            if self.refuse.load(Ordering::SeqCst) {
                return Err(ClientError::Connect {
                    target: "fake".into(),
                    message: "connection refused".into(),
                });
            }
            let (to_client, from_client, transport): (_, _, Transport) = Transport::channels();
            let _ = self.peers.send(Peer {
                to_client,
                from_client,
            });
            Ok(transport)
        })
    }

    fn target(&self) -> String {
        "fake".into()
    }
}

/// The test's side: accepts peers.
struct FakeServer {
    /// New transports.
    peers: mpsc::UnboundedReceiver<Peer>,
    /// See [`FakeConnector::refuse`].
    refuse: Arc<AtomicBool>,
}

impl FakeServer {
    async fn accept(&mut self) -> Peer {
        tokio::time::timeout(DEADLINE, self.peers.recv())
            .await
            .expect("the client did not connect in time")
            .expect("connector gone")
    }
}

fn fast_options() -> ClientOptions {
    ClientOptions {
        retry_interval: Duration::from_millis(1),
        ..ClientOptions::default()
    }
}

/// A client connected to a scripted server, past the handshake.
async fn connected(options: ClientOptions) -> (ExecServerClient, FakeServer, Peer) {
    let (tx, rx) = mpsc::unbounded_channel();
    let refuse = Arc::new(AtomicBool::new(false));
    let connector = Arc::new(FakeConnector {
        peers: tx,
        refuse: refuse.clone(),
    });
    let mut server = FakeServer { peers: rx, refuse };
    let client = tokio::spawn(ExecServerClient::connect_with(connector, options));
    let mut peer = server.accept().await;
    peer.handshake(None).await;
    let client = client.await.unwrap().expect("connect");
    assert_eq!(client.session_id(), "s1");
    (client, server, peer)
}

/// Starts process `id` through the scripted server.
async fn start(client: &ExecServerClient, peer: &mut Peer, id: &str) -> ProcessHandle {
    let started = {
        let client = client.clone();
        let params = start_params(id, ["true"], "file:///".into());
        tokio::spawn(async move { client.start(params).await })
    };
    let (rid, params) = peer.request(method::PROCESS_START).await;
    assert_eq!(params["processId"], id);
    peer.answer(rid, json!({"processId": id, "sandboxType": "none"}))
        .await;
    started.await.unwrap().expect("start")
}

async fn recv(handle: &mut ProcessHandle) -> Result<ProcessEvent, ClientError> {
    tokio::time::timeout(DEADLINE, handle.recv())
        .await
        .expect("no event in time")
        .expect("the handle ended")
}

async fn recv_output(handle: &mut ProcessHandle) -> (u64, String) {
    match recv(handle).await.expect("an event") {
        ProcessEvent::Output { seq, data, .. } => (seq, String::from_utf8(data).unwrap()),
        other => panic!("expected output, got {other:?}"),
    }
}

/// Waits until the client reports `Recovering`.
async fn wait_recovering(client: &ExecServerClient) {
    let mut status = client.watch_status();
    tokio::time::timeout(
        DEADLINE,
        status.wait_for(|s| matches!(s, ConnectionStatus::Recovering { .. })),
    )
    .await
    .expect("recovering in time")
    .unwrap();
}

fn chunk(seq: u64, text: &str) -> Value {
    json!({"seq": seq, "stream": "stdout", "chunk": b64(text)})
}

fn read_answer(chunks: Vec<Value>, next_seq: u64) -> Value {
    json!({"chunks": chunks, "nextSeq": next_seq, "exited": false, "exitCode": null,
           "closed": false, "failure": null, "sandboxDenied": false})
}

/// Params that make each method's request in the replay scenario.
fn params_for(name: &str) -> Value {
    match name {
        method::PROCESS_START => {
            serde_json::to_value(start_params("p1", ["true"], "file:///".into())).unwrap()
        }
        method::PROCESS_WRITE => json!({"processId": "p1", "chunk": "aGk=", "writeId": "w-7"}),
        method::PROCESS_READ => json!({"processId": "p1", "afterSeq": 7, "waitMs": 25}),
        method::PROCESS_SIGNAL => json!({"processId": "p1", "signal": "interrupt"}),
        method::PROCESS_TERMINATE => json!({"processId": "p1"}),
        method::ENVIRONMENT_INFO => json!({}),
        _ => json!({"path": "file:///tmp/x", "handleId": "h1"}),
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

#[tokio::test]
async fn every_method_of_the_replay_table_follows_its_policy_after_a_drop() {
    let calls: Vec<_> = replay::calls().collect();
    let requests = crate::protocol::Method::ALL
        .iter()
        .filter(|m| m.is_request() && m.spec().family != crate::protocol::Family::Handshake)
        .count();
    assert_eq!(
        calls.len(),
        requests,
        "every client call of the table: {calls:?}"
    );
    for (name, policy, _why) in calls {
        let (client, mut server, mut peer) = connected(fast_options()).await;
        let call = {
            let inner = client.inner.clone();
            tokio::spawn(async move { inner.call_value(name, params_for(name)).await })
        };
        let (_, sent) = peer.request(name).await;
        drop(peer);
        let mut peer = server.accept().await;
        peer.handshake(Some("s1")).await;
        match policy {
            Replay::Resend => {
                let (id, again) = peer.request(name).await;
                assert_eq!(again, sent, "{name} must be resent unchanged");
                peer.answer(id, json!({"ok": true})).await;
                assert_eq!(call.await.unwrap(), Ok(json!({"ok": true})), "{name}");
            }
            Replay::Fail => {
                let err = call.await.unwrap().unwrap_err();
                assert_eq!(
                    err,
                    ClientError::Disconnected {
                        method: name.to_string()
                    },
                    "{name}"
                );
                // Not resent: the next thing the server sees is the next call.
                let probe = {
                    let client = client.clone();
                    tokio::spawn(async move { client.environment().await })
                };
                let (id, _) = peer.request(method::ENVIRONMENT_INFO).await;
                peer.error(id, -32603, "probe").await;
                assert!(probe.await.unwrap().is_err());
            }
            Replay::TerminateAndReport => {
                let (id, params) = peer.request(method::PROCESS_TERMINATE).await;
                assert_eq!(params, json!({"processId": "p1"}));
                peer.answer(id, json!({"running": true})).await;
                let err = call.await.unwrap().unwrap_err();
                assert_eq!(
                    err,
                    ClientError::StartAmbiguous {
                        process_id: "p1".into()
                    }
                );
                assert!(err.to_string().contains("unknown"), "{err}");
            }
            Replay::Redone | Replay::NotSent => unreachable!("not a client call: {name}"),
        }
    }
}

#[tokio::test]
async fn calls_made_while_recovering_wait_for_the_resume() {
    let (client, mut server, peer) = connected(fast_options()).await;
    drop(peer);
    wait_recovering(&client).await;
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.environment().await })
    };
    let mut peer = server.accept().await;
    peer.handshake(Some("s1")).await;
    let (id, _) = peer.request(method::ENVIRONMENT_INFO).await;
    peer.error(id, -32603, "after the resume").await;
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.server_code(), Some(-32603));
}

#[tokio::test]
async fn resume_refused_as_still_attached_is_retried() {
    let (client, mut server, peer) = connected(fast_options()).await;
    drop(peer);
    let mut second = server.accept().await;
    let (id, _) = second.request(method::INITIALIZE).await;
    second
        .error(id, -32010, "session s1 is already attached")
        .await;
    let mut third = server.accept().await;
    third.handshake(Some("s1")).await;
    let mut status = client.watch_status();
    tokio::time::timeout(
        DEADLINE,
        status.wait_for(|s| *s == ConnectionStatus::Connected),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(client.stats().recoveries, 1);
}

#[tokio::test]
async fn resume_of_an_unknown_session_fails_every_handle() {
    let (client, mut server, mut peer) = connected(fast_options()).await;
    let mut handle = start(&client, &mut peer, "p1").await;
    drop(peer);
    let mut peer = server.accept().await;
    let (id, _) = peer.request(method::INITIALIZE).await;
    peer.error(id, -32600, "unknown session id s1").await;
    let err = recv(&mut handle).await.unwrap_err();
    assert!(matches!(err, ClientError::SessionLost { .. }), "{err}");
    assert!(err.to_string().contains("unknown session id"), "{err}");
    assert!(handle.recv().await.is_none());
    assert!(matches!(
        client.environment().await,
        Err(ClientError::SessionLost { .. })
    ));
}

#[tokio::test]
async fn notifications_are_published_in_seq_order_without_duplicates() {
    let (client, _server, mut peer) = connected(fast_options()).await;
    let mut handle = start(&client, &mut peer, "p1").await;
    for seq in [4, 1, 3, 1, 2, 4] {
        peer.output("p1", seq, &format!("{seq}")).await;
    }
    for want in 1..=4 {
        assert_eq!(recv_output(&mut handle).await, (want, want.to_string()));
    }
}

#[tokio::test]
async fn catch_up_publishes_only_what_is_new_and_keeps_early_notifications() {
    let (client, mut server, mut peer) = connected(fast_options()).await;
    let mut handle = start(&client, &mut peer, "p1").await;
    peer.output("p1", 1, "a").await;
    peer.output("p1", 2, "b").await;
    assert_eq!(recv_output(&mut handle).await, (1, "a".into()));
    assert_eq!(recv_output(&mut handle).await, (2, "b".into()));
    drop(peer);

    let mut peer = server.accept().await;
    let (id, _) = peer.request(method::INITIALIZE).await;
    // The resumed session pushes seq 5 before the initialize answer.
    peer.output("p1", 5, "e").await;
    peer.answer(id, json!({"sessionId": "s1"})).await;
    assert_eq!(peer.next().await["method"], method::INITIALIZED);
    // The catch-up read starts after the last published seq; its answer repeats 2 and 5.
    let (id, params) = peer.request(method::PROCESS_READ).await;
    assert_eq!(params["afterSeq"], 2);
    let chunks = vec![chunk(2, "b"), chunk(3, "c"), chunk(4, "d"), chunk(5, "e")];
    peer.answer(id, read_answer(chunks, 6)).await;
    for (seq, text) in [(3, "c"), (4, "d"), (5, "e")] {
        assert_eq!(recv_output(&mut handle).await, (seq, text.into()));
    }
    peer.output("p1", 6, "f").await;
    assert_eq!(recv_output(&mut handle).await, (6, "f".into()));
    assert_eq!(
        client.stats().catch_up_bytes,
        3,
        "c, d, e: past the last published seq"
    );
}

#[tokio::test]
async fn catch_up_reads_on_while_the_answer_was_cut_short() {
    let (client, mut server, mut peer) = connected(fast_options()).await;
    let mut handle = start(&client, &mut peer, "p1").await;
    drop(peer);
    let mut peer = server.accept().await;
    peer.handshake(Some("s1")).await;
    let (id, params) = peer.request(method::PROCESS_READ).await;
    assert_eq!(params["afterSeq"], 0);
    // Cut by maxBytes: nextSeq is the last returned seq + 1.
    peer.answer(id, read_answer(vec![chunk(1, "a"), chunk(2, "b")], 3))
        .await;
    let (id, params) = peer.request(method::PROCESS_READ).await;
    assert_eq!(params["afterSeq"], 2);
    let mut last = read_answer(vec![chunk(4, "d")], 6);
    last["exited"] = json!(true);
    last["exitCode"] = json!(3);
    last["closed"] = json!(true);
    peer.answer(id, last).await;
    assert_eq!(recv_output(&mut handle).await, (1, "a".into()));
    assert_eq!(recv_output(&mut handle).await, (2, "b".into()));
    assert_eq!(
        recv(&mut handle).await.unwrap(),
        ProcessEvent::Exited {
            seq: 3,
            exit_code: 3,
            sandbox_denied: false
        }
    );
    assert_eq!(recv_output(&mut handle).await, (4, "d".into()));
    assert_eq!(
        recv(&mut handle).await.unwrap(),
        ProcessEvent::Closed { seq: 5 }
    );
    assert!(handle.recv().await.is_none());
}

#[tokio::test]
async fn gap_fails_only_that_process_and_terminates_it() {
    let (client, mut server, mut peer) = connected(fast_options()).await;
    let mut a = start(&client, &mut peer, "a").await;
    let mut b = start(&client, &mut peer, "b").await;
    peer.output("a", 1, "a1").await;
    assert_eq!(recv_output(&mut a).await, (1, "a1".into()));
    drop(peer);

    let mut peer = server.accept().await;
    peer.handshake(Some("s1")).await;
    // Answers every read (an answer whose nextSeq is its last chunk + 1 may have been cut by
    // maxBytes, so the client reads on) until the failed process is terminated on the server,
    // once the session is back.
    let (id, params) = loop {
        let m = peer.next().await;
        let (id, params) = (m["id"].as_i64().unwrap(), m["params"].clone());
        if m["method"] == method::PROCESS_TERMINATE {
            break (id, params);
        }
        assert_eq!(m["method"], method::PROCESS_READ, "{m}");
        let answer = match (params["processId"].as_str(), params["afterSeq"].as_u64()) {
            // Seqs 2 and 3 are gone: retention kept only 4.
            (Some("a"), Some(1)) => read_answer(vec![chunk(4, "a4")], 5),
            (Some("a"), _) => read_answer(vec![], 5),
            (Some("b"), Some(0)) => read_answer(vec![chunk(1, "b1")], 2),
            _ => read_answer(vec![], 2),
        };
        peer.answer(id, answer).await;
    };
    assert_eq!(params["processId"], "a");
    peer.answer(id, json!({"running": true})).await;

    let err = recv(&mut a).await.unwrap_err();
    match &err {
        ClientError::Recovery {
            process_id,
            source: SequenceError::Gap { first_missing, .. },
        } => {
            assert_eq!(process_id, "a");
            assert_eq!(*first_missing, 2);
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    assert!(err.to_string().contains("no longer retained"), "{err}");
    assert!(a.recv().await.is_none());

    assert_eq!(recv_output(&mut b).await, (1, "b1".into()));
    peer.output("b", 2, "b2").await;
    assert_eq!(recv_output(&mut b).await, (2, "b2".into()));
}

#[tokio::test]
async fn catch_up_exit_without_code_fails_that_process() {
    let (client, mut server, mut peer) = connected(fast_options()).await;
    let mut handle = start(&client, &mut peer, "p1").await;
    drop(peer);
    let mut peer = server.accept().await;
    peer.handshake(Some("s1")).await;
    let (id, _) = peer.request(method::PROCESS_READ).await;
    let mut answer = read_answer(vec![], 2);
    answer["exited"] = json!(true);
    peer.answer(id, answer).await;
    let err = recv(&mut handle).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Recovery {
                source: SequenceError::ExitWithoutCode { seq: 1 },
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn catch_up_refused_for_an_expired_process_fails_that_process() {
    let (client, mut server, mut peer) = connected(fast_options()).await;
    let mut handle = start(&client, &mut peer, "p1").await;
    drop(peer);
    let mut peer = server.accept().await;
    peer.handshake(Some("s1")).await;
    let (id, _) = peer.request(method::PROCESS_READ).await;
    peer.error(id, -32600, "unknown process id p1").await;
    let err = recv(&mut handle).await.unwrap_err();
    assert!(matches!(err, ClientError::CatchUp { .. }), "{err:?}");
    assert!(err.to_string().contains("unknown process id"), "{err}");
}

#[tokio::test]
async fn write_in_flight_is_resent_with_the_same_write_id() {
    let (client, mut server, mut peer) = connected(fast_options()).await;
    let handle = start(&client, &mut peer, "p1").await;
    let control = handle.control();
    let write = tokio::spawn(async move { control.write(b"hello").await });
    let (_, first) = peer.request(method::PROCESS_WRITE).await;
    drop(peer);
    let mut peer = server.accept().await;
    peer.handshake(Some("s1")).await;
    let (id, _) = peer.request(method::PROCESS_READ).await;
    peer.answer(id, read_answer(vec![], 1)).await;
    let (id, second) = peer.request(method::PROCESS_WRITE).await;
    assert_eq!(second["writeId"], first["writeId"]);
    assert_eq!(second["chunk"], b64("hello"));
    peer.answer(id, json!({"status": "accepted"})).await;
    assert_eq!(
        write.await.unwrap(),
        Ok(crate::protocol::process::WriteStatus::Accepted)
    );
}

#[tokio::test(start_paused = true)]
async fn recovery_deadline_fails_every_handle_and_every_call() {
    let options = ClientOptions {
        retry_interval: Duration::from_millis(100),
        recovery_deadline: Duration::from_secs(25),
        ..ClientOptions::default()
    };
    let (client, server, mut peer) = connected(options).await;
    let mut handle = start(&client, &mut peer, "p1").await;
    server.refuse.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    drop(peer);
    let err = match handle.recv().await {
        Some(Err(err)) => err,
        other => panic!("expected a terminal failure, got {other:?}"),
    };
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(25) && waited < Duration::from_secs(26),
        "{waited:?}"
    );
    assert!(matches!(err, ClientError::SessionLost { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("could not resume the session within 25s"),
        "{err}"
    );
    assert!(err.to_string().contains("connection refused"), "{err}");
    assert!(handle.recv().await.is_none());
    assert!(matches!(
        client.environment().await,
        Err(ClientError::SessionLost { .. })
    ));
    assert!(matches!(client.status(), ConnectionStatus::Failed { .. }));
}

#[tokio::test]
async fn events_of_a_process_still_arrive_on_the_handle_while_it_is_read() {
    // The handle's channel is bounded: a burst larger than it is delivered as the handle reads.
    let options = ClientOptions {
        event_buffer: 2,
        ..fast_options()
    };
    let (client, _server, mut peer) = connected(options).await;
    let mut handle = start(&client, &mut peer, "p1").await;
    let sender = tokio::spawn(async move {
        for seq in 1..=50 {
            peer.output("p1", seq, "x").await;
        }
        peer
    });
    for want in 1..=50 {
        assert_eq!(recv_output(&mut handle).await.0, want);
    }
    drop(sender.await.unwrap());
    let _ = Stream::Stdout;
}

#[tokio::test]
async fn unconfirmed_starts_are_caught_up_if_the_server_knows_them() {
    let (client, mut server, peer) = connected(fast_options()).await;
    // Two starts whose answers the caller has not seen yet when the transport drops.
    let mut known = crate::client::process::new_handle(&client, "known").unwrap();
    let mut unknown = crate::client::process::new_handle(&client, "unknown").unwrap();
    drop(peer);
    let mut peer = server.accept().await;
    peer.handshake(Some("s1")).await;
    for _ in 0..3 {
        let (id, params) = peer.request(method::PROCESS_READ).await;
        match (params["processId"].as_str(), params["afterSeq"].as_u64()) {
            (Some("known"), Some(0)) => peer.answer(id, read_answer(vec![chunk(1, "k")], 2)).await,
            (Some("known"), _) => peer.answer(id, read_answer(vec![], 2)).await,
            _ => peer.error(id, -32600, "unknown process id unknown").await,
        }
    }
    assert_eq!(recv_output(&mut known).await, (1, "k".into()));
    // Not failed: its start call (here: none) decides what became of it.
    peer.output("unknown", 1, "late start").await;
    assert_eq!(recv_output(&mut unknown).await, (1, "late start".into()));
}
