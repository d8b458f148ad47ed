//! `knot run`: run a node until Ctrl-C or SIGTERM.
//!
//! Loads the configuration (file, `KNOT_*`, flags), loads or creates the
//! identity in the data directory, starts the node (with the Kademlia DHT
//! as a discovery source, unless `[dht] enabled = false` or `--no-dht`;
//! `knot dht …` talks to it) and its control socket,
//! prints the PeerId and every bound listen address, then one line per peer
//! event. With `[nat] upnp = true` or `--upnp` it maps its listen port on the
//! LAN's UPnP gateway, renews the lease and deletes the mapping on shutdown.
//! On Ctrl-C or SIGTERM it shuts down gracefully: every peer gets a
//! `Disconnect { Shutdown }` and queued messages drain.
//!
//! # Format
//! Text: `peer id <id>`, `listening on <addr>` (one per address), `control
//! socket <path>`, `metrics on <url>` and `dht server|client` when on, then
//! `discovered <id> <addr,…> (<source,…>)`, `expired <id>`,
//! `connected <id> <addr> (<session>)`, `disconnected <id>: <reason>`,
//! `banned <id>`, `relayed address <addr>` (a relay granted a reservation;
//! `relay_reserved` with `relay` and `addr` in JSON), `relay released
//! <addr>` (no longer advertised: the node turned public or lost the relay;
//! `relay_released`); `mdns unavailable:
//! <reason>` when LAN discovery could not start (the node runs on without
//! it); `upnp mapped <addr> (lease <secs> s)`, `upnp lost <addr>` (`upnp_mapped`
//! with `external` and `lease_ms` in JSON); `reachability public <addr>`,
//! `reachability private` or `reachability unknown` when peers' dial-backs
//! change the verdict (`reachability` with `state` and `addr` in JSON);
//! `gossip <topic> <origin>/<seq> via <peer>: <data>` for each message
//! received on a topic of `--subscribe` (`gossip` with `topic`, `origin`,
//! `seq`, `from`, `data` and `at_us`, the arrival time in microseconds since
//! the UNIX epoch, in JSON). With `--worker` it runs the built-in tasks for
//! peers (see `knot task`). With `--ble` (or `[ble] enabled = true`, feature
//! `ble`) it dials `ble/<device>` addresses, finds peers by BLE scanning and,
//! unless `[ble] advertise = false`, listens on `ble/<adapter>` as a
//! peripheral; a BLE adapter that cannot be opened stops `knot run` with
//! `ble: <reason>`.
//! With `--json` the same as one object per line, tagged by `"event"`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{BleSection, DhtMode, MdnsSection};
use crate::control::{ControlServer, NodeControl, create_private_dir, session_name, unix_micros};
use knotwork_core::{DialAddr, Keypair, PeerAddr};
use knotwork_dht_node::{Config, DhtHandle, Mode};
use knotwork_discovery_mdns::{MdnsConfig, MdnsDiscovery};
use knotwork_gossip::{Gossip, GossipConfig};
use knotwork_nat::{Nat, NatEvent, Reachability};
use knotwork_node::discovery::UnifiedEvent;
use knotwork_node::{Node, NodeBuilder, NodeEvent};
use knotwork_tasks::{TasksConfig, TasksService};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use crate::CliResult;
use crate::settings::{Global, IDENTITY_FILE, resolve_dir};

/// Arguments of `knot run`; each flag replaces the configured list.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Listen on ADDR (repeatable), e.g. tcp/0.0.0.0:4000, quic/0.0.0.0:4000,
    /// tcp/127.0.0.1:0, uds//run/knot/node.sock or ws/0.0.0.0:8080/knot.
    #[arg(long, short = 'l', value_name = "ADDR")]
    listen: Vec<PeerAddr>,
    /// Keep a connection to seed ADDR (repeatable); `ADDR/p2p/<PeerId>`
    /// accepts only that peer there.
    #[arg(long, short = 's', value_name = "ADDR")]
    seed: Vec<DialAddr>,
    /// Keep a connection to peer ADDR (repeatable; pinned as for --seed).
    #[arg(long, short = 'p', value_name = "ADDR")]
    peer: Vec<DialAddr>,
    /// Offer the relay service to peers (as `[relay] service = true`; the
    /// limits come from `[relay]`).
    #[arg(long)]
    relay_service: bool,
    /// Keep a connection to the relay at ADDR and a reservation on it
    /// (repeatable; pinned as for --seed).
    #[arg(long, value_name = "ADDR")]
    relay: Vec<DialAddr>,
    /// Serve Prometheus metrics at http://IP:PORT/metrics (port 0 picks one).
    #[arg(long, value_name = "IP:PORT")]
    metrics: Option<SocketAddr>,
    /// Do not run the DHT, whatever `[dht] enabled` says.
    #[arg(long)]
    no_dht: bool,
    /// Do not announce or look for peers on the LAN by mDNS (see `[mdns]`).
    #[arg(long)]
    no_mdns: bool,
    /// Use Bluetooth LE: dial and scan as a central, advertise as a
    /// peripheral (as `[ble] enabled = true`; feature `ble`).
    #[arg(long)]
    ble: bool,
    /// Map the listen port on the LAN's UPnP gateway (`[nat] upnp`).
    #[arg(long)]
    upnp: bool,
    /// Print a line for each gossip message received on TOPIC (repeatable).
    #[arg(long, value_name = "TOPIC")]
    subscribe: Vec<String>,
    /// Run the built-in tasks for peers (`fnv`: the FNV-1a hash of the
    /// input; `knot task submit fnv TEXT`).
    #[arg(long)]
    worker: bool,
    /// How often the DHT re-puts this node's records and re-replicates the
    /// records it holds for others (default 1 h), in milliseconds.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1000..))]
    dht_republish_ms: Option<u64>,
    /// Peers each gossip message is sent or forwarded to (default 6).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    gossip_fanout: Option<u16>,
    /// Hops a gossip message published here may travel (default 6).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..))]
    gossip_ttl: Option<u8>,
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Line {
    Started {
        peer_id: String,
        listen: Vec<String>,
        control: String,
        metrics: Option<String>,
        /// `server` or `client`; `None` without the DHT.
        dht: Option<&'static str>,
    },
    /// mDNS could not start; the node runs without it.
    MdnsUnavailable {
        reason: String,
    },
    Discovered {
        peer_id: String,
        addrs: Vec<String>,
        sources: Vec<String>,
    },
    Expired {
        peer_id: String,
    },
    Connected {
        peer_id: String,
        addr: String,
        session: &'static str,
    },
    Disconnected {
        peer_id: String,
        reason: String,
    },
    Banned {
        peer_id: String,
    },
    RelayReserved {
        relay: String,
        addr: String,
    },
    RelayReleased {
        relay: String,
        addr: String,
    },
    UpnpMapped {
        external: String,
        lease_ms: u64,
    },
    UpnpLost {
        external: String,
    },
    Reachability {
        state: &'static str,
        addr: Option<String>,
    },
    /// A gossip message on a topic of `--subscribe`.
    Gossip {
        topic: String,
        origin: String,
        seq: u64,
        /// The direct peer it came from.
        from: String,
        data: String,
        /// When it arrived, in microseconds since the UNIX epoch.
        at_us: u64,
    },
    Lagged {
        missed: u64,
    },
    Stopping {
        signal: &'static str,
    },
}

/// Prints `line`. A node keeps running when nobody reads its output any
/// more (a closed pipe), so write errors are ignored here.
fn print(json: bool, line: &Line) {
    let _ = write_line(&mut std::io::stdout().lock(), json, line);
}

fn write_line(out: &mut impl Write, json: bool, line: &Line) -> CliResult<()> {
    if json {
        serde_json::to_writer(&mut *out, line)?;
        writeln!(out)?;
        return Ok(());
    }
    let text = match line {
        Line::Started {
            peer_id,
            listen,
            control,
            metrics,
            dht,
        } => {
            writeln!(out, "peer id {peer_id}")?;
            for addr in listen {
                writeln!(out, "listening on {addr}")?;
            }
            writeln!(out, "control socket {control}")?;
            if let Some(url) = metrics {
                writeln!(out, "metrics on {url}")?;
            }
            if let Some(mode) = dht {
                writeln!(out, "dht {mode}")?;
            }
            out.flush()?;
            return Ok(());
        }
        Line::MdnsUnavailable { reason } => format!("mdns unavailable: {reason}"),
        Line::Discovered {
            peer_id,
            addrs,
            sources,
        } => format!(
            "discovered {peer_id} {} ({})",
            addrs.join(","),
            sources.join(",")
        ),
        Line::Expired { peer_id } => format!("expired {peer_id}"),
        Line::Connected {
            peer_id,
            addr,
            session,
        } => format!("connected {peer_id} {addr} ({session})"),
        Line::Disconnected { peer_id, reason } => {
            format!("disconnected {peer_id}: {reason}")
        }
        Line::Banned { peer_id } => format!("banned {peer_id}"),
        Line::RelayReserved { addr, .. } => format!("relayed address {addr}"),
        Line::RelayReleased { addr, .. } => format!("relay released {addr}"),
        Line::UpnpMapped { external, lease_ms } => {
            format!("upnp mapped {external} (lease {} s)", lease_ms / 1000)
        }
        Line::UpnpLost { external } => format!("upnp lost {external}"),
        Line::Reachability { state, addr } => match addr {
            Some(addr) => format!("reachability {state} {addr}"),
            None => format!("reachability {state}"),
        },
        Line::Gossip {
            topic,
            origin,
            seq,
            from,
            data,
            ..
        } => format!("gossip {topic} {origin}/{seq} via {from}: {data}"),
        Line::Lagged { missed } => format!("missed {missed} events"),
        Line::Stopping { signal } => format!("{signal}: shutting down"),
    };
    // Peers supply some of this text (disconnect reasons, addresses).
    writeln!(out, "{}", super::printable(&text))?;
    out.flush()?;
    Ok(())
}

fn node_line(event: NodeEvent) -> Option<Line> {
    Some(match event {
        NodeEvent::Connected {
            peer,
            addr,
            session,
        } => Line::Connected {
            peer_id: peer.to_string(),
            addr: addr.to_string(),
            session: session_name(session),
        },
        NodeEvent::Disconnected { peer, reason } => Line::Disconnected {
            peer_id: peer.to_string(),
            reason: reason.to_string(),
        },
        NodeEvent::Banned { peer } => Line::Banned {
            peer_id: peer.to_string(),
        },
        _ => return None,
    })
}

fn nat_line(event: NatEvent) -> Option<Line> {
    Some(match event {
        NatEvent::RelayReserved { relay, addr } => Line::RelayReserved {
            relay: relay.to_string(),
            addr: addr.to_string(),
        },
        NatEvent::RelayReleased { relay, addr } => Line::RelayReleased {
            relay: relay.to_string(),
            addr: addr.to_string(),
        },
        NatEvent::UpnpMapped { external, lease } => Line::UpnpMapped {
            external: external.to_string(),
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
        },
        NatEvent::UpnpLost { external } => Line::UpnpLost {
            external: external.to_string(),
        },
        NatEvent::ReachabilityChanged { reachability } => Line::Reachability {
            state: reachability.state(),
            addr: match reachability {
                Reachability::Public(addr) => Some(addr.to_string()),
                _ => None,
            },
        },
        _ => return None,
    })
}

/// The DHT of a `knot run` node. Requests and queries are bounded so that
/// a `knot dht` query ends within one control exchange. `republish`
/// replaces the republish and replication intervals; maintenance then runs
/// at least twice per interval.
fn dht_handle(keypair: &Keypair, mode: DhtMode, republish: Option<Duration>) -> DhtHandle {
    let mut config = Config {
        mode: match mode {
            DhtMode::Server => Mode::Server,
            DhtMode::Client => Mode::Client,
        },
        request_timeout: Duration::from_secs(1),
        query_timeout: Duration::from_secs(4),
        ..Config::default()
    };
    if let Some(interval) = republish {
        config.republish_interval = interval;
        config.replicate_interval = Some(interval);
        config.maintenance_interval = config.maintenance_interval.min(interval / 2);
    }
    DhtHandle::new(keypair.clone(), config)
}

/// Prints a [`Line::Gossip`] for each message of `topic` (until the node's
/// gossip goes away with it).
fn print_gossip(gossip: &Gossip, topic: String, json: bool) {
    let mut messages = gossip.subscribe(&topic);
    tokio::spawn(async move {
        while let Some(m) = messages.recv().await {
            let line = Line::Gossip {
                topic: topic.clone(),
                origin: m.id.origin.to_string(),
                seq: m.id.seq,
                from: m.from.to_string(),
                data: String::from_utf8_lossy(&m.data).into_owned(),
                at_us: unix_micros(),
            };
            print(json, &line);
        }
    });
}

fn discovery_line(event: UnifiedEvent) -> Option<Line> {
    match event {
        UnifiedEvent::PeerDiscovered {
            peer,
            addrs,
            sources,
        } => Some(Line::Discovered {
            peer_id: peer.to_string(),
            addrs: addrs.iter().map(ToString::to_string).collect(),
            sources: sources.iter().map(ToString::to_string).collect(),
        }),
        UnifiedEvent::PeerExpired { peer } => Some(Line::Expired {
            peer_id: peer.to_string(),
        }),
        _ => None,
    }
}

/// mDNS discovery as `knot run` uses it: started unless switched off; when
/// the daemon cannot start (no multicast interface) the node runs without
/// it and says why. Kept to say goodbye on shutdown.
struct Lan(Option<std::sync::Arc<MdnsDiscovery>>);

impl Lan {
    fn start(section: &MdnsSection, off: bool, json: bool) -> Self {
        if off || !section.enabled {
            return Self(None);
        }
        let config = MdnsConfig {
            service_type: section.service_type.clone(),
            ..MdnsConfig::default()
        };
        match MdnsDiscovery::new(config) {
            Ok(mdns) => Self(Some(std::sync::Arc::new(mdns))),
            Err(e) => {
                let reason = e.to_string();
                print(json, &Line::MdnsUnavailable { reason });
                Self(None)
            }
        }
    }

    fn register(&self, builder: NodeBuilder) -> NodeBuilder {
        match &self.0 {
            Some(mdns) => builder.discovery(mdns.clone()),
            None => builder,
        }
    }

    /// Peers drop us now instead of when our records' TTL runs out.
    async fn goodbye(&self) {
        if let Some(mdns) = &self.0
            && let Err(e) = mdns.goodbye(GOODBYE_TIMEOUT).await
        {
            tracing::debug!("mdns goodbye: {e}");
        }
    }
}

/// Bluetooth LE as `knot run` uses it when `[ble] enabled`: the transport
/// dials `ble/<device>`, the discovery scans, and with `advertise` the node
/// listens on `ble/<adapter>` as a peripheral.
#[cfg(feature = "ble")]
async fn with_ble(
    builder: NodeBuilder,
    keypair: &Keypair,
    section: &BleSection,
) -> CliResult<NodeBuilder> {
    use knotwork_transport_ble::{BleConfig, BleDiscovery, BleTransport};
    if !section.enabled {
        return Ok(builder);
    }
    let mut config = BleConfig::default();
    config.adapter = section.adapter.clone();
    config.scan_timeout = Duration::from_millis(section.scan_timeout_ms);
    let transport = BleTransport::new(keypair.peer_id(), config)
        .await
        .map_err(|e| format!("ble: {e}"))?;
    let discovery = BleDiscovery::new(transport.central().clone())
        .await
        .map_err(|e| format!("ble: {e}"))?;
    let mut builder = builder.transport(transport).discovery(discovery);
    if section.advertise {
        let addr = PeerAddr::ble(section.adapter.as_str()).map_err(|e| format!("ble: {e}"))?;
        builder = builder.listen(addr);
    }
    Ok(builder)
}

/// Without the `ble` feature, `[ble] enabled` is refused.
#[cfg(not(feature = "ble"))]
async fn with_ble(
    builder: NodeBuilder,
    _keypair: &Keypair,
    section: &BleSection,
) -> CliResult<NodeBuilder> {
    if section.enabled {
        return Err("ble: this knot was built without the `ble` feature".into());
    }
    Ok(builder)
}

/// How long shutdown waits for the mDNS goodbye to go out.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// Resolves when the process gets SIGTERM (never elsewhere than Unix).
async fn sigterm() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        term.recv().await;
        Ok(())
    }
    #[cfg(not(unix))]
    std::future::pending().await
}

pub(crate) async fn run(global: &Global, args: Args) -> CliResult<ExitCode> {
    let mut file = global.file_config()?;
    fn texts(given: &[impl ToString]) -> Vec<String> {
        given.iter().map(ToString::to_string).collect()
    }
    let flags = [
        (texts(&args.listen), &mut file.listen),
        (texts(&args.seed), &mut file.seeds),
        (texts(&args.peer), &mut file.peers),
    ];
    for (given, list) in flags {
        if !given.is_empty() {
            *list = given;
        }
    }
    if args.relay_service {
        file.relay.service = true;
    }
    if args.ble {
        file.ble.enabled = true;
    }
    let config = file.validate()?;
    let data_dir = resolve_dir(&config.data_dir);
    create_private_dir(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let identity = data_dir.join(IDENTITY_FILE);
    let keypair = Keypair::load_or_generate(&identity)
        .map_err(|e| format!("identity {}: {e}", identity.display()))?;

    // Tasks, resources, health, gossip and NAT traversal run on every
    // `knot run` node.
    let mut apps_config = TasksConfig::default();
    apps_config.health = config.health;
    let apps = TasksService::new(apps_config);
    let mut gossip_config = GossipConfig::default();
    if let Some(fanout) = args.gossip_fanout {
        gossip_config.fanout = usize::from(fanout);
    }
    if let Some(ttl) = args.gossip_ttl {
        gossip_config.ttl = ttl;
    }
    let gossip = Gossip::new(keypair.clone(), gossip_config);
    let mut nat_config = config.nat_config;
    nat_config.relays = args.relay;
    if config.nat.upnp || args.upnp {
        let mut upnp = knotwork_nat::upnp::UpnpConfig::default();
        upnp.lease = Duration::from_millis(config.nat.upnp_lease_ms);
        nat_config.upnp = Some(upnp);
    }
    // TCP is built in; QUIC (listened on where `listen` says so, dialed
    // whenever a peer's address is one, and punched through NATs), Unix
    // sockets and WebSocket listen and dial too (`quic/0.0.0.0:4000`,
    // `uds//run/knot.sock`, `ws/0.0.0.0:8080/knot`).
    let quic = super::quic_transport(&keypair)?;
    let nat = Nat::new(nat_config).quic(quic.clone());
    let mut builder = Node::builder(keypair.clone())
        .transport(quic)
        .transport(knotwork_transport_uds::UdsTransport::new(Default::default()))
        .transport(knotwork_transport_ws::WsTransport::new(Default::default()))
        .config(config.node)
        .discovery_config(config.discovery)
        .service(apps.clone())
        .service(gossip.clone())
        .service(nat.clone());
    for addr in config.listen {
        builder = builder.listen(addr);
    }
    for addr in config.seeds {
        builder = builder.seed(addr);
    }
    for addr in config.peers {
        builder = builder.peer(addr);
    }
    let republish = args.dht_republish_ms.map(Duration::from_millis);
    let dht = (config.dht.enabled && !args.no_dht)
        .then(|| dht_handle(&keypair, config.dht.mode, republish));
    let dht_mode = dht.as_ref().map(|_| match config.dht.mode {
        DhtMode::Server => "server",
        DhtMode::Client => "client",
    });
    if let Some(dht) = &dht {
        builder = builder.service(dht.clone()).discovery(dht.clone());
    }
    let builder = with_ble(builder, &keypair, &config.ble).await?;
    let lan = Lan::start(&config.mdns, args.no_mdns, global.json);
    let node = lan.register(builder).start().await?;
    if args.worker {
        super::task::register_builtin(&apps);
    }
    for topic in args.subscribe {
        print_gossip(&gossip, topic, global.json);
    }
    let metrics = match args.metrics {
        Some(addr) => match crate::metrics_http::serve(node.metrics(), addr).await {
            Ok(server) => Some(server),
            Err(e) => {
                node.shutdown().await;
                return Err(format!("metrics endpoint {addr}: {e}").into());
            }
        },
        None => None,
    };
    let mut events = node.events();
    let mut nat_events = nat.events();
    let mut discovered = node.discovery_events();
    let control = NodeControl::new(node.clone(), apps, gossip, nat);
    let control = match dht {
        Some(dht) => control.with_dht(dht),
        None => control,
    };
    let server = match ControlServer::bind(&data_dir, control).await {
        Ok(server) => server,
        Err(e) => {
            node.shutdown().await;
            return Err(e.into());
        }
    };
    print(
        global.json,
        &Line::Started {
            peer_id: node.peer_id().to_string(),
            listen: node
                .listen_addrs()
                .iter()
                .map(ToString::to_string)
                .collect(),
            control: server.path().display().to_string(),
            metrics: metrics
                .as_ref()
                .map(|m| format!("http://{}/metrics", m.local_addr())),
            dht: dht_mode,
        },
    );

    let mut term = std::pin::pin!(sigterm());
    let signal = loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    if let Some(line) = node_line(event) {
                        print(global.json, &line);
                    }
                }
                Err(RecvError::Lagged(missed)) => print(global.json, &Line::Lagged { missed }),
                Err(RecvError::Closed) => break "closed",
            },
            event = nat_events.recv() => match event {
                Ok(event) => {
                    if let Some(line) = nat_line(event) {
                        print(global.json, &line);
                    }
                }
                Err(RecvError::Lagged(missed)) => print(global.json, &Line::Lagged { missed }),
                Err(RecvError::Closed) => break "closed",
            },
            event = discovered.recv() => match event {
                Ok(event) => {
                    if let Some(line) = discovery_line(event) {
                        print(global.json, &line);
                    }
                }
                Err(RecvError::Lagged(missed)) => print(global.json, &Line::Lagged { missed }),
                Err(RecvError::Closed) => break "closed",
            },
            result = tokio::signal::ctrl_c() => {
                result?;
                break "interrupt";
            }
            result = &mut term => {
                result?;
                break "terminate";
            }
        }
    };
    print(global.json, &Line::Stopping { signal });
    drop(server);
    drop(metrics);
    lan.goodbye().await;
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l6_a_peers_disconnect_reason_is_printed_escaped_on_one_line() {
        let line = Line::Disconnected {
            peer_id: "12D3KooWpeer".into(),
            reason: "bye\x1b[2J\nconnected 12D3KooWfake tcp/1.2.3.4:1 (manual)".into(),
        };
        let mut out = Vec::new();
        write_line(&mut out, false, &line).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "disconnected 12D3KooWpeer: bye\\u{1b}[2J\\u{a}connected 12D3KooWfake tcp/1.2.3.4:1 (manual)\n"
        );
        let mut json = Vec::new();
        write_line(&mut json, true, &line).unwrap();
        assert_eq!(
            json.iter().filter(|b| **b == b'\n').count(),
            1,
            "JSON escapes too"
        );
    }

    #[test]
    fn a_gossip_line_carries_the_message_id_and_arrival_time() {
        let line = Line::Gossip {
            topic: "news".into(),
            origin: "o".into(),
            seq: 7,
            from: "f".into(),
            data: "hi".into(),
            at_us: 1_700_000_000_000_000,
        };
        let mut json = Vec::new();
        write_line(&mut json, true, &line).unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            "{\"event\":\"gossip\",\"topic\":\"news\",\"origin\":\"o\",\"seq\":7,\"from\":\"f\",\"data\":\"hi\",\"at_us\":1700000000000000}\n"
        );
        let mut text = Vec::new();
        write_line(&mut text, false, &line).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "gossip news o/7 via f: hi\n"
        );
    }
}
