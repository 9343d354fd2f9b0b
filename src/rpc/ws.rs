//! WebSocket transport: one reader task that parses frames into [`Incoming`] messages, one writer
//! task that sends encoded messages as text frames (batched per flush; a message in pieces as one
//! fragmented text message) and pings every 30 s.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::message::Incoming;
use super::transport::{
    INCOMING_QUEUE, MAX_MESSAGE_BYTES, OUTGOING_QUEUE, Outgoing, Piece, Transport,
};

/// How often each end pings its peer, unless told otherwise (`--ping-interval-ms`). A peer that
/// sent nothing at all (not even the pong) for [`SILENT_INTERVALS`] of these is gone.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Ping intervals of silence after which the peer is taken for gone and the connection ends: a
/// peer that vanished without a FIN (a suspended laptop, a pulled cable) would otherwise keep its
/// session attached, and refuse its own resume (-32010), until TCP gave up, many minutes later.
pub const SILENT_INTERVALS: u32 = 2;

/// How long the writer may still send what was queued, and a close, once the reader has ended.
const FLUSH_WHEN_STOPPED: Duration = Duration::from_secs(1);

/// Bytes read from the socket at a time. tungstenite zero-fills this much before every read and
/// keeps it per connection: its default, 128 KiB, made 1000 idle sessions 146 MiB of RSS; 32 KiB
/// makes them 49 MiB, and an 8 MiB `fs/writeFile` no slower (`scripts/bench`, "sessions",
/// "fs/writeFile").
const READ_BUFFER: usize = 32 * 1024;

/// Frame and message limits for both ends.
pub fn config() -> tungstenite::protocol::WebSocketConfig {
    config_with_limit(MAX_MESSAGE_BYTES)
}

/// Frame and message limits, with `max_message_bytes` for one message (and one frame).
pub fn config_with_limit(max_message_bytes: usize) -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// How one end runs its WebSocket: see [`spawn_with`].
pub struct Options {
    /// How often the peer is pinged; it is gone after [`SILENT_INTERVALS`] of silence.
    pub ping_interval: Duration,
    /// The message limit the stream was configured with ([`config_with_limit`]), named in the
    /// error a larger message gets.
    pub max_message_bytes: usize,
    /// Held for as long as the connection reads, and dropped when it stops, before the peer is
    /// sent the close: the server's slot in `--max-connections`.
    pub slot: Option<Box<dyn Send>>,
    /// The descriptor number of the TCP socket under a stream that is not a `TcpStream` itself
    /// (the server's TLS stream), which owns the socket: TCP_QUICKACK and the silence check's
    /// TCP_INFO then work as on a plain socket, through the stream's own descriptor (no
    /// duplicate). `None`: found by downcasting the stream.
    pub socket: Option<std::os::fd::RawFd>,
}

/// Starts the reader and writer tasks of one WebSocket and returns its channels. The writer pings
/// every `ping_interval`; the connection ends when the peer has been silent for
/// [`SILENT_INTERVALS`] of them.
pub fn spawn<S>(ws: WebSocketStream<S>, tracker: &TaskTracker, ping_interval: Duration) -> Transport
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    spawn_with(
        ws,
        tracker,
        Options {
            ping_interval,
            max_message_bytes: MAX_MESSAGE_BYTES,
            slot: None,
            socket: None,
        },
    )
}

/// [`spawn`], with the message limit the stream was configured with and a slot to hold.
pub fn spawn_with<S>(ws: WebSocketStream<S>, tracker: &TaskTracker, options: Options) -> Transport
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Options {
        ping_interval,
        max_message_bytes,
        slot,
        socket,
    } = options;
    // A TCP socket gets TCP_QUICKACK re-armed after every frame read: a peer with Nagle on (the
    // default) that sends a notification and then a request (`initialized` then `process/read`,
    // the first thing a resuming client does) would otherwise hold the request until our delayed
    // ACK, ~40 ms (measured by `scripts/bench`, "resume"). Through a duplicate of the fd (one more
    // fd per connection), closed with this reader, so the socket's lifetime is unchanged.
    // The same duplicate tells the silence check when bytes last arrived. (The server's stream
    // is a TcpStream; the client library's a plain `MaybeTlsStream`.)
    let any = ws.get_ref() as &dyn std::any::Any;
    let tcp = any.downcast_ref::<tokio::net::TcpStream>().or_else(|| {
        match any.downcast_ref::<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>() {
            Some(tokio_tungstenite::MaybeTlsStream::Plain(tcp)) => Some(tcp),
            _ => None,
        }
    });
    // The stream's own descriptor, by number: the reader below holds its half of the stream,
    // which keeps the socket open, for as long as it uses the number (issue 15: one fd per
    // connection, not a duplicate each).
    let tcp_fd = socket
        .or_else(|| tcp.map(std::os::fd::AsRawFd::as_raw_fd))
        .map(super::tcp_info::SocketNumber);
    let (mut sink, mut stream) = ws.split();
    let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(OUTGOING_QUEUE);
    // Either task's end ends the other (and so the socket, once both halves are dropped): a
    // writer that gave up (a message abandoned half-sent, a failed socket) leaves nothing that
    // could answer the peer, and a reader that gave up (the peer silent, or gone) leaves nobody
    // to write to, even if the writer is stuck on a full socket.
    let done = CancellationToken::new();
    let writer_stop = done.clone();
    let silence_limit = ping_interval * SILENT_INTERVALS;

    let reader_stop = done.clone();
    tracker.spawn(async move {
        let _done = reader_stop.clone().drop_guard();
        // Declared after `_done`, so dropped before it: the slot is free before the writer
        // sends the close that tells the peer the connection is over.
        let _slot = slot;
        // When the peer was last heard from. The timer is only re-armed when it fires, not per
        // frame: a streaming peer sends thousands of frames a second.
        let mut heard = tokio::time::Instant::now();
        let silence = tokio::time::sleep(silence_limit);
        tokio::pin!(silence);
        loop {
            // Stop reading once nobody handles what we read (the connection is over).
            let frame = tokio::select! {
                frame = stream.next() => frame,
                _ = in_tx.closed() => break,
                _ = reader_stop.cancelled() => break,
                _ = &mut silence => {
                    // Whole frames, or any bytes at all: a large frame arriving slowly is
                    // no frame for a long while.
                    let mut quiet = heard.elapsed();
                    if let Some(fd) = tcp_fd
                        && let Some(bytes_quiet) = fd.since_last_data_received()
                    {
                        quiet = quiet.min(bytes_quiet);
                    }
                    if quiet >= silence_limit {
                        tracing::debug!(?silence_limit, "peer silent: closing the connection");
                        break;
                    }
                    silence.as_mut().reset(tokio::time::Instant::now() + (silence_limit - quiet));
                    continue;
                }
            };
            heard = tokio::time::Instant::now();
            let Some(frame) = frame else { break };
            if let Some(fd) = tcp_fd {
                fd.quickack();
            }
            let incoming = match frame {
                Ok(Message::Text(text)) => Incoming::parse_str(text.as_str()),
                Ok(Message::Binary(bytes)) => Incoming::parse(&bytes),
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(tungstenite::Error::Capacity(err)) => {
                    tracing::debug!(%err, "message too large");
                    let _ = in_tx.send(Incoming::TooLarge(max_message_bytes)).await;
                    // The connection answers it and ends; the writer sends what it queued once
                    // this reader stops, so stop when the connection has let go.
                    let _ = tokio::time::timeout(FLUSH_WHEN_STOPPED, in_tx.closed()).await;
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
        let _done = writer_stop.clone().drop_guard();
        // The first ping is one interval away. (Not `interval()` then a first `tick().await`: that
        // tick waits for the timer wheel's next 1 ms turn, which delayed every connection's first
        // answer, the `initialize` one, by ~1 ms: `scripts/bench`, "sessions" and "resume".)
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let write = async {
            loop {
                tokio::select! {
                    msg = out_rx.recv() => {
                        let Some(msg) = msg else {
                            let _ = sink.send(Message::Close(None)).await;
                            break;
                        };
                        if send(&mut sink, msg).await.is_err() {
                            break;
                        }
                        // Batch whatever else is already queued into the same flush.
                        let mut failed = false;
                        for _ in 0..64 {
                            let Ok(msg) = out_rx.try_recv() else { break };
                            if send(&mut sink, msg).await.is_err() {
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
        };
        let stopped = tokio::select! {
            _ = write => false,
            // The reader ended (the peer is silent or gone): a send stuck on a full socket
            // must not keep the connection.
            _ = writer_stop.cancelled() => true,
        };
        if stopped {
            // What the connection queued before it ended still goes out, then a close: the
            // error with id -1 for a message it refused (protocol.md). Bounded, as the peer may
            // read nothing.
            let flush = async {
                while let Ok(msg) = out_rx.try_recv() {
                    if send(&mut sink, msg).await.is_err() {
                        return;
                    }
                }
                let _ = sink.send(Message::Close(None)).await;
            };
            let _ = tokio::time::timeout(FLUSH_WHEN_STOPPED, flush).await;
        }
    });

    Transport {
        incoming: in_rx,
        outgoing: out_tx,
    }
}

/// The socket failed, or a message in pieces was abandoned half-sent (then the peer was sent a
/// close, 1011): either way the connection cannot go on.
struct SendError;

/// Queues one message on `sink` (a whole one is fed for the next flush; one in pieces is sent
/// piece by piece as continuation frames, each flushed).
async fn send<S>(sink: &mut S, msg: Outgoing) -> Result<(), SendError>
where
    S: futures_util::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    match msg {
        Outgoing::Message(text) => sink.feed(Message::Text(text)).await.map_err(|_| SendError),
        // The permit is released once the frame is in tungstenite's write buffer (bounded: a
        // feed beyond its size waits for the socket to take the buffer first).
        Outgoing::Budgeted(text, _permit) => {
            sink.feed(Message::Text(text)).await.map_err(|_| SendError)
        }
        Outgoing::Pieces(mut pieces) => {
            let frame = |text: String, opcode, last| {
                Message::Frame(Frame::message(
                    text.into_bytes(),
                    OpCode::Data(opcode),
                    last,
                ))
            };
            sink.send(frame(pieces.head, OpData::Text, false))
                .await
                .map_err(|_| SendError)?;
            loop {
                let (text, last) = match pieces.body.recv().await {
                    Some(Piece::More(text)) => (text, false),
                    Some(Piece::Last(text)) => (text, true),
                    None => {
                        tracing::debug!("a message in pieces was abandoned: closing");
                        // 1011: the server could not complete what it was sending.
                        let close = CloseFrame {
                            code: CloseCode::Error,
                            reason: "a message could not be completed".into(),
                        };
                        let _ = sink.send(Message::Close(Some(close))).await;
                        return Err(SendError);
                    }
                };
                let mut text = text;
                if last {
                    text.push_str(pieces.tail);
                }
                sink.send(frame(text, OpData::Continue, last))
                    .await
                    .map_err(|_| SendError)?;
                if last {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::Pieces;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A server-side transport over an in-memory pipe, and the client's WebSocket on the other
    /// end.
    async fn pair() -> (
        Transport,
        WebSocketStream<tokio::io::DuplexStream>,
        TaskTracker,
    ) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, Some(config())).await;
        let client = WebSocketStream::from_raw_socket(b, Role::Client, Some(config())).await;
        let tracker = TaskTracker::new();
        (spawn(server, &tracker, PING_INTERVAL), client, tracker)
    }

    fn pieces(head: &str, body: mpsc::Receiver<Piece>) -> Outgoing {
        Outgoing::Pieces(Pieces {
            head: head.into(),
            body,
            tail: "]",
        })
    }

    #[tokio::test]
    async fn pieces_arrive_as_one_text_message_between_whole_ones() {
        let (transport, mut client, _tracker) = pair().await;
        let (tx, body) = mpsc::channel(4);
        transport
            .outgoing
            .send("1".to_string().into())
            .await
            .unwrap();
        transport.outgoing.send(pieces("[", body)).await.unwrap();
        transport
            .outgoing
            .send("2".to_string().into())
            .await
            .unwrap();
        for piece in ["a", "b"] {
            tx.send(Piece::More(piece.into())).await.unwrap();
        }
        tx.send(Piece::Last("c".into())).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            match client.next().await {
                Some(Ok(Message::Text(text))) => got.push(text.to_string()),
                other => panic!("expected a text message, got {other:?}"),
            }
        }
        assert_eq!(got, ["1", "[abc]", "2"]);
    }

    /// The client library's side: its stream is a plain `MaybeTlsStream`, and a large message
    /// that the server sends slowly (no whole frame, no ping for several silence limits) is still
    /// received, not taken for a silent server.
    #[tokio::test]
    async fn client_side_receives_a_large_message_sent_slowly() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let text = format!(
                r#"{{"method":"slow","params":{{"data":"{}"}}}}"#,
                "a".repeat(1 << 20)
            );
            let mut frame = vec![0x81, 127];
            frame.extend_from_slice(&(text.len() as u64).to_be_bytes());
            frame.extend_from_slice(text.as_bytes());
            // 10 pieces, 100 ms apart: 1 s, five silence limits of 2 × 100 ms.
            for piece in frame.chunks(frame.len().div_ceil(10)) {
                ws.get_mut().write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ws
        });
        let tcp = tokio::net::TcpStream::connect(url.trim_start_matches("ws://"))
            .await
            .unwrap();
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            &url,
            tokio_tungstenite::MaybeTlsStream::Plain(tcp),
            Some(config()),
        )
        .await
        .unwrap();
        let tracker = TaskTracker::new();
        let mut transport = spawn(ws, &tracker, Duration::from_millis(100));
        let got = tokio::time::timeout(Duration::from_secs(10), transport.incoming.recv())
            .await
            .expect("in time");
        match got {
            Some(Incoming::Notification(n)) => assert_eq!(n.method, "slow"),
            other => panic!("expected the slow message, got {other:?}"),
        }
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn an_abandoned_message_in_pieces_ends_the_connection_without_a_message() {
        let (transport, mut client, _tracker) = pair().await;
        let (tx, body) = mpsc::channel(4);
        transport.outgoing.send(pieces("[", body)).await.unwrap();
        tx.send(Piece::More("a".into())).await.unwrap();
        drop(tx);
        let next = tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("the connection must end");
        assert!(
            !matches!(next, Some(Ok(Message::Text(_)))),
            "got a message: {next:?}"
        );
    }
}
