//! The two ways to serve: WebSocket connections on a bound listener (one task per connection),
//! or exactly one connection over stdin/stdout. Both return only after every task the server
//! started has ended and every managed process group has been killed.

use std::time::Duration;

use tokio::net::TcpListener;

use super::config::ServerConfig;
use super::connection;
use super::http::{self, Door};
use super::state::ServerState;

/// Serves WebSocket connections on a bound listener until `shutdown` completes; `door` says
/// whether the port speaks TLS and who may upgrade.
pub async fn run_ws(
    listener: TcpListener,
    config: ServerConfig,
    door: Door,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let ping = config.ping_interval;
    let head_timeout = config.request_head_timeout;
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
                let door = door.clone();
                state.tracker.spawn(async move {
                    tracing::debug!(%peer, "connection");
                    state2.connection_opened();
                    let transport = match &door.tls {
                        None => http::accept(stream, None, &door, peer, &state2, ping).await,
                        Some(tls) => {
                            // The TLS stream hides the socket: the transport gets its number
                            // (the TLS stream owns it, and the transport holds the stream).
                            let socket = Some(std::os::fd::AsRawFd::as_raw_fd(&stream));
                            let handshake = tls.acceptor().accept(stream);
                            match tokio::time::timeout(head_timeout, handshake).await {
                                Ok(Ok(tls_stream)) => {
                                    http::accept(tls_stream, socket, &door, peer, &state2, ping)
                                        .await
                                }
                                Ok(Err(err)) => {
                                    tracing::debug!(%peer, %err, "TLS handshake failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    None
                                }
                            }
                        }
                    };
                    if let Some(transport) = transport {
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
