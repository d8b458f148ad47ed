//! Property tests of the sans-IO core: whatever the MTU and however the
//! fragment stream is re-cut, the messages come out as they went in.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use knotwork_transport_ble::{BleError, Link, LinkConfig};
use proptest::prelude::*;

const MAX: u32 = 4096;

fn config(mtu: u16) -> LinkConfig {
    let mut c = LinkConfig::with_mtu(mtu);
    c.max_message = MAX;
    c.window = 4 * MAX;
    c
}

/// Runs `msgs` from a to b at `mtu`; the byte stream between them is re-cut
/// at the `cuts` points (each fed as one "fragment") before b sees it.
fn transfer(mtu: u16, msgs: &[Vec<u8>], cuts: &[usize]) -> Result<Vec<Vec<u8>>, BleError> {
    let mut a = Link::new(config(mtu))?;
    let mut b = Link::new(config(mtu))?;
    let mut out = Vec::new();
    let mut pending = msgs.iter();
    let mut next = pending.next();
    let mut cut = cuts.iter().cycle();
    loop {
        // b → a: credit grants.
        while let Some(f) = b.poll_fragment() {
            a.handle_fragment(&f)?;
        }
        while let Some(m) = next.filter(|m| m.len() <= a.send_capacity()) {
            a.send(Bytes::from(m.clone()))?;
            next = pending.next();
        }
        // a → b, with the stream re-cut.
        let mut stream = Vec::new();
        while let Some(f) = a.poll_fragment() {
            assert!(f.len() <= usize::from(mtu) - 3, "fragment exceeds mtu - 3");
            stream.extend_from_slice(&f);
        }
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = (*cut.next().unwrap_or(&1)).clamp(1, rest.len());
            let (now, later) = rest.split_at(n);
            b.handle_fragment(now)?;
            rest = later;
        }
        let mut progressed = false;
        while let Some(m) = b.poll_message() {
            b.release(m.len());
            out.push(m.to_vec());
            progressed = true;
        }
        if next.is_none() && !a.wants_write() && !b.wants_write() {
            return Ok(out);
        }
        assert!(progressed || b.wants_write(), "transfer stalled");
    }
}

proptest! {
    #[test]
    fn any_messages_any_mtu_any_recut(
        mtu in 23u16..=517,
        msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..=MAX as usize), 0..40),
        cuts in prop::collection::vec(1usize..600, 1..20),
    ) {
        let out = transfer(mtu, &msgs, &cuts).unwrap();
        prop_assert_eq!(out, msgs);
    }

    #[test]
    fn small_messages_any_mtu(
        mtu in 23u16..=517,
        msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..64), 0..300),
        cuts in prop::collection::vec(1usize..64, 1..8),
    ) {
        let out = transfer(mtu, &msgs, &cuts).unwrap();
        prop_assert_eq!(out, msgs);
    }

    /// Arbitrary bytes from a peer never panic; they decode or fail with a
    /// named peer error.
    #[test]
    fn hostile_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..2000)) {
        let mut link = Link::new(config(23)).unwrap();
        if let Err(e) = link.handle_fragment(&input) {
            prop_assert!(e.is_peer_fault(), "{e:?} is not a peer fault");
        }
    }
}
