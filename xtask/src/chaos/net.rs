//! The chaos network: host namespaces around one router ([`Hosts`]),
//! nftables partitions on the router, and a slow, lossy switch in user
//! space ([`Net::wan`]; this kernel has no `netem`). The namespaces are named
//! `kwc<pid>-…` after the xtask's process id, so runs at the same time keep
//! apart; every link is made inside them, and dropping the [`Net`] deletes
//! them (which deletes their links and rules).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::netns::{Hosts, in_ns};
use crate::proc::Proc;
use crate::shell;
use crate::system::SYSTEM_PYTHON;

/// Prefix of every namespace and link the chaos suite makes.
pub const PREFIX: &str = "kwc";
/// The hosts' addresses: host `i` is `10.201.0.i`.
const SUBNET: &str = "10.201.0";
/// The slow, lossy switch's subnet: host `i` is `10.202.0.i/24` on it.
const WAN_SUBNET: &str = "10.202.0";
/// The switch (Python, standard library only): see the file's docstring.
const WAN_SCRIPT: &str = include_str!("wan.py");
/// Where attackers' source addresses come from: 512 /24s
/// (`10.210.0.0`-`10.211.255.0`), none shared with the hosts.
pub const ATTACK_NET: &str = "10.210.0.0/15";
/// The nftables table that partitions the router.
const PARTITION_TABLE: &str = "kwc_partition";

/// The namespaces of one run.
#[derive(Debug)]
pub struct Net {
    hosts: Hosts,
}

/// The IP address of host `i`.
pub fn host_ip(i: usize) -> String {
    format!("{SUBNET}.{i}")
}

/// The IP address of host `i` on the slow, lossy switch.
pub fn wan_ip(i: usize) -> String {
    format!("{WAN_SUBNET}.{i}")
}

/// Host `i`'s interface on the slow, lossy switch.
fn wan_link(i: usize) -> String {
    format!("{PREFIX}-w{i}")
}

impl Net {
    /// The router's namespace.
    pub fn router_ns(&self) -> String {
        self.hosts.router_ns()
    }

    /// The namespace of host `i` (1-based).
    pub fn host_ns(&self, i: usize) -> String {
        self.hosts.host_ns(i)
    }

    /// Builds the router and `hosts` host namespaces.
    pub fn new(hosts: usize) -> Result<Self> {
        let addrs: Vec<String> = (1..=hosts).map(host_ip).collect();
        Ok(Self {
            hosts: Hosts::new(PREFIX, &addrs)?,
        })
    }

    /// Starts the slow, lossy switch ([`WAN_SCRIPT`]) in the router
    /// namespace and gives every host an interface on it ([`wan_ip`]).
    /// The kernel here has no `netem` qdisc, so the switch does in user
    /// space what netem would: delay +/- jitter, loss, reordering.
    pub fn wan(&self, dir: &Path, delay_ms: u32, jitter_ms: u32, loss: f64) -> Result<Proc> {
        let script = dir.join("wan.py");
        std::fs::write(&script, WAN_SCRIPT)
            .map_err(|e| Error::failed(format!("{}: {e}", script.display())))?;
        let prefix = format!("{PREFIX}-w");
        let args: Vec<String> = vec![
            script.to_string_lossy().into_owned(),
            prefix,
            self.hosts.hosts().to_string(),
            delay_ms.to_string(),
            jitter_ms.to_string(),
            loss.to_string(),
        ];
        let mut wan = Proc::start(
            "wan",
            &self.router_ns(),
            Path::new(SYSTEM_PYTHON),
            &args,
            dir,
            "",
        )?;
        wan.wait_for("ready", Duration::from_secs(10), |_| true)?;
        let br = self.router_ns();
        for i in 1..=self.hosts.hosts() {
            let (link, ns) = (wan_link(i), self.host_ns(i));
            in_ns(&br, "ip", &["link", "set", &link, "netns", &ns])?;
            let addr = format!("{}/24", wan_ip(i));
            in_ns(&ns, "ip", &["addr", "add", &addr, "dev", &link])?;
            in_ns(&ns, "ip", &["link", "set", &link, "up"])?;
        }
        Ok(wan)
    }

    /// Drops every packet the router would forward between a host of `a`
    /// and a host of `b` (nftables).
    pub fn partition(&self, a: &[usize], b: &[usize]) -> Result<()> {
        let mut rules = format!(
            "table inet {PARTITION_TABLE} {{\n chain forward {{\n  type filter hook forward priority 0; policy accept;\n"
        );
        for x in a {
            for y in b {
                for (from, to) in [(x, y), (y, x)] {
                    rules.push_str(&format!(
                        "  iifname \"{}\" oifname \"{}\" drop\n",
                        Hosts::port(*from),
                        Hosts::port(*to)
                    ));
                }
            }
        }
        rules.push_str(" }\n}\n");
        self.nft(&self.router_ns(), &rules)
    }

    /// Loads nftables `rules` in namespace `ns`.
    pub fn nft(&self, ns: &str, rules: &str) -> Result<()> {
        let file = std::env::temp_dir().join(format!("{ns}-{}.nft", rules.len()));
        std::fs::write(&file, rules)
            .map_err(|e| Error::failed(format!("{}: {e}", file.display())))?;
        let path = file.to_string_lossy().into_owned();
        let loaded = in_ns(ns, "nft", &["-f", &path]).map(|_| ());
        let _ = std::fs::remove_file(&file);
        loaded
    }

    /// Runs `nft args..` in namespace `ns`; returns its output.
    pub fn nft_output(&self, ns: &str, args: &[&str]) -> Result<String> {
        in_ns(ns, "nft", args)
    }

    /// Makes `attacker` own every address of [`ATTACK_NET`] (a local route:
    /// it can bind any of them without adding each) and routes that network
    /// to it from the router, through the attacker's own address (whose
    /// neighbour entry is permanent: no ARP per attack address).
    pub fn attack_routes(&self, attacker: usize) -> Result<()> {
        in_ns(
            &self.host_ns(attacker),
            "ip",
            &["route", "replace", "local", ATTACK_NET, "dev", "lo"],
        )?;
        let (gw, port) = (host_ip(attacker), Hosts::port(attacker));
        in_ns(
            &self.router_ns(),
            "ip",
            &[
                "route", "replace", ATTACK_NET, "via", &gw, "dev", &port, "onlink",
            ],
        )
        .map(|_| ())
    }

    /// Removes the partition.
    pub fn heal(&self) -> Result<()> {
        in_ns(
            &self.router_ns(),
            "nft",
            &["delete", "table", "inet", PARTITION_TABLE],
        )
        .map(|_| ())
    }

    /// Removes the partition if there is one (quietly).
    pub fn heal_if_split(&self) {
        let args = [
            "netns",
            "exec",
            &self.router_ns(),
            "nft",
            "delete",
            "table",
            "inet",
            PARTITION_TABLE,
        ];
        shell::succeeds(Command::new("ip").args(args));
    }
}
