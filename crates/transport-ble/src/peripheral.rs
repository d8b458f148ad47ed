//! The peripheral role on Linux: BlueZ over D-Bus.
//!
//! [`BleListener::bind`] exports a GATT application (the knotwork service
//! with RX and TX) and an LE advertisement (the service UUID with our PeerId
//! as service data) on the system bus, then registers both with BlueZ
//! (`GattManager1.RegisterApplication`,
//! `LEAdvertisingManager1.RegisterAdvertisement`). A central writing to RX
//! opens an inbound connection; our fragments go back as notifications on TX
//! (`PropertiesChanged` of its `Value`).
//!
//! BlueZ sends one characteristic's notifications to every subscribed
//! central, so the listener serves one central at a time; another device
//! writing while a connection is open is refused (`org.bluez.Error.InProgress`).
//! A connection ends when the central calls `StopNotify`, when the
//! [`BleStream`] is dropped, when the central breaks the link protocol (the
//! stream reports the [`BleError`]), or when the listener is dropped. When
//! it ends, the listener asks BlueZ to disconnect the device
//! (`Device1.Disconnect`) and refuses its writes until it subscribes to TX
//! again. Dropping the listener closes its D-Bus connection, which makes
//! BlueZ drop the application and the advertisement.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use dbus::arg::{PropMap, RefArg, Variant};
use dbus::channel::{MatchingReceiver, Sender};
use dbus::message::{MatchRule, SignalArgs};
use dbus::nonblock::stdintf::org_freedesktop_dbus::PropertiesPropertiesChanged;
use dbus::nonblock::{Process, Proxy, SyncConnection};
use dbus::{MethodErr, Path};
use dbus_crossroads::{Crossroads, IfaceBuilder};
use futures::channel::mpsc;
use knotwork_core::{Listener, PeerAddr, PeerId, TransportError};
use tokio::sync::oneshot;

use crate::frame::{ATT_OVERHEAD, MAX_MTU, MIN_MTU};
use crate::gatt::{RX_UUID, SERVICE_UUID, TX_UUID, service_data};
use crate::{BleError, BleStream, LinkConfig};

const GATT_SERVICE: &str = "org.bluez.GattService1";
const GATT_CHAR: &str = "org.bluez.GattCharacteristic1";
const ADVERTISEMENT: &str = "org.bluez.LEAdvertisement1";
/// Notifications queued for the bus task.
const NOTIFY_QUEUE: usize = 32;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the D-Bus thread reads the bus socket itself (see `serve`).
const KEEPALIVE: Duration = Duration::from_millis(100);

static NEXT_APP: AtomicU32 = AtomicU32::new(0);

fn dbus_err(e: impl std::fmt::Display) -> BleError {
    BleError::DBus(e.to_string())
}

/// What one exported characteristic is.
#[derive(Clone, Debug)]
struct Char {
    uuid: String,
    flags: Vec<String>,
    service: Path<'static>,
}

/// The connection a central has open, if any.
struct Active {
    device: String,
    inbound: mpsc::Sender<Bytes>,
}

struct State {
    conn: Arc<SyncConnection>,
    /// Fragments to notify on TX, sent by the task that owns the bus.
    notify: tokio::sync::mpsc::Sender<Bytes>,
    link: LinkConfig,
    active: Option<Active>,
    accept: tokio::sync::mpsc::Sender<(BleStream, PeerAddr)>,
}

/// Listens for BLE centrals: advertises and serves the knotwork GATT service
/// through BlueZ. Implements [`Listener`].
pub struct BleListener {
    incoming: tokio::sync::mpsc::Receiver<(BleStream, PeerAddr)>,
    local: PeerAddr,
    /// Dropping it stops the D-Bus thread.
    _stop: oneshot::Sender<()>,
}

impl std::fmt::Debug for BleListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BleListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// `/org/bluez/hci0/dev_11_22_33_44_55_66` → `11:22:33:44:55:66`.
fn device_from_path(path: &str) -> String {
    path.rsplit('/')
        .next()
        .and_then(|last| last.strip_prefix("dev_"))
        .map(|mac| mac.replace('_', ":"))
        .unwrap_or_else(|| "unknown".to_owned())
}

impl BleListener {
    /// Exports the GATT application and advertisement for `local` on the
    /// system bus and registers them with BlueZ on `adapter` (e.g. `hci0`).
    ///
    /// The bus connection, the GATT handlers and the drivers of accepted
    /// connections run on a thread of their own (a current-thread tokio
    /// runtime), so every D-Bus message leaves from the task that polls the
    /// connection. Dropping the listener stops that thread: BlueZ drops the
    /// application and advertisement, and open connections end.
    pub async fn bind(local: PeerId, adapter: &str, link: LinkConfig) -> Result<Self, BleError> {
        let local_addr = PeerAddr::ble(adapter).map_err(|_| BleError::NoAdapter)?;
        let (accept, incoming) = tokio::sync::mpsc::channel(1);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let adapter = adapter.to_owned();
        std::thread::Builder::new()
            .name("knotwork-ble-dbus".to_owned())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(dbus_err(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    match serve(local, &adapter, link, accept).await {
                        Ok(()) => {
                            if ready_tx.send(Ok(())).is_ok() {
                                // Serve until the listener is dropped.
                                let _ = stop_rx.await;
                            }
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(dbus_err)?;
        ready_rx
            .await
            .map_err(|_| BleError::DBus("d-bus thread ended".to_owned()))??;
        Ok(Self {
            incoming,
            local: local_addr,
            _stop: stop_tx,
        })
    }
}

/// Connects to the system bus, exports the objects and registers them; runs
/// on the listener's D-Bus thread, whose tasks keep serving afterwards.
async fn serve(
    local: PeerId,
    adapter: &str,
    link: LinkConfig,
    accept: tokio::sync::mpsc::Sender<(BleStream, PeerAddr)>,
) -> Result<(), BleError> {
    let (resource, conn) = dbus_tokio::connection::new_system_sync().map_err(dbus_err)?;
    tokio::spawn(async move {
        // Returns only when the bus connection is lost.
        let _lost = resource.await;
    });
    // Workaround: now and then dbus-tokio's I/O task sleeps while method
    // calls wait on the bus socket (seen in the interop test: the D-Bus
    // thread idle in epoll, a central's WriteValue calls unanswered, the
    // connection up; libdbus is level-triggered, tokio edge-triggered).
    // Every 100 ms this thread reads and dispatches whatever is waiting.
    let poll_conn = conn.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEEPALIVE);
        loop {
            tick.tick().await;
            let channel: &dbus::channel::Channel = (*poll_conn).as_ref();
            if channel.read_write(Some(Duration::ZERO)).is_err() {
                break;
            }
            poll_conn.process_all();
        }
    });
    let n = NEXT_APP.fetch_add(1, Ordering::Relaxed);
    let app: Path<'static> = format!("/org/knotwork/ble{n}").into();
    let service: Path<'static> = format!("{app}/service0").into();
    let rx_path: Path<'static> = format!("{service}/rx").into();
    let tx_path: Path<'static> = format!("{service}/tx").into();
    let adv_path: Path<'static> = format!("/org/knotwork/adv{n}").into();
    let (notify_tx, mut notify_rx) = tokio::sync::mpsc::channel::<Bytes>(NOTIFY_QUEUE);
    let notify_conn = conn.clone();
    let notify_path = tx_path.clone();
    tokio::spawn(async move {
        while let Some(fragment) = notify_rx.recv().await {
            if notify(&notify_conn, &notify_path, &fragment).is_err() {
                break;
            }
        }
    });
    let state = Arc::new(Mutex::new(State {
        conn: conn.clone(),
        notify: notify_tx,
        link,
        active: None,
        accept,
    }));

    let mut cr = Crossroads::new();
    let spawn_conn = conn.clone();
    cr.set_async_support(Some((
        spawn_conn,
        Box::new(|f| {
            tokio::spawn(f);
        }),
    )));
    let service_iface = cr.register(GATT_SERVICE, |b: &mut IfaceBuilder<()>| {
        b.property("UUID").get(|_, _| Ok(SERVICE_UUID.to_string()));
        b.property("Primary").get(|_, _| Ok(true));
        b.property("Includes")
            .get(|_, _| Ok(Vec::<Path<'static>>::new()));
    });
    let char_iface = register_char(&mut cr, state.clone(), rx_path.clone(), tx_path.clone());
    let adv_iface = cr.register(ADVERTISEMENT, |b: &mut IfaceBuilder<PropMap>| {
        b.property("Type").get(|_, _| Ok("peripheral".to_owned()));
        b.property("ServiceUUIDs")
            .get(|_, _| Ok(vec![SERVICE_UUID.to_string()]));
        b.property("ServiceData").get(|_, data| Ok(clone_map(data)));
        b.method("Release", (), (), |_, _, (): ()| Ok(()));
    });
    let mut adv_data = PropMap::new();
    adv_data.insert(
        SERVICE_UUID.to_string(),
        Variant(Box::new(service_data(&local)) as Box<dyn RefArg>),
    );
    let om = cr.object_manager::<()>();
    cr.insert(app.clone(), &[om], ());
    cr.insert(service.clone(), &[service_iface], ());
    let rx = Char {
        uuid: RX_UUID.to_string(),
        flags: vec!["write-without-response".to_owned()],
        service: service.clone(),
    };
    let tx = Char {
        uuid: TX_UUID.to_string(),
        flags: vec!["notify".to_owned()],
        service: service.clone(),
    };
    cr.insert(rx_path, &[char_iface], rx);
    cr.insert(tx_path, &[char_iface], tx);
    cr.insert(adv_path.clone(), &[adv_iface], adv_data);
    conn.start_receive(
        MatchRule::new_method_call(),
        Box::new(move |msg, conn| {
            // A call crossroads cannot route has already been answered
            // with an error; keep serving.
            let _ = cr.handle_message(msg, conn);
            true
        }),
    );

    let bluez = Proxy::new(
        "org.bluez",
        format!("/org/bluez/{adapter}"),
        CALL_TIMEOUT,
        conn,
    );
    bluez
        .method_call::<(), _, _, _>(
            "org.bluez.GattManager1",
            "RegisterApplication",
            (app, PropMap::new()),
        )
        .await
        .map_err(dbus_err)?;
    bluez
        .method_call::<(), _, _, _>(
            "org.bluez.LEAdvertisingManager1",
            "RegisterAdvertisement",
            (adv_path, PropMap::new()),
        )
        .await
        .map_err(dbus_err)?;
    Ok(())
}

fn clone_map(m: &PropMap) -> PropMap {
    m.iter()
        .map(|(k, v)| (k.clone(), Variant(v.0.box_clone())))
        .collect()
}

fn register_char(
    cr: &mut Crossroads,
    state: Arc<Mutex<State>>,
    rx_path: Path<'static>,
    tx_path: Path<'static>,
) -> dbus_crossroads::IfaceToken<Char> {
    cr.register(GATT_CHAR, move |b: &mut IfaceBuilder<Char>| {
        b.property("UUID").get(|_, c| Ok(c.uuid.clone()));
        b.property("Service").get(|_, c| Ok(c.service.clone()));
        b.property("Flags").get(|_, c| Ok(c.flags.clone()));
        b.method(
            "ReadValue",
            ("options",),
            ("value",),
            |_, _, (_,): (PropMap,)| Ok((Vec::<u8>::new(),)),
        );
        let write_state = state.clone();
        let rx = rx_path.clone();
        // Synchronous on purpose: BlueZ may have several WriteValue calls in
        // flight, and fragments must reach the link in the order they came.
        b.method(
            "WriteValue",
            ("value", "options"),
            (),
            move |ctx, _, (value, options): (Vec<u8>, PropMap)| {
                if *ctx.path() == rx {
                    on_write(&write_state, value, &options)
                } else {
                    Err(MethodErr::from((
                        "org.bluez.Error.NotSupported",
                        "write to rx",
                    )))
                }
            },
        );
        let tx = tx_path.clone();
        let start_state = state.clone();
        b.method("StartNotify", (), (), move |ctx, _, (): ()| {
            if *ctx.path() == tx {
                // A central (re)subscribing may open a new connection once
                // the previous one has ended.
                if let Ok(mut s) = start_state.lock()
                    && s.active.as_ref().is_some_and(|a| a.inbound.is_closed())
                {
                    s.active = None;
                }
                Ok(())
            } else {
                Err(MethodErr::from((
                    "org.bluez.Error.NotSupported",
                    "notify on tx",
                )))
            }
        });
        let stop_state = state.clone();
        b.method("StopNotify", (), (), move |_, _, (): ()| {
            // The central unsubscribed: its connection is over.
            if let Ok(mut s) = stop_state.lock() {
                s.active = None;
            }
            Ok(())
        });
    })
}

/// A central wrote `value` to RX: feed the open connection, or open one.
fn on_write(state: &Mutex<State>, value: Vec<u8>, options: &PropMap) -> Result<(), MethodErr> {
    let device_path = dbus::arg::prop_cast::<Path<'static>>(options, "device").cloned();
    let device = device_path
        .as_ref()
        .map(|p| device_from_path(p))
        .unwrap_or_else(|| "unknown".to_owned());
    let mtu = options
        .get("mtu")
        .and_then(|v| v.0.as_u64())
        .and_then(|m| u16::try_from(m).ok())
        .map(|m| m.clamp(MIN_MTU, MAX_MTU));
    let payload = usize::from(mtu.unwrap_or(MIN_MTU) - ATT_OVERHEAD);
    if value.len() > payload {
        return Err(MethodErr::from((
            "org.bluez.Error.InvalidValueLength",
            "longer than mtu - 3",
        )));
    }
    let (mut inbound, opened) = {
        let mut s = state
            .lock()
            .map_err(|_| MethodErr::failed("listener state poisoned"))?;
        match &s.active {
            Some(a) if !a.inbound.is_closed() => {
                if a.device != device {
                    return Err(MethodErr::from((
                        "org.bluez.Error.InProgress",
                        "another central is connected",
                    )));
                }
                (a.inbound.clone(), None)
            }
            Some(a) if a.device == device => {
                // Its connection ended (it broke the link protocol, or the
                // stream was dropped): nothing more until it subscribes again.
                return Err(MethodErr::from((
                    "org.bluez.Error.NotConnected",
                    "connection closed",
                )));
            }
            _ => {
                let mut link = s.link;
                if let Some(m) = mtu {
                    link.mtu = m;
                }
                let (tx, rx) = mpsc::channel(inbound_capacity(link));
                let notify = s.notify.clone();
                let write = move |fragment: Bytes| {
                    let notify = notify.clone();
                    async move {
                        notify
                            .send(fragment)
                            .await
                            .map_err(|_| BleError::DBus("listener closed".to_owned()))
                    }
                };
                let (stream, driver) =
                    BleStream::new(link, rx, write).map_err(|e| MethodErr::failed(&e))?;
                let conn = s.conn.clone();
                tokio::spawn(async move {
                    driver.await;
                    // The connection is over (closed, dropped, or the central
                    // broke the protocol): end the BLE link as well.
                    if let Some(path) = device_path {
                        let device = Proxy::new("org.bluez", path, CALL_TIMEOUT, conn);
                        // A central already gone is fine.
                        let _ = device
                            .method_call::<(), _, _, _>("org.bluez.Device1", "Disconnect", ())
                            .await;
                    }
                });
                s.active = Some(Active {
                    device: device.clone(),
                    inbound: tx.clone(),
                });
                let addr =
                    PeerAddr::ble(device).unwrap_or_else(|_| PeerAddr::Ble("unknown".to_owned()));
                (tx, Some((stream, addr, s.accept.clone())))
            }
        }
    };
    if let Some((stream, addr, accept)) = opened {
        accept
            .try_send((stream, addr))
            .map_err(|_| MethodErr::failed("listener is not accepting"))?;
    }
    inbound.try_send(Bytes::from(value)).map_err(|e| {
        if e.is_full() {
            // More in flight than the credit we granted allows: the central
            // ignores flow control. Dropping the queue ends the connection.
            if let Ok(mut s) = state.lock()
                && let Some(a) = s.active.as_mut()
            {
                a.inbound.close_channel();
            }
            MethodErr::from(("org.bluez.Error.Failed", "receive queue full"))
        } else {
            MethodErr::from(("org.bluez.Error.NotConnected", "connection closed"))
        }
    })
}

/// Fragments a connection may have queued before the link takes them: what
/// a central can have in flight within the credit we grant (every fragment
/// at most `mtu − 3` bytes), twice, plus slack. A central that overruns it
/// ignores flow control and is cut off.
fn inbound_capacity(link: LinkConfig) -> usize {
    let payload = usize::from(link.mtu.saturating_sub(ATT_OVERHEAD)).max(1);
    (link.window as usize).div_ceil(payload) * 2 + 16
}

/// Sends one fragment as a notification: `PropertiesChanged` of TX's `Value`.
fn notify(conn: &SyncConnection, path: &Path<'static>, fragment: &[u8]) -> Result<(), BleError> {
    let mut changed: PropMap = HashMap::new();
    changed.insert("Value".to_owned(), Variant(Box::new(fragment.to_vec())));
    let signal = PropertiesPropertiesChanged {
        interface_name: GATT_CHAR.to_owned(),
        changed_properties: changed,
        invalidated_properties: Vec::new(),
    };
    // dbus-tokio reports Err when its I/O task was already awake rather than
    // parked, but the message is queued and that task flushes it; only a
    // closed connection means the notification is lost.
    if conn.send(signal.to_emit_message(path)).is_err()
        && !AsRef::<dbus::channel::Channel>::as_ref(conn).is_connected()
    {
        return Err(BleError::DBus("bus connection closed".to_owned()));
    }
    Ok(())
}

#[async_trait]
impl Listener for BleListener {
    type Connection = BleStream;

    fn local_addr(&self) -> PeerAddr {
        self.local.clone()
    }

    async fn accept(&mut self) -> Result<(BleStream, PeerAddr), TransportError> {
        self.incoming
            .recv()
            .await
            .ok_or(TransportError::ListenerClosed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_paths() {
        assert_eq!(
            device_from_path("/org/bluez/hci0/dev_11_22_33_44_55_66"),
            "11:22:33:44:55:66"
        );
        assert_eq!(device_from_path("/org/bluez/hci0"), "unknown");
    }
}
