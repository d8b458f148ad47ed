//! What `/proc` says about the nodes and the machine over time: each
//! node's resident memory, CPU time and open files, and the machine's free
//! memory and CPU use, the limits a larger testnet runs into.

use super::nodes::Slot;

/// One node at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds from the start of the measurement (negative: warm-up).
    pub at: f64,
    /// The slot (0-based) and which of its nodes.
    pub slot: usize,
    /// See `slot`.
    pub node: usize,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// CPU time so far, clock ticks (100 per second).
    pub cpu_ticks: u64,
    /// Open file descriptors.
    pub fds: usize,
}

/// The machine at one moment.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Seconds from the start of the measurement.
    pub at: f64,
    /// `MemAvailable`, KiB.
    pub available_kib: u64,
    /// CPU ticks busy and in total since boot, over all cores (`/proc/stat`).
    pub busy_ticks: u64,
    /// See `busy_ticks`.
    pub total_ticks: u64,
    /// The 1-minute load average (runnable threads, all users).
    pub load: f64,
}

/// Samples every live node of `slots`.
pub fn nodes(slots: &[Slot], at: f64) -> Vec<Sample> {
    slots
        .iter()
        .enumerate()
        .filter_map(|(slot, s)| {
            let node = s.live.as_ref()?;
            Some(Sample {
                at,
                slot,
                node: s.past.len(),
                rss_kib: node.proc.rss_kib()?,
                cpu_ticks: node.proc.cpu_ticks()?,
                fds: node.proc.fds()?,
            })
        })
        .collect()
}

/// The kernel's slab memory now, KiB (`Slab` in `/proc/meminfo`): what
/// namespaces and their links cost.
pub fn slab_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Slab:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples the machine (`None` where `/proc` cannot be read).
pub fn machine(at: f64) -> Option<Machine> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let (busy_ticks, total_ticks) = cpu_ticks(stat.lines().next()?)?;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Machine {
        at,
        available_kib,
        busy_ticks,
        total_ticks,
        load,
    })
}

/// (busy, total) ticks of the `cpu` line of `/proc/stat`: idle and iowait
/// are not busy.
fn cpu_ticks(line: &str) -> Option<(u64, u64)> {
    let fields: Vec<u64> = line
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_and_iowait_are_not_busy() {
        let line = "cpu  100 5 50 800 40 0 5 0 0 0";
        assert_eq!(cpu_ticks(line), Some((160, 1000)));
        assert_eq!(cpu_ticks("intr 1 2 3"), None);
    }

    #[test]
    fn this_machine_can_be_sampled() {
        let m = machine(0.0).unwrap();
        assert!(m.available_kib > 0 && m.busy_ticks <= m.total_ticks);
        assert!(slab_kib().unwrap() > 0);
    }
}
