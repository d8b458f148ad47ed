//! Property tests of the task, resource and health messages: every value
//! within the limits round-trips through the
//! wire encoding within its `MAX_BYTES`, and arbitrary peer bytes never panic
//! the decoders or the cores they feed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Instant;

use knotwork_core::Keypair;
use knotwork_tasks::health::{
    HealthLevel, HealthQuery, HealthStatus, HealthSubscribe, HealthUpdate, MAX_REASON_LEN,
    MAX_REASONS,
};
use knotwork_tasks::resource::{ResourceReport, ResourceTable};
use knotwork_tasks::task::{
    MAX_KIND_LEN, MAX_PAYLOAD_LEN, Placement, Scheduler, Task, TaskCancel, TaskConfig, TaskId,
    TaskReply, TaskRequest,
};
use knotwork_wire::{Message, decode, encode};
use proptest::prelude::*;

#[path = "../../node/tests/common/mod.rs"]
mod common;
use common::{never_panics, roundtrip};

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-z0-9/ ._-]{{0,{max}}}")).unwrap()
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn task_messages_roundtrip(id in any::<u64>(), attempt in any::<u32>(), kind in text(MAX_KIND_LEN), len in 0..=MAX_PAYLOAD_LEN, fill in any::<u8>(), err in text(256)) {
        let payload = vec![fill; len];
        roundtrip(&TaskRequest { id, attempt, kind, payload: payload.clone() });
        roundtrip(&TaskReply::Done(payload));
        roundtrip(&TaskReply::Failed(err));
        roundtrip(&TaskReply::NoHandler);
        roundtrip(&TaskReply::Busy);
        roundtrip(&TaskCancel { id, attempt });
    }

    #[test]
    fn resource_report_roundtrips(cpu in any::<f32>(), used in any::<u64>(), total in any::<u64>(), load in any::<f32>(), cores in any::<u16>()) {
        let r = ResourceReport { cpu_percent: cpu, mem_used: used, mem_total: total, load1: load, cores };
        let bytes = encode(&r).unwrap();
        assert!(bytes.len() <= ResourceReport::MAX_BYTES);
        let back = decode::<ResourceReport>(&bytes).unwrap();
        // NaN != NaN: compare the bits.
        assert_eq!(back.cpu_percent.to_bits(), cpu.to_bits());
        assert_eq!(back.load1.to_bits(), load.to_bits());
        assert_eq!((back.mem_used, back.mem_total, back.cores), (used, total, cores));
    }

    #[test]
    fn health_messages_roundtrip(level in 0..3u8, reasons in proptest::collection::vec(text(MAX_REASON_LEN), 0..=MAX_REASONS)) {
        let level = [HealthLevel::Ok, HealthLevel::Degraded, HealthLevel::Failing][usize::from(level)];
        let status = HealthStatus { level, reasons };
        roundtrip(&status);
        roundtrip(&HealthQuery);
        roundtrip(&HealthSubscribe);
        roundtrip(&HealthUpdate { status });
    }

    #[test]
    fn arbitrary_bytes_never_panic_decoders_or_cores(bytes in bytes(4096)) {
        let now = Instant::now();
        let peer = Keypair::generate().unwrap().peer_id();
        if let Some(r) = never_panics::<ResourceReport>(&bytes) {
            let _ = ResourceTable::default().insert(peer, r, now);
            let _ = r.busy_score();
        }
        if let Some(reply) = never_panics::<TaskReply>(&bytes) {
            let mut s = Scheduler::new(TaskConfig::default());
            s.peer_up(peer);
            s.submit(Task::new("k", vec![]).with_id(TaskId(1)), Placement::BestByResources, now).unwrap();
            s.poll_dispatch(now, &|_| 0.0).unwrap();
            s.handle_reply(peer, TaskId(1), reply, now);
            while s.poll_result().is_some() {}
        }
        never_panics::<TaskRequest>(&bytes);
        never_panics::<TaskCancel>(&bytes);
        never_panics::<HealthStatus>(&bytes);
        never_panics::<HealthQuery>(&bytes);
        never_panics::<HealthSubscribe>(&bytes);
        if let Some(update) = never_panics::<HealthUpdate>(&bytes) {
            let _ = update.status.validate();
        }
    }
}
