//! Hosts as network namespaces around one router, for the commands that
//! run node processes as separate machines (`chaos`, `testnet`).
//!
//! [`Hosts`] is a router namespace and one namespace per host, joined to it
//! by a veth pair: inside host `i` the link is `veth0`, holding the host's
//! address as a /32, and its only route is a default route to the router;
//! in the router namespace the other end is [`Hosts::port`] `p<i>`, with a
//! /32 route to the host. Every neighbour entry (host to router, router to
//! host) is written in advance and permanent, so no ARP is ever sent, no
//! frame is flooded, and the kernel's neighbour table, whose limit
//! (`net.ipv4.neigh.default.gc_thresh3`, 1,024 by default) is shared by all
//! namespaces but does not count permanent entries, never fills. (A bridge
//! with all hosts on one subnet needs an ARP entry per pair of hosts that
//! talk: at 200 nodes the table overflowed and new connections hung.)
//! Addresses outside the hosts' reach nothing: the router has no default
//! route, so traffic stays among the namespaces made here.
//!
//! Links are made inside the namespaces, so nothing is added to the root
//! namespace. Namespace names start with the command's prefix and the
//! xtask's process id (`kwc4242-rt`, `kwc4242-3`), so runs at the same time
//! keep apart; namespaces of runs whose process is gone are removed first
//! ([`remove_leftovers`]), and `Drop` kills what still runs in this run's
//! namespaces and deletes them (which deletes their links).
//!
//! Building is batched (`ip -batch`): one `ip` process adds every
//! namespace, one every veth pair, one configures the router, and one per
//! host sets its address (a namespace can only be configured from inside
//! it). Links have no IPv6 address (`addrgenmode none`): nothing is sent
//! that the nodes did not send.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::shell;

/// The router's address as the hosts' next hop (a label for the permanent
/// neighbour entry; no interface holds it).
const GATEWAY: &str = "10.255.255.254";

/// Host namespaces around one router namespace; see the module docs.
#[derive(Debug)]
pub struct Hosts {
    /// `<prefix><pid>`.
    name: String,
    hosts: usize,
}

/// Runs `ip [-n ns] -batch -` with `commands` (one per line) on stdin.
pub fn ip_batch(ns: Option<&str>, commands: &str) -> Result<()> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let what = || {
        format!(
            "ip {}-batch",
            ns.map_or(String::new(), |n| format!("-n {n} "))
        )
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::unavailable(format!("{}: {e}", what())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(commands.as_bytes())
            .map_err(|e| Error::failed(format!("{}: {e}", what())))?;
    }
    let status = child
        .wait()
        .map_err(|e| Error::failed(format!("{}: {e}", what())))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::failed(format!("`{}` failed ({status})", what())))
    }
}

/// Runs `program args..` inside namespace `ns` and returns its stdout.
pub fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    shell::output(
        Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args),
    )
}

/// The process id in the name of a namespace of command `prefix`
/// (`<prefix><pid>-…`).
fn owner(prefix: &str, name: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.split('-').next()?.parse().ok()
}

/// The namespaces that exist now.
pub fn namespaces() -> Vec<String> {
    shell::output(Command::new("ip").args(["netns", "list"]))
        .map(|list| {
            list.lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The processes in the namespaces of `names`: those whose
/// `/proc/<pid>/ns/net` is the namespace `ip netns` keeps under
/// `/run/netns/<name>` (one pass over `/proc`, however many namespaces).
fn pids_in(names: &[String]) -> Vec<String> {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    let id = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let ours: HashSet<(u64, u64)> = names
        .iter()
        .filter_map(|n| id(&Path::new("/run/netns").join(n)))
        .collect();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(std::result::Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            id(&Path::new("/proc").join(pid).join("ns/net")).is_some_and(|i| ours.contains(&i))
        })
        .collect()
}

/// Kills every process in the namespaces of `names` (`kill -9`), then
/// deletes the namespaces.
pub fn delete(names: &[String]) {
    let pids = pids_in(names);
    if !pids.is_empty() {
        shell::succeeds(Command::new("kill").arg("-9").args(&pids));
    }
    let batch: String = names
        .iter()
        .map(|n| format!("netns delete {n}\n"))
        .collect();
    let _ = ip_batch(None, &batch);
}

/// Deletes the namespaces of command `prefix` whose xtask is gone.
pub fn remove_leftovers(prefix: &str) {
    let stale: Vec<String> = namespaces()
        .into_iter()
        .filter(|name| {
            owner(prefix, name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect();
    if !stale.is_empty() {
        println!("xtask: removing {} leftover namespaces", stale.len());
        delete(&stale);
    }
}

/// The MAC address of host `i`'s end (`side` 1) or the router's end
/// (`side` 2) of its veth pair: locally administered, unique per host.
fn mac(i: usize, side: u8) -> String {
    format!(
        "02:6b:77:{:02x}:{:02x}:{side:02x}",
        (i >> 8) & 0xff,
        i & 0xff
    )
}

impl Hosts {
    /// Builds the router and one host namespace per address of `addrs`
    /// (`10.201.0.1`; host `i` has `addrs[i - 1]`), named after `prefix`.
    pub fn new(prefix: &str, addrs: &[String]) -> Result<Self> {
        remove_leftovers(prefix);
        // The guard exists before anything is made, so a failure midway
        // still deletes what was made.
        let net = Self {
            name: format!("{prefix}{}", std::process::id()),
            hosts: addrs.len(),
        };
        let rt = net.router_ns();
        let hosts = || (1..=addrs.len()).zip(addrs);
        let mut batch = format!("netns add {rt}\n");
        batch.extend(hosts().map(|(i, _)| format!("netns add {}\n", net.host_ns(i))));
        ip_batch(None, &batch)?;
        let pairs: String = hosts()
            .map(|(i, _)| {
                format!(
                    "link add veth0 address {} netns {} type veth peer name {} address {} netns {rt}\n",
                    mac(i, 1),
                    net.host_ns(i),
                    Self::port(i),
                    mac(i, 2)
                )
            })
            .collect();
        ip_batch(None, &pairs)?;
        let mut router = String::from("link set lo up\n");
        for (i, addr) in hosts() {
            let port = Self::port(i);
            router.push_str(&format!(
                "link set {port} addrgenmode none\nlink set {port} up\n\
                 route add {addr}/32 dev {port}\n\
                 neigh add {addr} lladdr {} dev {port} nud permanent\n",
                mac(i, 1)
            ));
        }
        ip_batch(Some(&rt), &router)?;
        in_ns(&rt, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        for (i, addr) in hosts() {
            ip_batch(
                Some(&net.host_ns(i)),
                &format!(
                    "link set veth0 addrgenmode none\naddr add {addr}/32 dev veth0\n\
                     link set veth0 up\nlink set lo up\n\
                     neigh add {GATEWAY} lladdr {} dev veth0 nud permanent\n\
                     route add default via {GATEWAY} dev veth0 onlink\n",
                    mac(i, 2)
                ),
            )?;
        }
        Ok(net)
    }

    /// The router's namespace.
    pub fn router_ns(&self) -> String {
        format!("{}-rt", self.name)
    }

    /// The namespace of host `i` (1-based).
    pub fn host_ns(&self, i: usize) -> String {
        format!("{}-{i}", self.name)
    }

    /// The router's port to host `i`, in the router namespace.
    pub fn port(i: usize) -> String {
        format!("p{i}")
    }

    /// How many hosts there are.
    pub fn hosts(&self) -> usize {
        self.hosts
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let mut names: Vec<String> = (1..=self.hosts).map(|i| self.host_ns(i)).collect();
        names.push(self.router_ns());
        delete(&names);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_carry_the_owner_pid() {
        assert_eq!(owner("kwc", "kwc4242-rt"), Some(4242));
        assert_eq!(owner("kwc", "kwc4242-3"), Some(4242));
        assert_eq!(owner("kwc", "kwt4242-3"), None);
        assert_eq!(owner("kwc", "kwc-rt"), None);
    }

    #[test]
    fn delete_kills_what_runs_in_the_namespaces_and_only_that() {
        if !crate::system::is_root() {
            println!("SKIPPED: needs root (network namespaces)");
            return;
        }
        let name = format!("kwtest{}-1", std::process::id());
        ip_batch(None, &format!("netns add {name}\n")).unwrap();
        let mut inside = Command::new("ip")
            .args(["netns", "exec", &name, "sleep", "60"])
            .spawn()
            .unwrap();
        let mut outside = Command::new("sleep").arg("60").spawn().unwrap();
        let names = [name];
        let pid = inside.id().to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !pids_in(&names).contains(&pid) {
            assert!(std::time::Instant::now() < deadline, "sleep never entered");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        delete(&names);
        assert!(!inside.wait().unwrap().success(), "killed");
        assert!(outside.try_wait().unwrap().is_none(), "left alone");
        assert!(!namespaces().contains(&names[0]));
        outside.kill().unwrap();
        outside.wait().unwrap();
    }

    #[test]
    fn each_end_of_each_pair_has_its_own_mac() {
        assert_eq!(mac(1, 1), "02:6b:77:00:01:01");
        assert_eq!(mac(1000, 2), "02:6b:77:03:e8:02");
        assert_ne!(mac(256, 1), mac(0, 1));
    }
}
