//! [`Metrics`]: the node's counters, gauges and histograms, in the
//! Prometheus text format.
//!
//! Every node owns one [`Metrics`] (see [`crate::NodeHandle::metrics`]). The
//! runtime records into it: the node counts each [`NodeEvent`] as it emits
//! it (connections, disconnections, open channels), so a scrape after an
//! event includes it; channels count messages and bytes
//! per message type and feed every ping round trip into the RTT histogram
//! (so it is sampled at the ping interval, `[ping] interval_ms` in
//! `knot.toml`); the session layer counts handshakes and bans by reason.
//! Services register their own families with [`Metrics::register`] (tasks,
//! gossip, the DHT, NAT traversal each count their own work) and they are
//! rendered with the rest, under the same `knot_` prefix. [`Metrics::encode`] renders the
//! whole registry (prometheus-client's text encoder, OpenMetrics flavour,
//! which Prometheus scrapes as is); serve it from the application's own HTTP
//! endpoint (`knot run --metrics` has a minimal one).
//!
//! Label values are drawn from small fixed sets (direction, transport, who
//! closed, outcome, the `NAME`s of message types this node registered),
//! never from peer-supplied text, so a peer cannot grow the number of series:
//! frames of ids without a registered type count as type `unknown`.
//!
//! # Per-type message counters
//! Frames are counted on the channel's hot paths, so the counting takes no
//! lock and allocates nothing. A type is registered when a channel
//! subscribes to it or sends it (registering a known type is two atomic
//! loads): it gets a slot in a fixed open-addressed table
//! ([`MAX_MESSAGE_TYPES`] slots, keyed by message id, claimed by
//! compare-and-swap) holding its four counters, taken from the registry's
//! families once. The reader and the writer count frames in a local
//! `Tally` (a compare and two additions per frame) and add it to the
//! table's counters at the end of each burst or batch, or when the type
//! changes. Inbound ids are only looked up, never inserted, so a peer
//! cannot fill the table; a type registered after the table filled counts
//! as `unknown`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use knotwork_core::PeerAddr;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::error::{CloseReason, DisconnectReason, NodeError};
use crate::node::{NodeEvent, lock};
use crate::registry::SessionKind;

/// Message types counted under their own `type` label, at most; types
/// registered beyond these count as `unknown`.
pub const MAX_MESSAGE_TYPES: usize = 128;
/// The label set of every knotwork metric family: fixed names and values
/// from small fixed sets.
pub type Labels = Vec<(&'static str, &'static str)>;

/// The `prometheus_client` version the registry uses, for services that
/// register metric families of their own.
pub use prometheus_client;

struct Inner {
    registry: Mutex<Registry>,
    connections: Family<Labels, Counter>,
    disconnections: Family<Labels, Counter>,
    peers: Gauge,
    handshakes: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    bytes_in: Counter,
    bytes_out: Counter,
    frames_in: Counter,
    types: MessageTypes,
    bans: Family<Labels, Counter>,
    rtt: Histogram,
}

/// The node's metrics; cheap to clone. See the module docs.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the runtime's metrics registered at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("knot");
        let connections = Family::<Labels, Counter>::default();
        registry.register(
            "connections",
            "Channels opened, by direction and transport",
            connections.clone(),
        );
        let disconnections = Family::<Labels, Counter>::default();
        registry.register(
            "disconnections",
            "Channels closed, by who closed them",
            disconnections.clone(),
        );
        let peers = Gauge::default();
        registry.register("peers", "Open channels", peers.clone());
        let handshakes = Family::<Labels, Counter>::default();
        registry.register(
            "handshakes",
            "Handshakes and version exchanges, by direction and result",
            handshakes.clone(),
        );
        let dropped = Family::<Labels, Counter>::default();
        registry.register(
            "connections_dropped",
            "Inbound connections dropped before their handshake, by reason: banned host, over the start rate, evicted from a full pending table, silent past the first-byte deadline",
            dropped.clone(),
        );
        let bytes_in = Counter::default();
        registry.register(
            "received_bytes",
            "Frame bytes received (after decryption)",
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register(
            "sent_bytes",
            "Frame bytes sent (before encryption)",
            bytes_out.clone(),
        );
        let frames_in = Counter::default();
        registry.register("received_frames", "Frames received", frames_in.clone());
        let messages = Family::<Labels, Counter>::default();
        registry.register(
            "messages",
            "Messages received and sent, by direction and type",
            messages.clone(),
        );
        let message_bytes = Family::<Labels, Counter>::default();
        registry.register(
            "message_bytes",
            "Message payload bytes, by direction and type",
            message_bytes.clone(),
        );
        let types = MessageTypes::new(messages, message_bytes);
        let bans = Family::<Labels, Counter>::default();
        registry.register(
            "bans",
            "Peers banned for misbehaviour, by the offence that did it",
            bans.clone(),
        );
        let rtt = Histogram::new(exponential_buckets(0.000_125, 2.0, 16));
        registry.register(
            "rtt_seconds",
            "Ping round-trip times, one sample per pong",
            rtt.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                connections,
                disconnections,
                peers,
                handshakes,
                dropped,
                bytes_in,
                bytes_out,
                frames_in,
                types,
                bans,
                rtt,
            }),
        }
    }

    /// The registry in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &lock(&self.inner.registry));
        out
    }

    /// Registers a service's metric `name` (rendered as `knot_<name>`,
    /// with `_total` added to counters) with its `help` text. Register once,
    /// at setup; label values must come from small fixed sets, never from
    /// peer input.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        lock(&self.inner.registry).register(name, help, metric);
    }

    /// Counts `frames` frames of message id `id` carrying `bytes` payload
    /// bytes, in direction `direction`.
    fn add_frames(&self, direction: Direction, id: u32, frames: u64, bytes: u64) {
        let types = &self.inner.types;
        let c = types.find(id).unwrap_or(&types.unknown);
        match direction {
            Direction::In => {
                self.inner.frames_in.inc_by(frames);
                self.inner.bytes_in.inc_by(bytes);
                c.received.inc_by(frames);
                c.received_bytes.inc_by(bytes);
            }
            Direction::Out => {
                c.sent.inc_by(frames);
                c.sent_bytes.inc_by(bytes);
            }
        }
    }

    /// Registers message type `name` (id `id`), so frames of it are counted
    /// under its name.
    pub(crate) fn register_type(&self, id: u32, name: &'static str) {
        self.inner.types.insert(id, name);
    }

    /// Records one ping round-trip time.
    pub(crate) fn rtt(&self, rtt: Duration) {
        self.inner.rtt.observe(rtt.as_secs_f64());
    }

    /// Counts a ban for misbehaviour `reason` (see [`Offence::label`](crate::meter::Offence::label)).
    pub(crate) fn ban(&self, reason: &'static str) {
        self.inner
            .bans
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    pub(crate) fn bytes_out(&self, len: usize) {
        self.inner.bytes_out.inc_by(len as u64);
    }

    /// Counts a handshake of `direction` that succeeded or failed with `failure`.
    pub(crate) fn handshake(&self, direction: &'static str, failure: Option<&NodeError>) {
        let result = match failure {
            None => "ok",
            Some(
                NodeError::HandshakeTimeout
                | NodeError::Handshake(knotwork_crypto_handshake::HandshakeError::Timeout),
            ) => "timeout",
            // A reachability dial-back: the handshake worked, then it closed.
            Some(NodeError::Refused(DisconnectReason::Probe)) => "probe",
            Some(NodeError::Refused(_)) => "refused",
            Some(NodeError::Banned(_)) => "banned",
            Some(NodeError::Handshake(_)) => "noise",
            Some(NodeError::WrongPeer { .. }) => "wrong_peer",
            Some(NodeError::AlreadyConnected(_)) => "duplicate",
            Some(
                NodeError::UnexpectedFirstFrame(_)
                | NodeError::NoVersion
                | NodeError::TrailingHello(_)
                | NodeError::BadVersionAddr(_)
                | NodeError::Wire(_),
            ) => "protocol",
            Some(NodeError::Transport(_) | NodeError::Io(_)) => "io",
            Some(_) => "other",
        };
        self.inner
            .handshakes
            .get_or_create(&vec![("direction", direction), ("result", result)])
            .inc();
    }

    /// Counts an inbound connection dropped before its handshake for
    /// `reason` (`banned`, `rate`, `evicted`, `first_byte`).
    pub(crate) fn dropped(&self, reason: &'static str) {
        self.inner
            .dropped
            .get_or_create(&vec![("reason", reason)])
            .inc();
    }

    /// Counts `event`; called by the node as it emits it.
    pub(crate) fn event(&self, event: &NodeEvent) {
        match event {
            NodeEvent::Connected { addr, session, .. } => {
                let direction = match session {
                    SessionKind::Inbound => "inbound",
                    SessionKind::Outbound | SessionKind::Manual | SessionKind::Seed => "outbound",
                };
                let transport = match addr {
                    PeerAddr::Tcp(_) => "tcp",
                    PeerAddr::Quic(_) => "quic",
                    PeerAddr::Ble(_) => "ble",
                    PeerAddr::Mem(_) => "mem",
                    PeerAddr::Relay(_) => "relay",
                    _ => "other",
                };
                self.inner
                    .connections
                    .get_or_create(&vec![("direction", direction), ("transport", transport)])
                    .inc();
                self.inner.peers.inc();
            }
            NodeEvent::Disconnected { reason, .. } => {
                let by = match reason {
                    CloseReason::Local(_) => "local",
                    CloseReason::Remote(_) => "remote",
                    CloseReason::Eof => "eof",
                    CloseReason::Io(_) => "io",
                };
                self.inner
                    .disconnections
                    .get_or_create(&vec![("closed_by", by)])
                    .inc();
                self.inner.peers.dec();
            }
            // Counted with its reason where the ban is made.
            NodeEvent::Banned { .. } => {}
        }
    }
}

/// Which way frames went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Received from the peer.
    In,
    /// Sent to the peer.
    Out,
}

/// Frames of one type counted by a channel's reader or writer and added to
/// the shared counters in one go; see the module docs.
pub(crate) struct Tally {
    metrics: Option<Metrics>,
    direction: Direction,
    id: u32,
    /// (32-bit, flushed before they overflow: the tally is part of every
    /// channel's reader future.)
    frames: u32,
    bytes: u32,
}

impl Tally {
    /// An empty tally that adds to `metrics`, if any.
    pub(crate) fn new(metrics: Option<Metrics>, direction: Direction) -> Self {
        Self {
            metrics,
            direction,
            id: 0,
            frames: 0,
            bytes: 0,
        }
    }

    /// Counts one frame of id `id` with `payload_len` payload bytes.
    #[inline]
    pub(crate) fn add(&mut self, id: u32, payload_len: usize) {
        let len = u32::try_from(payload_len).unwrap_or(u32::MAX);
        if self.id != id || self.frames == u32::MAX || self.bytes.checked_add(len).is_none() {
            self.switch(id);
        }
        self.frames += 1;
        self.bytes = self.bytes.saturating_add(len);
    }

    /// Flushes and starts counting `id`: out of line, so the common case
    /// above stays a few instructions with no registers to save (inlined,
    /// the flush made each count cost about 50 instructions).
    #[cold]
    #[inline(never)]
    fn switch(&mut self, id: u32) {
        self.flush();
        self.id = id;
    }

    /// Counts one frame of message type `M` with `payload_len` payload
    /// bytes, registering `M`'s name when the type changes (so a sender
    /// registers each type once per run of it, not per frame).
    pub(crate) fn add_typed<M: knotwork_wire::Message>(&mut self, payload_len: usize) {
        if self.id != M::ID {
            if let Some(m) = &self.metrics {
                m.register_type(M::ID, M::NAME);
            }
        }
        self.add(M::ID, payload_len);
    }

    /// Adds what was counted to the shared counters.
    pub(crate) fn flush(&mut self) {
        if self.frames == 0 {
            return;
        }
        if let Some(m) = &self.metrics {
            m.add_frames(
                self.direction,
                self.id,
                u64::from(self.frames),
                u64::from(self.bytes),
            );
        }
        self.frames = 0;
        self.bytes = 0;
    }
}

/// The four counters of one message type.
struct TypeCounters {
    received: Counter,
    received_bytes: Counter,
    sent: Counter,
    sent_bytes: Counter,
}

impl TypeCounters {
    fn new(
        messages: &Family<Labels, Counter>,
        bytes: &Family<Labels, Counter>,
        name: &'static str,
    ) -> Self {
        let series = |family: &Family<Labels, Counter>, direction| {
            family
                .get_or_create(&vec![("direction", direction), ("type", name)])
                .clone()
        };
        Self {
            received: series(messages, "in"),
            received_bytes: series(bytes, "in"),
            sent: series(messages, "out"),
            sent_bytes: series(bytes, "out"),
        }
    }
}

/// One slot of [`MessageTypes`]: `key` is 0 while free, else
/// [`OCCUPIED`]` | id`; `counters` is set right after the key is claimed.
#[derive(Default)]
struct Slot {
    key: AtomicU64,
    counters: OnceLock<TypeCounters>,
}

const OCCUPIED: u64 = 1 << 32;

/// The lock-free table of per-type counters; see the module docs.
struct MessageTypes {
    slots: Box<[Slot]>,
    messages: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    /// Frames of ids without a slot.
    unknown: TypeCounters,
}

impl MessageTypes {
    fn new(messages: Family<Labels, Counter>, bytes: Family<Labels, Counter>) -> Self {
        Self {
            slots: (0..MAX_MESSAGE_TYPES).map(|_| Slot::default()).collect(),
            unknown: TypeCounters::new(&messages, &bytes, "unknown"),
            messages,
            bytes,
        }
    }

    /// The slot of `id`, claiming a free one if `insert`. Ids are hashes of
    /// names, so the probe starts at the id itself. Slots are never freed,
    /// so a free slot ends the search.
    fn slot(&self, id: u32, insert: bool) -> Option<&Slot> {
        let key = OCCUPIED | u64::from(id);
        let n = self.slots.len();
        let start = id as usize % n;
        for i in 0..n {
            let slot = self.slots.get((start + i) % n)?;
            match slot.key.load(Ordering::Acquire) {
                k if k == key => return Some(slot),
                0 if !insert => return None,
                0 => match slot
                    .key
                    .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return Some(slot),
                    Err(k) if k == key => return Some(slot),
                    Err(_) => {}
                },
                _ => {}
            }
        }
        None
    }

    /// The counters of a registered `id`.
    fn find(&self, id: u32) -> Option<&TypeCounters> {
        self.slot(id, false).and_then(|s| s.counters.get())
    }

    /// Registers `id` as `name`, unless it is registered or the table is full.
    fn insert(&self, id: u32, name: &'static str) {
        if let Some(slot) = self.slot(id, true) {
            slot.counters
                .get_or_init(|| TypeCounters::new(&self.messages, &self.bytes, name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_render_with_prefix_and_labels() {
        let m = Metrics::new();
        let tasks = Family::<Labels, Counter>::default();
        m.register("tasks", "Task protocol events", tasks.clone());
        tasks.get_or_create(&vec![("event", "submitted")]).inc_by(2);
        let text = m.encode();
        assert!(
            text.contains("knot_tasks_total{event=\"submitted\"} 2"),
            "{text}"
        );
        assert!(text.contains("# TYPE knot_rtt_seconds histogram"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn messages_count_per_registered_type_and_unknown_ids_apart() {
        let m = Metrics::new();
        m.register_type(7, "test/a/1");
        m.register_type(9, "test/b/1");
        let mut reader = Tally::new(Some(m.clone()), Direction::In);
        let mut writer = Tally::new(Some(m.clone()), Direction::Out);
        reader.add(7, 10);
        reader.add(7, 5);
        writer.add(9, 3);
        reader.add(9, 4);
        reader.add(12345, 100);
        assert!(
            !m.encode().contains("type=\"unknown\"} 1"),
            "the last type waits for the flush"
        );
        reader.flush();
        writer.flush();
        let text = m.encode();
        for line in [
            "knot_messages_total{direction=\"in\",type=\"test/a/1\"} 2",
            "knot_message_bytes_total{direction=\"in\",type=\"test/a/1\"} 15",
            "knot_messages_total{direction=\"out\",type=\"test/a/1\"} 0",
            "knot_messages_total{direction=\"out\",type=\"test/b/1\"} 1",
            "knot_message_bytes_total{direction=\"out\",type=\"test/b/1\"} 3",
            "knot_messages_total{direction=\"in\",type=\"test/b/1\"} 1",
            "knot_messages_total{direction=\"in\",type=\"unknown\"} 1",
            "knot_message_bytes_total{direction=\"in\",type=\"unknown\"} 100",
            "knot_received_frames_total 4",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn types_beyond_the_table_count_as_unknown_and_colliding_slots_probe_on() {
        let m = Metrics::new();
        let mut writer = Tally::new(Some(m.clone()), Direction::Out);
        // Ids that all start probing at slot 0.
        let n = MAX_MESSAGE_TYPES as u32;
        for i in 0..n {
            m.register_type(i * n, "test/same-slot");
            writer.add(i * n, 1);
        }
        m.register_type(n * n, "test/late/1");
        writer.add(n * n, 2);
        writer.flush();
        let mut reader = Tally::new(Some(m.clone()), Direction::In);
        reader.add((n - 1) * n, 1);
        reader.flush();
        let text = m.encode();
        assert!(text.contains("knot_messages_total{direction=\"out\",type=\"unknown\"} 1"));
        assert!(
            text.contains("knot_messages_total{direction=\"out\",type=\"test/same-slot\"} 128")
        );
        assert!(text.contains("knot_messages_total{direction=\"in\",type=\"test/same-slot\"} 1"));
        assert!(!text.contains("test/late/1"));
    }

    #[test]
    fn a_tally_flushes_before_its_32_bit_counts_overflow() {
        let m = Metrics::new();
        m.register_type(7, "test/big/1");
        let mut reader = Tally::new(Some(m.clone()), Direction::In);
        // Three frames of 2 GiB: the third would overflow the byte count.
        for _ in 0..3 {
            reader.add(7, 1 << 31);
        }
        reader.flush();
        let text = m.encode();
        assert!(text.contains("knot_messages_total{direction=\"in\",type=\"test/big/1\"} 3"));
        assert!(
            text.contains(
                "knot_message_bytes_total{direction=\"in\",type=\"test/big/1\"} 6442450944"
            ),
            "{text}"
        );
    }

    #[test]
    fn bans_count_by_reason_and_rtt_by_sample() {
        let m = Metrics::new();
        m.ban(crate::meter::Offence::OverBudget.label());
        m.ban("gossip_flood");
        m.ban("gossip_flood");
        m.rtt(Duration::from_millis(3));
        let text = m.encode();
        assert!(text.contains("knot_bans_total{reason=\"over_budget\"} 1"));
        assert!(text.contains("knot_bans_total{reason=\"gossip_flood\"} 2"));
        assert!(text.contains("knot_rtt_seconds_count 1"), "{text}");
    }
}
