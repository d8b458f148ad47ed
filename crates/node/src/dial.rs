//! The node's dial policy: every outbound connection, whoever asks for it
//! (the user, the maintenance loop, discovery, a service such as the DHT
//! or the relay client), goes through one entry point,
//! [`NodeHandle::dial`](crate::NodeHandle::dial), which applies:
//!
//! 1. **Scope.** An address a peer gave us is dialed only if its
//!    [`AddrScope`] may be shared with that peer's scope
//!    ([`AddrScope::shareable_with`]): a public peer never makes the node
//!    dial loopback or private ranges ([`DialOpts::heard_from`]).
//! 2. **A budget per cause.** Discovery and each service have their own
//!    token bucket ([`NodeConfig::dial_budget`](crate::NodeConfig::dial_budget));
//!    the user's, the seeds' and the outbound slots' dials are bounded by
//!    their own counts instead.
//! 3. **One dial per address.** A dial of an address that is being dialed
//!    waits for that dial and shares its channel; an outbound handshake
//!    with a peer another dial is opening gives way to it.
//!
//! A refusal is an error naming the rule ([`NodeError::OutOfScope`],
//! [`NodeError::DialBudget`]). `DialGate` holds the rules' state
//! (sans-IO: time is an argument).

use std::collections::HashMap;
use std::time::Instant;

use knotwork_core::{PeerAddr, PeerId};
use tokio::sync::watch;

use crate::DisconnectReason;
use crate::error::NodeError;
use crate::hosts::AddrScope;
use crate::meter::{RateBudget, TokenBucket};
use crate::registry::SessionKind;

/// Why the node dials; each budgeted cause has a budget of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DialCause {
    /// The application asked ([`NodeHandle::connect`](crate::NodeHandle::connect)).
    User,
    /// A seed, manual peer or relay the node keeps connected.
    Seed,
    /// Filling an outbound slot from the white list.
    Slots,
    /// A peer a discovery source reported.
    Discovery,
    /// A service (the DHT, the relay client, …), by name.
    Service(&'static str),
}

impl DialCause {
    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Seed => "seed",
            Self::Slots => "slots",
            Self::Discovery => "discovery",
            Self::Service(name) => name,
        }
    }

    /// Whether dials of this cause are charged to a budget.
    pub fn budgeted(self) -> bool {
        matches!(self, Self::Discovery | Self::Service(_))
    }

    /// The session a channel dialed for this cause is.
    pub fn session(self) -> SessionKind {
        match self {
            Self::User => SessionKind::Manual,
            Self::Seed => SessionKind::Seed,
            Self::Slots | Self::Discovery | Self::Service(_) => SessionKind::Outbound,
        }
    }
}

impl std::fmt::Display for DialCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// How to dial; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DialOpts {
    /// Why.
    pub cause: DialCause,
    /// The peer that must answer; another fails the handshake with
    /// [`knotwork_crypto_handshake::HandshakeError::PeerIdMismatch`].
    pub peer: Option<PeerId>,
    /// The scope of the peer the address came from, if a peer gave it; the
    /// address must be shareable with it.
    pub heard_from: Option<AddrScope>,
}

impl DialOpts {
    /// A dial for `cause`, any peer, an address we trust.
    pub fn new(cause: DialCause) -> Self {
        Self {
            cause,
            peer: None,
            heard_from: None,
        }
    }

    /// Requires `peer` at the address.
    pub fn peer(mut self, peer: PeerId) -> Self {
        self.peer = Some(peer);
        self
    }

    /// The address came from a peer whose connection has scope `scope`.
    pub fn heard_from(mut self, scope: AddrScope) -> Self {
        self.heard_from = Some(scope);
        self
    }
}

/// How a dial ended, for those who waited on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It reached this peer.
    Reached(PeerId),
    /// The peer refused it, saying why (a follower reports the same).
    Refused(DisconnectReason),
    /// It failed otherwise.
    Failed,
}

/// What [`DialGate::begin`] decided.
pub(crate) enum Admission {
    /// Dial; report the end with [`DialGate::end`].
    Lead(watch::Sender<Option<Outcome>>),
    /// Another dial of this address is under way: wait for its outcome.
    Follow(watch::Receiver<Option<Outcome>>),
}

/// The policy's state; see the module docs.
#[derive(Debug)]
pub(crate) struct DialGate {
    budget: RateBudget,
    buckets: HashMap<&'static str, TokenBucket>,
    in_flight: HashMap<PeerAddr, (DialCause, watch::Receiver<Option<Outcome>>)>,
}

impl DialGate {
    pub(crate) fn new(budget: RateBudget) -> Self {
        Self {
            budget,
            buckets: HashMap::new(),
            in_flight: HashMap::new(),
        }
    }

    /// Applies the rules to a dial of `addr` at `now`.
    pub(crate) fn begin(
        &mut self,
        addr: &PeerAddr,
        opts: &DialOpts,
        now: Instant,
    ) -> Result<Admission, NodeError> {
        if let Some(from) = opts.heard_from
            && !AddrScope::of(addr).shareable_with(from)
        {
            return Err(NodeError::OutOfScope(addr.clone()));
        }
        if let Some((_, rx)) = self.in_flight.get(addr) {
            return Ok(Admission::Follow(rx.clone()));
        }
        if opts.cause.budgeted() {
            let budget = self.budget;
            let bucket = self
                .buckets
                .entry(opts.cause.label())
                .or_insert_with(|| TokenBucket::new(budget, now));
            if !bucket.take(budget, now) {
                return Err(NodeError::DialBudget(opts.cause));
            }
        }
        let (tx, rx) = watch::channel(None);
        self.in_flight.insert(addr.clone(), (opts.cause, rx));
        Ok(Admission::Lead(tx))
    }

    /// The dial of `addr` ended, reaching `outcome`.
    pub(crate) fn end(
        &mut self,
        addr: &PeerAddr,
        tx: &watch::Sender<Option<Outcome>>,
        outcome: Outcome,
    ) {
        self.in_flight.remove(addr);
        tx.send_replace(Some(outcome));
    }

    /// Dials under way for `cause`.
    pub(crate) fn in_flight(&self, cause: DialCause) -> usize {
        self.in_flight.values().filter(|(c, _)| *c == cause).count()
    }

    /// Whether `addr` is being dialed.
    pub(crate) fn is_dialing(&self, addr: &PeerAddr) -> bool {
        self.in_flight.contains_key(addr)
    }

    /// The addresses being dialed.
    pub(crate) fn addrs(&self) -> impl Iterator<Item = &PeerAddr> {
        self.in_flight.keys()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn a(s: &str) -> PeerAddr {
        s.parse().unwrap()
    }

    fn lead(r: Result<Admission, NodeError>) -> watch::Sender<Option<Outcome>> {
        match r {
            Ok(Admission::Lead(tx)) => tx,
            Ok(Admission::Follow(_)) => panic!("followed"),
            Err(e) => panic!("refused: {e}"),
        }
    }

    #[test]
    fn a_public_peer_cannot_make_us_dial_private_or_loopback_addresses() {
        let mut gate = DialGate::new(RateBudget::default());
        let now = Instant::now();
        let opts = DialOpts::new(DialCause::Service("dht")).heard_from(AddrScope::Public);
        for addr in [
            "tcp/127.0.0.1:22",
            "tcp/10.0.0.1:80",
            "tcp/169.254.169.254:80",
        ] {
            assert!(matches!(
                gate.begin(&a(addr), &opts, now),
                Err(NodeError::OutOfScope(_))
            ));
        }
        lead(gate.begin(&a("tcp/198.51.100.7:4000"), &opts, now));
        // A private peer may give private addresses; nobody gives unroutable ones.
        let private = DialOpts::new(DialCause::Discovery).heard_from(AddrScope::Private);
        lead(gate.begin(&a("tcp/10.0.0.1:80"), &private, now));
        assert!(gate.begin(&a("tcp/0.0.0.0:80"), &private, now).is_err());
    }

    #[test]
    fn each_budgeted_cause_has_its_own_bucket() {
        let mut gate = DialGate::new(RateBudget::new(1.0, 2));
        let now = Instant::now();
        let dht = DialOpts::new(DialCause::Service("dht"));
        for i in 0..2 {
            let tx = lead(gate.begin(&PeerAddr::Mem(i), &dht, now));
            gate.end(&PeerAddr::Mem(i), &tx, Outcome::Failed);
        }
        assert!(matches!(
            gate.begin(&PeerAddr::Mem(9), &dht, now),
            Err(NodeError::DialBudget(DialCause::Service("dht")))
        ));
        // Other causes are not affected; the user's dials are not budgeted.
        lead(gate.begin(
            &PeerAddr::Mem(10),
            &DialOpts::new(DialCause::Discovery),
            now,
        ));
        for i in 20..40 {
            lead(gate.begin(&PeerAddr::Mem(i), &DialOpts::new(DialCause::User), now));
        }
        // A second later one token is back.
        let later = now + Duration::from_secs(1);
        lead(gate.begin(&PeerAddr::Mem(9), &dht, later));
    }

    #[tokio::test]
    async fn a_second_dial_of_an_address_follows_the_first() {
        let mut gate = DialGate::new(RateBudget::default());
        let now = Instant::now();
        let opts = DialOpts::new(DialCause::Service("dht"));
        let addr = a("tcp/198.51.100.7:4000");
        let tx = lead(gate.begin(&addr, &opts, now));
        let Ok(Admission::Follow(mut rx)) = gate.begin(&addr, &opts, now) else {
            panic!("expected to follow");
        };
        assert!(gate.is_dialing(&addr));
        assert_eq!(gate.in_flight(DialCause::Service("dht")), 1);
        let peer = knotwork_core::Keypair::generate().unwrap().peer_id();
        gate.end(&addr, &tx, Outcome::Reached(peer));
        let outcome = rx.wait_for(Option::is_some).await.unwrap().clone();
        assert_eq!(outcome, Some(Outcome::Reached(peer)));
        assert!(!gate.is_dialing(&addr));
    }
}
