//! The lab the mDNS interop tests run in: two network namespaces joined by a
//! veth pair, a private D-Bus and avahi-daemon, python-zeroconf peers, our
//! side on a thread inside a namespace, log capture, and teardown of it all.

use std::fs;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use knotwork_core::{DiscoveredPeer, DiscoveryEvent, PeerId};
use knotwork_discovery_mdns::DEFAULT_SERVICE_TYPE;

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

pub fn allow_skip() -> bool {
    std::env::var("KNOTWORK_ALLOW_SKIP").is_ok_and(|v| v == "1")
}

/// Fails the test with `why`, or with KNOTWORK_ALLOW_SKIP=1 says SKIPPED.
pub fn unavailable(why: &str) -> Option<Lab> {
    if allow_skip() {
        eprintln!("SKIPPED (KNOTWORK_ALLOW_SKIP=1): {why}");
        return None;
    }
    panic!(
        "mdns interop needs {why}; run `cargo xtask interop mdns` as root \
         (it installs what is missing), or set KNOTWORK_ALLOW_SKIP=1 to skip"
    );
}

pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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

pub fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub struct Lab {
    pub ns_a: String,
    pub ns_b: String,
    pub veth_a: String,
    pub veth_b: String,
    pub ip_a: String,
    pub ip_b: String,
    pub ip6_a: String,
    pub dir: PathBuf,
    pub children: Vec<(String, Child)>,
    pub bus: Option<String>,
}

impl Lab {
    /// Two fresh namespaces A (10.213.N.1, fd00:213:N::1) and B (10.213.N.2)
    /// joined by a veth pair; `None` if skipped.
    pub fn new(need_avahi: bool, need_python: bool) -> Option<Lab> {
        init_log();
        if !is_root() {
            return unavailable("root (network namespaces)");
        }
        let mut missing: Vec<&str> = ["ip"]
            .into_iter()
            .chain(if need_avahi {
                vec![
                    "avahi-daemon",
                    "avahi-browse",
                    "avahi-publish",
                    "dbus-daemon",
                ]
            } else {
                vec![]
            })
            .filter(|p| !have(p))
            .collect();
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
        let dir = std::env::temp_dir().join(format!("kwm-{pid}-{n}"));
        let lab = Lab {
            ns_a: format!("kwm-{pid}-{n}-a"),
            ns_b: format!("kwm-{pid}-{n}-b"),
            veth_a: format!("kwm{pid}{n}a"),
            veth_b: format!("kwm{pid}{n}b"),
            ip_a: format!("10.213.{n}.1"),
            ip_b: format!("10.213.{n}.2"),
            // As Rust prints it (a zero group compresses): the TXT text form.
            ip6_a: format!("fd00:213:{n}::1")
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .to_string(),
            dir,
            children: Vec::new(),
            bus: None,
        };
        fs::create_dir_all(&lab.dir).unwrap();
        if let Err(e) = sh(&["ip", "netns", "add", &lab.ns_a]) {
            return unavailable(&format!("network namespaces ({e})"));
        }
        let (a, b) = (lab.ns_a.clone(), lab.ns_b.clone());
        let (veth_a, vb) = (lab.veth_a.clone(), lab.veth_b.clone());
        let setup: &[&[&str]] = &[
            &["ip", "netns", "add", &b],
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
            &["ip", "-n", &a, "link", "set", &veth_a, "up"],
            &["ip", "-n", &b, "link", "set", &vb, "up"],
            &["ip", "-n", &a, "link", "set", "lo", "up"],
            &["ip", "-n", &b, "link", "set", "lo", "up"],
        ];
        for cmd in setup {
            sh(cmd).unwrap();
        }
        eprintln!("lab: {a} ({}) <-> {b} ({})", lab.ip_a, lab.ip_b);
        Some(lab)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Starts `args` inside namespace `ns`, output to `<dir>/<name>.log`.
    pub fn spawn_in(&mut self, ns: &str, name: &str, args: &[&str]) -> u32 {
        let log = fs::File::create(self.path(&format!("{name}.log"))).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(bus) = &self.bus {
            cmd.env("DBUS_SYSTEM_BUS_ADDRESS", bus);
        }
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        self.children.push((name.to_owned(), child));
        pid
    }

    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits until `<name>.log` contains `needle`.
    pub fn wait_log(&mut self, name: &str, needle: &str) {
        let start = Instant::now();
        while !self.log(name).contains(needle) {
            if let Some((_, child)) = self.children.iter_mut().find(|(n, _)| n == name)
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("{name} exited ({status}):\n{}", self.log(name));
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{name} did not say {needle:?}:\n{}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
        let log = fs::File::create(self.path("dbus.log")).unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", self.path("bus.conf").display()))
            .args(["--nofork", "--nopidfile"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(("dbus".into(), child));
        let start = Instant::now();
        while !bus_path.exists() {
            assert!(start.elapsed() < DEADLINE, "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.bus = Some(format!("unix:path={}", bus_path.display()));

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

impl Drop for Lab {
    fn drop(&mut self) {
        for (name, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "--- {name}.log ---\n{}",
                    fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
                );
            }
        }
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        let _ = fs::remove_dir_all(&self.dir);
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
