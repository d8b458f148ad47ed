//! Names each scenario on stderr as it starts and bounds how long it may
//! run: a scenario that hangs ends the run with its name instead of
//! leaving two parked runtimes behind.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The scenario running now and when it started.
static CURRENT: Mutex<Option<(String, Instant)>> = Mutex::new(None);

/// Starts the thread that ends the process (exit code 3) when one
/// scenario runs longer than `limit`.
pub fn start(limit: Duration) {
    std::thread::Builder::new()
        .name("perf-watchdog".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((name, since)) = current.as_ref()
                    && since.elapsed() > limit
                {
                    eprintln!(
                        "perf: scenario `{name}` still running after {limit:?}: hung, giving up"
                    );
                    std::process::exit(3);
                }
            }
        })
        .expect("spawn watchdog");
}

/// Marks the start of scenario `name` (and the end of the one before).
pub fn step(name: impl std::fmt::Display) {
    let name = name.to_string();
    eprintln!("perf:   {name}");
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some((name, Instant::now()));
}

/// Marks that no scenario is running.
pub fn idle() {
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = None;
}
