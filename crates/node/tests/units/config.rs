//! Tests of the node's settings and session sets through the public API.

use knotwork_core::PeerAddr;
use knotwork_node::{NodeConfig, SessionKind, Sessions};

#[test]
fn session_sets() {
    assert!(Sessions::ALL.contains(SessionKind::Inbound));
    assert!(!Sessions::DIALED.contains(SessionKind::Inbound));
    let s = Sessions::INBOUND | Sessions::SEED;
    assert!(s.contains(SessionKind::Seed) && s.contains(SessionKind::Inbound));
    assert!(!s.contains(SessionKind::Manual));
}

#[test]
fn addresses_are_dialed_in_the_preferred_transport_order() {
    let mut addrs: Vec<PeerAddr> = [
        "tcp/10.0.0.1:1",
        "mem/4",
        "quic/10.0.0.1:2",
        "tcp/10.0.0.2:1",
        "quic/10.0.0.2:2",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    let mut config = NodeConfig::default();
    config.dial_order(&mut addrs);
    let order: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    assert_eq!(
        order,
        [
            "quic/10.0.0.1:2",
            "quic/10.0.0.2:2",
            "tcp/10.0.0.1:1",
            "tcp/10.0.0.2:1",
            "mem/4"
        ]
    );
    config.dial_preference = vec!["tcp".into()];
    config.dial_order(&mut addrs);
    assert_eq!(addrs[0].to_string(), "tcp/10.0.0.1:1");
    assert_eq!(
        addrs[2].to_string(),
        "quic/10.0.0.1:2",
        "unlisted keep their order"
    );
}
