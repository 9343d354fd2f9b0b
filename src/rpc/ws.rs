//! WebSocket transport: one reader task that parses frames into [`Incoming`] messages, one writer
//! task that sends encoded messages as text frames (batched per flush) and pings every 30 s.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::task::TaskTracker;

use super::{INCOMING_QUEUE, Incoming, MAX_MESSAGE_BYTES, OUTGOING_QUEUE, Transport};

/// How often the server pings an idle peer.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Frame and message limits for both ends.
pub fn config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// Starts the reader and writer tasks of one WebSocket and returns its channels.
pub fn spawn<S>(ws: WebSocketStream<S>, tracker: &TaskTracker) -> Transport
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A TCP socket gets TCP_QUICKACK re-armed after every frame read: a peer with Nagle on (the
    // default) that sends a notification and then a request (`initialized` then `process/read`,
    // the first thing a resuming client does) would otherwise hold the request until our delayed
    // ACK, ~40 ms (measured by `scripts/bench`, "resume"). Through a duplicate of the fd (one more
    // fd per connection), closed with this reader, so the socket's lifetime is unchanged.
    let quickack = (ws.get_ref() as &dyn std::any::Any)
        .downcast_ref::<tokio::net::TcpStream>()
        .and_then(|tcp| std::os::fd::AsFd::as_fd(tcp).try_clone_to_owned().ok());
    let (mut sink, mut stream) = ws.split();
    let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel::<String>(OUTGOING_QUEUE);

    tracker.spawn(async move {
        loop {
            // Stop reading once nobody handles what we read (the connection is over).
            let frame = tokio::select! {
                frame = stream.next() => frame,
                _ = in_tx.closed() => break,
            };
            let Some(frame) = frame else { break };
            if let Some(fd) = &quickack {
                let _ = rustix::net::sockopt::set_tcp_quickack(fd, true);
            }
            let incoming = match frame {
                Ok(Message::Text(text)) => Incoming::parse(text.as_bytes()),
                Ok(Message::Binary(bytes)) => Incoming::parse(&bytes),
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(tungstenite::Error::Capacity(err)) => {
                    tracing::debug!(%err, "message too large");
                    let _ = in_tx.send(Incoming::TooLarge(MAX_MESSAGE_BYTES)).await;
                    break;
                }
                Err(err) => {
                    tracing::debug!(%err, "websocket read ended");
                    break;
                }
            };
            if in_tx.send(incoming).await.is_err() {
                break;
            }
        }
    });

    tracker.spawn(async move {
        // The first ping is one interval away. (Not `interval()` then a first `tick().await`: that
        // tick waits for the timer wheel's next 1 ms turn, which delayed every connection's first
        // answer, the `initialize` one, by ~1 ms: `scripts/bench`, "sessions" and "resume".)
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = out_rx.recv() => {
                    let Some(msg) = msg else {
                        let _ = sink.send(Message::Close(None)).await;
                        break;
                    };
                    if sink.feed(Message::text(msg)).await.is_err() {
                        break;
                    }
                    // Batch whatever else is already queued into the same flush.
                    let mut failed = false;
                    for _ in 0..64 {
                        let Ok(msg) = out_rx.try_recv() else { break };
                        if sink.feed(Message::text(msg)).await.is_err() {
                            failed = true;
                            break;
                        }
                    }
                    if failed || sink.flush().await.is_err() {
                        break;
                    }
                }
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });

    Transport {
        incoming: in_rx,
        outgoing: out_tx,
    }
}
