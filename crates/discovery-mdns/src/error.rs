//! [`MdnsError`]: every way an announcement can be refused or a record rejected.

use knotwork_core::{AddrParseError, DiscoveryError, IdentityError};

/// Errors of mDNS discovery, grouped by fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MdnsError {
    // --- A peer's TXT record is malformed (the peer misbehaved). ---
    /// The TXT record has no `id` key.
    #[error("txt record has no id")]
    MissingId,
    /// The `id` value is not a base58 PeerId.
    #[error("bad peer id: {0}")]
    BadPeerId(String),
    /// The TXT record has no `v` key.
    #[error("txt record has no protocol version")]
    MissingVersion,
    /// A key that looks like an address key (`a` and digits) is not
    /// `a0` … `a<max-1>` written without leading zeros.
    #[error("bad address key {0:?}")]
    BadAddressKey(String),
    /// An address value is not a valid [`PeerAddr`](knotwork_core::PeerAddr) text.
    #[error("bad address in {key:?}: {reason}")]
    BadAddress {
        /// The key holding it (`a0`, `a1`, …).
        key: String,
        /// Why it did not parse.
        reason: String,
    },

    // --- An announcement from elsewhere than the local link. ---
    /// None of the record's addresses lies in a subnet of the interface it
    /// was heard on.
    #[error("none of {announced} addresses is on the link the announcement came from")]
    OffLink {
        /// How many addresses the record had.
        announced: usize,
    },

    // --- A limit was exceeded (either side). ---
    /// More addresses than the limit allows.
    #[error("too many addresses: {count}, at most {max}")]
    TooManyAddresses {
        /// How many there were.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The encoded TXT record is larger than the limit.
    #[error("txt record of {size} bytes, at most {max}")]
    OversizedTxt {
        /// Its size in bytes (RFC 6763 wire form).
        size: usize,
        /// The limit.
        max: usize,
    },

    /// More service instances on the network than a browser keeps.
    #[error("too many service instances, keeping at most {max}")]
    TooManyInstances {
        /// The limit.
        max: usize,
    },

    // --- The peer speaks a version we don't. ---
    /// The `v` value is not a protocol version this crate speaks.
    #[error("unsupported protocol version {0:?}")]
    UnsupportedVersion(String),

    // --- Local configuration or environment. ---
    /// The configured service type is not `_name._udp.local.` / `_name._tcp.local.`.
    #[error("invalid service type {0:?}")]
    InvalidServiceType(String),
    /// The system random number generator failed (instance label).
    #[error("random number generator failed")]
    Rng,
    /// No tokio runtime to run the discovery task on.
    #[error("no tokio runtime: create MdnsDiscovery inside one")]
    NoRuntime,
    /// Listing the network interfaces failed.
    #[error("cannot list network interfaces: {0}")]
    Interfaces(String),
    /// The mDNS daemon refused a command or has stopped.
    #[error("mdns daemon: {0}")]
    Daemon(String),
}

impl From<IdentityError> for MdnsError {
    fn from(e: IdentityError) -> Self {
        MdnsError::BadPeerId(e.to_string())
    }
}

impl MdnsError {
    pub(crate) fn bad_address(key: &str, reason: &AddrParseError) -> Self {
        MdnsError::BadAddress {
            key: key.to_owned(),
            reason: reason.to_string(),
        }
    }
}

impl From<mdns_sd::Error> for MdnsError {
    fn from(e: mdns_sd::Error) -> Self {
        MdnsError::Daemon(e.to_string())
    }
}

impl From<MdnsError> for DiscoveryError {
    fn from(e: MdnsError) -> Self {
        DiscoveryError::Failed(e.to_string())
    }
}
