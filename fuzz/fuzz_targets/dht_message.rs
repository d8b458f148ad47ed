//! Arbitrary bytes into `DhtMessage::decode`, and every decoded message into
//! a DHT core that is waiting for one lookup response.
//!
//! Checks: nothing panics; an accepted message re-encodes and decodes to
//! itself; the core either accepts the message or names why not, and stays
//! usable afterwards (it can still be polled and timed out).
#![no_main]

use knotwork_core::{PeerAddr, PeerId};
use knotwork_discovery_dht::{Config, Dht, DhtMessage, Key, Time};
use libfuzzer_sys::fuzz_target;

fn peer(n: u8) -> PeerId {
    PeerId::from_bytes(&[n; 32]).expect("32 bytes")
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = DhtMessage::decode(data) else {
        return;
    };
    let bytes = msg.encode().expect("a decoded message re-encodes");
    assert_eq!(
        DhtMessage::decode(&bytes).expect("re-encoded bytes decode"),
        msg
    );

    // A core with one FIND_NODE outstanding (request id 0) to peer 1.
    let mut dht = Dht::new(peer(0), Config::default());
    let now = Time(1_000);
    let _ = dht.add_peer(now, peer(1), &[PeerAddr::Mem(1)]);
    dht.find_node(now, Key::hash(b"fuzz"));
    while dht.poll_transmit().is_some() {}
    let _ = dht.handle_message(now, peer(1), PeerAddr::Mem(1), msg);
    while dht.poll_transmit().is_some() {}
    while dht.poll_event().is_some() {}
    if let Some(t) = dht.poll_timeout() {
        dht.handle_timeout(t);
    }
});
