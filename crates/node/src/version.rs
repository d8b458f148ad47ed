//! The version exchange: the first message each side sends after the handshake.
//!
//! Both sides send a [`Version`] at once and then read the peer's, so the
//! exchange costs one round trip. A node that will not take the connection
//! (too many peers, a ban) sends a [`Disconnect`] instead; the dialer then
//! fails with [`NodeError::Refused`] and the reason.

use futures::{SinkExt, StreamExt};
use knotwork_core::{MAX_ADDR_TEXT_LEN, PeerAddr};
use knotwork_wire::{Frame, FrameCodec, FrameKind, Message, decode, encode};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, FramedParts};

use crate::error::{DisconnectReason, MAX_REASON_LEN, NodeError};

/// Most protocol names a [`Version`] lists.
pub const MAX_PROTOCOLS: usize = 32;
/// Most listen addresses a [`Version`] lists.
pub const MAX_LISTEN_ADDRS: usize = 8;
/// Longest protocol name or node version text, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// What a node tells a peer about itself right after the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The node software and version, e.g. `knotwork/0.1.0`.
    pub node_version: String,
    /// Names of the protocols the node runs.
    pub protocols: Vec<String>,
    /// Addresses the node accepts connections on (text form of [`PeerAddr`]).
    pub listen_addrs: Vec<String>,
    /// The address this node sees the peer's connection come from.
    pub observed_addr: String,
}

impl Message for Version {
    const NAME: &'static str = "knot/version/1";
    // node_version: 1 (len) + 64;
    // protocols:    1 (count) + 32 × (1 + 64) = 2081;
    // listen_addrs: 1 (count) + 8 × (2 + 160) = 1297 (relay addresses are long);
    // observed:     2 + 160.
    // Total 3605, rounded up to 4 KiB.
    const MAX_BYTES: usize = 4 * 1024;
}

/// Sent before closing a connection, to say why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnect {
    /// Why.
    pub reason: DisconnectReason,
}

impl Message for Disconnect {
    const NAME: &'static str = "knot/disconnect/1";
    // reason: 1 (variant) + 2 (text length varint) + MAX_REASON_LEN (128).
    const MAX_BYTES: usize = 3 + MAX_REASON_LEN;
}

/// Cuts a text to `max` bytes on a character boundary.
fn cap(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

impl Version {
    /// Our version message, cut to the limits above.
    pub fn new(protocols: &[&'static str], listen: &[PeerAddr], observed: &PeerAddr) -> Self {
        Self {
            node_version: cap(
                format!("knotwork/{}", env!("CARGO_PKG_VERSION")),
                MAX_NAME_LEN,
            ),
            protocols: protocols
                .iter()
                .take(MAX_PROTOCOLS)
                .map(|p| cap((*p).to_owned(), MAX_NAME_LEN))
                .collect(),
            listen_addrs: listen
                .iter()
                .take(MAX_LISTEN_ADDRS)
                .map(|a| cap(a.to_string(), MAX_ADDR_TEXT_LEN))
                .collect(),
            observed_addr: cap(observed.to_string(), MAX_ADDR_TEXT_LEN),
        }
    }

    /// The listen addresses, parsed; the first bad one is an error.
    pub fn parsed_listen_addrs(&self) -> Result<Vec<PeerAddr>, NodeError> {
        self.listen_addrs
            .iter()
            .take(MAX_LISTEN_ADDRS)
            .map(|a| a.parse().map_err(NodeError::from))
            .collect()
    }
}

/// The largest frame accepted during the version exchange: a version or a
/// disconnect message, nothing bigger.
const EXCHANGE_MAX_FRAME_LEN: usize = if Version::MAX_BYTES > Disconnect::MAX_BYTES {
    Version::MAX_BYTES
} else {
    Disconnect::MAX_BYTES
};

/// Sends `ours` and reads the peer's [`Version`] (or its [`Disconnect`]).
/// Returns the peer's version and the stream with any bytes read past it.
pub(crate) async fn exchange<S>(
    io: S,
    ours: &Version,
) -> Result<(Version, FramedParts<S, FrameCodec>), NodeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(io, FrameCodec::with_max_frame_len(EXCHANGE_MAX_FRAME_LEN));
    framed
        .send(Frame::message(Version::ID, encode(ours)?))
        .await
        .map_err(NodeError::from_wire)?;
    let frame = match framed.next().await {
        Some(frame) => frame.map_err(NodeError::from_wire)?,
        None => {
            return Err(NodeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    };
    let theirs = match (frame.kind, frame.msg_id) {
        (FrameKind::Message, id) if id == Version::ID => decode::<Version>(&frame.payload)?,
        (FrameKind::Message, id) if id == Disconnect::ID => {
            let d: Disconnect = decode(&frame.payload)?;
            return Err(NodeError::Refused(d.reason));
        }
        (_, id) => return Err(NodeError::UnexpectedFirstFrame(id)),
    };
    Ok((theirs, framed.into_parts()))
}

/// Refuses a connection: sends a [`Disconnect`] in place of a version.
pub(crate) async fn refuse<S>(io: S, reason: DisconnectReason) -> Result<(), NodeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(io, FrameCodec::new());
    framed
        .send(Frame::message(
            Disconnect::ID,
            encode(&Disconnect { reason })?,
        ))
        .await?;
    SinkExt::<Frame>::close(&mut framed).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> PeerAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn both_sides_learn_each_other() {
        let (a, b) = tokio::io::duplex(8192);
        let va = Version::new(
            &["ping"],
            &[addr("tcp/127.0.0.1:1")],
            &addr("tcp/127.0.0.1:9"),
        );
        let vb = Version::new(&["ping", "addr"], &[], &addr("tcp/127.0.0.1:8"));
        let (ra, rb) = tokio::join!(exchange(a, &va), exchange(b, &vb));
        assert_eq!(ra.unwrap().0, vb);
        assert_eq!(rb.unwrap().0, va);
        assert_eq!(
            va.parsed_listen_addrs().unwrap(),
            vec![addr("tcp/127.0.0.1:1")]
        );
    }

    #[tokio::test]
    async fn a_refusal_carries_its_reason() {
        let (a, b) = tokio::io::duplex(8192);
        let v = Version::new(&[], &[], &addr("mem/1"));
        let (ra, rb) = tokio::join!(exchange(a, &v), refuse(b, DisconnectReason::TooManyPeers));
        rb.unwrap();
        assert!(matches!(
            ra,
            Err(NodeError::Refused(DisconnectReason::TooManyPeers))
        ));
    }

    #[tokio::test]
    async fn another_first_frame_is_refused() {
        let (a, b) = tokio::io::duplex(8192);
        let v = Version::new(&[], &[], &addr("mem/1"));
        let mut peer = Framed::new(b, FrameCodec::new());
        peer.send(Frame::message(77, bytes::Bytes::from_static(b"x")))
            .await
            .unwrap();
        assert!(matches!(
            exchange(a, &v).await,
            Err(NodeError::UnexpectedFirstFrame(77))
        ));
    }

    #[tokio::test]
    async fn a_first_frame_larger_than_a_version_is_refused() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let v = Version::new(&[], &[], &addr("mem/1"));
        let mut peer = Framed::new(b, FrameCodec::new());
        let big = bytes::Bytes::from(vec![0u8; EXCHANGE_MAX_FRAME_LEN + 1]);
        peer.send(Frame::message(Version::ID, big)).await.unwrap();
        assert!(matches!(
            exchange(a, &v).await,
            Err(NodeError::Wire(
                knotwork_wire::WireError::FrameTooLarge { .. }
            ))
        ));
    }

    #[tokio::test]
    async fn eof_before_version_is_an_io_error() {
        let (a, b) = tokio::io::duplex(8192);
        drop(b);
        let v = Version::new(&[], &[], &addr("mem/1"));
        assert!(matches!(exchange(a, &v).await, Err(NodeError::Io(_))));
    }
}
