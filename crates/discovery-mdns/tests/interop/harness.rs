//! The lab the mDNS interop tests run in: two network namespaces joined by a
//! veth pair, a private D-Bus and avahi-daemon, python-zeroconf peers, our
//! side on a thread inside a namespace, log capture, and teardown of it all.

use std::fs;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use knotwork_core::{DiscoveredPeer, DiscoveryEvent, PeerId};
use knotwork_discovery_mdns::DEFAULT_SERVICE_TYPE;
use knotwork_testkit::netns;

/// How long any one wait may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);
pub const AVAHI_TYPE: &str = "_knotwork._udp";

// ---------------------------------------------------------------------------
// Log capture: the crate reports ignored announcements with tracing::warn!.

pub static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

pub struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

pub fn init_log() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(|| Capture)
            .init();
    });
}

pub fn log_text() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}

/// Whether the crate logged that it ignored `instance` because of `reason`.
pub fn warned(instance: &str, reason: &str) -> bool {
    log_text().lines().any(|l| {
        l.contains("mdns: ignored announcement")
            && l.contains(&format!("instance={instance}."))
            && l.contains(reason)
    })
}

// ---------------------------------------------------------------------------
// The lab: two namespaces, a veth pair, child processes, teardown.

pub use knotwork_testkit::netns::sh;

/// Fails the test with `why`, or with KNOTWORK_ALLOW_SKIP=1 says SKIPPED.
pub fn unavailable(why: &str) -> Option<Lab> {
    netns::unavailable("mdns", why)
}

pub fn python() -> PathBuf {
    match std::env::var_os("KNOTWORK_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
    }
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

pub struct Lab {
    pub ns_a: String,
    pub ns_b: String,
    pub veth_a: String,
    pub veth_b: String,
    pub ip_a: String,
    pub ip_b: String,
    pub ip6_a: String,
    pub bus: Option<String>,
    /// Namespaces, processes, logs and teardown.
    net: netns::Lab,
}

impl Lab {
    /// Two fresh namespaces A (10.213.N.1, fd00:213:N::1) and B
    /// (10.213.N.2, fd00:213:N::2) joined by a veth pair; `None` if skipped.
    pub fn new(need_avahi: bool, need_python: bool) -> Option<Lab> {
        init_log();
        if !netns::is_root() {
            return unavailable("root (network namespaces)");
        }
        let mut programs = vec!["ip"];
        if need_avahi {
            programs.extend([
                "avahi-daemon",
                "avahi-browse",
                "avahi-publish",
                "dbus-daemon",
            ]);
        }
        let mut missing = netns::missing(&programs);
        let py_ok = Command::new(python())
            .args(["-c", "import zeroconf"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if need_python && !py_ok {
            missing.push("python zeroconf (KNOTWORK_PYTHON or .venv)");
        }
        if !missing.is_empty() {
            return unavailable(&missing.join(", "));
        }

        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed) % 250;
        let pid = std::process::id();
        let mut net = netns::Lab::new("kwm", DEADLINE);
        let (ns_a, ns_b) = match (net.add_ns("a"), net.add_ns("b")) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                return unavailable(&format!("network namespaces ({e})"));
            }
        };
        let lab = Lab {
            ns_a,
            ns_b,
            veth_a: format!("kwm{pid}{n}a"),
            veth_b: format!("kwm{pid}{n}b"),
            ip_a: format!("10.213.{n}.1"),
            ip_b: format!("10.213.{n}.2"),
            // As Rust prints it (a zero group compresses): the TXT text form.
            ip6_a: format!("fd00:213:{n}::1")
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .to_string(),
            bus: None,
            net,
        };
        let (a, b) = (lab.ns_a.clone(), lab.ns_b.clone());
        let (veth_a, vb) = (lab.veth_a.clone(), lab.veth_b.clone());
        let setup: &[&[&str]] = &[
            &[
                "ip", "link", "add", &veth_a, "type", "veth", "peer", "name", &vb,
            ],
            &["ip", "link", "set", &veth_a, "netns", &a],
            &["ip", "link", "set", &vb, "netns", &b],
            &[
                "ip",
                "-n",
                &a,
                "addr",
                "add",
                &format!("{}/24", lab.ip_a),
                "dev",
                &veth_a,
            ],
            &[
                "ip",
                "-n",
                &b,
                "addr",
                "add",
                &format!("{}/24", lab.ip_b),
                "dev",
                &vb,
            ],
            &[
                "ip",
                "-n",
                &a,
                "addr",
                "add",
                &format!("{}/64", lab.ip6_a),
                "dev",
                &veth_a,
                "nodad",
            ],
            // B on the same /64: a peer keeps only announced addresses
            // inside a subnet of the interface it heard them on (M10).
            &[
                "ip",
                "-n",
                &b,
                "addr",
                "add",
                &format!("fd00:213:{n}::2/64"),
                "dev",
                &vb,
                "nodad",
            ],
            &["ip", "-n", &a, "link", "set", &veth_a, "up"],
            &["ip", "-n", &b, "link", "set", &vb, "up"],
        ];
        for cmd in setup {
            sh(cmd).unwrap();
        }
        eprintln!("lab: {a} ({}) <-> {b} ({})", lab.ip_a, lab.ip_b);
        Some(lab)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.net.path(name)
    }

    /// Starts `args` inside namespace `ns`, output to `<dir>/<name>.log`.
    pub fn spawn_in(&mut self, ns: &str, name: &str, args: &[&str]) -> u32 {
        self.net.spawn(ns, name, args, &[])
    }

    pub fn log(&self, name: &str) -> String {
        self.net.log(name)
    }

    /// Waits until `<name>.log` contains `needle`.
    pub fn wait_log(&mut self, name: &str, needle: &str) {
        self.net.wait_log(name, needle);
    }

    /// Sends SIGTERM to `name` and waits (bounded) for it to exit.
    pub fn terminate(&mut self, name: &str) {
        self.net.terminate(name);
    }

    /// A private D-Bus (system-bus type, permissive policy) and avahi-daemon
    /// in namespace B on it.
    pub fn start_avahi(&mut self) {
        let bus_path = self.path("bus");
        let conf = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
            bus_path.display()
        );
        fs::write(self.path("bus.conf"), conf).unwrap();
        let config = format!("--config-file={}", self.path("bus.conf").display());
        // In namespace B: its processes reach the bus by its socket file.
        let ns_b = self.ns_b.clone();
        self.spawn_in(
            &ns_b,
            "dbus",
            &["dbus-daemon", &config, "--nofork", "--nopidfile"],
        );
        let start = Instant::now();
        while !bus_path.exists() {
            assert!(start.elapsed() < DEADLINE, "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let bus = format!("unix:path={}", bus_path.display());
        self.net.set_env("DBUS_SYSTEM_BUS_ADDRESS", &bus);
        self.bus = Some(bus);

        let conf = format!(
            "[server]\nhost-name=kwm-avahi-{}\nuse-ipv4=yes\nuse-ipv6=yes\n\
             allow-interfaces={}\nenable-dbus=yes\nratelimit-interval-usec=0\n\
             [wide-area]\nenable-wide-area=no\n\
             [publish]\npublish-workstation=no\npublish-hinfo=no\n",
            std::process::id(),
            self.veth_b
        );
        fs::write(self.path("avahi.conf"), conf).unwrap();
        // avahi keeps its pid file and socket in /run/avahi-daemon: give this
        // one a private tmpfs there (in the mount namespace of `ip netns exec`).
        fs::create_dir_all("/run/avahi-daemon").unwrap();
        let avahi = format!(
            "mount -t tmpfs none /run/avahi-daemon && exec avahi-daemon --no-rlimits \
             --no-chroot --no-drop-root --no-proc-title -f {}",
            self.path("avahi.conf").display()
        );
        let ns_b = self.ns_b.clone();
        self.spawn_in(&ns_b, "avahi", &["sh", "-c", &avahi]);
        self.wait_log("avahi", "Server startup complete");
    }

    /// `avahi-publish -s NAME _knotwork._udp 4000 TXT...` (avahi must run).
    pub fn avahi_publish(&mut self, name: &str, txt: &[String]) {
        let mut args = vec!["avahi-publish", "-s", name, AVAHI_TYPE, "4000"];
        args.extend(txt.iter().map(String::as_str));
        let ns_b = self.ns_b.clone();
        self.spawn_in(&ns_b, name, &args);
    }

    /// python-zeroconf publishing `services` (name, txt) from namespace B.
    pub fn zeroconf_publish(
        &mut self,
        name: &str,
        services: &[(String, Vec<String>)],
        ttl: Option<u32>,
    ) -> u32 {
        let services: Vec<serde_like::Json> = services
            .iter()
            .map(|(n, txt)| serde_like::service(n, 4000, txt))
            .collect();
        let spec = serde_like::spec(DEFAULT_SERVICE_TYPE, &self.ip_b, ttl, &services);
        let (ns_b, py, sc) = (self.ns_b.clone(), python(), script("zc_publish.py"));
        let pid = self.spawn_in(
            &ns_b,
            name,
            &[py.to_str().unwrap(), sc.to_str().unwrap(), &spec],
        );
        self.wait_log(name, "ready");
        pid
    }
}

/// Tiny JSON writer for the zeroconf spec (strings need escaping; no serde dep).
pub mod serde_like {
    pub type Json = String;

    pub fn string(s: &str) -> Json {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// `txt` entries are `key=value`, or `key` alone for a key without value.
    pub fn service(name: &str, port: u16, txt: &[String]) -> Json {
        let pairs: Vec<Json> = txt
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => format!("[{}, {}]", string(k), string(v)),
                None => format!("[{}, null]", string(e)),
            })
            .collect();
        format!(
            "{{\"name\": {}, \"port\": {port}, \"txt\": [{}]}}",
            string(name),
            pairs.join(", ")
        )
    }

    pub fn spec(ty: &str, ip: &str, ttl: Option<u32>, services: &[Json]) -> Json {
        let ttl = ttl.map_or_else(|| "null".to_owned(), |t| t.to_string());
        format!(
            "{{\"type\": {}, \"ip\": {}, \"ttl\": {ttl}, \"services\": [{}]}}",
            string(ty),
            string(ip),
            services.join(", ")
        )
    }
}

/// Runs `body` on a new thread inside namespace `ns`, on its own tokio
/// runtime (the mDNS daemon thread it starts inherits the namespace).
pub fn in_ns<T, F, Fut>(ns: &str, body: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(body())
    })
}

/// Waits for the first `Discovered` of `want` on `events`.
pub async fn wait_discovered(
    events: &mut futures::stream::BoxStream<'static, DiscoveryEvent>,
    want: PeerId,
) -> DiscoveredPeer {
    tokio::time::timeout(DEADLINE, async {
        while let Some(event) = events.next().await {
            if let DiscoveryEvent::Discovered(peer) = event
                && peer.peer_id == want
            {
                return peer;
            }
        }
        panic!("event stream ended");
    })
    .await
    .unwrap_or_else(|_| panic!("{want} not discovered within {DEADLINE:?}"))
}

pub fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}
