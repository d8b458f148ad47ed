use std::time::Duration;

use knotwork_core::Keypair;
use knotwork_node::meter::RateBudget;

use super::*;
use crate::core::REPLAY_WINDOW;

fn peer() -> PeerId {
    Keypair::generate().unwrap().peer_id()
}

/// Settings without origin budgets, so tests may publish many messages.
fn unlimited() -> GossipConfig {
    GossipConfig {
        origin_budget: RateBudget::UNLIMITED,
        ..GossipConfig::default()
    }
}

/// `n` messages of one fresh origin, published at `now`.
fn messages(n: usize, now: Instant) -> Vec<GossipMessage> {
    let origin = Keypair::generate().unwrap();
    let mut p = GossipState::new(unlimited(), 1000);
    (0..n)
        .map(|i| p.publish(&origin, "t", vec![i as u8], now, &[]).unwrap().0)
        .collect()
}

fn wire(msg: &GossipMessage) -> WireId {
    WireId {
        origin: msg.origin,
        seq: msg.seq,
    }
}

/// A relay that accepted `msgs` from a fresh peer at `now`.
fn relay_with(config: GossipConfig, msgs: &[GossipMessage], now: Instant) -> GossipState {
    let mut relay = GossipState::new(config, 0);
    let from = peer();
    for m in msgs {
        relay
            .handle_message(from, &mut m.clone(), now, &[])
            .unwrap();
    }
    relay
}

#[test]
fn a_node_that_missed_a_message_gets_it_after_one_repair_round() {
    let t0 = Instant::now();
    let msgs = messages(1, t0);
    let mut a = relay_with(GossipConfig::default(), &msgs, t0);
    let (a_id, b_id) = (peer(), peer());
    let mut b = GossipState::new(GossipConfig::default(), 0);
    let t1 = t0 + Duration::from_secs(1);
    let rounds = a.repair_tick(t1, &[b_id]);
    assert_eq!(rounds.len(), 1);
    let (to, ihave) = &rounds[0];
    assert_eq!((*to, ihave.ids.clone()), (b_id, vec![wire(&msgs[0])]));
    let iwant = b.on_ihave(a_id, ihave, t1).unwrap().want.expect("asks");
    assert_eq!(iwant.ids, vec![wire(&msgs[0])]);
    let answers = a.on_iwant(b_id, &iwant, t1).unwrap();
    assert_eq!(answers.len(), 1);
    let mut got = answers[0].clone();
    assert_eq!(
        (got.origin, got.seq, &got.data),
        (msgs[0].origin, msgs[0].seq, &msgs[0].data)
    );
    b.handle_message(a_id, &mut got, t1, &[a_id]).unwrap();
    let id = wire(&msgs[0]).id().unwrap();
    assert!(b.answers_want(a_id, &id), "counted as repaired");
    assert!(!b.answers_want(a_id, &id), "once");
    // Now B has it, and advertises it in turn.
    let again = b.on_ihave(a_id, ihave, t1).unwrap();
    assert_eq!(again, IHaveAnswer::default(), "seen: nothing more to ask");
    assert_eq!(b.repair_tick(t1, &[a_id])[0].1.ids, vec![wire(&msgs[0])]);
}

#[test]
fn nothing_kept_means_an_empty_ihave_and_one_round_reaches_repair_fanout_peers() {
    let t0 = Instant::now();
    let peers: Vec<PeerId> = (0..10).map(|_| peer()).collect();
    let mut empty = GossipState::new(GossipConfig::default(), 0);
    let pulls = empty.repair_tick(t0, &peers);
    assert_eq!(pulls.len(), 3);
    assert!(pulls.iter().all(|(_, ihave)| ihave.ids.is_empty()));
    let mut a = relay_with(GossipConfig::default(), &messages(2, t0), t0);
    let rounds = a.repair_tick(t0, &peers);
    assert_eq!(rounds.len(), 3);
    for (to, ihave) in &rounds {
        assert!(peers.contains(to));
        assert_eq!(ihave.ids.len(), 2);
    }
    // Kept for the repair window only.
    let later = t0 + GossipConfig::default().repair_window;
    assert!(
        a.repair_tick(later, &peers)
            .iter()
            .all(|(_, i)| i.ids.is_empty())
    );
    assert_eq!(a.cache_len(), 0);
}

#[test]
fn a_flooding_iwant_peer_gets_at_most_its_serve_budget() {
    let t0 = Instant::now();
    let msgs = messages(200, t0);
    let mut a = relay_with(unlimited(), &msgs, t0);
    assert_eq!(a.cache_len(), 200);
    let attacker = peer();
    let iwant = IWant {
        ids: msgs.iter().take(MAX_IHAVE_IDS).map(wire).collect(),
    };
    let mut served = 0;
    for _ in 0..20 {
        served += a.on_iwant(attacker, &iwant, t0).unwrap().len();
    }
    assert_eq!(served, 64, "the burst of serve_budget");
    let t1 = t0 + Duration::from_secs(1);
    for _ in 0..20 {
        served += a.on_iwant(attacker, &iwant, t1).unwrap().len();
    }
    assert_eq!(served, 64 + 32, "then 32 a second");
    // Another peer has a budget of its own; unknown ids get nothing.
    let unknown = IWant {
        ids: messages(3, t0).iter().map(wire).collect(),
    };
    assert!(a.on_iwant(peer(), &unknown, t1).unwrap().is_empty());
    assert_eq!(a.on_iwant(peer(), &iwant, t1).unwrap().len(), 64);
}

#[test]
fn an_ihave_of_seen_or_stale_ids_asks_nothing() {
    let t0 = Instant::now();
    let n = REPLAY_WINDOW as usize + 2;
    let msgs = messages(n, t0);
    let from = peer();
    // B accepted the first and the last: the first is seen, and the
    // second is now below the replay window of the last.
    let mut b = relay_with(unlimited(), &[msgs[0].clone(), msgs[n - 1].clone()], t0);
    for old in [&msgs[0], &msgs[1], &msgs[n - 1]] {
        let ihave = IHave {
            ids: vec![wire(old)],
        };
        assert_eq!(
            b.on_ihave(from, &ihave, t0).unwrap().want,
            None,
            "seq {}",
            old.seq
        );
    }
    // One inside the window that B never got is asked for.
    let ihave = IHave {
        ids: vec![wire(&msgs[n - 2])],
    };
    assert!(b.on_ihave(from, &ihave, t0).unwrap().want.is_some());
}

#[test]
fn an_id_is_asked_of_one_peer_at_a_time_and_within_the_want_budget() {
    let t0 = Instant::now();
    let msgs = messages(MAX_IHAVE_IDS, t0);
    let config = GossipConfig {
        want_budget: RateBudget::new(5.0, 10),
        ..unlimited()
    };
    let mut b = GossipState::new(config, 0);
    let (x, y) = (peer(), peer());
    let ihave = IHave {
        ids: msgs.iter().map(wire).collect(),
    };
    let first = b.on_ihave(x, &ihave, t0).unwrap().want.unwrap();
    assert_eq!(
        first.ids,
        ihave.ids[..10].to_vec(),
        "the want budget's burst"
    );
    let second = b.on_ihave(y, &ihave, t0).unwrap().want.unwrap();
    assert_eq!(
        second.ids,
        ihave.ids[10..20].to_vec(),
        "not the ids asked of x"
    );
    // After the want timeout x's ids may be asked of y.
    let later = t0 + GossipConfig::default().want_timeout;
    let third = b.on_ihave(y, &ihave, later).unwrap().want.unwrap();
    assert_eq!(third.ids, ihave.ids[..10].to_vec());
}

#[test]
fn too_many_ids_are_malformed() {
    let t0 = Instant::now();
    let mut a = GossipState::new(GossipConfig::default(), 0);
    let from = peer();
    let ids = vec![
        WireId {
            origin: *peer().as_bytes(),
            seq: 1
        };
        MAX_IHAVE_IDS + 1
    ];
    assert_eq!(
        a.on_ihave(from, &IHave { ids: ids.clone() }, t0)
            .map(|_| ()),
        Err(GossipError::TooManyIds)
    );
    assert_eq!(
        a.on_iwant(from, &IWant { ids }, t0),
        Err(GossipError::TooManyIds)
    );
}

#[test]
fn the_cache_evicts_the_oldest_by_count_and_by_bytes() {
    let t0 = Instant::now();
    let msgs = messages(5, t0);
    let by_count = GossipConfig {
        repair_cache_messages: 3,
        ..unlimited()
    };
    let mut a = relay_with(by_count, &msgs, t0);
    assert_eq!(a.cache_len(), 3);
    let newest: Vec<WireId> = msgs.iter().rev().take(3).map(wire).collect();
    assert_eq!(a.repair_tick(t0, &[peer()])[0].1.ids, newest);
    let size = cost(&msgs[0]);
    let by_bytes = GossipConfig {
        repair_cache_bytes: 2 * size + size / 2,
        ..unlimited()
    };
    let b = relay_with(by_bytes, &msgs, t0);
    assert_eq!((b.cache_len(), b.cache_bytes()), (2, 2 * size));
}

#[test]
fn a_peer_that_leaves_takes_its_budgets_with_it() {
    let t0 = Instant::now();
    let msgs = messages(1, t0);
    let mut a = relay_with(GossipConfig::default(), &msgs, t0);
    let want = IWant {
        ids: vec![wire(&msgs[0])],
    };
    // Fresh identities that each ask for a kept message and leave: no
    // message is relayed, so only `forget` takes their entries out.
    let before = a.links.len();
    for _ in 0..50 {
        let from = peer();
        assert_eq!(a.on_iwant(from, &want, t0).unwrap().len(), 1);
        a.forget(&from);
    }
    assert_eq!(a.links.len(), before);
}

#[test]
fn a_peer_that_lists_less_than_it_should_gets_the_settled_messages_it_lacks() {
    let t0 = Instant::now();
    let msgs = messages(3, t0);
    let mut a = relay_with(GossipConfig::default(), &msgs[..2], t0);
    let interval = GossipConfig::default().repair_interval;
    // A third message reaches A later: still on its way to others by the flood.
    let t1 = t0 + interval;
    a.handle_message(peer(), &mut msgs[2].clone(), t1, &[])
        .unwrap();
    let (fresh, half) = (peer(), peer());
    // A fresh node that keeps nothing pulls with an empty IHAVE.
    let mut f = GossipState::new(GossipConfig::default(), 0);
    let (_, pull) = f.repair_tick(t1, &[peer()]).remove(0);
    assert!(pull.ids.is_empty());
    let answer = a.on_ihave(fresh, &pull, t1).unwrap();
    assert_eq!(answer.want, None);
    let pushed: Vec<WireId> = answer.push.iter().map(wire).collect();
    assert_eq!(
        pushed,
        vec![wire(&msgs[0]), wire(&msgs[1])],
        "settled ones, oldest first"
    );
    for mut m in answer.push {
        f.handle_message(fresh, &mut m, t1, &[]).unwrap();
    }
    assert_eq!(f.cache_len(), 2, "the fresh node has them");
    // A peer that lists one of them gets only the other.
    let listed = IHave {
        ids: vec![wire(&msgs[1])],
    };
    let answer = a.on_ihave(half, &listed, t1).unwrap();
    assert_eq!(
        answer.push.iter().map(wire).collect::<Vec<_>>(),
        vec![wire(&msgs[0])]
    );
    // A full IHAVE may be cut short, so it says nothing of what is lacking.
    let full = IHave {
        ids: messages(MAX_IHAVE_IDS, t0).iter().map(wire).collect(),
    };
    assert!(a.on_ihave(peer(), &full, t1).unwrap().push.is_empty());
}

#[test]
fn pushes_share_the_serve_budget_with_iwant_answers() {
    let t0 = Instant::now();
    let msgs = messages(20, t0);
    let config = GossipConfig {
        serve_budget: RateBudget::new(1.0, 5),
        ..unlimited()
    };
    let mut a = relay_with(config, &msgs, t0);
    let later = t0 + GossipConfig::default().repair_interval;
    let from = peer();
    let empty = IHave { ids: Vec::new() };
    assert_eq!(
        a.on_ihave(from, &empty, later).unwrap().push.len(),
        5,
        "the burst"
    );
    assert!(
        a.on_ihave(from, &empty, later).unwrap().push.is_empty(),
        "then nothing"
    );
    let iwant = IWant {
        ids: msgs.iter().map(wire).collect(),
    };
    assert!(
        a.on_iwant(from, &iwant, later).unwrap().is_empty(),
        "IWANT shares it"
    );
}
