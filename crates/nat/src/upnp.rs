//! UPnP IGD port mapping (feature `upnp`): a node behind a home router asks
//! the router to forward its TCP listen port, so that peers on the internet
//! can dial it directly.
//!
//! # Algorithm
//! [`LeaseSchedule`] is the sans-IO core: it says when to map, when to renew
//! and when a mapping that could not be renewed has lapsed; time comes in as
//! an argument. The driver (`drive`, a node task) follows it: to map, it
//! searches the gateway by SSDP (bounded by [`UpnpConfig::search_timeout`]),
//! asks for its external IP address and adds a mapping from the same
//! external port to the node's first IPv4 TCP listen port (any free external
//! port when that one is taken), for [`UpnpConfig::lease`]. It renews at
//! half the lease by adding the same mapping again; a failed attempt is
//! retried after [`UpnpConfig::retry`], and a mapping whose lease ran out
//! while renewals failed is dropped. While mapped, the external address is
//! advertised with the listen addresses (an address contribution) and
//! reported as [`NatEvent::UpnpMapped`]; when the node shuts down the
//! mapping is deleted from the gateway.
//!
//! UPnP is off unless enabled with [`NatConfig::upnp`](crate::NatConfig::upnp):
//! the search is a multicast on the local network.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use igd_next::PortMappingProtocol;
use igd_next::aio::Gateway;
use igd_next::aio::tokio::Tokio;
use knotwork_core::{PeerAddr, lock};
use knotwork_node::{AddrContribution, NodeHandle};

use crate::metrics::NatMetrics;
use crate::{Inner, NatEvent};

/// UPnP settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpnpConfig {
    /// The lease asked for; renewed at half of it.
    pub lease: Duration,
    /// How long the gateway search and each gateway request may take.
    pub search_timeout: Duration,
    /// Wait before trying again after a failed search, mapping or renewal.
    pub retry: Duration,
}

impl Default for UpnpConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(3600),
            search_timeout: Duration::from_secs(3),
            retry: Duration::from_secs(60),
        }
    }
}

/// Why a UPnP step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpnpError {
    // --- This node ----------------------------------------------------------
    /// The node has no IPv4 TCP listen address to map.
    #[error("no IPv4 TCP listen address to map")]
    NoIpv4Listener,
    /// The local address towards the gateway could not be found.
    #[error("no local address towards the gateway: {0}")]
    LocalAddr(String),

    // --- The gateway ----------------------------------------------------------
    /// No gateway answered the search.
    #[error("no UPnP gateway found: {0}")]
    NoGateway(String),
    /// The gateway did not tell its external address.
    #[error("gateway external address: {0}")]
    ExternalAddr(String),
    /// The gateway refused or failed the mapping.
    #[error("gateway refused the mapping: {0}")]
    Map(String),
    /// The gateway refused or failed to delete the mapping.
    #[error("gateway did not delete the mapping: {0}")]
    Remove(String),
    /// A gateway request took longer than the search timeout.
    #[error("gateway did not answer in time")]
    Timeout,
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// Find the gateway and add the mapping.
    Map,
    /// Add the same mapping again, extending its lease.
    Renew,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseState {
    /// No mapping; try at `at`.
    Unmapped { at: Instant },
    /// Mapped until `expires`; renew at `renew`.
    Mapped { renew: Instant, expires: Instant },
}

/// When to map, renew and give up a mapping (sans-IO).
///
/// Poll [`LeaseSchedule::poll_action`] at [`LeaseSchedule::poll_timeout`],
/// perform the action and report it with [`LeaseSchedule::handle_success`]
/// or [`LeaseSchedule::handle_failure`]; [`LeaseSchedule::handle_timeout`]
/// says when a mapping has lapsed.
#[derive(Debug, Clone)]
pub struct LeaseSchedule {
    lease: Duration,
    retry: Duration,
    state: LeaseState,
}

impl LeaseSchedule {
    /// A schedule that maps at once (at `now`).
    pub fn new(now: Instant, lease: Duration, retry: Duration) -> Self {
        Self {
            lease,
            retry,
            state: LeaseState::Unmapped { at: now },
        }
    }

    /// Whether a mapping is held.
    pub fn is_mapped(&self) -> bool {
        matches!(self.state, LeaseState::Mapped { .. })
    }

    /// When to call back.
    pub fn poll_timeout(&self) -> Instant {
        match self.state {
            LeaseState::Unmapped { at } => at,
            LeaseState::Mapped { renew, expires } => renew.min(expires),
        }
    }

    /// The action due at `now`, if any.
    pub fn poll_action(&self, now: Instant) -> Option<LeaseAction> {
        match self.state {
            LeaseState::Unmapped { at } if now >= at => Some(LeaseAction::Map),
            LeaseState::Mapped { renew, .. } if now >= renew => Some(LeaseAction::Renew),
            _ => None,
        }
    }

    /// The action succeeded at `now`: mapped for one more lease.
    pub fn handle_success(&mut self, now: Instant) {
        self.state = LeaseState::Mapped {
            renew: now + self.lease / 2,
            expires: now + self.lease,
        };
    }

    /// The action failed at `now`: try again after the retry delay (a held
    /// mapping stays until it expires).
    pub fn handle_failure(&mut self, now: Instant) {
        let at = now + self.retry;
        self.state = match self.state {
            LeaseState::Mapped { expires, .. } if now < expires => LeaseState::Mapped {
                renew: at.min(expires),
                expires,
            },
            _ => LeaseState::Unmapped { at },
        };
    }

    /// Time passed to `now`; `true` when a held mapping just lapsed (then
    /// the schedule maps again at once).
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.state {
            LeaseState::Mapped { expires, .. } if now >= expires => {
                self.state = LeaseState::Unmapped { at: now };
                true
            }
            _ => false,
        }
    }
}

/// A mapping the gateway holds for this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpnpMapping {
    /// Where peers reach the node: the gateway's external IP and port.
    pub external: SocketAddr,
    /// The node's listen address on the LAN that the gateway forwards to.
    pub internal: SocketAddr,
}

/// The node's UPnP state.
pub(crate) struct Upnp {
    config: Option<UpnpConfig>,
    held: Mutex<Option<(Gateway<Tokio>, UpnpMapping)>>,
}

impl Upnp {
    /// UPnP with `config`; `None`: off.
    pub(crate) fn new(config: Option<UpnpConfig>) -> Self {
        Self {
            config,
            held: Mutex::new(None),
        }
    }

    /// The mapping held now.
    pub(crate) fn mapping(&self) -> Option<UpnpMapping> {
        lock(&self.held).as_ref().map(|(_, m)| m.clone())
    }

    /// The external address to advertise, while mapped.
    pub(crate) fn external(&self) -> Option<PeerAddr> {
        self.mapping().map(|m| PeerAddr::Tcp(m.external))
    }

    /// Deletes the held mapping from the gateway (bounded by the search
    /// timeout); called on shutdown.
    pub(crate) async fn release(&self, metrics: &NatMetrics) {
        let (Some(config), Some((gateway, mapping))) = (&self.config, lock(&self.held).take())
        else {
            return;
        };
        let port = mapping.external.port();
        let remove = gateway.remove_port(PortMappingProtocol::TCP, port);
        match bounded(config.search_timeout, remove, UpnpError::Remove).await {
            Ok(()) => {
                metrics.upnp("deleted");
                tracing::info!(external = %mapping.external, "upnp mapping deleted");
            }
            Err(e) => {
                metrics.upnp("failed");
                tracing::warn!(external = %mapping.external, "upnp: {e}");
            }
        }
    }
}

/// Runs `request` for at most `limit`; its error becomes `wrap(text)`.
async fn bounded<T, E: std::fmt::Display>(
    limit: Duration,
    request: impl std::future::Future<Output = Result<T, E>>,
    wrap: fn(String) -> UpnpError,
) -> Result<T, UpnpError> {
    match tokio::time::timeout(limit, request).await {
        Ok(result) => result.map_err(|e| wrap(e.to_string())),
        Err(_) => Err(UpnpError::Timeout),
    }
}

/// The node's first IPv4 TCP listen address.
fn ipv4_listener(listen: &[PeerAddr]) -> Result<SocketAddr, UpnpError> {
    listen
        .iter()
        .find_map(|addr| match addr {
            PeerAddr::Tcp(sa @ SocketAddr::V4(_)) => Some(*sa),
            _ => None,
        })
        .ok_or(UpnpError::NoIpv4Listener)
}

/// The address the gateway forwards to: the listen address, with an
/// unspecified IP replaced by the local address that routes to the gateway.
async fn internal_addr(listen: SocketAddr, gateway: SocketAddr) -> Result<SocketAddr, UpnpError> {
    if !listen.ip().is_unspecified() {
        return Ok(listen);
    }
    let local = |e: std::io::Error| UpnpError::LocalAddr(e.to_string());
    // Connecting a UDP socket sends nothing; it only picks the route.
    let probe = tokio::net::UdpSocket::bind((IpAddr::from([0, 0, 0, 0]), 0))
        .await
        .map_err(local)?;
    probe.connect(gateway).await.map_err(local)?;
    let ip = probe.local_addr().map_err(local)?.ip();
    Ok(SocketAddr::new(ip, listen.port()))
}

/// Starts the driver when UPnP is on.
pub(crate) fn start(node: &NodeHandle, nat: &Arc<Inner>) {
    if let Some(config) = nat.upnp.config.clone() {
        let contribution = node.contribute_addrs("upnp");
        node.spawn(drive(node.clone(), nat.clone(), config, contribution));
    }
}

/// Finds the gateway and adds a mapping for the node's listen port.
async fn map(
    node: &NodeHandle,
    config: &UpnpConfig,
) -> Result<(Gateway<Tokio>, UpnpMapping), UpnpError> {
    let listen = ipv4_listener(&node.listen_addrs())?;
    let options = igd_next::SearchOptions {
        timeout: Some(config.search_timeout),
        single_search_timeout: Some(config.search_timeout),
        ..Default::default()
    };
    let search = igd_next::aio::tokio::search_gateway(options);
    let gateway = bounded(config.search_timeout * 2, search, UpnpError::NoGateway).await?;
    let internal = internal_addr(listen, gateway.addr).await?;
    let limit = config.search_timeout;
    let ip = bounded(limit, gateway.get_external_ip(), UpnpError::ExternalAddr).await?;
    let description = description(node);
    let lease = lease_secs(config.lease);
    let tcp = PortMappingProtocol::TCP;
    let same = gateway.add_port(tcp, internal.port(), internal, lease, &description);
    let port = match bounded(limit, same, UpnpError::Map).await {
        Ok(()) => internal.port(),
        Err(first) => {
            tracing::debug!("upnp: external port {} refused ({first})", internal.port());
            let any = gateway.add_any_port(tcp, internal, lease, &description);
            bounded(limit, any, UpnpError::Map).await?
        }
    };
    let mapping = UpnpMapping {
        external: SocketAddr::new(ip, port),
        internal,
    };
    Ok((gateway, mapping))
}

/// Adds the held mapping again, extending its lease.
async fn renew(node: &NodeHandle, upnp: &Upnp, config: &UpnpConfig) -> Result<(), UpnpError> {
    let Some((gateway, mapping)) = lock(&upnp.held).clone() else {
        return Err(UpnpError::Map("no mapping held".into()));
    };
    let description = description(node);
    let renew = gateway.add_port(
        PortMappingProtocol::TCP,
        mapping.external.port(),
        mapping.internal,
        lease_secs(config.lease),
        &description,
    );
    bounded(config.search_timeout, renew, UpnpError::Map).await
}

fn description(node: &NodeHandle) -> String {
    format!("knot {}", node.peer_id().short())
}

fn lease_secs(lease: Duration) -> u32 {
    // 0 would ask for a permanent mapping; at least one second.
    u32::try_from(lease.as_secs()).unwrap_or(u32::MAX).max(1)
}

/// The UPnP task: follows the [`LeaseSchedule`] until the node shuts down;
/// `advertised` carries the mapped address while mapped.
async fn drive(
    node: NodeHandle,
    nat: Arc<Inner>,
    config: UpnpConfig,
    advertised: AddrContribution,
) {
    let now = || tokio::time::Instant::now().into_std();
    let upnp = &nat.upnp;
    let metrics = &nat.metrics;
    let mut schedule = LeaseSchedule::new(now(), config.lease, config.retry);
    loop {
        let due = tokio::time::Instant::from_std(schedule.poll_timeout());
        tokio::time::sleep_until(due).await;
        if schedule.handle_timeout(now())
            && let Some((_, lost)) = lock(&upnp.held).take()
        {
            tracing::warn!(external = %lost.external, "upnp mapping lapsed");
            advertised.set(Vec::new());
            metrics.upnp("lost");
            nat.emit(NatEvent::UpnpLost {
                external: PeerAddr::Tcp(lost.external),
            });
        }
        match schedule.poll_action(now()) {
            Some(LeaseAction::Map) => match map(&node, &config).await {
                Ok((gateway, mapping)) => {
                    schedule.handle_success(now());
                    metrics.upnp("mapped");
                    tracing::info!(external = %mapping.external, internal = %mapping.internal, "upnp mapped");
                    *lock(&upnp.held) = Some((gateway, mapping.clone()));
                    advertised.set(vec![PeerAddr::Tcp(mapping.external)]);
                    nat.emit(NatEvent::UpnpMapped {
                        external: PeerAddr::Tcp(mapping.external),
                        lease: config.lease,
                    });
                }
                Err(e) => {
                    schedule.handle_failure(now());
                    metrics.upnp("failed");
                    tracing::warn!("upnp: {e}; retrying in {:?}", config.retry);
                }
            },
            Some(LeaseAction::Renew) => match renew(&node, upnp, &config).await {
                Ok(()) => {
                    schedule.handle_success(now());
                    metrics.upnp("renewed");
                    tracing::info!("upnp lease renewed for {:?}", config.lease);
                }
                Err(e) => {
                    schedule.handle_failure(now());
                    metrics.upnp("failed");
                    tracing::warn!("upnp renewal: {e}; retrying in {:?}", config.retry);
                }
            },
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(100);
    const RETRY: Duration = Duration::from_secs(10);

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn maps_at_once_then_renews_at_half_the_lease() {
        let t0 = Instant::now();
        let mut s = LeaseSchedule::new(t0, LEASE, RETRY);
        assert_eq!(s.poll_timeout(), t0);
        assert_eq!(s.poll_action(t0), Some(LeaseAction::Map));
        s.handle_success(t0);
        assert!(s.is_mapped());
        assert_eq!(s.poll_action(secs(t0, 49)), None);
        assert_eq!(s.poll_timeout(), secs(t0, 50));
        assert_eq!(s.poll_action(secs(t0, 50)), Some(LeaseAction::Renew));
        s.handle_success(secs(t0, 50));
        assert_eq!(s.poll_timeout(), secs(t0, 100));
        assert!(
            !s.handle_timeout(secs(t0, 120)),
            "renewed lease runs to 150"
        );
    }

    #[test]
    fn failed_map_retries_after_the_delay() {
        let t0 = Instant::now();
        let mut s = LeaseSchedule::new(t0, LEASE, RETRY);
        s.handle_failure(t0);
        assert!(!s.is_mapped());
        assert_eq!(s.poll_action(secs(t0, 9)), None);
        assert_eq!(s.poll_timeout(), secs(t0, 10));
        assert_eq!(s.poll_action(secs(t0, 10)), Some(LeaseAction::Map));
    }

    #[test]
    fn failed_renewals_keep_the_mapping_until_it_lapses() {
        let t0 = Instant::now();
        let mut s = LeaseSchedule::new(t0, LEASE, RETRY);
        s.handle_success(t0);
        for at in [50, 60, 70, 80, 90] {
            assert_eq!(s.poll_action(secs(t0, at)), Some(LeaseAction::Renew));
            s.handle_failure(secs(t0, at));
            assert!(s.is_mapped());
            assert!(!s.handle_timeout(secs(t0, at)));
        }
        // The last retry would fall after the expiry: the schedule wakes at it.
        assert_eq!(s.poll_timeout(), secs(t0, 100));
        assert!(s.handle_timeout(secs(t0, 100)), "lapsed");
        assert!(!s.is_mapped());
        assert_eq!(s.poll_action(secs(t0, 100)), Some(LeaseAction::Map));
        assert!(!s.handle_timeout(secs(t0, 101)), "lapses once");
    }

    #[test]
    fn renewal_after_a_lapse_is_a_fresh_map() {
        let t0 = Instant::now();
        let mut s = LeaseSchedule::new(t0, LEASE, RETRY);
        s.handle_success(t0);
        assert!(s.handle_timeout(secs(t0, 200)));
        s.handle_failure(secs(t0, 200));
        assert_eq!(s.poll_action(secs(t0, 210)), Some(LeaseAction::Map));
    }

    #[test]
    fn only_ipv4_tcp_listeners_are_mapped() {
        let v6: PeerAddr = "tcp/[::1]:4000".parse().unwrap();
        let mem: PeerAddr = "mem/3".parse().unwrap();
        assert_eq!(
            ipv4_listener(&[v6.clone(), mem.clone()]),
            Err(UpnpError::NoIpv4Listener)
        );
        let v4: PeerAddr = "tcp/0.0.0.0:4000".parse().unwrap();
        assert_eq!(
            ipv4_listener(&[v6, mem, v4]),
            Ok("0.0.0.0:4000".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn a_specific_listen_ip_is_the_internal_address() {
        let listen: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let gateway: SocketAddr = "10.1.2.1:5000".parse().unwrap();
        assert_eq!(internal_addr(listen, gateway).await, Ok(listen));
    }

    #[tokio::test]
    async fn an_unspecified_listen_ip_becomes_the_route_source() {
        // Loopback only: the probe socket is connected, never sent on.
        let listen: SocketAddr = "0.0.0.0:4000".parse().unwrap();
        let gateway: SocketAddr = "127.0.0.1:1900".parse().unwrap();
        assert_eq!(
            internal_addr(listen, gateway).await,
            Ok("127.0.0.1:4000".parse().unwrap())
        );
    }

    #[test]
    fn lease_is_whole_seconds_never_zero() {
        assert_eq!(lease_secs(Duration::from_millis(300)), 1);
        assert_eq!(lease_secs(Duration::from_secs(3600)), 3600);
    }
}
