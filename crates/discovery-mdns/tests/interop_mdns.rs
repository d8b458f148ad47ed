#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Interop of knotwork-discovery-mdns with independent mDNS stacks (avahi and
//! python-zeroconf), each test in its own pair of network namespaces joined by
//! a veth pair.
//!
//! Every test is `#[ignore]`d: it needs root, `ip netns`, avahi-daemon,
//! avahi-utils, dbus-daemon and a Python with `zeroconf` (`KNOTWORK_PYTHON`,
//! else `<repo>/.venv/bin/python`). `cargo xtask interop mdns` installs all of
//! that and runs:
//!
//! ```text
//! cargo test -p knotwork-discovery-mdns --test interop_mdns -- --include-ignored --test-threads=1 --nocapture
//! ```
//!
//! Without root or namespaces a test FAILS saying why, unless
//! `KNOTWORK_ALLOW_SKIP=1`, when it says SKIPPED and returns.
//!
//! Our side runs in-process: a test thread enters namespace A (`setns`), and
//! the tokio runtime and the mDNS daemon thread it starts stay there. The
//! independent peer runs in namespace B. avahi-daemon gets a private D-Bus
//! (never the host's) and a private `/run/avahi-daemon` (a tmpfs mounted in
//! the mount namespace `ip netns exec` creates), so it cannot collide with an
//! avahi already running on the host. Everything a test starts is killed by
//! PID and its namespaces deleted when it ends, also when it fails.

#[path = "interop/harness.rs"]
mod harness;

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use harness::*;
use knotwork_core::{
    DiscoveredPeer, Discovery, DiscoveryEvent, DiscoverySource, Keypair, LocalPeerInfo, PeerAddr,
    PeerId,
};
use knotwork_discovery_mdns::{DEFAULT_SERVICE_TYPE, MdnsConfig, MdnsDiscovery};

fn good_txt(id: PeerId, addr: &str) -> Vec<String> {
    vec![format!("id={id}"), "v=1".into(), format!("a0={addr}")]
}

// ---------------------------------------------------------------------------
// Our announcement, seen by avahi and by zeroconf.

/// Runs our announcer in namespace A until `stop` fires; sends its instance
/// label back on `label`.
fn announce_in_a(
    lab: &Lab,
    info: LocalPeerInfo,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (label_tx, label_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = in_ns(&lab.ns_a, move || async move {
        let mdns = MdnsDiscovery::new(MdnsConfig::default()).unwrap();
        mdns.announce(&info).await.unwrap();
        label_tx
            .send((
                mdns.instance_label().to_owned(),
                mdns.registered_instances(),
            ))
            .unwrap();
        let _ = stop_rx.await;
        mdns.shutdown().await.unwrap();
    });
    let (label, instances) = label_rx.recv_timeout(DEADLINE).unwrap();
    eprintln!("announced instances: {instances:?}");
    (label, stop_tx, thread)
}

fn our_info(id: PeerId) -> LocalPeerInfo {
    LocalPeerInfo {
        peer_id: id,
        // 0.0.0.0 and [::] expand to the veth's addresses; the loopback
        // address must stay off the veth.
        addrs: ["tcp/0.0.0.0:4000", "tcp/[::]:4000", "tcp/127.0.0.1:4001"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect(),
    }
}

fn expected_txt(lab: &Lab, id: PeerId) -> Vec<String> {
    vec![
        format!("id={id}"),
        "v=1".to_owned(),
        format!("a0=tcp/{}:4000", lab.ip_a),
        format!("a1=tcp/[{}]:4000", lab.ip6_a),
    ]
}

/// The quoted strings of avahi-browse's parsable TXT field.
fn avahi_txt(field: &str) -> Vec<String> {
    field
        .split("\" \"")
        .map(|s| s.trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
#[ignore = "needs root, network namespaces and avahi; run by `cargo xtask interop mdns`"]
fn avahi_resolves_our_announcement() {
    let Some(mut lab) = Lab::new(true, false) else {
        return;
    };
    lab.start_avahi();
    let id = Keypair::generate().unwrap().peer_id();
    let start = Instant::now();
    let (label, stop, thread) = announce_in_a(&lab, our_info(id));

    let bus = lab.bus.clone().unwrap();
    let line = loop {
        let out = Command::new("avahi-browse")
            .args(["-rpt", AVAHI_TYPE])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let resolved = text.lines().find(|l| {
            let f: Vec<&str> = l.split(';').collect();
            f.len() > 9 && f[0] == "=" && f[2] == "IPv4" && f[3].starts_with(&label)
        });
        if let Some(line) = resolved {
            // Nothing we announce on the veth may carry a loopback address.
            assert!(
                !text.contains("127.0.0.1") && !text.contains("[::1]"),
                "loopback leaked onto the veth:\n{text}"
            );
            break line.to_owned();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "avahi-browse never resolved us:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "avahi-browse resolved us after {}: {line}",
        ms(start.elapsed())
    );
    let fields: Vec<&str> = line.split(';').collect();
    assert_eq!(fields[7], lab.ip_a, "A record");
    assert_eq!(fields[8], "4000", "SRV port");
    let mut txt = avahi_txt(fields[9]);
    txt.sort();
    let mut want = expected_txt(&lab, id);
    want.sort();
    assert_eq!(txt, want, "TXT fields");

    stop.send(()).unwrap();
    thread.join().unwrap();
}

#[test]
#[ignore = "needs root, network namespaces and python zeroconf; run by `cargo xtask interop mdns`"]
fn zeroconf_resolves_our_announcement() {
    let Some(mut lab) = Lab::new(false, true) else {
        return;
    };
    let id = Keypair::generate().unwrap().peer_id();
    let start = Instant::now();
    let (label, stop, thread) = announce_in_a(&lab, our_info(id));

    let ns_b = lab.ns_b.clone();
    let (py, sc) = (python(), script("zc_browse.py"));
    lab.spawn_in(
        &ns_b,
        "zc_browse",
        &[
            py.to_str().unwrap(),
            sc.to_str().unwrap(),
            DEFAULT_SERVICE_TYPE,
            &label,
            "15",
        ],
    );
    lab.wait_log("zc_browse", "\"txt\"");
    let line = lab.log("zc_browse");
    eprintln!(
        "zeroconf resolved us after {}: {}",
        ms(start.elapsed()),
        line.trim()
    );
    for want in expected_txt(&lab, id) {
        let (k, v) = want.split_once('=').unwrap();
        assert!(
            line.contains(&format!("[\"{k}\", \"{v}\"]")),
            "{want} missing in {line}"
        );
    }
    assert!(
        line.contains(&format!("\"addresses\": [\"{}\"]", lab.ip_a)),
        "{line}"
    );
    assert!(!line.contains("127.0.0.1"), "loopback leaked: {line}");

    stop.send(()).unwrap();
    thread.join().unwrap();
}

// ---------------------------------------------------------------------------
// Services published by avahi and by zeroconf, discovered by us.

/// Browses from namespace A until `want` is discovered; returns it and the
/// time from start.
fn discover_in_a(lab: &Lab, want: PeerId) -> (DiscoveredPeer, Duration) {
    in_ns(&lab.ns_a, move || async move {
        let start = Instant::now();
        let mdns = MdnsDiscovery::new(MdnsConfig::default()).unwrap();
        let mut events = mdns.events();
        let peer = wait_discovered(&mut events, want).await;
        let took = start.elapsed();
        assert_eq!(mdns.discover().await.unwrap(), vec![peer.clone()]);
        mdns.shutdown().await.unwrap();
        (peer, took)
    })
    .join()
    .unwrap()
}

#[test]
#[ignore = "needs root, network namespaces and avahi; run by `cargo xtask interop mdns`"]
fn we_discover_avahi_publish() {
    let Some(mut lab) = Lab::new(true, false) else {
        return;
    };
    lab.start_avahi();
    let id = Keypair::generate().unwrap().peer_id();
    let addr = format!("tcp/{}:4000", lab.ip_b);
    lab.avahi_publish("kwm-avahi-good", &good_txt(id, &addr));
    lab.wait_log("kwm-avahi-good", "Established");
    let (peer, took) = discover_in_a(&lab, id);
    eprintln!("discovered the avahi-published peer after {}", ms(took));
    assert_eq!(peer.addrs, vec![addr.parse::<PeerAddr>().unwrap()]);
    assert_eq!(peer.source, DiscoverySource::Mdns);
}

#[test]
#[ignore = "needs root, network namespaces and python zeroconf; run by `cargo xtask interop mdns`"]
fn we_discover_zeroconf_publish() {
    let Some(mut lab) = Lab::new(false, true) else {
        return;
    };
    let id = Keypair::generate().unwrap().peer_id();
    let addr = format!("tcp/{}:4000", lab.ip_b);
    lab.zeroconf_publish(
        "zc_publish",
        &[("kwm-zc-good".into(), good_txt(id, &addr))],
        None,
    );
    let (peer, took) = discover_in_a(&lab, id);
    eprintln!("discovered the zeroconf-published peer after {}", ms(took));
    assert_eq!(peer.addrs, vec![addr.parse::<PeerAddr>().unwrap()]);
}

// ---------------------------------------------------------------------------
// Malformed announcements are ignored with a logged reason.

/// (instance name, TXT, the reason we must log).
fn malformed(prefix: &str, lab: &Lab) -> Vec<(String, Vec<String>, &'static str)> {
    let id = Keypair::generate().unwrap().peer_id();
    let addr = format!("a0=tcp/{}:4000", lab.ip_b);
    let mut too_many = vec![format!("id={id}"), "v=1".to_owned()];
    too_many.extend((0..9).map(|i| format!("a{i}=tcp/{}:{}", lab.ip_b, 4000 + i)));
    let junk = "x".repeat(240);
    let mut oversized = vec![format!("id={id}"), "v=1".to_owned(), addr.clone()];
    oversized.extend(["p", "q", "r", "s"].iter().map(|k| format!("{k}={junk}")));
    vec![
        (
            format!("{prefix}-missing-id"),
            vec!["v=1".into(), addr.clone()],
            "txt record has no id",
        ),
        (
            format!("{prefix}-bad-id"),
            vec!["id=not-a-peer-id".into(), "v=1".into(), addr],
            "bad peer id",
        ),
        (
            format!("{prefix}-too-many"),
            too_many,
            "too many addresses: 9, at most 8",
        ),
        (format!("{prefix}-oversized"), oversized, "at most 900"),
        (
            format!("{prefix}-off-link"),
            good_txt(id, "tcp/203.0.113.9:4000"),
            "on the link the announcement came from",
        ),
    ]
}

/// Browses from A until `good` is discovered and a warning was logged for
/// every malformed instance; checks that only `good` is known.
fn check_malformed_ignored(lab: &Lab, good: PeerId, bad: &[(String, Vec<String>, &'static str)]) {
    let bad: Vec<(String, &'static str)> = bad.iter().map(|(n, _, r)| (n.clone(), *r)).collect();
    let (took, peers) = in_ns(&lab.ns_a, move || async move {
        let start = Instant::now();
        let mdns = MdnsDiscovery::new(MdnsConfig::default()).unwrap();
        let mut events = mdns.events();
        wait_discovered(&mut events, good).await;
        while let Some((name, reason)) = bad.iter().find(|(n, r)| !warned(n, r)) {
            assert!(
                start.elapsed() < DEADLINE,
                "no warning {reason:?} for {name}; log:\n{}",
                log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = start.elapsed();
        let peers = mdns.discover().await.unwrap();
        mdns.shutdown().await.unwrap();
        (took, peers)
    })
    .join()
    .unwrap();
    eprintln!(
        "good peer discovered and every malformed record logged after {}",
        ms(took)
    );
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].peer_id, good);
}

#[test]
#[ignore = "needs root, network namespaces and avahi; run by `cargo xtask interop mdns`"]
fn malformed_avahi_announcements_are_ignored() {
    let Some(mut lab) = Lab::new(true, false) else {
        return;
    };
    lab.start_avahi();
    let bad = malformed("kwm-avahi", &lab);
    for (name, txt, _) in &bad {
        lab.avahi_publish(name, txt);
    }
    let good = Keypair::generate().unwrap().peer_id();
    lab.avahi_publish(
        "kwm-avahi-ok",
        &good_txt(good, &format!("tcp/{}:4000", lab.ip_b)),
    );
    for name in bad
        .iter()
        .map(|b| b.0.clone())
        .chain(["kwm-avahi-ok".to_owned()])
    {
        lab.wait_log(&name, "Established");
    }
    check_malformed_ignored(&lab, good, &bad);
}

#[test]
#[ignore = "needs root, network namespaces and python zeroconf; run by `cargo xtask interop mdns`"]
fn malformed_zeroconf_announcements_are_ignored() {
    let Some(mut lab) = Lab::new(false, true) else {
        return;
    };
    let bad = malformed("kwm-zc", &lab);
    let good = Keypair::generate().unwrap().peer_id();
    let mut services: Vec<(String, Vec<String>)> =
        bad.iter().map(|(n, t, _)| (n.clone(), t.clone())).collect();
    services.push((
        "kwm-zc-ok".into(),
        good_txt(good, &format!("tcp/{}:4000", lab.ip_b)),
    ));
    lab.zeroconf_publish("zc_publish", &services, None);
    check_malformed_ignored(&lab, good, &bad);
}

// ---------------------------------------------------------------------------
// M10: no mDNS on an interface with only a public address.

/// A legacy unicast DNS-SD query (source port not 5353) for our service
/// type's PTR, sent to `to`:5353; whether any answer came within 2 s.
fn unicast_query_answered(to: &str) -> bool {
    let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["_knotwork", "_udp", "local"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 12, 0, 1]);
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(&q, (to, 5353)).unwrap();
    let mut buf = [0u8; 9000];
    sock.recv_from(&mut buf).is_ok()
}

#[test]
#[ignore = "needs root and network namespaces; run by `cargo xtask interop mdns`"]
fn m10_no_mdns_on_an_interface_with_only_a_public_address() {
    let Some(lab) = Lab::new(false, false) else {
        return;
    };
    // Documentation ranges, public by scope (neither private nor link-local).
    let (public_a, public_b) = ("198.51.100.1", "198.51.100.2");
    for (ns, dev, ip) in [
        (&lab.ns_a, &lab.veth_a, public_a),
        (&lab.ns_b, &lab.veth_b, public_b),
    ] {
        sh(&[
            "ip", "-n", ns, "addr", "flush", "dev", dev, "scope", "global",
        ])
        .unwrap();
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            dev,
        ])
        .unwrap();
    }
    let a = Keypair::generate().unwrap().peer_id();
    // `lan_only: false` is the old default: the probe of the review (a
    // unicast query from off the LAN) is answered. With the default, A
    // announces nothing on the public interface and answers nothing.
    let mut answered = Vec::new();
    for lan_only in [false, true] {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Vec<String>>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let node_a = in_ns(&lab.ns_a, move || async move {
            let config = MdnsConfig {
                lan_only,
                ..MdnsConfig::default()
            };
            let mdns = MdnsDiscovery::new(config).unwrap();
            let info = LocalPeerInfo {
                peer_id: a,
                addrs: vec!["tcp/0.0.0.0:4000".parse().unwrap()],
            };
            mdns.announce(&info).await.unwrap();
            // Let the daemon probe and announce.
            tokio::time::sleep(Duration::from_secs(2)).await;
            ready_tx.send(mdns.registered_instances()).unwrap();
            let _ = done_rx.await;
            mdns.shutdown().await.unwrap();
        });
        let instances = ready_rx.recv_timeout(DEADLINE).unwrap();
        let probe = in_ns(&lab.ns_b, move || async move {
            unicast_query_answered(public_a)
        });
        let got = probe.join().unwrap();
        done_tx.send(()).unwrap();
        node_a.join().unwrap();
        eprintln!("lan_only={lan_only}: instances {instances:?}, unicast query answered: {got}");
        // Loopback keeps its instance either way.
        let on_veth = instances.len() > 1;
        assert_eq!(on_veth, !lan_only, "{instances:?}");
        answered.push(got);
    }
    assert_eq!(answered, [true, false]);
}

// ---------------------------------------------------------------------------
// Expiry: goodbye and TTL.

#[test]
#[ignore = "needs root, network namespaces and python zeroconf; run by `cargo xtask interop mdns`"]
fn zeroconf_peer_without_goodbye_expires_by_ttl() {
    let Some(mut lab) = Lab::new(false, true) else {
        return;
    };
    let id = Keypair::generate().unwrap().peer_id();
    let addr = format!("tcp/{}:4000", lab.ip_b);
    let ttl = 3;
    let pid = lab.zeroconf_publish(
        "zc_publish",
        &[("kwm-zc-ttl".into(), good_txt(id, &addr))],
        Some(ttl),
    );
    let (discovered_tx, discovered_rx) = std::sync::mpsc::channel();
    let thread = in_ns(&lab.ns_a, move || async move {
        let mdns = MdnsDiscovery::new(MdnsConfig::default()).unwrap();
        let mut events = mdns.events();
        wait_discovered(&mut events, id).await;
        discovered_tx.send(()).unwrap();
        let gone = Instant::now();
        let expired = tokio::time::timeout(DEADLINE, events.next()).await.unwrap();
        let took = gone.elapsed();
        // Nothing more about it: expired once.
        let more = tokio::time::timeout(Duration::from_secs(1), events.next()).await;
        mdns.shutdown().await.unwrap();
        (expired, took, more.is_err())
    });
    discovered_rx.recv_timeout(DEADLINE).unwrap();
    // SIGKILL: no goodbye, the records must expire.
    sh(&["kill", "-KILL", &pid.to_string()]).unwrap();
    let (expired, took, quiet) = thread.join().unwrap();
    eprintln!(
        "peer killed without goodbye expired after {} (TTL {ttl} s)",
        ms(took)
    );
    assert_eq!(
        expired,
        Some(DiscoveryEvent::Expired {
            peer_id: id,
            source: DiscoverySource::Mdns
        })
    );
    assert!(quiet, "more events after the expiry");
}

// ---------------------------------------------------------------------------
// Two knotwork nodes in two namespaces.

#[test]
#[ignore = "needs root and network namespaces; run by `cargo xtask interop mdns`"]
fn two_nodes_find_each_other_and_goodbye_expires() {
    let Some(lab) = Lab::new(false, false) else {
        return;
    };
    let a = Keypair::generate().unwrap().peer_id();
    let b = Keypair::generate().unwrap().peer_id();
    let addr_a: PeerAddr = format!("tcp/{}:4000", lab.ip_a).parse().unwrap();
    let addr_b: PeerAddr = format!("tcp/{}:4000", lab.ip_b).parse().unwrap();
    let (b_done_tx, b_done_rx) = tokio::sync::oneshot::channel::<()>();
    let (a_found_tx, a_found_rx) = tokio::sync::oneshot::channel::<()>();

    let (wa, wb) = (addr_a.clone(), addr_b.clone());
    let node_a = in_ns(&lab.ns_a, move || async move {
        let start = Instant::now();
        let mdns = MdnsDiscovery::new(MdnsConfig::default()).unwrap();
        let mut events = mdns.events();
        mdns.announce(&LocalPeerInfo {
            peer_id: a,
            addrs: vec![wa],
        })
        .await
        .unwrap();
        let peer = wait_discovered(&mut events, b).await;
        let took = start.elapsed();
        assert_eq!(peer.addrs, vec![wb]);
        a_found_tx.send(()).unwrap();
        // B says goodbye when it shuts down: expired, once.
        let _ = b_done_rx.await;
        let expired = tokio::time::timeout(DEADLINE, events.next()).await.unwrap();
        let more = tokio::time::timeout(Duration::from_secs(1), events.next()).await;
        mdns.shutdown().await.unwrap();
        (took, expired, more.is_err())
    });
    let node_b = in_ns(&lab.ns_b, move || async move {
        let start = Instant::now();
        let mdns = MdnsDiscovery::new(MdnsConfig::default()).unwrap();
        let mut events = mdns.events();
        mdns.announce(&LocalPeerInfo {
            peer_id: b,
            addrs: vec![addr_b],
        })
        .await
        .unwrap();
        let peer = wait_discovered(&mut events, a).await;
        let took = start.elapsed();
        assert_eq!(peer.addrs, vec![addr_a]);
        // Say goodbye only once A has seen us.
        let _ = a_found_rx.await;
        mdns.shutdown().await.unwrap();
        b_done_tx.send(()).unwrap();
        took
    });
    let took_b = node_b.join().unwrap();
    let (took_a, expired, quiet) = node_a.join().unwrap();
    eprintln!(
        "two nodes: A discovered B after {}, B discovered A after {} (from each one's start)",
        ms(took_a),
        ms(took_b)
    );
    assert_eq!(
        expired,
        Some(DiscoveryEvent::Expired {
            peer_id: b,
            source: DiscoverySource::Mdns
        })
    );
    assert!(quiet, "more events after the goodbye");
}

#[test]
#[ignore = "needs root and network namespaces; run by `cargo xtask interop mdns`"]
fn reannounce_with_new_addresses_reaches_the_peer() {
    let Some(lab) = Lab::new(false, false) else {
        return;
    };
    let a = Keypair::generate().unwrap().peer_id();
    let first: Vec<PeerAddr> = vec![format!("tcp/{}:4000", lab.ip_a).parse().unwrap()];
    let second: Vec<PeerAddr> = vec![
        format!("tcp/{}:4000", lab.ip_a).parse().unwrap(),
        format!("tcp/[{}]:4000", lab.ip6_a).parse().unwrap(),
    ];
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();

    let (f, s) = (first.clone(), second.clone());
    let node_a = in_ns(&lab.ns_a, move || async move {
        let mdns = MdnsDiscovery::new(MdnsConfig::default()).unwrap();
        mdns.announce(&LocalPeerInfo {
            peer_id: a,
            addrs: f,
        })
        .await
        .unwrap();
        let _ = seen_rx.await;
        mdns.announce(&LocalPeerInfo {
            peer_id: a,
            addrs: s,
        })
        .await
        .unwrap();
        let _ = done_rx.await;
        mdns.shutdown().await.unwrap();
    });
    let node_b = in_ns(&lab.ns_b, move || async move {
        let mdns = MdnsDiscovery::new(MdnsConfig::default()).unwrap();
        let mut events = mdns.events();
        let peer = wait_discovered(&mut events, a).await;
        assert_eq!(peer.addrs, first);
        seen_tx.send(()).unwrap();
        let start = Instant::now();
        let peer = wait_discovered(&mut events, a).await;
        let took = start.elapsed();
        assert_eq!(peer.addrs, second);
        assert_eq!(mdns.discover().await.unwrap(), vec![peer]);
        mdns.shutdown().await.unwrap();
        done_tx.send(()).unwrap();
        took
    });
    let took = node_b.join().unwrap();
    node_a.join().unwrap();
    eprintln!("re-announced addresses reached the peer after {}", ms(took));
}

#[test]
#[ignore = "needs root and network namespaces; run by `cargo xtask interop mdns`"]
fn new_interface_address_is_announced() {
    let Some(lab) = Lab::new(false, false) else {
        return;
    };
    let a = Keypair::generate().unwrap().peer_id();
    let n = lab.ip_a.rsplit_once('.').unwrap().0.to_owned();
    let extra_ip = format!("{n}.3");
    let before: Vec<PeerAddr> = vec![format!("tcp/{}:4000", lab.ip_a).parse().unwrap()];
    let after: Vec<PeerAddr> = vec![
        format!("tcp/{}:4000", lab.ip_a).parse().unwrap(),
        format!("tcp/{extra_ip}:4000").parse().unwrap(),
    ];
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();

    let node_a = in_ns(&lab.ns_a, move || async move {
        let mdns = MdnsDiscovery::new(MdnsConfig::default()).unwrap();
        let info = LocalPeerInfo {
            peer_id: a,
            addrs: vec!["tcp/0.0.0.0:4000".parse().unwrap()],
        };
        mdns.announce(&info).await.unwrap();
        let _ = done_rx.await;
        mdns.shutdown().await.unwrap();
    });
    let node_b = in_ns(&lab.ns_b, move || async move {
        let mdns = MdnsDiscovery::new(MdnsConfig::default()).unwrap();
        let mut events = mdns.events();
        let peer = wait_discovered(&mut events, a).await;
        assert_eq!(peer.addrs, before);
        seen_tx.send(()).unwrap();
        let start = Instant::now();
        let peer = wait_discovered(&mut events, a).await;
        let took = start.elapsed();
        assert_eq!(peer.addrs, after);
        mdns.shutdown().await.unwrap();
        done_tx.send(()).unwrap();
        took
    });
    seen_rx.recv_timeout(DEADLINE).unwrap();
    sh(&[
        "ip",
        "-n",
        &lab.ns_a,
        "addr",
        "add",
        &format!("{extra_ip}/24"),
        "dev",
        &lab.veth_a,
    ])
    .unwrap();
    let took = node_b.join().unwrap();
    node_a.join().unwrap();
    eprintln!(
        "an address added to the interface reached the peer after {}",
        ms(took)
    );
}

// ---------------------------------------------------------------------------
// The `knot` command: two `knot run` nodes, one per namespace, mDNS on by
// default, find each other and connect; a stopped node's goodbye expires it
// at the other at once (not after the records' TTL).

/// The `knot` binary `cargo xtask interop mdns` built (`KNOTWORK_KNOT`).
fn knot_binary() -> Option<std::path::PathBuf> {
    std::env::var_os("KNOTWORK_KNOT").map(Into::into)
}

/// The text after `prefix` on the first line of `log` that has it.
fn line_after<'a>(log: &'a str, prefix: &str) -> Option<&'a str> {
    log.lines().find_map(|l| l.strip_prefix(prefix))
}

#[test]
#[ignore = "needs root, network namespaces and the knot binary; run by `cargo xtask interop mdns`"]
fn two_knot_run_nodes_find_each_other_and_connect() {
    let Some(knot) = knot_binary() else {
        let _ = unavailable("the knot binary (KNOTWORK_KNOT, set by `cargo xtask interop mdns`)");
        return;
    };
    let Some(mut lab) = Lab::new(false, false) else {
        return;
    };
    let knot = knot.to_string_lossy().into_owned();
    let start = Instant::now();
    for (ns, name) in [(lab.ns_a.clone(), "knot-a"), (lab.ns_b.clone(), "knot-b")] {
        let dir = lab.path(name).to_string_lossy().into_owned();
        // Without the DHT, mDNS is the only source: B's goodbye then expires
        // it at A (with the DHT on, A keeps B as long as the DHT reports it).
        let args = [
            "run",
            "--no-dht",
            "--listen",
            "tcp/0.0.0.0:0",
            "--data-dir",
            &dir,
        ];
        lab.spawn_in(&ns, name, &[&[knot.as_str()][..], &args[..]].concat());
    }
    lab.wait_log("knot-a", "control socket ");
    lab.wait_log("knot-b", "control socket ");
    let (log_a, log_b) = (lab.log("knot-a"), lab.log("knot-b"));
    let id_a = line_after(&log_a, "peer id ").unwrap().to_owned();
    let id_b = line_after(&log_b, "peer id ").unwrap().to_owned();
    let listen_b = line_after(&log_b, "listening on ").unwrap().to_owned();
    let port_b = listen_b.rsplit(':').next().unwrap();

    // Found by mDNS at B's veth address (never loopback), then connected.
    lab.wait_log("knot-a", &format!("connected {id_b}"));
    let connected_a = start.elapsed();
    lab.wait_log("knot-b", &format!("connected {id_a}"));
    let connected_b = start.elapsed();
    // B may dial first: A then learns of B by mDNS after B connected.
    let prefix = format!("discovered {id_b} ");
    let by_mdns = |log: &str| {
        log.lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .find(|rest| rest.contains("mdns"))
            .map(str::to_owned)
    };
    let waiting = Instant::now();
    let found = loop {
        if let Some(found) = by_mdns(&lab.log("knot-a")) {
            break found;
        }
        assert!(waiting.elapsed() < DEADLINE, "{}", lab.log("knot-a"));
        std::thread::sleep(Duration::from_millis(50));
    };
    let at_veth = format!("tcp/{}:{port_b}", lab.ip_b);
    assert!(found.contains(&at_veth), "{found}");
    assert!(!found.contains("127.0.0.1"), "{found}");
    eprintln!(
        "two `knot run`: connected {} (A) and {} (B) after both were started",
        ms(connected_a),
        ms(connected_b)
    );

    // `knot peers` names mDNS as the source.
    let peers = Command::new(&knot)
        .args(["peers", "--json", "--data-dir"])
        .arg(lab.path("knot-a"))
        .output()
        .unwrap();
    assert!(peers.status.success(), "{peers:?}");
    let text = String::from_utf8_lossy(&peers.stdout);
    assert!(text.contains(&id_b), "{text}");
    assert!(text.contains("\"sources\":[\"mdns\""), "{text}");

    // B stops (SIGTERM, like Ctrl-C): its goodbye reaches A.
    let pid_b = lab
        .children
        .iter()
        .find(|(n, _)| n == "knot-b")
        .map(|(_, c)| c.id())
        .unwrap();
    // `ip netns exec` execs the command, so the child is knot itself.
    sh(&["kill", "-TERM", &pid_b.to_string()]).unwrap();
    lab.wait_log("knot-b", "shutting down");
    lab.wait_log("knot-a", &format!("disconnected {id_b}"));
    lab.wait_log("knot-a", &format!("expired {id_b}"));
}
