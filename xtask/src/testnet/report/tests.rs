use super::*;

#[test]
fn lookups_that_found_their_peer_are_read_from_the_log() {
    let found = "2025-06-01T10:00:00.123456Z DEBUG knotwork_discovery_dht::dht: query finished kind=find_node origin=App found=true hops=3 requests=12 responses=11 failures=1 ms=42 timed_out=false";
    assert_eq!(found_lookup(found), Some((3, 42.0)));
    let missed = found.replace("found=true", "found=false");
    assert_eq!(found_lookup(&missed), None);
    let get = found.replace("kind=find_node", "kind=get");
    assert_eq!(found_lookup(&get), None);
    assert_eq!(found_lookup("WARN something else"), None);
}

#[test]
fn percentiles_are_nearest_rank() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&v, 50.0), Some(50.0));
    assert_eq!(percentile(&v, 95.0), Some(95.0));
    assert_eq!(percentile(&v, 100.0), Some(100.0));
    assert_eq!(percentile(&[], 50.0), None);
}

#[test]
fn the_simulators_hop_counts_are_read() {
    let text = "success        99.00% (99/100)\nhops           mean 2.10  p50 2  p95 3  max 4\nhop counts     0:1 1:20 2:50 3:27 4:1\n";
    let sim = Sim::parse(text);
    assert_eq!(sim.hops, [1, 20, 50, 27, 1]);
    assert_eq!(sim.success, "99.00% (99/100)");
    assert_eq!(sim.values().len(), 99);
    assert_eq!(percentile(&sim.values(), 95.0), Some(3.0));
}
