//! `cargo xtask fuzz <target>|--all|--list [--seconds N]`: libFuzzer runs of
//! the targets in `fuzz/` (its own cargo workspace).
//!
//! Runs `cargo fuzz run -s none <target> -- -max_total_time=N`, which works on
//! the stable toolchain (no sanitizer). Installs cargo-fuzz if missing, and
//! reports the exec count from libFuzzer's closing `Done N runs` line.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::flags::Flags;
use crate::project::Project;
use crate::shell;

/// Seconds per target for `cargo xtask fuzz` when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 60;

/// No sanitizer: libFuzzer on the stable toolchain.
const SANITIZER: [&str; 2] = ["-s", "none"];

/// What libFuzzer reported for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The fuzz target.
    pub target: String,
    /// Inputs executed.
    pub runs: u64,
}

/// The command: fuzz one target, all of them, or list them.
pub fn run(project: &Project, mut flags: Flags) -> Result<()> {
    let list = flags.flag("--list");
    let all = flags.flag("--all");
    let seconds = flags.value("--seconds")?.unwrap_or(DEFAULT_SECONDS);
    let target = flags.positional();
    flags.finish()?;
    match (list, all, target) {
        (true, false, None) => {
            ensure_cargo_fuzz(project)?;
            targets(project)?.iter().for_each(|t| println!("{t}"));
            Ok(())
        }
        (false, true, None) => all_targets(project, seconds).map(|_| ()),
        (false, false, Some(target)) => {
            ensure_cargo_fuzz(project)?;
            one_target(project, &target, seconds).map(|_| ())
        }
        _ => Err(Error::failed(
            "usage: cargo xtask fuzz <target>|--all|--list [--seconds N]",
        )),
    }
}

/// Fuzzes every target for `seconds` each; runs all of them even if one
/// crashes, then fails naming the crashed ones.
pub fn all_targets(project: &Project, seconds: u64) -> Result<Vec<Report>> {
    ensure_cargo_fuzz(project)?;
    // One build of every target lets cargo compile them in parallel; each
    // run below then finds its binary fresh.
    let dir = fuzz_dir(project)?;
    shell::run(
        project
            .cargo(["fuzz", "build", "--fuzz-dir"])
            .arg(&dir)
            .current_dir(&dir)
            .args(SANITIZER),
    )?;
    let mut reports = Vec::new();
    let mut crashed = Vec::new();
    for target in targets(project)? {
        match one_target(project, &target, seconds) {
            Ok(report) => reports.push(report),
            Err(e) => {
                eprintln!("xtask: {e}");
                crashed.push(target);
            }
        }
    }
    for r in &reports {
        println!("fuzz {}: {} runs in {seconds} s, clean", r.target, r.runs);
    }
    if crashed.is_empty() {
        Ok(reports)
    } else {
        Err(Error::failed(format!("fuzz targets failed: {}", crashed.join(", ")))
            .with_fix("see each target's error above; inputs that crash are saved under fuzz/artifacts/<target>/"))
    }
}

/// Installs cargo-fuzz with `cargo install` unless `cargo fuzz` works.
pub fn ensure_cargo_fuzz(project: &Project) -> Result<()> {
    if shell::succeeds(&mut project.cargo(["fuzz", "--version"])) {
        return Ok(());
    }
    println!(
        "xtask: installing cargo-fuzz (cargo install cargo-fuzz --locked, a few minutes, once): \
         it builds and runs the libFuzzer targets in fuzz/"
    );
    shell::run(&mut project.cargo(["install", "cargo-fuzz", "--locked"])).map_err(|e| {
        Error::unavailable(e.to_string()).with_fix("check that crates.io is reachable")
    })
}

/// The fuzz targets, as `cargo fuzz list` names them.
pub fn targets(project: &Project) -> Result<Vec<String>> {
    let dir = fuzz_dir(project)?;
    let out = shell::output(project.cargo(["fuzz", "list", "--fuzz-dir"]).arg(&dir))?;
    let targets: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        return Err(Error::failed("fuzz/Cargo.toml declares no fuzz targets"));
    }
    Ok(targets)
}

/// Fuzzes `target` for `seconds`.
fn one_target(project: &Project, target: &str, seconds: u64) -> Result<Report> {
    let dir = fuzz_dir(project)?;
    let mut runs = None;
    let mut cmd = project.cargo(["fuzz", "run", "--fuzz-dir"]);
    cmd.arg(&dir)
        .current_dir(&dir)
        .args(SANITIZER)
        .args([target, "--"])
        .arg(format!("-max_total_time={seconds}"));
    shell::run_watching_stderr(&mut cmd, |line| {
        if let Some(n) = done_runs(line) {
            runs = Some(n);
        }
    })
    .map_err(|e| {
        e.context(format!("fuzz target {target}")).with_fix(format!(
            "if libFuzzer found a crash, the input is under fuzz/artifacts/{target}/; \
             replay it with `cargo fuzz run -s none {target} fuzz/artifacts/{target}/<file>`"
        ))
    })?;
    let runs = runs.ok_or_else(|| {
        Error::failed(format!(
            "fuzz target {target}: libFuzzer printed no `Done N runs` line"
        ))
    })?;
    println!("fuzz {target}: {runs} runs in {seconds} s, clean");
    Ok(Report {
        target: target.to_owned(),
        runs,
    })
}

fn fuzz_dir(project: &Project) -> Result<PathBuf> {
    let dir = project.path("fuzz");
    if dir.join("Cargo.toml").is_file() {
        Ok(dir)
    } else {
        Err(Error::failed(
            "no fuzz project: fuzz/Cargo.toml does not exist",
        ))
    }
}

/// The run count in libFuzzer's closing line `Done 123 runs in 10 second(s)`.
fn done_runs(line: &str) -> Option<u64> {
    let rest = line.trim().strip_prefix("Done ")?;
    let (count, rest) = rest.split_once(' ')?;
    rest.starts_with("runs in ")
        .then(|| count.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_done_line() {
        assert_eq!(
            done_runs("Done 1234567 runs in 11 second(s)"),
            Some(1234567)
        );
        assert_eq!(done_runs("#1024\tpulse  cov: 12 ft: 14"), None);
        assert_eq!(done_runs("Done x runs in 1 second(s)"), None);
        assert_eq!(done_runs("Done 12 crashes"), None);
    }
}
