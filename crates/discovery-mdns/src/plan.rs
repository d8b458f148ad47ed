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
    /// Its IP addresses.
    pub ips: Vec<IpAddr>,
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
            .filter(|i| i.is_ipv4() == ip.is_ipv4() && !is_v6_link_local(i))
            .map(|i| tcp(*i))
            .collect()
    } else if ip.is_loopback() {
        if intf.loopback {
            vec![tcp(ip)]
        } else {
            Vec::new()
        }
    } else if intf.ips.contains(&ip) {
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
        let ip = i.ip();
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

    fn intf(name: &str, index: u32, loopback: bool, ips: &[&str]) -> NetInterface {
        NetInterface {
            name: name.into(),
            index,
            loopback,
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
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
}
