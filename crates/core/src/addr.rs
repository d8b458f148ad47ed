//! [`PeerAddr`]: a typed address with a text form that round-trips.
//!
//! | text | meaning |
//! |---|---|
//! | `tcp/127.0.0.1:4000` | TCP over IPv4 |
//! | `tcp/[::1]:4000` | TCP over IPv6 (brackets required) |
//! | `quic/127.0.0.1:4000`, `quic/[::1]:4000` | QUIC over UDP, IPv4 or IPv6 (as for TCP) |
//! | `ble/<device-id>` | a Bluetooth LE device (1–64 chars of `[A-Za-z0-9:_.-]`) |
//! | `mem/7` | port 7 of a [`MemoryTransport`](crate::MemoryTransport) network |
//! | `relay/tcp/1.2.3.4:4000/<relay-id>/<target-id>` | peer `<target-id>` reached through the relay node `<relay-id>` at `tcp/1.2.3.4:4000` ([`RelayAddr`]) |
//!
//! A relay address nests exactly one non-relay address; the two PeerIds are
//! base58 (see [`PeerId`]), so the text splits unambiguously at its last two
//! `/`. The longest text form (an IPv6 relay) is under [`MAX_ADDR_TEXT_LEN`] bytes.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::PeerId;

/// Longest accepted BLE device id.
pub const MAX_BLE_DEVICE_LEN: usize = 64;

/// Longest text form of any [`PeerAddr`], in bytes: a relay address over
/// IPv6 over QUIC is `relay/` (6) + `quic/[` 39 `]:65535` (52) + 2 × (`/` + 44) = 148.
pub const MAX_ADDR_TEXT_LEN: usize = 160;

/// A typed peer address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PeerAddr {
    /// TCP to an IP address and port.
    Tcp(SocketAddr),
    /// QUIC (over UDP) to an IP address and port.
    Quic(SocketAddr),
    /// Bluetooth LE to a device id (a MAC address on Linux, a UUID on macOS).
    Ble(String),
    /// A port of an in-process memory network.
    Mem(u64),
    /// A peer reached through a relay node (circuit relay).
    Relay(Box<RelayAddr>),
}

/// Where a relayed peer is reached: the relay node and the peer behind it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayAddr {
    /// The relay's own address; never a relay address itself.
    pub relay: PeerAddr,
    /// The relay's identity, checked by the handshake with the relay.
    pub relay_peer: PeerId,
    /// The peer that holds a reservation on the relay.
    pub target: PeerId,
}

/// Why a [`PeerAddr`] text did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrParseError {
    /// No `scheme/` prefix.
    #[error("missing scheme: expected tcp/, quic/, ble/, mem/ or relay/")]
    MissingScheme,
    /// A scheme other than tcp, quic, ble, mem or relay.
    #[error("unknown scheme {0:?}: expected tcp, quic, ble, mem or relay")]
    UnknownScheme(String),
    /// A TCP or QUIC address without `:port`.
    #[error("missing port")]
    MissingPort,
    /// The port is not a number from 0 to 65535.
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    /// The host is not an IPv4 or bracketed IPv6 address.
    #[error("invalid ip address {0:?}")]
    InvalidIp(String),
    /// An IPv6 address written without brackets.
    #[error("ipv6 address must be in brackets, e.g. tcp/[::1]:4000")]
    Ipv6WithoutBrackets,
    /// A BLE address without a device id.
    #[error("empty ble device id")]
    EmptyDevice,
    /// A BLE device id that is too long or has characters outside `[A-Za-z0-9:_.-]`.
    #[error("invalid ble device id {0:?}")]
    InvalidDevice(String),
    /// A memory port that is not a number.
    #[error("invalid memory port {0:?}")]
    InvalidMemPort(String),
    /// A relay address without `<relay-addr>/<relay-id>/<target-id>`.
    #[error("relay address must be relay/<addr>/<relay-peer-id>/<target-peer-id>")]
    MissingRelayPart,
    /// A relay address whose relay is itself a relay address.
    #[error("a relay address cannot go through another relay")]
    NestedRelay,
    /// A PeerId in a relay address that is not valid.
    #[error("invalid peer id {0:?} in relay address")]
    InvalidPeerId(String),
}

impl PeerAddr {
    /// The transport scheme: `"tcp"`, `"quic"`, `"ble"`, `"mem"` or `"relay"`.
    pub fn scheme(&self) -> &'static str {
        match self {
            PeerAddr::Tcp(_) => "tcp",
            PeerAddr::Quic(_) => "quic",
            PeerAddr::Ble(_) => "ble",
            PeerAddr::Mem(_) => "mem",
            PeerAddr::Relay(_) => "relay",
        }
    }

    /// Builds a relay address; `relay` must not be a relay address itself.
    pub fn relayed(
        relay: PeerAddr,
        relay_peer: PeerId,
        target: PeerId,
    ) -> Result<Self, AddrParseError> {
        if matches!(relay, PeerAddr::Relay(_)) {
            return Err(AddrParseError::NestedRelay);
        }
        Ok(PeerAddr::Relay(Box::new(RelayAddr {
            relay,
            relay_peer,
            target,
        })))
    }

    /// Whether this is a relay address.
    pub fn is_relayed(&self) -> bool {
        matches!(self, PeerAddr::Relay(_))
    }

    /// Builds a BLE address, checking the device id.
    pub fn ble(device: impl Into<String>) -> Result<Self, AddrParseError> {
        let device = device.into();
        validate_device(&device)?;
        Ok(PeerAddr::Ble(device))
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        PeerAddr::Tcp(addr)
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // SocketAddr's Display already brackets IPv6.
            PeerAddr::Tcp(sa) => write!(f, "tcp/{sa}"),
            PeerAddr::Quic(sa) => write!(f, "quic/{sa}"),
            PeerAddr::Ble(dev) => write!(f, "ble/{dev}"),
            PeerAddr::Mem(n) => write!(f, "mem/{n}"),
            PeerAddr::Relay(r) => write!(f, "relay/{}/{}/{}", r.relay, r.relay_peer, r.target),
        }
    }
}

fn validate_device(device: &str) -> Result<(), AddrParseError> {
    if device.is_empty() {
        return Err(AddrParseError::EmptyDevice);
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '-');
    if device.len() > MAX_BLE_DEVICE_LEN || !device.chars().all(ok_char) {
        return Err(AddrParseError::InvalidDevice(device.to_string()));
    }
    Ok(())
}

fn parse_port(s: &str) -> Result<u16, AddrParseError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddrParseError::InvalidPort(s.to_string()));
    }
    s.parse()
        .map_err(|_| AddrParseError::InvalidPort(s.to_string()))
}

fn parse_tcp(rest: &str) -> Result<SocketAddr, AddrParseError> {
    if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| AddrParseError::InvalidIp(rest.to_string()))?;
        let port = after.strip_prefix(':').ok_or(AddrParseError::MissingPort)?;
        let ip: std::net::Ipv6Addr = host
            .parse()
            .map_err(|_| AddrParseError::InvalidIp(host.to_string()))?;
        return Ok(SocketAddr::new(IpAddr::V6(ip), parse_port(port)?));
    }
    if rest.matches(':').count() > 1 {
        return Err(AddrParseError::Ipv6WithoutBrackets);
    }
    let (host, port) = rest.split_once(':').ok_or(AddrParseError::MissingPort)?;
    let ip: std::net::Ipv4Addr = host
        .parse()
        .map_err(|_| AddrParseError::InvalidIp(host.to_string()))?;
    Ok(SocketAddr::new(IpAddr::V4(ip), parse_port(port)?))
}

fn parse_peer_id(s: &str) -> Result<PeerId, AddrParseError> {
    s.parse()
        .map_err(|_| AddrParseError::InvalidPeerId(s.to_string()))
}

fn parse_relay(rest: &str) -> Result<PeerAddr, AddrParseError> {
    let (rest, target) = rest
        .rsplit_once('/')
        .ok_or(AddrParseError::MissingRelayPart)?;
    let (inner, relay_peer) = rest
        .rsplit_once('/')
        .ok_or(AddrParseError::MissingRelayPart)?;
    if inner.starts_with("relay/") {
        return Err(AddrParseError::NestedRelay);
    }
    let relay = inner.parse()?;
    PeerAddr::relayed(relay, parse_peer_id(relay_peer)?, parse_peer_id(target)?)
}

impl FromStr for PeerAddr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s.split_once('/').ok_or(AddrParseError::MissingScheme)?;
        match scheme {
            "tcp" => parse_tcp(rest).map(PeerAddr::Tcp),
            "quic" => parse_tcp(rest).map(PeerAddr::Quic),
            "ble" => PeerAddr::ble(rest),
            "relay" => parse_relay(rest),
            "mem" => {
                if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(AddrParseError::InvalidMemPort(rest.to_string()));
                }
                rest.parse()
                    .map(PeerAddr::Mem)
                    .map_err(|_| AddrParseError::InvalidMemPort(rest.to_string()))
            }
            other => Err(AddrParseError::UnknownScheme(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples_round_trip() {
        for s in [
            "tcp/127.0.0.1:4000",
            "tcp/[::1]:4000",
            "tcp/0.0.0.0:0",
            "tcp/[fe80::1]:65535",
            "quic/127.0.0.1:4000",
            "quic/[::1]:4000",
            "ble/11:22:33:44:55:66",
            "ble/6f2c1d2e-aaaa-bbbb-cccc-0123456789ab",
            "mem/7",
        ] {
            let a: PeerAddr = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
    }

    fn peer_ids() -> Vec<PeerId> {
        (0..4)
            .map(|_| crate::Keypair::generate().unwrap().peer_id())
            .collect()
    }

    #[test]
    fn relay_addresses_round_trip_and_nest_once() {
        let ids = peer_ids();
        let (r, t) = (ids[0], ids[1]);
        for inner in [
            "tcp/1.2.3.4:4000",
            "tcp/[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            "quic/[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
            "mem/3",
        ] {
            let text = format!("relay/{inner}/{r}/{t}");
            let a: PeerAddr = text.parse().unwrap();
            assert_eq!(a.to_string(), text);
            assert!(a.is_relayed());
            assert!(text.len() <= MAX_ADDR_TEXT_LEN, "{}", text.len());
            let PeerAddr::Relay(ra) = a else {
                panic!("not relay")
            };
            assert_eq!(
                (ra.relay.to_string(), ra.relay_peer, ra.target),
                (inner.to_string(), r, t)
            );
        }
        let nested = PeerAddr::relayed("mem/1".parse().unwrap(), r, t).unwrap();
        assert_eq!(
            PeerAddr::relayed(nested.clone(), r, t),
            Err(AddrParseError::NestedRelay)
        );
        assert_eq!(
            format!("relay/{nested}/{r}/{t}").parse::<PeerAddr>(),
            Err(AddrParseError::NestedRelay)
        );
        use AddrParseError::*;
        let cases: Vec<(String, AddrParseError)> = vec![
            ("relay/".into(), MissingRelayPart),
            (format!("relay/{t}"), MissingRelayPart),
            (
                format!("relay/mem/1/nope/{t}"),
                InvalidPeerId("nope".into()),
            ),
            (
                format!("relay/mem/1/{r}/0OIl"),
                InvalidPeerId("0OIl".into()),
            ),
            (format!("relay/udp/1/{r}/{t}"), UnknownScheme("udp".into())),
            (format!("relay/tcp/1.2.3.4/{r}/{t}"), MissingPort),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<PeerAddr>().unwrap_err(), want, "{text}");
        }
    }

    #[test]
    fn each_error_is_named() {
        use AddrParseError::*;
        let cases: &[(&str, AddrParseError)] = &[
            ("127.0.0.1:4000", MissingScheme),
            ("udp/127.0.0.1:4000", UnknownScheme("udp".into())),
            ("tcp/127.0.0.1", MissingPort),
            ("tcp/[::1]", MissingPort),
            ("tcp/127.0.0.1:99999", InvalidPort("99999".into())),
            ("tcp/127.0.0.1:+1", InvalidPort("+1".into())),
            ("tcp/127.0.0.1:", InvalidPort("".into())),
            ("tcp/localhost:80", InvalidIp("localhost".into())),
            ("tcp/[nope]:80", InvalidIp("nope".into())),
            ("tcp/[::1:80", InvalidIp("[::1:80".into())),
            ("tcp/::1:80", Ipv6WithoutBrackets),
            ("quic/127.0.0.1", MissingPort),
            ("quic/127.0.0.1:65536", InvalidPort("65536".into())),
            ("quic/localhost:80", InvalidIp("localhost".into())),
            ("quic/::1:80", Ipv6WithoutBrackets),
            ("ble/", EmptyDevice),
            ("ble/a b", InvalidDevice("a b".into())),
            ("mem/x", InvalidMemPort("x".into())),
            ("mem/", InvalidMemPort("".into())),
            (
                "mem/99999999999999999999999",
                InvalidMemPort("99999999999999999999999".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&text.parse::<PeerAddr>().unwrap_err(), want, "{text}");
        }
        assert_eq!(
            PeerAddr::ble("x".repeat(65)).unwrap_err(),
            InvalidDevice("x".repeat(65))
        );
    }

    fn any_addr() -> impl Strategy<Value = PeerAddr> {
        let ids = peer_ids();
        let direct = any_direct_addr();
        prop_oneof![
            any_direct_addr(),
            (direct, 0..ids.len(), 0..ids.len()).prop_map(move |(relay, r, t)| {
                PeerAddr::relayed(relay, ids[r], ids[t]).unwrap()
            }),
        ]
    }

    fn any_direct_addr() -> impl Strategy<Value = PeerAddr> {
        prop_oneof![
            any::<SocketAddr>().prop_map(|sa| {
                // Scope ids and flow info are not part of the text form.
                PeerAddr::Tcp(SocketAddr::new(sa.ip(), sa.port()))
            }),
            any::<SocketAddr>().prop_map(|sa| PeerAddr::Quic(SocketAddr::new(sa.ip(), sa.port()))),
            "[A-Za-z0-9:_.-]{1,64}".prop_map(PeerAddr::Ble),
            any::<u64>().prop_map(PeerAddr::Mem),
        ]
    }

    proptest! {
        #[test]
        fn text_round_trip(addr in any_addr()) {
            prop_assert_eq!(addr.to_string().parse::<PeerAddr>().unwrap(), addr);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<PeerAddr>();
        }
    }
}
