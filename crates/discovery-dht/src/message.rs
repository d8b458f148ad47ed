//! The DHT wire messages: serde types sent as postcard.
//!
//! Every request carries a request id the responder echoes, and a `client`
//! flag: a client-mode node says so in each request, and servers then never
//! put it in their routing tables. The sender's [`PeerId`] is not in the
//! message at all: it comes from the authenticated channel, so nobody can
//! claim a routing-table slot for a key it does not hold.
//!
//! # Size
//! `MAX_BYTES` (of the [`knotwork_wire::Message`] impl) = 32 KiB. The largest message is a
//! [`Response::Providers`]: 2 × k (20) peers × (32-byte id + up to
//! [`MAX_ADDRS_PER_PEER`] (8) addresses of at most 67 bytes) ≈ 22.8 KiB;
//! a [`Response::Value`] is at most one record (key ≤ 128, value ≤ 8 KiB,
//! id 32, expiry 10, signature 65 ≈ 8.5 KiB) plus 20 peers (≈ 11.4 KiB).

use std::net::{IpAddr, SocketAddr};

use knotwork_core::{PeerAddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::DhtError;
use crate::record::Record;
use crate::time::Time;

/// Most addresses one peer entry may list.
pub const MAX_ADDRS_PER_PEER: usize = 8;

/// A DHT message: a request or the response to one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DhtMessage {
    /// A request; the responder echoes `id`.
    Request {
        /// Request id, unique per sender.
        id: u64,
        /// Set by client-mode nodes: never add me to your table.
        client: bool,
        /// What is asked.
        body: Request,
    },
    /// The answer to request `id`.
    Response {
        /// The request id being answered.
        id: u64,
        /// The answer.
        body: Response,
    },
}

/// What a request asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Are you alive? Answered by [`Response::Pong`].
    Ping,
    /// The k peers you know closest to `target`. Answered by [`Response::Nodes`].
    FindNode {
        /// A key (already hashed).
        target: [u8; 32],
    },
    /// The record under `key`, or closer peers. Answered by [`Response::Value`].
    GetValue {
        /// The application's record key.
        key: Vec<u8>,
    },
    /// Store this record. Answered by [`Response::Stored`].
    PutValue {
        /// The signed record.
        record: WireRecord,
    },
    /// Remember the sender as a provider of `key`. Answered by [`Response::Stored`].
    AddProvider {
        /// The application's key.
        key: Vec<u8>,
        /// Where the sender (the provider) can be reached.
        addrs: Vec<WireAddr>,
    },
    /// Providers of `key`, and closer peers. Answered by [`Response::Providers`].
    GetProviders {
        /// The application's key.
        key: Vec<u8>,
    },
}

/// What a response says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong,
    /// Answer to [`Request::FindNode`]: at most k peers.
    Nodes {
        /// Peers closer to the target.
        closer: Vec<WirePeer>,
    },
    /// Answer to [`Request::GetValue`].
    Value {
        /// The record, if this node holds it.
        record: Option<WireRecord>,
        /// Peers closer to the key.
        closer: Vec<WirePeer>,
    },
    /// Answer to [`Request::PutValue`] and [`Request::AddProvider`].
    Stored,
    /// Answer to [`Request::GetProviders`].
    Providers {
        /// Known providers of the key (at most k).
        providers: Vec<WirePeer>,
        /// Peers closer to the key.
        closer: Vec<WirePeer>,
    },
}

/// A peer as sent on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePeer {
    /// The peer's id (Ed25519 public key bytes).
    pub id: [u8; 32],
    /// Where it can be reached.
    pub addrs: Vec<WireAddr>,
}

/// An address as sent on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireAddr {
    /// TCP.
    Tcp(SocketAddr),
    /// Bluetooth LE device id.
    Ble(String),
    /// In-process memory network port.
    Mem(u64),
}

/// A signed record as sent on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    /// Application key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
    /// Publisher id.
    pub publisher: [u8; 32],
    /// Expiry, milliseconds since the epoch (see [`Time`]).
    pub expires: u64,
    /// Ed25519 signature by the publisher over the record's signing bytes.
    pub signature: Vec<u8>,
}

impl knotwork_wire::Message for DhtMessage {
    /// Protocol name; the frame message id derives from it.
    const NAME: &'static str = "knotwork/dht/1";
    /// Largest encoded message accepted (see the module docs for the sum).
    const MAX_BYTES: usize = 32 * 1024;
}

impl DhtMessage {
    /// Encodes with [`knotwork_wire::encode`] (postcard, size-checked).
    pub fn encode(&self) -> Result<bytes::Bytes, DhtError> {
        knotwork_wire::encode(self).map_err(wire_error)
    }

    /// Decodes peer bytes with [`knotwork_wire::decode`]: the size is checked
    /// first, and nothing panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, DhtError> {
        knotwork_wire::decode(bytes).map_err(wire_error)
    }
}

fn wire_error(e: knotwork_wire::WireError) -> DhtError {
    match e {
        knotwork_wire::WireError::MessageTooLarge { len, max, .. } => {
            DhtError::MessageTooLarge { size: len, max }
        }
        _ => DhtError::Malformed,
    }
}

impl WireAddr {
    /// Converts to a [`PeerAddr`], validating BLE device ids.
    pub fn to_peer_addr(&self) -> Result<PeerAddr, DhtError> {
        match self {
            WireAddr::Tcp(sa) => Ok(PeerAddr::Tcp(*sa)),
            WireAddr::Ble(dev) => PeerAddr::ble(dev.clone()).map_err(|_| DhtError::BadAddress),
            WireAddr::Mem(n) => Ok(PeerAddr::Mem(*n)),
        }
    }

    /// Converts from a [`PeerAddr`]; `None` for address kinds this version
    /// cannot send.
    pub fn from_peer_addr(addr: &PeerAddr) -> Option<Self> {
        match addr {
            PeerAddr::Tcp(sa) => Some(WireAddr::Tcp(*sa)),
            PeerAddr::Ble(dev) => Some(WireAddr::Ble(dev.clone())),
            PeerAddr::Mem(n) => Some(WireAddr::Mem(*n)),
            _ => None,
        }
    }
}

/// A peer's id and addresses, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub peer_id: PeerId,
    /// Its addresses.
    pub addrs: Vec<PeerAddr>,
}

/// The subnet an address counts against: its /24 for IPv4, its /64 for IPv6
/// (an IPv4-mapped IPv6 address, as a dual-stack `[::]` listener sees IPv4
/// peers, counts as the IPv4 address it maps). A relayed address counts
/// against the subnet of its relay: every peer behind one relay is one
/// subnet. `None` for addresses without an IP (BLE, memory).
pub fn subnet_of(addr: &PeerAddr) -> Option<Subnet> {
    match addr {
        PeerAddr::Tcp(sa) => Some(Subnet::of_ip(sa.ip())),
        PeerAddr::Relay(r) => subnet_of(&r.relay),
        _ => None,
    }
}

/// An IPv4 /24 or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subnet {
    /// The first three octets.
    V4([u8; 3]),
    /// The first four segments.
    V6([u16; 4]),
}

impl Subnet {
    /// The /24 or /64 of `ip`, IPv4-mapped addresses as IPv4.
    pub fn of_ip(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                Subnet::V4([a, b, c])
            }
            IpAddr::V6(v6) => {
                let [a, b, c, d, ..] = v6.segments();
                Subnet::V6([a, b, c, d])
            }
        }
    }

    /// The wider network one operator is assumed to hold, for quotas: the
    /// same /24 for IPv4, the /48 for IPv6 (a common end-site assignment,
    /// so a /64 is cheap).
    pub fn operator(self) -> Self {
        match self {
            Subnet::V4(_) => self,
            Subnet::V6([a, b, c, _]) => Subnet::V6([a, b, c, 0]),
        }
    }
}

impl PeerInfo {
    /// Validates a wire peer: address count, address syntax, and that it
    /// does not claim more than `subnet_max` addresses in one subnet.
    pub fn from_wire(w: &WirePeer, subnet_max: usize) -> Result<Self, DhtError> {
        let peer_id = PeerId::from_bytes(&w.id).map_err(|_| DhtError::Malformed)?;
        let addrs = addrs_from_wire(&w.addrs, subnet_max)?;
        Ok(Self { peer_id, addrs })
    }

    /// The wire form.
    pub fn to_wire(&self) -> WirePeer {
        WirePeer {
            id: *self.peer_id.as_bytes(),
            addrs: self
                .addrs
                .iter()
                .filter_map(WireAddr::from_peer_addr)
                .collect(),
        }
    }
}

/// Validates a list of wire addresses (see [`PeerInfo::from_wire`]).
pub(crate) fn addrs_from_wire(
    addrs: &[WireAddr],
    subnet_max: usize,
) -> Result<Vec<PeerAddr>, DhtError> {
    if addrs.len() > MAX_ADDRS_PER_PEER {
        return Err(DhtError::TooManyAddrs {
            got: addrs.len(),
            max: MAX_ADDRS_PER_PEER,
        });
    }
    let addrs = addrs
        .iter()
        .map(WireAddr::to_peer_addr)
        .collect::<Result<Vec<_>, _>>()?;
    let mut subnets: Vec<Subnet> = addrs.iter().filter_map(subnet_of).collect();
    subnets.sort_unstable();
    let mut worst = 0;
    let mut run = 0;
    let mut prev = None;
    for s in subnets {
        run = if prev == Some(s) { run + 1 } else { 1 };
        prev = Some(s);
        worst = worst.max(run);
    }
    if worst > subnet_max {
        return Err(DhtError::SubnetFlood {
            got: worst,
            max: subnet_max,
        });
    }
    Ok(addrs)
}

impl Record {
    /// The wire form.
    pub fn to_wire(&self) -> WireRecord {
        WireRecord {
            key: self.key.clone(),
            value: self.value.clone(),
            publisher: *self.publisher.as_bytes(),
            expires: self.expires.as_millis(),
            signature: self.signature.to_vec(),
        }
    }

    /// Builds a record from the wire without checking it; call
    /// [`Record::validate`] before trusting it.
    pub fn from_wire_unchecked(w: &WireRecord) -> Result<Self, DhtError> {
        let publisher = PeerId::from_bytes(&w.publisher).map_err(|_| DhtError::Malformed)?;
        let signature: [u8; 64] = w
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| DhtError::BadSignature)?;
        Ok(Record {
            key: w.key.clone(),
            value: w.value.clone(),
            publisher,
            expires: Time(w.expires),
            signature,
        })
    }
}
