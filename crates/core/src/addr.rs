//! [`PeerAddr`]: a typed address with a text form that round-trips.
//!
//! | text | meaning |
//! |---|---|
//! | `tcp/127.0.0.1:4000` | TCP over IPv4 |
//! | `tcp/[::1]:4000` | TCP over IPv6 (brackets required) |
//! | `tcp/seed.example.com:4000` | TCP to a DNS name, resolved by the transport when dialing ([`DnsName`]) |
//! | `quic/127.0.0.1:4000`, `quic/[::1]:4000` | QUIC over UDP, IPv4 or IPv6 (an IP address, as for TCP) |
//! | `uds//run/knot.sock` | a Unix domain socket at an absolute path ([`UdsPath`]) |
//! | `ws/example.com:80/knot` | WebSocket to host, port and URL path; `wss/…` over TLS ([`WsAddr`]) |
//! | `ble/<device-id>` | a Bluetooth LE device (1–64 chars of `[A-Za-z0-9:_.-]`) |
//! | `mem/7` | port 7 of a [`MemoryTransport`](crate::MemoryTransport) network |
//! | `relay/tcp/1.2.3.4:4000/<relay-id>/<target-id>` | peer `<target-id>` reached through the relay node `<relay-id>` at `tcp/1.2.3.4:4000` ([`RelayAddr`]) |
//!
//! A relay address nests exactly one non-relay address; the two PeerIds are
//! base58 (see [`PeerId`]), so the text splits unambiguously at its last two
//! `/`. Each address has one text form, so equal texts mean equal addresses
//! (DNS names are lower-cased).
//!
//! Every text form is at most [`MAX_ADDR_TEXT_LEN`] bytes: the parser refuses
//! longer input before looking at it, and the constructors of the variants
//! whose length varies ([`PeerAddr::relayed`], [`WsAddr::new`]) refuse forms
//! that would be longer, with [`AddrParseError::TooLong`]. The uds path limit
//! ([`MAX_UDS_PATH_LEN`]) keeps those texts short by itself.
//!
//! [`DialAddr`] adds an optional `/p2p/<PeerId>` suffix: the identity the
//! handshake must find at the address.

mod dial;
mod host;
mod uds;
mod ws;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use crate::PeerId;

pub use dial::{DialAddr, MAX_DIAL_ADDR_TEXT_LEN};
pub use host::{DnsName, Host, MAX_DNS_NAME_LEN};
pub use uds::{MAX_UDS_PATH_LEN, UdsPath};
pub use ws::WsAddr;

/// Longest accepted BLE device id.
pub const MAX_BLE_DEVICE_LEN: usize = 64;

/// Longest text form of any [`PeerAddr`], in bytes. A relay address over
/// IPv6 over QUIC is `relay/` (6) + `quic/[` 39 `]:65535` (52) + 2 × (`/` +
/// 44) = 148; a uds address is at most `uds/` + 107 = 111. DNS names and
/// WebSocket paths fit as long as the whole text does.
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
    /// TCP to a DNS name and port; the transport resolves the name when
    /// dialing.
    TcpDns(DnsName, u16),
    /// A Unix domain socket.
    Uds(UdsPath),
    /// A WebSocket endpoint (`ws` or `wss`).
    Ws(Box<WsAddr>),
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

/// Why a [`PeerAddr`] or [`DialAddr`] text did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrParseError {
    /// The text (or the address it would make) is longer than allowed.
    #[error("address text of {0} bytes is too long")]
    TooLong(usize),
    /// No `scheme/` prefix.
    #[error("missing scheme: expected tcp/, quic/, uds/, ws/, wss/, ble/, mem/ or relay/")]
    MissingScheme,
    /// A scheme other than tcp, quic, uds, ws, wss, ble, mem or relay.
    #[error("unknown scheme {0:?}: expected tcp, quic, uds, ws, wss, ble, mem or relay")]
    UnknownScheme(String),
    /// A TCP, QUIC or WebSocket address without `:port`.
    #[error("missing port")]
    MissingPort,
    /// The port is not a number from 0 to 65535.
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    /// The host is not an IPv4 or bracketed IPv6 address (a host of digits
    /// and dots, or in brackets, is read as an IP address).
    #[error("invalid ip address {0:?}")]
    InvalidIp(String),
    /// An IPv6 address written without brackets.
    #[error("ipv6 address must be in brackets, e.g. tcp/[::1]:4000")]
    Ipv6WithoutBrackets,
    /// A host that is not a valid DNS name (see [`DnsName`]).
    #[error("invalid host name {0:?}")]
    InvalidHost(String),
    /// A uds path that does not start with `/`.
    #[error("uds path {0:?} is not absolute")]
    UdsPathNotAbsolute(String),
    /// A uds path longer than [`MAX_UDS_PATH_LEN`] bytes.
    #[error("uds path of {0} bytes is too long")]
    UdsPathTooLong(usize),
    /// A uds path with a character or segment outside the rules of [`UdsPath`].
    #[error("invalid uds path {0:?}")]
    InvalidUdsPath(String),
    /// A WebSocket path outside the rules of [`WsAddr`].
    #[error("invalid websocket path {0:?}")]
    InvalidWsPath(String),
    /// A uds or WebSocket path with a `p2p` segment, which is kept for the
    /// `/p2p/<PeerId>` suffix.
    #[error("a path segment may not be \"p2p\"")]
    ReservedSegment,
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
    /// A PeerId in a relay address or `/p2p/` suffix that is not valid.
    #[error("invalid peer id {0:?}")]
    InvalidPeerId(String),
    /// A `/p2p/` pin on a relay address that names another peer than the
    /// relay's target.
    #[error("the pinned peer is not the relay address's target")]
    PinMismatch,
}

impl PeerAddr {
    /// The transport scheme: `"tcp"`, `"quic"`, `"uds"`, `"ws"`, `"wss"`,
    /// `"ble"`, `"mem"` or `"relay"`.
    pub fn scheme(&self) -> &'static str {
        match self {
            PeerAddr::Tcp(_) | PeerAddr::TcpDns(..) => "tcp",
            PeerAddr::Quic(_) => "quic",
            PeerAddr::Ble(_) => "ble",
            PeerAddr::Mem(_) => "mem",
            PeerAddr::Relay(_) => "relay",
            PeerAddr::Uds(_) => "uds",
            PeerAddr::Ws(ws) if ws.tls() => "wss",
            PeerAddr::Ws(_) => "ws",
        }
    }

    /// Builds a relay address; `relay` must not be a relay address itself,
    /// and the text must fit [`MAX_ADDR_TEXT_LEN`].
    pub fn relayed(
        relay: PeerAddr,
        relay_peer: PeerId,
        target: PeerId,
    ) -> Result<Self, AddrParseError> {
        if matches!(relay, PeerAddr::Relay(_)) {
            return Err(AddrParseError::NestedRelay);
        }
        let addr = PeerAddr::Relay(Box::new(RelayAddr {
            relay,
            relay_peer,
            target,
        }));
        let len = addr.to_string().len();
        if len > MAX_ADDR_TEXT_LEN {
            return Err(AddrParseError::TooLong(len));
        }
        Ok(addr)
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

    /// Builds a uds address, checking the path (see [`UdsPath`]).
    pub fn uds(path: &str) -> Result<Self, AddrParseError> {
        UdsPath::new(path).map(PeerAddr::Uds)
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        PeerAddr::Tcp(addr)
    }
}

impl From<WsAddr> for PeerAddr {
    fn from(addr: WsAddr) -> Self {
        PeerAddr::Ws(Box::new(addr))
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // SocketAddr's Display already brackets IPv6.
            PeerAddr::Tcp(sa) => write!(f, "tcp/{sa}"),
            PeerAddr::Quic(sa) => write!(f, "quic/{sa}"),
            PeerAddr::TcpDns(name, port) => write!(f, "tcp/{name}:{port}"),
            PeerAddr::Uds(path) => write!(f, "uds/{path}"),
            PeerAddr::Ws(ws) => write!(f, "{ws}"),
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

/// How the segments of a uds or WebSocket path checked out.
enum Segments {
    Ok,
    /// A `p2p` segment.
    Reserved,
    /// An empty, `.` or `..` segment, or a byte outside the allowed set.
    Bad,
}

/// Checks `/`-separated `path` (no leading `/`) segment by segment.
fn check_segments(path: &str, allowed: impl Fn(u8) -> bool) -> Segments {
    let mut reserved = false;
    for segment in path.split('/') {
        if matches!(segment, "" | "." | "..") || !segment.bytes().all(&allowed) {
            return Segments::Bad;
        }
        reserved |= segment == "p2p";
    }
    if reserved {
        Segments::Reserved
    } else {
        Segments::Ok
    }
}

fn parse_tcp(rest: &str) -> Result<PeerAddr, AddrParseError> {
    Ok(match host::parse_host_port(rest)? {
        (Host::Ip(ip), port) => PeerAddr::Tcp(SocketAddr::new(ip, port)),
        (Host::Dns(name), port) => PeerAddr::TcpDns(name, port),
    })
}

/// QUIC addresses name an IP address (a DNS name is refused as an invalid
/// IP: the QUIC transport dials sockets).
fn parse_quic(rest: &str) -> Result<PeerAddr, AddrParseError> {
    match host::parse_host_port(rest)? {
        (Host::Ip(ip), port) => Ok(PeerAddr::Quic(SocketAddr::new(ip, port))),
        (Host::Dns(name), _) => Err(AddrParseError::InvalidIp(name.to_string())),
    }
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
        if s.len() > MAX_ADDR_TEXT_LEN {
            return Err(AddrParseError::TooLong(s.len()));
        }
        let (scheme, rest) = s.split_once('/').ok_or(AddrParseError::MissingScheme)?;
        match scheme {
            "tcp" => parse_tcp(rest),
            "quic" => parse_quic(rest),
            "uds" => PeerAddr::uds(rest),
            "ws" => WsAddr::parse(false, rest).map(PeerAddr::from),
            "wss" => WsAddr::parse(true, rest).map(PeerAddr::from),
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
            "tcp/localhost:4000",
            "tcp/seed-1.example.com:0",
            "uds//run/knot/node.sock",
            "ws/127.0.0.1:80",
            "ws/[::1]:8080/knot",
            "wss/relay.example.com:443/knot/v1",
        ] {
            let a: PeerAddr = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        let schemes = ["tcp/h:1", "uds//a", "ws/h:1", "wss/h:1", "mem/1"]
            .map(|s| s.parse::<PeerAddr>().unwrap().scheme());
        assert_eq!(schemes, ["tcp", "uds", "ws", "wss", "mem"]);
    }

    #[test]
    fn no_text_is_longer_than_the_limit() {
        let over = format!("tcp/{}.com:1", "a".repeat(MAX_ADDR_TEXT_LEN));
        assert_eq!(
            over.parse::<PeerAddr>(),
            Err(AddrParseError::TooLong(over.len()))
        );
        // The longest name and port fit; a relay over them does not.
        let a63 = "a".repeat(63);
        let name = format!("{a63}.{a63}.{}", "b".repeat(22));
        let tcp: PeerAddr = format!("tcp/{name}:65535").parse().unwrap();
        let wss: PeerAddr = format!("wss/{name}:65535").parse().unwrap();
        assert!(tcp.to_string().len() <= MAX_ADDR_TEXT_LEN);
        assert!(wss.to_string().len() <= MAX_ADDR_TEXT_LEN);
        let ids = peer_ids();
        assert!(matches!(
            PeerAddr::relayed(tcp, ids[0], ids[1]),
            Err(AddrParseError::TooLong(_))
        ));
        let uds = PeerAddr::uds(&format!("/{}", "a".repeat(MAX_UDS_PATH_LEN - 1))).unwrap();
        assert!(uds.to_string().len() <= MAX_ADDR_TEXT_LEN);
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
            format!("relay/relay/mem/1/{r}/{t}").parse::<PeerAddr>(),
            Err(AddrParseError::NestedRelay)
        );
        // A nested relay's text is longer than any address may be.
        assert!(matches!(
            format!("relay/{nested}/{r}/{t}").parse::<PeerAddr>(),
            Err(AddrParseError::TooLong(_))
        ));
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
            ("tcp/local_host:80", InvalidHost("local_host".into())),
            ("tcp/1.2.3.256:80", InvalidIp("1.2.3.256".into())),
            (
                "uds/run/knot.sock",
                UdsPathNotAbsolute("run/knot.sock".into()),
            ),
            (
                "uds//run//knot.sock",
                InvalidUdsPath("/run//knot.sock".into()),
            ),
            ("uds//run/p2p", ReservedSegment),
            ("ws/example.com/knot", MissingPort),
            ("wss/example.com:443/a b", InvalidWsPath("a b".into())),
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
            (direct, 0..ids.len(), 0..ids.len())
                .prop_map(move |(relay, r, t)| { PeerAddr::relayed(relay, ids[r], ids[t]).ok() })
                .prop_filter_map("fits the text limit", |a| a),
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
            (
                "[a-z][a-z0-9-]{0,20}(\\.[a-z0-9-]{1,20}){0,3}",
                any::<u16>()
            )
                .prop_filter_map("a valid name", |(name, port)| Some(
                    PeerAddr::TcpDns(DnsName::new(&name).ok()?, port)
                )),
            "(/[A-Za-z0-9._~+=,@-]{1,20}){1,4}"
                .prop_filter_map("a valid path", |p| PeerAddr::uds(&p).ok()),
            (
                any::<bool>(),
                any_host(),
                any::<u16>(),
                "([A-Za-z0-9._~!$&'()*+,;=:@-]{1,12}(/[a-z]{1,5}){0,3})?"
            )
                .prop_filter_map("a valid ws address", |(tls, host, port, path)| {
                    WsAddr::new(tls, host, port, &path).ok().map(PeerAddr::from)
                }),
        ]
    }

    fn any_host() -> impl Strategy<Value = Host> {
        prop_oneof![
            any::<std::net::IpAddr>().prop_map(Host::Ip),
            "[a-z]{1,10}\\.[a-z]{2,5}".prop_map(|n| Host::Dns(DnsName::new(&n).unwrap())),
        ]
    }

    proptest! {
        #[test]
        fn text_round_trip(addr in any_addr()) {
            prop_assert!(addr.to_string().len() <= MAX_ADDR_TEXT_LEN);
            prop_assert_eq!(addr.to_string().parse::<PeerAddr>().unwrap(), addr);
        }

        #[test]
        fn dial_addr_text_round_trip(addr in any_addr(), pin in proptest::option::of(0..4usize)) {
            let ids = peer_ids();
            let dial = match pin {
                Some(i) => match DialAddr::pinned(addr.clone(), ids[i]) {
                    Ok(d) => d,
                    Err(_) => DialAddr::from(addr),
                },
                None => DialAddr::from(addr),
            };
            prop_assert!(dial.to_string().len() <= MAX_DIAL_ADDR_TEXT_LEN);
            prop_assert_eq!(dial.to_string().parse::<DialAddr>().unwrap(), dial);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<PeerAddr>();
            let _ = s.parse::<DialAddr>();
        }

    }
}
