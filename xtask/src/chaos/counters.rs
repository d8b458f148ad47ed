//! Packet counters of the hostile scenario (nftables named counters), read
//! before and after each attack:
//!
//! - on the router (what crosses it between hosts): every IPv4 packet the
//!   attacker sends (`attacker_out`) and its packets to the target
//!   (`attacker_to_target`), the target's packets and connection attempts
//!   (SYN without ACK) to the attacker (`target_to_attacker`,
//!   `target_syn_attacker`), and every packet and SYN that reaches the sink
//!   host from anyone (`to_sink`, `syn_to_sink`): the sink plays a
//!   non-consenting third party, so anything there is reflection;
//! - in the target's namespace: its SYNs to port 9 on its own loopback
//!   (`loopback_syn`; the attackers name that port too).

use std::collections::HashMap;

use super::net::{Net, host_ip};
use crate::error::{Error, Result};
use crate::netns::Hosts;

/// The table's name, in the router and in the target's namespace.
const TABLE: &str = "kwc_count";

/// The counter names, for readers of [`Counts`].
pub const ATTACKER_OUT: &str = "attacker_out";
pub const ATTACKER_TO_TARGET: &str = "attacker_to_target";
pub const TARGET_TO_ATTACKER: &str = "target_to_attacker";
pub const TARGET_SYN_ATTACKER: &str = "target_syn_attacker";
pub const TO_SINK: &str = "to_sink";
pub const SYN_TO_SINK: &str = "syn_to_sink";
pub const LOOPBACK_SYN: &str = "loopback_syn";

/// Packets and bytes of each counter at one moment.
#[derive(Clone, Debug, Default)]
pub struct Counts(HashMap<String, (u64, u64)>);

impl Counts {
    /// Packets of `name` (0 if unknown).
    pub fn packets(&self, name: &str) -> u64 {
        self.0.get(name).map_or(0, |c| c.0)
    }

    /// Bytes of `name` (0 if unknown).
    pub fn bytes(&self, name: &str) -> u64 {
        self.0.get(name).map_or(0, |c| c.1)
    }

    /// What was counted between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts(
            self.0
                .iter()
                .map(|(k, (p, b))| {
                    let (p0, b0) = earlier.0.get(k).copied().unwrap_or_default();
                    (k.clone(), (p.saturating_sub(p0), b.saturating_sub(b0)))
                })
                .collect(),
        )
    }
}

/// Reads `nft list counters` output: `counter NAME {` then `packets P bytes B`.
fn parse(text: &str, into: &mut HashMap<String, (u64, u64)>) {
    let mut name: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("counter ") {
            name = rest.split_whitespace().next().map(str::to_owned);
        } else if let (Some(n), Some(rest)) = (&name, line.strip_prefix("packets ")) {
            let mut words = rest.split_whitespace();
            let packets = words.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let bytes = words.nth(1).and_then(|b| b.parse().ok()).unwrap_or(0);
            into.insert(n.clone(), (packets, bytes));
            name = None;
        }
    }
}

/// The installed counters; dropping them removes the tables.
pub struct Counters<'a> {
    net: &'a Net,
    target: usize,
}

impl<'a> Counters<'a> {
    /// Counts between hosts `target`, `attacker` and `sink`.
    pub fn install(net: &'a Net, target: usize, attacker: usize, sink: usize) -> Result<Self> {
        let (t, a, s) = (
            Hosts::port(target),
            Hosts::port(attacker),
            Hosts::port(sink),
        );
        let sink_ip = host_ip(sink);
        let syn = "tcp flags & (syn | ack) == syn";
        let router = format!(
            "table inet {TABLE} {{
 counter {ATTACKER_OUT} {{}}
 counter {ATTACKER_TO_TARGET} {{}}
 counter {TARGET_TO_ATTACKER} {{}}
 counter {TARGET_SYN_ATTACKER} {{}}
 counter {TO_SINK} {{}}
 counter {SYN_TO_SINK} {{}}
 chain forward {{
  type filter hook forward priority 0; policy accept;
  iifname \"{a}\" meta nfproto ipv4 counter name \"{ATTACKER_OUT}\"
  iifname \"{a}\" oifname \"{t}\" meta nfproto ipv4 counter name \"{ATTACKER_TO_TARGET}\"
  iifname \"{t}\" oifname \"{a}\" meta nfproto ipv4 counter name \"{TARGET_TO_ATTACKER}\"
  iifname \"{t}\" oifname \"{a}\" {syn} counter name \"{TARGET_SYN_ATTACKER}\"
  oifname \"{s}\" ip daddr {sink_ip} counter name \"{TO_SINK}\"
  oifname \"{s}\" ip daddr {sink_ip} {syn} counter name \"{SYN_TO_SINK}\"
 }}
}}
"
        );
        let host = format!(
            "table inet {TABLE} {{
 counter {LOOPBACK_SYN} {{}}
 chain output {{
  type filter hook output priority 0; policy accept;
  oifname \"lo\" tcp dport 9 {syn} counter name \"{LOOPBACK_SYN}\"
 }}
}}
"
        );
        let counters = Self { net, target };
        net.nft(&net.router_ns(), &router)?;
        net.nft(&net.host_ns(target), &host)?;
        Ok(counters)
    }

    /// Every counter now.
    pub fn read(&self) -> Result<Counts> {
        let mut all = HashMap::new();
        for (ns, family) in [
            (self.net.router_ns(), "inet"),
            (self.net.host_ns(self.target), "inet"),
        ] {
            let text = self
                .net
                .nft_output(&ns, &["list", "counters", "table", family, TABLE])?;
            parse(&text, &mut all);
        }
        if all.is_empty() {
            return Err(Error::failed("the packet counters are gone"));
        }
        Ok(Counts(all))
    }
}

impl Drop for Counters<'_> {
    fn drop(&mut self) {
        let _ = self
            .net
            .nft_output(&self.net.router_ns(), &["delete", "table", "inet", TABLE]);
        let _ = self.net.nft_output(
            &self.net.host_ns(self.target),
            &["delete", "table", "inet", TABLE],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nft_counters() {
        let text = "table inet kwc_count {\n\tcounter to_sink {\n\t\tpackets 12 bytes 720\n\t}\n\tcounter attacker_out {\n\t\tpackets 0 bytes 0\n\t}\n}\n";
        let mut all = HashMap::new();
        parse(text, &mut all);
        let now = Counts(all);
        assert_eq!(now.packets(TO_SINK), 12);
        assert_eq!(now.bytes(TO_SINK), 720);
        assert_eq!(now.packets(ATTACKER_OUT), 0);
        let before = Counts([(TO_SINK.to_owned(), (2, 120))].into_iter().collect());
        assert_eq!(now.since(&before).packets(TO_SINK), 10);
    }
}
