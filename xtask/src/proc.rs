//! Node processes of `chaos` and `testnet`: one child in a host namespace,
//! its JSON stdout lines collected with arrival times by a reader thread,
//! its stderr (the node's log) kept in `<name>.log` and stdout copied to
//! `<name>.out`, its memory and CPU time read from `/proc`. Dropping a
//! [`Proc`] kills the child (`kill -9` by its PID) and reaps it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::{json, shell};

/// Runs `$0 "$@"` with the open-file limit raised where allowed.
const RAISE_NOFILE: &str = "ulimit -n 65536 2>/dev/null; exec \"$0\" \"$@\"";

/// One line a child printed, and when it arrived.
#[derive(Clone, Debug)]
pub struct Line {
    /// Arrival time.
    pub at: Instant,
    /// The JSON text.
    pub text: String,
}

impl Line {
    /// The `event` field.
    pub fn event(&self) -> &str {
        json::field(&self.text, "event").unwrap_or("")
    }
}

/// A running node process.
#[derive(Debug)]
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<Line>>>,
    /// Its stderr (the node's log).
    pub log: PathBuf,
}

impl Proc {
    /// Starts `program args..` in namespace `ns`, logging to
    /// `dir/name.log` with `RUST_LOG=rust_log`.
    pub fn start(
        name: &str,
        ns: &str,
        program: &Path,
        args: &[String],
        dir: &Path,
        rust_log: &str,
    ) -> Result<Self> {
        Self::start_keeping(name, ns, program, args, dir, rust_log, |_| true)
    }

    /// [`Proc::start`], keeping in memory only the stdout lines for which
    /// `keep` is true (the `.out` copy has them all).
    pub fn start_keeping(
        name: &str,
        ns: &str,
        program: &Path,
        args: &[String],
        dir: &Path,
        rust_log: &str,
        keep: fn(&str) -> bool,
    ) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log)
            .map_err(|e| Error::failed(format!("{}: {e}", log.display())))?;
        // `ip netns exec` execs the shell, which execs the program: the
        // child's PID is the program's. The shell first raises the open-file
        // limit (an attacker holds a thousand connections).
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", RAISE_NOFILE])
            .arg(program)
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| Error::unavailable(format!("cannot start {name}: {e}")))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let copy = dir.join(format!("{name}.out"));
        if let Some(out) = child.stdout.take() {
            let sink = lines.clone();
            std::thread::spawn(move || {
                // A copy of stdout next to the log, for a person reading later.
                let mut copy = std::fs::File::create(copy).ok();
                for text in BufReader::new(out)
                    .lines()
                    .map_while(std::result::Result::ok)
                {
                    if let Some(file) = copy.as_mut() {
                        let _ = writeln!(file, "{text}");
                    }
                    if !keep(&text) {
                        continue;
                    }
                    let line = Line {
                        at: Instant::now(),
                        text,
                    };
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(line);
                }
            });
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<Line> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The lines so far with event `event`.
    pub fn events(&self, event: &str) -> Vec<Line> {
        self.lines()
            .into_iter()
            .filter(|l| l.event() == event)
            .collect()
    }

    /// The last line with event `event`.
    pub fn last(&self, event: &str) -> Option<Line> {
        self.events(event).pop()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for a line with event `event` that satisfies
    /// `ok`; fails if the process exits first (naming its `error` line).
    pub fn wait_for(
        &mut self,
        event: &str,
        limit: Duration,
        ok: impl Fn(&Line) -> bool,
    ) -> Result<Line> {
        let until = Instant::now() + limit;
        loop {
            if let Some(line) = self.events(event).into_iter().find(|l| ok(l)) {
                return Ok(line);
            }
            if self.exited() {
                // The reader may still hold the last lines.
                std::thread::sleep(Duration::from_millis(200));
                if let Some(line) = self.events(event).into_iter().find(|l| ok(l)) {
                    return Ok(line);
                }
                let why = self
                    .last("error")
                    .and_then(|l| json::field(&l.text, "error").map(str::to_owned))
                    .unwrap_or_else(|| format!("see {}", self.log.display()));
                return Err(Error::failed(format!(
                    "{} exited before `{event}`: {why}",
                    self.name
                )));
            }
            if Instant::now() >= until {
                return Err(Error::failed(format!(
                    "{}: no matching `{event}` line within {} s",
                    self.name,
                    limit.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Resident memory in KiB (`VmRSS` in `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// Resident anonymous memory in KiB (`RssAnon`: heap, stacks; not the
    /// executable's pages, which `VmRSS` also counts as code first runs).
    pub fn anon_kib(&self) -> Option<u64> {
        self.status_kib("RssAnon:")
    }

    /// The KiB of field `key` in `/proc/<pid>/status`.
    fn status_kib(&self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// CPU time used so far (user + system), in clock ticks
    /// (`/proc/<pid>/stat`; 100 per second on Linux).
    pub fn cpu_ticks(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // The fields after the command name (in parentheses), from field 3.
        let rest = stat.get(stat.rfind(')')? + 2..)?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime, fields 14 and 15 of the line.
        let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
        Some(ticks(11)? + ticks(12)?)
    }

    /// Open file descriptors (`/proc/<pid>/fd`).
    pub fn fds(&self) -> Option<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .ok()
            .map(Iterator::count)
    }

    /// Sends SIGTERM (`kill -TERM`); the process shuts down by itself.
    pub fn terminate(&self) {
        shell::succeeds(Command::new("kill").args(["-TERM", &self.pid().to_string()]));
    }

    /// `kill -9`, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
