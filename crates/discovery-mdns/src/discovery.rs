//! [`MdnsDiscovery`]: the tokio driver that connects [`Browser`], [`plan`]
//! and [`txt`] to the `mdns-sd` daemon.
//!
//! The daemon runs on its own thread and talks over channels; one tokio task
//! here reads its browse events (feeding [`Browser`] and the event stream)
//! and its monitor events (re-announcing when the host's IP addresses change).
//! Nothing in this file decides what a record means: that is in the sans-IO
//! modules.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use futures::stream::{self, BoxStream};
use knotwork_core::{
    DiscoveredPeer, Discovery, DiscoveryError, DiscoveryEvent, DiscoverySource, LocalPeerInfo,
    PeerAddr,
};
use mdns_sd::{
    DaemonEvent, IfKind, IfPredicate, Receiver, ResolvedService, ScopedIp, ServiceDaemon,
    ServiceEvent, ServiceInfo, TxtProperty,
};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::browser::Browser;
use crate::error::MdnsError;
use crate::plan::{self, InterfacePlan, IpNet, NetInterface};
use crate::txt::{self, TxtEntry, TxtLimits};

/// The default DNS-SD service type.
pub const DEFAULT_SERVICE_TYPE: &str = "_knotwork._udp.local.";

/// How many events a subscriber of [`MdnsDiscovery::events`] may fall behind
/// before it skips some (it is told so in the log and can call `discover`).
pub const EVENT_BUFFER: usize = 256;

/// Settings of an [`MdnsDiscovery`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdnsConfig {
    /// The DNS-SD service type, `_name._udp.local.` (name: 1–15 of `[a-z0-9-]`).
    /// Use your own to keep a private network apart.
    pub service_type: String,
    /// TXT record limits, for our announcements and for peers' records.
    pub limits: TxtLimits,
    /// Run only on the address families of interfaces whose addresses are
    /// all loopback, private or link-local (see [`plan::lan_only`]): a
    /// daemon reachable from the internet answers spoofed queries and takes
    /// injected answers. `false` runs on every interface; then only a
    /// firewall keeps UDP port 5353 from the internet.
    pub lan_only: bool,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        Self {
            service_type: DEFAULT_SERVICE_TYPE.to_owned(),
            limits: TxtLimits::DEFAULT,
            lan_only: true,
        }
    }
}

/// The host's interfaces now, as the planner sees them.
fn interfaces() -> Result<Vec<NetInterface>, MdnsError> {
    if_addrs::get_if_addrs()
        .map(plan::from_if_addrs)
        .map_err(|e| MdnsError::Interfaces(e.to_string()))
}

/// Whether the daemon may use address `ip` of interface `index`: whether
/// [`plan::lan_only`] keeps it. Listing fails closed.
fn lan_address(index: Option<u32>, ip: IpAddr) -> bool {
    interfaces().is_ok_and(|all| {
        plan::lan_only(&all)
            .iter()
            .any(|i| Some(i.index) == index && i.ips.iter().any(|n| n.ip == ip))
    })
}

/// The subnets of the interfaces `resolved`'s address records were heard on.
fn heard_on(resolved: &ResolvedService) -> Vec<IpNet> {
    let mut indexes: Vec<u32> = Vec::new();
    for a in resolved.get_addresses() {
        match a {
            ScopedIp::V4(v4) => indexes.extend(v4.interface_ids().iter().map(|i| i.index)),
            ScopedIp::V6(v6) => indexes.push(v6.scope_id().index),
            _ => {}
        }
    }
    interfaces()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| indexes.contains(&i.index))
        .flat_map(|i| i.ips)
        .collect()
}

/// Checks `_name._udp.local.` / `_name._tcp.local.` with a name of 1–15 of
/// `[a-z0-9-]` (RFC 6763 §7.2), the form the daemon accepts.
fn check_service_type(ty: &str) -> Result<(), MdnsError> {
    let bad = || MdnsError::InvalidServiceType(ty.to_owned());
    let name = ty
        .strip_suffix("._udp.local.")
        .or_else(|| ty.strip_suffix("._tcp.local."))
        .and_then(|rest| rest.strip_prefix('_'))
        .ok_or_else(bad)?;
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
    if name.is_empty() || name.len() > 15 || !name.bytes().all(ok) {
        return Err(bad());
    }
    Ok(())
}

/// mDNS / DNS-SD discovery: announces this node on every interface with the
/// addresses that make sense there, browses for other nodes, says goodbye on
/// shutdown.
///
/// Create it inside a tokio runtime. Dropping it also says goodbye (the
/// daemon sends the goodbye packets on its way out); [`shutdown`](Self::shutdown)
/// waits until that is done.
pub struct MdnsDiscovery {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    daemon: ServiceDaemon,
    config: MdnsConfig,
    /// Random instance label, 16 hex characters.
    label: String,
    browser: Mutex<Browser>,
    announcer: Mutex<Announcer>,
    events: broadcast::Sender<DiscoveryEvent>,
}

/// What we announce and what the daemon has registered for it.
#[derive(Default)]
struct Announcer {
    info: Option<LocalPeerInfo>,
    /// Interface index → the instance registered there.
    registered: BTreeMap<u32, Registration>,
}

#[derive(Clone, PartialEq, Eq)]
struct Registration {
    fullname: String,
    entries: Vec<TxtEntry>,
    ips: Vec<IpAddr>,
    port: u16,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MdnsDiscovery {
    /// Starts the daemon and browsing for `config.service_type`.
    pub fn new(config: MdnsConfig) -> Result<Self, MdnsError> {
        check_service_type(&config.service_type)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| MdnsError::NoRuntime)?;
        let mut raw = [0u8; 8];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| MdnsError::Rng)?;
        let label: String = raw.iter().map(|b| format!("{b:02x}")).collect();

        let daemon = ServiceDaemon::new()?;
        if config.lan_only {
            daemon.disable_interface(IfKind::Predicate(IfPredicate::new(|intf| {
                !lan_address(intf.index, intf.ip())
            })))?;
        }
        let browse = daemon.browse(&config.service_type)?;
        let monitor = daemon.monitor()?;
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let shared = Arc::new(Shared {
            daemon,
            browser: Mutex::new(Browser::new(config.limits)),
            config,
            label,
            announcer: Mutex::new(Announcer::default()),
            events,
        });
        let task = runtime.spawn(run(Arc::clone(&shared), browse, monitor));
        Ok(Self { shared, task })
    }

    /// The random label of our service instances (`<label>-<ifindex>`).
    pub fn instance_label(&self) -> &str {
        &self.shared.label
    }

    /// The full names of the service instances registered now, one per
    /// interface we announce on.
    pub fn registered_instances(&self) -> Vec<String> {
        lock(&self.shared.announcer)
            .registered
            .values()
            .map(|r| r.fullname.clone())
            .collect()
    }

    /// Says goodbye for every announced instance (peers expire us at once
    /// rather than after the records' TTL) and waits until the daemon has
    /// sent it, at most `timeout`. Browsing goes on; only a later
    /// `announce` registers again.
    pub async fn goodbye(&self, timeout: Duration) -> Result<(), MdnsError> {
        let registered = {
            let mut announcer = lock(&self.shared.announcer);
            announcer.info = None;
            std::mem::take(&mut announcer.registered)
        };
        let mut pending = Vec::new();
        for r in registered.values() {
            pending.push(self.shared.daemon.unregister(&r.fullname)?);
        }
        let all = futures::future::join_all(pending.iter().map(|rx| rx.recv_async()));
        match tokio::time::timeout(timeout, all).await {
            Ok(results) => results
                .into_iter()
                .try_for_each(|r| r.map(|_| ()))
                .map_err(|e| MdnsError::Daemon(e.to_string())),
            Err(_) => Err(MdnsError::Daemon("goodbye timed out".into())),
        }
    }

    /// Says goodbye for every announced instance, stops the daemon and waits
    /// until it has.
    pub async fn shutdown(self) -> Result<(), MdnsError> {
        // Stop reading first: the daemon ends our subscriptions on its way out.
        self.task.abort();
        let status = self.shared.daemon.shutdown()?;
        status
            .recv_async()
            .await
            .map(|_| ())
            .map_err(|e| MdnsError::Daemon(e.to_string()))
    }
}

impl Drop for MdnsDiscovery {
    fn drop(&mut self) {
        self.task.abort();
        // Fails only if the daemon is already gone (shutdown() ran).
        let _ = self.shared.daemon.shutdown();
    }
}

#[async_trait]
impl Discovery for MdnsDiscovery {
    fn source(&self) -> DiscoverySource {
        DiscoverySource::Mdns
    }

    /// Announces `info` on every interface, each with the addresses that make
    /// sense there (see [`plan`](crate::plan)); replaces an earlier
    /// announcement. Fails, announcing nothing new, if a record would exceed
    /// the limits.
    async fn announce(&self, info: &LocalPeerInfo) -> Result<(), DiscoveryError> {
        lock(&self.shared.browser).set_local(info.peer_id);
        self.shared.announce(Some(info.clone()))?;
        Ok(())
    }

    async fn discover(&self) -> Result<Vec<DiscoveredPeer>, DiscoveryError> {
        Ok(lock(&self.shared.browser).peers())
    }

    fn events(&self) -> BoxStream<'static, DiscoveryEvent> {
        let rx = self.shared.events.subscribe();
        Box::pin(stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((event, rx)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "mdns event subscriber fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }))
    }
}

impl Shared {
    /// Plans and registers the announcement of `info` (or of the stored one
    /// when `None`: the host's addresses changed).
    fn announce(&self, info: Option<LocalPeerInfo>) -> Result<(), MdnsError> {
        let mut announcer = lock(&self.announcer);
        let Some(info) = info.or_else(|| announcer.info.clone()) else {
            return Ok(());
        };
        let mut interfaces = interfaces()?;
        if self.config.lan_only {
            interfaces = plan::lan_only(&interfaces);
        }
        let plans = plan::plan(&info.addrs, &interfaces, self.config.limits.max_addrs);
        let mut wanted = BTreeMap::new();
        for p in plans {
            let index = p.interface.index;
            wanted.insert(index, self.registration(&info, p)?);
        }
        if wanted.is_empty() {
            tracing::info!(
                addrs = ?info.addrs,
                "mdns: no interface to announce these addresses on (yet)"
            );
        }

        // An instance's name is fixed by its interface: gone interfaces say
        // goodbye, changed records are registered again under the same name.
        for (index, old) in &announcer.registered {
            if !wanted.contains_key(index) {
                // The status reply is not needed.
                let _ = self.daemon.unregister(&old.fullname)?;
            }
        }
        for (index, new) in &wanted {
            if announcer.registered.get(index) != Some(new) {
                self.daemon
                    .register(service_info(&self.config.service_type, new)?)?;
            }
        }
        announcer.registered = wanted;
        announcer.info = Some(info);
        Ok(())
    }

    fn registration(
        &self,
        info: &LocalPeerInfo,
        p: InterfacePlan,
    ) -> Result<Registration, MdnsError> {
        if p.dropped > 0 {
            tracing::warn!(
                interface = %p.interface.name,
                dropped = p.dropped,
                max = self.config.limits.max_addrs,
                "mdns: too many addresses for one record, announcing the first ones"
            );
        }
        let port = match p.addrs.first() {
            Some(PeerAddr::Tcp(sa)) => sa.port(),
            _ => 0,
        };
        let entries = txt::encode(
            &LocalPeerInfo {
                peer_id: info.peer_id,
                addrs: p.addrs,
            },
            self.config.limits,
        )?;
        let instance = format!("{}-{}", self.label, p.interface.index);
        Ok(Registration {
            fullname: format!("{instance}.{}", self.config.service_type),
            entries,
            ips: p.interface.ips.iter().map(|n| n.ip).collect(),
            port,
        })
    }

    fn on_service_event(&self, event: ServiceEvent) {
        let changes = match event {
            ServiceEvent::ServiceResolved(resolved) if resolved.get_properties().is_empty() => {
                // The daemon resolves an instance as soon as it has SRV and
                // addresses; a TXT record sent in a later packet (a large one
                // may be) comes as another resolution.
                tracing::debug!(
                    instance = %resolved.get_fullname(),
                    "mdns: instance resolved without TXT properties (yet)"
                );
                return;
            }
            ServiceEvent::ServiceResolved(resolved) => {
                let props = resolved.get_properties().iter().map(|p| (p.key(), p.val()));
                let nets = heard_on(&resolved);
                match lock(&self.browser).handle_resolved(resolved.get_fullname(), props, &nets) {
                    Ok(changes) => changes,
                    Err(error) => {
                        tracing::warn!(
                            instance = %resolved.get_fullname(),
                            %error,
                            "mdns: ignored announcement"
                        );
                        return;
                    }
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                lock(&self.browser).handle_removed(&fullname)
            }
            _ => return,
        };
        for change in changes {
            // No subscriber is fine: discover() still has the state.
            let _ = self.events.send(change);
        }
    }
}

/// The daemon's form of a registration: instance `<label>-<ifindex>` on host
/// `<label>-<ifindex>.local.` with the interface's own IP addresses (for the
/// A/AAAA records; the daemon also uses them to pick the interface).
fn service_info(service_type: &str, r: &Registration) -> Result<ServiceInfo, MdnsError> {
    let instance = r
        .fullname
        .strip_suffix(service_type)
        .and_then(|s| s.strip_suffix('.'))
        .unwrap_or(&r.fullname);
    let props: Vec<TxtProperty> = r
        .entries
        .iter()
        .map(|e| match &e.value {
            Some(v) => TxtProperty::from((e.key.as_str(), v.as_slice())),
            None => TxtProperty::from(e.key.as_str()),
        })
        .collect();
    let host = format!("{instance}.local.");
    Ok(ServiceInfo::new(
        service_type,
        instance,
        &host,
        &r.ips[..],
        r.port,
        props,
    )?)
}

async fn run(
    shared: Arc<Shared>,
    mut browse: Receiver<ServiceEvent>,
    monitor: Receiver<DaemonEvent>,
) {
    loop {
        tokio::select! {
            event = browse.recv_async() => match event {
                Ok(event) => shared.on_service_event(event),
                // The daemon drops a subscriber that falls 1000 events behind
                // (a flood); subscribe again. Fails once the daemon is gone.
                Err(_) => match shared.daemon.browse(&shared.config.service_type) {
                    Ok(again) => {
                        tracing::warn!("mdns: browse subscription was dropped, subscribed again");
                        browse = again;
                    }
                    Err(_) => break,
                },
            },
            event = monitor.recv_async() => match event {
                Ok(DaemonEvent::IpAdd(_) | DaemonEvent::IpDel(_)) => {
                    if let Err(error) = shared.announce(None) {
                        tracing::warn!(%error, "mdns: re-announcing after an address change failed");
                    }
                }
                Ok(DaemonEvent::Error(error)) => tracing::warn!(%error, "mdns daemon error"),
                Ok(_) => {}
                Err(_) => break,
            },
        }
    }
    tracing::debug!("mdns: daemon channels closed, discovery task ends");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_types_are_checked() {
        for ok in [
            DEFAULT_SERVICE_TYPE,
            "_a._tcp.local.",
            "_my-net-42._udp.local.",
        ] {
            check_service_type(ok).unwrap();
        }
        for bad in [
            "_knotwork._udp.local",
            "knotwork._udp.local.",
            "_._udp.local.",
            "_sixteen-chars-xx._udp.local.",
            "_Upper._udp.local.",
            "_knotwork._sctp.local.",
        ] {
            assert_eq!(
                check_service_type(bad).unwrap_err(),
                MdnsError::InvalidServiceType(bad.into())
            );
        }
    }

    #[test]
    fn registration_becomes_the_daemons_service_info() {
        let peer_id = knotwork_core::Keypair::generate().unwrap().peer_id();
        let info = LocalPeerInfo {
            peer_id,
            addrs: vec!["tcp/10.0.0.5:4000".parse().unwrap()],
        };
        let entries = txt::encode(&info, TxtLimits::DEFAULT).unwrap();
        let r = Registration {
            fullname: format!("0123456789abcdef-2.{DEFAULT_SERVICE_TYPE}"),
            entries,
            ips: vec!["10.0.0.5".parse().unwrap()],
            port: 4000,
        };
        let si = service_info(DEFAULT_SERVICE_TYPE, &r).unwrap();
        assert_eq!(si.get_fullname(), r.fullname);
        assert_eq!(si.get_hostname(), "0123456789abcdef-2.local.");
        assert_eq!(si.get_port(), 4000);
        let props = si.get_properties();
        let back = txt::decode(props.iter().map(|p| (p.key(), p.val())), TxtLimits::DEFAULT);
        assert_eq!(back.unwrap().addrs, info.addrs);
    }

    #[test]
    fn new_needs_a_runtime() {
        assert_eq!(
            MdnsDiscovery::new(MdnsConfig::default()).err(),
            Some(MdnsError::NoRuntime)
        );
    }
}
