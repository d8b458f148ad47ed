//! Typed messages: the [`Message`] trait and its postcard [`encode`]/[`decode`].
//!
//! A message type declares a stable [`Message::NAME`], from which its 32-bit
//! [`Message::ID`] (the frame's `msg_id`) is derived, and [`Message::MAX_BYTES`],
//! the largest encoded payload it may have. Both directions enforce the limit:
//! [`encode`] never buffers more than `MAX_BYTES` (it only counts the rest to
//! report the size), and [`decode`] refuses a longer payload before parsing.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::WireError;

/// A typed message carried as a frame payload.
///
/// ```
/// use knotwork_wire::Message;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Ping {
///     nonce: u64,
/// }
///
/// impl Message for Ping {
///     const NAME: &'static str = "knot/ping/1";
///     // nonce: a u64 varint, at most 10 bytes.
///     const MAX_BYTES: usize = 10;
/// }
///
/// assert_eq!(Ping::ID, knotwork_wire::message_id("knot/ping/1"));
/// ```
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// A stable name, e.g. `"knot/ping/1"`; change it when the encoding changes.
    const NAME: &'static str;
    /// The frame `msg_id` of this type: [`message_id`] of [`Self::NAME`].
    const ID: u32 = message_id(Self::NAME);
    /// The largest encoded payload of this type, in bytes. Document how it
    /// adds up, field by field, next to the value.
    const MAX_BYTES: usize;
}

/// A request type tied to the type of its response, so a mismatch is a
/// compile error instead of a run-time `UnexpectedResponse`; a node's
/// `Channel::call` takes it.
///
/// Where every field of a type is bounded, postcard's [`MaxSize`] derive
/// (postcard with its `experimental-derive` feature) counts `MAX_BYTES`
/// instead of a hand-written sum:
///
/// ```
/// use knotwork_wire::{MaxSize, Message, Request};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, MaxSize)]
/// struct GetTemperature {
///     sensor: u16,
/// }
///
/// #[derive(Serialize, Deserialize, MaxSize)]
/// struct Temperature {
///     millikelvin: u32,
///     at_ms: u64,
/// }
///
/// impl Message for GetTemperature {
///     const NAME: &'static str = "example/temperature/get/1";
///     const MAX_BYTES: usize = Self::POSTCARD_MAX_SIZE;
/// }
///
/// impl Message for Temperature {
///     const NAME: &'static str = "example/temperature/1";
///     const MAX_BYTES: usize = Self::POSTCARD_MAX_SIZE;
/// }
///
/// impl Request for GetTemperature {
///     type Response = Temperature;
/// }
///
/// // u16 varint 3; u32 varint 5 + u64 varint 10.
/// assert_eq!(GetTemperature::MAX_BYTES, 3);
/// assert_eq!(Temperature::MAX_BYTES, 15);
/// ```
pub trait Request: Message {
    /// The type a peer answers this request with.
    type Response: Message;
}

/// Counts the largest postcard encoding of a type whose fields are all
/// bounded (numbers, arrays, options, enums of such): derive it, then
/// `const MAX_BYTES: usize = Self::POSTCARD_MAX_SIZE;` (see [`Request`]).
pub use postcard::experimental::max_size::MaxSize;

/// The 32-bit FNV-1a hash of `name`: the id of the message type so named.
pub const fn message_id(name: &str) -> u32 {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let mut hash = OFFSET_BASIS;
    let mut rest = name.as_bytes();
    while let [byte, tail @ ..] = rest {
        hash ^= *byte as u32;
        hash = hash.wrapping_mul(PRIME);
        rest = tail;
    }
    hash
}

/// Encodes `msg` with postcard, refusing it with
/// [`WireError::MessageTooLarge`] if it is longer than [`Message::MAX_BYTES`].
///
/// Two passes: the first only counts the bytes (nothing is stored, so an
/// oversized message costs no memory), the second writes them into a
/// buffer of exactly that size, which becomes the `Bytes` without another
/// allocation (one allocation per message; growing a small buffer and
/// freezing it took three).
pub fn encode<M: Message>(msg: &M) -> Result<Bytes, WireError> {
    let serialize_error = |source| WireError::Serialize {
        name: M::NAME,
        source,
    };
    let len = postcard::serialize_with_flavor(msg, postcard::ser_flavors::Size::default())
        .map_err(serialize_error)?;
    if len > M::MAX_BYTES {
        return Err(WireError::MessageTooLarge {
            name: M::NAME,
            len,
            max: M::MAX_BYTES,
        });
    }
    let buf = postcard::to_extend(msg, Vec::with_capacity(len)).map_err(serialize_error)?;
    Ok(Bytes::from(buf))
}

/// Decodes a `M` from a frame payload.
///
/// A payload longer than [`Message::MAX_BYTES`] is refused before parsing
/// ([`WireError::MessageTooLarge`]); one that is not a valid encoding is
/// [`WireError::Malformed`]; bytes left over after the message are
/// [`WireError::TrailingBytes`].
pub fn decode<M: Message>(payload: &[u8]) -> Result<M, WireError> {
    if payload.len() > M::MAX_BYTES {
        return Err(WireError::MessageTooLarge {
            name: M::NAME,
            len: payload.len(),
            max: M::MAX_BYTES,
        });
    }
    let (msg, rest) =
        postcard::take_from_bytes::<M>(payload).map_err(|source| WireError::Malformed {
            name: M::NAME,
            source,
        })?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes {
            name: M::NAME,
            count: rest.len(),
        });
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serializer};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Note {
        id: u16,
        text: String,
    }

    impl Message for Note {
        const NAME: &'static str = "test/note/1";
        // id: u16 varint, 3 bytes; text: varint length (1 byte below 128) + 20 bytes.
        const MAX_BYTES: usize = 3 + 1 + 20;
    }

    /// A type whose `Serialize` always fails.
    #[derive(Debug, Deserialize)]
    struct Unserializable;

    impl Serialize for Unserializable {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refused"))
        }
    }

    impl Message for Unserializable {
        const NAME: &'static str = "test/unserializable/1";
        const MAX_BYTES: usize = 8;
    }

    #[test]
    fn fnv1a_matches_published_vectors() {
        // Test vectors of the FNV reference (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(message_id(""), 0x811c_9dc5);
        assert_eq!(message_id("a"), 0xe40c_292c);
        assert_eq!(message_id("foobar"), 0xbf9c_f968);
        assert_eq!(Note::ID, message_id("test/note/1"));
    }

    #[test]
    fn round_trip() {
        let note = Note {
            id: u16::MAX,
            text: "twenty bytes exactly".into(),
        };
        let bytes = encode(&note).unwrap();
        assert_eq!(bytes.len(), Note::MAX_BYTES);
        assert_eq!(decode::<Note>(&bytes).unwrap(), note);
    }

    #[test]
    fn encode_refuses_over_max_bytes_and_reports_the_size() {
        let note = Note {
            id: 1,
            text: "x".repeat(100),
        };
        assert!(matches!(
            encode(&note),
            Err(WireError::MessageTooLarge {
                name: "test/note/1",
                len: 102,
                max: 24
            })
        ));
    }

    #[test]
    fn decode_refuses_over_max_bytes_before_parsing() {
        let payload = [0u8; Note::MAX_BYTES + 1];
        assert!(matches!(
            decode::<Note>(&payload),
            Err(WireError::MessageTooLarge {
                len: 25,
                max: 24,
                ..
            })
        ));
    }

    #[test]
    fn malformed_payload() {
        // id 1, then a text length of 5 with only 2 bytes following.
        assert!(matches!(
            decode::<Note>(&[1, 5, b'h', b'i']),
            Err(WireError::Malformed {
                name: "test/note/1",
                source: postcard::Error::DeserializeUnexpectedEnd
            })
        ));
        // Invalid UTF-8 in the text.
        assert!(matches!(
            decode::<Note>(&[1, 1, 0xff]),
            Err(WireError::Malformed {
                source: postcard::Error::DeserializeBadUtf8,
                ..
            })
        ));
    }

    #[test]
    fn trailing_bytes() {
        let mut bytes = encode(&Note {
            id: 1,
            text: "hi".into(),
        })
        .unwrap()
        .to_vec();
        bytes.extend_from_slice(&[0, 0]);
        assert!(matches!(
            decode::<Note>(&bytes),
            Err(WireError::TrailingBytes { count: 2, .. })
        ));
    }

    #[test]
    fn serialize_failure() {
        assert!(matches!(
            encode(&Unserializable),
            Err(WireError::Serialize {
                name: "test/unserializable/1",
                source: postcard::Error::SerdeSerCustom
            })
        ));
    }
}
