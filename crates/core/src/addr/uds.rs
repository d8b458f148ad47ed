//! [`UdsPath`]: the socket path of a `uds/<absolute path>` address.

use std::fmt;
use std::path::Path;

use super::{AddrParseError, Segments, check_segments};

/// Longest socket path, in bytes: Linux's `sun_path` holds 108 bytes with
/// the final NUL (macOS and the BSDs hold 104: paths there must be shorter).
pub const MAX_UDS_PATH_LEN: usize = 107;

/// The absolute path of a Unix domain socket, as a `uds/` address holds it.
///
/// Text form: `uds/` followed by the path, so `uds//run/knot.sock` is the
/// socket `/run/knot.sock`. There is no escaping: a path is `/` followed by
/// segments of `[A-Za-z0-9._~+=,@-]`, none empty, `.`, `..` or `p2p` (the
/// last is kept for the `/p2p/<PeerId>` suffix of a
/// [`DialAddr`](super::DialAddr)), and at most [`MAX_UDS_PATH_LEN`] bytes.
/// Every path has one spelling, so equal texts mean equal sockets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UdsPath(String);

impl UdsPath {
    /// Checks `path`; see the type docs for the rules.
    pub fn new(path: &str) -> Result<Self, AddrParseError> {
        let Some(rest) = path.strip_prefix('/') else {
            return Err(AddrParseError::UdsPathNotAbsolute(path.to_string()));
        };
        if path.len() > MAX_UDS_PATH_LEN {
            return Err(AddrParseError::UdsPathTooLong(path.len()));
        }
        let ok = |b: u8| b.is_ascii_alphanumeric() || b"._~+=,@-".contains(&b);
        match check_segments(rest, ok) {
            Segments::Ok => Ok(UdsPath(path.to_string())),
            Segments::Reserved => Err(AddrParseError::ReservedSegment),
            Segments::Bad => Err(AddrParseError::InvalidUdsPath(path.to_string())),
        }
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path.
    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl fmt::Display for UdsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_have_one_spelling() {
        for ok in ["/run/knot.sock", "/tmp/a", "/x/y_z-1.2~+=,@"] {
            assert_eq!(UdsPath::new(ok).unwrap().as_str(), ok);
        }
        let longest = format!("/{}", "a".repeat(MAX_UDS_PATH_LEN - 1));
        assert!(UdsPath::new(&longest).is_ok());
        use AddrParseError::*;
        let bad: &[(&str, AddrParseError)] = &[
            ("run/knot.sock", UdsPathNotAbsolute("run/knot.sock".into())),
            ("", UdsPathNotAbsolute("".into())),
            ("/", InvalidUdsPath("/".into())),
            ("/a//b", InvalidUdsPath("/a//b".into())),
            ("/a/", InvalidUdsPath("/a/".into())),
            ("/a/./b", InvalidUdsPath("/a/./b".into())),
            ("/a/../b", InvalidUdsPath("/a/../b".into())),
            ("/a b", InvalidUdsPath("/a b".into())),
            ("/a%20b", InvalidUdsPath("/a%20b".into())),
            ("/run/p2p/x", ReservedSegment),
        ];
        for (text, want) in bad {
            assert_eq!(UdsPath::new(text).as_ref(), Err(want), "{text}");
        }
        let too_long = format!("{longest}a");
        assert_eq!(
            UdsPath::new(&too_long),
            Err(UdsPathTooLong(MAX_UDS_PATH_LEN + 1))
        );
    }
}
