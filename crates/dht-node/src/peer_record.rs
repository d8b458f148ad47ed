//! Our peer record: the addresses this node publishes under its own peer
//! key, kept current as the node's advertised addresses change, and how a
//! lookup's entry for a peer is merged with the addresses of its record.

use std::time::Duration;

use knotwork_core::{PeerAddr, PeerId};
use knotwork_discovery_dht::{PeerInfo, peer_record_key};
use knotwork_node::NodeHandle;

use crate::DhtHandle;

/// A lookup's entry for `peer` with the addresses of its record appended
/// (without repeats); `None` if there is neither.
pub(crate) fn merge_peer(
    peer: PeerId,
    found: Option<PeerInfo>,
    published: Vec<PeerAddr>,
) -> Option<PeerInfo> {
    if found.is_none() && published.is_empty() {
        return None;
    }
    let mut info = found.unwrap_or(PeerInfo {
        peer_id: peer,
        addrs: Vec::new(),
    });
    for addr in published {
        if !info.addrs.contains(&addr) {
            info.addrs.push(addr);
        }
    }
    Some(info)
}

/// How often an update of our peer record that reached no peer is tried
/// again.
const RECORD_RETRY: Duration = Duration::from_secs(2);

/// Keeps our peer record current: puts it again when the addresses the node
/// advertises change, until a peer stored it (see the module docs).
pub(crate) async fn keep_peer_record(dht: DhtHandle, node: NodeHandle) {
    let mut advertised = node.watch_advertised();
    let mut published = publishable(&node.listen_addrs());
    let mut retry = false;
    loop {
        let timer = async {
            if retry {
                tokio::time::sleep(RECORD_RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = timer => {}
            changed = advertised.changed() => if changed.is_err() {
                return;
            },
        }
        let addrs = publishable(&advertised.borrow_and_update().clone());
        if addrs == published || addrs.is_empty() {
            retry = false;
            continue;
        }
        let key = peer_record_key(&node.peer_id());
        match dht.put(key, encode_addrs(&addrs)).await {
            Ok(stored) if stored > 0 => {
                let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                tracing::info!(stored, "dht: peer record updated: {}", list.join(" "));
                published = addrs;
                retry = false;
            }
            Ok(_) => retry = true,
            Err(e) => {
                tracing::debug!("dht: peer record update failed: {e}");
                retry = true;
            }
        }
    }
}

/// Our own addresses for our peer record: wildcard listen addresses say
/// nothing to a peer elsewhere, so they are left out (peers learn those
/// from the connection instead, see `link::reachable`).
pub(crate) fn publishable(addrs: &[PeerAddr]) -> Vec<PeerAddr> {
    addrs
        .iter()
        .filter(|a| !matches!(a, PeerAddr::Tcp(sa) if sa.ip().is_unspecified()))
        .cloned()
        .collect()
}

/// A peer record's value: one address per line; lines that do not parse
/// are skipped.
pub(crate) fn encode_addrs(addrs: &[PeerAddr]) -> Vec<u8> {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

pub(crate) fn parse_addrs(value: &[u8]) -> Vec<PeerAddr> {
    String::from_utf8_lossy(value)
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_core::Keypair;

    #[test]
    fn wildcard_listen_addresses_are_not_published() {
        let a = |s: &str| s.parse::<PeerAddr>().unwrap();
        let listen = vec![
            a("tcp/0.0.0.0:4000"),
            a("tcp/[::]:4000"),
            a("tcp/192.0.2.7:4001"),
            a("tcp/10.0.0.2:4000"),
        ];
        assert_eq!(
            publishable(&listen),
            vec![a("tcp/192.0.2.7:4001"), a("tcp/10.0.0.2:4000")]
        );
    }

    #[test]
    fn a_found_peer_gets_its_records_addresses_added() {
        let a = |s: &str| s.parse::<PeerAddr>().unwrap();
        let peer = Keypair::generate().unwrap().peer_id();
        let relay = Keypair::generate().unwrap().peer_id();
        let relayed = PeerAddr::relayed(a("tcp/192.0.2.1:4000"), relay, peer).unwrap();
        let seen = a("tcp/198.51.100.2:4000");
        assert_eq!(merge_peer(peer, None, Vec::new()), None);
        let found = PeerInfo {
            peer_id: peer,
            addrs: vec![seen.clone()],
        };
        let merged = merge_peer(peer, Some(found), vec![seen.clone(), relayed.clone()]);
        assert_eq!(merged.unwrap().addrs, vec![seen, relayed.clone()]);
        // Only the record: still found.
        let merged = merge_peer(peer, None, vec![relayed.clone()]).unwrap();
        assert_eq!(
            (merged.peer_id, merged.addrs),
            (peer, vec![relayed.clone()])
        );
        // The record's text form carries the relayed address.
        assert_eq!(
            parse_addrs(&encode_addrs(std::slice::from_ref(&relayed))),
            vec![relayed]
        );
    }
}
