//! Frame codec throughput: encode and decode of 64 B, 1 KiB and 64 KiB
//! payloads, each reported as frames/s and as bytes/s (wire bytes: header +
//! payload).
//!
//! Each iteration encodes or decodes a batch of frames (1000, or 100 of
//! 64 KiB) so what is measured is the per-frame cost, not the setup. The
//! decode batch is one receive buffer holding the whole batch, as after a
//! large socket read; decoded payloads are views into it (zero copy).
//!
//! Run on one core: `taskset -c 0 cargo bench -p knotwork-benches --bench codec`.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput};
use knotwork_wire::{Frame, FrameCodec};
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
                b.iter(|| {
                    dst.clear();
                    for frame in &frames {
                        codec.encode(frame.clone(), &mut dst).unwrap();
                    }
                    black_box(dst.len())
                })
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
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    encode(&mut c);
    decode(&mut c);
    c.final_summary();
}
