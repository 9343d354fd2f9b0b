//! The router and the handlers driven directly: a [`Call`] built in the test, no socket.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::route;
use crate::protocol::{ErrorCode, Family, Method};
use crate::rpc::RpcError;
use crate::server::call::{Answer, Call};
use crate::server::config::ServerConfig;
use crate::server::state::ServerState;

/// A call on a fresh session of a fresh server, as connection 1; the receiver is the session's
/// notification channel (kept open so notifications have somewhere to go).
fn call() -> (Call, mpsc::Receiver<crate::rpc::Outgoing>) {
    let state = ServerState::new(ServerConfig::default());
    let (tx, rx) = mpsc::channel(16);
    let session = state.sessions.create(1, tx.clone()).unwrap();
    let call = Call {
        state,
        session,
        connection: 1,
        fs_handles: Arc::default(),
        http: Arc::new(crate::server::http_streams::HttpStreams::new(tx.clone())),
        missing_watch: Arc::new(crate::server::missing_watch::MissingWatch::new(tx.clone())),
        fs_watches: Arc::new(crate::server::fs_watch::Watches::new(
            tx,
            Default::default(),
        )),
    };
    (call, rx)
}

fn copy(call: &Call) -> Call {
    Call {
        state: call.state.clone(),
        session: call.session.clone(),
        connection: call.connection,
        fs_handles: call.fs_handles.clone(),
        http: call.http.clone(),
        missing_watch: call.missing_watch.clone(),
        fs_watches: call.fs_watches.clone(),
    }
}

async fn routed(call: &Call, method: Method, params: Value) -> Result<Value, RpcError> {
    match route(copy(call), method, params).await? {
        Answer::Value(v) | Answer::ValueThen(v, _) => Ok(v),
        Answer::Encoded(text) => Ok(serde_json::from_str(&text).unwrap()),
        Answer::Pieces(_) => panic!("{method}: a small answer in pieces"),
    }
}

#[tokio::test]
async fn every_client_request_of_the_table_is_routed_to_a_handler() {
    let (call, _rx) = call();
    let mut routed_count = 0;
    for &method in Method::ALL {
        let spec = method.spec();
        let outcome = routed(&call, method, json!({})).await;
        if method.is_request() && spec.family != Family::Handshake {
            // `{}` is not valid params for most: what matters is that a handler judged them.
            if let Err(err) = &outcome {
                assert_ne!(err.code, ErrorCode::MethodNotFound, "{method}: {err:?}");
            }
            routed_count += 1;
        } else {
            let err = outcome.expect_err("not a request the router serves");
            assert_eq!(err.code, ErrorCode::MethodNotFound, "{method}");
            assert_eq!(
                err.message,
                format!("exec-server does not implement `{}`", method.name())
            );
        }
    }
    assert_eq!(
        routed_count, 29,
        "every environment, exec, fs and http request"
    );
}

#[tokio::test]
async fn process_start_with_an_empty_argv_is_refused_naming_it() {
    let (call, _rx) = call();
    let err = routed(
        &call,
        Method::ProcessStart,
        json!({"processId": "p", "argv": [], "cwd": "file:///"}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidParams);
    assert_eq!(err.message, "argv must not be empty");
}

#[tokio::test]
async fn process_read_of_an_unknown_id_is_an_invalid_request_naming_it() {
    let (call, _rx) = call();
    let err = routed(&call, Method::ProcessRead, json!({"processId": "nope"}))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest);
    assert_eq!(err.message, "unknown process id nope");
}

#[tokio::test]
async fn signal_to_an_unknown_process_is_an_empty_result_like_the_reference() {
    let (call, _rx) = call();
    let v = routed(
        &call,
        Method::ProcessSignal,
        json!({"processId": "nope", "signal": "interrupt"}),
    )
    .await
    .unwrap();
    assert_eq!(v, json!({}));
}

#[tokio::test]
async fn a_started_process_runs_to_closed_and_its_output_is_readable() {
    let (call, _rx) = call();
    let started = routed(
        &call,
        Method::ProcessStart,
        json!({"processId": "p", "argv": ["sh", "-c", "printf hi"], "cwd": "file:///"}),
    )
    .await
    .unwrap();
    assert_eq!(started["processId"], "p");
    let mut after = 0;
    let mut output = String::new();
    loop {
        let read = routed(
            &call,
            Method::ProcessRead,
            json!({"processId": "p", "afterSeq": after, "waitMs": 5000}),
        )
        .await
        .unwrap();
        for chunk in read["chunks"].as_array().unwrap() {
            let bytes = crate::b64::decode(chunk["chunk"].as_str().unwrap().as_bytes()).unwrap();
            output.push_str(&String::from_utf8(bytes).unwrap());
        }
        after = read["nextSeq"].as_u64().unwrap() - 1;
        if read["closed"] == true {
            assert_eq!(read["exitCode"], 0);
            break;
        }
    }
    assert_eq!(output, "hi");
}
