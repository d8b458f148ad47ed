//! The TXT record format, sans-IO: [`encode`] a [`LocalPeerInfo`] into TXT
//! properties and [`decode`] a peer's TXT properties into a [`DiscoveredPeer`].
//!
//! # Format
//! One DNS-SD service instance carries these keys (RFC 6763 §6: `key=value`
//! strings, keys case-insensitive, the first of a repeated key wins):
//!
//! | key | value | example |
//! |---|---|---|
//! | `id` | the [`PeerId`] in base58 | `id=8GpS…` |
//! | `v` | the protocol version, decimal | `v=1` |
//! | `a0` … `a7` | one reachable address each, as [`PeerAddr`] text | `a0=tcp/10.0.0.1:4000` |
//!
//! Other keys are ignored, so later versions can add some. The SRV record's
//! port and the A/AAAA records are there for generic DNS-SD browsers; knotwork
//! reads only the TXT record.
//!
//! # Size
//! The wire size of a TXT record is the sum over its strings of one length
//! byte plus `key=value`. With the defaults a record holds at most 8 addresses
//! and 900 bytes; a worst-case record of our own (8 bracketed IPv6 addresses)
//! is about 500 bytes, so the record plus PTR, SRV and address records fits one
//! 1452-byte mDNS packet (RFC 6762 §17 advises against larger TXT records
//! than 1300 bytes).

use knotwork_core::{DiscoveredPeer, DiscoverySource, LocalPeerInfo, PeerAddr, PeerId};

use crate::error::MdnsError;

/// The protocol version written in `v` and the only one [`decode`] accepts.
pub const PROTOCOL_VERSION: u32 = 1;
/// The TXT key of the PeerId.
pub const KEY_ID: &str = "id";
/// The TXT key of the protocol version.
pub const KEY_VERSION: &str = "v";

/// How much a TXT record may hold, when encoding and when decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxtLimits {
    /// Most addresses in one record (keys `a0` … `a<max_addrs-1>`).
    pub max_addrs: usize,
    /// Most bytes of the record in its wire form.
    pub max_bytes: usize,
}

impl TxtLimits {
    /// 8 addresses, 900 bytes.
    pub const DEFAULT: TxtLimits = TxtLimits {
        max_addrs: 8,
        max_bytes: 900,
    };
}

impl Default for TxtLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One TXT property: a key and its value (`None` for a key written without `=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxtEntry {
    /// The key.
    pub key: String,
    /// The value, if the string had an `=`.
    pub value: Option<Vec<u8>>,
}

/// The wire size of `entries`: one length byte plus `key[=value]` each.
pub fn wire_size<'a>(entries: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> usize {
    entries
        .into_iter()
        .map(|(k, v)| 1 + k.len() + v.map_or(0, |v| 1 + v.len()))
        .sum()
}

/// The key of the address at `index`: `a0`, `a1`, …
pub fn address_key(index: usize) -> String {
    format!("a{index}")
}

/// Encodes `info` as TXT properties: `id`, `v`, then `a0`… in order.
///
/// Fails with [`MdnsError::TooManyAddresses`] or [`MdnsError::OversizedTxt`]
/// rather than announce a record that peers would reject.
pub fn encode(info: &LocalPeerInfo, limits: TxtLimits) -> Result<Vec<TxtEntry>, MdnsError> {
    if info.addrs.len() > limits.max_addrs {
        return Err(MdnsError::TooManyAddresses {
            count: info.addrs.len(),
            max: limits.max_addrs,
        });
    }
    let mut entries = Vec::with_capacity(2 + info.addrs.len());
    entries.push(entry(KEY_ID, info.peer_id.to_string()));
    entries.push(entry(KEY_VERSION, PROTOCOL_VERSION.to_string()));
    for (i, addr) in info.addrs.iter().enumerate() {
        entries.push(entry(&address_key(i), addr.to_string()));
    }
    let size = wire_size(entries.iter().map(|e| (e.key.as_str(), e.value.as_deref())));
    if size > limits.max_bytes {
        return Err(MdnsError::OversizedTxt {
            size,
            max: limits.max_bytes,
        });
    }
    Ok(entries)
}

fn entry(key: &str, value: String) -> TxtEntry {
    TxtEntry {
        key: key.to_owned(),
        value: Some(value.into_bytes()),
    }
}

/// Decodes a peer's TXT properties into the peer they announce.
///
/// Checks the size first, then the keys: a missing or malformed `id` or `v`,
/// an address key out of range, an address that does not parse or too many
/// addresses each reject the whole record with their own [`MdnsError`]
/// variant. Keys are compared case-insensitively; a repeated key counts once
/// (the first, RFC 6763 §6.4); unknown keys are ignored.
pub fn decode<'a>(
    entries: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    limits: TxtLimits,
) -> Result<DiscoveredPeer, MdnsError> {
    let entries: Vec<(&str, Option<&[u8]>)> = entries.into_iter().collect();
    let size = wire_size(entries.iter().copied());
    if size > limits.max_bytes {
        return Err(MdnsError::OversizedTxt {
            size,
            max: limits.max_bytes,
        });
    }

    let mut seen: Vec<String> = Vec::with_capacity(entries.len());
    let mut id = None;
    let mut version = None;
    let mut addrs: Vec<(usize, &str, Option<&[u8]>)> = Vec::new();
    for (key, value) in entries {
        let lower = key.to_ascii_lowercase();
        if seen.contains(&lower) {
            continue;
        }
        if lower == KEY_ID {
            id = Some(value);
        } else if lower == KEY_VERSION {
            version = Some(value);
        } else if let Some(index) = address_index(&lower)? {
            addrs.push((index, key, value));
        }
        seen.push(lower);
    }

    let id = id.ok_or(MdnsError::MissingId)?;
    let version = version.ok_or(MdnsError::MissingVersion)?;
    let version = text(version).ok_or_else(|| MdnsError::UnsupportedVersion(lossy(version)))?;
    if version != PROTOCOL_VERSION.to_string() {
        return Err(MdnsError::UnsupportedVersion(version.to_owned()));
    }
    let id_text = text(id).ok_or_else(|| MdnsError::BadPeerId("not utf-8 text".into()))?;
    let peer_id: PeerId = id_text.parse()?;

    if addrs.len() > limits.max_addrs {
        return Err(MdnsError::TooManyAddresses {
            count: addrs.len(),
            max: limits.max_addrs,
        });
    }
    if let Some((_, key, _)) = addrs.iter().find(|(i, _, _)| *i >= limits.max_addrs) {
        return Err(MdnsError::BadAddressKey((*key).to_owned()));
    }
    addrs.sort_by_key(|(i, _, _)| *i);
    let addrs = addrs
        .into_iter()
        .map(|(_, key, value)| {
            let value = text(value).ok_or_else(|| MdnsError::BadAddress {
                key: key.to_owned(),
                reason: "not utf-8 text".into(),
            })?;
            value
                .parse::<PeerAddr>()
                .map_err(|e| MdnsError::bad_address(key, &e))
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(DiscoveredPeer {
        peer_id,
        addrs,
        source: DiscoverySource::Mdns,
        rssi: None,
    })
}

/// `Some(index)` for an address key (`a` and digits), `None` for any other
/// key; an error if the digits have a leading zero or do not fit a `usize`.
fn address_index(lower_key: &str) -> Result<Option<usize>, MdnsError> {
    let Some(digits) = lower_key.strip_prefix('a') else {
        return Ok(None);
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return Err(MdnsError::BadAddressKey(lower_key.to_owned()));
    }
    digits
        .parse()
        .map(Some)
        .map_err(|_| MdnsError::BadAddressKey(lower_key.to_owned()))
}

/// The value as text; `None` for a missing value or one that is not UTF-8.
fn text(value: Option<&[u8]>) -> Option<&str> {
    std::str::from_utf8(value?).ok()
}

fn lossy(value: Option<&[u8]>) -> String {
    value.map_or_else(String::new, |v| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_core::Keypair;
    use proptest::prelude::*;
    use std::net::SocketAddr;

    fn peer_id() -> PeerId {
        Keypair::generate().unwrap().peer_id()
    }

    fn props<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<(&'a str, Option<&'a [u8]>)> {
        pairs
            .iter()
            .map(|(k, v)| (*k, Some(v.as_bytes())))
            .collect()
    }

    fn decode_pairs(pairs: &[(&str, &str)]) -> Result<DiscoveredPeer, MdnsError> {
        decode(props(pairs), TxtLimits::DEFAULT)
    }

    #[test]
    fn encodes_keys_in_order() {
        let id = peer_id();
        let info = LocalPeerInfo {
            peer_id: id,
            addrs: vec![
                "tcp/10.0.0.1:4000".parse().unwrap(),
                "tcp/[fd00::1]:4000".parse().unwrap(),
            ],
        };
        let entries = encode(&info, TxtLimits::DEFAULT).unwrap();
        let text: Vec<String> = entries
            .iter()
            .map(|e| {
                format!(
                    "{}={}",
                    e.key,
                    String::from_utf8_lossy(e.value.as_deref().unwrap())
                )
            })
            .collect();
        assert_eq!(
            text,
            [
                format!("id={id}"),
                "v=1".to_owned(),
                "a0=tcp/10.0.0.1:4000".to_owned(),
                "a1=tcp/[fd00::1]:4000".to_owned(),
            ]
        );
    }

    #[test]
    fn worst_case_own_record_fits_the_default_limit() {
        let addr: PeerAddr = "tcp/[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
            .parse()
            .unwrap();
        let info = LocalPeerInfo {
            peer_id: peer_id(),
            addrs: vec![addr; TxtLimits::DEFAULT.max_addrs],
        };
        let entries = encode(&info, TxtLimits::DEFAULT).unwrap();
        let size = wire_size(entries.iter().map(|e| (e.key.as_str(), e.value.as_deref())));
        assert!(size < 520, "{size}");
    }

    #[test]
    fn encode_refuses_over_the_limits() {
        let addr: PeerAddr = "tcp/10.0.0.1:4000".parse().unwrap();
        let info = LocalPeerInfo {
            peer_id: peer_id(),
            addrs: vec![addr; 9],
        };
        assert_eq!(
            encode(&info, TxtLimits::DEFAULT).unwrap_err(),
            MdnsError::TooManyAddresses { count: 9, max: 8 }
        );
        let small = TxtLimits {
            max_addrs: 8,
            max_bytes: 100,
        };
        let info = LocalPeerInfo {
            addrs: info.addrs[..3].to_vec(),
            ..info
        };
        assert!(matches!(
            encode(&info, small).unwrap_err(),
            MdnsError::OversizedTxt { max: 100, .. }
        ));
    }

    #[test]
    fn each_malformed_record_has_its_variant() {
        let id = peer_id().to_string();
        let good_addr = "tcp/10.0.0.1:4000";
        assert_eq!(
            decode_pairs(&[("v", "1")]).unwrap_err(),
            MdnsError::MissingId
        );
        assert_eq!(
            decode_pairs(&[("id", &id)]).unwrap_err(),
            MdnsError::MissingVersion
        );
        assert!(matches!(
            decode_pairs(&[("id", "not-base58-0OIl"), ("v", "1")]).unwrap_err(),
            MdnsError::BadPeerId(_)
        ));
        assert!(matches!(
            decode_pairs(&[("id", "abc"), ("v", "1")]).unwrap_err(),
            MdnsError::BadPeerId(_)
        ));
        assert!(matches!(
            decode(
                vec![("id", Some(&[0xff, 0xfe][..])), ("v", Some(&b"1"[..]))],
                TxtLimits::DEFAULT
            )
            .unwrap_err(),
            MdnsError::BadPeerId(_)
        ));
        assert!(matches!(
            decode(
                vec![("id", None), ("v", Some(&b"1"[..]))],
                TxtLimits::DEFAULT
            )
            .unwrap_err(),
            MdnsError::BadPeerId(_)
        ));
        assert_eq!(
            decode_pairs(&[("id", &id), ("v", "2")]).unwrap_err(),
            MdnsError::UnsupportedVersion("2".into())
        );
        assert_eq!(
            decode(
                vec![("id", Some(id.as_bytes())), ("v", None)],
                TxtLimits::DEFAULT
            )
            .unwrap_err(),
            MdnsError::UnsupportedVersion(String::new())
        );
        // The reason is PeerAddr's parse error, whatever schemes it knows.
        assert!(matches!(
            decode_pairs(&[("id", &id), ("v", "1"), ("a0", "udp/1.2.3.4:5")]).unwrap_err(),
            MdnsError::BadAddress { key, reason }
                if key == "a0" && reason.starts_with("unknown scheme \"udp\"")
        ));
        assert!(matches!(
            decode(
                vec![
                    ("id", Some(id.as_bytes())),
                    ("v", Some(&b"1"[..])),
                    ("a0", Some(&[0xc0][..]))
                ],
                TxtLimits::DEFAULT
            )
            .unwrap_err(),
            MdnsError::BadAddress { .. }
        ));
        assert_eq!(
            decode_pairs(&[("id", &id), ("v", "1"), ("a01", good_addr)]).unwrap_err(),
            MdnsError::BadAddressKey("a01".into())
        );
        assert_eq!(
            decode_pairs(&[("id", &id), ("v", "1"), ("a8", good_addr)]).unwrap_err(),
            MdnsError::BadAddressKey("a8".into())
        );
        assert_eq!(
            decode_pairs(&[
                ("id", &id),
                ("v", "1"),
                ("a99999999999999999999999", good_addr)
            ])
            .unwrap_err(),
            MdnsError::BadAddressKey("a99999999999999999999999".into())
        );
        let keys: Vec<String> = (0..9).map(address_key).collect();
        let mut many = vec![("id", id.as_str()), ("v", "1")];
        many.extend(keys.iter().map(|k| (k.as_str(), good_addr)));
        assert_eq!(
            decode_pairs(&many).unwrap_err(),
            MdnsError::TooManyAddresses { count: 9, max: 8 }
        );
        let junk = "x".repeat(250);
        let mut big = vec![("id", id.as_str()), ("v", "1")];
        big.extend(["p", "q", "r", "s"].iter().map(|k| (*k, junk.as_str())));
        assert!(matches!(
            decode_pairs(&big).unwrap_err(),
            MdnsError::OversizedTxt { max: 900, .. }
        ));
    }

    #[test]
    fn keys_are_case_insensitive_first_wins_unknown_ignored() {
        let id = peer_id();
        let text = id.to_string();
        let peer = decode_pairs(&[
            ("ID", &text),
            ("id", "garbage"),
            ("V", "1"),
            ("A1", "tcp/10.0.0.2:2"),
            ("a0", "tcp/10.0.0.1:1"),
            ("a", "not an address key"),
            ("alpha", "ignored"),
            ("future", "ignored"),
        ])
        .unwrap();
        assert_eq!(peer.peer_id, id);
        assert_eq!(
            peer.addrs,
            vec![
                "tcp/10.0.0.1:1".parse::<PeerAddr>().unwrap(),
                "tcp/10.0.0.2:2".parse().unwrap()
            ]
        );
        assert_eq!(peer.source, DiscoverySource::Mdns);
    }

    fn any_addr() -> impl Strategy<Value = PeerAddr> {
        prop_oneof![
            any::<SocketAddr>().prop_map(|sa| PeerAddr::Tcp(SocketAddr::new(sa.ip(), sa.port()))),
            "[A-Za-z0-9:_.-]{1,64}".prop_map(PeerAddr::Ble),
            any::<u64>().prop_map(PeerAddr::Mem),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(key in any::<[u8; 32]>(), addrs in proptest::collection::vec(any_addr(), 0..=8)) {
            // Any 32 bytes make a PeerId; whether they are a curve point does not matter here.
            let peer_id = PeerId::from_bytes(&key).unwrap();
            let info = LocalPeerInfo { peer_id, addrs };
            let entries = encode(&info, TxtLimits::DEFAULT).unwrap();
            let peer = decode(
                entries.iter().map(|e| (e.key.as_str(), e.value.as_deref())),
                TxtLimits::DEFAULT,
            ).unwrap();
            prop_assert_eq!(peer.peer_id, info.peer_id);
            prop_assert_eq!(peer.addrs, info.addrs);
        }

        #[test]
        fn decode_never_panics(raw in proptest::collection::vec(("[a-zA-Z0-9]{0,6}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..60))), 0..14)) {
            let _ = decode(raw.iter().map(|(k, v)| (k.as_str(), v.as_deref())), TxtLimits::DEFAULT);
        }
    }
}
