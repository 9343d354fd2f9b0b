//! The two ways to serve: WebSocket connections on a bound listener (one task per connection),
//! or exactly one connection over stdin/stdout. Both return only after every task the server
//! started has ended and every managed process group has been killed.

use std::time::Duration;

use tokio::net::TcpListener;

use super::config::ServerConfig;
use super::connection;
use super::http;
use super::state::ServerState;

/// Serves WebSocket connections on a bound listener until `shutdown` completes.
pub async fn run_ws(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let ping = config.ping_interval;
    let state = ServerState::new(config);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(err) => {
                        // EMFILE and friends: keep serving the connections we have.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state2 = state.clone();
                state.tracker.spawn(async move {
                    tracing::debug!(%peer, "connection");
                    state2.connection_opened();
                    if let Some(transport) = http::accept(stream, &state2, ping).await {
                        connection::serve(transport, state2.clone()).await;
                    }
                    state2.connection_closed();
                });
            }
        }
    }
    drop(listener);
    state.shutdown().await;
    Ok(())
}

/// Serves exactly one connection over stdin/stdout; returns when it ends or on `shutdown`.
pub async fn run_stdio(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let state = ServerState::new(config);
    let transport = crate::rpc::stdio::spawn_with_limit(
        tokio::io::stdin(),
        tokio::io::stdout(),
        &state.tracker,
        state.limits.max_message_bytes,
    );
    tokio::select! {
        _ = shutdown => {}
        _ = connection::serve(transport, state.clone()) => {}
    }
    state.shutdown().await;
    Ok(())
}
