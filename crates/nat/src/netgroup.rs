//! [`NetGroup`]: the network an address belongs to, for limits and votes
//! that one operator must not be able to multiply with addresses it owns.
//!
//! An IPv4 address is grouped by its first `v4` bits, an IPv6 address by
//! its first `v6` bits; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what
//! a dual-stack `[::]` listener sees) is its IPv4 address first. A loopback
//! address is this machine: each one is its own group (so tests on
//! 127.0.0.x can play several hosts). A relayed address is grouped by its
//! relay (everyone behind one relay shares it), any other address (memory,
//! BLE) by the peer itself.

use std::net::IpAddr;

use knotwork_core::{PeerAddr, PeerId};

/// The network of an address; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum NetGroup {
    /// An IP address with every bit past the prefix cleared.
    Ip(IpAddr),
    /// Everyone reached through this relay.
    Relay(PeerId),
    /// Not an IP address: the peer alone.
    Peer(PeerId),
}

impl NetGroup {
    /// The group of `peer`, connected at `addr`, with IPv4 prefixes of `v4`
    /// bits and IPv6 prefixes of `v6` bits.
    pub(crate) fn of(addr: &PeerAddr, peer: PeerId, v4: u8, v6: u8) -> Self {
        match addr {
            PeerAddr::Tcp(sa) => Self::of_ip(sa.ip(), v4, v6),
            PeerAddr::Relay(r) => Self::Relay(r.relay_peer),
            _ => Self::Peer(peer),
        }
    }

    /// The group of `ip`; see [`NetGroup::of`].
    pub(crate) fn of_ip(ip: IpAddr, v4: u8, v6: u8) -> Self {
        let ip = ip.to_canonical();
        if ip.is_loopback() {
            return Self::Ip(ip);
        }
        Self::Ip(match ip {
            IpAddr::V4(v) => IpAddr::V4((u32::from(v) & mask32(v4)).into()),
            IpAddr::V6(v) => IpAddr::V6((u128::from(v) & mask128(v6)).into()),
        })
    }
}

fn mask32(bits: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(bits.min(32)))
        .unwrap_or(0)
}

fn mask128(bits: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(bits.min(128)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_core::Keypair;

    fn group(s: &str) -> NetGroup {
        let peer = Keypair::generate().unwrap().peer_id();
        NetGroup::of(&s.parse().unwrap(), peer, 24, 48)
    }

    #[test]
    fn test_prefixes_group_ipv4_and_ipv6() {
        assert_eq!(group("tcp/198.51.100.7:1"), group("tcp/198.51.100.200:9"));
        assert_ne!(group("tcp/198.51.100.7:1"), group("tcp/198.51.101.7:1"));
        assert_eq!(
            group("tcp/[2001:db8:1:ffff::1]:1"),
            group("tcp/[2001:db8:1::2]:1")
        );
        assert_ne!(
            group("tcp/[2001:db8:1::1]:1"),
            group("tcp/[2001:db8:2::1]:1")
        );
        let ip: IpAddr = "2001:db8:77::1".parse().unwrap();
        assert_eq!(
            NetGroup::of_ip(ip, 24, 32),
            NetGroup::Ip("2001:db8::".parse().unwrap())
        );
        assert_eq!(
            NetGroup::of_ip("10.1.2.3".parse().unwrap(), 0, 0),
            NetGroup::Ip("0.0.0.0".parse().unwrap())
        );
    }

    #[test]
    fn test_mapped_ipv4_is_its_ipv4_address() {
        assert_eq!(
            group("tcp/[::ffff:198.51.100.7]:1"),
            group("tcp/198.51.100.9:1")
        );
        assert_ne!(
            group("tcp/[::ffff:198.51.100.7]:1"),
            group("tcp/[::ffff:203.0.113.7]:1")
        );
    }

    #[test]
    fn test_loopback_addresses_and_non_ip_peers_are_their_own_groups() {
        assert_ne!(group("tcp/127.0.0.1:1"), group("tcp/127.0.0.2:1"));
        assert_eq!(group("tcp/127.0.0.1:1"), group("tcp/127.0.0.1:2"));
        assert_ne!(group("mem/1"), group("mem/1"), "one group per peer");
        let relayed = "relay/tcp/203.0.113.9:4000/FAe4sisG95oZ42w7buUn5qEE4TAnfTTFPiguZUHmhiF/3ogUn1GNXoASaRbxPNeVJnVv5rG4EPBtmQmX61jVorUe";
        assert_eq!(group(relayed), group(relayed), "one group per relay");
    }
}
