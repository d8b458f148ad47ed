//! Tests of the sans-IO handshake: every bad input and its named error.

use super::*;

fn identity() -> StaticIdentity {
    StaticIdentity::generate(Keypair::generate().unwrap()).unwrap()
}

/// Moves bytes between the two machines until both are done or one fails.
/// Returns the first error with the side that raised it.
fn run(i: &mut Handshake, r: &mut Handshake) -> Result<(), (&'static str, HandshakeError)> {
    for _ in 0..10 {
        let to_r = i.take_output();
        if !to_r.is_empty() {
            let n = r.read_input(&to_r).map_err(|e| ("responder", e))?;
            assert_eq!(n, to_r.len());
        }
        let to_i = r.take_output();
        if !to_i.is_empty() {
            let n = i.read_input(&to_i).map_err(|e| ("initiator", e))?;
            assert_eq!(n, to_i.len());
        }
        if i.is_finished() && r.is_finished() {
            return Ok(());
        }
    }
    panic!("handshake did not converge");
}

fn xx_pair(suite: Suite) -> (StaticIdentity, StaticIdentity, Handshake, Handshake) {
    let (a, b) = (identity(), identity());
    let i = Handshake::xx_initiator(&a, suite, Some(b.peer_id())).unwrap();
    let r = Handshake::responder(&b);
    (a, b, i, r)
}

#[test]
fn xx_completes_with_both_suites_and_keys_match() {
    for suite in Suite::ALL {
        let (a, b, mut i, mut r) = xx_pair(suite);
        run(&mut i, &mut r).unwrap();
        let mut ei = i.finish().unwrap();
        let mut er = r.finish().unwrap();
        assert_eq!(ei.remote, b.peer_id());
        assert_eq!(er.remote, a.peer_id());
        assert_eq!(&ei.remote_static, b.static_public());
        assert_eq!(er.suite, suite);
        assert_eq!(er.pattern, Pattern::Xx);
        let mut msg = b"ping".to_vec();
        let tag = ei.send.seal_in_place(&mut msg).unwrap();
        msg.extend_from_slice(&tag);
        assert_eq!(er.recv.open_in_place(&mut msg).unwrap(), b"ping");
        let mut msg = b"pong".to_vec();
        let tag = er.send.seal_in_place(&mut msg).unwrap();
        msg.extend_from_slice(&tag);
        assert_eq!(ei.recv.open_in_place(&mut msg).unwrap(), b"pong");
    }
}

#[test]
fn ik_completes_with_key_confirmation() {
    for suite in Suite::ALL {
        let (a, b) = (identity(), identity());
        let mut i = Handshake::ik_initiator(&a, suite, b.peer_id(), b.static_public()).unwrap();
        let mut r = Handshake::responder(&b);
        r.read_input(&i.take_output()).unwrap();
        // The responder knows who dials but waits for the confirmation.
        assert!(!r.is_finished());
        i.read_input(&r.take_output()).unwrap();
        assert!(i.is_finished());
        r.read_input(&i.take_output()).unwrap();
        assert!(r.is_finished());
        let (ei, er) = (i.finish().unwrap(), r.finish().unwrap());
        assert_eq!(ei.remote, b.peer_id());
        assert_eq!(er.remote, a.peer_id());
        assert_eq!(er.pattern, Pattern::Ik);
        // Both sides count the confirmation as message 0.
        assert_eq!(ei.send.nonce(), 1);
        assert_eq!(er.recv.nonce(), 1);
    }
}

#[test]
fn byte_at_a_time_input_works_and_never_overreads() {
    let (_, _, mut i, mut r) = xx_pair(Suite::AesGcm);
    let mut to_r = i.take_output();
    for b in &to_r {
        assert_eq!(r.read_input(std::slice::from_ref(b)).unwrap(), 1);
    }
    let to_i = r.take_output();
    for b in &to_i {
        i.read_input(std::slice::from_ref(b)).unwrap();
    }
    to_r = i.take_output();
    // Transport bytes glued after message 3 are left for the caller.
    to_r.extend_from_slice(b"transport");
    assert_eq!(r.read_input(&to_r).unwrap(), to_r.len() - 9);
    assert!(r.is_finished());
}

#[test]
fn bytes_wanted_covers_a_preamble_and_the_next_length_prefix() {
    let (_, _, mut i, mut r) = xx_pair(Suite::ChaChaPoly);
    let msg1 = i.take_output();
    // Preamble and the frame's length prefix in one read, then the frame.
    assert_eq!(r.bytes_wanted(), PREAMBLE_LEN + LEN_PREFIX);
    let first = r.bytes_wanted();
    assert_eq!(r.read_input(&msg1[..first]).unwrap(), first);
    assert_eq!(r.bytes_wanted(), msg1.len() - first);
    assert_eq!(r.read_input(&msg1[first..]).unwrap(), msg1.len() - first);
    // The same on the initiator's side for the reply.
    let msg2 = r.take_output();
    assert_eq!(i.bytes_wanted(), PREAMBLE_LEN + LEN_PREFIX);
    let first = i.bytes_wanted();
    i.read_input(&msg2[..first]).unwrap();
    assert_eq!(i.bytes_wanted(), msg2.len() - first);
    i.read_input(&msg2[first..]).unwrap();
    r.read_input(&i.take_output()).unwrap();
    assert!(i.is_finished() && r.is_finished());
    assert_eq!((i.bytes_wanted(), r.bytes_wanted()), (0, 0));
}

#[test]
fn truncated_message_is_truncated() {
    let (_, _, mut i, mut r) = xx_pair(Suite::ChaChaPoly);
    let out = i.take_output();
    r.read_input(&out[..out.len() - 3]).unwrap();
    assert!(matches!(r.handle_eof(), Err(HandshakeError::Truncated)));
}

#[test]
fn oversized_length_is_frame_too_large() {
    let b = identity();
    let mut r = Handshake::responder(&b);
    let mut bytes = preamble::encode(VERSION, Pattern::Xx, Suite::AesGcm).to_vec();
    bytes.extend_from_slice(&[0xFF, 0xFF]);
    assert!(matches!(
        r.read_input(&bytes),
        Err(HandshakeError::FrameTooLarge {
            len: 65535,
            max: MAX_HANDSHAKE_MESSAGE
        })
    ));
    // Final: more input is refused.
    assert!(matches!(
        r.read_input(b"x"),
        Err(HandshakeError::OutOfOrder)
    ));
}

#[test]
fn garbage_is_not_a_handshake() {
    let mut r = Handshake::responder(&identity());
    assert!(matches!(
        r.read_input(b"GET / HTTP/1.1\r\n"),
        Err(HandshakeError::NotAHandshake)
    ));
}

#[test]
fn nonzero_flags_are_bad_preamble() {
    let mut r = Handshake::responder(&identity());
    let mut p = preamble::encode(VERSION, Pattern::Xx, Suite::AesGcm);
    p[7] = 1;
    assert!(matches!(r.read_input(&p), Err(HandshakeError::BadPreamble)));
}

#[test]
fn unknown_suite_is_refused_with_a_reply() {
    let mut r = Handshake::responder(&identity());
    let mut p = preamble::encode(VERSION, Pattern::Xx, Suite::AesGcm);
    p[6] = 9;
    assert!(matches!(
        r.read_input(&p),
        Err(HandshakeError::UnsupportedSuite(9))
    ));
    let reply = r.take_output();
    assert_eq!(reply.len(), PREAMBLE_LEN);
    assert_eq!(reply[7], 2);
}

#[test]
fn version_mismatch_is_named_on_both_sides() {
    let (a, b) = (identity(), identity());
    let mut i = Handshake::initiator(
        &a,
        Pattern::Xx,
        Suite::AesGcm,
        None,
        None,
        Overrides {
            version: 2,
            ephemeral: None,
        },
    )
    .unwrap();
    let mut r = Handshake::responder(&b);
    assert!(matches!(
        r.read_input(&i.take_output()),
        Err(HandshakeError::VersionMismatch { ours: 1, theirs: 2 })
    ));
    // The responder's reply says it refused the version.
    assert!(matches!(
        i.read_input(&r.take_output()),
        Err(HandshakeError::VersionMismatch { .. })
    ));
    // From a v1 initiator's point of view, a v2 reply is a mismatch.
    let mut i = Handshake::xx_initiator(&a, Suite::AesGcm, None).unwrap();
    let _ = i.take_output();
    let mut reply = preamble::encode(2, Pattern::Xx, Suite::AesGcm);
    reply[7] = 0;
    assert!(matches!(
        i.read_input(&reply),
        Err(HandshakeError::VersionMismatch { ours: 1, theirs: 2 })
    ));
}

#[test]
fn suite_downgrade_is_detected() {
    let (_, _, mut i, mut r) = xx_pair(Suite::AesGcm);
    let mut flight = i.take_output();
    // A man in the middle rewrites the suite to ChaChaPoly.
    flight[6] = Suite::ChaChaPoly.to_byte();
    r.read_input(&flight).unwrap();
    assert_eq!(r.suite(), Suite::ChaChaPoly);
    let reply = r.take_output();
    assert!(matches!(
        i.read_input(&reply),
        Err(HandshakeError::SuiteDowngrade {
            sent: Suite::AesGcm,
            seen: Suite::ChaChaPoly
        })
    ));
}

#[test]
fn suite_downgrade_with_forged_echo_still_fails_by_the_prologue() {
    let (_, _, mut i, mut r) = xx_pair(Suite::AesGcm);
    let mut flight = i.take_output();
    flight[6] = Suite::ChaChaPoly.to_byte();
    r.read_input(&flight).unwrap();
    let mut reply = r.take_output();
    // The attacker also rewrites the echo back: the prologues differ.
    reply[6] = Suite::AesGcm.to_byte();
    assert!(matches!(
        i.read_input(&reply),
        Err(HandshakeError::HandshakeDecrypt)
    ));
}

#[test]
fn wrong_expected_peer_is_peer_id_mismatch() {
    let (a, b, c) = (identity(), identity(), identity());
    let mut i = Handshake::xx_initiator(&a, Suite::AesGcm, Some(c.peer_id())).unwrap();
    let mut r = Handshake::responder(&b);
    let err = run(&mut i, &mut r).unwrap_err();
    match err {
        ("initiator", HandshakeError::PeerIdMismatch { expected, got }) => {
            assert_eq!(expected, c.peer_id());
            assert_eq!(got, b.peer_id());
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn with_payload(mut id: StaticIdentity, f: impl FnOnce(&mut Vec<u8>)) -> StaticIdentity {
    f(&mut id.payload);
    id
}

#[test]
fn bad_signature_is_named() {
    let a = identity();
    let b = with_payload(identity(), |p| p[100] ^= 0x40);
    let mut i = Handshake::xx_initiator(&a, Suite::ChaChaPoly, None).unwrap();
    let mut r = Handshake::responder(&b);
    assert!(matches!(
        run(&mut i, &mut r),
        Err(("initiator", HandshakeError::BadSignature))
    ));
    // And from the initiator to the responder.
    let a = with_payload(identity(), |p| p[64] ^= 1);
    let mut i = Handshake::xx_initiator(&a, Suite::ChaChaPoly, None).unwrap();
    let mut r = Handshake::responder(&identity());
    assert!(matches!(
        run(&mut i, &mut r),
        Err(("responder", HandshakeError::BadSignature))
    ));
}

#[test]
fn payload_for_another_static_key_is_mismatch() {
    // A validly signed payload, but for another Noise static key: someone
    // replaying a peer's identity payload over their own key.
    let victim = identity();
    let a = identity();
    let forged = with_payload(a.clone(), |p| *p = victim.payload.clone());
    let mut i = Handshake::xx_initiator(&forged, Suite::AesGcm, None).unwrap();
    let mut r = Handshake::responder(&identity());
    assert!(matches!(
        run(&mut i, &mut r),
        Err(("responder", HandshakeError::StaticKeyMismatch))
    ));
}

#[test]
fn a_payload_checked_before_is_not_checked_again_but_still_bound() {
    let (a, b) = (identity(), identity());
    let known = Arc::new(KnownPeers::new(8));
    let mut i = Handshake::xx_initiator(&a, Suite::ChaChaPoly, None).unwrap();
    let mut r = Handshake::responder(&b).with_known_peers(known.clone());
    run(&mut i, &mut r).unwrap();
    assert!(known.payload_checked(&a.peer_id(), &crate::known::payload_digest(&a.payload)));
    // The same peer again: the handshake completes from the cache.
    let mut i = Handshake::xx_initiator(&a, Suite::ChaChaPoly, None).unwrap();
    let mut r = Handshake::responder(&b).with_known_peers(known.clone());
    run(&mut i, &mut r).unwrap();
    assert_eq!(r.finish().unwrap().remote, a.peer_id());
    // Someone replaying a's (cached) payload over their own static key.
    let forged = with_payload(identity(), |p| *p = a.payload.clone());
    let mut i = Handshake::xx_initiator(&forged, Suite::ChaChaPoly, None).unwrap();
    let mut r = Handshake::responder(&b).with_known_peers(known);
    assert!(matches!(
        run(&mut i, &mut r),
        Err(("responder", HandshakeError::StaticKeyMismatch))
    ));
}

#[test]
fn short_payload_is_bad_payload() {
    let b = with_payload(identity(), |p| p.truncate(10));
    let mut i = Handshake::xx_initiator(&identity(), Suite::AesGcm, None).unwrap();
    let mut r = Handshake::responder(&b);
    assert!(matches!(
        run(&mut i, &mut r),
        Err(("initiator", HandshakeError::BadPayload(10)))
    ));
}

#[test]
fn xx_message_one_with_payload_is_malformed() {
    let b = identity();
    let pre = preamble::encode(VERSION, Pattern::Xx, Suite::AesGcm);
    let other = identity();
    let mut noise = builder(Pattern::Xx, Suite::AesGcm, &other.static_key, None)
        .unwrap()
        .prologue(&pre)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut msg = [0u8; 128];
    let n = noise.write_message(b"smuggled", &mut msg).unwrap();
    let mut bytes = pre.to_vec();
    push_frame(&mut bytes, &msg[..n]).unwrap();
    let mut r = Handshake::responder(&b);
    assert!(matches!(
        r.read_input(&bytes),
        Err(HandshakeError::MalformedMessage)
    ));
}

#[test]
fn replayed_xx_first_message_never_completes() {
    // Record a whole honest session.
    let (a, b) = (identity(), identity());
    let mut i = Handshake::xx_initiator(&a, Suite::AesGcm, None).unwrap();
    let mut r = Handshake::responder(&b);
    let msg1 = i.take_output();
    r.read_input(&msg1).unwrap();
    i.read_input(&r.take_output()).unwrap();
    let msg3 = i.take_output();
    r.read_input(&msg3).unwrap();
    assert!(r.is_finished());

    // Replay message 1 to a fresh responder with the same keys: it answers
    // (XX message 1 carries no authentication), but the replayer lacks the
    // ephemeral secret, so the best it can send is the recorded message 3,
    // which the new ephemeral keys reject.
    let mut r2 = Handshake::responder(&b);
    r2.read_input(&msg1).unwrap();
    assert!(!r2.take_output().is_empty());
    assert!(matches!(
        r2.read_input(&msg3),
        Err(HandshakeError::HandshakeDecrypt)
    ));
    assert!(!r2.is_finished());
}

#[test]
fn replayed_ik_first_message_never_completes() {
    let (a, b) = (identity(), identity());
    let mut i =
        Handshake::ik_initiator(&a, Suite::ChaChaPoly, b.peer_id(), b.static_public()).unwrap();
    let mut r = Handshake::responder(&b);
    let msg1 = i.take_output();
    r.read_input(&msg1).unwrap();
    i.read_input(&r.take_output()).unwrap();
    let confirm = i.take_output();
    r.read_input(&confirm).unwrap();
    assert!(r.is_finished());

    // IK message 1 decrypts fine on replay, but without the confirmation
    // (which needs the ephemeral secret) the responder never finishes.
    let mut r2 = Handshake::responder(&b);
    r2.read_input(&msg1).unwrap();
    assert!(!r2.is_finished());
    assert!(matches!(
        r2.read_input(&confirm),
        Err(HandshakeError::HandshakeDecrypt)
    ));
    assert!(!r2.is_finished());
}

#[test]
fn ik_to_a_rotated_static_key_is_rejected() {
    let (a, b) = (identity(), identity());
    let old_static = *b.static_public();
    let b_rotated = StaticIdentity::generate(b.keypair().clone()).unwrap();
    let mut i = Handshake::ik_initiator(&a, Suite::AesGcm, b.peer_id(), &old_static).unwrap();
    let mut r = Handshake::responder(&b_rotated);
    assert!(matches!(
        r.read_input(&i.take_output()),
        Err(HandshakeError::HandshakeDecrypt)
    ));
    assert!(matches!(
        i.read_input(&r.take_output()),
        Err(HandshakeError::IkRejected)
    ));
}

#[test]
fn tampered_handshake_message_is_handshake_decrypt() {
    let (_, _, mut i, mut r) = xx_pair(Suite::ChaChaPoly);
    r.read_input(&i.take_output()).unwrap();
    let mut reply = r.take_output();
    let last = reply.len() - 1;
    reply[last] ^= 1;
    assert!(matches!(
        i.read_input(&reply),
        Err(HandshakeError::HandshakeDecrypt)
    ));
}

#[test]
fn finish_before_done_is_out_of_order() {
    let (_, _, i, _) = xx_pair(Suite::AesGcm);
    assert!(matches!(i.finish(), Err(HandshakeError::OutOfOrder)));
}

#[test]
fn early_data_reaches_the_peer_in_both_patterns() {
    for suite in Suite::ALL {
        let (a, b) = (identity(), identity());
        let xx = Handshake::xx_initiator(&a, suite, Some(b.peer_id())).unwrap();
        let ik = Handshake::ik_initiator(&a, suite, b.peer_id(), b.static_public()).unwrap();
        for i in [xx, ik] {
            let mut i = i.with_early_data(b"from the dialer".to_vec()).unwrap();
            let mut r = Handshake::responder(&b)
                .with_early_data(vec![7; MAX_EARLY_DATA])
                .unwrap();
            run(&mut i, &mut r).unwrap();
            let (ei, er) = (i.finish().unwrap(), r.finish().unwrap());
            assert_eq!(ei.early_data, vec![7; MAX_EARLY_DATA]);
            assert_eq!(er.early_data, b"from the dialer");
        }
    }
}

#[test]
fn no_early_data_is_an_empty_one() {
    let (_, _, mut i, mut r) = xx_pair(Suite::AesGcm);
    run(&mut i, &mut r).unwrap();
    assert!(i.finish().unwrap().early_data.is_empty());
    assert!(r.finish().unwrap().early_data.is_empty());
}

#[test]
fn early_data_over_the_limit_is_named_on_both_sides() {
    let (_, _, i, _) = xx_pair(Suite::AesGcm);
    assert!(matches!(
        i.with_early_data(vec![0; MAX_EARLY_DATA + 1]),
        Err(HandshakeError::EarlyDataTooLarge { len, max: MAX_EARLY_DATA }) if len == MAX_EARLY_DATA + 1
    ));
    // A peer that sends more than the limit anyway.
    let a = with_payload(identity(), |p| p.resize(p.len() + MAX_EARLY_DATA + 1, 1));
    let mut i = Handshake::xx_initiator(&a, Suite::AesGcm, None).unwrap();
    let mut r = Handshake::responder(&identity());
    assert!(matches!(
        run(&mut i, &mut r),
        Err(("responder", HandshakeError::EarlyDataTooLarge { .. }))
    ));
}

#[test]
fn early_data_once_its_message_is_written_is_out_of_order() {
    let (_, _, mut i, r) = xx_pair(Suite::AesGcm);
    let mut r = r.with_early_data(b"ok".to_vec()).unwrap();
    r.read_input(&i.take_output()).unwrap();
    assert!(matches!(
        r.with_early_data(b"late".to_vec()),
        Err(HandshakeError::OutOfOrder)
    ));
}

#[test]
fn early_data_in_a_replayable_ik_message_one_is_malformed() {
    let b = identity();
    let a = with_payload(identity(), |p| p.push(1));
    let mut i = Handshake::ik_initiator(&a, Suite::AesGcm, b.peer_id(), b.static_public()).unwrap();
    let mut r = Handshake::responder(&b);
    assert!(matches!(
        run(&mut i, &mut r),
        Err(("responder", HandshakeError::MalformedMessage))
    ));
}

/// Early data that names the peer it was chosen for (`-` for none).
fn naming_the_peer() -> EarlyData {
    EarlyData::chosen(|peer| match peer {
        Some(peer) => peer.to_string().into_bytes(),
        None => b"-".to_vec(),
    })
}

#[test]
fn chosen_early_data_is_given_the_authenticated_peer() {
    for suite in Suite::ALL {
        let (a, b) = (identity(), identity());
        let xx = Handshake::xx_initiator(&a, suite, None).unwrap();
        let ik = Handshake::ik_initiator(&a, suite, b.peer_id(), b.static_public()).unwrap();
        for (i, responder_knows) in [(xx, false), (ik, true)] {
            let mut i = i.with_early_data(naming_the_peer()).unwrap();
            let mut r = Handshake::responder(&b)
                .with_early_data(naming_the_peer())
                .unwrap();
            run(&mut i, &mut r).unwrap();
            let (ei, er) = (i.finish().unwrap(), r.finish().unwrap());
            // The initiator always knows the responder when it chooses.
            assert_eq!(er.early_data, b.peer_id().to_string().into_bytes());
            // The responder knows the dialer only over IK.
            let from_responder = if responder_knows {
                a.peer_id().to_string().into_bytes()
            } else {
                b"-".to_vec()
            };
            assert_eq!(ei.early_data, from_responder);
        }
    }
}

#[test]
fn chosen_early_data_over_the_limit_fails_the_chooser() {
    let too_much = || EarlyData::chosen(|_| vec![0; MAX_EARLY_DATA + 1]);
    let (_, _, i, r) = xx_pair(Suite::AesGcm);
    let (mut i, mut r) = (i.with_early_data(too_much()).unwrap(), r);
    assert!(matches!(
        run(&mut i, &mut r),
        Err(("initiator", HandshakeError::EarlyDataTooLarge { len, max: MAX_EARLY_DATA })) if len == MAX_EARLY_DATA + 1
    ));
    let (_, _, mut i, r) = xx_pair(Suite::AesGcm);
    let mut r = r.with_early_data(too_much()).unwrap();
    assert!(matches!(
        run(&mut i, &mut r),
        Err(("responder", HandshakeError::EarlyDataTooLarge { .. }))
    ));
}
