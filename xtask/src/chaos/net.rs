//! The chaos network: a bridge in its own namespace and host namespaces
//! joined to it by veth pairs, nftables partitions on the bridge, and a
//! slow, lossy switch in user space ([`Net::wan`]; this kernel has no
//! `netem`). The namespaces are named `kwc<pid>-…` after the xtask's process
//! id, so runs at the same time keep apart; every link is made inside them.
//! Namespaces of runs whose process is gone are removed first, and [`Net`]'s
//! `Drop` deletes this run's (which deletes their links and rules).

use std::process::Command;

use std::path::Path;
use std::time::Duration;

use crate::chaos::proc::Proc;
use crate::error::{Error, Result};
use crate::shell;
use crate::system::SYSTEM_PYTHON;

/// Prefix of every namespace and link the chaos suite makes.
pub const PREFIX: &str = "kwc";
/// The hosts' subnet: host `i` is `10.201.0.i/24`.
const SUBNET: &str = "10.201.0";
/// The slow, lossy switch's subnet: host `i` is `10.202.0.i/24` on it.
const WAN_SUBNET: &str = "10.202.0";
/// The switch (Python, standard library only): see the file's docstring.
const WAN_SCRIPT: &str = include_str!("wan.py");
/// Where attackers' source addresses come from: 512 /24s
/// (`10.210.0.0`-`10.211.255.0`), none shared with the hosts.
pub const ATTACK_NET: &str = "10.210.0.0/15";
/// The nftables table that partitions the bridge.
const PARTITION_TABLE: &str = "kwc_partition";

/// The namespaces of one run.
#[derive(Debug)]
pub struct Net {
    hosts: usize,
    /// `kwc<pid>`.
    ns_prefix: String,
}

fn ip(args: &[&str]) -> Result<()> {
    shell::output(Command::new("ip").args(args)).map(|_| ())
}

fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    shell::output(
        Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args),
    )
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

/// The host end of host `i`'s veth (inside its namespace).
fn host_link(i: usize) -> String {
    format!("{PREFIX}-h{i}")
}

/// The bridge end of host `i`'s veth (inside the bridge namespace).
pub fn port_link(i: usize) -> String {
    format!("{PREFIX}-p{i}")
}

/// The process id in a chaos namespace's name (`kwc<pid>-…`).
fn owner(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Deletes the namespaces of chaos runs whose process is gone.
pub fn remove_leftovers() {
    let Ok(list) = shell::output(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = owner(name) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            println!("chaos: removing leftover namespace {name}");
            let _ = ip(&["netns", "delete", name]);
        }
    }
}

impl Net {
    /// The namespace of the bridge.
    pub fn bridge_ns(&self) -> String {
        format!("{}-br", self.ns_prefix)
    }

    /// The namespace of host `i` (1-based).
    pub fn host_ns(&self, i: usize) -> String {
        format!("{}-{i}", self.ns_prefix)
    }

    /// Builds the bridge and `hosts` host namespaces.
    pub fn new(hosts: usize) -> Result<Self> {
        remove_leftovers();
        // The guard exists before anything is made, so a failure midway
        // still deletes what was made.
        let net = Self {
            hosts,
            ns_prefix: format!("{PREFIX}{}", std::process::id()),
        };
        let br = net.bridge_ns();
        ip(&["netns", "add", &br])?;
        in_ns(&br, "ip", &["link", "add", "br0", "type", "bridge"])?;
        in_ns(&br, "ip", &["link", "set", "br0", "up"])?;
        in_ns(&br, "ip", &["link", "set", "lo", "up"])?;
        for i in 1..=hosts {
            let ns = net.host_ns(i);
            let (h, p) = (host_link(i), port_link(i));
            ip(&["netns", "add", &ns])?;
            // Made inside the namespaces: no name in the root namespace.
            ip(&[
                "link", "add", &h, "netns", &ns, "type", "veth", "peer", "name", &p, "netns", &br,
            ])?;
            in_ns(&br, "ip", &["link", "set", &p, "master", "br0"])?;
            in_ns(&br, "ip", &["link", "set", &p, "up"])?;
            let addr = format!("{}/24", host_ip(i));
            in_ns(&ns, "ip", &["addr", "add", &addr, "dev", &h])?;
            in_ns(&ns, "ip", &["link", "set", &h, "up"])?;
            in_ns(&ns, "ip", &["link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Starts the slow, lossy switch ([`WAN_SCRIPT`]) in the bridge
    /// namespace and gives every host an interface on it ([`wan_ip`]).
    /// The kernel here has no `netem` qdisc, so the switch does in user
    /// space what netem would: delay +/- jitter, loss, reordering.
    /// Hosts `1..=hosts` get one.
    pub fn wan(
        &self,
        dir: &Path,
        hosts: usize,
        delay_ms: u32,
        jitter_ms: u32,
        loss: f64,
    ) -> Result<Proc> {
        let script = dir.join("wan.py");
        std::fs::write(&script, WAN_SCRIPT)
            .map_err(|e| Error::failed(format!("{}: {e}", script.display())))?;
        let prefix = format!("{PREFIX}-w");
        let args: Vec<String> = vec![
            script.to_string_lossy().into_owned(),
            prefix,
            hosts.to_string(),
            delay_ms.to_string(),
            jitter_ms.to_string(),
            loss.to_string(),
        ];
        let mut wan = Proc::start(
            "wan",
            &self.bridge_ns(),
            Path::new(SYSTEM_PYTHON),
            &args,
            dir,
            "",
        )?;
        wan.wait_for("ready", Duration::from_secs(10), |_| true)?;
        let br = self.bridge_ns();
        for i in 1..=hosts {
            let (link, ns) = (wan_link(i), self.host_ns(i));
            in_ns(&br, "ip", &["link", "set", &link, "netns", &ns])?;
            let addr = format!("{}/24", wan_ip(i));
            in_ns(&ns, "ip", &["addr", "add", &addr, "dev", &link])?;
            in_ns(&ns, "ip", &["link", "set", &link, "up"])?;
        }
        Ok(wan)
    }

    /// Drops every frame the bridge would forward between a host of `a`
    /// and a host of `b` (nftables, bridge family).
    pub fn partition(&self, a: &[usize], b: &[usize]) -> Result<()> {
        let mut rules = format!(
            "table bridge {PARTITION_TABLE} {{\n chain forward {{\n  type filter hook forward priority 0; policy accept;\n"
        );
        for x in a {
            for y in b {
                for (from, to) in [(x, y), (y, x)] {
                    rules.push_str(&format!(
                        "  iifname \"{}\" oifname \"{}\" drop\n",
                        port_link(*from),
                        port_link(*to)
                    ));
                }
            }
        }
        rules.push_str(" }\n}\n");
        self.nft(&self.bridge_ns(), &rules)
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
    /// to it on the link from every other host (the attacker's kernel answers
    /// ARP for all of it).
    pub fn attack_routes(&self, attacker: usize) -> Result<()> {
        for i in 1..=self.hosts {
            let ns = self.host_ns(i);
            let route = if i == attacker {
                vec!["route", "replace", "local", ATTACK_NET, "dev", "lo"]
            } else {
                vec!["route", "replace", ATTACK_NET, "dev"]
            };
            let link = host_link(i);
            let mut args = route;
            if i != attacker {
                args.push(&link);
            }
            in_ns(&ns, "ip", &args)?;
        }
        Ok(())
    }

    /// Removes the partition.
    pub fn heal(&self) -> Result<()> {
        in_ns(
            &self.bridge_ns(),
            "nft",
            &["delete", "table", "bridge", PARTITION_TABLE],
        )
        .map(|_| ())
    }

    /// Removes the partition if there is one (quietly).
    pub fn heal_if_split(&self) {
        let args = [
            "netns",
            "exec",
            &self.bridge_ns(),
            "nft",
            "delete",
            "table",
            "bridge",
            PARTITION_TABLE,
        ];
        shell::succeeds(Command::new("ip").args(args));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 1..=self.hosts {
            let _ = ip(&["netns", "delete", &self.host_ns(i)]);
        }
        let _ = ip(&["netns", "delete", &self.bridge_ns()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_carry_the_owner_pid() {
        assert_eq!(owner("kwc4242-br"), Some(4242));
        assert_eq!(owner("kwc4242-3"), Some(4242));
        assert_eq!(owner("kwx-sw"), None);
        assert_eq!(owner("kwc-br"), None);
    }
}
