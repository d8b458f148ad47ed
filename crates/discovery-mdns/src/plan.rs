//! Which addresses to announce on which interface, sans-IO.
//!
//! rust-libp2p announced every listen address on every interface, loopback
//! included (its issues #5790 and #5995). Here each interface gets its own
//! service instance whose TXT record holds only the addresses that make sense
//! there:
//!
//! - a loopback listen address (`127.0.0.1`, `::1`) only on a loopback interface;
//! - an unspecified one (`0.0.0.0`, `[::]`) expands to the interface's own
//!   addresses of that family (IPv6 link-local addresses are left out: the
//!   text form of an address has no scope id, so a peer could not dial them);
//! - any other IP address only on the interface that has it;
//! - non-IP addresses (`ble/…`, `mem/…`) never: mDNS runs over IP.
//!
//! An interface left with no address gets no instance. Past `max_addrs` the
//! rest are dropped and counted in [`InterfacePlan::dropped`].
//!
//! mDNS belongs on the local network: a daemon reachable from the internet
//! answers spoofed queries (a UDP amplifier) and takes injected answers.
//! [`lan_only`] keeps, of each interface, only the address families whose
//! addresses are all loopback, private (10/8, 172.16/12, 192.168/16,
//! fc00::/7) or link-local (169.254/16, fe80::/10); an interface with a
//! public IPv4 address runs no IPv4 mDNS, one with a global IPv6 address no
//! IPv6 mDNS. [`IpNet::contains`] is what the browse side checks a peer's
//! addresses against: each must lie in a subnet of the interface its
//! announcement was heard on.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use knotwork_core::PeerAddr;

/// A network interface as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetInterface {
    /// Its name (`eth0`).
    pub name: String,
    /// Its index (the kernel's ifindex).
    pub index: u32,
    /// Whether it is a loopback interface.
    pub loopback: bool,
    /// Its IP addresses, with their prefix lengths.
    pub ips: Vec<IpNet>,
}

/// An address of an interface and its subnet's prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    /// The address.
    pub ip: IpAddr,
    /// The prefix length of its subnet (`24` for a /24).
    pub prefix: u8,
}

impl IpNet {
    /// `ip/prefix`.
    pub fn new(ip: IpAddr, prefix: u8) -> Self {
        Self { ip, prefix }
    }

    /// Whether `ip` lies in this subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip, bits) = match (self.ip, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                (u128::from(n.to_bits()), u128::from(i.to_bits()), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => (n.to_bits(), i.to_bits(), 128),
            _ => return false,
        };
        let host_bits = bits - u32::from(self.prefix).min(bits);
        net.checked_shr(host_bits).unwrap_or(0) == ip.checked_shr(host_bits).unwrap_or(0)
    }

    /// Whether mDNS may run on an address like this one: loopback, private
    /// or link-local.
    fn is_lan(&self) -> bool {
        match self.ip {
            IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local()
            }
        }
    }
}

/// `interfaces` with only the address families mDNS may run on (see the
/// module docs); interfaces left with no address are dropped.
pub fn lan_only(interfaces: &[NetInterface]) -> Vec<NetInterface> {
    interfaces
        .iter()
        .filter_map(|intf| {
            let family_ok = |v4: bool| intf.ips.iter().all(|n| n.ip.is_ipv4() != v4 || n.is_lan());
            let (v4_ok, v6_ok) = (family_ok(true), family_ok(false));
            let ips: Vec<IpNet> = intf
                .ips
                .iter()
                .filter(|n| if n.ip.is_ipv4() { v4_ok } else { v6_ok })
                .copied()
                .collect();
            (!ips.is_empty()).then(|| NetInterface {
                ips,
                ..intf.clone()
            })
        })
        .collect()
}

/// What to announce on one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfacePlan {
    /// The interface.
    pub interface: NetInterface,
    /// The addresses for its TXT record, in listen order, at most `max_addrs`.
    pub addrs: Vec<PeerAddr>,
    /// How many more addresses there were than `max_addrs`.
    pub dropped: usize,
}

/// Plans the announcement of `listen` on each of `interfaces` (see the module
/// docs for the rules). The result is in the order of `interfaces`.
pub fn plan(
    listen: &[PeerAddr],
    interfaces: &[NetInterface],
    max_addrs: usize,
) -> Vec<InterfacePlan> {
    interfaces
        .iter()
        .filter_map(|intf| {
            let mut addrs: Vec<PeerAddr> = Vec::new();
            for addr in listen {
                for a in addrs_on(addr, intf) {
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
            }
            if addrs.is_empty() {
                return None;
            }
            let dropped = addrs.len().saturating_sub(max_addrs);
            addrs.truncate(max_addrs);
            Some(InterfacePlan {
                interface: intf.clone(),
                addrs,
                dropped,
            })
        })
        .collect()
}

/// The addresses `listen` stands for on `intf`.
fn addrs_on(listen: &PeerAddr, intf: &NetInterface) -> Vec<PeerAddr> {
    let PeerAddr::Tcp(sa) = listen else {
        return Vec::new();
    };
    let ip = sa.ip();
    let tcp = |ip: IpAddr| PeerAddr::Tcp(SocketAddr::new(ip, sa.port()));
    if ip.is_unspecified() {
        intf.ips
            .iter()
            .map(|n| n.ip)
            .filter(|i| i.is_ipv4() == ip.is_ipv4() && !is_v6_link_local(i))
            .map(tcp)
            .collect()
    } else if ip.is_loopback() {
        if intf.loopback {
            vec![tcp(ip)]
        } else {
            Vec::new()
        }
    } else if intf.ips.iter().any(|n| n.ip == ip) {
        vec![tcp(ip)]
    } else {
        Vec::new()
    }
}

fn is_v6_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => is_unicast_link_local(v6),
        IpAddr::V4(_) => false,
    }
}

fn is_unicast_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments().first().is_some_and(|s| s & 0xffc0 == 0xfe80)
}

/// Groups `if-addrs` entries (one per address) into interfaces, keeping the
/// ones that are up and not point-to-point, as the mDNS daemon does.
pub(crate) fn from_if_addrs(list: Vec<if_addrs::Interface>) -> Vec<NetInterface> {
    let mut out: Vec<NetInterface> = Vec::new();
    for i in list {
        if !i.is_oper_up() || i.is_p2p() {
            continue;
        }
        let Some(index) = i.index else { continue };
        let ip = match &i.addr {
            if_addrs::IfAddr::V4(a) => IpNet::new(IpAddr::V4(a.ip), a.prefixlen),
            if_addrs::IfAddr::V6(a) => IpNet::new(IpAddr::V6(a.ip), a.prefixlen),
        };
        let loopback = i.is_loopback();
        match out.iter_mut().find(|n| n.index == index) {
            Some(n) => {
                n.loopback |= loopback;
                n.ips.push(ip);
            }
            None => out.push(NetInterface {
                name: i.name,
                index,
                loopback,
                ips: vec![ip],
            }),
        }
    }
    out.sort_by_key(|n| n.index);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ips` as `addr/prefix`, or a bare address as /24 (IPv4) or /64.
    fn intf(name: &str, index: u32, loopback: bool, ips: &[&str]) -> NetInterface {
        NetInterface {
            name: name.into(),
            index,
            loopback,
            ips: ips.iter().map(|s| net(s)).collect(),
        }
    }

    fn net(s: &str) -> IpNet {
        match s.split_once('/') {
            Some((ip, prefix)) => IpNet::new(ip.parse().unwrap(), prefix.parse().unwrap()),
            None => {
                let ip: IpAddr = s.parse().unwrap();
                IpNet::new(ip, if ip.is_ipv4() { 24 } else { 64 })
            }
        }
    }

    fn addrs(list: &[&str]) -> Vec<PeerAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn host() -> Vec<NetInterface> {
        vec![
            intf("lo", 1, true, &["127.0.0.1", "::1"]),
            intf("eth0", 2, false, &["10.0.0.5", "fe80::1", "fd00::5"]),
            intf("wlan0", 3, false, &["192.168.1.7"]),
        ]
    }

    #[test]
    fn loopback_addresses_stay_on_loopback() {
        let p = plan(
            &addrs(&["tcp/127.0.0.1:4000", "tcp/[::1]:4001"]),
            &host(),
            8,
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].interface.name, "lo");
        assert_eq!(p[0].addrs, addrs(&["tcp/127.0.0.1:4000", "tcp/[::1]:4001"]));
    }

    #[test]
    fn unspecified_expands_per_interface_without_v6_link_local() {
        let p = plan(&addrs(&["tcp/0.0.0.0:4000", "tcp/[::]:4000"]), &host(), 8);
        let by_name: Vec<(&str, Vec<PeerAddr>)> = p
            .iter()
            .map(|p| (p.interface.name.as_str(), p.addrs.clone()))
            .collect();
        assert_eq!(
            by_name,
            vec![
                ("lo", addrs(&["tcp/127.0.0.1:4000", "tcp/[::1]:4000"])),
                ("eth0", addrs(&["tcp/10.0.0.5:4000", "tcp/[fd00::5]:4000"])),
                ("wlan0", addrs(&["tcp/192.168.1.7:4000"])),
            ]
        );
    }

    #[test]
    fn specific_addresses_only_on_their_interface_and_non_ip_never() {
        let p = plan(
            &addrs(&[
                "tcp/192.168.1.7:1",
                "tcp/203.0.113.9:2",
                "ble/aa:bb",
                "mem/3",
            ]),
            &host(),
            8,
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].interface.name, "wlan0");
        assert_eq!(p[0].addrs, addrs(&["tcp/192.168.1.7:1"]));
    }

    #[test]
    fn caps_and_counts_dropped_and_dedups() {
        let ips: Vec<String> = (1..=10).map(|i| format!("10.0.0.{i}")).collect();
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        let host = vec![intf("eth0", 2, false, &ips)];
        let p = plan(&addrs(&["tcp/0.0.0.0:7", "tcp/10.0.0.1:7"]), &host, 8);
        assert_eq!(p[0].addrs.len(), 8);
        assert_eq!(p[0].dropped, 2);
        assert_eq!(p[0].addrs[0], "tcp/10.0.0.1:7".parse().unwrap());
    }

    #[test]
    fn m10_an_interface_with_only_a_public_address_gets_no_instance() {
        let host = vec![
            intf("lo", 1, true, &["127.0.0.1/8", "::1/128"]),
            intf("eth0", 2, false, &["203.0.113.9"]),
            intf("eth1", 3, false, &["10.0.0.5", "fe80::1"]),
            // Public IPv4, IPv6 link-local only: IPv6 mDNS stays.
            intf("eth2", 4, false, &["198.51.100.7", "fe80::2"]),
            // Private IPv4, a global IPv6: IPv4 mDNS stays.
            intf("eth3", 5, false, &["192.168.1.7", "2001:db8::7", "fe80::3"]),
            intf("eth4", 6, false, &["100.64.0.1"]),
        ];
        let lan = lan_only(&host);
        let kept: Vec<(&str, Vec<IpNet>)> = lan
            .iter()
            .map(|i| (i.name.as_str(), i.ips.clone()))
            .collect();
        assert_eq!(
            kept,
            vec![
                ("lo", vec![net("127.0.0.1/8"), net("::1/128")]),
                ("eth1", vec![net("10.0.0.5"), net("fe80::1")]),
                ("eth2", vec![net("fe80::2")]),
                ("eth3", vec![net("192.168.1.7")]),
            ]
        );
        let p = plan(&addrs(&["tcp/0.0.0.0:4000", "tcp/[::]:4000"]), &lan, 8);
        let names: Vec<&str> = p.iter().map(|p| p.interface.name.as_str()).collect();
        // eth2 keeps only an IPv6 link-local address, which is not announced.
        assert_eq!(names, ["lo", "eth1", "eth3"]);
        let specific = plan(&addrs(&["tcp/203.0.113.9:4000"]), &lan, 8);
        assert!(specific.is_empty(), "the public interface gets no instance");
    }

    #[test]
    fn subnets_contain_their_addresses_only() {
        let n = net("10.1.2.3/24");
        assert!(n.contains("10.1.2.200".parse().unwrap()));
        assert!(!n.contains("10.1.3.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!(net("10.1.2.3/32").contains("10.1.2.3".parse().unwrap()));
        assert!(!net("10.1.2.3/32").contains("10.1.2.4".parse().unwrap()));
        let v6 = net("fd00:1:2:3::5/64");
        assert!(v6.contains("fd00:1:2:3::99".parse().unwrap()));
        assert!(!v6.contains("fd00:1:2:4::5".parse().unwrap()));
        assert!(net("::1/128").contains("::1".parse().unwrap()));
    }
}
