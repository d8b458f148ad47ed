//! `knot.toml`: the node's configuration file, its `KNOT_*` environment
//! overrides and validation.
//!
//! Values come from three places, later ones winning: the file
//! ([`FileConfig::from_toml`]), then environment variables
//! ([`FileConfig::apply_env`]), then command-line flags (the caller sets the
//! fields). [`FileConfig::validate`] turns the result into a [`Validated`]
//! configuration — a [`NodeConfig`], a [`NatConfig`] and parsed addresses — or a
//! [`KnotError`] that names the field at fault.
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

use crate::error::KnotError;
use std::path::{Path, PathBuf};
use std::time::Duration;

use knotwork_core::{DialAddr, DiscoverySource, PeerAddr};
use serde::{Deserialize, Serialize};

use knotwork_nat::{NatConfig, RelayLimits};
use knotwork_node::{DiscoveryConfig, NodeConfig, RateBudget};
use knotwork_tasks::HealthConfig;

mod sections;
pub use sections::*;

/// The commented example `knot.toml` printed by `knot config example`;
/// every field at its default (a test checks that).
pub const EXAMPLE: &str = include_str!("../../knot.example.toml");

/// The prefix of every environment override.
pub const ENV_PREFIX: &str = "KNOT_";

/// The largest `channel.max_frame_len`: 16 MiB.
pub const MAX_FRAME_LEN_LIMIT: usize = 16 << 20;

fn bad(field: impl Into<String>, value: impl ToString, reason: impl Into<String>) -> KnotError {
    KnotError::BadValue {
        field: field.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// [`DiscoveryConfig::prefer`] from the names in `discovery_preference`.
fn discovery_config(names: &[String]) -> Result<DiscoveryConfig, KnotError> {
    const SOURCES: [DiscoverySource; 5] = [
        DiscoverySource::Ble,
        DiscoverySource::Mdns,
        DiscoverySource::Dht,
        DiscoverySource::Seed,
        DiscoverySource::Manual,
    ];
    let mut config = DiscoveryConfig::default();
    for (i, name) in names.iter().enumerate() {
        let source = SOURCES
            .into_iter()
            .find(|s| s.to_string() == *name)
            .ok_or_else(|| {
                let why = "must be a discovery source: ble, mdns, dht, seed or manual";
                bad(format!("discovery_preference[{i}]"), name, why)
            })?;
        config.prefer.push(source);
    }
    Ok(config)
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
    /// [`NodeConfig::dial_preference`]: address schemes, most preferred first.
    pub dial_preference: Vec<String>,
    /// [`DiscoveryConfig::prefer`]: discovery sources whose addresses are
    /// dialed first, most preferred first.
    pub discovery_preference: Vec<String>,
    /// [`NodeConfig::max_inbound`].
    pub max_inbound: usize,
    /// [`NodeConfig::max_per_ip`].
    pub max_per_ip: usize,
    /// [`NodeConfig::max_per_subnet`].
    pub max_per_subnet: usize,
    /// [`NodeConfig::max_pending_handshakes`].
    pub max_pending_handshakes: usize,
    /// [`NodeConfig::first_byte_timeout`].
    pub first_byte_timeout_ms: u64,
    /// [`NodeConfig::handshake_starts`]: handshake starts per second per host.
    pub handshake_starts_per_second: f64,
    /// [`NodeConfig::handshake_starts`]: handshake starts at once per host.
    pub handshake_starts_burst: u32,
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
    /// [`knotwork_node::ChannelConfig::meter`].
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
    /// Health checks and their push.
    pub health: HealthSection,
    /// Logging of `knot run`.
    pub log: LogSection,
    /// Bluetooth LE.
    pub ble: BleSection,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for FileConfig {
    fn default() -> Self {
        let d = NodeConfig::default();
        Self {
            data_dir: PathBuf::from("~/.local/share/knot"),
            listen: vec!["tcp/0.0.0.0:4000".into()],
            seeds: Vec::new(),
            peers: Vec::new(),
            dial_preference: d.dial_preference.clone(),
            discovery_preference: Vec::new(),
            max_inbound: d.max_inbound,
            max_per_ip: d.max_per_ip,
            max_per_subnet: d.max_per_subnet,
            max_pending_handshakes: d.max_pending_handshakes,
            first_byte_timeout_ms: millis(d.first_byte_timeout),
            handshake_starts_per_second: d.handshake_starts.per_second,
            handshake_starts_burst: d.handshake_starts.burst,
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
            health: HealthSection::default(),
            log: LogSection::default(),
            ble: BleSection::default(),
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
    /// Seed addresses, each optionally pinned to a PeerId (`…/p2p/<id>`).
    pub seeds: Vec<DialAddr>,
    /// Manual peer addresses, each optionally pinned to a PeerId.
    pub peers: Vec<DialAddr>,
    /// The node settings.
    pub node: NodeConfig,
    /// The DHT settings.
    pub dht: DhtSection,
    /// LAN discovery settings.
    pub mdns: MdnsSection,
    /// NAT traversal settings (relays and UPnP are set by the caller).
    pub nat_config: NatConfig,
    /// Health checks and their push.
    pub health: HealthConfig,
    /// UPnP settings (`upnp_lease_ms` checked to be at least 1000).
    pub nat: NatSection,
    /// Unified discovery settings (the source preference).
    pub discovery: DiscoveryConfig,
    /// Bluetooth LE settings.
    pub ble: BleSection,
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
fn env_fields() -> Result<Vec<EnvField>, KnotError> {
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
        .map_err(|e| KnotError::Syntax(e.to_string()))?;
    let mut out = Vec::new();
    walk(&defaults, &[], &mut out);
    Ok(out)
}

/// Parses the text of an environment variable as a value of the type of `default`.
fn parse_env(var: &str, text: &str, default: &toml::Value) -> Result<toml::Value, KnotError> {
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
    /// [`KnotError::Syntax`] naming the key.
    pub fn from_toml(text: &str) -> Result<Self, KnotError> {
        toml::from_str(text).map_err(|e| KnotError::Syntax(e.to_string().trim().to_owned()))
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
    pub fn apply_env<I, K, V>(&mut self, vars: I) -> Result<(), KnotError>
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
                .ok_or_else(|| KnotError::UnknownVariable(var.to_owned()))?;
            let value = parse_env(var, text, &field.default)?;
            let mut table =
                toml::Table::try_from(&*self).map_err(|e| KnotError::Syntax(e.to_string()))?;
            let mut slot = &mut table;
            let (last, sections) = field
                .path
                .split_last()
                .ok_or_else(|| KnotError::UnknownVariable(var.to_owned()))?;
            for section in sections {
                slot = match slot
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                {
                    toml::Value::Table(t) => t,
                    _ => return Err(KnotError::UnknownVariable(var.to_owned())),
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
    pub fn validate(&self) -> Result<Validated, KnotError> {
        fn parsed<T>(field: &str, list: &[String]) -> Result<Vec<T>, KnotError>
        where
            T: std::str::FromStr,
            T::Err: std::fmt::Display,
        {
            list.iter()
                .enumerate()
                .map(|(i, a)| {
                    a.parse::<T>()
                        .map_err(|e| bad(format!("{field}[{i}]"), a, e.to_string()))
                })
                .collect()
        }
        let addrs = parsed::<PeerAddr>;
        let dial_addrs = parsed::<DialAddr>;
        fn positive(field: &str, v: u64) -> Result<Duration, KnotError> {
            match v {
                0 => Err(bad(field, v, "must be greater than 0")),
                ms => Ok(Duration::from_millis(ms)),
            }
        }
        fn nonzero(field: &str, v: usize) -> Result<usize, KnotError> {
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
        ) -> Result<RateBudget, KnotError> {
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
        let seeds = dial_addrs("seeds", &self.seeds)?;
        let peers = dial_addrs("peers", &self.peers)?;

        let mut node = NodeConfig::default();
        for (i, scheme) in self.dial_preference.iter().enumerate() {
            if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_lowercase()) {
                let why = "must be an address scheme such as quic, tcp or ws";
                return Err(bad(format!("dial_preference[{i}]"), scheme, why));
            }
        }
        node.dial_preference = self.dial_preference.clone();
        node.max_inbound = nonzero("max_inbound", self.max_inbound)?;
        node.max_per_ip = nonzero("max_per_ip", self.max_per_ip)?;
        node.max_per_subnet = nonzero("max_per_subnet", self.max_per_subnet)?;
        node.max_pending_handshakes =
            nonzero("max_pending_handshakes", self.max_pending_handshakes)?;
        node.first_byte_timeout = positive("first_byte_timeout_ms", self.first_byte_timeout_ms)?;
        node.handshake_starts = budget(
            [
                "handshake_starts_per_second".into(),
                "handshake_starts_burst".into(),
            ],
            self.handshake_starts_per_second,
            self.handshake_starts_burst,
        )?;
        node.handshake_timeout = positive("handshake_timeout_ms", self.handshake_timeout_ms)?;
        node.dial_timeout = positive("dial_timeout_ms", self.dial_timeout_ms)?;
        node.outbound_slots = self.outbound_slots;
        node.maintenance_interval =
            positive("maintenance_interval_ms", self.maintenance_interval_ms)?;
        node.host_capacity = nonzero("host_capacity", self.host_capacity)?;

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
        node.channel.compression = c.compression;
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

        let mut nat_config = NatConfig::default();
        nat_config.reachability.quorum =
            nonzero("nat.reachability_quorum", self.nat.reachability_quorum)?;

        let r = &self.relay;
        nat_config.holepunch = r.holepunch;
        if r.service {
            if r.max_bytes == 0 {
                return Err(bad(
                    "relay.max_bytes",
                    r.max_bytes,
                    "must be greater than 0",
                ));
            }
            let mut limits = RelayLimits::default();
            limits.max_reservations = nonzero("relay.max_reservations", r.max_reservations)?;
            limits.max_circuits = nonzero("relay.max_circuits", r.max_circuits)?;
            limits.max_circuits_per_peer =
                nonzero("relay.max_circuits_per_peer", r.max_circuits_per_peer)?;
            limits.max_bytes = r.max_bytes;
            limits.max_duration = positive("relay.max_duration_ms", r.max_duration_ms)?;
            nat_config.relay_service = Some(limits);
        }

        let mut health = HealthConfig::default();
        health.interval = positive("health.interval_ms", self.health.interval_ms)?;
        health.min_peers = self.health.min_peers;
        health.max_queued_tasks = self.health.max_queued_tasks;
        health.push_burst = nonzero("health.push_burst", self.health.push_burst)?;
        health.push_window = positive("health.push_window_ms", self.health.push_window_ms)?;
        Ok(Validated {
            data_dir: self.data_dir.clone(),
            listen,
            seeds,
            peers,
            node,
            dht: self.dht.clone(),
            mdns: self.mdns.clone(),
            nat_config,
            nat: self.nat.clone(),
            health,
            discovery: discovery_config(&self.discovery_preference)?,
            ble: {
                self.ble.validate()?;
                self.ble.clone()
            },
        })
    }
}

#[cfg(test)]
mod tests;
