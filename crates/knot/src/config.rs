//! `knot.toml`: the node's configuration file, its `KNOT_*` environment
//! overrides and validation (feature `cli`).
//!
//! Values come from three places, later ones winning: the file
//! ([`FileConfig::from_toml`]), then environment variables
//! ([`FileConfig::apply_env`]), then command-line flags (the caller sets the
//! fields). [`FileConfig::validate`] turns the result into a [`Validated`]
//! configuration — a [`NodeConfig`] and parsed addresses — or a
//! [`ConfigError`] that names the field at fault.
//!
//! # Format
//! [`EXAMPLE`] is the commented reference, with every field at its default.
//! Durations are whole milliseconds in fields ending in `_ms`. Unknown keys
//! are refused by name. The environment variable of a field is `KNOT_`
//! followed by its section and name in upper case joined by `_`
//! (`max_inbound` → `KNOT_MAX_INBOUND`, `[ping] interval_ms` →
//! `KNOT_PING_INTERVAL_MS`); lists are comma-separated. The variable names
//! are derived from the fields themselves, so they cannot go stale.
//!
//! Nothing here reads files or the process environment: the caller passes
//! the text and the variables in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use knotwork_core::PeerAddr;
use serde::{Deserialize, Serialize};

use crate::backoff::BackoffConfig;
use crate::meter::{MeterConfig, RateBudget};
use crate::node::NodeConfig;
use crate::protocol::ping::PingConfig;
use crate::protocol::relay::RelayLimits;

/// The commented example `knot.toml` printed by `knot config example`;
/// every field at its default (a test checks that).
pub const EXAMPLE: &str = include_str!("../knot.example.toml");

/// The prefix of every environment override.
pub const ENV_PREFIX: &str = "KNOT_";

/// The largest `channel.max_frame_len`: 16 MiB.
pub const MAX_FRAME_LEN_LIMIT: usize = 16 << 20;

/// What is wrong with a configuration; each variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is not TOML, or a key is unknown or has the wrong type; the
    /// message names the key.
    #[error("{0}")]
    Syntax(String),
    /// A `KNOT_*` environment variable that matches no field.
    #[error("unknown variable {0} (`knot config env` lists them)")]
    UnknownVariable(String),
    /// A value that does not parse or is out of range.
    #[error("{field}: {reason} (got {value:?})")]
    BadValue {
        /// The field (`max_inbound`, `listen[1]`, `ping.timeout_ms`) or
        /// variable (`KNOT_MAX_INBOUND`).
        field: String,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn bad(field: impl Into<String>, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError::BadValue {
        field: field.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// The `[ping]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PingSection {
    /// [`PingConfig::interval`].
    pub interval_ms: u64,
    /// [`PingConfig::timeout`].
    pub timeout_ms: u64,
}

/// A rate budget in `[channel.budgets]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetEntry {
    /// [`RateBudget::per_second`].
    pub per_second: f64,
    /// [`RateBudget::burst`].
    pub burst: u32,
}

/// The `[channel]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ChannelSection {
    /// [`crate::ChannelConfig::send_queue`].
    pub send_queue: usize,
    /// [`crate::ChannelConfig::subscription_capacity`].
    pub subscription_capacity: usize,
    /// [`crate::ChannelConfig::request_timeout`].
    pub request_timeout_ms: u64,
    /// [`crate::ChannelConfig::max_frame_len`].
    pub max_frame_len: usize,
    /// [`crate::ChannelConfig::batch_bytes`].
    pub batch_bytes: usize,
    /// [`crate::ChannelConfig::drain_timeout`].
    pub drain_timeout_ms: u64,
    /// [`crate::ChannelConfig::default_budget`], sustained rate.
    pub default_per_second: f64,
    /// [`crate::ChannelConfig::default_budget`], burst.
    pub default_burst: u32,
    /// [`crate::ChannelConfig::budgets`], by message name.
    pub budgets: BTreeMap<String, BudgetEntry>,
}

/// The `[meter]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MeterSection {
    /// [`MeterConfig::ban_threshold`].
    pub ban_threshold: u32,
    /// [`MeterConfig::decay_per_second`].
    pub decay_per_second: f64,
    /// [`MeterConfig::ban_duration`].
    pub ban_duration_ms: u64,
}

/// The `[backoff]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BackoffSection {
    /// [`BackoffConfig::initial`].
    pub initial_ms: u64,
    /// [`BackoffConfig::max`].
    pub max_ms: u64,
}

/// Whether the node serves the DHT or only queries it (`[dht] mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DhtMode {
    /// Answers requests and may be put in others' routing tables.
    #[default]
    Server,
    /// Only sends queries; never in others' routing tables.
    Client,
}

/// The `[dht]` section (used when the `dht` feature is built in).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DhtSection {
    /// Whether `knot run` runs the Kademlia DHT.
    pub enabled: bool,
    /// `server` or `client`.
    pub mode: DhtMode,
}

impl Default for DhtSection {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: DhtMode::Server,
        }
    }
}

/// The `[mdns]` section: LAN discovery by mDNS / DNS-SD in `knot run`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MdnsSection {
    /// Announce this node and find peers on the local network.
    pub enabled: bool,
    /// The DNS-SD service type; a private network picks its own.
    pub service_type: String,
}

impl Default for MdnsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            service_type: "_knotwork._udp.local.".into(),
        }
    }
}

/// The `[nat]` section: NAT traversal of `knot run`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NatSection {
    /// Map the listen port on the LAN's UPnP gateway (feature `upnp`); off
    /// by default because the gateway search is a multicast on the LAN.
    pub upnp: bool,
    /// The UPnP lease asked for, renewed at half of it.
    pub upnp_lease_ms: u64,
    /// [`crate::nat::ReachabilityConfig::quorum`].
    pub reachability_quorum: usize,
}

impl Default for NatSection {
    fn default() -> Self {
        Self {
            upnp: false,
            upnp_lease_ms: 3_600_000,
            reachability_quorum: crate::nat::ReachabilityConfig::default().quorum,
        }
    }
}

/// The `[relay]` section: the circuit relay service and hole punching
/// ([`crate::nat`]); the limits apply when `service` is on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RelaySection {
    /// Offer the relay service ([`crate::nat::NatConfig::relay_service`]).
    pub service: bool,
    /// [`RelayLimits::max_reservations`].
    pub max_reservations: usize,
    /// [`RelayLimits::max_circuits`].
    pub max_circuits: usize,
    /// [`RelayLimits::max_circuits_per_peer`].
    pub max_circuits_per_peer: usize,
    /// [`RelayLimits::max_bytes`].
    pub max_bytes: u64,
    /// [`RelayLimits::max_duration`].
    pub max_duration_ms: u64,
    /// [`crate::nat::NatConfig::holepunch`].
    pub holepunch: bool,
}

impl Default for RelaySection {
    fn default() -> Self {
        let limits = RelayLimits::default();
        Self {
            service: false,
            max_reservations: limits.max_reservations,
            max_circuits: limits.max_circuits,
            max_circuits_per_peer: limits.max_circuits_per_peer,
            max_bytes: limits.max_bytes,
            max_duration_ms: millis(limits.max_duration),
            holepunch: crate::nat::NatConfig::default().holepunch,
        }
    }
}

/// The fields of `knot.toml`, as written; see [`EXAMPLE`] and the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FileConfig {
    /// Where the identity key and the control socket live; a leading `~/`
    /// is the home directory ([`expand_home`]).
    pub data_dir: PathBuf,
    /// Listen addresses.
    pub listen: Vec<String>,
    /// Seed addresses.
    pub seeds: Vec<String>,
    /// Manual peer addresses.
    pub peers: Vec<String>,
    /// [`NodeConfig::max_inbound`].
    pub max_inbound: usize,
    /// [`NodeConfig::max_per_ip`].
    pub max_per_ip: usize,
    /// [`NodeConfig::max_pending_handshakes`].
    pub max_pending_handshakes: usize,
    /// [`NodeConfig::handshake_timeout`].
    pub handshake_timeout_ms: u64,
    /// [`NodeConfig::dial_timeout`].
    pub dial_timeout_ms: u64,
    /// [`NodeConfig::outbound_slots`].
    pub outbound_slots: usize,
    /// [`NodeConfig::maintenance_interval`].
    pub maintenance_interval_ms: u64,
    /// [`NodeConfig::host_capacity`].
    pub host_capacity: usize,
    /// [`NodeConfig::ping`].
    pub ping: PingSection,
    /// [`NodeConfig::channel`].
    pub channel: ChannelSection,
    /// [`crate::ChannelConfig::meter`].
    pub meter: MeterSection,
    /// [`NodeConfig::backoff`].
    pub backoff: BackoffSection,
    /// The DHT.
    pub dht: DhtSection,
    /// LAN discovery.
    pub mdns: MdnsSection,
    /// NAT traversal.
    pub nat: NatSection,
    /// The relay service and hole punching.
    pub relay: RelaySection,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for PingSection {
    fn default() -> Self {
        let d = PingConfig::default();
        Self {
            interval_ms: millis(d.interval),
            timeout_ms: millis(d.timeout),
        }
    }
}

impl Default for ChannelSection {
    fn default() -> Self {
        let d = crate::ChannelConfig::default();
        Self {
            send_queue: d.send_queue,
            subscription_capacity: d.subscription_capacity,
            request_timeout_ms: millis(d.request_timeout),
            max_frame_len: d.max_frame_len,
            batch_bytes: d.batch_bytes,
            drain_timeout_ms: millis(d.drain_timeout),
            default_per_second: d.default_budget.per_second,
            default_burst: d.default_budget.burst,
            budgets: BTreeMap::new(),
        }
    }
}

impl Default for MeterSection {
    fn default() -> Self {
        let d = MeterConfig::default();
        Self {
            ban_threshold: d.ban_threshold,
            decay_per_second: d.decay_per_second,
            ban_duration_ms: millis(d.ban_duration),
        }
    }
}

impl Default for BackoffSection {
    fn default() -> Self {
        let d = BackoffConfig::default();
        Self {
            initial_ms: millis(d.initial),
            max_ms: millis(d.max),
        }
    }
}

impl Default for FileConfig {
    fn default() -> Self {
        let d = NodeConfig::default();
        Self {
            data_dir: PathBuf::from("~/.local/share/knot"),
            listen: vec!["tcp/0.0.0.0:4000".into()],
            seeds: Vec::new(),
            peers: Vec::new(),
            max_inbound: d.max_inbound,
            max_per_ip: d.max_per_ip,
            max_pending_handshakes: d.max_pending_handshakes,
            handshake_timeout_ms: millis(d.handshake_timeout),
            dial_timeout_ms: millis(d.dial_timeout),
            outbound_slots: d.outbound_slots,
            maintenance_interval_ms: millis(d.maintenance_interval),
            host_capacity: d.host_capacity,
            ping: PingSection::default(),
            channel: ChannelSection::default(),
            meter: MeterSection::default(),
            backoff: BackoffSection::default(),
            dht: DhtSection::default(),
            mdns: MdnsSection::default(),
            nat: NatSection::default(),
            relay: RelaySection::default(),
        }
    }
}

/// A validated configuration, ready to start a node with.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Validated {
    /// Where the identity key and the control socket live (`~/` not yet expanded).
    pub data_dir: PathBuf,
    /// Listen addresses.
    pub listen: Vec<PeerAddr>,
    /// Seed addresses.
    pub seeds: Vec<PeerAddr>,
    /// Manual peer addresses.
    pub peers: Vec<PeerAddr>,
    /// The node settings.
    pub node: NodeConfig,
    /// The DHT settings.
    pub dht: DhtSection,
    /// LAN discovery settings.
    pub mdns: MdnsSection,
    /// NAT traversal settings (`upnp_lease_ms` checked to be at least 1000).
    pub nat: NatSection,
}

/// Replaces a leading `~/` (or a lone `~`) in `path` with `home`.
pub fn expand_home(path: &Path, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_path_buf(),
    }
}

/// One overridable field: its dotted path in the file, its variable name,
/// and its default (which gives its type).
struct EnvField {
    path: Vec<String>,
    var: String,
    default: toml::Value,
}

/// Every field that has an environment variable: every leaf of the default
/// configuration, except the entries of maps (`channel.budgets`).
fn env_fields() -> Result<Vec<EnvField>, ConfigError> {
    fn walk(table: &toml::Table, prefix: &[String], out: &mut Vec<EnvField>) {
        for (key, value) in table {
            let mut path = prefix.to_vec();
            path.push(key.clone());
            match value {
                toml::Value::Table(inner) => walk(inner, &path, out),
                leaf => out.push(EnvField {
                    var: format!("{ENV_PREFIX}{}", path.join("_").to_uppercase()),
                    path,
                    default: leaf.clone(),
                }),
            }
        }
    }
    let defaults = toml::Table::try_from(FileConfig::default())
        .map_err(|e| ConfigError::Syntax(e.to_string()))?;
    let mut out = Vec::new();
    walk(&defaults, &[], &mut out);
    Ok(out)
}

/// Parses the text of an environment variable as a value of the type of `default`.
fn parse_env(var: &str, text: &str, default: &toml::Value) -> Result<toml::Value, ConfigError> {
    let t = text.trim();
    Ok(match default {
        toml::Value::Integer(_) => toml::Value::Integer(
            t.parse()
                .map_err(|_| bad(var, text, "not a whole number"))?,
        ),
        toml::Value::Float(_) => {
            toml::Value::Float(t.parse().map_err(|_| bad(var, text, "not a number"))?)
        }
        toml::Value::Boolean(_) => {
            toml::Value::Boolean(t.parse().map_err(|_| bad(var, text, "not true or false"))?)
        }
        toml::Value::Array(_) => toml::Value::Array(
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        _ => toml::Value::String(text.to_owned()),
    })
}

impl FileConfig {
    /// Parses `knot.toml` text; unknown keys and wrong types are
    /// [`ConfigError::Syntax`] naming the key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string().trim().to_owned()))
    }

    /// The names of all environment variables [`FileConfig::apply_env`] knows.
    pub fn env_vars() -> Vec<String> {
        env_fields()
            .map(|fields| fields.into_iter().map(|f| f.var).collect())
            .unwrap_or_default()
    }

    /// Applies the `KNOT_*` variables among `vars` (other names are
    /// ignored; a `KNOT_*` name that matches no field is an error, so typos
    /// do not pass silently).
    pub fn apply_env<I, K, V>(&mut self, vars: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let fields = env_fields()?;
        for (var, text) in vars {
            let (var, text) = (var.as_ref(), text.as_ref());
            if !var.starts_with(ENV_PREFIX) {
                continue;
            }
            let field = fields
                .iter()
                .find(|f| f.var == var)
                .ok_or_else(|| ConfigError::UnknownVariable(var.to_owned()))?;
            let value = parse_env(var, text, &field.default)?;
            let mut table =
                toml::Table::try_from(&*self).map_err(|e| ConfigError::Syntax(e.to_string()))?;
            let mut slot = &mut table;
            let (last, sections) = field
                .path
                .split_last()
                .ok_or_else(|| ConfigError::UnknownVariable(var.to_owned()))?;
            for section in sections {
                slot = match slot
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                {
                    toml::Value::Table(t) => t,
                    _ => return Err(ConfigError::UnknownVariable(var.to_owned())),
                };
            }
            slot.insert(last.clone(), value);
            *self = table
                .try_into()
                .map_err(|e: toml::de::Error| bad(var, text, e.message().trim().to_owned()))?;
        }
        Ok(())
    }

    /// Checks every field; the first bad one is the error.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        fn addrs(field: &str, list: &[String]) -> Result<Vec<PeerAddr>, ConfigError> {
            list.iter()
                .enumerate()
                .map(|(i, a)| {
                    a.parse::<PeerAddr>()
                        .map_err(|e| bad(format!("{field}[{i}]"), a, e.to_string()))
                })
                .collect()
        }
        fn positive(field: &str, v: u64) -> Result<Duration, ConfigError> {
            match v {
                0 => Err(bad(field, v, "must be greater than 0")),
                ms => Ok(Duration::from_millis(ms)),
            }
        }
        fn nonzero(field: &str, v: usize) -> Result<usize, ConfigError> {
            match v {
                0 => Err(bad(field, v, "must be greater than 0")),
                n => Ok(n),
            }
        }
        /// `names`: the fields of the rate and of the burst.
        fn budget(
            names: [String; 2],
            per_second: f64,
            burst: u32,
        ) -> Result<RateBudget, ConfigError> {
            let [rate_field, burst_field] = names;
            if per_second.is_nan() || per_second <= 0.0 {
                return Err(bad(rate_field, per_second, "must be greater than 0"));
            }
            if burst == 0 {
                return Err(bad(burst_field, burst, "must be greater than 0"));
            }
            Ok(RateBudget::new(per_second, burst))
        }

        let listen = addrs("listen", &self.listen)?;
        let seeds = addrs("seeds", &self.seeds)?;
        let peers = addrs("peers", &self.peers)?;

        let mut node = NodeConfig {
            max_inbound: nonzero("max_inbound", self.max_inbound)?,
            max_per_ip: nonzero("max_per_ip", self.max_per_ip)?,
            max_pending_handshakes: nonzero("max_pending_handshakes", self.max_pending_handshakes)?,
            handshake_timeout: positive("handshake_timeout_ms", self.handshake_timeout_ms)?,
            dial_timeout: positive("dial_timeout_ms", self.dial_timeout_ms)?,
            outbound_slots: self.outbound_slots,
            maintenance_interval: positive(
                "maintenance_interval_ms",
                self.maintenance_interval_ms,
            )?,
            host_capacity: nonzero("host_capacity", self.host_capacity)?,
            ..NodeConfig::default()
        };

        node.ping.interval = positive("ping.interval_ms", self.ping.interval_ms)?;
        node.ping.timeout = positive("ping.timeout_ms", self.ping.timeout_ms)?;

        let c = &self.channel;
        node.channel.send_queue = nonzero("channel.send_queue", c.send_queue)?;
        node.channel.subscription_capacity =
            nonzero("channel.subscription_capacity", c.subscription_capacity)?;
        node.channel.request_timeout =
            positive("channel.request_timeout_ms", c.request_timeout_ms)?;
        if !(knotwork_wire::HEADER_LEN..=MAX_FRAME_LEN_LIMIT).contains(&c.max_frame_len) {
            return Err(bad(
                "channel.max_frame_len",
                c.max_frame_len,
                format!(
                    "must be between {} and {MAX_FRAME_LEN_LIMIT}",
                    knotwork_wire::HEADER_LEN
                ),
            ));
        }
        node.channel.max_frame_len = c.max_frame_len;
        node.channel.batch_bytes = nonzero("channel.batch_bytes", c.batch_bytes)?;
        node.channel.drain_timeout = positive("channel.drain_timeout_ms", c.drain_timeout_ms)?;
        node.channel.default_budget = budget(
            [
                "channel.default_per_second".into(),
                "channel.default_burst".into(),
            ],
            c.default_per_second,
            c.default_burst,
        )?;
        for (name, entry) in &c.budgets {
            let field = format!("channel.budgets.\"{name}\"");
            let b = budget(
                [format!("{field}.per_second"), format!("{field}.burst")],
                entry.per_second,
                entry.burst,
            )?;
            node.channel
                .budgets
                .insert(knotwork_wire::message_id(name), b);
        }

        let m = &self.meter;
        node.channel.meter.ban_threshold = match m.ban_threshold {
            0 => return Err(bad("meter.ban_threshold", 0, "must be greater than 0")),
            n => n,
        };
        if !m.decay_per_second.is_finite() || m.decay_per_second < 0.0 {
            return Err(bad(
                "meter.decay_per_second",
                m.decay_per_second,
                "must be 0 or more",
            ));
        }
        node.channel.meter.decay_per_second = m.decay_per_second;
        node.channel.meter.ban_duration = Duration::from_millis(m.ban_duration_ms);

        node.backoff.initial = positive("backoff.initial_ms", self.backoff.initial_ms)?;
        node.backoff.max = positive("backoff.max_ms", self.backoff.max_ms)?;
        if node.backoff.max < node.backoff.initial {
            return Err(bad(
                "backoff.max_ms",
                self.backoff.max_ms,
                "must be at least backoff.initial_ms",
            ));
        }

        if self.nat.upnp_lease_ms < 1000 {
            return Err(bad(
                "nat.upnp_lease_ms",
                self.nat.upnp_lease_ms,
                "must be at least 1000 (UPnP leases are whole seconds)",
            ));
        }

        node.nat.reachability.quorum =
            nonzero("nat.reachability_quorum", self.nat.reachability_quorum)?;

        let r = &self.relay;
        node.nat.holepunch = r.holepunch;
        if r.service {
            if r.max_bytes == 0 {
                return Err(bad(
                    "relay.max_bytes",
                    r.max_bytes,
                    "must be greater than 0",
                ));
            }
            let limits = RelayLimits {
                max_reservations: nonzero("relay.max_reservations", r.max_reservations)?,
                max_circuits: nonzero("relay.max_circuits", r.max_circuits)?,
                max_circuits_per_peer: nonzero(
                    "relay.max_circuits_per_peer",
                    r.max_circuits_per_peer,
                )?,
                max_bytes: r.max_bytes,
                max_duration: positive("relay.max_duration_ms", r.max_duration_ms)?,
                ..RelayLimits::default()
            };
            node.nat.relay_service = Some(limits);
        }

        Ok(Validated {
            data_dir: self.data_dir.clone(),
            listen,
            seeds,
            peers,
            node,
            dht: self.dht.clone(),
            mdns: self.mdns.clone(),
            nat: self.nat.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: ConfigError) -> String {
        match e {
            ConfigError::BadValue { field, .. } => field,
            other => panic!("expected BadValue, got {other:?}"),
        }
    }

    #[test]
    fn the_example_is_the_default_and_validates() {
        let parsed = FileConfig::from_toml(EXAMPLE).unwrap();
        assert_eq!(parsed, FileConfig::default());
        let v = parsed.validate().unwrap();
        assert_eq!(
            v.listen,
            vec!["tcp/0.0.0.0:4000".parse::<PeerAddr>().unwrap()]
        );
        let d = NodeConfig::default();
        assert_eq!(v.node.ping, d.ping);
        assert_eq!(v.node.backoff, d.backoff);
        assert_eq!(v.node.channel.meter, d.channel.meter);
        assert_eq!(v.node.channel.default_budget, d.channel.default_budget);
        assert_eq!(v.node.handshake_timeout, d.handshake_timeout);
    }

    #[test]
    fn the_example_spells_out_every_field() {
        let example: toml::Table = toml::from_str(EXAMPLE).unwrap();
        let fields = env_fields().unwrap();
        assert!(fields.len() > 20, "{} fields", fields.len());
        for f in fields {
            let mut at = &example;
            let (last, sections) = f.path.split_last().unwrap();
            for s in sections {
                at = at[s.as_str()].as_table().unwrap();
            }
            assert!(
                at.contains_key(last),
                "{} missing in knot.example.toml",
                f.var
            );
        }
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        assert_eq!(FileConfig::from_toml("").unwrap(), FileConfig::default());
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        for (text, key) in [
            ("max_inboud = 3", "max_inboud"),
            ("max_inbound = \"many\"", "max_inbound"),
            ("max_inbound = -1", "max_inbound"),
            ("[ping]\nintervl_ms = 3", "intervl_ms"),
            ("[pong]\ninterval_ms = 3", "pong"),
            (
                "[channel.budgets]\n\"a/1\" = { per_second = 1.0, brust = 2 }",
                "brust",
            ),
        ] {
            let e = FileConfig::from_toml(text).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Syntax(m) if m.contains(key)),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn bad_addresses_name_the_list_entry() {
        let c = FileConfig {
            seeds: vec!["tcp/1.2.3.4:5".into(), "udp/1.2.3.4:5".into()],
            ..FileConfig::default()
        };
        match c.validate() {
            Err(ConfigError::BadValue { field, value, .. }) => {
                assert_eq!(field, "seeds[1]");
                assert_eq!(value, "udp/1.2.3.4:5");
            }
            other => panic!("{other:?}"),
        }
    }

    type Breaker = fn(&mut FileConfig);

    #[test]
    fn out_of_range_values_are_refused_by_name() {
        let cases: [(&str, Breaker); 14] = [
            ("max_inbound", |c| c.max_inbound = 0),
            ("handshake_timeout_ms", |c| c.handshake_timeout_ms = 0),
            ("ping.timeout_ms", |c| c.ping.timeout_ms = 0),
            ("channel.send_queue", |c| c.channel.send_queue = 0),
            ("channel.max_frame_len", |c| {
                c.channel.max_frame_len = 1 << 30
            }),
            ("channel.default_per_second", |c| {
                c.channel.default_per_second = f64::NAN
            }),
            ("channel.budgets.\"x/1\".burst", |c| {
                c.channel.budgets.insert(
                    "x/1".into(),
                    BudgetEntry {
                        per_second: 1.0,
                        burst: 0,
                    },
                );
            }),
            ("meter.decay_per_second", |c| {
                c.meter.decay_per_second = -1.0
            }),
            ("backoff.max_ms", |c| c.backoff.max_ms = 1),
            ("nat.upnp_lease_ms", |c| c.nat.upnp_lease_ms = 999),
            ("nat.reachability_quorum", |c| c.nat.reachability_quorum = 0),
            ("relay.max_circuits", |c| {
                c.relay.service = true;
                c.relay.max_circuits = 0
            }),
            ("relay.max_bytes", |c| {
                c.relay.service = true;
                c.relay.max_bytes = 0
            }),
            ("relay.max_duration_ms", |c| {
                c.relay.service = true;
                c.relay.max_duration_ms = 0
            }),
        ];
        for (field, break_it) in cases {
            let mut c = FileConfig::default();
            break_it(&mut c);
            assert_eq!(field_of(c.validate().unwrap_err()), field);
        }
    }

    #[test]
    fn budgets_are_keyed_by_message_name() {
        let c = FileConfig::from_toml(
            "[channel.budgets]\n\"example/echo/1\" = { per_second = 5.0, burst = 9 }",
        )
        .unwrap();
        let v = c.validate().unwrap();
        assert_eq!(
            v.node
                .channel
                .budget(knotwork_wire::message_id("example/echo/1")),
            RateBudget::new(5.0, 9)
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut c = FileConfig::from_toml("max_inbound = 5\n[ping]\ntimeout_ms = 9").unwrap();
        c.apply_env([
            ("KNOT_MAX_INBOUND", "7"),
            ("KNOT_LISTEN", "tcp/127.0.0.1:1, tcp/[::1]:2"),
            ("KNOT_PING_INTERVAL_MS", "1500"),
            ("KNOT_METER_DECAY_PER_SECOND", "0.5"),
            ("KNOT_DATA_DIR", "/tmp/k"),
            ("HOME", "/root"),
        ])
        .unwrap();
        assert_eq!(c.max_inbound, 7);
        assert_eq!(c.listen, vec!["tcp/127.0.0.1:1", "tcp/[::1]:2"]);
        assert_eq!(c.ping.interval_ms, 1500);
        assert_eq!(c.ping.timeout_ms, 9, "the file's value stays");
        assert_eq!(c.meter.decay_per_second, 0.5);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/k"));
    }

    #[test]
    fn the_nat_section_is_off_by_default_and_set_by_file_or_environment() {
        assert!(!FileConfig::default().validate().unwrap().nat.upnp);
        let mut c = FileConfig::from_toml("[nat]\nupnp = true").unwrap();
        c.apply_env([
            ("KNOT_NAT_UPNP_LEASE_MS", "4000"),
            ("KNOT_NAT_REACHABILITY_QUORUM", "1"),
        ])
        .unwrap();
        let v = c.validate().unwrap();
        assert_eq!(
            v.nat,
            NatSection {
                upnp: true,
                upnp_lease_ms: 4000,
                reachability_quorum: 1,
            }
        );
        assert_eq!(v.node.nat.reachability.quorum, 1);
    }

    #[test]
    fn the_dht_section_takes_its_mode_from_file_and_environment() {
        let mut c = FileConfig::from_toml("[dht]\nmode = \"client\"").unwrap();
        assert_eq!(c.dht.mode, DhtMode::Client);
        assert!(c.dht.enabled);
        c.apply_env([("KNOT_DHT_ENABLED", "false"), ("KNOT_DHT_MODE", "server")])
            .unwrap();
        assert_eq!(
            c.validate().unwrap().dht,
            DhtSection {
                enabled: false,
                mode: DhtMode::Server
            }
        );
        let e = c.apply_env([("KNOT_DHT_MODE", "relay")]).unwrap_err();
        assert_eq!(field_of(e), "KNOT_DHT_MODE");
        let e = FileConfig::from_toml("[dht]\nmode = \"relay\"").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Syntax(m) if m.contains("relay")),
            "{e}"
        );
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        let mut c = FileConfig::default();
        let e = c.apply_env([("KNOT_MAX_INBOUND", "lots")]).unwrap_err();
        assert_eq!(field_of(e), "KNOT_MAX_INBOUND");
        let e = c.apply_env([("KNOT_MAX_INBOUND", "-3")]).unwrap_err();
        assert_eq!(field_of(e), "KNOT_MAX_INBOUND");
        let e = c.apply_env([("KNOT_COLOUR", "blue")]).unwrap_err();
        assert_eq!(e, ConfigError::UnknownVariable("KNOT_COLOUR".into()));
        assert_eq!(c, FileConfig::default(), "failed overrides change nothing");
    }

    #[test]
    fn mdns_is_on_by_default_and_can_be_switched_off() {
        assert!(FileConfig::default().validate().unwrap().mdns.enabled);
        let c = FileConfig::from_toml("[mdns]\nenabled = false\n").unwrap();
        assert!(!c.validate().unwrap().mdns.enabled);
        let mut c = FileConfig::default();
        c.apply_env([("KNOT_MDNS_ENABLED", "false")]).unwrap();
        assert!(!c.mdns.enabled);
    }

    #[cfg(feature = "mdns")]
    #[test]
    fn the_default_service_type_is_the_mdns_crates() {
        assert_eq!(
            MdnsSection::default().service_type,
            knotwork_discovery_mdns::DEFAULT_SERVICE_TYPE
        );
    }

    #[test]
    fn home_is_expanded_only_at_the_start() {
        let home = Path::new("/home/k");
        assert_eq!(
            expand_home(Path::new("~/.local/share/knot"), Some(home)),
            PathBuf::from("/home/k/.local/share/knot")
        );
        assert_eq!(
            expand_home(Path::new("~"), Some(home)),
            PathBuf::from("/home/k")
        );
        assert_eq!(
            expand_home(Path::new("/a/~/b"), Some(home)),
            PathBuf::from("/a/~/b")
        );
        assert_eq!(expand_home(Path::new("~/x"), None), PathBuf::from("~/x"));
    }
}
