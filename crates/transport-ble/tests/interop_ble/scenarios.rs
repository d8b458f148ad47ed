use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use knotwork_core::{Discovery, Keypair, Listener, PeerAddr, Transport};
use knotwork_crypto_handshake::SecureConfig;
use knotwork_transport_ble::{
    BleCentral, BleConfig, BleDiscovery, BleError, BleListener, BleStream, BleTransport,
    LinkConfig, SERVICE_UUID,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MTU: u16 = 185;

/// Calls a method of the fixture (org.knotwork.Fixture on the mock's `/`).
async fn fixture<A, R>(method: &'static str, args: A) -> R
where
    A: dbus::arg::AppendAll + Send + 'static,
    R: dbus::arg::ReadAll + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let conn = dbus::blocking::Connection::new_system().unwrap();
        let proxy = conn.with_proxy("org.bluez", "/", Duration::from_secs(20));
        proxy
            .method_call("org.knotwork.Fixture", method, args)
            .unwrap()
    })
    .await
    .unwrap()
}

type Write = Box<dyn FnMut(Bytes) -> BoxFuture<'static, Result<(), BleError>> + Send>;

/// The fixture's socket as a fragment carrier: 2-byte length, fragment.
fn tcp_carrier(tcp: TcpStream) -> (BoxStream<'static, Bytes>, Write) {
    let (r, w) = tcp.into_split();
    let inbound = futures::stream::unfold(r, |mut r| async move {
        let n = r.read_u16().await.ok()?;
        let mut buf = vec![0; usize::from(n)];
        r.read_exact(&mut buf).await.ok()?;
        Some((Bytes::from(buf), r))
    })
    .boxed();
    let w = Arc::new(tokio::sync::Mutex::new(w));
    let write: Write = Box::new(move |f: Bytes| {
        let w = w.clone();
        Box::pin(async move {
            let mut w = w.lock().await;
            let io = |e: std::io::Error| BleError::DBus(e.to_string());
            w.write_u16(u16::try_from(f.len()).unwrap())
                .await
                .map_err(io)?;
            w.write_all(&f).await.map_err(io)
        })
    });
    (inbound, write)
}

/// The test's own knotwork endpoint behind the fixture.
async fn remote_endpoint(listener: TcpListener) -> BleStream {
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
        .await
        .expect("fixture did not connect its bridge")
        .unwrap();
    let (inbound, write) = tcp_carrier(tcp);
    BleStream::spawn(LinkConfig::with_mtu(MTU), inbound, write).unwrap()
}

/// Ping, then a 64 KiB echo (many fragments and credit grants).
async fn ping<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    s.write_all(b"ping").await.unwrap();
    s.flush().await.unwrap();
    let mut pong = [0u8; 4];
    s.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"pong");
    let big: Vec<u8> = (0..65_536u32).map(|i| (i % 253) as u8).collect();
    s.write_all(&big).await.unwrap();
    s.flush().await.unwrap();
    let mut back = vec![0u8; big.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, big);
}

async fn pong<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    s.write_all(b"pong").await.unwrap();
    s.flush().await.unwrap();
    let mut big = vec![0u8; 65_536];
    s.read_exact(&mut big).await.unwrap();
    s.write_all(&big).await.unwrap();
    s.flush().await.unwrap();
}

/// The bytes inside a variant holding `ay` (at any variant depth).
fn bytes_of(v: &dyn dbus::arg::RefArg) -> Vec<u8> {
    if let Some(inner) = v.as_iter() {
        let items: Vec<_> = inner.collect();
        if let [only] = items.as_slice()
            && only.as_u64().is_none()
        {
            return bytes_of(*only);
        }
        return items.iter().map(|b| b.as_u64().unwrap() as u8).collect();
    }
    panic!("not a byte array: {v:?}");
}

async fn central_scans_connects_and_handshakes() {
    let remote = Keypair::generate().unwrap();
    let local = Keypair::generate().unwrap();
    let device = "11:22:33:44:55:66";
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let service_data = remote.peer_id().as_bytes().to_vec();
    let (_path,): (dbus::Path<'static>,) =
        fixture("AddPeripheral", ("hci0", device, service_data, port, MTU)).await;
    let remote_raw = remote_endpoint(tcp).await;

    // Discovery sees the peer with its PeerId and address.
    let central = BleCentral::new(BleConfig::default()).await.unwrap();
    let discovery = BleDiscovery::new(central.clone()).await.unwrap();
    let found = discovery.discover().await.unwrap();
    let peer = found
        .iter()
        .find(|p| p.peer_id == remote.peer_id())
        .expect("scan did not find the knotwork peripheral");
    assert_eq!(peer.addrs, vec![PeerAddr::ble(device).unwrap()]);
    assert_eq!(peer.source.to_string(), "ble");

    // The transport dials it; the PeerId from the advertisement is checked
    // by the handshake.
    let transport = BleTransport::new(local.peer_id(), BleConfig::default())
        .await
        .unwrap();
    let raw = transport.dial(&peer.addrs[0]).await.unwrap();
    let expected = remote.peer_id();
    let server = tokio::spawn(async move {
        let mut s = SecureConfig::new(remote)
            .unwrap()
            .upgrade_inbound(remote_raw)
            .await
            .unwrap();
        pong(&mut s).await;
        s
    });
    let mut s = SecureConfig::new(local)
        .unwrap()
        .upgrade_outbound(raw, Some(expected))
        .await
        .unwrap();
    assert_eq!(s.remote_peer_id(), expected);
    ping(&mut s).await;
    drop(server.await.unwrap());
    assert_eq!(central.peers().await.unwrap().len(), 1);
}

async fn peripheral_advertises_serves_and_handshakes() {
    let local = Keypair::generate().unwrap();
    let remote = Keypair::generate().unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let (): () = fixture("EnableCentral", ("hci0", port, MTU)).await;

    let mut listener = BleListener::bind(local.peer_id(), "hci0", LinkConfig::default())
        .await
        .unwrap();
    assert_eq!(listener.local_addr(), PeerAddr::ble("hci0").unwrap());
    let remote_raw = remote_endpoint(tcp).await;

    // The advertisement BlueZ read back carries the service and our PeerId.
    let mut adv = dbus::arg::PropMap::new();
    for _ in 0..100 {
        (adv,) = fixture("Advertisement", ()).await;
        if !adv.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let uuids: Vec<String> = adv["ServiceUUIDs"]
        .0
        .as_iter()
        .unwrap()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(uuids, vec![SERVICE_UUID.to_string()]);
    // ServiceData is a{sv}: iterating gives key, value, key, value...
    let mut entries = adv["ServiceData"].0.as_iter().unwrap();
    let key = entries.next().unwrap().as_str().unwrap().to_owned();
    let value: Vec<u8> = bytes_of(entries.next().unwrap());
    assert_eq!(key, SERVICE_UUID.to_string());
    assert_eq!(value, local.peer_id().as_bytes().to_vec());

    let expected = local.peer_id();
    let client = tokio::spawn(async move {
        let mut s = SecureConfig::new(remote)
            .unwrap()
            .upgrade_outbound(remote_raw, Some(expected))
            .await
            .unwrap();
        ping(&mut s).await;
        s
    });
    let (raw, from) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
        .await
        .expect("no inbound connection")
        .unwrap();
    assert_eq!(from, PeerAddr::ble("AA:BB:CC:DD:EE:01").unwrap());
    let mut s = SecureConfig::new(local)
        .unwrap()
        .upgrade_inbound(raw)
        .await
        .unwrap();
    pong(&mut s).await;
    drop(client.await.unwrap());
}

async fn peripheral_cuts_off_hostile_central() {
    let local = Keypair::generate().unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let (): () = fixture("EnableCentral", ("hci0", port, MTU)).await;
    let mut listener = BleListener::bind(local.peer_id(), "hci0", LinkConfig::default())
        .await
        .unwrap();
    let (mut raw, _) = tokio::time::timeout(Duration::from_secs(20), tcp.accept())
        .await
        .expect("fixture did not connect its bridge")
        .unwrap();
    // The remote central's first write: a data record claiming 2 GiB.
    let hostile = [0x00, 0x80, 0x80, 0x80, 0x80, 0x08];
    raw.write_u16(6).await.unwrap();
    raw.write_all(&hostile).await.unwrap();
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
        .await
        .expect("no inbound connection")
        .unwrap();
    let err = stream.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    let inner = err.into_inner().unwrap().downcast::<BleError>().unwrap();
    assert_eq!(
        *inner,
        BleError::MessageTooLarge {
            len: 1 << 31,
            max: knotwork_transport_ble::link::DEFAULT_MAX_MESSAGE
        }
    );
}

/// Set in the child process that runs the scenarios.
const CHILD: &str = "KNOTWORK_BLE_SCENARIOS";
const PYTHON: &str = "/usr/bin/python3";

pub fn main() {
    if std::env::var_os(CHILD).is_some() {
        return run_scenarios();
    }
    let args: Vec<String> = std::env::args().collect();
    if !args
        .iter()
        .any(|a| a == "--ignored" || a == "--include-ignored")
    {
        println!(
            "interop_ble: ignored (needs dbus-daemon and python3-dbusmock; run `cargo xtask interop ble`)"
        );
        return;
    }
    if let Err(why) = prerequisites() {
        if std::env::var_os("KNOTWORK_ALLOW_SKIP").is_some_and(|v| v == "1") {
            eprintln!("interop_ble: SKIPPED: {why}");
            return;
        }
        panic!("interop_ble cannot run: {why} (apt-get install dbus python3-dbusmock)");
    }
    let bluez = MockedBluez::start();
    let status = Command::new(std::env::current_exe().unwrap())
        .env("DBUS_SYSTEM_BUS_ADDRESS", bluez.address())
        .env(CHILD, "1")
        .status()
        .unwrap();
    if !status.success() {
        bluez.print_log();
    }
    drop(bluez);
    assert!(status.success(), "interop_ble scenarios failed: {status}");
    println!("interop_ble: all scenarios passed");
}

fn run_scenarios() {
    // A hung scenario fails (and the parent prints the mock's log).
    let limit = Duration::from_secs(30);
    let run = |name: &str, scenario: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>| {
        println!("scenario {name} ...");
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(async { tokio::time::timeout(limit, scenario).await })
            .unwrap_or_else(|_| panic!("scenario {name} did not finish in {limit:?}"));
        println!("scenario {name} ... ok");
    };
    run(
        "central_scans_connects_and_handshakes",
        Box::pin(central_scans_connects_and_handshakes()),
    );
    run(
        "peripheral_advertises_serves_and_handshakes",
        Box::pin(peripheral_advertises_serves_and_handshakes()),
    );
    run(
        "peripheral_cuts_off_hostile_central",
        Box::pin(peripheral_cuts_off_hostile_central()),
    );
}

fn prerequisites() -> Result<(), String> {
    let ok = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(Command::new("dbus-daemon").arg("--version")) {
        return Err("dbus-daemon is not installed".to_owned());
    }
    if !ok(Command::new(PYTHON).args(["-c", "import dbusmock"])) {
        return Err(format!("{PYTHON} cannot import dbusmock"));
    }
    Ok(())
}

/// A private bus daemon and python-dbusmock's BlueZ with our fixture;
/// both processes are killed by PID when this is dropped.
struct MockedBluez {
    dir: PathBuf,
    daemon: Child,
    mock: Option<Child>,
}

impl MockedBluez {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("knotwork-ble-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("system_bus");
        let daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut this = Self {
            dir,
            daemon,
            mock: None,
        };
        wait_for(|| socket.exists(), "the bus socket");
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixture/knotwork_bluez.py");
        let log = std::fs::File::create(this.dir.join("mock.log")).unwrap();
        this.mock = Some(
            Command::new(PYTHON)
                .args(["-m", "dbusmock", "--system", "--template"])
                .arg(&fixture)
                .env("DBUS_SYSTEM_BUS_ADDRESS", this.address())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let address = this.address();
        wait_for(
            || {
                Command::new("dbus-send")
                    .args(["--system", "--print-reply", "--dest=org.bluez", "/"])
                    .args([
                        "org.bluez.Mock.AddAdapter",
                        "string:hci0",
                        "string:knotwork",
                    ])
                    .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            },
            "the mocked BlueZ",
        );
        this
    }

    fn address(&self) -> String {
        format!("unix:path={}", self.dir.join("system_bus").display())
    }

    fn print_log(&self) {
        let log = std::fs::read_to_string(self.dir.join("mock.log")).unwrap_or_default();
        eprintln!("---- mocked BlueZ log ----\n{log}");
    }
}

/// Polls `ready` (an external process coming up) for up to 10 s.
fn wait_for(mut ready: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for MockedBluez {
    fn drop(&mut self) {
        for child in self
            .mock
            .iter_mut()
            .chain(std::iter::once(&mut self.daemon))
        {
            // Already gone is fine: we only make sure it is.
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
