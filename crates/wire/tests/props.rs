//! Property tests of the frame codec and the message layer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::{Bytes, BytesMut};
use knotwork_wire::{
    DEFAULT_MAX_FRAME_LEN, Frame, FrameCodec, FrameKind, HEADER_LEN, Message, WireError, decode,
    encode,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

fn arb_frame() -> impl Strategy<Value = Frame> {
    (
        0u8..3,
        any::<u32>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(kind, msg_id, request_id, payload)| match kind {
            0 => Frame::message(msg_id, payload),
            1 => Frame::request(msg_id, request_id, payload),
            _ => Frame::response(msg_id, request_id, payload),
        })
}

fn encode_all(frames: &[Frame]) -> BytesMut {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    for f in frames {
        codec.encode(f.clone(), &mut buf).unwrap();
    }
    buf
}

proptest! {
    /// Any sequence of frames, concatenated and re-split at arbitrary byte
    /// boundaries, decodes to the same frames.
    #[test]
    fn resplit_stream_decodes_to_the_same_frames(
        frames in prop::collection::vec(arb_frame(), 0..16),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let wire = encode_all(&frames).freeze();
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();

        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut at = 0;
        for cut in cuts {
            buf.extend_from_slice(&wire[at..cut]);
            at = cut;
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        prop_assert!(codec.decode_eof(&mut buf).unwrap().is_none());
        prop_assert_eq!(decoded, frames);
    }

    /// Writing `encode_header` and the payload separately gives the same bytes
    /// as the codec.
    #[test]
    fn header_plus_payload_equals_codec_output(frame in arb_frame()) {
        let mut codec = FrameCodec::new();
        let mut encoded = BytesMut::new();
        codec.encode(frame.clone(), &mut encoded).unwrap();
        let mut separate = frame.encode_header().unwrap().to_vec();
        separate.extend_from_slice(&frame.payload);
        prop_assert_eq!(&encoded[..], &separate[..]);
        prop_assert_eq!(encoded.len(), frame.encoded_len());
    }

    /// Arbitrary bytes never panic the decoder, whatever it accepts
    /// re-encodes to exactly the bytes it consumed, and `decode_ref` sees
    /// the same frames and errors.
    #[test]
    fn arbitrary_bytes_decode_or_fail_cleanly(
        mut bytes in prop::collection::vec(any::<u8>(), 0..200),
        valid_prefix in any::<bool>(),
    ) {
        // Half the cases get a plausible header (magic, version, a kind, a
        // short length) so the decoder gets past the first checks.
        if valid_prefix && bytes.len() >= HEADER_LEN {
            let kind = bytes[3] % 3;
            let len = bytes[15] & 0x7f;
            bytes[..4].copy_from_slice(&[b'k', b'w', 1, kind]);
            bytes[12..16].copy_from_slice(&[0, 0, 0, len]);
        }
        let original = Bytes::from(bytes.clone());
        let mut buf = BytesMut::from(&bytes[..]);
        let mut codec = FrameCodec::with_max_frame_len(128);
        let mut consumed = 0;
        loop {
            // The view and the owned frame agree, and the view consumes nothing.
            let view = codec.decode_ref(&buf).map(|f| f.map(|f| {
                (f.kind, f.msg_id, f.request_id, Bytes::copy_from_slice(f.payload), f.encoded_len())
            }));
            let before = buf.len();
            let owned = codec.decode(&mut buf);
            match (&view, &owned) {
                (Ok(Some((kind, msg_id, request_id, payload, len))), Ok(Some(frame))) => {
                    prop_assert_eq!((*kind, *msg_id, *request_id), (frame.kind, frame.msg_id, frame.request_id));
                    prop_assert_eq!(payload, &frame.payload);
                    prop_assert_eq!(*len, before - buf.len());
                }
                (Ok(None), Ok(None)) => {}
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                (a, b) => prop_assert!(false, "decode_ref {a:?} but decode {b:?}"),
            }
            match owned {
                Ok(Some(frame)) => {
                    let mut again = BytesMut::new();
                    codec.encode(frame, &mut again).unwrap();
                    prop_assert_eq!(&again[..], &original[consumed..consumed + again.len()]);
                    consumed += again.len();
                }
                Ok(None) => {
                    prop_assert!(buf.len() < HEADER_LEN + 128);
                    break;
                }
                Err(_) => break,
            }
        }
    }

    /// Typed messages survive encode and decode.
    #[test]
    fn message_round_trip(msg in arb_sample()) {
        let bytes = encode(&msg).unwrap();
        prop_assert!(bytes.len() <= Sample::MAX_BYTES);
        prop_assert_eq!(decode::<Sample>(&bytes).unwrap(), msg);
    }

    /// `encode` succeeds exactly when the postcard encoding fits MAX_BYTES,
    /// and reports the true size when it does not.
    #[test]
    fn message_limit_is_exact(text in "[a-z]{0,40}") {
        let note = Tiny { text };
        let real_len = postcard::to_allocvec(&note).unwrap().len();
        match encode(&note) {
            Ok(bytes) => {
                prop_assert!(real_len <= Tiny::MAX_BYTES);
                prop_assert_eq!(bytes.len(), real_len);
            }
            Err(WireError::MessageTooLarge { len, max, .. }) => {
                prop_assert!(real_len > Tiny::MAX_BYTES);
                prop_assert_eq!((len, max), (real_len, Tiny::MAX_BYTES));
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }
}

proptest! {
    /// A message serialized straight into the send buffer is byte for byte
    /// what `encode` and the codec's `Encoder` write, after whatever the
    /// buffer held, and decodes back to the message.
    #[test]
    fn encode_message_equals_encode_then_frame(
        msg in arb_sample(),
        kind in prop_oneof![Just(FrameKind::Message), Just(FrameKind::Request), Just(FrameKind::Response)],
        request_id in 1u32..,
        before in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let request_id = if kind == FrameKind::Message { 0 } else { request_id };
        let mut codec = FrameCodec::new();
        let mut direct = BytesMut::from(&before[..]);
        let len = codec.encode_message(kind, request_id, &msg, &mut direct).unwrap();
        let payload = encode(&msg).unwrap();
        prop_assert_eq!(len, payload.len());
        let mut framed = BytesMut::from(&before[..]);
        let frame = Frame { kind, msg_id: Sample::ID, request_id, payload };
        codec.encode(frame.clone(), &mut framed).unwrap();
        prop_assert_eq!(&direct, &framed);
        let mut rest = direct.split_off(before.len());
        let got = codec.decode(&mut rest).unwrap().unwrap();
        prop_assert_eq!(&got, &frame);
        prop_assert_eq!(decode::<Sample>(&got.payload).unwrap(), msg);
    }

    /// `encode_message` refuses exactly what `encode` refuses (or what the
    /// codec's frame limit refuses), with the true size, and leaves the
    /// buffer as it was.
    #[test]
    fn encode_message_limits_are_exact(text in "[a-z]{0,40}", max_frame_len in 0usize..30) {
        let note = Tiny { text };
        let real_len = postcard::to_allocvec(&note).unwrap().len();
        let codec = FrameCodec::with_max_frame_len(max_frame_len);
        let mut buf = BytesMut::from(&b"kept"[..]);
        match codec.encode_message(FrameKind::Message, 0, &note, &mut buf) {
            Ok(len) => {
                prop_assert!(real_len <= Tiny::MAX_BYTES && real_len <= max_frame_len);
                prop_assert_eq!(len, real_len);
                prop_assert_eq!(buf.len(), 4 + HEADER_LEN + real_len);
            }
            Err(e) => {
                match e {
                    WireError::MessageTooLarge { len, max, .. } => {
                        prop_assert!(real_len > Tiny::MAX_BYTES);
                        prop_assert_eq!((len, max), (real_len, Tiny::MAX_BYTES));
                    }
                    WireError::FrameTooLarge { len, max } => {
                        prop_assert!(real_len <= Tiny::MAX_BYTES && real_len > max_frame_len);
                        prop_assert_eq!((len, max), (real_len, max_frame_len));
                    }
                    other => prop_assert!(false, "unexpected error {other}"),
                }
                prop_assert_eq!(&buf[..], &b"kept"[..]);
            }
        }
    }
}

#[test]
fn encode_message_refuses_a_request_id_on_a_message_before_writing() {
    let mut buf = BytesMut::new();
    let err = FrameCodec::new()
        .encode_message(FrameKind::Message, 3, &Tiny { text: "a".into() }, &mut buf)
        .unwrap_err();
    assert!(matches!(err, WireError::RequestIdOnMessage(3)));
    assert!(buf.is_empty());
}

/// A `Serialize` impl that fails after writing part of the message.
struct FailsHalfway;

impl Serialize for FailsHalfway {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeTuple};
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&7u8)?;
        Err(S::Error::custom("refused"))
    }
}

impl<'de> Deserialize<'de> for FailsHalfway {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u8::deserialize(d).map(|_| FailsHalfway)
    }
}

impl Message for FailsHalfway {
    const NAME: &'static str = "test/fails-halfway/1";
    const MAX_BYTES: usize = 2;
}

#[test]
fn encode_message_leaves_no_partial_frame_when_serialize_fails() {
    let mut buf = BytesMut::from(&b"kept"[..]);
    let err = FrameCodec::new()
        .encode_message(FrameKind::Message, 0, &FailsHalfway, &mut buf)
        .unwrap_err();
    assert!(matches!(err, WireError::Serialize { .. }), "{err}");
    assert_eq!(&buf[..], b"kept");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Body {
    Empty,
    Number(i64),
    Blob(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sample {
    seq: u64,
    flag: bool,
    name: String,
    maybe: Option<i32>,
    body: Body,
}

impl Message for Sample {
    const NAME: &'static str = "test/sample/1";
    // seq: 10 (u64 varint); flag: 1; name: 2 + 4 * 50 (up to 50 chars of at
    // most 4 UTF-8 bytes); maybe: 1 + 5; body: 1 (variant) + 2 + 200 (blob).
    const MAX_BYTES: usize = 10 + 1 + (2 + 200) + (1 + 5) + (1 + 2 + 200);
}

fn arb_sample() -> impl Strategy<Value = Sample> {
    let body = prop_oneof![
        Just(Body::Empty),
        any::<i64>().prop_map(Body::Number),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Body::Blob),
    ];
    (
        any::<u64>(),
        any::<bool>(),
        "\\PC{0,50}",
        any::<Option<i32>>(),
        body,
    )
        .prop_map(|(seq, flag, name, maybe, body)| Sample {
            seq,
            flag,
            name,
            maybe,
            body,
        })
}

#[derive(Debug, Serialize, Deserialize)]
struct Tiny {
    text: String,
}

impl Message for Tiny {
    const NAME: &'static str = "test/tiny/1";
    // text: 1-byte length + 20 bytes.
    const MAX_BYTES: usize = 21;
}

/// A reader that fails: the codec surfaces the stream's error as `Io`.
struct FailingReader;

impl tokio::io::AsyncRead for FailingReader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))
    }
}

#[tokio::test]
async fn stream_errors_are_io() {
    use futures::StreamExt;
    let mut framed = tokio_util::codec::FramedRead::new(FailingReader, FrameCodec::new());
    match framed.next().await {
        Some(Err(WireError::Io(e))) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        other => panic!("expected an i/o error, got {other:?}"),
    }
}

#[tokio::test]
async fn eof_mid_frame_through_framed_is_truncated() {
    use futures::StreamExt;
    let wire = encode_all(&[Frame::request(5, 6, vec![1u8; 50])]);
    let cut = &wire[..HEADER_LEN + 10];
    let mut framed = tokio_util::codec::FramedRead::new(cut, FrameCodec::new());
    assert!(matches!(
        framed.next().await,
        Some(Err(WireError::Truncated { have: 26, need: 66 }))
    ));
}

#[test]
fn default_limit_is_one_mebibyte() {
    assert_eq!(DEFAULT_MAX_FRAME_LEN, 1 << 20);
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    codec
        .encode(
            Frame::message(1, vec![0u8; DEFAULT_MAX_FRAME_LEN]),
            &mut buf,
        )
        .unwrap();
    let frame = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(frame.kind, FrameKind::Message);
    assert_eq!(frame.payload.len(), DEFAULT_MAX_FRAME_LEN);
    assert!(matches!(
        codec.encode(
            Frame::message(1, vec![0u8; DEFAULT_MAX_FRAME_LEN + 1]),
            &mut buf
        ),
        Err(WireError::FrameTooLarge { .. })
    ));
}
