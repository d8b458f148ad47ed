//! Circuit relay: a node with the relay service on forwards opaque bytes
//! between a dialer and a peer that reserved a slot with it.
//!
//! A peer behind a NAT keeps a channel to a public relay node and sends it
//! [`Reserve`]. The relay records the reservation (bounded, with a lifetime)
//! and the reserved peer publishes `relay/<relay-addr>/<relay-id>/<own-id>`
//! (see [`knotwork_core::RelayAddr`]). A dialer with that address connects to
//! the relay and sends [`Connect`] naming the target; the relay checks the
//! reservation and its limits, asks the target with [`Incoming`] and, when the
//! target accepts, answers the dialer with the circuit id ([`Opened`]). Each
//! end also learns the address the relay sees the other end's connection come
//! from: the only address hole punching dials ([`crate::holepunch`]). From
//! then on each side writes [`ToRelay::Data`] on its channel to the relay and
//! the relay passes the bytes on as [`FromRelay::Data`] to the other side.
//! Each end turns its circuit into a plain byte stream ([`CircuitStream`])
//! over which the node runs the normal Noise handshake and version exchange,
//! end to end: the relay only ever sees ciphertext.
//!
//! # Flow control
//! An end sends at most [`WINDOW`] chunks the other end has not consumed;
//! the other end grants more with [`ToRelay::Credit`] as it consumes them,
//! and the relay passes the credit on. So the relay and each end buffer at
//! most a window per circuit and direction, and never wait for a peer: the
//! relay hands every message to a bounded queue per circuit end (its own job
//! writes it to that end's channel), and a circuit whose queue is full (an
//! end sent past its window, or stopped reading) is closed with
//! [`RelayError::LimitWindow`]. A circuit end that stops reading costs its
//! circuit, never the channel of the other end.
//!
//! # Limits
//! The relay counts bytes and time per circuit ([`RelayTable`], sans-IO: time
//! is an argument) and closes a circuit that exceeds
//! [`RelayLimits::max_bytes`] or [`RelayLimits::max_duration`], telling both
//! ends why with [`FromRelay::Close`]. Reservations and circuits are limited
//! per PeerId and per IP address (an IPv6 /64), so fresh identities from
//! one host do not multiply its share. A target takes circuits only from a
//! relay it holds (or is taking) a reservation with, and runs at most a few
//! relayed handshakes at once, with a limit of their own that takes none of
//! the node's pending-handshake slots ([`MAX_RELAYED_HANDSHAKES`]). Every
//! refusal is a [`RelayError`]. Circuit ids are chosen by the relay; data to
//! the relay and data from it are different message types, so a node that is
//! relay and client at once on one channel never confuses the two.

mod client;
mod protocol;
mod service;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use knotwork_core::{MAX_ADDR_TEXT_LEN, PeerAddr, PeerId};
use knotwork_node::RateBudget;
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};

use crate::netgroup::NetGroup;

pub use client::{CircuitStream, MAX_RELAYED_HANDSHAKES, MAX_RELAYED_HANDSHAKES_PER_RELAY};
pub(crate) use client::{RelayClient, RelayDialer, reserve};
pub(crate) use protocol::protocol;
pub(crate) use service::RelayService;

/// The protocol name announced in the version exchange.
pub const NAME: &str = "knot/relay";

/// Largest data chunk in one [`ToRelay::Data`] / [`FromRelay::Data`].
pub const MAX_CHUNK: usize = 16 * 1024;

/// Bytes buffered inside each end of a [`CircuitStream`].
const STREAM_BUFFER: usize = 64 * 1024;

/// Chunks an end may send on a circuit that the other end has not consumed
/// yet (up to 256 KiB): the flow-control window, and what the relay and
/// each end buffer per circuit and direction.
pub const WINDOW: usize = 16;

/// An end grants credit once it consumed this many chunks.
const CREDIT_BATCH: usize = WINDOW / 2;

/// Room in the relay's queue to a circuit end beyond the window: for the
/// credits passing the other way and the close.
const QUEUE_SLACK: usize = 4;

/// The rate budget of circuit data messages: a stream of 16 KiB chunks.
pub const DATA_BUDGET: RateBudget = RateBudget::new(4000.0, 8000);

/// The rate budget of control messages (reserve, connect, incoming).
pub const CONTROL_BUDGET: RateBudget = RateBudget::new(20.0, 40);

/// Why a relay refused or ended a reservation or circuit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    // --- The relay does not serve ------------------------------------------
    /// The node does not offer the relay service.
    #[error("relay service disabled")]
    Disabled,
    /// The target has no reservation with this relay.
    #[error("no reservation for the target")]
    NoReservation,
    /// The target did not accept the circuit (gone, or refused).
    #[error("target refused the circuit")]
    TargetRefused,

    // --- A limit was reached -------------------------------------------------
    /// The relay holds as many reservations as it accepts.
    #[error("relay limit: reservations")]
    LimitReservations,
    /// The relay carries as many circuits as it accepts, in total or for
    /// one of the two peers.
    #[error("relay limit: circuits")]
    LimitCircuits,
    /// The circuit carried as many bytes as the relay allows.
    #[error("relay limit: bytes per circuit")]
    LimitBytes,
    /// The circuit was open as long as the relay allows.
    #[error("relay limit: circuit duration")]
    LimitDuration,

    // --- The target refused, or an end broke the flow control ------------------
    /// `Incoming` came from a peer the target holds no reservation with.
    #[error("not a relay of this node")]
    NotOurRelay,
    /// The target runs as many relayed handshakes (in total, or through this
    /// relay) or holds as many channels through this relay as it allows.
    #[error("target limit: relayed connections")]
    LimitInbound,
    /// An end sent past its window, or stopped reading: the circuit's buffer
    /// at the relay or at the other end is full.
    #[error("relay limit: circuit window")]
    LimitWindow,
}

/// Limits of the relay service.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayLimits {
    /// Reservations held at once.
    pub max_reservations: usize,
    /// Circuits open at once, in total.
    pub max_circuits: usize,
    /// Circuits open at once with one peer at either end.
    pub max_circuits_per_peer: usize,
    /// Reservations held at once by peers at one IP address (an IPv6 /64).
    pub max_reservations_per_ip: usize,
    /// Circuits open at once from dialers at one IP address (an IPv6 /64):
    /// fewer than a target's per-peer limit, so one address cannot take all
    /// of a target's circuits with fresh identities.
    pub max_circuits_per_ip: usize,
    /// Bytes one circuit carries (both directions together).
    pub max_bytes: u64,
    /// How long one circuit may stay open.
    pub max_duration: Duration,
    /// How long a reservation holds before the peer must renew it.
    pub reservation_ttl: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_reservations: 128,
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_reservations_per_ip: 4,
            max_circuits_per_ip: 4,
            max_bytes: 64 << 20,
            max_duration: Duration::from_secs(10 * 60),
            reservation_ttl: Duration::from_secs(60 * 60),
        }
    }
}

// --- Messages -----------------------------------------------------------------

/// Asks the relay for a reservation; answered with [`Reserved`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserve;

impl Message for Reserve {
    const NAME: &'static str = "knot/relay/reserve/1";
    // A unit struct: no bytes.
    const MAX_BYTES: usize = 0;
}

/// The answer to [`Reserve`]: the reservation's lifetime in seconds, or why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserved(pub Result<u32, RelayError>);

impl Message for Reserved {
    const NAME: &'static str = "knot/relay/reserved/1";
    // Result tag 1 + (u32 varint 5 | error variant 1).
    const MAX_BYTES: usize = 6;
}

/// Asks the relay for a circuit to `target`; answered with [`Connected`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    /// The target's PeerId bytes.
    pub target: [u8; 32],
}

impl Message for Connect {
    const NAME: &'static str = "knot/relay/connect/1";
    // target: 32 bytes.
    const MAX_BYTES: usize = 32;
}

/// The answer to [`Connect`]: the circuit, or why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connected(pub Result<Opened, RelayError>);

impl Message for Connected {
    const NAME: &'static str = "knot/relay/connected/2";
    // Result tag 1 + (Opened 172 | error variant 1).
    const MAX_BYTES: usize = 1 + Opened::MAX_BYTES;
}

/// A circuit the relay opened for a dialer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opened {
    /// The circuit id.
    pub circuit: u64,
    /// The address the relay sees the target's connection come from (a TCP
    /// [`PeerAddr`] text; empty when it is not an IP connection).
    pub target_addr: String,
}

impl Opened {
    // circuit: u64 varint 10; target_addr: length 2 + 160.
    const MAX_BYTES: usize = 10 + 2 + MAX_ADDR_TEXT_LEN;
}

/// The relay asks a reserved peer to take circuit `circuit` from `from`;
/// answered with [`Accepted`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incoming {
    /// The circuit id.
    pub circuit: u64,
    /// The dialer's PeerId bytes.
    pub from: [u8; 32],
    /// The address the relay sees the dialer's connection come from (a TCP
    /// [`PeerAddr`] text; empty when it is not an IP connection).
    pub from_addr: String,
}

impl Message for Incoming {
    const NAME: &'static str = "knot/relay/incoming/2";
    // circuit: u64 varint 10; from: 32 bytes; from_addr: length 2 + 160.
    const MAX_BYTES: usize = 10 + 32 + 2 + MAX_ADDR_TEXT_LEN;
}

/// The text of `addr` for [`Opened::target_addr`] and
/// [`Incoming::from_addr`]: a TCP address, else empty.
pub(crate) fn seen_text(addr: &PeerAddr) -> String {
    match addr {
        PeerAddr::Tcp(_) => addr.to_string(),
        _ => String::new(),
    }
}

/// The TCP address in a [`seen_text`], if any.
pub(crate) fn seen_addr(text: &str) -> Option<SocketAddr> {
    match text.parse::<PeerAddr>() {
        Ok(PeerAddr::Tcp(sa)) => Some(sa),
        _ => None,
    }
}

/// The answer to [`Incoming`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted(pub Result<(), RelayError>);

impl Message for Accepted {
    const NAME: &'static str = "knot/relay/accepted/1";
    // Result tag 1 + error variant 1.
    const MAX_BYTES: usize = 2;
}

/// Circuit traffic from an end to the relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToRelay {
    /// Bytes for the other end.
    Data {
        /// The circuit id.
        circuit: u64,
        /// At most [`MAX_CHUNK`] bytes.
        data: Bytes,
    },
    /// This end closed the circuit.
    Close {
        /// The circuit id.
        circuit: u64,
    },
    /// This end consumed `chunks` more chunks: the other end may send as
    /// many more (see [`WINDOW`]).
    Credit {
        /// The circuit id.
        circuit: u64,
        /// Chunks consumed.
        chunks: u16,
    },
}

impl Message for ToRelay {
    const NAME: &'static str = "knot/relay/to-relay/2";
    // variant 1 + circuit varint 10 + length varint 3 + MAX_CHUNK.
    const MAX_BYTES: usize = 14 + MAX_CHUNK;
}

/// Circuit traffic from the relay to an end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromRelay {
    /// Bytes from the other end.
    Data {
        /// The circuit id.
        circuit: u64,
        /// At most [`MAX_CHUNK`] bytes.
        data: Bytes,
    },
    /// The circuit ended: the other end closed it, or a limit (the reason).
    Close {
        /// The circuit id.
        circuit: u64,
        /// The limit that ended it, if any.
        reason: Option<RelayError>,
    },
    /// The other end consumed `chunks` more chunks ([`ToRelay::Credit`]
    /// passed on).
    Credit {
        /// The circuit id.
        circuit: u64,
        /// Chunks consumed.
        chunks: u16,
    },
}

impl Message for FromRelay {
    const NAME: &'static str = "knot/relay/from-relay/2";
    // variant 1 + circuit varint 10 + length varint 3 + MAX_CHUNK.
    const MAX_BYTES: usize = 14 + MAX_CHUNK;
}

// --- The relay's bookkeeping (sans-IO) ----------------------------------------

/// The network a peer's connection comes from, for the per-IP limits: the
/// IP address, an IPv6 /64; `None` for a connection without an IP.
fn ip_group(ip: Option<IpAddr>) -> Option<NetGroup> {
    ip.map(|ip| NetGroup::of_ip(ip, 32, 64))
}

#[derive(Clone, Debug)]
struct Reservation {
    until: Instant,
    net: Option<NetGroup>,
}

#[derive(Clone, Debug)]
struct Circuit {
    ends: [PeerId; 2],
    /// The dialer's network.
    net: Option<NetGroup>,
    bytes: u64,
    deadline: Instant,
}

/// Reservations and circuits of a relay, with their limits; time is an
/// argument. See the module docs.
#[derive(Clone, Debug)]
pub struct RelayTable {
    limits: RelayLimits,
    reservations: HashMap<PeerId, Reservation>,
    circuits: HashMap<u64, Circuit>,
    next_id: u64,
}

impl RelayTable {
    /// An empty table.
    pub fn new(limits: RelayLimits) -> Self {
        Self {
            limits,
            reservations: HashMap::new(),
            circuits: HashMap::new(),
            next_id: 1,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &RelayLimits {
        &self.limits
    }

    /// Reserves (or renews) a slot for `peer`, connected from `ip`; returns
    /// when it expires.
    pub fn reserve(
        &mut self,
        peer: PeerId,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<Instant, RelayError> {
        self.reservations.retain(|_, r| r.until > now);
        let net = ip_group(ip);
        if !self.reservations.contains_key(&peer) {
            let same_net = |r: &&Reservation| net.is_some() && r.net == net;
            if self.reservations.len() >= self.limits.max_reservations
                || self.reservations.values().filter(same_net).count()
                    >= self.limits.max_reservations_per_ip
            {
                return Err(RelayError::LimitReservations);
            }
        }
        let until = now + self.limits.reservation_ttl;
        self.reservations.insert(peer, Reservation { until, net });
        Ok(until)
    }

    /// Drops `peer`'s reservation.
    pub fn unreserve(&mut self, peer: &PeerId) {
        self.reservations.remove(peer);
    }

    /// Whether `peer` holds a reservation now.
    pub fn is_reserved(&self, peer: &PeerId, now: Instant) -> bool {
        self.reservations.get(peer).is_some_and(|r| r.until > now)
    }

    fn circuits_of(&self, peer: &PeerId) -> usize {
        self.circuits
            .values()
            .filter(|c| c.ends.contains(peer))
            .count()
    }

    /// Opens a circuit from `from`, connected from `ip`, to `target`;
    /// returns its id.
    pub fn open(
        &mut self,
        from: PeerId,
        ip: Option<IpAddr>,
        target: PeerId,
        now: Instant,
    ) -> Result<u64, RelayError> {
        if !self.is_reserved(&target, now) {
            return Err(RelayError::NoReservation);
        }
        let net = ip_group(ip);
        let per_peer = self.limits.max_circuits_per_peer;
        let from_net = self
            .circuits
            .values()
            .filter(|c| net.is_some() && c.net == net)
            .count();
        if self.circuits.len() >= self.limits.max_circuits
            || self.circuits_of(&from) >= per_peer
            || self.circuits_of(&target) >= per_peer
            || from_net >= self.limits.max_circuits_per_ip
        {
            return Err(RelayError::LimitCircuits);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.circuits.insert(
            id,
            Circuit {
                ends: [from, target],
                net,
                bytes: 0,
                deadline: now + self.limits.max_duration,
            },
        );
        Ok(id)
    }

    /// Whether circuit `circuit` is open (not closed nor expired yet).
    pub fn is_open(&self, circuit: u64) -> bool {
        self.circuits.contains_key(&circuit)
    }

    /// Accounts `len` bytes sent by `from` on `circuit`. Returns the peer to
    /// pass them to, `Ok(None)` for a circuit that does not exist (or does
    /// not have `from` at an end), or the limit the bytes broke; the circuit
    /// is then removed.
    pub fn forward(
        &mut self,
        circuit: u64,
        from: &PeerId,
        len: usize,
        now: Instant,
    ) -> Result<Option<PeerId>, RelayError> {
        let Some(c) = self.circuits.get_mut(&circuit) else {
            return Ok(None);
        };
        let to = match c.ends {
            [a, b] if a == *from => b,
            [a, b] if b == *from => a,
            _ => return Ok(None),
        };
        let verdict = if now >= c.deadline {
            Err(RelayError::LimitDuration)
        } else {
            c.bytes = c.bytes.saturating_add(len as u64);
            if c.bytes > self.limits.max_bytes {
                Err(RelayError::LimitBytes)
            } else {
                Ok(Some(to))
            }
        };
        if verdict.is_err() {
            self.circuits.remove(&circuit);
        }
        verdict
    }

    /// Removes `circuit`; returns its two ends if it existed.
    pub fn close(&mut self, circuit: u64) -> Option<[PeerId; 2]> {
        self.circuits.remove(&circuit).map(|c| c.ends)
    }

    /// Removes and returns the circuits whose time is up at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<u64> {
        let mut gone: Vec<u64> = self
            .circuits
            .iter()
            .filter(|(_, c)| now >= c.deadline)
            .map(|(id, _)| *id)
            .collect();
        gone.sort_unstable();
        for id in &gone {
            self.circuits.remove(id);
        }
        self.reservations.retain(|_, r| r.until > now);
        gone
    }

    /// When the next circuit's time is up.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.circuits.values().map(|c| c.deadline).min()
    }

    /// Circuits open now.
    pub fn circuits(&self) -> usize {
        self.circuits.len()
    }
}

pub(crate) fn peer_of(bytes: &[u8; 32]) -> Option<PeerId> {
    PeerId::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_core::Keypair;
    use knotwork_wire::{decode, encode};
    use proptest::prelude::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n)
            .map(|_| Keypair::generate().unwrap().peer_id())
            .collect()
    }

    fn limits() -> RelayLimits {
        RelayLimits {
            max_reservations: 2,
            max_circuits: 3,
            max_circuits_per_peer: 2,
            max_reservations_per_ip: 2,
            max_circuits_per_ip: 2,
            max_bytes: 100,
            max_duration: Duration::from_secs(10),
            reservation_ttl: Duration::from_secs(60),
        }
    }

    #[test]
    fn test_open_without_reservation_is_refused() {
        let p = peers(2);
        let mut t = RelayTable::new(limits());
        let now = Instant::now();
        assert_eq!(
            t.open(p[0], None, p[1], now),
            Err(RelayError::NoReservation)
        );
        t.reserve(p[1], None, now).unwrap();
        assert!(t.open(p[0], None, p[1], now).is_ok());
        // The reservation lapses after its lifetime.
        let later = now + Duration::from_secs(61);
        assert_eq!(
            t.open(p[0], None, p[1], later),
            Err(RelayError::NoReservation)
        );
    }

    #[test]
    fn test_reservations_are_bounded_and_renewable() {
        let p = peers(3);
        let mut t = RelayTable::new(limits());
        let now = Instant::now();
        t.reserve(p[0], None, now).unwrap();
        t.reserve(p[1], None, now).unwrap();
        assert_eq!(
            t.reserve(p[2], None, now),
            Err(RelayError::LimitReservations)
        );
        assert!(t.reserve(p[0], None, now).is_ok(), "renewal of a held slot");
        t.unreserve(&p[0]);
        assert!(t.reserve(p[2], None, now).is_ok());
    }

    #[test]
    fn test_circuit_limits_total_and_per_peer() {
        let p = peers(5);
        let mut t = RelayTable::new(limits());
        let now = Instant::now();
        t.reserve(p[0], None, now).unwrap();
        t.reserve(p[1], None, now).unwrap();
        t.open(p[2], None, p[0], now).unwrap();
        t.open(p[2], None, p[0], now).unwrap();
        // Per peer: p[2] and p[0] have 2 each.
        assert_eq!(
            t.open(p[2], None, p[1], now),
            Err(RelayError::LimitCircuits)
        );
        assert_eq!(
            t.open(p[3], None, p[0], now),
            Err(RelayError::LimitCircuits)
        );
        t.open(p[3], None, p[1], now).unwrap();
        // Total: 3.
        assert_eq!(
            t.open(p[4], None, p[1], now),
            Err(RelayError::LimitCircuits)
        );
        assert_eq!(t.circuits(), 3);
    }

    #[test]
    fn test_forward_counts_bytes_both_ways() {
        let p = peers(3);
        let mut t = RelayTable::new(limits());
        let now = Instant::now();
        t.reserve(p[1], None, now).unwrap();
        let id = t.open(p[0], None, p[1], now).unwrap();
        assert_eq!(t.forward(id, &p[0], 60, now), Ok(Some(p[1])));
        assert_eq!(t.forward(id, &p[1], 40, now), Ok(Some(p[0])));
        assert_eq!(t.forward(id, &p[2], 1, now), Ok(None), "not an end");
        assert_eq!(t.forward(id + 9, &p[0], 1, now), Ok(None), "unknown id");
        assert_eq!(t.forward(id, &p[0], 1, now), Err(RelayError::LimitBytes));
        assert_eq!(t.circuits(), 0, "the circuit is gone");
    }

    #[test]
    fn test_circuit_expires_at_its_deadline() {
        let p = peers(2);
        let mut t = RelayTable::new(limits());
        let now = Instant::now();
        t.reserve(p[1], None, now).unwrap();
        let id = t.open(p[0], None, p[1], now).unwrap();
        assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(10)));
        assert!(t.expire(now + Duration::from_secs(9)).is_empty());
        let late = now + Duration::from_secs(10);
        assert_eq!(
            t.forward(id, &p[0], 1, late),
            Err(RelayError::LimitDuration)
        );
        let id = t.open(p[0], None, p[1], now).unwrap();
        assert_eq!(t.expire(late), vec![id]);
        assert_eq!(t.close(id), None);
    }

    /// L4: fresh identities from one IP address (or one IPv6 /64) share its
    /// reservations and circuits; another address is not affected.
    #[test]
    fn l4_relay_quotas_are_per_ip_as_well_as_per_peer() {
        let p = peers(8);
        let mut lim = limits();
        lim.max_reservations = 8;
        lim.max_circuits = 8;
        lim.max_reservations_per_ip = 2;
        lim.max_circuits_per_ip = 1;
        let mut t = RelayTable::new(lim);
        let now = Instant::now();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        t.reserve(p[0], ip("198.51.100.7"), now).unwrap();
        t.reserve(p[1], ip("198.51.100.7"), now).unwrap();
        assert_eq!(
            t.reserve(p[2], ip("198.51.100.7"), now),
            Err(RelayError::LimitReservations)
        );
        assert!(t.reserve(p[0], ip("198.51.100.7"), now).is_ok(), "renewal");
        t.reserve(p[2], ip("198.51.100.8"), now).unwrap();
        // IPv6: one /64 is one address; IPv4-mapped is its IPv4 address.
        t.reserve(p[3], ip("2001:db8::1"), now).unwrap();
        t.reserve(p[4], ip("2001:db8::ffff:2"), now).unwrap();
        assert_eq!(
            t.reserve(p[5], ip("2001:db8::3"), now),
            Err(RelayError::LimitReservations)
        );
        assert_eq!(
            t.reserve(p[5], ip("::ffff:198.51.100.7"), now),
            Err(RelayError::LimitReservations)
        );
        // Circuits: one from 203.0.113.1, whatever the identity.
        t.open(p[6], ip("203.0.113.1"), p[0], now).unwrap();
        assert_eq!(
            t.open(p[7], ip("203.0.113.1"), p[1], now),
            Err(RelayError::LimitCircuits)
        );
        t.open(p[7], ip("203.0.113.2"), p[1], now).unwrap();
        // Without an IP (the memory transport), only the per-peer limits.
        t.open(p[5], None, p[2], now).unwrap();
        t.open(p[5], None, p[2], now).unwrap();
        assert_eq!(t.circuits(), 4);
    }

    fn any_error() -> impl Strategy<Value = RelayError> {
        prop_oneof![
            Just(RelayError::Disabled),
            Just(RelayError::NoReservation),
            Just(RelayError::TargetRefused),
            Just(RelayError::LimitReservations),
            Just(RelayError::LimitCircuits),
            Just(RelayError::LimitBytes),
            Just(RelayError::LimitDuration),
            Just(RelayError::NotOurRelay),
            Just(RelayError::LimitInbound),
            Just(RelayError::LimitWindow),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip(
            circuit in any::<u64>(),
            data in proptest::collection::vec(any::<u8>(), 0..=MAX_CHUNK),
            err in any_error(),
            secs in any::<u32>(),
            key in any::<[u8; 32]>(),
            addr in "[ -~]{0,160}",
            chunks in any::<u16>(),
        ) {
            let data = Bytes::from(data);
            let to = ToRelay::Data { circuit, data: data.clone() };
            prop_assert_eq!(decode::<ToRelay>(&encode(&to).unwrap()).unwrap(), to);
            let close = ToRelay::Close { circuit };
            prop_assert_eq!(decode::<ToRelay>(&encode(&close).unwrap()).unwrap(), close);
            let credit = ToRelay::Credit { circuit, chunks };
            prop_assert_eq!(decode::<ToRelay>(&encode(&credit).unwrap()).unwrap(), credit);
            let credit = FromRelay::Credit { circuit, chunks };
            prop_assert_eq!(decode::<FromRelay>(&encode(&credit).unwrap()).unwrap(), credit);
            let from = FromRelay::Data { circuit, data };
            prop_assert_eq!(decode::<FromRelay>(&encode(&from).unwrap()).unwrap(), from);
            let end = FromRelay::Close { circuit, reason: Some(err.clone()) };
            prop_assert_eq!(decode::<FromRelay>(&encode(&end).unwrap()).unwrap(), end);
            for r in [Reserved(Ok(secs)), Reserved(Err(err.clone()))] {
                prop_assert_eq!(decode::<Reserved>(&encode(&r).unwrap()).unwrap(), r);
            }
            let opened = Opened { circuit, target_addr: addr.clone() };
            for c in [Connected(Ok(opened)), Connected(Err(err.clone()))] {
                let bytes = encode(&c).unwrap();
                prop_assert!(bytes.len() <= Connected::MAX_BYTES);
                prop_assert_eq!(decode::<Connected>(&bytes).unwrap(), c);
            }
            let a = Accepted(Err(err));
            prop_assert_eq!(decode::<Accepted>(&encode(&a).unwrap()).unwrap(), a);
            let i = Incoming { circuit, from: key, from_addr: addr };
            let bytes = encode(&i).unwrap();
            prop_assert!(bytes.len() <= Incoming::MAX_BYTES);
            prop_assert_eq!(decode::<Incoming>(&bytes).unwrap(), i);
            let c = Connect { target: key };
            prop_assert_eq!(decode::<Connect>(&encode(&c).unwrap()).unwrap(), c);
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<ToRelay>(&bytes);
            let _ = decode::<FromRelay>(&bytes);
            let _ = decode::<Reserved>(&bytes);
            let _ = decode::<Connected>(&bytes);
            let _ = decode::<Accepted>(&bytes);
            let _ = decode::<Incoming>(&bytes);
        }
    }
}
