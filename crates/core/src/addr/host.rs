//! Hosts in address texts: an IP literal or a DNS name ([`DnsName`]), and the
//! `host:port` form shared by the `tcp`, `ws` and `wss` schemes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{AddrParseError, parse_port};

/// Longest DNS name, in bytes. RFC 1035 allows 253; 150 keeps
/// `tcp/<name>:65535` and `wss/<name>:65535` within
/// [`MAX_ADDR_TEXT_LEN`](super::MAX_ADDR_TEXT_LEN).
pub const MAX_DNS_NAME_LEN: usize = 150;
/// Longest label of a DNS name, in bytes.
const MAX_LABEL_LEN: usize = 63;

/// A DNS host name, checked and lower-cased (names compare case-insensitively).
///
/// Labels of 1 to 63 letters, digits and hyphens (not at either end of a
/// label), separated by dots, at most [`MAX_DNS_NAME_LEN`] bytes, no final
/// dot. The last label is not all digits, so no IPv4 literal (`1.2.3.4`)
/// or typo of one (`1.2.3.256`) is ever read as a name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(String);

impl DnsName {
    /// Checks `name` and lower-cases it.
    pub fn new(name: &str) -> Result<Self, AddrParseError> {
        let bad = || AddrParseError::InvalidHost(name.to_string());
        if name.is_empty() || name.len() > MAX_DNS_NAME_LEN {
            return Err(bad());
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= MAX_LABEL_LEN
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !name.split('.').all(label_ok) {
            return Err(bad());
        }
        if name
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(AddrParseError::InvalidIp(name.to_string()));
        }
        Ok(DnsName(name.to_ascii_lowercase()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a `ws`/`wss` address points: an IP literal or a DNS name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A DNS name, resolved when dialing.
    Dns(DnsName),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Dns(name) => write!(f, "{name}"),
        }
    }
}

/// Parses `host:port`, the host an IPv4 literal, a bracketed IPv6 literal or
/// a DNS name. A host of only digits and dots is an IPv4 attempt
/// ([`AddrParseError::InvalidIp`]), anything else a name attempt
/// ([`AddrParseError::InvalidHost`]).
pub(super) fn parse_host_port(text: &str) -> Result<(Host, u16), AddrParseError> {
    if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| AddrParseError::InvalidIp(text.to_string()))?;
        let port = after.strip_prefix(':').ok_or(AddrParseError::MissingPort)?;
        let ip: Ipv6Addr = host
            .parse()
            .map_err(|_| AddrParseError::InvalidIp(host.to_string()))?;
        return Ok((Host::Ip(IpAddr::V6(ip)), parse_port(port)?));
    }
    if text.matches(':').count() > 1 {
        return Err(AddrParseError::Ipv6WithoutBrackets);
    }
    let (host, port) = text.split_once(':').ok_or(AddrParseError::MissingPort)?;
    let host = if !host.is_empty() && host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let ip: Ipv4Addr = host
            .parse()
            .map_err(|_| AddrParseError::InvalidIp(host.to_string()))?;
        Host::Ip(IpAddr::V4(ip))
    } else {
        Host::Dns(DnsName::new(host)?)
    };
    Ok((host, parse_port(port)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_lower_cased() {
        for ok in [
            "localhost",
            "a",
            "x-1.example.com",
            "1.2.3.a",
            "xn--bcher-kva.example",
        ] {
            assert_eq!(DnsName::new(ok).unwrap().as_str(), ok);
        }
        assert_eq!(DnsName::new("Example.COM").unwrap().as_str(), "example.com");
        let long_label = format!("{}.com", "a".repeat(64));
        let a63 = "a".repeat(63);
        let longest = format!("{a63}.{a63}.{}", "b".repeat(22));
        assert_eq!(
            DnsName::new(&longest).unwrap().as_str().len(),
            MAX_DNS_NAME_LEN
        );
        let long_name = format!("{longest}b");
        for bad in [
            "",
            ".",
            "a..b",
            "example.com.",
            "-a.com",
            "a-.com",
            "a_b.com",
            "é.com",
            "a b",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert_eq!(
                DnsName::new(bad),
                Err(AddrParseError::InvalidHost(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            DnsName::new("a.123"),
            Err(AddrParseError::InvalidIp("a.123".into()))
        );
    }

    #[test]
    fn host_port_forms() {
        use AddrParseError::*;
        let ok = [
            ("1.2.3.4:5", Host::Ip([1, 2, 3, 4].into()), 5),
            ("[::1]:80", Host::Ip(Ipv6Addr::LOCALHOST.into()), 80),
            (
                "example.com:443",
                Host::Dns(DnsName::new("example.com").unwrap()),
                443,
            ),
        ];
        for (text, host, port) in ok {
            assert_eq!(parse_host_port(text), Ok((host, port)), "{text}");
        }
        let bad: &[(&str, AddrParseError)] = &[
            ("1.2.3.256:1", InvalidIp("1.2.3.256".into())),
            ("1.2.3:1", InvalidIp("1.2.3".into())),
            (":80", InvalidHost("".into())),
            ("exa mple:1", InvalidHost("exa mple".into())),
            ("example.com", MissingPort),
            ("example.com:http", InvalidPort("http".into())),
        ];
        for (text, want) in bad {
            assert_eq!(parse_host_port(text).as_ref(), Err(want), "{text}");
        }
    }
}
