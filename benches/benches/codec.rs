//! Frame codec throughput: encode and decode of 64 B, 1 KiB and 64 KiB
//! payloads, each reported as frames/s and as bytes/s (wire bytes: header +
//! payload).
//!
//! Each iteration encodes or decodes a batch of frames (1000, or 100 of
//! 64 KiB) so what is measured is the per-frame cost; the setup of each
//! iteration is not timed. Encode takes the frames by value (as
//! `Framed::send` does) into a reused send buffer. Decode reads one receive
//! buffer holding the whole batch, freshly copied in as a socket read would
//! leave it (so it is cache-warm); decoded payloads are views into it (zero
//! copy), dropped one by one as a consumer would. `decode/<size>/floor` cuts
//! the same buffer with bare `split_to` + `freeze` and no header checks: the
//! least any zero-copy decoder pays, so `frames` against `floor` in one run
//! is the codec's own overhead (this machine is shared and noisy; compare
//! within a run).
//!
//! Run on one core: `taskset -c 0 cargo bench -p knotwork-benches --bench codec`.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use bytes::{Buf, Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput};
use knotwork_wire::{Frame, FrameCodec, HEADER_LEN};
use tokio_util::codec::{Decoder, Encoder};

/// Payload sizes and how many frames one iteration handles.
const CASES: [(&str, usize, usize); 3] = [
    ("64B", 64, 1000),
    ("1KiB", 1024, 1000),
    ("64KiB", 64 * 1024, 100),
];

fn batch(payload_len: usize, count: usize) -> Vec<Frame> {
    let payload = Bytes::from(vec![0xa5; payload_len]);
    (0..count)
        .map(|i| Frame::request(7, i as u32, payload.clone()))
        .collect()
}

/// Both throughput views of one batch.
fn throughputs(frames: &[Frame]) -> [(&'static str, Throughput); 2] {
    let bytes: usize = frames.iter().map(Frame::encoded_len).sum();
    [
        ("frames", Throughput::Elements(frames.len() as u64)),
        ("bytes", Throughput::Bytes(bytes as u64)),
    ]
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (label, payload_len, count) in CASES {
        let frames = batch(payload_len, count);
        let mut dst = BytesMut::with_capacity(frames.iter().map(Frame::encoded_len).sum());
        for (unit, throughput) in throughputs(&frames) {
            group.throughput(throughput);
            group.bench_function(format!("{label}/{unit}"), |b| {
                let mut codec = FrameCodec::new();
                b.iter_batched(
                    || frames.clone(),
                    |frames| {
                        dst.clear();
                        for frame in frames {
                            codec.encode(frame, &mut dst).unwrap();
                        }
                        dst.len()
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (label, payload_len, count) in CASES {
        let frames = batch(payload_len, count);
        let mut wire = BytesMut::new();
        for frame in &frames {
            FrameCodec::new().encode(frame.clone(), &mut wire).unwrap();
        }
        let wire = wire.freeze();
        for (unit, throughput) in throughputs(&frames) {
            group.throughput(throughput);
            group.bench_function(format!("{label}/{unit}"), |b| {
                let mut codec = FrameCodec::new();
                b.iter_batched(
                    || BytesMut::from(&wire[..]),
                    |mut buf| {
                        let mut decoded = 0;
                        while let Some(frame) = codec.decode(&mut buf).unwrap() {
                            black_box(&frame);
                            decoded += 1;
                        }
                        assert_eq!(decoded, count);
                        // Returned so freeing the batch's buffer is not timed.
                        buf
                    },
                    BatchSize::PerIteration,
                )
            });
        }
        // The floor: the same buffer cut by bare split_to + freeze, no header
        // checks. Every zero-copy decoder pays this (a reference-count
        // increment per split, a decrement per drop).
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function(format!("{label}/floor"), |b| {
            let frame_len = HEADER_LEN + payload_len;
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |mut buf| {
                    while buf.len() >= frame_len {
                        let mut payload = buf.split_to(frame_len).freeze();
                        payload.advance(HEADER_LEN);
                        black_box(&payload);
                    }
                    buf
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    encode(&mut c);
    decode(&mut c);
    c.final_summary();
}
