//! knotwork-policy: the rules a node applies to the peers it meets, as
//! sans-IO state machines. Time (and, where it matters, randomness) comes
//! in as an argument, so every rule is testable without tokio, sockets or a
//! wall clock, and a runtime other than `knotwork-node` can use them as
//! they are.
//!
//! - [`meter`]: per-message-type rate budgets ([`RateBudget`],
//!   [`TokenBucket`]), a decaying misbehaviour score per peer ([`Meter`],
//!   [`Offence`], [`Verdict`]) and a capped ban list ([`BanList`]).
//! - [`admission`]: who may start a handshake (a token bucket per host,
//!   [`StartBudget`]) and who keeps a pending slot ([`Pending`], which
//!   evicts the oldest idle connection of the busiest origin instead of
//!   refusing a new one).
//! - [`backoff`]: when to retry a peer that failed ([`Backoff`]), with
//!   doubling delays and equal jitter.
//! - [`hosts`]: the addresses a node knows ([`HostStore`]: grey, white and
//!   black lists, capped, diverse by netgroup) and which of them may be
//!   dialed or shared with which peer ([`AddrScope`]).
//!
//! `knotwork-node` applies all four on its connection pipeline and
//! re-exports them under the same module names.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use knotwork_policy::{Meter, MeterConfig, Offence, Verdict};
//!
//! let now = Instant::now();
//! let mut meter = Meter::new(MeterConfig::default(), now);
//! // A slip costs points; enough of them at once reach the ban threshold.
//! assert_eq!(meter.offend(Offence::Malformed, now), Verdict::Drop);
//! assert_eq!(meter.offend(Offence::BadFraming, now), Verdict::Ban);
//! // Points decay (one per second by default): an hour later, a slip is forgiven.
//! let mut quiet = Meter::new(MeterConfig::default(), now);
//! for _ in 0..3 {
//!     quiet.offend(Offence::Malformed, now);
//! }
//! assert_eq!(quiet.offend(Offence::Malformed, now + Duration::from_secs(3600)), Verdict::Drop);
//! ```

pub mod admission;
pub mod backoff;
pub mod hosts;
pub mod meter;

pub use admission::{Admit, Origin, Pending, StartBudget};
pub use backoff::{Backoff, BackoffConfig};
pub use hosts::{AddrScope, HostList, HostStore};
pub use meter::{BanList, Meter, MeterConfig, Offence, RateBudget, TokenBucket, Verdict};

/// Compiles and runs the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
