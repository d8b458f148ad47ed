//! Tests of the version and disconnect messages through the public API.

use knotwork_core::PeerAddr;
use knotwork_node::{Disconnect, DisconnectReason, NodeError, Version};
use knotwork_wire::encode;

fn addr(s: &str) -> PeerAddr {
    s.parse().unwrap()
}

#[test]
fn bad_listen_addr_is_named() {
    let mut v = Version::new(&[], &[], &addr("mem/1"));
    v.listen_addrs.push("udp/1.2.3.4:5".into());
    assert!(matches!(
        v.parsed_listen_addrs(),
        Err(NodeError::BadVersionAddr(_))
    ));
}

#[test]
fn long_texts_are_cut_to_fit_max_bytes() {
    let long = "p".repeat(500);
    let name: &'static str = Box::leak(long.into_boxed_str());
    let names = vec![name; 50];
    let listen = vec![addr("tcp/[1111:2222:3333:4444:5555:6666:7777:8888]:65535"); 20];
    let v = Version::new(&names, &listen, &addr("mem/1"));
    assert!(encode(&v).is_ok(), "a capped version always fits MAX_BYTES");
    let d = Disconnect {
        reason: DisconnectReason::other(&"é".repeat(200)),
    };
    assert!(encode(&d).is_ok());
}
