//! A connection seen as two channels of messages ([`Transport`]), what goes on them
//! ([`Outgoing`], [`Text`], [`Piece`]s), and the bounds of those channels. `ws.rs` and `stdio.rs`
//! make one from a socket or a pipe pair; `Transport::channels` makes one in memory for tests.

use tokio::sync::mpsc;

use super::message::Incoming;

/// Largest message accepted in one frame or line by default (a limit of the protocol, declared
/// there). The client library always uses it; the server's is `--max-message-bytes`.
pub use crate::protocol::MAX_MESSAGE_BYTES;

/// Messages read from the peer waiting to be handled. Small: a slow handler slows its reader.
pub(super) const INCOMING_QUEUE: usize = 64;
/// Encoded messages waiting for the writer. Bounded so a slow peer slows only its producers; the
/// server's process output is also bounded in bytes ([`Outgoing::Budgeted`]).
pub(super) const OUTGOING_QUEUE: usize = 256;

/// Pieces of one [`Outgoing::Pieces`] message waiting for the writer. Each is up to a few hundred
/// KiB, so two in flight keep the writer busy while the producer makes the next.
pub const PIECES_QUEUE: usize = 2;

/// The JSON text of one message, shared and cheap to clone: the output log keeps a slice of a
/// `process/output` notification (its base64) for `process/read` without a second copy, and the
/// WebSocket writer sends it as is. (tungstenite's type: it is what a text frame carries.)
pub type Text = tokio_tungstenite::tungstenite::Utf8Bytes;

/// One piece of a message sent in pieces.
#[derive(Debug)]
pub enum Piece {
    /// More of the message's text.
    More(String),
    /// The rest of it: the message is complete.
    Last(String),
}

/// One message to the peer.
#[derive(Debug)]
pub enum Outgoing {
    /// A whole message.
    Message(Text),
    /// A message too large to hold at once (an `fs/readFile` answer of 64 MiB is 89 MB of
    /// JSON), made while it is sent: the writer sends nothing else until its [`Piece::Last`]
    /// (as WebSocket continuation frames of one text message, or one stdio line). If the
    /// producer gives up before that (a read error half-way), the message cannot be completed
    /// or taken back, so the writer ends the connection: the peer sees the call lost, never a
    /// truncated answer.
    Pieces(Pieces),
    /// A whole message holding its size in a connection's byte budget (the server's process
    /// output, `--max-outgoing-bytes`): the permit goes back when the writer has handed the
    /// text to the socket, so what waits in the queue is bounded in bytes, not only in count.
    Budgeted(Text, tokio::sync::OwnedSemaphorePermit),
}

/// A message in pieces: `head`, then every piece of `body`, then `tail`.
#[derive(Debug)]
pub struct Pieces {
    pub head: String,
    pub body: mpsc::Receiver<Piece>,
    pub tail: &'static str,
}

impl From<String> for Outgoing {
    fn from(text: String) -> Self {
        Self::Message(text.into())
    }
}

impl From<Text> for Outgoing {
    fn from(text: Text) -> Self {
        Self::Message(text)
    }
}

impl Outgoing {
    /// The whole text of a [`Outgoing::Message`] (tests), or of pieces collected until the last.
    pub async fn into_text(self) -> Option<String> {
        match self {
            Self::Message(text) | Self::Budgeted(text, _) => Some(text.as_str().to_owned()),
            Self::Pieces(mut pieces) => {
                let mut text = pieces.head;
                loop {
                    match pieces.body.recv().await? {
                        Piece::More(s) => text.push_str(&s),
                        Piece::Last(s) => {
                            text.push_str(&s);
                            text.push_str(pieces.tail);
                            return Some(text);
                        }
                    }
                }
            }
        }
    }
}

/// One connection, seen as two channels of messages.
pub struct Transport {
    /// Parsed messages from the peer, in arrival order. `None` when the peer is gone.
    pub incoming: mpsc::Receiver<Incoming>,
    /// Encoded messages to the peer. The writer ends once every clone is dropped.
    pub outgoing: mpsc::Sender<Outgoing>,
}

impl Transport {
    /// Two connected in-memory ends, for tests: messages written on one are read by the other.
    pub fn channels() -> (mpsc::Sender<Incoming>, mpsc::Receiver<Outgoing>, Transport) {
        let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
        let (out_tx, out_rx) = mpsc::channel(OUTGOING_QUEUE);
        (
            in_tx,
            out_rx,
            Transport {
                incoming: in_rx,
                outgoing: out_tx,
            },
        )
    }
}
