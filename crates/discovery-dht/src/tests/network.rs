//! Records, providers, bootstrap and lookups in a small mesh of cores.

use std::time::Duration;

use knotwork_core::{Keypair, PeerAddr};

use super::*;
use crate::*;

#[test]
fn records_replicate_republish_and_expire() {
    let cfg = Config {
        k: 4,
        subnet_limits: None,
        republish_interval: Duration::from_secs(120),
        replicate_interval: None,
        maintenance_interval: Duration::from_secs(60),
        ..Config::default()
    };
    let mut m = Mesh::new(12, &cfg);
    let kp = Keypair::generate().unwrap();
    let rec = Record::sign(
        &kp,
        b"song".to_vec(),
        b"la".to_vec(),
        Time(400_000),
        &cfg.record_limits,
    )
    .unwrap();
    let q = m.nodes[0].put_record(Time(0), rec.clone()).unwrap();
    m.settle();
    let ev = events(&mut m.nodes[0]);
    assert!(ev.iter().any(|e| matches!(e,
        Event::QueryFinished { id, result: QueryResult::PutValue { stored: 4, .. }, .. } if *id == q)));
    // The publisher keeps its copy, plus the k closest.
    assert!(m.holders(b"song") >= 4);
    // A node that held it loses it (restart): republishing puts it back.
    let key = Key::hash(b"song");
    let lost: Vec<usize> = (1..12)
        .filter(|&i| m.nodes[i].store().get(&key, m.now).is_some())
        .collect();
    for &i in &lost {
        let c = m.nodes[i].config().clone();
        m.nodes[i] = Dht::new(id(i as u64), c);
        for j in 0..12u64 {
            if j as usize != i {
                let _ = m.nodes[i].add_peer(m.now, id(j), &[PeerAddr::Mem(j)]);
            }
        }
    }
    m.settle();
    let before = m.holders(b"song");
    m.advance_to(Time(60_000));
    assert_eq!(m.holders(b"song"), before, "not yet due");
    m.advance_to(Time(120_000));
    assert!(m.holders(b"song") > before, "republished");
    // A fetch from another node finds it.
    let g = m.nodes[5].get_record(m.now, b"song").unwrap();
    m.settle();
    assert!(events(&mut m.nodes[5]).iter().any(|e| matches!(e,
        Event::QueryFinished { id, result: QueryResult::GetValue { record: Some(r), .. }, .. }
            if *id == g && *r == rec)));
    // After expiry every copy is dropped at the next maintenance tick and
    // the publisher stops republishing.
    m.advance_to(Time(420_000));
    assert_eq!(m.holders(b"song"), 0);
    m.advance_to(Time(600_000));
    for d in &mut m.nodes {
        assert!(drain(d).is_empty());
        assert!(d.store().is_empty());
    }
}

#[test]
fn providers_are_announced_found_and_expire() {
    let cfg = Config {
        k: 4,
        subnet_limits: None,
        provider_ttl: Duration::from_secs(300),
        provider_republish_interval: Duration::from_secs(100_000),
        local_addrs: vec![PeerAddr::Mem(3)],
        ..Config::default()
    };
    let mut m = Mesh::new(10, &cfg);
    m.nodes[3].provide(Time(0), b"file").unwrap();
    m.settle();
    let q = m.nodes[7].get_providers(Time(0), b"file").unwrap();
    m.settle();
    let found = events(&mut m.nodes[7]).into_iter().find_map(|e| match e {
        Event::QueryFinished {
            id,
            result: QueryResult::GetProviders { providers, .. },
            ..
        } if id == q => Some(providers),
        _ => None,
    });
    let found = found.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].peer_id, id(3));
    assert_eq!(found[0].addrs, vec![PeerAddr::Mem(3)]);
    m.advance_to(Time(360_000));
    let q = m.nodes[7].get_providers(m.now, b"file").unwrap();
    m.settle();
    assert!(events(&mut m.nodes[7]).iter().any(|e| matches!(e,
        Event::QueryFinished { id, result: QueryResult::GetProviders { providers, .. }, .. }
            if *id == q && providers.is_empty())));
}

#[test]
fn bootstrap_fills_the_table_then_refreshes_periodically() {
    let cfg = Config {
        subnet_limits: None,
        refresh_interval: Duration::from_secs(600),
        ..Config::default()
    };
    let mut m = Mesh::new(30, &cfg);
    let mut fresh = Dht::new(id(30), cfg.clone());
    fresh.add_peer(Time(0), id(0), &[PeerAddr::Mem(0)]).unwrap();
    fresh.bootstrap(Time(0));
    m.nodes.push(fresh);
    m.settle();
    let ev = events(&mut m.nodes[30]);
    assert!(ev.iter().any(|e| matches!(e, Event::Bootstrapped { .. })));
    // From one known peer to the whole network.
    assert_eq!(m.nodes[30].table().len(), 30);
    // Everyone it asked learned about it from its requests.
    let knowing = m
        .nodes
        .iter()
        .take(30)
        .filter(|d| d.table().get(&id(30)).is_some())
        .count();
    assert!(knowing >= 20, "{knowing}");
    // No lookups for ten minutes: the next maintenance tick refreshes.
    drain(&mut m.nodes[30]);
    m.now = Time(600_000);
    m.nodes[30].handle_timeout(Time(600_000));
    let refresh = drain(&mut m.nodes[30]);
    assert!(!refresh.is_empty());
    assert!(refresh.iter().all(|t| matches!(
        t.message,
        DhtMessage::Request {
            body: Request::FindNode { .. },
            ..
        }
    )));
}

#[test]
fn disjoint_paths_lookup_in_a_mesh() {
    let cfg = Config {
        subnet_limits: None,
        disjoint_paths: 3,
        ..Config::default()
    };
    let mut m = Mesh::new(60, &cfg);
    let q = m.nodes[0].find_node(Time(0), Key::from_peer_id(&id(42)));
    m.settle();
    let ev = events(&mut m.nodes[0]);
    let closest = ev.into_iter().find_map(|e| match e {
        Event::QueryFinished {
            id,
            result: QueryResult::FindNode { closest, .. },
            ..
        } if id == q => Some(closest),
        _ => None,
    });
    assert_eq!(closest.unwrap()[0].peer_id, id(42));
}
