//! Address exchange: how a node learns of peers it has not met.
//!
//! On every channel the node answers `GetAddrs` requests with up to
//! [`MAX_ADDRS`] addresses from its white list (hosts it verified) that are in
//! the requester's scope: loopback addresses only to a peer on loopback,
//! private ones only to a peer on a private network or loopback (see
//! [`AddrScope::shareable_with`]); the requester's own address is left out.
//! On channels it dialed, the node asks once right after the channel opens and
//! puts the answers in its grey list, keeping only addresses in the same
//! scope as the peer that sent them (a public peer cannot make us dial
//! loopback or LAN services) and never its own. The node's refinery later
//! verifies grey hosts with a handshake before they turn white and become
//! candidates for outbound slots.

use std::sync::{Arc, Mutex};

use knotwork_core::{MAX_ADDR_TEXT_LEN, PeerAddr, lock};
use knotwork_wire::Message;
use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::hosts::{AddrScope, HostStore};
use crate::meter::RateBudget;

/// Most addresses in one [`Addrs`].
pub const MAX_ADDRS: usize = 32;

/// The rate budget of address requests: they are rare.
pub const BUDGET: RateBudget = RateBudget::new(1.0, 5);

/// Asks for up to `max` known addresses; answered with [`Addrs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetAddrs {
    /// How many addresses at most.
    pub max: u32,
}

impl Message for GetAddrs {
    const NAME: &'static str = "knot/get-addrs/1";
    // max: u32 varint, at most 5 bytes.
    const MAX_BYTES: usize = 5;
}

/// Known addresses, in the text form of [`PeerAddr`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addrs {
    /// The addresses.
    pub addrs: Vec<String>,
}

impl Message for Addrs {
    const NAME: &'static str = "knot/addrs/1";
    // addrs: 1 (count) + 32 × (2 (length) + 160) = 5185 bytes.
    const MAX_BYTES: usize = 1 + MAX_ADDRS * (2 + MAX_ADDR_TEXT_LEN);
}

/// The address protocol on one channel. `own` are this node's addresses
/// (never stored); `ask` sends a `GetAddrs` when the channel opens.
pub fn protocol(
    channel: &Channel,
    hosts: Arc<Mutex<HostStore>>,
    own: Arc<Vec<PeerAddr>>,
    ask: bool,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let mut requests = channel.subscribe_requests::<GetAddrs>();
    let channel = channel.clone();
    async move {
        let peer_addr = channel.remote_addr().clone();
        let peer_listen = channel
            .info()
            .version
            .parsed_listen_addrs()
            .unwrap_or_default();
        if ask {
            let req = GetAddrs {
                max: MAX_ADDRS as u32,
            };
            // Boxed, as the answer below: the job's future is as large as
            // its largest state, and it waits in the smallest for good.
            let asked = Box::pin(channel.request::<GetAddrs, Addrs>(&req));
            if let Ok(Addrs { addrs }) = asked.await {
                let fresh = addrs
                    .iter()
                    .take(MAX_ADDRS)
                    .filter_map(|a| a.parse::<PeerAddr>().ok())
                    .filter(|a| !own.contains(a));
                let now = tokio::time::Instant::now().into_std();
                lock(&hosts).add_grey(fresh, AddrScope::of(&peer_addr), now);
            }
        }
        while let Some((GetAddrs { max }, responder)) = requests.recv().await {
            let max = usize::try_from(max).unwrap_or(MAX_ADDRS).min(MAX_ADDRS);
            let addrs = lock(&hosts)
                .shareable(&peer_addr, max + 1 + peer_listen.len())
                .into_iter()
                .filter(|a| *a != peer_addr && !peer_listen.contains(a))
                .take(max)
                .map(|a| a.to_string())
                .collect();
            if Box::pin(responder.respond(&Addrs { addrs })).await.is_err() {
                return;
            }
        }
    }
}
