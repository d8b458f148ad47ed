//! [`IpPrefix`]: the network an IP address belongs to, for limits and
//! diversity rules that must count one operator once, not once per address
//! (a /24 of IPv4 addresses or a /64 of IPv6 addresses is cheap to own).
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack `[::]`
//! listener sees for IPv4 peers) are treated as the IPv4 addresses they are.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP network: an address with the bits past `len` cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    net: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// The network of `ip`: its first `v4_len` bits for IPv4 (IPv4-mapped
    /// IPv6 included), `v6_len` for IPv6 (each at most 32 / 128).
    pub fn new(ip: IpAddr, v4_len: u8, v6_len: u8) -> Self {
        match canonical(ip) {
            IpAddr::V4(v4) => {
                let len = v4_len.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                Self {
                    net: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)),
                    len,
                }
            }
            IpAddr::V6(v6) => {
                let len = v6_len.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                Self {
                    net: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)),
                    len,
                }
            }
        }
    }

    /// The host itself: /32 for IPv4, /64 for IPv6 (one subscriber's LAN).
    pub fn host(ip: IpAddr) -> Self {
        Self::new(ip, 32, 64)
    }

    /// The subnet: /24 for IPv4, /48 for IPv6 (one site).
    pub fn subnet(ip: IpAddr) -> Self {
        Self::new(ip, 24, 48)
    }

    /// The netgroup used for diversity: /16 for IPv4, /32 for IPv6 (about
    /// one provider's allocation, as Bitcoin Core's address manager groups).
    pub fn group(ip: IpAddr) -> Self {
        Self::new(ip, 16, 32)
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v4_len, v6_len) = match self.net {
            IpAddr::V4(_) => (self.len, 128),
            IpAddr::V6(_) => (32, self.len),
        };
        *self == Self::new(ip, v4_len, v6_len)
    }
}

impl std::fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

/// `ip`, with an IPv4-mapped IPv6 address turned into its IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_clear_the_host_bits() {
        assert_eq!(IpPrefix::subnet(ip("10.1.2.3")).to_string(), "10.1.2.0/24");
        assert_eq!(IpPrefix::group(ip("10.1.2.3")).to_string(), "10.1.0.0/16");
        assert_eq!(IpPrefix::host(ip("10.1.2.3")).to_string(), "10.1.2.3/32");
        assert_eq!(
            IpPrefix::host(ip("2001:db8:1:2:3:4:5:6")).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            IpPrefix::subnet(ip("2001:db8:1:2:3:4:5:6")).to_string(),
            "2001:db8:1::/48"
        );
        assert_eq!(IpPrefix::new(ip("10.1.2.3"), 0, 0).to_string(), "0.0.0.0/0");
        assert_eq!(IpPrefix::new(ip("::1"), 99, 200).to_string(), "::1/128");
    }

    #[test]
    fn mapped_addresses_are_their_ipv4_addresses() {
        assert_eq!(
            IpPrefix::subnet(ip("::ffff:10.1.2.3")),
            IpPrefix::subnet(ip("10.1.2.99"))
        );
        assert_ne!(
            IpPrefix::subnet(ip("::ffff:10.1.2.3")),
            IpPrefix::subnet(ip("::ffff:10.1.3.3"))
        );
    }

    #[test]
    fn a_prefix_contains_its_hosts_only() {
        let net = IpPrefix::subnet(ip("192.0.2.7"));
        assert!(net.contains(ip("192.0.2.200")));
        assert!(net.contains(ip("::ffff:192.0.2.1")));
        assert!(!net.contains(ip("192.0.3.1")));
        assert!(!net.contains(ip("2001:db8::1")));
        let v6 = IpPrefix::host(ip("2001:db8::1"));
        assert!(v6.contains(ip("2001:db8::ffff")));
        assert!(!v6.contains(ip("2001:db8:0:1::1")));
    }
}
