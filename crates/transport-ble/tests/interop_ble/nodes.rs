//! Node-level scenarios: two `knotwork-node` nodes over BLE. Node A listens
//! as a peripheral (`ble/hci0`), node B dials it as a central
//! (`ble/<device>`). The mocked BlueZ plays the remote central of A and the
//! remote peripheral of B; the test splices the two bridge sockets, so every
//! fragment crosses D-Bus GATT twice: B's RX write → mock → A's RX, A's TX
//! notification → mock → B's TX.

use std::time::Duration;

use knotwork_core::{DiscoverySource, Keypair, PeerAddr};
use knotwork_dht_node::DhtHandle;
use knotwork_discovery_mdns::{MdnsConfig, MdnsDiscovery};
use knotwork_node::protocol::ping::PingConfig;
use knotwork_node::{DiscoveryConfig, Node, NodeBuilder, NodeConfig};
use knotwork_tasks::task::{Placement, Task, TaskOutcome};
use knotwork_tasks::{TasksConfig, TasksService};
use knotwork_transport_ble::{BleConfig, BleDiscovery, BleTransport};
use tokio::net::TcpListener;

use crate::scenarios::{MTU, fixture};

const LONG: Duration = Duration::from_secs(20);

/// Pings every 200 ms; BLE dials scan first, so the timeouts are long.
fn ble_config() -> NodeConfig {
    let mut c = NodeConfig::default();
    c.ping = PingConfig {
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
    };
    c.first_byte_timeout = LONG;
    c.handshake_timeout = LONG;
    c.dial_timeout = LONG;
    c
}

async fn accept(listener: &TcpListener, what: &str) -> tokio::net::TcpStream {
    tokio::time::timeout(LONG, listener.accept())
        .await
        .unwrap_or_else(|_| panic!("fixture did not connect its {what} bridge"))
        .unwrap()
        .0
}

/// Starts node A (identity `key`, with what `more` adds) as a BLE
/// peripheral and the mock's remote peripheral `device` that stands for it,
/// spliced together. Returns A and its tasks.
async fn peripheral_node(
    device: &str,
    key: Keypair,
    more: impl FnOnce(NodeBuilder) -> NodeBuilder,
) -> (Node, TasksService) {
    let to_a = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to_device = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (): () = fixture(
        "EnableCentral",
        ("hci0", to_a.local_addr().unwrap().port(), MTU),
    )
    .await;
    let id = key.peer_id();
    let tasks = TasksService::new(TasksConfig::default());
    tasks
        .tasks()
        .register("echo", |input: Vec<u8>| async move { Ok(input) });
    let a = more(Node::builder(key))
        .transport(BleTransport::new(id, BleConfig::default()).await.unwrap())
        .listen(PeerAddr::ble("hci0").unwrap())
        .config(ble_config())
        .service(tasks.clone())
        .start()
        .await
        .unwrap();
    assert!(a.listen_addrs().contains(&PeerAddr::ble("hci0").unwrap()));
    let mut a_side = accept(&to_a, "central").await;
    let port = to_device.local_addr().unwrap().port();
    let service_data = id.as_bytes().to_vec();
    let (_path,): (dbus::Path<'static>,) = fixture(
        "AddPeripheral",
        ("hci0", device.to_owned(), service_data, port, MTU),
    )
    .await;
    let mut device_side = accept(&to_device, "peripheral").await;
    // Both bridges carry the same framing (2-byte length, fragment).
    tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut a_side, &mut device_side).await;
    });
    (a, tasks)
}

/// A node-level session over BLE: Noise handshake, version exchange, pings
/// and an `echo` task from B run on A.
pub async fn two_nodes_run_a_task_over_ble() {
    let device = "11:22:33:44:55:77";
    let a_key = Keypair::generate().unwrap();
    let (a, _a_tasks) = peripheral_node(device, a_key, |b| b).await;

    let key = Keypair::generate().unwrap();
    let b_tasks = TasksService::new(TasksConfig::default());
    let b = Node::builder(key.clone())
        .transport(
            BleTransport::new(key.peer_id(), BleConfig::default())
                .await
                .unwrap(),
        )
        .config(ble_config())
        .service(b_tasks.clone())
        .start()
        .await
        .unwrap();
    let channel = b.connect(PeerAddr::ble(device).unwrap()).await.unwrap();

    // Handshake and version exchange.
    let info = channel.info();
    assert_eq!(info.peer_id, a.peer_id());
    assert_eq!(info.remote_addr, PeerAddr::ble(device).unwrap());
    assert!(info.version.node_version.starts_with("knotwork/"));
    assert_eq!(info.version.listen_addrs, vec!["ble/hci0".to_owned()]);
    assert!(
        info.version
            .protocols
            .iter()
            .any(|p| p == knotwork_tasks::task::NAME)
    );

    // Pings: both ends measure a round trip.
    let deadline = tokio::time::Instant::now() + LONG;
    while !(b.peers().iter().any(|p| p.rtt.is_some()) && a.peers().iter().any(|p| p.rtt.is_some()))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ping round trip over BLE"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let from_a = a.peers();
    assert_eq!(from_a.len(), 1);
    assert_eq!(from_a[0].peer_id, b.peer_id());
    assert!(matches!(from_a[0].addr, PeerAddr::Ble(_)));

    // One task, B → A.
    while b_tasks.tasks().peers().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never offered tasks"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut results = b_tasks.tasks().results();
    let payload = b"over ble, through bluez".to_vec();
    let id = b_tasks
        .tasks()
        .submit(
            Task::new("echo", payload.clone()),
            Placement::Peers(vec![a.peer_id()]),
        )
        .unwrap();
    let result = tokio::time::timeout(LONG, results.recv())
        .await
        .expect("no task result over BLE")
        .unwrap();
    assert_eq!(result.id, id);
    assert_eq!(result.outcome, TaskOutcome::Done(payload));
    b.shutdown().await;
    a.shutdown().await;
}

/// DHT settings for nodes that all live on one host.
fn dht_config() -> knotwork_dht_node::Config {
    knotwork_dht_node::Config {
        subnet_limits: None,
        request_timeout: Duration::from_secs(1),
        query_timeout: Duration::from_secs(5),
        ..knotwork_dht_node::Config::default()
    }
}

/// mDNS when the bed runs in its own network namespace (its multicast
/// stays on the namespace's veth pair); `None` in the host's, where
/// announcements would leave on the real network.
fn mdns() -> Option<MdnsDiscovery> {
    if std::env::var_os(crate::scenarios::NETNS).is_none() {
        println!("  mdns not run: the bed has no network namespace of its own (needs root)");
        return None;
    }
    Some(MdnsDiscovery::new(MdnsConfig::default()).unwrap())
}

/// Unified discovery with three sources side by side. A is a BLE
/// peripheral that also listens on TCP, runs the DHT and announces by mDNS;
/// S is a DHT node both know. B runs BLE scanning, mDNS and the DHT,
/// preferring them in that order: it finds A by BLE (with the RSSI BlueZ
/// reports), by the DHT (through S) and, in the bed's namespace, by mDNS,
/// merges the reports into one peer whose addresses list BLE's first, and
/// connects to it.
pub async fn unified_discovery_merges_ble_mdns_and_the_dht() {
    let device = "11:22:33:44:55:88";
    let lan_ip = if std::env::var_os(crate::scenarios::NETNS).is_some() {
        crate::scenarios::LAN_IP
    } else {
        "127.0.0.1"
    };
    let tcp: PeerAddr = format!("tcp/{lan_ip}:0").parse().unwrap();
    let mut config = ble_config();
    config.max_per_ip = 64;

    let s_key = Keypair::generate().unwrap();
    let s_dht = DhtHandle::new(s_key.clone(), dht_config());
    let s = Node::builder(s_key)
        .listen(tcp.clone())
        .config(config.clone())
        .service(s_dht.clone())
        .start()
        .await
        .unwrap();
    let seed = s.listen_addrs()[0].clone();

    let a_key = Keypair::generate().unwrap();
    let a_dht = DhtHandle::new(a_key.clone(), dht_config());
    let a_mdns = mdns();
    let (a, _a_tasks) = peripheral_node(device, a_key, |b| {
        let b = b
            .listen(tcp.clone())
            .seed(seed.clone())
            .config(config.clone())
            .service(a_dht.clone())
            .discovery(a_dht.clone());
        match a_mdns {
            Some(m) => b.discovery(m),
            None => b,
        }
    })
    .await;

    let b_key = Keypair::generate().unwrap();
    let b_dht = DhtHandle::new(b_key.clone(), dht_config());
    let ble = BleTransport::new(b_key.peer_id(), BleConfig::default())
        .await
        .unwrap();
    let scan = BleDiscovery::new(ble.central().clone()).await.unwrap();
    let mut discovery = DiscoveryConfig::default();
    discovery.poll_interval = Duration::from_millis(500);
    discovery.prefer = vec![
        DiscoverySource::Ble,
        DiscoverySource::Mdns,
        DiscoverySource::Dht,
    ];
    let mut b = Node::builder(b_key)
        .transport(ble)
        .listen(tcp.clone())
        .seed(seed)
        .config(config)
        .discovery_config(discovery)
        .service(b_dht.clone())
        .discovery(b_dht.clone())
        .discovery(scan);
    let b_mdns = mdns();
    let want_mdns = b_mdns.is_some();
    if let Some(m) = b_mdns {
        b = b.discovery(m);
    }
    let b = b.start().await.unwrap();

    let mut wanted = vec![DiscoverySource::Ble, DiscoverySource::Dht];
    if want_mdns {
        wanted.push(DiscoverySource::Mdns);
    }
    let deadline = tokio::time::Instant::now() + LONG;
    let info = loop {
        let found = b
            .discovered_peers()
            .into_iter()
            .find(|p| p.peer == a.peer_id());
        if let Some(info) = found
            && wanted.iter().all(|s| info.sources.contains(s))
        {
            break info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B did not find A by {wanted:?}: {:?}",
            b.discovered_peers()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("  B found A by {:?} at {:?}", info.sources, info.addrs);
    // The preferred source's address comes first; BLE measured the signal.
    assert_eq!(info.addrs[0], PeerAddr::ble(device).unwrap());
    let a_tcp = a
        .listen_addrs()
        .into_iter()
        .find(|x| matches!(x, PeerAddr::Tcp(_)))
        .unwrap();
    assert!(info.addrs.contains(&a_tcp));
    assert!(
        !info.addrs.contains(&PeerAddr::ble("hci0").unwrap()),
        "A's own adapter name is no address for B"
    );
    assert_eq!(info.rssi, Some(-79), "the mocked BlueZ reports RSSI -79");
    assert!(info.last_seen.elapsed() < LONG);
    // Discovery dials A (or the DHT already did).
    while !b.peers().iter().any(|p| p.peer_id == a.peer_id()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never connected to A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.shutdown().await;
    a.shutdown().await;
    s.shutdown().await;
}
