//! Arbitrary bytes into the decoders of the node's application protocols
//! (task, resource, health with its push, gossip with its IHAVE and IWANT), the first
//! byte choosing the type, and every decoded message into the core that would receive it.
//!
//! Checks: nothing panics; a decoded message re-encodes and decodes to
//! itself; the cores (gossip seen-cache, rate meters and repair budgets,
//! resource table, task scheduler) accept or refuse it and stay usable.
#![no_main]

use std::time::{Duration, Instant};

use knotwork_core::PeerId;
use knotwork_gossip::{GossipConfig, GossipMessage, GossipState, IHave, IWant};
use knotwork_tasks::health::{
    HealthConfig, HealthPush, HealthQuery, HealthStatus, HealthSubscribe, HealthUpdate,
};
use knotwork_tasks::resource::{ResourceReport, ResourceTable};
use knotwork_tasks::task::{
    Placement, Scheduler, Task, TaskCancel, TaskConfig, TaskId, TaskReply, TaskRequest,
};
use knotwork_wire::{Message, decode, encode};
use libfuzzer_sys::fuzz_target;

fn peer(n: u8) -> PeerId {
    PeerId::from_bytes(&[n; 32]).expect("32 bytes")
}

fn roundtrip<M: Message + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let m = decode::<M>(bytes).ok()?;
    let again = encode(&m).expect("a decoded message re-encodes");
    assert_eq!(decode::<M>(&again).expect("re-encoded bytes decode"), m);
    Some(m)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let now = Instant::now();
    match which % 11 {
        0 => {
            if let Some(mut m) = roundtrip::<GossipMessage>(bytes) {
                let mut g = GossipState::new(GossipConfig::default(), 0);
                let _ = g.handle_message(peer(1), &mut m, now, &[peer(1), peer(2)]);
                let _ = g.handle_message(peer(2), &mut m, now, &[peer(1), peer(2)]);
                if let Some(t) = g.poll_timeout() {
                    g.handle_timeout(t);
                }
            }
        }
        1 => {
            // Floats: compare bit patterns through the encoding, not values.
            if let Ok(r) = decode::<ResourceReport>(bytes) {
                let again =
                    decode::<ResourceReport>(&encode(&r).expect("re-encodes")).expect("decodes");
                assert_eq!(again.cpu_percent.to_bits(), r.cpu_percent.to_bits());
                let mut t = ResourceTable::default();
                if t.insert(peer(1), r, now).is_ok() {
                    let got = t.get(&peer(1), now + Duration::from_secs(1)).expect("kept");
                    assert!(got.report.busy_score().is_finite());
                }
            }
        }
        2 => {
            if let Some(reply) = roundtrip::<TaskReply>(bytes) {
                let mut s = Scheduler::new(TaskConfig::default());
                s.peer_up(peer(1));
                s.submit(
                    Task::new("k", vec![]).with_id(TaskId(1)),
                    Placement::BestByResources,
                    now,
                )
                .expect("valid task");
                s.poll_dispatch(now, &|_| 0.0).expect("placed");
                s.handle_reply(peer(1), TaskId(1), reply, now);
                while s.poll_result().is_some() {}
                while s.poll_dispatch(now, &|_| 0.0).is_some() {}
            }
        }
        3 => {
            roundtrip::<TaskRequest>(bytes);
        }
        4 => {
            roundtrip::<TaskCancel>(bytes);
        }
        5 => {
            roundtrip::<HealthStatus>(bytes);
        }
        6 => {
            roundtrip::<HealthQuery>(bytes);
        }
        7 => {
            roundtrip::<HealthSubscribe>(bytes);
        }
        9 => {
            if let Some(ihave) = roundtrip::<IHave>(bytes) {
                let mut g = GossipState::new(GossipConfig::default(), 0);
                if let Ok(answer) = g.on_ihave(peer(1), &ihave, now) {
                    // Nothing kept: nothing to push back.
                    assert!(answer.push.is_empty());
                    if let Some(iwant) = answer.want {
                        assert!(iwant.ids.iter().all(|id| ihave.ids.contains(id)));
                        // Asked of one peer, not asked again of another.
                        let again = g.on_ihave(peer(2), &ihave, now).map(|a| a.want);
                        assert_eq!(again, Ok(None));
                    }
                }
                let _ = g.repair_tick(now, &[peer(1)]);
            }
        }
        10 => {
            if let Some(iwant) = roundtrip::<IWant>(bytes) {
                let mut g = GossipState::new(GossipConfig::default(), 0);
                // Nothing kept: nothing sent, whatever is asked.
                assert_eq!(
                    g.on_iwant(peer(1), &iwant, now)
                        .map(|m| m.len())
                        .unwrap_or(0),
                    0
                );
            }
        }
        _ => {
            // A received status pushed on again: the push cuts it to the
            // limits, and leaves a valid one as it is.
            if let Some(update) = roundtrip::<HealthUpdate>(bytes) {
                let mut push = HealthPush::new(&HealthConfig::default());
                push.subscribe(peer(1)).expect("room");
                let pushed = push.on_check(&update.status, now).expect("a change");
                assert_eq!(pushed.status.validate(), Ok(()));
                if update.status.validate().is_ok() {
                    assert_eq!(pushed, update);
                }
            }
        }
    }
});
