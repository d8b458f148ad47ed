//! The sections of `knot.toml` other than its top-level fields: each
//! section's type as written, its defaults, and what it turns into.

use std::collections::BTreeMap;
use std::path::Path;

use knotwork_core::PeerAddr;
use knotwork_log::{LogConfig, LogFormat, LogRotation};
use knotwork_nat::{NatConfig, RelayLimits};
use knotwork_node::MeterConfig;
use knotwork_node::backoff::BackoffConfig;
use knotwork_node::protocol::ping::PingConfig;
use knotwork_tasks::HealthConfig;
use serde::{Deserialize, Serialize};

use super::{bad, expand_home, millis};
use crate::error::KnotError;

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
    /// [`RateBudget::per_second`](knotwork_node::RateBudget::per_second).
    pub per_second: f64,
    /// [`RateBudget::burst`](knotwork_node::RateBudget::burst).
    pub burst: u32,
}

/// The `[channel]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ChannelSection {
    /// [`knotwork_node::ChannelConfig::send_queue`].
    pub send_queue: usize,
    /// [`knotwork_node::ChannelConfig::subscription_capacity`].
    pub subscription_capacity: usize,
    /// [`knotwork_node::ChannelConfig::request_timeout`].
    pub request_timeout_ms: u64,
    /// [`knotwork_node::ChannelConfig::max_frame_len`].
    pub max_frame_len: usize,
    /// [`knotwork_node::ChannelConfig::batch_bytes`].
    pub batch_bytes: usize,
    /// [`knotwork_node::ChannelConfig::drain_timeout`].
    pub drain_timeout_ms: u64,
    /// [`knotwork_node::ChannelConfig::default_budget`], sustained rate.
    pub default_per_second: f64,
    /// [`knotwork_node::ChannelConfig::default_budget`], burst.
    pub default_burst: u32,
    /// [`knotwork_node::ChannelConfig::budgets`], by message name.
    pub budgets: BTreeMap<String, BudgetEntry>,
    /// [`knotwork_node::ChannelConfig::compression`]: `none` (the default), `lz4`
    /// or `zstd`; a channel compresses only when both nodes enable it.
    pub compression: knotwork_node::Compression,
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

/// The `[ble]` section: Bluetooth LE of `knot run` (feature `ble`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BleSection {
    /// Dial `ble/<device>` addresses and find peers by BLE scanning; off by
    /// default (`knot run --ble` turns it on for one run).
    pub enabled: bool,
    /// The BlueZ adapter, such as `hci0`.
    pub adapter: String,
    /// Also advertise and accept connections as a BLE peripheral
    /// (listen on `ble/<adapter>`).
    pub advertise: bool,
    /// How long a dial scans for the device before it fails.
    pub scan_timeout_ms: u64,
}

impl Default for BleSection {
    fn default() -> Self {
        Self {
            enabled: false,
            adapter: "hci0".into(),
            advertise: true,
            scan_timeout_ms: 10_000,
        }
    }
}

impl BleSection {
    /// Checks the fields.
    pub(super) fn validate(&self) -> Result<(), KnotError> {
        if PeerAddr::ble(&self.adapter).is_err() {
            return Err(bad("ble.adapter", &self.adapter, "not a BLE adapter name"));
        }
        if self.scan_timeout_ms == 0 {
            return Err(bad("ble.scan_timeout_ms", 0, "must be greater than 0"));
        }
        Ok(())
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
    /// [`knotwork_nat::ReachabilityConfig::quorum`].
    pub reachability_quorum: usize,
}

impl Default for NatSection {
    fn default() -> Self {
        Self {
            upnp: false,
            upnp_lease_ms: 3_600_000,
            reachability_quorum: knotwork_nat::ReachabilityConfig::default().quorum,
        }
    }
}

/// The `[relay]` section: the circuit relay service and hole punching
/// ([`knotwork_nat`]); the limits apply when `service` is on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RelaySection {
    /// Offer the relay service ([`knotwork_nat::NatConfig::relay_service`]).
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
    /// [`knotwork_nat::NatConfig::holepunch`].
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
            holepunch: NatConfig::default().holepunch,
        }
    }
}

/// The `[health]` section: the node's self-checks and their push to
/// subscribers ([`HealthConfig`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HealthSection {
    /// [`HealthConfig::interval`].
    pub interval_ms: u64,
    /// [`HealthConfig::min_peers`].
    pub min_peers: usize,
    /// [`HealthConfig::max_queued_tasks`].
    pub max_queued_tasks: usize,
    /// [`HealthConfig::push_burst`].
    pub push_burst: usize,
    /// [`HealthConfig::push_window`].
    pub push_window_ms: u64,
}

impl Default for HealthSection {
    fn default() -> Self {
        let d = HealthConfig::default();
        Self {
            interval_ms: millis(d.interval),
            min_peers: d.min_peers,
            max_queued_tasks: d.max_queued_tasks,
            push_burst: d.push_burst,
            push_window_ms: millis(d.push_window),
        }
    }
}

/// The `[log]` section: how `knot run` logs ([`LogConfig`]). Written as
/// plain values (an empty `file` for stderr, `max_files` 0 for all) so that
/// each has its `KNOT_LOG_*` variable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LogSection {
    /// [`LogConfig::level`]; empty: `RUST_LOG`, else `warn`.
    pub level: String,
    /// [`LogConfig::format`]: `text` or `json`.
    pub format: LogFormat,
    /// [`LogConfig::file`]; empty: stderr.
    pub file: String,
    /// [`LogConfig::rotation`]: `never`, `minutely`, `hourly` or `daily`.
    pub rotation: LogRotation,
    /// [`LogConfig::max_files`]; 0: keep all.
    pub max_files: usize,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: String::new(),
            format: LogFormat::Text,
            file: String::new(),
            rotation: LogRotation::Never,
            max_files: 0,
        }
    }
}

impl LogSection {
    /// The library's form of this section, `~/` in `file` expanded with
    /// `home`, an empty level replaced by `rust_log` (or `warn`).
    pub fn log_config(&self, home: Option<&Path>, rust_log: Option<String>) -> LogConfig {
        let level = match self.level.as_str() {
            "" => rust_log.unwrap_or_else(|| "warn".to_owned()),
            level => level.to_owned(),
        };
        LogConfig {
            level,
            format: self.format,
            file: (!self.file.is_empty()).then(|| expand_home(Path::new(&self.file), home)),
            rotation: self.rotation,
            max_files: (self.max_files > 0).then_some(self.max_files),
        }
    }
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
        let d = knotwork_node::ChannelConfig::default();
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
            compression: d.compression,
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
