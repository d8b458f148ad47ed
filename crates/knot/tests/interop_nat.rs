//! knot nodes through real NAT: network namespaces, nftables masquerade
//! routers and miniupnpd (see `interop_nat/bed.rs` for the topology).
//!
//! Every test is `#[ignore]`d: it needs root, `ip`, `nft`, and for UPnP
//! `miniupnpd` (built for nftables) and `upnpc`. `cargo xtask interop nat`
//! installs them and runs:
//!
//! ```text
//! cargo test -p knotwork-node --test interop_nat -- --include-ignored --test-threads=1 --nocapture
//! ```
//!
//! Without root or those programs a test FAILS saying why, unless
//! `KNOTWORK_ALLOW_SKIP=1`, when it says SKIPPED and returns. Each test builds
//! its own bed and tears it down when it ends, also when it fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "interop_nat/bed.rs"]
mod bed;
#[path = "interop_nat/knot.rs"]
mod knot;

use std::time::{Duration, Instant};

use bed::{Bed, DEADLINE, Options, Site};
use knot::{Knot, PORT, ip_of};

/// How long a dial that should fail is given before it counts as failed.
const DIAL: Duration = Duration::from_secs(2);

#[test]
#[ignore = "needs root and nftables: cargo xtask interop nat"]
fn private_host_reaches_public_host_seen_at_its_router_address() {
    let Some(mut bed) = Bed::new(Options::default()) else {
        return;
    };
    let public = bed.knot(Site::Public, "public", &[]);
    assert!(
        bed.tcp_connects(Site::HostA, Site::Public.addr(PORT), DIAL),
        "host A cannot open a TCP connection to the public host"
    );
    let dial = format!("tcp/{}", Site::Public.addr(PORT));
    let a = bed.knot(Site::HostA, "a", &["--peer", &dial]);
    let (entry, took) = bed.wait_peer(&public, &a);
    eprintln!("host A connected to the public host in {took:?}: {entry}");
    assert_eq!(entry["direction"], "inbound");
    // The public host sees host A at router A's public address: masquerade
    // rewrote the source, and that is the address it reports as observed.
    let addr = entry["addr"].as_str().unwrap();
    assert_eq!(ip_of(addr), Site::RouterA.ip().to_string(), "{entry}");
    let (back, _) = bed.wait_peer(&a, &public);
    assert_eq!(back["direction"], "outbound");
    assert_eq!(
        ip_of(back["addr"].as_str().unwrap()),
        Site::Public.ip().to_string()
    );
}

#[test]
#[ignore = "needs root and nftables: cargo xtask interop nat"]
fn public_host_cannot_dial_a_private_host() {
    let Some(mut bed) = Bed::new(Options::default()) else {
        return;
    };
    let a = bed.knot(Site::HostA, "a", &[]);
    // The node listens: its own router reaches it from the LAN side.
    assert!(bed.tcp_connects(Site::RouterA, Site::HostA.addr(PORT), DIAL));
    // The public host has no route into the LAN...
    assert!(!bed.tcp_connects(Site::Public, Site::HostA.addr(PORT), DIAL));
    // ...and the router's public address has nothing mapped to it.
    assert!(!bed.tcp_connects(Site::Public, Site::RouterA.addr(PORT), DIAL));
    // A public host that routes the LAN through router A is dropped by the
    // router's filter: only replies come in.
    let via = Site::RouterA.ip().to_string();
    bed.exec(
        Site::Public,
        &["ip", "route", "add", "10.67.0.0/24", "via", &via],
    )
    .unwrap();
    assert!(!bed.tcp_connects(Site::Public, Site::HostA.addr(PORT), DIAL));
    // A knot node on the public host asked to keep a connection to host A
    // never gets one.
    let dial = format!("tcp/{}", Site::HostA.addr(PORT));
    let public = bed.knot(Site::Public, "public", &["--peer", &dial]);
    std::thread::sleep(DIAL);
    let peers = bed.ctl(&public, &["peers"]);
    assert_eq!(peers["peers"].as_array().map(Vec::len), Some(0), "{peers}");
    let peers = bed.ctl(&a, &["peers"]);
    assert_eq!(peers["peers"].as_array().map(Vec::len), Some(0), "{peers}");
}

/// The mappings `upnpc -l` lists on LAN B's gateway, as `ext->ip:port` pairs.
fn upnp_mappings(bed: &Bed) -> Vec<String> {
    let out = bed.exec(Site::HostB, &["upnpc", "-l"]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" TCP ") && l.contains("->"))
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect()
}

#[test]
#[ignore = "needs root, nftables and miniupnpd: cargo xtask interop nat"]
fn upnp_gateway_opens_and_closes_a_port_for_upnpc() {
    let Some(mut bed) = Bed::new(Options { upnp: true }) else {
        return;
    };
    let b = bed.knot(Site::HostB, "b", &[]);
    let outside = Site::RouterB.addr(PORT);
    assert!(!bed.tcp_connects(Site::Public, outside, DIAL));
    let (ip, port) = (Site::HostB.ip().to_string(), PORT.to_string());
    bed.exec(
        Site::HostB,
        &["upnpc", "-e", "bed", "-a", &ip, &port, &port, "TCP", "60"],
    )
    .unwrap();
    let mapping = format!("{PORT}->{}", Site::HostB.addr(PORT));
    assert_eq!(upnp_mappings(&bed), vec![mapping]);
    assert!(
        bed.ruleset(Site::RouterB)
            .contains(&format!("dnat ip to {}", Site::HostB.addr(PORT))),
        "{}",
        bed.ruleset(Site::RouterB)
    );
    assert!(bed.tcp_connects(Site::Public, outside, DIAL));
    let dial = format!("tcp/{outside}");
    let public = bed.knot(Site::Public, "public", &["--peer", &dial]);
    let (entry, took) = bed.wait_peer(&public, &b);
    eprintln!("public host dialed host B through the mapping in {took:?}: {entry}");
    assert_eq!(entry["direction"], "outbound");

    bed.exec(Site::HostB, &["upnpc", "-d", &port, "TCP"])
        .unwrap();
    assert!(upnp_mappings(&bed).is_empty());
    assert!(!bed.ruleset(Site::RouterB).contains("dnat ip to"));
    assert!(!bed.tcp_connects(Site::Public, outside, DIAL));
}

#[test]
#[ignore = "needs root, nftables and miniupnpd: cargo xtask interop nat"]
fn node_maps_its_port_by_upnp_is_dialed_directly_and_unmaps_on_shutdown() {
    let Some(mut bed) = Bed::new(Options { upnp: true }) else {
        return;
    };
    // A 4 s lease: renewed every 2 s, lapsed within 4 s if it were not.
    let lease = Duration::from_secs(4);
    let start = Instant::now();
    let b = bed.knot_env(
        Site::HostB,
        "b",
        &["--upnp"],
        &[("KNOT_NAT_UPNP_LEASE_MS", "4000")],
    );
    let external = format!("tcp/{}", Site::RouterB.addr(PORT));
    // The exact stdout line: the tracing line `upnp mapped external=…` on
    // stderr comes first and must not end the wait.
    let log = bed.wait_log("b", &format!("upnp mapped {external} "));
    let mapped_in = start.elapsed();
    assert!(
        log.contains(&format!("upnp mapped {external} (lease 4 s)")),
        "{log}"
    );
    let mapping = format!("{PORT}->{}", Site::HostB.addr(PORT));
    assert_eq!(upnp_mappings(&bed), vec![mapping.clone()]);

    let public = bed.knot(Site::Public, "public", &["--peer", &external]);
    let (entry, dialed_in) = bed.wait_peer(&public, &b);
    assert_eq!(entry["direction"], "outbound");
    assert_eq!(entry["addr"], external.as_str());
    // Forwarded, not masqueraded: host B sees the public host itself.
    let (back, _) = bed.wait_peer(&b, &public);
    assert_eq!(back["direction"], "inbound");
    assert_eq!(
        ip_of(back["addr"].as_str().unwrap()),
        Site::Public.ip().to_string()
    );
    eprintln!(
        "upnp: mapped {mapped_in:?} after start; public node connected directly in {dialed_in:?}"
    );

    // Two and a half leases later the mapping is still there: renewed.
    std::thread::sleep(lease * 5 / 2);
    let renewals = bed.log("b").matches("upnp lease renewed").count();
    assert!(renewals >= 3, "{renewals} renewals:\n{}", bed.log("b"));
    assert_eq!(upnp_mappings(&bed), vec![mapping]);

    let start = Instant::now();
    bed.stop(&b);
    eprintln!("upnp: node stopped in {:?}", start.elapsed());
    assert!(bed.log("b").contains("upnp mapping deleted"));
    assert!(upnp_mappings(&bed).is_empty());
    assert!(!bed.ruleset(Site::RouterB).contains("dnat ip to"));
    assert!(!bed.tcp_connects(Site::Public, Site::RouterB.addr(PORT), DIAL));
}

/// The relay on the public bridge, and hosts A and B each holding a
/// reservation on it; returns them and B's relayed address.
fn relay_and_two_private_nodes(bed: &mut Bed) -> (Knot, Knot, Knot, String) {
    let relay = bed.knot(Site::Relay, "relay", &["--relay-service"]);
    let at = format!("tcp/{}", Site::Relay.addr(PORT));
    let a = bed.knot(Site::HostA, "a", &["--relay", &at]);
    let b = bed.knot(Site::HostB, "b", &["--relay", &at]);
    let relayed = relayed_address(bed, &b);
    assert_eq!(
        relayed,
        format!("relay/{at}/{}/{}", relay.peer_id, b.peer_id)
    );
    (relay, a, b, relayed)
}

/// The relayed address `node` prints once its relay granted a reservation.
fn relayed_address(bed: &mut Bed, node: &Knot) -> String {
    let log = bed.wait_log(&node.name, "relayed address ");
    log.lines()
        .find_map(|l| l.strip_prefix("relayed address "))
        .unwrap()
        .to_owned()
}

/// `a` dials `relayed` (B through the relay) with `knot connect`; checks
/// that B answered as itself over the relay and returns how long it took.
fn connect_through_relay(bed: &Bed, a: &Knot, b: &Knot, relayed: &str) -> Duration {
    let start = Instant::now();
    let out = bed.ctl(a, &["connect", relayed]);
    let took = start.elapsed();
    // The end-to-end handshake authenticated B's identity, not the relay's.
    assert_eq!(out["peer_id"], b.peer_id.as_str(), "{out}");
    assert_eq!(out["relayed"], true, "{out}");
    assert_eq!(out["addr"], relayed, "{out}");
    took
}

#[test]
#[ignore = "needs root and nftables: cargo xtask interop nat"]
fn private_nodes_meet_through_the_relay_then_directly_by_hole_punching() {
    let Some(mut bed) = Bed::new(Options::default()) else {
        return;
    };
    let (relay, a, b, relayed) = relay_and_two_private_nodes(&mut bed);
    let start = Instant::now();
    let relayed_in = connect_through_relay(&bed, &a, &b, &relayed);
    // B, too, knows A by its identity, over the relay.
    let (seen_by_b, _) = bed.wait_peer(&b, &a);
    assert_eq!(seen_by_b["peer_id"], a.peer_id.as_str());

    // The punch: both run lines show a direct connection to the other.
    let direct = format!("connected {} tcp/", b.peer_id);
    let log = bed.wait_log("a", &direct);
    let punched_in = start.elapsed();
    let line = log.lines().find(|l| l.starts_with(&direct)).unwrap();
    bed.wait_log("b", &format!("connected {} tcp/", a.peer_id));
    let entry = loop {
        let entry = bed.peer_entry(&a, &b).expect("A stays connected to B");
        if entry["relayed"] == false {
            break entry;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "A's channel to B stays relayed: {entry}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Direct, to B's router's public address: masquerade kept B's port.
    let addr = entry["addr"].as_str().unwrap();
    assert_eq!(ip_of(addr), Site::RouterB.ip().to_string(), "{entry}");
    let back = bed.peer_entry(&b, &a).expect("B stays connected to A");
    assert_eq!(back["relayed"], false, "{back}");
    assert_eq!(
        ip_of(back["addr"].as_str().unwrap()),
        Site::RouterA.ip().to_string()
    );
    // The relay carried the circuit but is not a peer of that connection.
    assert!(bed.peer_entry(&relay, &a).is_some());
    eprintln!(
        "nat: A reached B through the relay in {relayed_in:?}; \
         direct after hole punching {punched_in:?} after the dial ({line})"
    );
}

#[test]
#[ignore = "needs root and nftables: cargo xtask interop nat"]
fn a_nat_that_drops_unsolicited_syns_keeps_the_connection_relayed() {
    let Some(mut bed) = Bed::new(Options::default()) else {
        return;
    };
    refuse_punches(&bed);
    let (_relay, a, b, relayed) = relay_and_two_private_nodes(&mut bed);
    connect_through_relay(&bed, &a, &b, &relayed);
    // The punch gets its handshake timeout (5 s) and more; then the
    // connection is still the relayed one, and it carries pings.
    std::thread::sleep(Duration::from_secs(8));
    let refused: u64 = [Site::RouterA, Site::RouterB]
        .iter()
        .map(|&r| counted(&bed.ruleset(r), "drop"))
        .sum();
    assert!(refused > 0, "no punch SYN reached a router");
    let entry = bed.peer_entry(&a, &b).expect("A stays connected to B");
    assert_eq!(entry["relayed"], true, "{entry}");
    assert_eq!(entry["addr"], relayed.as_str());
    assert!(
        !bed.log("a")
            .contains(&format!("connected {} tcp/", b.peer_id))
    );
    let rtt = |node: &Knot, peer: &Knot| {
        bed.peer_entry(node, peer)
            .and_then(|e| e["rtt_us"].as_u64())
    };
    assert!(
        rtt(&a, &b).is_some() && rtt(&b, &a).is_some(),
        "pings cross the relay"
    );
    eprintln!("nat: {refused} punch SYNs dropped; A and B stay connected through the relay");
}

/// Both routers drop every TCP SYN arriving on their public side, even one
/// that conntrack would take for the answer of a simultaneous open.
fn refuse_punches(bed: &Bed) {
    for router in [Site::RouterA, Site::RouterB] {
        bed.nft(
            router,
            "insert rule ip filter forward iifname wan tcp flags & (syn | ack) == syn counter drop",
        )
        .unwrap();
    }
}

/// The packets counted by the `counter <verdict>` rules of a ruleset.
fn counted(ruleset: &str, verdict: &str) -> u64 {
    ruleset
        .lines()
        .filter(|l| l.contains("counter packets") && l.contains(verdict))
        .filter_map(|l| l.split("counter packets ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// `knot connect <relayed>` from `node`, expected to fail: its error text.
fn refused_connect(bed: &Bed, node: &Knot, relayed: &str) -> String {
    let data = node.dir.display().to_string();
    let knot = env!("CARGO_BIN_EXE_knot");
    bed.exec(node.site, &[knot, "connect", relayed, "--data-dir", &data])
        .unwrap_err()
}

/// Both routers answer a TCP SYN arriving on their public side with a
/// reset, as many home routers do, in the forward path (a SYN conntrack
/// would pass as the answer of a simultaneous open) and for their own
/// address (a SYN that arrives before the other side's opened a mapping).
fn reset_syns(bed: &Bed) {
    for router in [Site::RouterA, Site::RouterB] {
        for chain in ["forward", "input"] {
            bed.nft(
                router,
                &format!(
                    "insert rule ip filter {chain} iifname wan tcp flags & (syn | ack) == syn counter reject with tcp reset"
                ),
            )
            .unwrap();
        }
    }
}

/// Issue 20: where the routers reset early SYNs, TCP hole punching fails
/// and QUIC hole punching (UDP, from both QUIC listen sockets at the
/// moment the relay coordinates) connects A and B directly.
#[test]
#[ignore = "needs root and nftables: cargo xtask interop nat"]
fn routers_that_reset_early_syns_stop_tcp_punching_and_quic_punches_through() {
    let Some(mut bed) = Bed::new(Options::default()) else {
        return;
    };
    reset_syns(&bed);
    let _relay = bed.knot(Site::Relay, "relay", &["--relay-service"]);
    let at = format!("tcp/{}", Site::Relay.addr(PORT));
    let quic = format!("quic/0.0.0.0:{PORT}");
    let a = bed.knot(Site::HostA, "a", &["--relay", &at, "--listen", &quic]);
    let b = bed.knot(Site::HostB, "b", &["--relay", &at, "--listen", &quic]);
    let relayed = relayed_address(&mut bed, &b);
    let start = Instant::now();
    let relayed_in = connect_through_relay(&bed, &a, &b, &relayed);
    let direct = format!("connected {} quic/", b.peer_id);
    let log = bed.wait_log("a", &direct);
    let punched_in = start.elapsed();
    let line = log
        .lines()
        .find(|l| l.starts_with(&direct))
        .unwrap()
        .to_owned();
    bed.wait_log("b", &format!("connected {} quic/", a.peer_id));
    let entry = loop {
        let entry = bed.peer_entry(&a, &b).expect("A stays connected to B");
        if entry["relayed"] == false {
            break entry;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "A's channel to B stays relayed: {entry}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Direct over QUIC, to B's router's public address (masquerade kept
    // the UDP port), and the same from B's side.
    let addr = entry["addr"].as_str().unwrap();
    assert!(addr.starts_with("quic/"), "{entry}");
    assert_eq!(ip_of(addr), Site::RouterB.ip().to_string(), "{entry}");
    let back = bed.peer_entry(&b, &a).expect("B stays connected to A");
    assert_eq!(back["relayed"], false, "{back}");
    assert_eq!(
        ip_of(back["addr"].as_str().unwrap()),
        Site::RouterA.ip().to_string()
    );
    // TCP punching was tried and every early SYN got a reset: no TCP
    // connection between A and B.
    let resets: u64 = [Site::RouterA, Site::RouterB]
        .iter()
        .map(|&r| counted(&bed.ruleset(r), "reject"))
        .sum();
    assert!(resets > 0, "no punch SYN reached a router");
    for (node, peer) in [("a", &b), ("b", &a)] {
        assert!(
            !bed.log(node)
                .contains(&format!("connected {} tcp/", peer.peer_id)),
            "{node} got a TCP connection to its peer"
        );
    }
    eprintln!(
        "nat: A reached B through the relay in {relayed_in:?}; TCP punching met {resets} \
         resets; direct over QUIC {punched_in:?} after the dial ({line})"
    );
}

/// The control case of the test above: the same routers, nodes on TCP
/// only: the resets stop the TCP punch and the connection stays relayed.
#[test]
#[ignore = "needs root and nftables: cargo xtask interop nat"]
fn routers_that_reset_early_syns_keep_a_tcp_only_pair_relayed() {
    let Some(mut bed) = Bed::new(Options::default()) else {
        return;
    };
    reset_syns(&bed);
    let (_relay, a, b, relayed) = relay_and_two_private_nodes(&mut bed);
    connect_through_relay(&bed, &a, &b, &relayed);
    // The punch gets its handshake timeout (5 s) and more.
    std::thread::sleep(Duration::from_secs(8));
    let resets: u64 = [Site::RouterA, Site::RouterB]
        .iter()
        .map(|&r| counted(&bed.ruleset(r), "reject"))
        .sum();
    assert!(resets > 0, "no punch SYN reached a router");
    let entry = bed.peer_entry(&a, &b).expect("A stays connected to B");
    assert_eq!(entry["relayed"], true, "{entry}");
    eprintln!("nat: {resets} punch SYNs reset; a TCP-only pair stays relayed");
}

/// The relay's circuit limits through real NAT: dialers behind one router
/// share one IP address, which gets 4 circuits (default); from LAN A and
/// the public host, B gets its 8 circuits (default, per peer), and a ninth
/// dialer from a third address is refused. The relay stays up and every
/// circuit works.
#[test]
#[ignore = "needs root and nftables: cargo xtask interop nat"]
fn relay_refuses_circuits_over_its_per_ip_and_per_peer_limits_and_stays_up() {
    let Some(mut bed) = Bed::new(Options::default()) else {
        return;
    };
    // Circuits stay relayed (no punch), and no node dials by itself (no DHT).
    refuse_punches(&bed);
    // The dialers of a LAN come from its router's one address: lift the
    // per-IP connection limit (8) so that the relay's own limits are reached.
    let per_ip = [("KNOT_MAX_PER_IP", "32")];
    let relay = bed.knot_env(
        Site::Relay,
        "relay",
        &["--relay-service", "--no-dht"],
        &per_ip,
    );
    let at = format!("tcp/{}", Site::Relay.addr(PORT));
    let b = bed.knot_env(Site::HostB, "b", &["--relay", &at, "--no-dht"], &per_ip);
    let relayed = relayed_address(&mut bed, &b);
    // The defaults: 4 circuits from one IP address, 8 with one peer.
    let (per_address, per_peer) = (4, 8);
    // Five dialers on LAN A (one too many for its address), four on the
    // public host.
    let mut dialers = Vec::new();
    for (site, n) in [(Site::HostA, per_address + 1), (Site::Public, per_address)] {
        for j in 0..n {
            let port = PORT + 1 + u16::try_from(j).unwrap();
            let name = format!("d{site}{j}");
            dialers.push(bed.knot_on(site, &name, port, &["--no-dht"], &[]));
        }
    }
    let start = Instant::now();
    let (lan_a, public) = dialers.split_at(per_address + 1);
    for d in &lan_a[..per_address] {
        connect_through_relay(&bed, d, &b, &relayed);
    }
    let per_ip_refused = refused_connect(&bed, &lan_a[per_address], &relayed);
    assert!(
        per_ip_refused.contains("relay limit: circuits"),
        "{per_ip_refused}"
    );
    for d in public {
        connect_through_relay(&bed, d, &b, &relayed);
    }
    let opened_in = start.elapsed();
    let elsewhere = bed.knot_on(Site::Relay, "drelay", PORT + 1, &["--no-dht"], &[]);
    let per_peer_refused = refused_connect(&bed, &elsewhere, &relayed);
    assert!(
        per_peer_refused.contains("relay limit: circuits"),
        "{per_peer_refused}"
    );
    // The relay is up and serves: its control socket answers, B keeps its
    // reservation channel, and the circuits it carries still work.
    let (entry, _) = bed.wait_peer(&relay, &b);
    assert_eq!(entry["relayed"], false);
    for d in lan_a[..per_address].iter().chain(public) {
        let entry = bed.peer_entry(d, &b).expect("the circuit stays open");
        assert_eq!(entry["relayed"], true, "{entry}");
    }
    eprintln!(
        "relay: {per_peer} circuits to B from LAN A and the public host opened in \
         {opened_in:?}; the {}th from LAN A and one from a third address refused: {}",
        per_address + 1,
        &per_peer_refused[per_peer_refused.find("relay limit").unwrap_or(0)..]
    );
}

/// Waits for the whole stdout line `reachability <want>` (`public <addr>`
/// or `private`) of `node`: not for any verdict (a node may say `private`
/// before its UPnP mapping makes it public), and not for the stderr tracing
/// line that ends the same way and comes first.
fn wait_reachability(bed: &mut Bed, node: &Knot, want: &str, start: Instant) -> Duration {
    let line = format!("reachability {want}");
    let log = bed.wait_log(&node.name, &format!("\n{line}\n"));
    assert!(log.lines().any(|l| l == line), "{log}");
    start.elapsed()
}

/// `knot dht find <peer>` on `node`, polled until the answer lists
/// `addr`; returns the addresses and how long that took.
fn wait_dht_find(bed: &Bed, node: &Knot, peer: &Knot, addr: &str) -> (Vec<String>, Duration) {
    let start = Instant::now();
    let data = node.dir.display().to_string();
    let knot = env!("CARGO_BIN_EXE_knot");
    loop {
        // Exit code 1 (not found yet) is an answer too.
        let args = [
            knot,
            "dht",
            "find",
            &peer.peer_id,
            "--json",
            "--data-dir",
            &data,
        ];
        let last = match bed.exec(node.site, &args) {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => e,
        };
        if let Ok(answer) = serde_json::from_str::<serde_json::Value>(last.trim()) {
            let addrs: Vec<String> = answer["peer"]["addrs"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if addrs.iter().any(|a| a == addr) {
                return (addrs, start.elapsed());
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{} never found {addr} for {} in the DHT; last answer: {last}",
            node.name,
            peer.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The reachability check through real NAT: a node asks only peers it
/// dialed, one per /24. The relay (which dials the public node, and needs
/// one answer here) is dialed back at its address (public); the public
/// node, which dials nobody, asks nobody and stays unknown; host A behind
/// masquerade is not reached by the relay and the public node it dials
/// (private); host B's UPnP mapping makes it public at the router's
/// address. Host A's relayed address is in its DHT peer
/// record: host B, knowing only A's PeerId, finds it with `knot dht find`
/// and connects through the relay, end to end authenticated.
#[test]
#[ignore = "needs root, nftables and miniupnpd: cargo xtask interop nat"]
fn reachability_through_nat_and_a_relayed_peer_found_by_id() {
    let Some(mut bed) = Bed::new(Options { upnp: true }) else {
        return;
    };
    let start = Instant::now();
    let at = format!("tcp/{}", Site::Relay.addr(PORT));
    let public_at = format!("tcp/{}", Site::Public.addr(PORT));
    let public = bed.knot(Site::Public, "public", &[]);
    let relay = bed.knot_env(
        Site::Relay,
        "relay",
        &["--relay-service", "--peer", &public_at],
        &[("KNOT_NAT_REACHABILITY_QUORUM", "1")],
    );
    let a = bed.knot(Site::HostA, "a", &["--relay", &at, "--peer", &public_at]);
    let b = bed.knot(
        Site::HostB,
        "b",
        &["--upnp", "--peer", &at, "--peer", &public_at],
    );

    let relay_in = wait_reachability(&mut bed, &relay, &format!("public {at}"), start);
    let a_in = wait_reachability(&mut bed, &a, "private", start);
    let mapped = format!("tcp/{}", Site::RouterB.addr(PORT));
    let b_in = wait_reachability(&mut bed, &b, &format!("public {mapped}"), start);
    let status = bed.ctl(&b, &["status"]);
    assert_eq!(
        status["reachability"],
        format!("public {mapped}"),
        "{status}"
    );
    // Every peer of the public node dialed it: none of them is asked.
    let status = bed.ctl(&public, &["status"]);
    assert_eq!(status["reachability"], "unknown", "{status}");
    eprintln!(
        "reachability (from the first start): relay public in {relay_in:?}, host A private \
         in {a_in:?}, host B public at its UPnP mapping in {b_in:?}; the public node, dialed \
         by all and dialing none, unknown"
    );

    let relayed = relayed_address(&mut bed, &a);
    let found_at = Instant::now();
    let (addrs, found_in) = wait_dht_find(&bed, &b, &a, &relayed);
    let connected_in = connect_through_relay(&bed, &b, &a, &relayed);
    eprintln!(
        "dht: B found A's relayed address by PeerId in {found_in:?} ({}); connected \
         through the relay in {connected_in:?}; {:?} from the lookup's start",
        addrs.join(" "),
        found_at.elapsed()
    );
}
