//! The NAT test bed: seven network namespaces wired as a small internet.
//!
//! ```text
//!                 public bridge 11.66.0.0/16 (namespace `sw`, bridge br0)
//!        +---------------+---------------+----------------+
//!   relay .1.10     public .2.20   router A .3.1    router B .4.2 (+ miniupnpd)
//!                                       | masquerade      | masquerade
//!                                  LAN 10.67.0.0/24   LAN 10.68.0.0/24
//!                                   host A .2          host B .2
//! ```
//!
//! The public side uses 11.66.0.0/16 because miniupnpd refuses to map ports
//! on a reserved or private external address; each public site is in a /24
//! of its own, as separate networks on the internet are (a node asks only
//! one peer per /24 whether it is reachable). The namespaces have no link to
//! the machine's own network, so these packets never leave the bed. Each
//! router forwards, masquerades what leaves its WAN side and drops what
//! arrives there unsolicited, silently (conntrack `established,related` and
//! ports mapped by miniupnpd pass). Every namespace name starts with
//! `kwn<pid>-<seq>-`: a bed deletes its namespaces and kills what it started
//! (by PID) when dropped, also when a test panics, and a new bed first removes
//! leftovers of test processes that no longer run.

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a test waits for anything in the bed (a log line, a peer).
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A place in the bed: one network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The relay / seed node on the public bridge.
    Relay,
    /// A public host on the bridge.
    Public,
    /// The NAT router of LAN A.
    RouterA,
    /// The host on LAN A.
    HostA,
    /// The NAT router of LAN B (runs miniupnpd when asked).
    RouterB,
    /// The host on LAN B.
    HostB,
}

impl Site {
    const ALL: [Site; 6] = [
        Site::Relay,
        Site::Public,
        Site::RouterA,
        Site::HostA,
        Site::RouterB,
        Site::HostB,
    ];

    fn tag(self) -> &'static str {
        match self {
            Site::Relay => "relay",
            Site::Public => "pub",
            Site::RouterA => "ra",
            Site::HostA => "ha",
            Site::RouterB => "rb",
            Site::HostB => "hb",
        }
    }

    /// Its address: a router's is its public (WAN) address.
    pub fn ip(self) -> Ipv4Addr {
        match self {
            Site::Relay => Ipv4Addr::new(11, 66, 1, 10),
            Site::Public => Ipv4Addr::new(11, 66, 2, 20),
            Site::RouterA => Ipv4Addr::new(11, 66, 3, 1),
            Site::RouterB => Ipv4Addr::new(11, 66, 4, 2),
            Site::HostA => Ipv4Addr::new(10, 67, 0, 2),
            Site::HostB => Ipv4Addr::new(10, 68, 0, 2),
        }
    }

    /// `ip:port` at this site.
    pub fn addr(self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip(), port)
    }

    /// The router in front of a private host.
    pub fn router(self) -> Option<Site> {
        match self {
            Site::HostA => Some(Site::RouterA),
            Site::HostB => Some(Site::RouterB),
            _ => None,
        }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// LAN side of router A / B: the router's own address and the prefix length.
fn lan_gateway(router: Site) -> Ipv4Addr {
    match router {
        Site::RouterA => Ipv4Addr::new(10, 67, 0, 1),
        _ => Ipv4Addr::new(10, 68, 0, 1),
    }
}

/// What a bed runs beyond the plain topology.
#[derive(Debug, Default, Clone, Copy)]
pub struct Options {
    /// Router B runs miniupnpd (UPnP IGD) for LAN B.
    pub upnp: bool,
}

/// Whether KNOTWORK_ALLOW_SKIP=1 (set by `cargo xtask interop --allow-skip`).
fn allow_skip() -> bool {
    std::env::var("KNOTWORK_ALLOW_SKIP").is_ok_and(|v| v == "1")
}

/// Fails the test with `why`, or with KNOTWORK_ALLOW_SKIP=1 says SKIPPED.
fn unavailable(why: &str) -> Option<Bed> {
    if allow_skip() {
        eprintln!("SKIPPED (KNOTWORK_ALLOW_SKIP=1): nat interop needs {why}");
        return None;
    }
    panic!(
        "nat interop needs {why}; run `cargo xtask interop nat` as root \
         (it installs what is missing), or set KNOTWORK_ALLOW_SKIP=1 to skip"
    );
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    })
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `args`; the error names the command and its stderr.
pub fn sh(args: &[&str]) -> Result<Output, String> {
    sh_in(args, None)
}

/// Runs `args` with `stdin` as its standard input.
fn sh_in(args: &[&str], stdin: Option<&str>) -> Result<Output, String> {
    let (program, rest) = args.split_first().ok_or("empty command")?;
    let mut child = Command::new(program)
        .args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("{}: stdin: {e}", args.join(" ")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Deletes `kwn<pid>-*` namespaces whose test process is gone, after killing
/// what still runs inside them.
fn remove_leftovers() {
    let Ok(out) = sh(&["ip", "netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix("kwn")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid.is_empty() || PathBuf::from(format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("bed: removing leftover namespace {name}");
        if let Ok(pids) = sh(&["ip", "netns", "pids", name]) {
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                let _ = sh(&["kill", "-KILL", pid]);
            }
        }
        let _ = sh(&["ip", "netns", "del", name]);
    }
}

/// A built test bed; torn down when dropped.
pub struct Bed {
    prefix: String,
    /// Scratch directory: logs, data directories, miniupnpd's configuration.
    pub dir: PathBuf,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
}

impl Bed {
    /// Builds the bed; `None` when skipped (KNOTWORK_ALLOW_SKIP=1 and no root
    /// or programs).
    pub fn new(options: Options) -> Option<Bed> {
        if !is_root() {
            return unavailable("root (network namespaces)");
        }
        let mut programs = vec!["ip", "nft", "bash", "timeout"];
        if options.upnp {
            programs.extend(["miniupnpd", "upnpc"]);
        }
        let missing: Vec<&str> = programs.into_iter().filter(|p| !have(p)).collect();
        if !missing.is_empty() {
            return unavailable(&missing.join(", "));
        }
        remove_leftovers();
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("kwn{}-{seq}-", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        fs::create_dir_all(&dir).expect("bed directory");
        let mut bed = Bed {
            prefix,
            dir,
            namespaces: Vec::new(),
            children: Vec::new(),
        };
        if let Err(e) = bed.build(options) {
            if bed.namespaces.is_empty() {
                return unavailable(&format!("network namespaces ({e})"));
            }
            panic!("building the NAT test bed: {e}");
        }
        eprintln!("bed: {} built (upnp: {})", bed.prefix, options.upnp);
        Some(bed)
    }

    /// The namespace of `site`.
    pub fn ns(&self, site: Site) -> String {
        format!("{}{}", self.prefix, site.tag())
    }

    fn switch(&self) -> String {
        format!("{}sw", self.prefix)
    }

    fn add_ns(&mut self, name: String) -> Result<(), String> {
        sh(&["ip", "netns", "add", &name])?;
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"])?;
        self.namespaces.push(name);
        Ok(())
    }

    fn build(&mut self, options: Options) -> Result<(), String> {
        let sw = self.switch();
        self.add_ns(sw.clone())?;
        for site in Site::ALL {
            self.add_ns(self.ns(site))?;
        }
        sh(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        sh(&["ip", "-n", &sw, "link", "set", "br0", "up"])?;
        for site in [Site::Relay, Site::Public, Site::RouterA, Site::RouterB] {
            let ns = self.ns(site);
            let port = format!("p-{}", site.tag());
            sh(&[
                "ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "wan",
                "netns", &ns,
            ])?;
            sh(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/16", site.ip()),
                "dev",
                "wan",
            ])?;
            sh(&["ip", "-n", &ns, "link", "set", "wan", "up"])?;
        }
        for host in [Site::HostA, Site::HostB] {
            let router = host.router().ok_or("a host has a router")?;
            let (rns, hns) = (self.ns(router), self.ns(host));
            let gateway = lan_gateway(router);
            sh(&[
                "ip", "-n", &rns, "link", "add", "lan", "type", "veth", "peer", "name", "lan",
                "netns", &hns,
            ])?;
            sh(&[
                "ip",
                "-n",
                &rns,
                "addr",
                "add",
                &format!("{gateway}/24"),
                "dev",
                "lan",
            ])?;
            sh(&[
                "ip",
                "-n",
                &hns,
                "addr",
                "add",
                &format!("{}/24", host.ip()),
                "dev",
                "lan",
            ])?;
            sh(&["ip", "-n", &rns, "link", "set", "lan", "up"])?;
            sh(&["ip", "-n", &hns, "link", "set", "lan", "up"])?;
            sh(&[
                "ip",
                "-n",
                &hns,
                "route",
                "add",
                "default",
                "via",
                &gateway.to_string(),
            ])?;
            self.nat_router(router)?;
        }
        if options.upnp {
            self.start_miniupnpd()?;
        }
        Ok(())
    }

    /// Forwarding, masquerade on the WAN side and a filter that lets in only
    /// replies and UPnP-mapped ports (the commands of issue 10, scoped to
    /// the WAN interface, plus the filter a home router has).
    fn nat_router(&self, router: Site) -> Result<(), String> {
        let ns = self.ns(router);
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        self.nft(router, "add table ip nat")?;
        self.nft(
            router,
            "add chain ip nat post { type nat hook postrouting priority 100; }",
        )?;
        self.nft(router, "add rule ip nat post oifname wan masquerade")?;
        self.nft(router, "add table ip filter")?;
        self.nft(
            router,
            "add chain ip filter forward { type filter hook forward priority 0; policy drop; }",
        )?;
        self.nft(
            router,
            "add rule ip filter forward ct state established,related accept",
        )?;
        self.nft(router, "add rule ip filter forward iifname lan accept")?;
        self.nft(router, "add rule ip filter forward ct status dnat accept")?;
        // Stealth on the public side, as home routers are: what is not an
        // answer is dropped, never answered with a reset (a reset would
        // kill a simultaneous open whose first SYN arrives early).
        self.nft(
            router,
            "add chain ip filter input { type filter hook input priority 0; policy accept; }",
        )?;
        self.nft(
            router,
            "add rule ip filter input iifname wan ct state established,related accept",
        )?;
        self.nft(router, "add rule ip filter input iifname wan drop")
            .map(drop)
    }

    /// Runs one `nft` command (its words split on spaces) in `site`.
    pub fn nft(&self, site: Site, command: &str) -> Result<Output, String> {
        let ns = self.ns(site);
        let mut args = vec!["ip", "netns", "exec", &ns, "nft"];
        args.extend(command.split(' '));
        sh(&args)
    }

    /// The nftables ruleset of `site`, as `nft list ruleset` prints it.
    pub fn ruleset(&self, site: Site) -> String {
        let ns = self.ns(site);
        sh(&["ip", "netns", "exec", &ns, "nft", "list", "ruleset"])
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// miniupnpd on router B for LAN B, with its own nftables table and
    /// chains (the Debian package ships no init script that works here).
    fn start_miniupnpd(&mut self) -> Result<(), String> {
        let table = "table inet miniupnpd {
  chain miniupnpd {
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    jump miniupnpd
  }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
  }
}
";
        let ns = self.ns(Site::RouterB);
        sh_in(&["ip", "netns", "exec", &ns, "nft", "-f", "-"], Some(table))?;
        let config = format!(
            "ext_ifname=wan
listening_ip=lan
port=0
enable_upnp=yes
enable_natpmp=no
secure_mode=yes
system_uptime=no
notify_interval=30
uuid=6b6e6f74-776f-726b-0000-{:012x}
upnp_table_name=miniupnpd
upnp_nat_table_name=miniupnpd
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
allow 1024-65535 10.68.0.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
",
            std::process::id()
        );
        let conf = self.dir.join("miniupnpd.conf");
        fs::write(&conf, config).map_err(|e| e.to_string())?;
        let conf = conf.display().to_string();
        let pid = self.dir.join("miniupnpd.pid").display().to_string();
        self.spawn(
            Site::RouterB,
            "miniupnpd",
            &["miniupnpd", "-f", &conf, "-d", "-P", &pid],
        );
        self.wait_log("miniupnpd", "HTTP listening on port");
        Ok(())
    }

    /// Starts `args` in `site`'s namespace with the environment `env`;
    /// stdout and stderr go to `<dir>/<name>.log`.
    pub fn spawn_env(&mut self, site: Site, name: &str, args: &[&str], env: &[(&str, &str)]) {
        let log = fs::File::create(self.log_path(name)).expect("log file");
        let mut cmd = Command::new("ip");
        for (key, _) in std::env::vars() {
            if key.starts_with("KNOT_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(["netns", "exec", &self.ns(site)])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let child = cmd.spawn().expect("ip netns exec starts");
        self.children.push((name.to_owned(), child));
    }

    /// Starts `args` in `site`'s namespace; output to `<dir>/<name>.log`.
    pub fn spawn(&mut self, site: Site, name: &str, args: &[&str]) {
        self.spawn_env(site, name, args, &[]);
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Everything `name` printed so far.
    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    fn child(&mut self, name: &str) -> &mut Child {
        match self.children.iter_mut().find(|(n, _)| n == name) {
            Some((_, child)) => child,
            None => panic!("no process {name} in the bed"),
        }
    }

    /// Waits until a complete line of `name`'s log contains `needle`;
    /// returns the log up to its last complete line.
    pub fn wait_log(&mut self, name: &str, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let mut log = self.log(name);
            log.truncate(log.rfind('\n').map_or(0, |end| end + 1));
            if log.contains(needle) {
                return log;
            }
            if let Ok(Some(status)) = self.child(name).try_wait() {
                panic!("{name} exited ({status}) before saying {needle:?}:\n{log}");
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{name} did not say {needle:?} within {DEADLINE:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM to `name` and waits (bounded) for it to exit.
    pub fn terminate(&mut self, name: &str) -> std::process::ExitStatus {
        let child = self.child(name);
        let pid = child.id().to_string();
        sh(&["kill", "-TERM", &pid]).unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child(name).try_wait() {
                return status;
            }
            assert!(start.elapsed() < DEADLINE, "{name} ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `args` in `site`'s namespace and waits for it.
    pub fn exec(&self, site: Site, args: &[&str]) -> Result<Output, String> {
        let ns = self.ns(site);
        let mut all = vec!["ip", "netns", "exec", &ns];
        all.extend(args);
        sh(&all)
    }

    /// Whether a TCP connection from `from` to `to` is established within
    /// `timeout` (bash's /dev/tcp, so no extra client program).
    pub fn tcp_connects(&self, from: Site, to: SocketAddrV4, timeout: Duration) -> bool {
        let script = format!("exec 3<>/dev/tcp/{}/{}", to.ip(), to.port());
        let secs = format!("{:.1}", timeout.as_secs_f64());
        self.exec(from, &["timeout", &secs, "bash", "-c", &script])
            .is_ok()
    }
}

impl Drop for Bed {
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
        for ns in self.namespaces.iter().rev() {
            // Whatever our children started inside dies with the namespace.
            if let Ok(pids) = sh(&["ip", "netns", "pids", ns]) {
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let _ = sh(&["kill", "-KILL", pid]);
                }
            }
            let _ = sh(&["ip", "netns", "del", ns]);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
