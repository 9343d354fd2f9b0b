//! [`ExecServerClient`]: one exec-server session that survives dropped transports. Connecting,
//! the first handshake, typed calls. Processes are started in `process.rs`, files moved in
//! `fs.rs` (both add methods to it); what happens when a transport drops is `recovery.rs`.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::CallError;
use super::connector::{self, ChildGroup, Connect, WebSocketConnector};
use super::error::ClientError;
use super::recovery::{EncodedParams, Inner, State, Transition};
use super::status::{ClientOptions, ClientStats, ConnectionStatus};
use super::table::ProcessTable;
use crate::protocol::method;
use crate::protocol::session::{EnvironmentInfo, InitializeParams, InitializeResult};

/// Ends the client's tasks (and kills a stdio child's process group) when the last user-facing
/// clone of the client is dropped. The client's own tasks do not hold it.
struct Guard {
    /// Stops every task of the client.
    cancel: CancellationToken,
    /// The server child of [`ExecServerClient::spawn_stdio`].
    _child: Option<ChildGroup>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A connection to one exec-server session that survives dropped transports. Cheap to clone;
/// the connection ends when the last clone and the last [`ProcessHandle`] are gone.
#[derive(Clone)]
pub struct ExecServerClient {
    /// Shared state.
    pub(super) inner: Arc<Inner>,
    /// Held by user-facing clones only; see [`Guard`].
    _guard: Arc<Guard>,
}

impl ExecServerClient {
    /// Connects to `ws://HOST:PORT` or `wss://HOST:PORT` and starts a new session; the options'
    /// bearer token goes with every connection (see [`WebSocketConnector::with_options`]).
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Self, ClientError> {
        let connector = WebSocketConnector::with_options(url, &options)?;
        Self::connect_with(Arc::new(connector), options).await
    }

    /// Connects with `connector` (also used for every resume) and starts a new session.
    pub async fn connect_with(
        connector: Arc<dyn Connect>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        Self::open(connector, options, None).await
    }

    /// Opens the first connection with `connector` and initializes: a new session, or the
    /// resume of `resume_session_id`.
    async fn open(
        connector: Arc<dyn Connect>,
        options: ClientOptions,
        resume_session_id: Option<String>,
    ) -> Result<Self, ClientError> {
        let tracker = TaskTracker::new();
        let transport = connector.connect(&tracker).await?;
        let target = connector.target();
        Self::handshake(
            transport,
            Some(connector),
            None,
            tracker,
            options,
            target,
            resume_session_id,
        )
        .await
    }

    /// Connects to `ws://HOST:PORT` or `wss://HOST:PORT` and resumes the detached session
    /// `session_id` (one a client that went away left behind) instead of starting a new one. Its
    /// processes are not followed by this client; `list_processes` finds them, and
    /// [`ExecServerClient::signal_process`] / [`ExecServerClient::terminate_process`] reach them.
    /// A session still attached to another connection answers -32010
    /// ([`ClientError::Server`]); an unknown or expired one -32600.
    pub async fn resume(
        url: &str,
        session_id: &str,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let connector = WebSocketConnector::with_options(url, &options)?;
        Self::open(Arc::new(connector), options, Some(session_id.to_string())).await
    }

    /// Spawns `command` (e.g. `codex exec-server --listen stdio`, perhaps behind `ssh`) in a
    /// process group of its own and speaks to it over its stdin/stdout. The group is killed when
    /// the client goes away. Such a transport cannot be reopened: when it ends, the session is
    /// lost.
    pub async fn spawn_stdio(
        command: std::process::Command,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let tracker = TaskTracker::new();
        let target = format!("{command:?}");
        let (transport, child) = connector::spawn_stdio(command, &tracker)?;
        Self::handshake(transport, None, Some(child), tracker, options, target, None).await
    }

    /// Builds the client around its first transport and runs `initialize`/`initialized`.
    async fn handshake(
        transport: crate::rpc::Transport,
        connector: Option<Arc<dyn Connect>>,
        child: Option<ChildGroup>,
        tracker: TaskTracker,
        options: ClientOptions,
        target: String,
        resume_session_id: Option<String>,
    ) -> Result<Self, ClientError> {
        let cancel = CancellationToken::new();
        let inner = Arc::new(Inner {
            options,
            connector,
            state: watch::Sender::new(State::Connecting),
            status: watch::Sender::new(ConnectionStatus::Connecting),
            session_id: OnceLock::new(),
            environment: Mutex::new(None),
            processes: ProcessTable::default(),
            next_request_id: AtomicI64::new(1),
            next_conn_id: AtomicU64::new(1),
            tracker,
            cancel: cancel.clone(),
            stats: Mutex::new(ClientStats::default()),
            watches: Default::default(),
            acks: Default::default(),
        });
        let client = Self {
            inner: inner.clone(),
            _guard: Arc::new(Guard {
                cancel,
                _child: child,
            }),
        };
        let conn = inner.open(transport);
        let params = InitializeParams {
            client_name: inner.options.client_name.clone(),
            resume_session_id,
        };
        let lost = |what: &str| ClientError::Connect {
            target: target.clone(),
            message: format!("the connection closed {what}"),
        };
        let request = conn.request(inner.next_request_id(), method::INITIALIZE, &params);
        let answer =
            match inner.options.initialize_timeout {
                None => request.await,
                Some(limit) => tokio::time::timeout(limit, request).await.map_err(|_| {
                    ClientError::Connect {
                        target: target.clone(),
                        message: format!("no answer to initialize within {limit:?}"),
                    }
                })?,
            };
        let result: InitializeResult = match answer {
            Ok(value) => decode(method::INITIALIZE, value)?,
            Err(CallError::Server { code, message }) => {
                return Err(ClientError::Server {
                    method: method::INITIALIZE.into(),
                    code,
                    message,
                });
            }
            Err(CallError::NotSent | CallError::Lost) => return Err(lost("during initialize")),
        };
        let _ = inner.session_id.set(result.session_id);
        *inner.environment.lock().unwrap() = result.environment_info;
        conn.notify(method::INITIALIZED, json!({}))
            .await
            .map_err(|_| lost("after initialize"))?;
        if !inner.apply(Transition::Resumed(conn)) {
            return Err(lost("right after initialize"));
        }
        Ok(client)
    }

    /// The session id (what a resume names).
    pub fn session_id(&self) -> &str {
        self.inner
            .session_id
            .get()
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The executor's description from the last `initialize` answer.
    pub fn environment_info(&self) -> Option<EnvironmentInfo> {
        self.inner.environment.lock().unwrap().clone()
    }

    /// The connection's state now.
    pub fn status(&self) -> ConnectionStatus {
        self.inner.status.borrow().clone()
    }

    /// A receiver that sees every change of the connection's state.
    pub fn watch_status(&self) -> watch::Receiver<ConnectionStatus> {
        self.inner.status.subscribe()
    }

    /// Counters since the client started.
    pub fn stats(&self) -> ClientStats {
        *self.inner.stats.lock().unwrap()
    }

    /// Calls `method` and decodes its answer. Waits while the client is recovering; if the
    /// transport drops with the call in flight, [`replay`] decides.
    pub async fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<R, ClientError> {
        let params = serde_json::to_value(params).map_err(|e| ClientError::Decode {
            method: method.to_string(),
            message: format!("params do not encode: {e}"),
        })?;
        decode(method, self.inner.call_value(method, params).await?)
    }

    /// [`Self::call`] with params the caller encoded itself ([`EncodedParams`]).
    pub(crate) async fn call_encoded<R: DeserializeOwned>(
        &self,
        method: &str,
        params: &EncodedParams,
    ) -> Result<R, ClientError> {
        decode(method, self.inner.call_params(method, params).await?)
    }

    /// `environment/info`.
    pub async fn environment(&self) -> Result<EnvironmentInfo, ClientError> {
        self.call(method::ENVIRONMENT_INFO, &json!({})).await
    }

    /// Ends the session from our side: every call and handle fails with [`ClientError::Closed`].
    pub fn close(&self) {
        self.inner.apply(Transition::GaveUp(ClientError::Closed));
        self.inner.cancel.cancel();
    }
}

/// Decodes an answer.
fn decode<R: DeserializeOwned>(method: &str, value: serde_json::Value) -> Result<R, ClientError> {
    serde_json::from_value(value).map_err(|e| ClientError::Decode {
        method: method.to_string(),
        message: e.to_string(),
    })
}
