//! Reachability over node channels: peers dial each other back (the AutoNAT
//! idea) and each node learns whether it is [`Reachability::Public`](crate::Reachability::Public).
//!
//! # Asking
//! One task per node runs the sans-IO [`ReachabilityCheck`]. A server it
//! may ask is a peer the node chose: a direct channel the node dialed
//! (outbound, seed or manual) to a peer that runs `knot/reachability`.
//! Peers that connected to us are never asked, so sybils that connect in
//! cannot decide the verdict; the check asks one server per network.
//! It sends such a peer [`DialBack`] with our candidate addresses: the IP
//! that peer sees our connection come from (its version message) with each
//! TCP listen port, our confirmed external addresses and the UPnP mapping
//! (see [`crate::holepunch::candidates`]). The peer answers
//! [`DialBackResult`]: the address it reached us at, or a
//! [`DialBackError`]. An answer naming an address we did not send is
//! dropped (a peer cannot make us advertise a stranger's address). The
//! candidate set is recomputed on every node event (a confirmed address, a
//! UPnP mapping gained or lost: the advertised addresses change), and a
//! change starts a new round. Each
//! change of the verdict is stored, logged, counted in
//! `knot_reachability{state}` and emitted as
//! [`NatEvent::ReachabilityChanged`](crate::NatEvent::ReachabilityChanged).
//!
//! # Answering
//! [`DialBackLimiter`](crate::DialBackLimiter) admits the request: only the first candidate at the
//! IP the asker's channel comes from, on a direct channel, within the rate
//! and concurrency limits ([`crate::NatConfig::dial_back`]). The node
//! then probes it ([`NodeHandle::probe`]: a plain dial from a fresh socket,
//! a new ephemeral port, never the listen port, so the asker's NAT has no
//! mapping for it, and the Noise handshake only): it proves the listener
//! there holds the asker's key, then the connection is closed as a probe.
//! Connect and handshake together get the node's handshake timeout.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use knotwork_core::{MAX_ADDR_TEXT_LEN, PeerAddr, PeerId, lock};
use knotwork_crypto_handshake::HandshakeError;
use knotwork_node::{Channel, NodeError, NodeEvent, NodeHandle, SessionKind};
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::holepunch::{MAX_PUNCH_ADDRS, candidates};
use crate::{DialBackError, Inner, Question, ReachabilityCheck};

/// The protocol name announced in the version exchange.
pub const NAME: &str = "knot/reachability";

/// Most candidate addresses in one [`DialBack`].
pub const MAX_DIAL_BACK_ADDRS: usize = MAX_PUNCH_ADDRS;

/// "Dial me back at one of these"; answered with [`DialBackResult`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialBack {
    /// Text forms of TCP [`PeerAddr`]s.
    pub addrs: Vec<String>,
}

impl Message for DialBack {
    const NAME: &'static str = "knot/reachability/dial-back/1";
    // addrs: 1 (count) + 8 × (2 (length) + 160).
    const MAX_BYTES: usize = 1 + MAX_DIAL_BACK_ADDRS * (2 + MAX_ADDR_TEXT_LEN);
}

/// The address the peer reached us at, or why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialBackResult(pub Result<String, DialBackError>);

impl Message for DialBackResult {
    const NAME: &'static str = "knot/reachability/result/1";
    // Result tag 1 + (length 2 + 160 | error variant 1).
    const MAX_BYTES: usize = 3 + MAX_ADDR_TEXT_LEN;
}

/// The tokio clock (virtual in tests), as a std instant for the cores.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// The peer's candidates, parsed; what does not parse is dropped.
fn parse(addrs: &[String]) -> Vec<PeerAddr> {
    addrs
        .iter()
        .take(MAX_DIAL_BACK_ADDRS)
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// Serves dial-back requests on one channel.
pub(crate) fn protocol(
    channel: &Channel,
    nat: Arc<Inner>,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let mut requests = channel.subscribe_requests::<DialBack>();
    let channel = channel.clone();
    async move {
        let peer = channel.remote_peer_id();
        while let Some((DialBack { addrs }, responder)) = requests.recv().await {
            let Some(node) = nat.node() else {
                return;
            };
            let admitted = match &nat.dial_backs {
                Some(limiter) => {
                    lock(limiter).admit(peer, channel.remote_addr(), &parse(&addrs), now())
                }
                None => Err(DialBackError::Disabled),
            };
            let target = match admitted {
                Ok(target) => target,
                Err(e) => {
                    tracing::info!(peer = %peer.short(), addr = %channel.remote_addr(), "{e}");
                    let _ = responder.respond(&DialBackResult(Err(e))).await;
                    continue;
                }
            };
            // Counts the dial-back as running until its job ends, however it
            // ends (the channel may close first, or before it starts).
            struct Running(Arc<Inner>);
            impl Drop for Running {
                fn drop(&mut self) {
                    if let Some(limiter) = &self.0.dial_backs {
                        lock(limiter).finish();
                    }
                }
            }
            let running = Running(nat.clone());
            channel.spawn(async move {
                let _running = running;
                let answer = dial_back(&node, peer, PeerAddr::Tcp(target)).await;
                tracing::debug!(peer = %peer.short(), %target, ?answer, "dial-back");
                let answer = DialBackResult(answer.map(|a| a.to_string()));
                let _ = responder.respond(&answer).await;
            });
        }
    }
}

/// Probes `peer` at `addr` from a fresh socket: whether the listener there
/// holds `peer`'s key.
async fn dial_back(
    node: &NodeHandle,
    peer: PeerId,
    addr: PeerAddr,
) -> Result<PeerAddr, DialBackError> {
    match node.probe(&addr, Some(peer)).await {
        Ok(_) => Ok(addr),
        Err(NodeError::Handshake(HandshakeError::PeerIdMismatch { .. })) => {
            Err(DialBackError::WrongPeer)
        }
        Err(NodeError::Handshake(_)) => Err(DialBackError::HandshakeFailed),
        Err(_) => Err(DialBackError::Unreachable),
    }
}

/// Our external addresses that are not relayed: confirmed by peers, and the
/// UPnP mapping.
fn external(nat: &Inner) -> Vec<PeerAddr> {
    #[allow(unused_mut)]
    let mut out = nat.confirmed();
    #[cfg(feature = "upnp")]
    out.extend(nat.upnp.external());
    out
}

/// The IP `channel`'s peer sees our connection come from.
fn observed_ip(channel: &Channel) -> Option<IpAddr> {
    match channel.info().version.observed_addr.parse::<PeerAddr>() {
        Ok(PeerAddr::Tcp(sa)) => Some(sa.ip()),
        _ => None,
    }
}

/// Whether the check may ask the peer of `channel`: we dialed it, directly,
/// and it runs the protocol.
fn serves(channel: &Channel) -> bool {
    channel.info().session != SessionKind::Inbound
        && !channel.remote_addr().is_relayed()
        && channel.info().version.protocols.iter().any(|p| p == NAME)
}

/// The peer's channel if the check may ask it.
fn server(node: &NodeHandle, peer: &PeerId) -> Option<Channel> {
    node.channel(peer).filter(serves)
}

type Answer = (Question, Result<PeerAddr, DialBackError>);

/// Sends the question's peer a [`DialBack`] and passes its answer to
/// `answers`; no answer (timeout, channel gone, an address we did not
/// send) passes nothing and the check's own deadline expires the question.
fn ask(
    node: &NodeHandle,
    nat: &Inner,
    question: Question,
    timeout: Duration,
    answers: mpsc::Sender<Answer>,
) {
    let Some(channel) = server(node, &question.peer) else {
        return;
    };
    let sent = candidates(&node.listen_addrs(), &external(nat), observed_ip(&channel));
    let request = DialBack {
        addrs: sent.iter().map(ToString::to_string).collect(),
    };
    let ch = channel.clone();
    channel.spawn(async move {
        let answer = match ch
            .request_timeout::<DialBack, DialBackResult>(&request, timeout)
            .await
        {
            Ok(DialBackResult(Ok(text))) => match text.parse::<PeerAddr>() {
                Ok(addr) if sent.contains(&addr) => Ok(addr),
                _ => return,
            },
            Ok(DialBackResult(Err(e))) => Err(e),
            Err(_) => return,
        };
        let _ = answers.send((question, answer)).await;
    });
}

/// The asking side: runs the check until shutdown; see the module docs.
pub(crate) async fn run(node: NodeHandle, nat: Arc<Inner>) {
    let config = nat.config.reachability;
    let mut check = ReachabilityCheck::new(config, now());
    let mut events = node.events();
    // A confirmed address or a UPnP mapping changes the candidates.
    let mut advertised = node.watch_advertised();
    let (tx, mut answers) = mpsc::channel::<Answer>(config.servers.max(1));
    for channel in node.channels().iter().filter(|c| serves(c)) {
        check.add_server(channel.remote_peer_id(), channel.remote_addr());
    }
    loop {
        let t = now();
        check.set_candidates(candidates(&node.listen_addrs(), &external(&nat), None), t);
        while let Some(question) = check.poll_ask(t) {
            ask(&node, &nat, question, config.answer_timeout, tx.clone());
        }
        while let Some(reachability) = check.poll_event() {
            nat.publish(reachability);
        }
        let wake = check.poll_timeout().map(tokio::time::Instant::from_std);
        let timer = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = advertised.changed() => if changed.is_err() {
                return;
            },
            event = events.recv() => match event {
                Ok(NodeEvent::Connected { peer, .. }) => {
                    if let Some(channel) = server(&node, &peer) {
                        check.add_server(peer, channel.remote_addr());
                    }
                }
                Ok(NodeEvent::Disconnected { peer, .. }) => {
                    // A duplicate closing leaves the channel that won.
                    if server(&node, &peer).is_none() {
                        check.remove_server(&peer, now());
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            Some((question, answer)) = answers.recv() => check.handle_answer(question, answer, now()),
            () = timer => check.handle_timeout(now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_wire::{decode, encode};
    use proptest::prelude::*;

    fn any_error() -> impl Strategy<Value = DialBackError> {
        prop_oneof![
            Just(DialBackError::Disabled),
            Just(DialBackError::NotDirect),
            Just(DialBackError::NoCandidate),
            Just(DialBackError::ThirdParty),
            Just(DialBackError::PeerRateLimited),
            Just(DialBackError::GlobalRateLimited),
            Just(DialBackError::Busy),
            Just(DialBackError::Unreachable),
            Just(DialBackError::HandshakeFailed),
            Just(DialBackError::WrongPeer),
            Just(DialBackError::NetRateLimited),
        ]
    }

    #[test]
    fn test_unparsable_candidates_are_dropped() {
        let addrs = vec!["tcp/1.2.3.4:5".to_owned(), "junk".into(), "mem/3".into()];
        let parsed = parse(&addrs);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], "tcp/1.2.3.4:5".parse().unwrap());
    }

    proptest! {
        #[test]
        fn messages_round_trip(
            addrs in proptest::collection::vec("[ -~]{0,160}", 0..=MAX_DIAL_BACK_ADDRS),
            addr in "[ -~]{0,160}",
            err in any_error(),
        ) {
            let d = DialBack { addrs };
            let bytes = encode(&d).unwrap();
            prop_assert!(bytes.len() <= DialBack::MAX_BYTES);
            prop_assert_eq!(decode::<DialBack>(&bytes).unwrap(), d);
            for r in [DialBackResult(Ok(addr)), DialBackResult(Err(err))] {
                let bytes = encode(&r).unwrap();
                prop_assert!(bytes.len() <= DialBackResult::MAX_BYTES);
                prop_assert_eq!(decode::<DialBackResult>(&bytes).unwrap(), r);
            }
        }

        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<DialBack>(&bytes);
            let _ = decode::<DialBackResult>(&bytes);
        }
    }
}
