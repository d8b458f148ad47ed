//! serde for [`PeerId`] and [`PeerAddr`] (feature `serde`, on by default)
//! and for `Keypair` (feature `keypair-serde`); the formats are described
//! in the crate docs.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};

use crate::{PeerAddr, PeerId};

/// Reads a string and parses it with `FromStr`; borrows the input where
/// the format allows, so nothing is allocated for it.
struct TextVisitor<T> {
    expecting: &'static str,
    parsed: PhantomData<T>,
}

impl<T> TextVisitor<T> {
    fn new(expecting: &'static str) -> Self {
        Self {
            expecting,
            parsed: PhantomData,
        }
    }
}

impl<T> Visitor<'_> for TextVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(E::custom)
    }
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor::new("a base58 peer id"))
    }
}

impl Serialize for PeerAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor::new("a peer address such as tcp/1.2.3.4:4000"))
    }
}

#[cfg(feature = "keypair-serde")]
mod keypair {
    use super::*;
    use crate::{IdentityError, Keypair};

    /// Longest base58 text of a PKCS#8 document accepted (ours are 83
    /// bytes, 113 or 114 characters); longer text is refused unread.
    const MAX_TEXT_LEN: usize = 128;

    impl Serialize for Keypair {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            if serializer.is_human_readable() {
                serializer.serialize_str(&bs58::encode(self.to_pkcs8()).into_string())
            } else {
                serializer.serialize_bytes(self.to_pkcs8())
            }
        }
    }

    struct KeypairVisitor;

    impl Visitor<'_> for KeypairVisitor {
        type Value = Keypair;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an Ed25519 key pair's PKCS#8 document (base58 text or bytes)")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Keypair, E> {
            if text.len() > MAX_TEXT_LEN {
                return Err(E::custom(IdentityError::InvalidPrivateKey));
            }
            let bytes = bs58::decode(text)
                .into_vec()
                .map_err(|_| E::custom(IdentityError::InvalidPrivateKey))?;
            self.visit_bytes(&bytes)
        }

        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Keypair, E> {
            Keypair::from_pkcs8(bytes).map_err(E::custom)
        }
    }

    impl<'de> Deserialize<'de> for Keypair {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            if deserializer.is_human_readable() {
                deserializer.deserialize_str(KeypairVisitor)
            } else {
                deserializer.deserialize_bytes(KeypairVisitor)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AddrParseError, IdentityError, Keypair, MAX_PEER_ID_TEXT_LEN};
    use proptest::prelude::*;
    use std::net::{IpAddr, SocketAddr};

    fn json<T: Serialize + for<'de> Deserialize<'de>>(value: &T) -> T {
        serde_json::from_str(&serde_json::to_string(value).unwrap()).unwrap()
    }

    fn postcard<T: Serialize + for<'de> Deserialize<'de>>(value: &T) -> T {
        postcard::from_bytes(&postcard::to_stdvec(value).unwrap()).unwrap()
    }

    fn peer_id() -> impl Strategy<Value = PeerId> {
        any::<[u8; 32]>().prop_map(|b| PeerId::from_bytes(&b).unwrap())
    }

    /// Every kind of address, relay addresses over each direct kind.
    fn peer_addr() -> impl Strategy<Value = PeerAddr> {
        let direct = prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| PeerAddr::Tcp(SocketAddr::new(IpAddr::from(ip), port))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| PeerAddr::Tcp(SocketAddr::new(IpAddr::from(ip), port))),
            "[A-Za-z0-9:_.-]{1,64}".prop_map(|d| PeerAddr::ble(d).unwrap()),
            any::<u64>().prop_map(PeerAddr::Mem),
        ];
        prop_oneof![
            direct.clone(),
            // A relay over a long BLE device id would not fit the text limit.
            (direct, peer_id(), peer_id())
                .prop_filter_map("fits the text limit", |(relay, via, target)| {
                    PeerAddr::relayed(relay, via, target).ok()
                }),
        ]
    }

    proptest! {
        #[test]
        fn peer_id_round_trips_as_text(id in peer_id()) {
            let text = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(text, format!("\"{id}\""));
            prop_assert_eq!(json(&id), id);
            let bytes = postcard::to_stdvec(&id).unwrap();
            prop_assert!(bytes.len() <= 1 + MAX_PEER_ID_TEXT_LEN);
            let text = id.to_string();
            prop_assert_eq!(&bytes[1..], text.as_bytes());
            prop_assert_eq!(postcard(&id), id);
        }

        #[test]
        fn peer_addr_round_trips_as_text(addr in peer_addr()) {
            prop_assert_eq!(serde_json::to_string(&addr).unwrap(), format!("\"{addr}\""));
            prop_assert_eq!(json(&addr), addr.clone());
            // Postcard: the text's length as a varint (1 byte below 128),
            // then the text.
            let bytes = postcard::to_stdvec(&addr).unwrap();
            let text = addr.to_string();
            let prefix = if text.len() < 128 { 1 } else { 2 };
            prop_assert_eq!(&bytes[prefix..], text.as_bytes());
            prop_assert_eq!(postcard(&addr), addr);
        }

        #[test]
        fn hostile_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = postcard::from_bytes::<PeerId>(&bytes);
            let _ = postcard::from_bytes::<PeerAddr>(&bytes);
            let _ = serde_json::from_slice::<PeerAddr>(&bytes);
        }
    }

    /// The error a serde error message carries is the `FromStr` error.
    fn json_error<T: for<'de> Deserialize<'de> + fmt::Debug>(text: &str) -> String {
        serde_json::from_str::<T>(text).unwrap_err().to_string()
    }

    #[test]
    fn bad_text_fails_with_the_parse_error() {
        assert!(
            json_error::<PeerId>("\"0OIl\"").contains(&IdentityError::PeerIdNotBase58.to_string())
        );
        assert!(
            json_error::<PeerId>(&format!("\"{}\"", "1".repeat(45)))
                .contains(&IdentityError::PeerIdLength(33).to_string())
        );
        assert!(
            json_error::<PeerAddr>("\"udp/1.2.3.4:5\"")
                .contains(&AddrParseError::UnknownScheme("udp".into()).to_string())
        );
        assert!(
            json_error::<PeerAddr>("\"tcp/::1:80\"")
                .contains(&AddrParseError::Ipv6WithoutBrackets.to_string())
        );
        // Not a string at all.
        assert!(json_error::<PeerAddr>("7").contains("a peer address"));
        // In postcard: a text that does not parse, and a cut-off text.
        let bad = postcard::to_stdvec("tcp/localhost").unwrap();
        assert_eq!(
            postcard::from_bytes::<PeerAddr>(&bad).unwrap_err(),
            postcard::Error::SerdeDeCustom
        );
        let id = PeerId::from_bytes(&[7; 32]).unwrap();
        let cut = postcard::to_stdvec(&id).unwrap();
        assert_eq!(
            postcard::from_bytes::<PeerId>(&cut[..cut.len() - 1]).unwrap_err(),
            postcard::Error::DeserializeUnexpectedEnd
        );
    }

    #[test]
    fn in_a_message_struct() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Hello {
            from: PeerId,
            reply_to: Vec<PeerAddr>,
        }
        let hello = Hello {
            from: Keypair::from_seed([3; 32]).unwrap().peer_id(),
            reply_to: vec!["tcp/[::1]:4000".parse().unwrap(), PeerAddr::Mem(2)],
        };
        let text = serde_json::to_string(&hello).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"from":"{}","reply_to":["tcp/[::1]:4000","mem/2"]}}"#,
                hello.from
            )
        );
        assert_eq!(json(&hello), hello);
        assert_eq!(postcard(&hello), hello);
    }

    #[cfg(feature = "keypair-serde")]
    mod keypair {
        use super::*;

        proptest! {
            #[test]
            fn keypair_round_trips(seed in any::<[u8; 32]>()) {
                let kp = Keypair::from_seed(seed).unwrap();
                let text = serde_json::to_string(&kp).unwrap();
                prop_assert_eq!(
                    text,
                    format!("\"{}\"", bs58::encode(kp.to_pkcs8()).into_string())
                );
                let back = json(&kp);
                prop_assert_eq!(back.to_pkcs8(), kp.to_pkcs8());
                let bytes = postcard::to_stdvec(&kp).unwrap();
                prop_assert_eq!(&bytes[1..], kp.to_pkcs8());
                let back = postcard(&kp);
                prop_assert_eq!(back.peer_id(), kp.peer_id());
                prop_assert_eq!(back.sign(b"x"), kp.sign(b"x"));
            }
        }

        #[test]
        fn debug_never_shows_the_secret() {
            let kp = Keypair::from_seed([0x5a; 32]).unwrap();
            let secret_text = serde_json::to_string(&kp).unwrap();
            let secret_text = secret_text.trim_matches('"');
            for shown in [format!("{kp:?}"), format!("{kp:#?}")] {
                assert!(shown.contains(&kp.peer_id().to_string()), "{shown}");
                assert!(!shown.contains(secret_text), "{shown}");
                assert!(!shown.contains("5a5a"), "{shown}");
                assert!(!shown.contains("90, 90"), "{shown}");
                assert!(!shown.contains("pkcs8"), "{shown}");
            }
        }

        #[test]
        fn bad_keypairs_are_invalid_private_keys() {
            let invalid = IdentityError::InvalidPrivateKey.to_string();
            for text in ["\"0OIl\"", "\"abc\"", &format!("\"{}\"", "1".repeat(129))] {
                assert!(json_error::<Keypair>(text).contains(&invalid), "{text}");
            }
            // Postcard writes a byte string as a Vec<u8>: length, bytes.
            let bytes = postcard::to_stdvec(&vec![1u8, 2, 3]).unwrap();
            assert_eq!(
                postcard::from_bytes::<Keypair>(&bytes).unwrap_err(),
                postcard::Error::SerdeDeCustom
            );
        }
    }
}
