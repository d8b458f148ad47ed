//! Arbitrary bytes as the RDATA of a peer's TXT record (RFC 6763 §6: length-
//! prefixed strings), split into properties by mdns-sd's own parser (what the
//! daemon hands us), then into `txt::decode`.
//!
//! Checks: nothing panics; an accepted record respects the limits, and the
//! peer it yields encodes and decodes back to itself.
#![no_main]

use knotwork_core::LocalPeerInfo;
use knotwork_discovery_mdns::TxtLimits;
use knotwork_discovery_mdns::txt::{decode, encode, wire_size};
use libfuzzer_sys::fuzz_target;
use mdns_sd::TxtProperties;

fuzz_target!(|rdata: &[u8]| {
    let props = TxtProperties::from(rdata);
    let limits = TxtLimits::DEFAULT;
    let Ok(peer) = decode(props.iter().map(|p| (p.key(), p.val())), limits) else {
        return;
    };
    assert!(wire_size(props.iter().map(|p| (p.key(), p.val()))) <= limits.max_bytes);
    assert!(peer.addrs.len() <= limits.max_addrs);

    let info = LocalPeerInfo {
        peer_id: peer.peer_id,
        addrs: peer.addrs.clone(),
    };
    let entries = encode(&info, limits).expect("a decoded peer re-encodes");
    let again = decode(
        entries.iter().map(|e| (e.key.as_str(), e.value.as_deref())),
        limits,
    )
    .expect("re-encoded record decodes");
    assert_eq!(again, peer);
});
