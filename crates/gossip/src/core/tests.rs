use super::*;

fn ids(n: usize) -> Vec<PeerId> {
    (0..n)
        .map(|_| Keypair::generate().unwrap().peer_id())
        .collect()
}

fn one() -> PeerId {
    ids(1).remove(0)
}

/// `n` messages of one fresh origin, published at `now`.
fn messages(n: usize, now: Instant) -> (PeerId, Vec<GossipMessage>) {
    let origin = Keypair::generate().unwrap();
    let mut p = GossipState::new(GossipConfig::default(), 1000);
    let msgs = (0..n)
        .map(|i| p.publish(&origin, "t", vec![i as u8], now, &[]).unwrap().0)
        .collect();
    (origin.peer_id(), msgs)
}

#[test]
fn test_publish_then_receive_forwards_once_and_drops_duplicate() {
    let t0 = Instant::now();
    let origin = Keypair::generate().unwrap();
    let peers = ids(10);
    let mut publisher = GossipState::new(GossipConfig::default(), 7);
    let (msg, targets) = publisher
        .publish(&origin, "chat", b"hi".to_vec(), t0, &peers)
        .unwrap();
    assert_eq!(targets.len(), 6, "bounded fanout");
    let mut relay = GossipState::new(GossipConfig::default(), 0);
    let from = *peers.first().unwrap();
    let mut copy = msg.clone();
    let fwd = relay.handle_message(from, &mut copy, t0, &peers).unwrap();
    assert_eq!(copy.ttl, msg.ttl - 1);
    assert!(!fwd.contains(&from) && fwd.len() == 6);
    let mut again = msg.clone();
    assert_eq!(
        relay.handle_message(from, &mut again, t0, &peers),
        Err(GossipError::Duplicate)
    );
}

#[test]
fn m2_a_message_replayed_after_the_seen_cache_forgot_it_is_refused() {
    let t0 = Instant::now();
    let (_, msgs) = messages(1, t0);
    let msg = msgs[0].clone();
    let mut relay = GossipState::new(GossipConfig::default(), 0);
    let from = one();
    relay
        .handle_message(from, &mut msg.clone(), t0, &[])
        .unwrap();
    assert_eq!(relay.seen_len(), 1);
    assert_eq!(relay.poll_timeout(), Some(t0 + Duration::from_secs(120)));
    relay.handle_timeout(t0 + Duration::from_secs(119));
    assert_eq!(relay.seen_len(), 1);
    relay.handle_timeout(t0 + Duration::from_secs(120));
    assert_eq!(relay.seen_len(), 0, "the seen-cache forgot it");
    let later = t0 + Duration::from_secs(121);
    assert_eq!(
        relay.handle_message(one(), &mut msg.clone(), later, &[]),
        Err(GossipError::Duplicate),
        "the origin's replay window still has it"
    );
}

#[test]
fn m2_a_replay_below_the_origins_window_is_stale() {
    let t0 = Instant::now();
    let n = REPLAY_WINDOW as usize + 1;
    let (_, msgs) = messages(n, t0);
    let config = GossipConfig {
        origin_budget: RateBudget::UNLIMITED,
        ..GossipConfig::default()
    };
    let mut relay = GossipState::new(config, 0);
    let from = one();
    for m in &msgs {
        relay.handle_message(from, &mut m.clone(), t0, &[]).unwrap();
    }
    let later = t0 + Duration::from_secs(121);
    relay.handle_timeout(later);
    assert_eq!(
        relay.handle_message(from, &mut msgs[0].clone(), later, &[]),
        Err(GossipError::Stale)
    );
    assert_eq!(
        relay.handle_message(from, &mut msgs[n - 1].clone(), later, &[]),
        Err(GossipError::Duplicate)
    );
}

#[test]
fn test_replay_window_takes_each_seq_once_in_any_order() {
    let mut w = ReplayWindow::new(1000);
    for seq in [1003, 1001, 1002, 999] {
        assert_eq!(w.check(seq), Ok(()), "{seq}");
        w.insert(seq);
        assert_eq!(w.check(seq), Err(GossipError::Duplicate), "{seq}");
    }
    assert_eq!(w.check(1000), Err(GossipError::Duplicate));
    assert_eq!(w.check(1003 - REPLAY_WINDOW + 1), Ok(()));
    assert_eq!(w.check(1003 - REPLAY_WINDOW), Err(GossipError::Stale));
    // A jump past the whole window forgets it.
    w.insert(5000);
    assert_eq!(w.check(4999), Ok(()));
    assert_eq!(w.check(5000 - REPLAY_WINDOW), Err(GossipError::Stale));
    let mut low = ReplayWindow::new(3);
    assert_eq!(low.check(0), Ok(()));
    low.insert(0);
    assert_eq!(low.check(0), Err(GossipError::Duplicate));
    assert_eq!(low.check(u64::MAX), Ok(()));
    low.insert(u64::MAX);
    assert_eq!(low.check(3), Err(GossipError::Stale));
}

#[test]
fn m2_an_origin_whose_old_messages_are_replayed_by_another_peer_is_not_banned() {
    let t0 = Instant::now();
    let (origin, msgs) = messages(300, t0);
    let config = GossipConfig {
        max_origins: 1,
        ..GossipConfig::default()
    };
    let mut relay = GossipState::new(config, 0);
    let honest = one();
    for m in msgs.iter().take(50) {
        relay
            .handle_message(honest, &mut m.clone(), t0, &[])
            .unwrap();
    }
    // The replayer sends everything it recorded, once after the
    // seen-cache forgot, once more after pushing the origin out of the
    // origin table (capacity 1 here) with an origin of its own.
    let replayer = one();
    let later = t0 + Duration::from_secs(121);
    for m in msgs.iter().take(50) {
        assert!(matches!(
            relay.handle_message(replayer, &mut m.clone(), later, &[]),
            Err(GossipError::Duplicate | GossipError::Stale)
        ));
    }
    let (_, own) = messages(1, later);
    relay
        .handle_message(replayer, &mut own[0].clone(), later, &[])
        .unwrap();
    let mut results = Vec::new();
    for m in &msgs {
        results.push(relay.handle_message(replayer, &mut m.clone(), later, &[]));
    }
    assert!(results.contains(&Err(GossipError::Throttled)));
    assert!(!results.contains(&Err(GossipError::OriginBanned)));
    assert!(!relay.is_banned(&origin, later));
}

#[test]
fn m2_a_received_ttl_is_capped_to_the_configured_ttl() {
    let t0 = Instant::now();
    let (_, msgs) = messages(1, t0);
    let mut m = msgs[0].clone();
    m.ttl = u8::MAX;
    let mut relay = GossipState::new(GossipConfig::default(), 0);
    let peers = ids(2);
    let fwd = relay.handle_message(peers[0], &mut m, t0, &peers).unwrap();
    assert_eq!(fwd, vec![peers[1]]);
    assert_eq!(m.ttl, GossipConfig::default().ttl - 1);
}

#[test]
fn test_ttl_one_is_delivered_not_forwarded() {
    let t0 = Instant::now();
    let (_, msgs) = messages(1, t0);
    let mut msg = msgs[0].clone();
    msg.ttl = 1;
    let mut relay = GossipState::new(GossipConfig::default(), 0);
    let peers = ids(3);
    assert_eq!(
        relay.handle_message(peers[0], &mut msg, t0, &peers),
        Ok(vec![])
    );
}

#[test]
fn test_malformed_messages_name_their_fault() {
    let t0 = Instant::now();
    let origin = Keypair::generate().unwrap();
    let mut p = GossipState::new(GossipConfig::default(), 0);
    let (msg, _) = p.publish(&origin, "t", vec![1, 2], t0, &[]).unwrap();
    let mut relay = GossipState::new(GossipConfig::default(), 0);
    // A fresh sender for each: the fourth offence of one would ban it.
    let mut refuse = |m: &mut GossipMessage| relay.handle_message(one(), m, t0, &[]);
    let mut bad = msg.clone();
    bad.data.push(3);
    assert_eq!(refuse(&mut bad), Err(GossipError::BadSignature));
    let mut long = msg.clone();
    long.topic = "x".repeat(MAX_TOPIC_LEN + 1);
    assert_eq!(refuse(&mut long), Err(GossipError::TopicTooLong));
    let mut big = msg.clone();
    big.data = vec![0; MAX_DATA_LEN + 1];
    assert_eq!(refuse(&mut big), Err(GossipError::DataTooLong));
    let mut other_origin = msg.clone();
    other_origin.origin = *one().as_bytes();
    assert_eq!(refuse(&mut other_origin), Err(GossipError::BadSignature));
    let mut no_key = msg.clone();
    // Bytes nobody holds the key of (perhaps no curve point at all).
    no_key.origin = [0; 32];
    no_key.origin[0] = 2;
    assert_eq!(refuse(&mut no_key), Err(GossipError::BadSignature));
    let mut short_sig = msg.clone();
    short_sig.sig.truncate(10);
    assert_eq!(refuse(&mut short_sig), Err(GossipError::BadSignature));
    assert!(
        refuse(&mut msg.clone()).is_ok(),
        "a bad copy does not poison the seen-cache"
    );
    assert_eq!(
        p.publish(&origin, &"x".repeat(65), vec![], t0, &[]),
        Err(GossipError::TopicTooLong)
    );
}

#[test]
fn m1_a_sender_of_bad_signatures_is_banned_and_others_are_not_affected() {
    let t0 = Instant::now();
    let (_, msgs) = messages(10, t0);
    let mut relay = GossipState::new(GossipConfig::default(), 0);
    let attacker = one();
    let mut results = Vec::new();
    for m in &msgs {
        let mut forged = m.clone();
        forged.data.push(0);
        results.push(relay.handle_message(attacker, &mut forged, t0, &[]));
    }
    // Malformed costs 25 points; the threshold is 100.
    assert_eq!(results[..3], vec![Err(GossipError::BadSignature); 3]);
    assert_eq!(results[3], Err(GossipError::SenderBanned));
    // The forged copies did not poison the real messages.
    for m in &msgs {
        assert!(relay.handle_message(one(), &mut m.clone(), t0, &[]).is_ok());
    }
}

#[test]
fn m1_signature_checks_of_one_sender_are_budgeted_and_duplicates_are_free() {
    let t0 = Instant::now();
    let config = GossipConfig {
        verify_budget: RateBudget::new(1.0, 3),
        ..GossipConfig::default()
    };
    let mut relay = GossipState::new(config, 0);
    let sender = one();
    let (_, msgs) = messages(5, t0);
    for m in &msgs[..3] {
        relay
            .handle_message(sender, &mut m.clone(), t0, &[])
            .unwrap();
    }
    assert_eq!(
        relay.handle_message(sender, &mut msgs[0].clone(), t0, &[]),
        Err(GossipError::Duplicate),
        "a duplicate needs no check"
    );
    assert_eq!(
        relay.check(sender, &msgs[3], t0).map(|_| ()),
        Err(GossipError::SenderThrottled)
    );
    // Another sender has its own budget; tokens come back with time.
    assert!(
        relay
            .handle_message(one(), &mut msgs[3].clone(), t0, &[])
            .is_ok()
    );
    let later = t0 + Duration::from_secs(1);
    assert!(
        relay
            .handle_message(sender, &mut msgs[4].clone(), later, &[])
            .is_ok()
    );
}

#[test]
fn m1_a_message_checked_on_two_channels_at_once_is_accepted_once() {
    let t0 = Instant::now();
    let (_, msgs) = messages(1, t0);
    let mut relay = GossipState::new(GossipConfig::default(), 0);
    let (a, b) = (one(), one());
    let mut m = msgs[0].clone();
    let first = relay.check(a, &m, t0).unwrap().verify(&m);
    let second = relay.check(b, &m, t0).unwrap().verify(&m);
    assert!(relay.accept(a, &mut m, first, t0, &[]).is_ok());
    assert_eq!(
        relay.accept(b, &mut m, second, t0, &[]),
        Err(GossipError::Duplicate)
    );
}

#[test]
fn test_flooding_origin_is_throttled_then_banned_then_forgiven() {
    let t0 = Instant::now();
    let origin = Keypair::generate().unwrap();
    let config = GossipConfig::default();
    let mut p = GossipState::new(config, 0);
    let mut relay = GossipState::new(config, 0);
    let from = origin.peer_id();
    let mut results = Vec::new();
    for _ in 0..200 {
        let (mut m, _) = p.publish(&origin, "t", vec![], t0, &[]).unwrap();
        results.push(relay.handle_message(from, &mut m, t0, &[]));
    }
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(accepted, 100, "the burst");
    assert!(results.contains(&Err(GossipError::Throttled)));
    // 2 points per message over budget: the 50th reaches 100.
    assert_eq!(results.get(149), Some(&Err(GossipError::OriginBanned)));
    assert!(relay.is_banned(&from, t0));
    let later = t0 + Duration::from_secs(601);
    relay.handle_timeout(later);
    assert!(!relay.is_banned(&from, later));
    let (mut m, _) = p.publish(&origin, "t", vec![], later, &[]).unwrap();
    assert!(relay.handle_message(from, &mut m, later, &[]).is_ok());
}

#[test]
fn test_relay_to_a_peer_stays_within_its_relay_budget() {
    let t0 = Instant::now();
    // (The sender's own budget of checks is tested above.)
    let config = GossipConfig {
        verify_budget: RateBudget::UNLIMITED,
        ..GossipConfig::default()
    };
    let mut relay = GossipState::new(config, 0);
    let from = one();
    let honest = ids(1);
    // A flood of many origins, each within its own budget.
    let mut forwarded = 0;
    for _ in 0..1000 {
        let origin = Keypair::generate().unwrap();
        let (mut m, _) = GossipState::new(config, 0)
            .publish(&origin, "t", vec![], t0, &[])
            .unwrap();
        let targets = relay.handle_message(from, &mut m, t0, &honest).unwrap();
        forwarded += targets.len();
    }
    assert_eq!(forwarded, config.relay_budget.burst as usize, "the burst");
    let default = GossipConfig::default();
    assert!(default.relay_budget.burst <= BUDGET.burst);
    assert!(default.relay_budget.per_second <= BUDGET.per_second);
    assert_eq!(
        default.verify_budget, default.relay_budget,
        "honest senders fit"
    );
    // Tokens come back with time.
    let later = t0 + Duration::from_secs(1);
    let origin = Keypair::generate().unwrap();
    let (mut m, _) = GossipState::new(config, 0)
        .publish(&origin, "t", vec![], later, &[])
        .unwrap();
    assert_eq!(
        relay.handle_message(from, &mut m, later, &honest),
        Ok(honest)
    );
}

#[test]
fn test_seen_capacity_and_origin_table_evict_oldest() {
    let t0 = Instant::now();
    let origin = Keypair::generate().unwrap();
    let config = GossipConfig {
        seen_capacity: 3,
        max_origins: 2,
        ..GossipConfig::default()
    };
    let mut p = GossipState::new(config, 0);
    for _ in 0..5 {
        p.publish(&origin, "t", vec![], t0, &[]).unwrap();
    }
    assert_eq!(p.seen_len(), 3);
    for _ in 0..4 {
        let (_, msgs) = messages(1, t0);
        p.handle_message(one(), &mut msgs[0].clone(), t0, &[])
            .unwrap();
    }
    assert_eq!(p.origins_len(), 2);
}

#[test]
fn the_seen_set_gives_back_a_floods_memory_once_its_ids_expire() {
    let t0 = Instant::now();
    let origin = Keypair::generate().unwrap();
    let mut p = GossipState::new(GossipConfig::default(), 1);
    for i in 0..5_000u32 {
        p.publish(&origin, "t", i.to_le_bytes().to_vec(), t0, &[])
            .unwrap();
    }
    assert_eq!(p.seen_len(), 5_000);
    let (ids, queue) = p.seen_room();
    assert!(ids >= 5_000 && queue >= 5_000);
    // Nothing expired yet: the room stays.
    p.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(p.seen_room(), (ids, queue));
    p.handle_timeout(t0 + GossipConfig::default().seen_ttl);
    assert_eq!(p.seen_len(), 0);
    let (ids, queue) = p.seen_room();
    assert!(ids < 1_024 && queue < 1_024, "room kept: {ids}, {queue}");
}
