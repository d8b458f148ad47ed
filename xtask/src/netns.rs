//! Hosts as network namespaces on one bridge, for the commands that run
//! node processes as separate machines (`chaos`, `testnet`).
//!
//! A [`Bridge`] is a bridge `br0` in a namespace of its own and one
//! namespace per host, joined to it by a veth pair: inside host `i` the link
//! is `veth0` with the host's address, in the bridge namespace its end is
//! [`Bridge::port`] `p<i>`, a port of `br0`. Links are made inside the
//! namespaces, so nothing is added to the root namespace. Namespace names
//! start with the command's prefix and the xtask's process id
//! (`kwc4242-br`, `kwc4242-3`), so runs at the same time keep apart;
//! namespaces of runs whose process is gone are removed first
//! ([`remove_leftovers`]), and `Drop` kills what still runs in this run's
//! namespaces and deletes them (which deletes their links).
//!
//! Building is batched (`ip -batch`): one `ip` process adds every
//! namespace, one every veth pair, one joins every port to the bridge, and
//! one per host sets its address (a host's own namespace can only be
//! configured from inside it). Host links have no IPv6 address
//! (`addrgenmode none`): nothing multicasts on the bridge that the nodes
//! did not send.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::shell;

/// Host namespaces joined by one bridge; see the module docs.
#[derive(Debug)]
pub struct Bridge {
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

/// Kills every process in the namespaces of `names` (`kill -9`), then
/// deletes the namespaces.
pub fn delete(names: &[String]) {
    let mut pids = Vec::new();
    for ns in names {
        if let Ok(list) = shell::output(Command::new("ip").args(["netns", "pids", ns])) {
            pids.extend(list.split_whitespace().map(str::to_owned));
        }
    }
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

impl Bridge {
    /// Builds the bridge and one host namespace per address of `addrs`
    /// (`10.201.0.1/24`; host `i` has `addrs[i - 1]`), named after `prefix`.
    pub fn new(prefix: &str, addrs: &[String]) -> Result<Self> {
        remove_leftovers(prefix);
        // The guard exists before anything is made, so a failure midway
        // still deletes what was made.
        let bridge = Self {
            name: format!("{prefix}{}", std::process::id()),
            hosts: addrs.len(),
        };
        let br = bridge.bridge_ns();
        let hosts = 1..=addrs.len();
        let mut batch = format!("netns add {br}\n");
        batch.extend(
            hosts
                .clone()
                .map(|i| format!("netns add {}\n", bridge.host_ns(i))),
        );
        ip_batch(None, &batch)?;
        ip_batch(
            Some(&br),
            "link add br0 type bridge\nlink set br0 up\nlink set lo up\n",
        )?;
        let pairs: String = hosts
            .clone()
            .map(|i| {
                format!(
                    "link add veth0 netns {} type veth peer name {} netns {br}\n",
                    bridge.host_ns(i),
                    Self::port(i)
                )
            })
            .collect();
        ip_batch(None, &pairs)?;
        let ports: String = hosts
            .clone()
            .map(|i| format!("link set {} master br0 up\n", Self::port(i)))
            .collect();
        ip_batch(Some(&br), &ports)?;
        for (i, addr) in hosts.zip(addrs) {
            ip_batch(
                Some(&bridge.host_ns(i)),
                &format!(
                    "link set veth0 addrgenmode none\naddr add {addr} dev veth0\nlink set veth0 up\nlink set lo up\n"
                ),
            )?;
        }
        Ok(bridge)
    }

    /// The bridge's namespace.
    pub fn bridge_ns(&self) -> String {
        format!("{}-br", self.name)
    }

    /// The namespace of host `i` (1-based).
    pub fn host_ns(&self, i: usize) -> String {
        format!("{}-{i}", self.name)
    }

    /// The bridge's port to host `i`, in the bridge namespace.
    pub fn port(i: usize) -> String {
        format!("p{i}")
    }

    /// How many hosts there are.
    pub fn hosts(&self) -> usize {
        self.hosts
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let mut names: Vec<String> = (1..=self.hosts).map(|i| self.host_ns(i)).collect();
        names.push(self.bridge_ns());
        delete(&names);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_carry_the_owner_pid() {
        assert_eq!(owner("kwc", "kwc4242-br"), Some(4242));
        assert_eq!(owner("kwc", "kwc4242-3"), Some(4242));
        assert_eq!(owner("kwc", "kwt4242-3"), None);
        assert_eq!(owner("kwc", "kwc-br"), None);
    }
}
