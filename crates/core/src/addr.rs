//! [`PeerAddr`]: a typed address with a text form that round-trips.
//!
//! | text | meaning |
//! |---|---|
//! | `tcp/127.0.0.1:4000` | TCP over IPv4 |
//! | `tcp/[::1]:4000` | TCP over IPv6 (brackets required) |
//! | `ble/<device-id>` | a Bluetooth LE device (1–64 chars of `[A-Za-z0-9:_.-]`) |
//! | `mem/7` | port 7 of a [`MemoryTransport`](crate::MemoryTransport) network |

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Longest accepted BLE device id.
pub const MAX_BLE_DEVICE_LEN: usize = 64;

/// A typed peer address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PeerAddr {
    /// TCP to an IP address and port.
    Tcp(SocketAddr),
    /// Bluetooth LE to a device id (a MAC address on Linux, a UUID on macOS).
    Ble(String),
    /// A port of an in-process memory network.
    Mem(u64),
}

/// Why a [`PeerAddr`] text did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrParseError {
    /// No `scheme/` prefix.
    #[error("missing scheme: expected tcp/, ble/ or mem/")]
    MissingScheme,
    /// A scheme other than tcp, ble or mem.
    #[error("unknown scheme {0:?}: expected tcp, ble or mem")]
    UnknownScheme(String),
    /// A TCP address without `:port`.
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
}

impl PeerAddr {
    /// The transport scheme: `"tcp"`, `"ble"` or `"mem"`.
    pub fn scheme(&self) -> &'static str {
        match self {
            PeerAddr::Tcp(_) => "tcp",
            PeerAddr::Ble(_) => "ble",
            PeerAddr::Mem(_) => "mem",
        }
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
            PeerAddr::Ble(dev) => write!(f, "ble/{dev}"),
            PeerAddr::Mem(n) => write!(f, "mem/{n}"),
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

impl FromStr for PeerAddr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s.split_once('/').ok_or(AddrParseError::MissingScheme)?;
        match scheme {
            "tcp" => parse_tcp(rest).map(PeerAddr::Tcp),
            "ble" => PeerAddr::ble(rest),
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
            "ble/11:22:33:44:55:66",
            "ble/6f2c1d2e-aaaa-bbbb-cccc-0123456789ab",
            "mem/7",
        ] {
            let a: PeerAddr = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
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
        prop_oneof![
            any::<SocketAddr>().prop_map(|sa| {
                // Scope ids and flow info are not part of the text form.
                PeerAddr::Tcp(SocketAddr::new(sa.ip(), sa.port()))
            }),
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
