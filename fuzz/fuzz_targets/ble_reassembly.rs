//! Arbitrary bytes from a BLE peer, cut into arbitrary fragments, into a
//! `Link` (the reassembler with its credit and size checks).
//!
//! Input layout: byte 0 picks how many chunk sizes follow (0..=15), those
//! bytes are the fragment sizes (1..=256, used in turn), the rest is what
//! the peer sent. Checks: nothing panics; every error is a peer fault;
//! fragmenting differently gives the same messages and the same error;
//! no message exceeds the limit and the peer never gets more data through
//! than the window granted.
#![no_main]

use knotwork_transport_ble::{BleError, Link, LinkConfig};
use libfuzzer_sys::fuzz_target;

const MAX: u32 = 1024;
const WINDOW: u32 = 4096;

/// Feeds `stream` in fragments of the given sizes (all at once when there
/// are none); returns the messages and the error, if any.
fn feed(stream: &[u8], sizes: &[u8]) -> (Vec<Vec<u8>>, Option<BleError>) {
    let mut config = LinkConfig::with_mtu(23);
    config.max_message = MAX;
    config.window = WINDOW;
    let Ok(mut link) = Link::new(config) else {
        return (Vec::new(), None);
    };
    let mut out = Vec::new();
    let mut rest = stream;
    let mut turn = 0usize;
    let mut error = None;
    while !rest.is_empty() {
        let n = match sizes.get(turn % sizes.len().max(1)) {
            Some(&s) => usize::from(s).max(1).min(rest.len()),
            None => rest.len(),
        };
        turn += 1;
        let (now, later) = rest.split_at(n);
        rest = later;
        let result = link.handle_fragment(now);
        // Messages completed before an error in the same fragment count.
        while let Some(m) = link.poll_message() {
            out.push(m.to_vec());
        }
        if let Err(e) = result {
            error = Some(e);
            break;
        }
    }
    (out, error)
}

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 16).min(rest.len());
    let (sizes, stream) = rest.split_at(count);
    let (chunked, chunked_err) = feed(stream, sizes);
    let (whole, whole_err) = feed(stream, &[]);
    assert_eq!(chunked, whole, "fragmentation changed the messages");
    assert_eq!(chunked_err, whole_err, "fragmentation changed the error");
    if let Some(e) = &whole_err {
        assert!(e.is_peer_fault(), "{e:?} is not a peer fault");
    }
    assert!(
        whole
            .iter()
            .all(|m| !m.is_empty() && m.len() <= MAX as usize)
    );
    let total: usize = whole.iter().map(Vec::len).sum();
    assert!(
        total <= WINDOW as usize,
        "peer got {total} bytes past a {WINDOW} window"
    );
});
