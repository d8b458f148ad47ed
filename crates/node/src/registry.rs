//! [`ProtocolRegistry`]: which protocols run on which channels.
//!
//! A protocol is a constructor: a function that gets the new [`Channel`],
//! subscribes to the messages it needs (synchronously, before the channel
//! reads its first frame, so nothing arrives unsubscribed) and returns the
//! future that runs the protocol. The registry calls every constructor whose
//! [`Sessions`] include the channel's [`SessionKind`] and spawns the futures
//! as jobs of the channel; they are aborted when the channel closes.

use std::future::Future;
use std::ops::BitOr;
use std::sync::Arc;

use crate::channel::Channel;

/// How a connection came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionKind {
    /// A peer dialed us.
    Inbound,
    /// We dialed an address from the host store to fill an outbound slot.
    Outbound,
    /// We dialed a peer the user named (kept connected, with backoff).
    Manual,
    /// We dialed a seed (kept connected, with backoff).
    Seed,
}

/// A set of [`SessionKind`]s; combine with `|`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sessions(u8);

impl Sessions {
    /// Inbound connections.
    pub const INBOUND: Self = Self(1);
    /// Outbound connections.
    pub const OUTBOUND: Self = Self(2);
    /// Manual connections.
    pub const MANUAL: Self = Self(4);
    /// Seed connections.
    pub const SEED: Self = Self(8);
    /// Every connection we dialed.
    pub const DIALED: Self = Self(2 | 4 | 8);
    /// Every connection.
    pub const ALL: Self = Self(15);

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: SessionKind) -> bool {
        let bit = match kind {
            SessionKind::Inbound => Self::INBOUND,
            SessionKind::Outbound => Self::OUTBOUND,
            SessionKind::Manual => Self::MANUAL,
            SessionKind::Seed => Self::SEED,
        };
        self.0 & bit.0 != 0
    }
}

impl BitOr for Sessions {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// Constructs a protocol on a channel and spawns it there (the future is
/// spawned as its own type, not boxed first: one allocation per protocol
/// and channel, not two).
type Constructor = Arc<dyn Fn(&Channel) + Send + Sync>;
type Hook = Arc<dyn Fn(&Channel) + Send + Sync>;

#[derive(Clone)]
struct Entry {
    name: &'static str,
    sessions: Sessions,
    constructor: Constructor,
}

/// The protocols of a node; see the module docs.
#[derive(Clone, Default)]
pub struct ProtocolRegistry {
    entries: Vec<Entry>,
    hooks: Vec<Hook>,
}

impl std::fmt::Debug for ProtocolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl ProtocolRegistry {
    /// Registers protocol `name` to run on channels of `sessions`.
    pub fn register<C, F>(&mut self, name: &'static str, sessions: Sessions, constructor: C)
    where
        C: Fn(&Channel) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        self.entries.push(Entry {
            name,
            sessions,
            constructor: Arc::new(move |ch: &Channel| ch.spawn(constructor(ch))),
        });
    }

    /// Calls `hook` with every new channel, before its protocols are
    /// constructed; nothing is announced to peers.
    pub fn on_channel(&mut self, hook: impl Fn(&Channel) + Send + Sync + 'static) {
        self.hooks.push(Arc::new(hook));
    }

    /// Names of all registered protocols, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.name).collect()
    }

    /// Runs the hooks, then constructs every protocol for `channel`'s
    /// session and spawns it as a job of the channel.
    pub fn attach(&self, channel: &Channel) {
        for hook in &self.hooks {
            hook(channel);
        }
        let kind = channel.info().session;
        for e in self.entries.iter().filter(|e| e.sessions.contains(kind)) {
            (e.constructor)(channel);
        }
    }
}
