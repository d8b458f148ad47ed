//! Arbitrary bytes into the decoders of the NAT traversal messages (relay
//! reservations, circuits and data; hole punch candidates; dial-back
//! requests and results), the first byte choosing the type, relay data into
//! the relay's bookkeeping and dial-back candidates into the limiter.
//!
//! Checks: nothing panics; a decoded message re-encodes and decodes to
//! itself; the relay table accounts any circuit data and stays usable; the
//! dial-back limiter only ever admits the asker's own IP; hole punching
//! only ever targets the IP the relay saw the peer at.
#![no_main]

use std::time::Instant;

use knotwork_core::{PeerAddr, PeerId};
use knotwork_nat::{DialBackLimiter, DialBackLimits};
use knotwork_nat::holepunch::{MAX_PUNCH_TARGETS, Punch, targets};
use knotwork_node::AddrScope;
use knotwork_nat::dialback::{DialBack, DialBackResult};
use knotwork_nat::relay::{
    Accepted, Connect, Connected, FromRelay, Incoming, RelayLimits, RelayTable, Reserved, ToRelay,
};
use knotwork_wire::{Message, decode, encode};
use libfuzzer_sys::fuzz_target;

fn peer(n: u8) -> PeerId {
    PeerId::from_bytes(&[n; 32]).expect("32 bytes")
}

fn roundtrip<M: Message + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let m = decode::<M>(bytes).ok()?;
    let again = encode(&m).expect("a decoded message re-encodes");
    assert_eq!(decode::<M>(&again).expect("re-encoded bytes decode"), m);
    Some(m)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 10 {
        0 => {
            if let Some(ToRelay::Data { circuit, data }) = roundtrip::<ToRelay>(bytes) {
                let now = Instant::now();
                let mut table = RelayTable::new(RelayLimits::default());
                table.reserve(peer(2), None, now).expect("an empty table reserves");
                let id = table.open(peer(1), None, peer(2), now).expect("a reserved target");
                let _ = table.forward(circuit, &peer(1), data.len(), now);
                let _ = table.forward(id, &peer(1), data.len(), now);
                assert!(table.circuits() <= 1);
            }
        }
        1 => drop(roundtrip::<FromRelay>(bytes)),
        2 => drop(roundtrip::<Reserved>(bytes)),
        3 => drop(roundtrip::<Connected>(bytes)),
        4 => drop(roundtrip::<Accepted>(bytes)),
        5 => drop(roundtrip::<Incoming>(bytes)),
        6 => drop(roundtrip::<Connect>(bytes)),
        7 => {
            if let Some(DialBack { addrs }) = roundtrip::<DialBack>(bytes) {
                let candidates: Vec<PeerAddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
                let conn: PeerAddr = "tcp/198.51.100.7:50000".parse().expect("an address");
                let mut limiter = DialBackLimiter::new(DialBackLimits::default());
                if let Ok(target) = limiter.admit(peer(1), &conn, &candidates, Instant::now()) {
                    assert_eq!(target.ip().to_string(), "198.51.100.7");
                    assert_eq!(limiter.running(), 1);
                }
            }
        }
        8 => drop(roundtrip::<DialBackResult>(bytes)),
        _ => {
            if let Some(Punch { addrs }) = roundtrip::<Punch>(bytes) {
                let seen = "198.51.100.7".parse().expect("an ip");
                let dialed = targets(&addrs, Some(seen), AddrScope::Public);
                // At most MAX_PUNCH_TARGETS of each transport (TCP, QUIC).
                assert!(dialed.len() <= 2 * MAX_PUNCH_TARGETS);
                assert!(dialed.iter().all(|a| match a {
                    PeerAddr::Tcp(sa) | PeerAddr::Quic(sa) => sa.ip().to_canonical() == seen,
                    _ => false,
                }));
                for a in addrs {
                    if let Ok(addr) = a.parse::<PeerAddr>() {
                        assert_eq!(addr.to_string().parse::<PeerAddr>(), Ok(addr));
                    }
                }
            }
        }
    }
});
