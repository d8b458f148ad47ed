//! Network-namespace test beds (root only): the setup and teardown every
//! bed shares. A [`Lab`] owns a scratch directory, the namespaces it made
//! and the processes it started in them; dropping it kills the processes
//! (printing their logs when the test panicked), kills whatever else still
//! runs in its namespaces and deletes them. The beds themselves
//! (discovery-mdns's two hosts on a veth pair, knot's NAT bed of routers
//! and LANs) only add their topology on top.
//!
//! A bed that cannot run here (not root, a program missing) fails its test
//! with the command that installs what is missing, unless
//! `KNOTWORK_ALLOW_SKIP=1` (set by `cargo xtask interop --allow-skip`):
//! then it says SKIPPED and the test returns ([`unavailable`]).

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Whether `KNOTWORK_ALLOW_SKIP=1`.
pub fn allow_skip() -> bool {
    std::env::var("KNOTWORK_ALLOW_SKIP").is_ok_and(|v| v == "1")
}

/// Says SKIPPED and returns `None` with `KNOTWORK_ALLOW_SKIP=1`; otherwise
/// fails the test: `suite` (e.g. `nat`) needs `why`.
pub fn unavailable<T>(suite: &str, why: &str) -> Option<T> {
    if allow_skip() {
        eprintln!("SKIPPED (KNOTWORK_ALLOW_SKIP=1): {suite} interop needs {why}");
        return None;
    }
    panic!(
        "{suite} interop needs {why}; run `cargo xtask interop {suite}` as root \
         (it installs what is missing), or set KNOTWORK_ALLOW_SKIP=1 to skip"
    );
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    })
}

/// The programs of `programs` that are not on the PATH.
pub fn missing<'a>(programs: &[&'a str]) -> Vec<&'a str> {
    programs
        .iter()
        .copied()
        .filter(|program| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect()
}

/// Runs `args`; the error names the command and its stderr.
pub fn sh(args: &[&str]) -> Result<Output, String> {
    sh_in(args, None)
}

/// Runs `args` with `stdin` as its standard input.
pub fn sh_in(args: &[&str], stdin: Option<&str>) -> Result<Output, String> {
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

/// Kills what runs in namespace `ns` and deletes it.
fn delete_ns(ns: &str) {
    if let Ok(pids) = sh(&["ip", "netns", "pids", ns]) {
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = sh(&["kill", "-KILL", pid]);
        }
    }
    let _ = sh(&["ip", "netns", "del", ns]);
}

/// A bed's namespaces, processes and scratch directory; see the module docs.
pub struct Lab {
    prefix: String,
    /// Scratch directory: logs, data directories, configuration files.
    pub dir: PathBuf,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    env: Vec<(String, String)>,
    deadline: Duration,
}

impl Lab {
    /// A lab whose namespaces are named `<tag><pid>-<n>-…`. Namespaces of
    /// `tag` left by test processes that are gone are removed first.
    /// [`Lab::wait_log`] gives up after `deadline`.
    pub fn new(tag: &str, deadline: Duration) -> Self {
        remove_leftovers(tag);
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{tag}{}-{seq}-", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        fs::create_dir_all(&dir).expect("lab directory");
        Self {
            prefix,
            dir,
            namespaces: Vec::new(),
            children: Vec::new(),
            env: Vec::new(),
            deadline,
        }
    }

    /// What every name of this lab starts with (`<tag><pid>-<n>-`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Makes namespace `<prefix><name>` with its loopback up; returns its name.
    pub fn add_ns(&mut self, name: &str) -> Result<String, String> {
        let ns = format!("{}{name}", self.prefix);
        sh(&["ip", "netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Whether no namespace was made yet (a failure then means namespaces
    /// do not work here at all).
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
    }

    /// Sets `key=value` for every process started from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// `<dir>/<name>`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Starts `args` in namespace `ns` with `env` (and the lab's
    /// [`Lab::set_env`]; no `KNOT_*` from the caller); stdout and stderr go
    /// to `<dir>/<name>.log`. Returns its pid.
    pub fn spawn(&mut self, ns: &str, name: &str, args: &[&str], env: &[(&str, &str)]) -> u32 {
        let log = fs::File::create(self.path(&format!("{name}.log"))).expect("log file");
        let mut cmd = Command::new("ip");
        for (key, _) in std::env::vars() {
            if key.starts_with("KNOT_") {
                cmd.env_remove(key);
            }
        }
        cmd.args(["netns", "exec", ns])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        let child = cmd.spawn().expect("ip netns exec starts");
        let pid = child.id();
        self.children.push((name.to_owned(), child));
        pid
    }

    /// Everything `name` printed so far.
    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    /// The process started as `name`.
    pub fn child(&mut self, name: &str) -> &mut Child {
        match self.children.iter_mut().find(|(n, _)| n == name) {
            Some((_, child)) => child,
            None => panic!("no process {name} in the lab"),
        }
    }

    /// Waits until a complete line of `name`'s log contains `needle`;
    /// returns the log up to its last complete line. Fails the test when
    /// `name` exits first or the lab's deadline passes.
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
                start.elapsed() < self.deadline,
                "{name} did not say {needle:?} within {:?}:\n{log}",
                self.deadline
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM to `name` and waits (bounded) for it to exit.
    pub fn terminate(&mut self, name: &str) -> ExitStatus {
        let pid = self.child(name).id().to_string();
        sh(&["kill", "-TERM", &pid]).unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child(name).try_wait() {
                return status;
            }
            assert!(start.elapsed() < self.deadline, "{name} ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `args` in namespace `ns` and waits for it.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<Output, String> {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend(args);
        sh(&all)
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
        // Whatever our children started inside dies with the namespace.
        for ns in self.namespaces.iter().rev() {
            delete_ns(ns);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Deletes `<tag><pid>-*` namespaces whose test process is gone, after
/// killing what still runs inside them.
fn remove_leftovers(tag: &str) {
    let Ok(out) = sh(&["ip", "netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(tag)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid.is_empty()
            || !pid.bytes().all(|b| b.is_ascii_digit())
            || PathBuf::from(format!("/proc/{pid}")).exists()
        {
            continue;
        }
        eprintln!("lab: removing leftover namespace {name}");
        delete_ns(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_report_failures_by_name_and_programs_are_found() {
        assert!(sh(&["true"]).is_ok());
        let e = sh(&["false"]).unwrap_err();
        assert!(e.starts_with("false failed"), "{e}");
        assert_eq!(sh(&[]).unwrap_err(), "empty command");
        let out = sh_in(&["cat"], Some("piped")).unwrap();
        assert_eq!(out.stdout, b"piped");
        assert_eq!(
            missing(&["sh", "no-such-program-kw"]),
            ["no-such-program-kw"]
        );
    }
}
