//! Throughput of the sans-IO fragmentation core in memory: messages go
//! through `Link::send` → fragments → `Link::handle_fragment` →
//! `poll_message`, with credits granted back, at ATT MTU 185 and 517.
//!
//! `cargo bench -p knotwork-transport-ble --bench fragmentation`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use knotwork_transport_ble::{Link, LinkConfig};

/// Bytes moved per iteration.
const BATCH: usize = 256 * 1024;

fn pair(mtu: u16) -> (Link, Link) {
    let mut a = Link::new(LinkConfig::with_mtu(mtu)).unwrap();
    let mut b = Link::new(LinkConfig::with_mtu(mtu)).unwrap();
    while let Some(f) = a.poll_fragment() {
        b.handle_fragment(&f).unwrap();
    }
    while let Some(f) = b.poll_fragment() {
        a.handle_fragment(&f).unwrap();
    }
    (a, b)
}

/// Moves `BATCH` bytes in messages of `size` from a to b.
fn transfer(a: &mut Link, b: &mut Link, msg: &Bytes) {
    let mut left = BATCH;
    while left > 0 {
        while left > 0 && a.send_capacity() >= msg.len() {
            a.send(msg.clone()).unwrap();
            left = left.saturating_sub(msg.len());
        }
        while let Some(f) = a.poll_fragment() {
            b.handle_fragment(&f).unwrap();
        }
        while let Some(m) = b.poll_message() {
            b.release(black_box(m).len());
        }
        while let Some(f) = b.poll_fragment() {
            a.handle_fragment(&f).unwrap();
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("ble_fragmentation");
    group.throughput(Throughput::Bytes(BATCH as u64));
    for mtu in [185u16, 517] {
        for size in [64usize, 1024, 16 * 1024] {
            let msg = Bytes::from(vec![0xa5; size]);
            let (mut a, mut b) = pair(mtu);
            group.bench_with_input(
                BenchmarkId::new(format!("mtu{mtu}"), size),
                &msg,
                |bench, msg| bench.iter(|| transfer(&mut a, &mut b, msg)),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
