//! Arbitrary bytes, split at arbitrary points, into `FrameCodec` (both
//! `decode` and the in-place `decode_ref`); each accepted payload into
//! `decode::<Probe>`.
//!
//! Input layout: byte 0 picks how many chunk sizes follow (0..=15), those
//! bytes are the chunk sizes (1..=256, used in turn), the rest is the stream.
//! Checks: nothing panics; feeding in chunks gives the same frames and the
//! same final error as feeding everything at once; `decode_ref` sees the
//! same frame or error as `decode` at every step; every accepted frame
//! re-encodes to exactly the bytes it was decoded from.
#![no_main]

use bytes::BytesMut;
use knotwork_wire::{FrameCodec, Message, decode};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// A message with variable-length fields, to exercise `decode`.
#[derive(Serialize, Deserialize)]
struct Probe {
    name: String,
    tags: Vec<u16>,
    extra: Option<Vec<u8>>,
}

impl Message for Probe {
    const NAME: &'static str = "fuzz/probe/1";
    const MAX_BYTES: usize = 512;
}

/// Decodes `stream` fed in chunks of the given sizes (all at once when
/// `sizes` is empty); returns the frames and the error that ended it.
fn run(stream: &[u8], sizes: &[u8]) -> (Vec<knotwork_wire::Frame>, Option<String>) {
    let mut codec = FrameCodec::with_max_frame_len(4096);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut turn = 0;
    loop {
        let take = match sizes.get(turn % sizes.len().max(1)) {
            Some(&s) => rest.len().min(usize::from(s) + 1),
            None => rest.len(),
        };
        turn += 1;
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        buf.extend_from_slice(chunk);
        let at_end = rest.is_empty();
        loop {
            let view = codec
                .decode_ref(&buf)
                .map(|f| f.map(|f| (f.kind, f.msg_id, f.request_id, f.payload.to_vec())))
                .map_err(|e| e.to_string());
            let step = if at_end {
                codec.decode_eof(&mut buf)
            } else {
                codec.decode(&mut buf)
            };
            match (&view, &step) {
                (Ok(Some(v)), Ok(Some(f))) => assert_eq!(
                    v,
                    &(f.kind, f.msg_id, f.request_id, f.payload.to_vec()),
                    "decode_ref and decode differ"
                ),
                (Err(a), Err(b)) => assert_eq!(a, &b.to_string()),
                // At the end, leftover bytes are an error only `decode_eof` names.
                (Ok(None), Ok(None) | Err(_)) => {}
                (a, b) => panic!("decode_ref {a:?} but decode {b:?}"),
            }
            match step {
                Ok(Some(frame)) => {
                    let _ = decode::<Probe>(&frame.payload);
                    frames.push(frame);
                }
                Ok(None) if at_end => return (frames, None),
                Ok(None) => break,
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(count);

    let (chunked, chunked_err) = run(stream, sizes);
    let (whole, whole_err) = run(stream, &[]);
    assert_eq!(chunked, whole, "chunking changed the frames");
    assert_eq!(chunked_err, whole_err, "chunking changed the error");

    let mut codec = FrameCodec::new();
    let mut again = BytesMut::new();
    for frame in whole {
        codec
            .encode(frame, &mut again)
            .expect("a decoded frame re-encodes");
    }
    assert_eq!(&again[..], &stream[..again.len()], "re-encoding differs");
});
