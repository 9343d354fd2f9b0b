//! JSON-RPC framing. This module alone sees frames: it turns a WebSocket or stdio into a pair of
//! message channels ([`Transport`]), and it is the one place where domain errors become JSON-RPC
//! error objects ([`RpcError`]). Handlers never know which transport they are on.
//!
//! This file only declares the parts and re-exports what users name: `message.rs` (parsing a
//! frame), `encode.rs` (what is sent), `error.rs`, `transport.rs` (the channels), `ws.rs` and
//! `stdio.rs` (the two transports).

pub mod encode;
pub mod error;
pub mod message;
pub mod stdio;
mod tcp_info;
pub mod transport;
pub mod ws;

pub use error::{RpcError, decode_params};
pub use message::{Incoming, Notification, Request, RequestId};
pub use transport::{MAX_MESSAGE_BYTES, Outgoing, PIECES_QUEUE, Piece, Pieces, Text, Transport};
