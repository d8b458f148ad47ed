//! The server side of the WebSocket opening handshake (RFC 6455 §4.2), as
//! plain functions on bytes: [`check_request`] reads a request head and says
//! whether to upgrade, and [`Refusal::response`] is the HTTP answer to a
//! request that does not get one.
//!
//! tungstenite's own server handshake closes the connection without an
//! answer when a request is not an upgrade; a person or a proxy trying the
//! port deserves a status line, so the request is checked here and only the
//! upgraded stream is handed to tungstenite.

use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Longest request head read, in bytes; a longer one is refused with 431.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Most header lines in a request head.
const MAX_HEADERS: usize = 32;

/// Why a request is not upgraded; each has its HTTP status. Carried as
/// [`WsError::Refused`](crate::WsError::Refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Not an HTTP/1.1 request head (400).
    Malformed,
    /// Bytes after the head: a client must wait for the 101 (400).
    BytesAfterHead,
    /// A method other than GET (405).
    Method,
    /// A path other than the listener's (404).
    Path,
    /// No `Connection: upgrade` and `Upgrade: websocket` (426).
    NotUpgrade,
    /// A `Sec-WebSocket-Version` other than 13 (426).
    Version,
    /// A missing or malformed `Sec-WebSocket-Key` (400).
    Key,
    /// A head longer than [`MAX_REQUEST_HEAD`] (431).
    TooLarge,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Malformed => "malformed http request",
            Refusal::BytesAfterHead => "bytes after the request head",
            Refusal::Method => "method not allowed",
            Refusal::Path => "no websocket endpoint at this path",
            Refusal::NotUpgrade => "not a websocket upgrade",
            Refusal::Version => "unsupported websocket version",
            Refusal::Key => "missing or malformed sec-websocket-key",
            Refusal::TooLarge => "request head too large",
        })
    }
}

impl Refusal {
    /// The HTTP status code and reason phrase.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Refusal::Malformed | Refusal::BytesAfterHead | Refusal::Key => (400, "Bad Request"),
            Refusal::Path => (404, "Not Found"),
            Refusal::Method => (405, "Method Not Allowed"),
            Refusal::NotUpgrade | Refusal::Version => (426, "Upgrade Required"),
            Refusal::TooLarge => (431, "Request Header Fields Too Large"),
        }
    }

    /// The whole HTTP response: status line, headers (426 names the
    /// protocol and version to use) and a one-line body; the connection is
    /// closed after it.
    pub fn response(self) -> String {
        let (code, reason) = self.status();
        let body = format!("{self}: this port speaks websocket (RFC 6455) only\n");
        let extra = match self {
            Refusal::NotUpgrade | Refusal::Version => {
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            }
            Refusal::Method => "Allow: GET\r\n",
            _ => "",
        };
        format!(
            "HTTP/1.1 {code} {reason}\r\nConnection: close\r\n{extra}\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

/// A request to upgrade: what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The `Sec-WebSocket-Accept` value for the request's key.
    pub accept: String,
}

impl Upgrade {
    /// The `101 Switching Protocols` response.
    pub fn response(&self) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            self.accept
        )
    }
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn lists(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// A `Sec-WebSocket-Key`: base64 of 16 bytes (22 characters and `==`).
fn key_ok(key: &[u8]) -> bool {
    let b64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    key.len() == 24 && key.ends_with(b"==") && key.iter().take(22).all(b64)
}

/// Checks the request head at the start of `buf` for an upgrade to
/// WebSocket at `path` (the listener's URL path without its first `/`).
///
/// `Ok(None)`: the head is not complete yet, read more. A complete head
/// must be all of `buf`.
pub fn check_request(buf: &[u8], path: &str) -> Result<Option<Upgrade>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST_HEAD => {
            return Err(Refusal::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::Malformed),
    };
    if head_len > MAX_REQUEST_HEAD {
        return Err(Refusal::TooLarge);
    }
    if head_len < buf.len() {
        return Err(Refusal::BytesAfterHead);
    }
    if req.version != Some(1) {
        return Err(Refusal::Malformed);
    }
    if req.method != Some("GET") {
        return Err(Refusal::Method);
    }
    if req.path.and_then(|p| p.strip_prefix('/')) != Some(path) {
        return Err(Refusal::Path);
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let upgrade = header("connection").is_some_and(|v| lists(v, "upgrade"))
        && header("upgrade").is_some_and(|v| lists(v, "websocket"));
    if !upgrade {
        return Err(Refusal::NotUpgrade);
    }
    if header("sec-websocket-version") != Some(b"13".as_slice()) {
        return Err(Refusal::Version);
    }
    match header("sec-websocket-key") {
        Some(key) if key_ok(key) => Ok(Some(Upgrade {
            accept: derive_accept_key(key),
        })),
        _ => Err(Refusal::Key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(lines: &[&str]) -> Vec<u8> {
        let mut text = lines.join("\r\n");
        text.push_str("\r\n\r\n");
        text.into_bytes()
    }

    fn valid() -> Vec<&'static str> {
        vec![
            "GET /knot HTTP/1.1",
            "Host: example.com",
            "Upgrade: websocket",
            "Connection: keep-alive, Upgrade",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ]
    }

    #[test]
    fn the_rfc_example_is_upgraded() {
        let up = check_request(&request(&valid()), "knot").unwrap().unwrap();
        // RFC 6455 §1.3's worked example.
        assert_eq!(up.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(up.response().starts_with("HTTP/1.1 101 "));
        assert!(up.response().ends_with("\r\n\r\n"));
    }

    #[test]
    fn each_refusal_is_named() {
        let with = |i: usize, line: &'static str| {
            let mut lines = valid();
            lines[i] = line;
            request(&lines)
        };
        let without = |i: usize| {
            let mut lines = valid();
            lines.remove(i);
            request(&lines)
        };
        let mut trailing = request(&valid());
        trailing.extend_from_slice(b"\x82\x00");
        let big = request(&[
            "GET /knot HTTP/1.1",
            &format!("X-Pad: {}", "a".repeat(MAX_REQUEST_HEAD)),
        ]);
        let many: Vec<String> = (0..MAX_HEADERS + 1).map(|i| format!("X-{i}: y")).collect();
        let mut many_lines = vec!["GET /knot HTTP/1.1"];
        many_lines.extend(many.iter().map(String::as_str));
        let cases: Vec<(Vec<u8>, Refusal)> = vec![
            (
                b"\x16\x03\x01\x00\xa5\x01\r\n\r\n".to_vec(),
                Refusal::Malformed,
            ),
            (with(0, "GET /knot HTTP/1.0"), Refusal::Malformed),
            (with(0, "POST /knot HTTP/1.1"), Refusal::Method),
            (with(0, "GET /other HTTP/1.1"), Refusal::Path),
            (with(0, "GET /knot/ HTTP/1.1"), Refusal::Path),
            (without(2), Refusal::NotUpgrade),
            (with(3, "Connection: keep-alive"), Refusal::NotUpgrade),
            (with(4, "Sec-WebSocket-Version: 8"), Refusal::Version),
            (without(5), Refusal::Key),
            (with(5, "Sec-WebSocket-Key: short=="), Refusal::Key),
            (trailing, Refusal::BytesAfterHead),
            (big, Refusal::TooLarge),
            (request(&many_lines), Refusal::TooLarge),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                check_request(&bytes, "knot"),
                Err(want),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        assert_eq!(
            check_request(b"GET /knot HTTP/1.1\r\nHost:", "knot"),
            Ok(None)
        );
        assert_eq!(
            check_request(&with(0, "GET / HTTP/1.1"), ""),
            Ok(Some(Upgrade {
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()
            }))
        );
    }

    #[test]
    fn refusals_are_complete_http_responses() {
        let plain_get = request(&["GET /knot HTTP/1.1", "Host: x"]);
        let refusal = check_request(&plain_get, "knot").unwrap_err();
        let text = refusal.response();
        assert!(
            text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nUpgrade: websocket\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }

    proptest! {
        /// Any valid request, headers in any order and case, is upgraded
        /// with the key's accept value.
        #[test]
        fn valid_requests_round_trip(
            path in "([a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2})?",
            key in "[A-Za-z0-9+/]{22}",
            upper in any::<bool>(),
            order in Just(vec![0usize, 1, 2, 3, 4]).prop_shuffle(),
        ) {
            let key = format!("{key}==");
            let headers = [
                "Host: h".to_string(),
                "Upgrade: websocket".to_string(),
                "Connection: Upgrade".to_string(),
                "Sec-WebSocket-Version: 13".to_string(),
                format!("Sec-WebSocket-Key: {key}"),
            ];
            let mut lines = vec![format!("GET /{path} HTTP/1.1")];
            for i in order {
                let h = &headers[i];
                lines.push(if upper { h.to_uppercase().replace(&key.to_uppercase(), &key) } else { h.clone() });
            }
            let text = format!("{}\r\n\r\n", lines.join("\r\n"));
            let up = check_request(text.as_bytes(), &path).unwrap().unwrap();
            prop_assert_eq!(up.accept, derive_accept_key(key.as_bytes()));
            // Every prefix is incomplete or already refused, never upgraded.
            for cut in 0..text.len() {
                prop_assert_ne!(check_request(&text.as_bytes()[..cut], &path).ok().flatten().is_some(), true);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = check_request(&bytes, "knot");
        }
    }
}
