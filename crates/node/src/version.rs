//! The version exchange: what each side tells the other before the channel
//! opens.
//!
//! Over Noise the versions travel inside the handshake, as early data (see
//! `knotwork_crypto_handshake::Handshake::with_early_data`): the responder's
//! [`Hello`] in XX message 2, the dialer's in message 3 (IK: the
//! confirmation). So the exchange costs no round trip: the dialer has the
//! responder's version when its handshake ends and opens its channel as it
//! sends its last message, as a QUIC client does. Each hello is one frame,
//! a [`Version`] or, from a node that will not take the connection, a
//! [`Disconnect`]; the other side then fails with [`NodeError::Refused`]
//! and the reason. A responder decides when the dialer's first message
//! arrives (too many peers, too many from the dialer's IP, shutting down;
//! over IK, which names the dialer there, a ban); over XX a ban comes after
//! the handshake as a `Disconnect` frame, so the dialer's channel closes
//! with that reason. A dialer decides once it has authenticated the
//! responder (a ban, shutting down, a channel it already has to that peer).
//!
//! Over a transport that authenticates peers itself (QUIC) there is no Noise
//! handshake: both sides send a [`Version`] frame at once and then read the
//! peer's, one round trip.

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use knotwork_core::lock;
use knotwork_core::{MAX_ADDR_TEXT_LEN, PeerAddr, PeerId};
use knotwork_crypto_handshake::{EarlyData, SecureConfig, SecureStream};
use knotwork_wire::{Frame, FrameCodec, FrameKind, Message, decode, encode};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Decoder;
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

/// What a node sends within the handshake: its version, or why it will not
/// take the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hello {
    /// Go on: our version.
    Version(Version),
    /// No: why (sent as a [`Disconnect`]).
    Refuse(DisconnectReason),
}

impl Hello {
    /// The hello as early data: one frame.
    pub fn to_bytes(&self) -> Result<Vec<u8>, NodeError> {
        let codec = FrameCodec::with_max_frame_len(EXCHANGE_MAX_FRAME_LEN);
        let mut out = BytesMut::new();
        match self {
            Self::Version(v) => codec.encode_message(FrameKind::Message, 0, v, &mut out),
            Self::Refuse(reason) => codec.encode_message(
                FrameKind::Message,
                0,
                &Disconnect {
                    reason: reason.clone(),
                },
                &mut out,
            ),
        }
        .map_err(NodeError::from_wire)?;
        Ok(out.to_vec())
    }

    /// The peer's version from its early data: exactly one frame.
    /// Errors: [`NodeError::NoVersion`] if it sent none,
    /// [`NodeError::Refused`] for a [`Disconnect`],
    /// [`NodeError::UnexpectedFirstFrame`] for another message,
    /// [`NodeError::TrailingHello`] for bytes after the frame, and the
    /// wire's errors for a broken one.
    pub fn version_in(early: &[u8]) -> Result<Version, NodeError> {
        let mut buf = BytesMut::from(early);
        let frame = FrameCodec::with_max_frame_len(EXCHANGE_MAX_FRAME_LEN)
            .decode_eof(&mut buf)
            .map_err(NodeError::from_wire)?
            .ok_or(NodeError::NoVersion)?;
        if !buf.is_empty() {
            return Err(NodeError::TrailingHello(buf.len()));
        }
        version_of(&frame)
    }
}

/// The version in the peer's first frame, or why there is none.
fn version_of(frame: &Frame) -> Result<Version, NodeError> {
    match (frame.kind, frame.msg_id) {
        (FrameKind::Message, id) if id == Version::ID => Ok(decode::<Version>(&frame.payload)?),
        (FrameKind::Message, id) if id == Disconnect::ID => {
            let d: Disconnect = decode(&frame.payload)?;
            Err(NodeError::Refused(d.reason))
        }
        (_, id) => Err(NodeError::UnexpectedFirstFrame(id)),
    }
}

/// Our hello as early data chosen once the handshake knows the peer (see
/// `EarlyData::Chosen`); what `choose` decided besides is in the returned
/// slot once it has run.
pub(crate) fn chosen<K: Send + 'static>(
    choose: impl FnOnce(Option<&PeerId>) -> (Hello, K) + Send + 'static,
) -> (EarlyData, Arc<Mutex<Option<K>>>) {
    let slot = Arc::new(Mutex::new(None));
    let kept = slot.clone();
    let early = EarlyData::chosen(move |peer| {
        let (hello, decided) = choose(peer);
        *lock(&kept) = Some(decided);
        // A hello always encodes (its texts are cut to their limits); an
        // empty one would reach the peer as `NoVersion`.
        hello.to_bytes().unwrap_or_default()
    });
    (early, slot)
}

/// Secures `io` as a node's dialer does: the Noise handshake (see
/// [`SecureConfig::upgrade_outbound`]) carrying `ours`; returns the stream
/// and the responder's version, or [`NodeError::Refused`] with its reason.
/// For tools that speak to nodes by hand (probes, tests, attack drills).
pub async fn secure_outbound<T>(
    config: &SecureConfig,
    io: T,
    expected: Option<PeerId>,
    ours: &Hello,
) -> Result<(SecureStream<T>, Version), NodeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (stream, theirs) = config
        .upgrade_outbound_with(io, expected, ours.to_bytes()?)
        .await?;
    Ok((stream, Hello::version_in(&theirs)?))
}

/// Secures `io` as a node's listener does: the Noise handshake carrying
/// `ours` (sent before the dialer is known); returns the stream and the
/// dialer's version. With `ours` a refusal, or the dialer's hello one,
/// fails with [`NodeError::Refused`] once the handshake is done.
pub async fn secure_inbound<T>(
    config: &SecureConfig,
    io: T,
    ours: &Hello,
) -> Result<(SecureStream<T>, Version), NodeError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (stream, theirs) = config.upgrade_inbound_with(io, ours.to_bytes()?).await?;
    let theirs = Hello::version_in(&theirs)?;
    match ours {
        Hello::Refuse(reason) => Err(NodeError::Refused(reason.clone())),
        Hello::Version(_) => Ok((stream, theirs)),
    }
}

/// Sends `ours` and reads the peer's [`Version`] (or its [`Disconnect`]),
/// over a stream a transport secured (no Noise handshake to carry them).
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
    let theirs = version_of(&frame)?;
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

    /// The hand-driven pair (`secure_outbound`, `secure_inbound`): the
    /// versions cross inside the handshake, and a listener's refusal fails
    /// both sides with its reason.
    #[tokio::test]
    async fn hand_driven_peers_exchange_versions_in_the_handshake() {
        let config = || SecureConfig::new(knotwork_core::Keypair::generate().unwrap()).unwrap();
        let (dialer, listener) = (config(), config());
        let va = Version::new(&["ping"], &[], &addr("mem/1"));
        let vb = Version::new(&["ping", "addr"], &[], &addr("mem/2"));
        let (ha, hb) = (Hello::Version(va.clone()), Hello::Version(vb.clone()));
        let (a, b) = tokio::io::duplex(1 << 16);
        let (ra, rb) = tokio::join!(
            secure_outbound(&dialer, a, None, &ha),
            secure_inbound(&listener, b, &hb),
        );
        let ((sa, theirs_a), (sb, theirs_b)) = (ra.unwrap(), rb.unwrap());
        assert_eq!((theirs_a, theirs_b), (vb, va));
        assert_eq!(sa.remote_peer_id(), listener.local().peer_id());
        assert_eq!(sb.remote_peer_id(), dialer.local().peer_id());

        let (a, b) = tokio::io::duplex(1 << 16);
        let refuse = Hello::Refuse(DisconnectReason::TooManyPeers);
        let (ra, rb) = tokio::join!(
            secure_outbound(&dialer, a, None, &ha),
            secure_inbound(&listener, b, &refuse),
        );
        for r in [ra.map(|_| ()), rb.map(|_| ())] {
            assert!(matches!(
                r,
                Err(NodeError::Refused(DisconnectReason::TooManyPeers))
            ));
        }
    }

    #[tokio::test]
    async fn eof_before_version_is_an_io_error() {
        let (a, b) = tokio::io::duplex(8192);
        drop(b);
        let v = Version::new(&[], &[], &addr("mem/1"));
        assert!(matches!(exchange(a, &v).await, Err(NodeError::Io(_))));
    }
}
