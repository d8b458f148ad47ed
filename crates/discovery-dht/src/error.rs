//! [`DhtError`]: every way an input can be refused, grouped by fault.

/// Errors of the DHT core. Messages are short and lowercase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DhtError {
    // --- the peer misbehaved ---
    /// A response listed more peers than the bucket size k.
    #[error("response lists {got} peers, more than k = {max}")]
    TooManyPeers {
        /// How many peers were listed.
        got: usize,
        /// The limit (k).
        max: usize,
    },
    /// A peer entry listed more addresses than allowed.
    #[error("peer entry lists {got} addresses, more than {max}")]
    TooManyAddrs {
        /// How many addresses were listed.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A peer entry claimed more addresses in one /24 (IPv4) or /64 (IPv6)
    /// than a bucket may hold from one subnet.
    #[error("peer entry claims {got} addresses in one subnet, more than {max}")]
    SubnetFlood {
        /// Addresses in the most crowded subnet.
        got: usize,
        /// The per-bucket subnet limit.
        max: usize,
    },
    /// A response that matches no request outstanding to that peer.
    #[error("unsolicited response")]
    Unsolicited,
    /// A response of the wrong kind for the request it answers.
    #[error("response kind does not match the request")]
    UnexpectedResponse,
    /// A record whose publisher signature does not verify.
    #[error("bad record signature")]
    BadSignature,
    /// A record larger than the configured limit.
    #[error("record value of {size} bytes exceeds {max}")]
    RecordTooLarge {
        /// The value size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A record or provider key longer than allowed.
    #[error("key of {size} bytes exceeds {max}")]
    KeyTooLarge {
        /// The key size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A record whose expiry time has passed.
    #[error("record expired")]
    RecordExpired,
    /// A record whose expiry lies further ahead than the maximum TTL.
    #[error("record ttl exceeds the maximum")]
    TtlTooLong,
    /// A record that answers a different key than the one asked for.
    #[error("record key does not match the request")]
    WrongKey,
    /// A record under a key another publisher already holds unexpired.
    #[error("record key held by another publisher")]
    KeyTaken,
    /// A record under another peer's peer-record key
    /// ([`peer_record_key`](crate::record::peer_record_key)): only that
    /// peer may publish there.
    #[error("peer record signed by another peer")]
    ForeignPeerRecord,
    /// A stored record replaced by an older one from the same publisher.
    #[error("record older than the stored one")]
    StaleRecord,

    // --- the message is malformed ---
    /// The encoded message is larger than the message limit.
    #[error("message of {size} bytes exceeds {max}")]
    MessageTooLarge {
        /// The size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid DHT message.
    #[error("malformed message")]
    Malformed,
    /// An address in a peer entry is not a valid address.
    #[error("invalid address")]
    BadAddress,

    // --- the routing table refused an entry ---
    /// The bucket already holds the most entries allowed from that subnet.
    #[error("bucket subnet limit reached")]
    BucketSubnetLimit,
    /// The table already holds the most entries allowed from that subnet.
    #[error("table subnet limit reached")]
    TableSubnetLimit,
    /// The local peer cannot be an entry of its own table.
    #[error("cannot insert the local peer")]
    SelfEntry,

    // --- local limits ---
    /// The record store is full.
    #[error("record store full")]
    StoreFull,
    /// The record's publisher already has its quota of records here.
    #[error("publisher holds its quota of records")]
    PublisherQuota,
    /// The provider, or the subnet its announcement came from, already
    /// has its quota of provider announcements here.
    #[error("provider quota reached")]
    ProviderQuota,
    /// A record or provider announcement for a key this node is not one of
    /// the k closest to, as far as its routing table knows.
    #[error("key is not among this node's k closest")]
    NotClosest,
}
