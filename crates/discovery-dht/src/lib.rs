//! knotwork-discovery-dht: Kademlia as a sans-IO state machine.
//!
//! The core ([`Dht`]) has no sockets, no tasks and no clock: messages and the
//! current [`Time`] come in, messages to send and events come out. That is
//! what lets [`sim`] run 10,000 nodes in one process on virtual time, and a
//! thin driver carry the same core over authenticated channels.
//!
//! # Layout
//! - [`key`]: the 256-bit key space (SHA-256 of ids and record keys), XOR
//!   distance, bucket index = shared prefix length.
//! - [`table`]: [`RoutingTable`] of [`KBucket`]s (k = 20) with replacement
//!   caches, eviction only after a failed ping, per-/24 and per-/64 limits.
//! - [`query`]: the iterative lookup ([`Query`]): α = 3 in flight, optional
//!   disjoint paths.
//! - [`record`]: signed [`Record`]s, providers, the [`RecordStore`].
//! - [`message`]: the wire messages ([`DhtMessage`], postcard).
//! - [`dht`]: [`Dht`], which ties them together; [`config`]: its settings.
//! - [`sim`]: a deterministic simulated network of many cores.
//!
//! # Data flow
//! ```text
//!   driver / simulator                         Dht
//!   ───────────────────                        ───────────────────────────
//!   bytes from peer ─decode─▶ handle_message(now, from, addr, msg)
//!   timer fired ────────────▶ handle_timeout(now)      RoutingTable
//!   app: find_node/put/get ─▶ (calls)                  Query × n, RecordStore
//!   send ◀──encode── poll_transmit() ◀─────────────────┘
//!   app  ◀────────── poll_event()
//!   arm timer ◀───── poll_timeout()
//! ```
//!
//! # Errors
//! Every input a peer can get wrong is refused with a named [`DhtError`]
//! variant and leaves the state consistent: a bad response counts as a
//! failed request, so the query moves on without it.
//!
//! # Logging
//! The core logs one `debug` event per finished query, `query finished`
//! (target `knotwork_discovery_dht::dht::lookup`), with its `kind` (`find_node`,
//! `get`, `put`, `provide`, `providers`), `origin` (`App`, `Bootstrap`,
//! `Background`, `Replication`), whether the peer whose key was the target was `found`
//! and at how many `hops` ([`QueryStats::hops`]), `requests`, `responses`,
//! `failures`, `ms` and `timed_out`: what `cargo xtask testnet` reads the
//! hops of real lookups from. It logs nothing else.
//!
//! # Example
//! Two cores wired by hand: `b` knows `a`, and looks up `a`'s key.
//! ```
//! use knotwork_core::{Keypair, PeerAddr};
//! use knotwork_discovery_dht::{Config, Dht, Event, Key, QueryResult, Time};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (ka, kb) = (Keypair::generate()?, Keypair::generate()?);
//! let mut a = Dht::new(ka.peer_id(), Config::default());
//! let mut b = Dht::new(kb.peer_id(), Config::default());
//! let now = Time(0);
//! b.add_peer(now, ka.peer_id(), &[PeerAddr::Mem(1)])?;
//! let query = b.find_node(now, Key::from_peer_id(&ka.peer_id()));
//! // Shuttle messages until both are quiet.
//! loop {
//!     let mut moved = false;
//!     while let Some(t) = b.poll_transmit() {
//!         a.handle_message(now, kb.peer_id(), PeerAddr::Mem(2), t.message)?;
//!         moved = true;
//!     }
//!     while let Some(t) = a.poll_transmit() {
//!         b.handle_message(now, ka.peer_id(), PeerAddr::Mem(1), t.message)?;
//!         moved = true;
//!     }
//!     if !moved { break; }
//! }
//! let found = std::iter::from_fn(|| b.poll_event()).find_map(|e| match e {
//!     Event::QueryFinished { id, result: QueryResult::FindNode { closest, .. }, .. }
//!         if id == query => Some(closest),
//!     _ => None,
//! });
//! assert_eq!(found.unwrap()[0].peer_id, ka.peer_id());
//! // `a` learned about `b` from its request.
//! assert!(a.table().get(&kb.peer_id()).is_some());
//! # Ok(()) }
//! ```

pub mod config;
pub mod dht;
mod error;
pub mod key;
pub mod message;
pub mod query;
pub mod record;
pub mod sim;
pub mod table;
pub mod time;

pub use config::{Config, Mode};
pub use dht::{Dht, Event, QueryId, QueryResult, QueryStats, Transmit};
pub use error::DhtError;
pub use key::{Distance, Key};
pub use message::{DhtMessage, PeerInfo, Request, Response};
pub use query::Query;
pub use record::{
    PEER_RECORD_PREFIX, Provider, Record, RecordLimits, RecordStore, StoreLimits, peer_record_key,
};
pub use table::{Eviction, Failed, InsertOutcome, KBucket, RoutingTable};
pub use time::Time;

#[cfg(test)]
mod tests;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
