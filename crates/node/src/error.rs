//! [`NodeError`] and the reasons a connection ends.

use knotwork_core::{AddrParseError, PeerAddr, PeerId, TransportError};
use knotwork_crypto_handshake::HandshakeError;
use knotwork_wire::WireError;
use serde::{Deserialize, Serialize};

/// Longest free-text reason carried in a [`DisconnectReason::Other`], in bytes.
pub const MAX_REASON_LEN: usize = 128;

/// Why a node closes a connection; sent to the peer in a `Disconnect` message.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The node is shutting down.
    Shutdown,
    /// The node already has a connection to this peer; this one is redundant.
    Duplicate,
    /// The node has as many inbound connections as it accepts.
    TooManyPeers,
    /// The node has as many connections from this IP address as it accepts.
    TooManyFromIp,
    /// The peer is on the node's ban list.
    Banned,
    /// The peer misbehaved (unknown or oversized messages, flooding, bad frames).
    Misbehaviour,
    /// The peer did not answer pings in time.
    PingTimeout,
    /// The connection was only a reachability probe.
    Probe,
    /// The application closed it; a short free text.
    Other(String),
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Shutdown => f.write_str("shutdown"),
            Self::Duplicate => f.write_str("duplicate connection"),
            Self::TooManyPeers => f.write_str("too many peers"),
            Self::TooManyFromIp => f.write_str("too many connections from this ip"),
            Self::Banned => f.write_str("banned"),
            Self::Misbehaviour => f.write_str("misbehaviour"),
            Self::PingTimeout => f.write_str("ping timeout"),
            Self::Probe => f.write_str("probe"),
            Self::Other(text) => write!(f, "{text}"),
        }
    }
}

impl DisconnectReason {
    /// [`DisconnectReason::Other`] with `text` cut to [`MAX_REASON_LEN`] bytes.
    pub fn other(text: &str) -> Self {
        let mut end = text.len().min(MAX_REASON_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Self::Other(text.get(..end).unwrap_or_default().to_owned())
    }
}

/// How a channel ended, seen from this node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// This node closed it and told the peer why.
    Local(DisconnectReason),
    /// The peer closed it and told us why.
    Remote(DisconnectReason),
    /// The peer's stream ended without a `Disconnect` message.
    Eof,
    /// Reading or writing the stream failed.
    Io(String),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(r) => write!(f, "closed by us: {r}"),
            Self::Remote(r) => write!(f, "closed by peer: {r}"),
            Self::Eof => f.write_str("peer hung up"),
            Self::Io(e) => write!(f, "i/o: {e}"),
        }
    }
}

impl CloseReason {
    /// Whether the peer ended the channel as a refusal that needed to know
    /// who we are (a ban, or a limit counted again after the handshake):
    /// the dial that opened it failed, in effect (see `crate::version`).
    pub(crate) fn refused_after_handshake(&self) -> bool {
        matches!(
            self,
            Self::Remote(
                DisconnectReason::Banned
                    | DisconnectReason::TooManyPeers
                    | DisconnectReason::TooManyFromIp
            )
        )
    }
}

/// Errors of the node runtime.
///
/// Grouped by fault: the peer refused or misbehaved; a request failed; the
/// lower layers (transport, handshake, wire) failed; the local node cannot do
/// what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    // --- The peer refused us or broke the protocol ------------------------
    /// The peer refused the connection during the version exchange (over
    /// Noise: within the handshake).
    #[error("refused by peer: {0}")]
    Refused(DisconnectReason),
    /// The peer's first frame after the handshake was not a version message.
    #[error("expected a version message, got message id {0:#010x}")]
    UnexpectedFirstFrame(u32),
    /// The peer's handshake carried no version (no early data).
    #[error("the peer sent no version within the handshake")]
    NoVersion,
    /// The peer's handshake carried bytes after its version frame.
    #[error("{0} bytes after the version frame in the handshake")]
    TrailingHello(usize),
    /// The peer's version message lists an address that does not parse.
    #[error("bad address in version message: {0}")]
    BadVersionAddr(#[from] AddrParseError),
    /// Handshake and version exchange took longer than the handshake timeout.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The dialed address answered with another peer than expected.
    #[error("expected peer {expected}, got {got}")]
    WrongPeer {
        /// The peer we meant to reach.
        expected: PeerId,
        /// The peer that answered.
        got: PeerId,
    },

    /// A compressed channel's peer sent a block that breaks the rules (see
    /// `knotwork_compress`), or a compression setting does not parse.
    #[error(transparent)]
    Compression(#[from] knotwork_compress::CompressError),

    /// A service's protocol failed with its own error (a relay refused a
    /// circuit, say); `source` is the protocol crate's error type.
    #[error("{protocol}: {source}")]
    Protocol {
        /// The protocol's name.
        protocol: &'static str,
        /// Its error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    // --- A request failed ---------------------------------------------------
    /// No response arrived within the request timeout.
    #[error("request timed out")]
    RequestTimeout,
    /// The peer's handler dropped the request unanswered.
    #[error("request refused by peer")]
    RequestRefused,
    /// The peer has no handler for requests of this type (the type's name):
    /// it does not speak this protocol (or this version of it).
    #[error("the peer does not support {0}")]
    Unsupported(&'static str),
    /// The peer refused the request as over the type's rate budget (the
    /// type's name); slow down.
    #[error("rate limited by the peer: {0}")]
    RateLimited(&'static str),
    /// The response carries another message type than the one expected.
    #[error("unexpected response type {got:#010x}, expected {expected:#010x}")]
    UnexpectedResponse {
        /// The expected response's message id.
        expected: u32,
        /// The message id received.
        got: u32,
    },

    // --- Lower layers --------------------------------------------------------
    /// The transport failed to listen or dial.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The Noise handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// Encoding or decoding a frame or message failed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// An I/O error on an established connection.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),

    // --- Local state ---------------------------------------------------------
    /// The channel is closed.
    #[error("channel closed: {0}")]
    Closed(CloseReason),
    /// The channel's send queue is full (from [`crate::Channel::try_send`]).
    #[error("send queue full")]
    QueueFull,
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The peer or address is on the ban list.
    #[error("banned: {0}")]
    Banned(String),
    /// The node dialed itself.
    #[error("dialed our own address {0}")]
    SelfDial(PeerAddr),
    /// No channel to this peer.
    #[error("not connected to {0}")]
    NotConnected(PeerId),
    /// The node already has a channel to this peer; the new one was dropped.
    #[error("already connected to {0}")]
    AlreadyConnected(PeerId),
    /// Every pending-handshake slot is taken; the connection was dropped.
    #[error("too many pending handshakes")]
    TooManyPending,

    /// No discovery source nor resolver knows an address of this peer
    /// ([`crate::NodeHandle::connect_peer`]).
    #[error("no address known for peer {0}")]
    UnknownPeer(PeerId),
    /// Every address of the peer failed; each step's outcome, in order.
    #[error("peer {peer} unreachable: {}", attempts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// What each step did.
        attempts: Vec<crate::resolve::Attempt>,
    },

    // --- The dial policy refused (see `crate::dial`) -------------------------
    /// The address is outside the scope of the peer that gave it.
    #[error("address {0} is out of scope for the peer that gave it")]
    OutOfScope(PeerAddr),
    /// The cause's dial budget is spent for now.
    #[error("dial budget of {0} spent")]
    DialBudget(crate::dial::DialCause),
    /// Another dial of this address was under way and failed.
    #[error("dial of {0} failed")]
    DialFailed(PeerAddr),
}

impl NodeError {
    /// A service protocol's error `source`, named `protocol`.
    pub fn protocol(
        protocol: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Protocol {
            protocol,
            source: Box::new(source),
        }
    }

    /// The service protocol's error, if this is one of type `E`.
    pub fn protocol_error<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            Self::Protocol { source, .. } => source.downcast_ref(),
            _ => None,
        }
    }
}

impl NodeError {
    /// A wire error, with stream failures reported as [`NodeError::Io`].
    pub(crate) fn from_wire(e: WireError) -> Self {
        match e {
            WireError::Io(io) => Self::Io(io),
            other => Self::Wire(other),
        }
    }
}
