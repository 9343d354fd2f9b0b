//! Connection handling over the in-memory transport: scenarios the network cannot show, because
//! the peer that would receive the answer is already gone.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::serve;
use crate::rpc::{Incoming, Outgoing, Transport};
use crate::server::config::ServerConfig;
use crate::server::state::ServerState;

async fn send(tx: &mpsc::Sender<Incoming>, v: Value) {
    tx.send(Incoming::from_value(v)).await.unwrap();
}

/// Next message with `id`, skipping notifications, under a deadline.
async fn answer(rx: &mut mpsc::Receiver<Outgoing>, id: i64) -> Value {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let text = rx
                .recv()
                .await
                .expect("connection closed before the answer")
                .into_text()
                .await
                .expect("a whole message");
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == json!(id) {
                return v;
            }
        }
    })
    .await
    .expect("no answer within 10 s")
}

/// A connection served by `state`, initialized: its input, its output, its task, the session id.
async fn initialized(
    state: &Arc<ServerState>,
) -> (
    mpsc::Sender<Incoming>,
    mpsc::Receiver<Outgoing>,
    tokio::task::JoinHandle<()>,
    String,
) {
    let (tx, mut rx, transport) = Transport::channels();
    let task = tokio::spawn(serve(transport, state.clone()));
    send(
        &tx,
        json!({"id": 1, "method": "initialize", "params": {"clientName": "t"}}),
    )
    .await;
    let session = answer(&mut rx, 1).await["result"]["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    send(&tx, json!({"method": "initialized"})).await;
    (tx, rx, task, session)
}

#[tokio::test]
async fn long_poll_on_old_connection_fails_after_resume() {
    let state = ServerState::new(ServerConfig::default());
    let (a_in, mut a_out, a, session) = initialized(&state).await;
    send(
        &a_in,
        json!({"id": 2, "method": "process/start", "params": {
        "processId": "quiet", "argv": ["sleep", "5"], "cwd": "file:///"}}),
    )
    .await;
    assert!(answer(&mut a_out, 2).await.get("result").is_some());
    send(
        &a_in,
        json!({"id": 3, "method": "process/read", "params": {
        "processId": "quiet", "afterSeq": 0, "waitMs": 30000}}),
    )
    .await;
    send(&a_in, json!({"id": 4, "method": "environment/info"})).await;
    answer(&mut a_out, 4).await;

    // A's peer goes away: its reader ends, the session detaches, the long-poll is still parked.
    drop(a_in);
    a.await.unwrap();

    let (b_in, mut b_out, b_transport) = Transport::channels();
    let _b = tokio::spawn(serve(b_transport, state.clone()));
    send(
        &b_in,
        json!({"id": 1, "method": "initialize",
        "params": {"clientName": "t", "resumeSessionId": session}}),
    )
    .await;
    assert_eq!(
        answer(&mut b_out, 1).await["result"]["sessionId"],
        json!(session)
    );

    let failed = answer(&mut a_out, 3).await;
    assert_eq!(failed["error"]["code"], json!(-32600), "{failed}");
    assert_eq!(
        failed["error"]["message"],
        json!("session has been resumed by another connection")
    );
    state.sessions.kill_all();
}

#[tokio::test]
async fn long_poll_on_attached_connection_ends_with_output() {
    let state = ServerState::new(ServerConfig::default());
    let (a_in, mut a_out, a, _) = initialized(&state).await;
    send(
        &a_in,
        json!({"id": 2, "method": "process/start", "params": {
        "processId": "p", "argv": ["sh", "-c", "read x; echo $x"], "cwd": "file:///",
        "pipeStdin": true}}),
    )
    .await;
    answer(&mut a_out, 2).await;
    send(
        &a_in,
        json!({"id": 3, "method": "process/read", "params": {
        "processId": "p", "afterSeq": 0, "waitMs": 30000}}),
    )
    .await;
    send(
        &a_in,
        json!({"id": 4, "method": "process/write", "params": {
        "processId": "p", "chunk": "aGkK", "writeId": "w"}}),
    )
    .await;
    // Whichever answer comes first, the read ends with the output, not with an error.
    let read = answer(&mut a_out, 3).await;
    assert_eq!(
        read["result"]["chunks"][0]["chunk"],
        json!("aGkK"),
        "{read}"
    );
    drop(a_in);
    a.await.unwrap();
    state.sessions.kill_all();
}
