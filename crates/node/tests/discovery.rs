//! Unified discovery in a node: fake in-test sources, the memory transport,
//! virtual time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use knotwork_core::{
    DiscoveredPeer, Discovery, DiscoveryError, DiscoveryEvent, DiscoverySource, Keypair,
    LocalPeerInfo, MemoryTransport, PeerAddr, PeerId,
};
use knotwork_node::{DiscoveryConfig, NodeBuilder, NodeEvent, SessionKind, UnifiedEvent};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

/// A discovery source driven by the test: events are pushed through `push`,
/// `discover()` returns `known` after failing `failures` times.
#[derive(Clone)]
struct FakeSource {
    source: DiscoverySource,
    state: Arc<FakeState>,
}

struct FakeState {
    events: Mutex<Option<mpsc::UnboundedReceiver<DiscoveryEvent>>>,
    push: mpsc::UnboundedSender<DiscoveryEvent>,
    known: Mutex<Vec<DiscoveredPeer>>,
    failures: Mutex<u32>,
    attempts: Mutex<Vec<Instant>>,
    announced: Mutex<Vec<LocalPeerInfo>>,
}

impl FakeSource {
    fn new(source: DiscoverySource) -> Self {
        let (push, rx) = mpsc::unbounded_channel();
        Self {
            source,
            state: Arc::new(FakeState {
                events: Mutex::new(Some(rx)),
                push,
                known: Mutex::new(Vec::new()),
                failures: Mutex::new(0),
                attempts: Mutex::new(Vec::new()),
                announced: Mutex::new(Vec::new()),
            }),
        }
    }

    fn failing(source: DiscoverySource, failures: u32) -> Self {
        let s = Self::new(source);
        *s.state.failures.lock().unwrap() = failures;
        s
    }

    fn found(&self, peer: PeerId, addrs: &[PeerAddr]) {
        let found = DiscoveredPeer {
            peer_id: peer,
            addrs: addrs.to_vec(),
            source: self.source,
            rssi: None,
        };
        self.state
            .push
            .send(DiscoveryEvent::Discovered(found))
            .unwrap();
    }

    fn expired(&self, peer: PeerId) {
        let event = DiscoveryEvent::Expired {
            peer_id: peer,
            source: self.source,
        };
        self.state.push.send(event).unwrap();
    }

    fn attempts(&self) -> Vec<Instant> {
        self.state.attempts.lock().unwrap().clone()
    }
}

#[async_trait]
impl Discovery for FakeSource {
    fn source(&self) -> DiscoverySource {
        self.source
    }

    async fn announce(&self, info: &LocalPeerInfo) -> Result<(), DiscoveryError> {
        self.state.announced.lock().unwrap().push(info.clone());
        Ok(())
    }

    async fn discover(&self) -> Result<Vec<DiscoveredPeer>, DiscoveryError> {
        self.state.attempts.lock().unwrap().push(Instant::now());
        let mut failures = self.state.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return Err(DiscoveryError::Failed("fake outage".into()));
        }
        Ok(self.state.known.lock().unwrap().clone())
    }

    fn events(&self) -> BoxStream<'static, DiscoveryEvent> {
        match self.state.events.lock().unwrap().take() {
            Some(rx) => {
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|e| (e, rx)) },
                )
                .boxed()
            }
            None => futures::stream::pending().boxed(),
        }
    }
}

fn config() -> DiscoveryConfig {
    let mut c = DiscoveryConfig::default();
    c.poll_interval = Duration::from_secs(3600);
    c.backoff.initial = Duration::from_secs(1);
    c.backoff.max = Duration::from_secs(8);
    c
}

fn node(net: &MemoryTransport) -> NodeBuilder {
    common::mem_node(net)
        .listen("mem/0".parse().unwrap())
        .discovery_config(config())
}

fn id() -> PeerId {
    Keypair::generate().unwrap().peer_id()
}

fn mem(port: u64) -> PeerAddr {
    PeerAddr::Mem(port)
}

/// Every unified event until none arrives for `quiet` (virtual time).
async fn drain(rx: &mut broadcast::Receiver<UnifiedEvent>, quiet: Duration) -> Vec<UnifiedEvent> {
    let mut v = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(quiet, rx.recv()).await {
        v.push(e);
    }
    v
}

#[tokio::test(start_paused = true)]
async fn the_same_peer_from_two_sources_appears_once_with_both() {
    let net = MemoryTransport::new();
    let (manual, dht) = (
        FakeSource::new(DiscoverySource::Manual),
        FakeSource::new(DiscoverySource::Dht),
    );
    // No refinery during the test: discovered addresses stay grey.
    let mut slow = common::fast_config();
    slow.maintenance_interval = Duration::from_secs(3600);
    let a = node(&net)
        .config(slow)
        .discovery(manual.clone())
        .discovery(dht.clone())
        .start()
        .await
        .unwrap();
    let mut events = a.discovery_events();
    let p = id();
    manual.found(p, &[mem(9001)]);
    dht.found(p, &[mem(9001)]);
    manual.found(a.peer_id(), &[mem(9002)]); // ourselves: ignored
    let seen = drain(&mut events, Duration::from_secs(1)).await;
    assert_eq!(
        seen,
        vec![UnifiedEvent::PeerDiscovered {
            peer: p,
            addrs: vec![mem(9001)],
            sources: vec![DiscoverySource::Manual],
        }]
    );
    let known = a.discovered_peers();
    assert_eq!(known.len(), 1);
    assert_eq!(known[0].peer, p);
    assert_eq!(
        known[0].sources,
        vec![DiscoverySource::Dht, DiscoverySource::Manual]
    );
    // A new address from the DHT is news: reported with the union.
    dht.found(p, &[mem(9001), mem(9003)]);
    let seen = drain(&mut events, Duration::from_secs(1)).await;
    assert_eq!(
        seen,
        vec![UnifiedEvent::PeerDiscovered {
            peer: p,
            addrs: vec![mem(9001), mem(9003)],
            sources: vec![DiscoverySource::Dht, DiscoverySource::Manual],
        }]
    );
    // Discovered addresses feed the host store.
    let (grey, _) = a.hosts();
    assert!(
        grey.contains(&mem(9001)) && grey.contains(&mem(9003)),
        "{grey:?}"
    );
    assert!(!grey.contains(&mem(9002)), "our own report is not stored");
    a.shutdown().await;
}

/// mDNS reports peers on the LAN: the addresses it gives must be LAN
/// addresses, never loopback (review finding M3; an off-link or spoofed
/// answer cannot make us dial local services).
#[tokio::test(start_paused = true)]
async fn m3_an_mdns_peer_cannot_make_us_dial_loopback() {
    let net = MemoryTransport::new();
    let mdns = FakeSource::new(DiscoverySource::Mdns);
    let mut config = common::fast_config();
    // Nothing is dialed here (no traffic leaves the machine).
    config.outbound_slots = 0;
    config.maintenance_interval = Duration::from_secs(3600);
    let a = node(&net)
        .config(config)
        .discovery(mdns.clone())
        .start()
        .await
        .unwrap();
    let p = id();
    let lan: PeerAddr = "tcp/10.0.0.7:4000".parse().unwrap();
    mdns.found(
        p,
        &[
            mem(9001),
            "tcp/127.0.0.1:6379".parse().unwrap(),
            lan.clone(),
        ],
    );
    common::eventually(Duration::from_secs(1), "the peer", || {
        !a.discovered_peers().is_empty()
    })
    .await;
    assert_eq!(a.discovered_peers()[0].addrs, vec![lan.clone()]);
    let (grey, _) = a.hosts();
    assert_eq!(grey, vec![lan]);
    a.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_expired_peer_is_reported_once() {
    let net = MemoryTransport::new();
    let (manual, dht) = (
        FakeSource::new(DiscoverySource::Manual),
        FakeSource::new(DiscoverySource::Dht),
    );
    let a = node(&net)
        .discovery(manual.clone())
        .discovery(dht.clone())
        .start()
        .await
        .unwrap();
    let mut events = a.discovery_events();
    let p = id();
    manual.found(p, &[mem(9001)]);
    dht.found(p, &[mem(9001)]);
    let seen = drain(&mut events, Duration::from_secs(1)).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    // One source of two expiring it is not an expiry of the peer.
    manual.expired(p);
    manual.expired(p);
    let seen = drain(&mut events, Duration::from_secs(1)).await;
    assert_eq!(seen, vec![]);
    assert_eq!(a.discovered_peers()[0].sources, vec![DiscoverySource::Dht]);
    dht.expired(p);
    dht.expired(p);
    let seen = drain(&mut events, Duration::from_secs(1)).await;
    assert_eq!(seen, vec![UnifiedEvent::PeerExpired { peer: p }]);
    assert!(a.discovered_peers().is_empty());
    a.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_source_is_retried_with_backoff_and_does_not_stop_the_others() {
    let net = MemoryTransport::new();
    let broken = FakeSource::failing(DiscoverySource::Dht, 3);
    let healthy = FakeSource::new(DiscoverySource::Mdns);
    let late = id();
    broken.state.known.lock().unwrap().push(DiscoveredPeer {
        peer_id: late,
        addrs: vec![mem(9100)],
        source: DiscoverySource::Dht,
        rssi: None,
    });
    let a = node(&net)
        .discovery(broken.clone())
        .discovery(healthy.clone())
        .start()
        .await
        .unwrap();
    let mut events = a.discovery_events();
    let p = id();
    healthy.found(p, &[mem(9001)]);
    let first = tokio::time::timeout(Duration::from_millis(100), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, UnifiedEvent::PeerDiscovered { peer, .. } if peer == p));
    assert!(broken.attempts().len() <= 1, "still failing");

    // Three failures, then the fourth attempt succeeds and reports `late`.
    let next = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(next, UnifiedEvent::PeerDiscovered { peer, .. } if peer == late));
    let at = broken.attempts();
    assert_eq!(at.len(), 4, "{at:?}");
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // Equal jitter: each wait is in [delay/2, delay], delay 1 s, 2 s, 4 s.
    for (gap, delay) in gaps.iter().zip([1u64, 2, 4]) {
        let delay = Duration::from_secs(delay);
        assert!(
            *gap >= delay / 2 && *gap <= delay,
            "gap {gap:?} for delay {delay:?}"
        );
    }
    // Success resets the schedule: the next poll is the poll interval away.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(broken.attempts().len(), 4);
    a.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_discovered_peer_gets_connected() {
    let net = MemoryTransport::new();
    let b = node(&net).start().await.unwrap();
    let manual = FakeSource::new(DiscoverySource::Manual);
    let a = node(&net).discovery(manual.clone()).start().await.unwrap();
    let mut node_events = a.events();

    // The source was told who we are and where we listen.
    common::eventually(Duration::from_secs(1), "announce", || {
        !manual.state.announced.lock().unwrap().is_empty()
    })
    .await;
    let announced = manual.state.announced.lock().unwrap()[0].clone();
    assert_eq!(announced.peer_id, a.peer_id());
    assert_eq!(announced.addrs, a.listen_addrs());

    manual.found(b.peer_id(), &b.listen_addrs());
    let connected = common::wait_event(&mut node_events, Duration::from_secs(5), |e| {
        matches!(e, NodeEvent::Connected { .. })
    })
    .await;
    assert_eq!(
        connected,
        NodeEvent::Connected {
            peer: b.peer_id(),
            addr: b.listen_addrs()[0].clone(),
            session: SessionKind::Outbound,
        }
    );
    a.shutdown().await;
    b.shutdown().await;
}
