//! Two tasks on the in-memory transport exchange typed chat messages framed
//! by `FrameCodec`: the sender encodes each `Chat` with postcard and sends it
//! as a message frame; the receiver decodes the frames and prints them.
//!
//! Run it with `cargo run -p knotwork-wire --example memory_frames`;
//! `cargo test -p knotwork-wire` runs the same exchange as a test.

use std::error::Error;

use futures::{SinkExt, StreamExt};
use knotwork_core::{Listener, MemoryTransport, PeerAddr, Transport};
use knotwork_wire::{Frame, FrameCodec, Message, decode, encode};
use serde::{Deserialize, Serialize};
use tokio_util::codec::Framed;

type BoxError = Box<dyn Error + Send + Sync>;

/// One chat line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Chat {
    from: String,
    text: String,
}

impl Message for Chat {
    const NAME: &'static str = "example/chat/1";
    // from: 1-byte length + up to 32 bytes; text: 2-byte length + up to 256 bytes.
    const MAX_BYTES: usize = (1 + 32) + (2 + 256);
}

/// What the sender sends, in order.
const LINES: [&str; 3] = ["hello over a memory pipe", "each line is one frame", "bye"];

/// What one run of the exchange did.
struct Summary {
    sent_frames: usize,
    sent_bytes: usize,
    received: Vec<Chat>,
}

/// Receives frames on `listener` until the sender closes, decoding each
/// `Chat` and printing it.
async fn receive(mut listener: impl Listener) -> Result<Vec<Chat>, BoxError> {
    let (conn, from) = listener.accept().await?;
    let mut frames = Framed::new(conn, FrameCodec::new());
    let mut received = Vec::new();
    while let Some(frame) = frames.next().await {
        let frame = frame?;
        if frame.msg_id != Chat::ID {
            println!(
                "receiver: skipping unknown message id {:#010x}",
                frame.msg_id
            );
            continue;
        }
        let chat: Chat = decode(&frame.payload)?;
        println!(
            "receiver: {} (via {from}) says {:?} [{} payload bytes]",
            chat.from,
            chat.text,
            frame.payload.len()
        );
        received.push(chat);
    }
    Ok(received)
}

/// Runs the exchange: a receiver task and a sender on one memory network.
async fn run() -> Result<Summary, BoxError> {
    let net = MemoryTransport::new();
    let listener = net.listen(&PeerAddr::Mem(0)).await?;
    let addr = listener.local_addr();
    let receiver = tokio::spawn(receive(listener));

    let mut frames = Framed::new(net.dial(&addr).await?, FrameCodec::new());
    let mut sent_bytes = 0;
    for text in LINES {
        let chat = Chat {
            from: "ada".into(),
            text: text.into(),
        };
        let frame = Frame::message(Chat::ID, encode(&chat)?);
        sent_bytes += frame.encoded_len();
        // feed() only buffers; close() below flushes all frames in one write.
        frames.feed(frame).await?;
    }
    frames.close().await?;

    Ok(Summary {
        sent_frames: LINES.len(),
        sent_bytes,
        received: receiver.await??,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let summary = run().await?;
    println!(
        "sent {} frames ({} bytes on the wire), received and decoded {} messages of type {} (id {:#010x})",
        summary.sent_frames,
        summary.sent_bytes,
        summary.received.len(),
        Chat::NAME,
        Chat::ID
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_line_arrives_in_order() {
        let summary = run().await.unwrap();
        let texts: Vec<&str> = summary.received.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, LINES);
        assert!(summary.received.iter().all(|c| c.from == "ada"));
        assert_eq!(summary.sent_frames, LINES.len());
        let payloads: usize = summary
            .received
            .iter()
            .map(|c| encode(c).unwrap().len())
            .sum();
        assert_eq!(
            summary.sent_bytes,
            LINES.len() * knotwork_wire::HEADER_LEN + payloads
        );
    }
}
