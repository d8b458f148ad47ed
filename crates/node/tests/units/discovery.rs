//! Moved from src: tests of `discovery` through the public API.

use knotwork_core::Keypair;
use knotwork_core::{DiscoveredPeer, DiscoverySource, PeerAddr, PeerId};
use knotwork_node::*;
use std::time::{Duration, Instant as StdInstant};

fn id() -> PeerId {
    Keypair::generate().unwrap().peer_id()
}

fn addrs(list: &[&str]) -> Vec<PeerAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn found(peer: PeerId, addrs: &[&str], source: DiscoverySource) -> DiscoveredPeer {
    DiscoveredPeer {
        peer_id: peer,
        addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        source,
        rssi: None,
    }
}

#[test]
fn second_source_with_known_addrs_adds_itself_silently() {
    let (me, p) = (id(), id());
    let mut m = DiscoveryMerge::new(me, Vec::new());
    let first = m.handle_discovered(
        found(p, &["tcp/10.9.0.1:1"], DiscoverySource::Mdns),
        StdInstant::now(),
    );
    assert_eq!(
        first,
        Some(UnifiedEvent::PeerDiscovered {
            peer: p,
            addrs: vec!["tcp/10.9.0.1:1".parse().unwrap()],
            sources: vec![DiscoverySource::Mdns],
        })
    );
    assert_eq!(
        m.handle_discovered(
            found(p, &["tcp/10.9.0.1:1"], DiscoverySource::Dht),
            StdInstant::now()
        ),
        None
    );
    let info = m.peer(&p).unwrap();
    assert_eq!(
        info.sources,
        vec![DiscoverySource::Mdns, DiscoverySource::Dht]
    );
    assert_eq!(info.addrs.len(), 1);
}

#[test]
fn a_new_address_is_reported_with_the_union() {
    let (me, p) = (id(), id());
    let mut m = DiscoveryMerge::new(me, Vec::new());
    m.handle_discovered(
        found(p, &["tcp/10.9.0.1:1"], DiscoverySource::Mdns),
        StdInstant::now(),
    );
    let event = m.handle_discovered(
        found(
            p,
            &["tcp/10.9.0.2:1", "tcp/10.9.0.1:1"],
            DiscoverySource::Dht,
        ),
        StdInstant::now(),
    );
    assert_eq!(
        event,
        Some(UnifiedEvent::PeerDiscovered {
            peer: p,
            addrs: vec![
                "tcp/10.9.0.1:1".parse().unwrap(),
                "tcp/10.9.0.2:1".parse().unwrap()
            ],
            sources: vec![DiscoverySource::Mdns, DiscoverySource::Dht],
        })
    );
}

#[test]
fn expiry_is_reported_once_when_the_last_source_goes() {
    let (me, p) = (id(), id());
    let mut m = DiscoveryMerge::new(me, Vec::new());
    m.handle_discovered(
        found(p, &["tcp/10.9.0.1:1"], DiscoverySource::Mdns),
        StdInstant::now(),
    );
    m.handle_discovered(
        found(p, &["tcp/10.9.0.1:1"], DiscoverySource::Dht),
        StdInstant::now(),
    );
    assert_eq!(m.handle_expired(p, DiscoverySource::Mdns), None);
    assert_eq!(m.handle_expired(p, DiscoverySource::Mdns), None);
    assert_eq!(
        m.handle_expired(p, DiscoverySource::Dht),
        Some(UnifiedEvent::PeerExpired { peer: p })
    );
    assert_eq!(m.handle_expired(p, DiscoverySource::Dht), None);
    assert!(m.peers().is_empty());
}

#[test]
fn own_peer_id_is_ignored() {
    let me = id();
    let mut m = DiscoveryMerge::new(me, Vec::new());
    assert_eq!(
        m.handle_discovered(
            found(me, &["tcp/10.9.0.1:1"], DiscoverySource::Mdns),
            StdInstant::now()
        ),
        None
    );
    assert!(m.peer(&me).is_none());
}

#[test]
fn a_source_dropping_an_address_shrinks_the_union() {
    let (me, p) = (id(), id());
    let mut m = DiscoveryMerge::new(me, Vec::new());
    m.handle_discovered(
        found(
            p,
            &["tcp/10.9.0.1:1", "tcp/10.9.0.2:1"],
            DiscoverySource::Mdns,
        ),
        StdInstant::now(),
    );
    assert_eq!(
        m.handle_discovered(
            found(p, &["tcp/10.9.0.2:1"], DiscoverySource::Mdns),
            StdInstant::now()
        ),
        None
    );
    assert_eq!(
        m.peer(&p).unwrap().addrs,
        vec!["tcp/10.9.0.2:1".parse::<PeerAddr>().unwrap()]
    );
}

#[test]
fn last_seen_is_the_newest_report_and_rssi_the_newest_measured() {
    let (me, p) = (id(), id());
    let mut m = DiscoveryMerge::new(me, Vec::new());
    let t0 = StdInstant::now();
    let mut ble = found(p, &["ble/11:22:33:44:55:66"], DiscoverySource::Ble);
    ble.rssi = Some(-70);
    m.handle_discovered(ble.clone(), t0);
    ble.rssi = Some(-52);
    let t1 = t0 + Duration::from_secs(5);
    // Same address: no event, but the time and signal are updated.
    assert_eq!(m.handle_discovered(ble, t1), None);
    let t2 = t1 + Duration::from_secs(5);
    m.handle_discovered(found(p, &["tcp/10.0.0.1:4000"], DiscoverySource::Dht), t2);
    let info = m.peer(&p).unwrap();
    assert_eq!(info.last_seen, t2);
    assert_eq!(info.rssi, Some(-52), "the DHT measures none; BLE's stays");
    assert_eq!(m.handle_expired(p, DiscoverySource::Ble), None);
    assert_eq!(m.peer(&p).unwrap().rssi, None);
}

#[test]
fn preferred_sources_are_listed_and_dialed_first() {
    let (me, p) = (id(), id());
    let now = StdInstant::now();
    let prefer = vec![DiscoverySource::Ble, DiscoverySource::Mdns];
    let mut m = DiscoveryMerge::new(me, prefer);
    // Reported in the least preferred order.
    m.handle_discovered(
        found(
            p,
            &["tcp/10.0.0.1:1", "quic/10.0.0.1:1"],
            DiscoverySource::Dht,
        ),
        now,
    );
    m.handle_discovered(
        found(
            p,
            &["tcp/192.168.1.2:1", "quic/192.168.1.2:1"],
            DiscoverySource::Mdns,
        ),
        now,
    );
    let event = m.handle_discovered(
        found(p, &["ble/11:22:33:44:55:66"], DiscoverySource::Ble),
        now,
    );
    let order = addrs(&[
        "ble/11:22:33:44:55:66",
        "tcp/192.168.1.2:1",
        "quic/192.168.1.2:1",
        "tcp/10.0.0.1:1",
        "quic/10.0.0.1:1",
    ]);
    assert!(matches!(event, Some(UnifiedEvent::PeerDiscovered { addrs, .. }) if addrs == order));
    assert_eq!(m.peer(&p).unwrap().addrs, order);
    // The scheme preference (quic before tcp) only orders within a source rank.
    let config = NodeConfig::default();
    assert_eq!(
        m.dial_order(&p, |a| config.scheme_rank(a)),
        addrs(&[
            "ble/11:22:33:44:55:66",
            "quic/192.168.1.2:1",
            "tcp/192.168.1.2:1",
            "quic/10.0.0.1:1",
            "tcp/10.0.0.1:1",
        ])
    );
    // Without a preference every source is equal: the scheme decides.
    let mut equal = DiscoveryMerge::new(me, Vec::new());
    equal.handle_discovered(found(p, &["tcp/10.0.0.1:1"], DiscoverySource::Dht), now);
    equal.handle_discovered(
        found(
            p,
            &["ble/11:22:33:44:55:66", "quic/10.0.0.2:1"],
            DiscoverySource::Ble,
        ),
        now,
    );
    assert_eq!(
        equal.dial_order(&p, |a| config.scheme_rank(a)),
        addrs(&["quic/10.0.0.2:1", "tcp/10.0.0.1:1", "ble/11:22:33:44:55:66"])
    );
}

#[test]
fn ble_addresses_come_only_from_ble_scans_and_the_lan_from_lan_sources() {
    let (me, p) = (id(), id());
    let now = StdInstant::now();
    let mut m = DiscoveryMerge::new(me, Vec::new());
    let heard = ["ble/hci0", "tcp/192.168.1.2:1", "tcp/127.0.0.1:1"];
    let mdns = m.handle_discovered(found(p, &heard, DiscoverySource::Mdns), now);
    let Some(UnifiedEvent::PeerDiscovered { addrs: seen, .. }) = mdns else {
        panic!("{mdns:?}");
    };
    assert_eq!(seen, addrs(&["tcp/192.168.1.2:1"]));
    m.handle_discovered(found(p, &["ble/hci0"], DiscoverySource::Dht), now);
    assert_eq!(m.peer(&p).unwrap().addrs, addrs(&["tcp/192.168.1.2:1"]));
    m.handle_discovered(found(p, &["ble/hci0"], DiscoverySource::Ble), now);
    assert!(
        m.peer(&p)
            .unwrap()
            .addrs
            .contains(&"ble/hci0".parse().unwrap())
    );
}
