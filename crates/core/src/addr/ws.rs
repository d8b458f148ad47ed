//! [`WsAddr`]: a WebSocket endpoint, `ws/<host>:<port>/<path>` or `wss/…`.

use std::fmt;

use super::host::{Host, parse_host_port};
use super::{AddrParseError, MAX_ADDR_TEXT_LEN, Segments, check_segments};

/// A WebSocket endpoint: TLS or not, host, port and URL path.
///
/// Text form: `ws/<host>:<port>` for the path `/`, `ws/<host>:<port>/<path>`
/// otherwise, and `wss/…` for WebSocket over TLS. The host is an IPv4
/// literal, a bracketed IPv6 literal or a DNS name. The path is the URL path
/// without its first `/`: segments of RFC 3986 `pchar`s without
/// percent-escapes (`[A-Za-z0-9._~!$&'()*+,;=:@-]`), none empty, `.`, `..`
/// or `p2p`, so it goes into the URL as it is and has one spelling.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WsAddr {
    tls: bool,
    host: Host,
    port: u16,
    path: String,
}

impl WsAddr {
    /// Checks `path` (without its first `/`; empty for `/`) and the length of
    /// the whole text form ([`MAX_ADDR_TEXT_LEN`]).
    pub fn new(tls: bool, host: Host, port: u16, path: &str) -> Result<Self, AddrParseError> {
        let ok = |b: u8| b.is_ascii_alphanumeric() || b"._~!$&'()*+,;=:@-".contains(&b);
        if !path.is_empty() {
            match check_segments(path, ok) {
                Segments::Ok => {}
                Segments::Reserved => return Err(AddrParseError::ReservedSegment),
                Segments::Bad => return Err(AddrParseError::InvalidWsPath(path.to_string())),
            }
        }
        let addr = WsAddr {
            tls,
            host,
            port,
            path: path.to_string(),
        };
        let len = addr.to_string().len();
        if len > MAX_ADDR_TEXT_LEN {
            return Err(AddrParseError::TooLong(len));
        }
        Ok(addr)
    }

    /// Whether this is `wss` (WebSocket over TLS).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL path without its first `/` (empty for `/`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The URL: `ws://<host>:<port>/<path>` or `wss://…`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}:{}/{}", self.host, self.port, self.path)
    }

    /// Parses what follows `ws/` or `wss/`.
    pub(super) fn parse(tls: bool, rest: &str) -> Result<Self, AddrParseError> {
        // The host part ends at the first `/` after any IPv6 brackets.
        let host_end = match rest.strip_prefix('[') {
            Some(v6) => v6.find(']').map_or(0, |i| i + 1),
            None => 0,
        };
        let (host_port, path) = match rest.get(host_end..).and_then(|r| r.find('/')) {
            Some(slash) => {
                let at = host_end + slash;
                (
                    rest.get(..at).unwrap_or(rest),
                    rest.get(at + 1..).unwrap_or(""),
                )
            }
            None => (rest, ""),
        };
        if host_port.len() < rest.len() && path.is_empty() {
            // `ws/h:1/` would be a second spelling of `ws/h:1`.
            return Err(AddrParseError::InvalidWsPath(String::new()));
        }
        let (host, port) = parse_host_port(host_port)?;
        WsAddr::new(tls, host, port, path)
    }
}

impl fmt::Display for WsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "wss" } else { "ws" };
        write!(f, "{scheme}/{}:{}", self.host, self.port)?;
        if !self.path.is_empty() {
            write!(f, "/{}", self.path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::host::DnsName;

    #[test]
    fn forms_and_urls() {
        let cases = [
            ("ws/127.0.0.1:80", "ws://127.0.0.1:80/"),
            ("ws/[::1]:8080/knot", "ws://[::1]:8080/knot"),
            (
                "wss/relay.example.com:443/a/b;v=1",
                "wss://relay.example.com:443/a/b;v=1",
            ),
        ];
        for (text, url) in cases {
            let tls = text.starts_with("wss/");
            let rest = text.split_once('/').unwrap().1;
            let addr = WsAddr::parse(tls, rest).unwrap();
            assert_eq!(addr.to_string(), text);
            assert_eq!(addr.url(), url);
        }
        let a = WsAddr::parse(false, "Example.com:1/x").unwrap();
        assert_eq!(a.host(), &Host::Dns(DnsName::new("example.com").unwrap()));
        assert_eq!((a.port(), a.path(), a.tls()), (1, "x", false));
    }

    #[test]
    fn bad_forms_are_named() {
        use AddrParseError::*;
        let bad: &[(&str, AddrParseError)] = &[
            ("h:1/", InvalidWsPath("".into())),
            ("h:1/a//b", InvalidWsPath("a//b".into())),
            ("h:1/a/", InvalidWsPath("a/".into())),
            ("h:1/a/../b", InvalidWsPath("a/../b".into())),
            ("h:1/a?b", InvalidWsPath("a?b".into())),
            ("h:1/a%2f", InvalidWsPath("a%2f".into())),
            ("h:1/p2p", ReservedSegment),
            ("h/x", MissingPort),
            ("[::1]/x", MissingPort),
            ("::1:80/x", Ipv6WithoutBrackets),
            ("h_1:80", InvalidHost("h_1".into())),
            ("h:99999/x", InvalidPort("99999".into())),
        ];
        for (rest, want) in bad {
            assert_eq!(WsAddr::parse(false, rest).as_ref(), Err(want), "{rest}");
        }
        let long = format!("h:1/{}", "a".repeat(MAX_ADDR_TEXT_LEN));
        assert!(matches!(WsAddr::parse(true, &long), Err(TooLong(_))));
    }
}
