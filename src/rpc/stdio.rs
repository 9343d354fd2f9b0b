//! stdio transport: newline-delimited JSON on any reader/writer pair (the server's stdin and
//! stdout, or a child's pipes on the client side).

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::message::Incoming;
use super::transport::{
    INCOMING_QUEUE, MAX_MESSAGE_BYTES, OUTGOING_QUEUE, Outgoing, Piece, Transport,
};

/// Starts the reader and writer tasks over a byte-stream pair and returns its channels.
pub fn spawn<R, W>(reader: R, writer: W, tracker: &TaskTracker) -> Transport
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    spawn_with_limit(reader, writer, tracker, MAX_MESSAGE_BYTES)
}

/// [`spawn`], reading lines of at most `max_message_bytes`.
pub fn spawn_with_limit<R, W>(
    reader: R,
    writer: W,
    tracker: &TaskTracker,
    max_message_bytes: usize,
) -> Transport
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
    let (out_tx, mut out_rx) = mpsc::channel::<Outgoing>(OUTGOING_QUEUE);

    tracker.spawn(async move {
        // `take` bounds a line that never ends; the limit is re-armed for every line.
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        loop {
            line.clear();
            let limit = max_message_bytes as u64 + 1;
            let mut bounded = AsyncReadExt::take(&mut reader, limit);
            let read = tokio::select! {
                read = bounded.read_until(b'\n', &mut line) => read,
                _ = in_tx.closed() => break,
            };
            match read {
                Ok(0) => break,
                Ok(_) => {}
                Err(err) => {
                    tracing::debug!(%err, "stdio read ended");
                    break;
                }
            }
            // The newline ends the message; it is not part of it.
            if line.strip_suffix(b"\n").unwrap_or(&line).len() > max_message_bytes {
                let _ = in_tx.send(Incoming::TooLarge(max_message_bytes)).await;
                break;
            }
            let trimmed = line.trim_ascii();
            if trimmed.is_empty() {
                continue;
            }
            if in_tx.send(Incoming::parse(trimmed)).await.is_err() {
                break;
            }
        }
    });

    tracker.spawn(async move {
        let mut writer = tokio::io::BufWriter::new(writer);
        while let Some(msg) = out_rx.recv().await {
            if write_line(&mut writer, msg).await.is_err() {
                break;
            }
            if out_rx.is_empty() && writer.flush().await.is_err() {
                break;
            }
        }
        let _ = writer.flush().await;
        let _ = writer.shutdown().await;
    });

    Transport {
        incoming: in_rx,
        outgoing: out_tx,
    }
}

/// Writes one message and its newline. A message in pieces that is abandoned half-way is an
/// error: the line cannot be completed, so the connection ends.
async fn write_line<W: AsyncWrite + Unpin>(writer: &mut W, msg: Outgoing) -> std::io::Result<()> {
    match msg {
        Outgoing::Message(text) | Outgoing::Budgeted(text, _) => {
            writer.write_all(text.as_bytes()).await?
        }
        Outgoing::Pieces(mut pieces) => {
            writer.write_all(pieces.head.as_bytes()).await?;
            loop {
                match pieces.body.recv().await {
                    Some(Piece::More(text)) => writer.write_all(text.as_bytes()).await?,
                    Some(Piece::Last(text)) => {
                        writer.write_all(text.as_bytes()).await?;
                        writer.write_all(pieces.tail.as_bytes()).await?;
                        break;
                    }
                    None => {
                        tracing::debug!("a message in pieces was abandoned: closing");
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
            }
        }
    }
    writer.write_all(b"\n").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pieces_make_one_line_and_an_abandoned_one_is_an_error() {
        let (tx, body) = mpsc::channel(4);
        tx.send(Piece::More("a".into())).await.unwrap();
        tx.send(Piece::Last("b".into())).await.unwrap();
        let pieces = |body| {
            Outgoing::Pieces(super::super::Pieces {
                head: "[".into(),
                body,
                tail: "]",
            })
        };
        let mut out = Vec::new();
        write_line(&mut out, pieces(body)).await.unwrap();
        assert_eq!(out, b"[ab]\n");

        let (tx, body) = mpsc::channel(4);
        tx.send(Piece::More("a".into())).await.unwrap();
        drop(tx);
        let mut out = Vec::new();
        assert!(write_line(&mut out, pieces(body)).await.is_err());
        assert!(
            !out.ends_with(b"\n"),
            "an abandoned message must not look whole"
        );
    }
}
