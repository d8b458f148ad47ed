//! A terminal chat over gossip: every line typed is published on a topic;
//! every message received on it is printed with its sender. Nodes on a LAN
//! find each other by mDNS (each announces itself and dials what it finds);
//! `--peer` names a node to keep connected to where multicast does not
//! reach.
//!
//! ```text
//! cargo run -p knotwork-gossip --example chat                      # terminal 1
//! cargo run -p knotwork-gossip --example chat                      # terminal 2 (same LAN)
//! cargo run -p knotwork-gossip --example chat -- --no-mdns --peer tcp/192.168.1.7:4100
//! ```
//!
//! Options: `--listen <addr>` (default `tcp/0.0.0.0:0`), `--peer <addr>`
//! (repeatable), `--topic <name>` (default `chat`), `--no-mdns`.

use std::collections::HashSet;
use std::error::Error;

use futures::StreamExt;
use knotwork_core::{Discovery, DiscoveryEvent, Keypair, LocalPeerInfo, PeerAddr};
use knotwork_discovery_mdns::{MdnsConfig, MdnsDiscovery};
use knotwork_gossip::{Gossip, GossipConfig};
use knotwork_node::Node;
use tokio::io::{AsyncBufReadExt, BufReader};

struct Args {
    listen: PeerAddr,
    peers: Vec<PeerAddr>,
    topic: String,
    mdns: bool,
}

fn args() -> Result<Args, Box<dyn Error>> {
    let mut args = Args {
        listen: "tcp/0.0.0.0:0".parse()?,
        peers: Vec::new(),
        topic: "chat".to_owned(),
        mdns: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => args.listen = value()?.parse()?,
            "--peer" => args.peers.push(value()?.parse()?),
            "--topic" => args.topic = value()?,
            "--no-mdns" => args.mdns = false,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(args)
}

/// Announces the node over mDNS and dials every peer it finds.
async fn mdns(node: &Node) -> Result<MdnsDiscovery, Box<dyn Error>> {
    let mdns = MdnsDiscovery::new(MdnsConfig::default())?;
    let info = LocalPeerInfo {
        peer_id: node.peer_id(),
        addrs: node.listen_addrs(),
    };
    mdns.announce(&info).await?;
    let mut events = mdns.events();
    let node = node.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let DiscoveryEvent::Discovered(peer) = event else {
                continue;
            };
            if peer.peer_id == node.peer_id() || node.channel(&peer.peer_id).is_some() {
                continue;
            }
            for addr in &peer.addrs {
                if node.connect(addr).await.is_ok() {
                    println!("* found {} at {addr}", peer.peer_id.short());
                    break;
                }
            }
        }
    });
    Ok(mdns)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = args()?;
    let keypair = Keypair::generate()?;
    let gossip = Gossip::new(keypair.clone(), GossipConfig::default());
    let mut builder = Node::builder(keypair)
        .listen(args.listen)
        .service(gossip.clone());
    for peer in args.peers {
        builder = builder.peer(peer);
    }
    let node = builder.start().await?;
    println!(
        "* {} on {:?}, topic '{}'; type and press enter, ctrl-d to quit",
        node.peer_id().short(),
        node.listen_addrs(),
        args.topic
    );
    let discovery = if args.mdns {
        match mdns(&node).await {
            Ok(d) => Some(d),
            Err(e) => {
                println!("* mDNS unavailable ({e}); use --peer");
                None
            }
        }
    } else {
        None
    };

    let mut messages = gossip.subscribe(&args.topic);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut seen_peers = HashSet::new();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let (_, sent) = gossip.publish(&args.topic, line.into_bytes()).await?;
                if sent == 0 {
                    println!("* nobody to send to yet");
                }
            }
            message = messages.recv() => {
                let Some(m) = message else { break };
                if seen_peers.insert(m.id.origin) {
                    println!("* {} joined", m.id.origin.short());
                }
                // Another peer's text: escaped, so it cannot drive the terminal.
                let text = String::from_utf8_lossy(&m.data);
                println!("{}: {}", m.id.origin.short(), text.escape_debug());
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    node.shutdown().await;
    if let Some(d) = discovery {
        let _ = d.shutdown().await;
    }
    Ok(())
}
