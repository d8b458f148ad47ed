//! A node's metrics (Prometheus text, as `knot run --metrics` serves it),
//! reduced to the figures the testnet reports.

/// The figures of one metrics scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Seconds from the start of the measurement.
    pub at: f64,
    /// The slot (0-based) and which of its nodes (0 = the first run).
    pub slot: usize,
    /// See `slot`.
    pub node: usize,
    /// Whether the node answered.
    pub answered: bool,
    /// Open channels (`knot_peers`).
    pub peers: f64,
    /// Messages received and sent (`knot_messages_total`, all types).
    pub messages: f64,
    /// Frame bytes received and sent.
    pub bytes: f64,
    /// Entries in the DHT routing table.
    pub table: f64,
    /// Bans by reason (`knot_bans_total`).
    pub bans: Vec<(String, f64)>,
    /// Handshakes by result, both directions (`knot_handshakes_total`).
    pub handshakes: Vec<(String, f64)>,
    /// DHT messages refused, by reason.
    pub dht_refused: Vec<(String, f64)>,
    /// Gossip messages by result (`knot_gossip_messages_total`).
    pub gossip: Vec<(String, f64)>,
}

/// One sample line: the metric's name, its labels text (between the
/// braces, may be empty) and its value.
fn sample(line: &str) -> Option<(&str, &str, f64)> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    Some(match series.split_once('{') {
        Some((name, labels)) => (name, labels.strip_suffix('}')?, value),
        None => (series, "", value),
    })
}

/// The value of label `key` in a labels text (`a="x",b="y"`).
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("{key}=\"");
    let start = labels.find(&pattern)? + pattern.len();
    let rest = labels.get(start..)?;
    rest.get(..rest.find('"')?)
}

/// Adds `value` to the entry `key` of `list`.
fn add(list: &mut Vec<(String, f64)>, key: &str, value: f64) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v += value,
        None => list.push((key.to_owned(), value)),
    }
}

impl Scrape {
    /// The figures in metrics text `text` (empty: the node did not answer).
    pub fn parse(text: &str, at: f64, slot: usize, node: usize) -> Self {
        let mut s = Self {
            at,
            slot,
            node,
            answered: !text.is_empty(),
            ..Self::default()
        };
        for (name, labels, value) in text.lines().filter_map(sample) {
            let by = |key: &str| label(labels, key).unwrap_or("?");
            match name {
                "knot_peers" => s.peers = value,
                "knot_messages_total" => s.messages += value,
                "knot_received_bytes_total" | "knot_sent_bytes_total" => s.bytes += value,
                "knot_dht_routing_table_peers" => s.table = value,
                "knot_bans_total" => add(&mut s.bans, by("reason"), value),
                "knot_handshakes_total" => add(&mut s.handshakes, by("result"), value),
                "knot_dht_refused_messages_total" => add(&mut s.dht_refused, by("reason"), value),
                "knot_gossip_messages_total" => add(&mut s.gossip, by("result"), value),
                _ => {}
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reported_series() {
        let text = "\
# HELP knot_peers Open channels.
# TYPE knot_peers gauge
knot_peers 7
knot_messages_total{direction=\"in\",type=\"knot/ping/1\"} 10
knot_messages_total{direction=\"out\",type=\"knotwork/dht\"} 5
knot_received_bytes_total 1000
knot_sent_bytes_total 24
knot_bans_total{reason=\"over_budget\"} 1
knot_handshakes_total{direction=\"inbound\",result=\"ok\"} 3
knot_handshakes_total{direction=\"outbound\",result=\"ok\"} 2
knot_handshakes_total{direction=\"inbound\",result=\"refused\"} 1
knot_dht_routing_table_peers 19
knot_gossip_messages_total{result=\"duplicate\"} 4
# EOF
";
        let s = Scrape::parse(text, 1.5, 2, 0);
        assert!(s.answered);
        assert_eq!(
            (s.peers, s.messages, s.bytes, s.table),
            (7.0, 15.0, 1024.0, 19.0)
        );
        assert_eq!(s.bans, [("over_budget".to_owned(), 1.0)]);
        assert_eq!(
            s.handshakes,
            [("ok".to_owned(), 5.0), ("refused".to_owned(), 1.0)]
        );
        assert_eq!(s.gossip, [("duplicate".to_owned(), 4.0)]);
        assert!(!Scrape::parse("", 0.0, 0, 0).answered);
    }
}
