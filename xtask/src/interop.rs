//! `cargo xtask interop <suite> [--allow-skip]`: our protocols against
//! independent implementations, run as real peers.
//!
//! Each [`Suite`] installs its peers itself. A suite whose prerequisites are
//! missing fails, unless `--allow-skip` is given: then it says loudly that it
//! was skipped and why. A failing test always fails.

use crate::error::{Error, Kind, Result};
use crate::flags::Flags;
use crate::project::Project;
use crate::python::Venv;
use crate::shell;

/// One interop suite.
#[derive(Debug)]
pub struct Suite {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it proves, in one line.
    pub about: &'static str,
    run: fn(&Project) -> Result<()>,
}

/// Every suite, in the order `cargo xtask ci` runs them.
pub const SUITES: &[Suite] = &[Suite {
    name: "noise",
    about: "our Noise handshake and transport messages against Python's noiseprotocol and dissononce",
    run: noise,
}];

/// How a suite ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its tests ran and passed.
    Passed,
    /// It could not run (the reason) and `--allow-skip` was given.
    Skipped(String),
}

/// The command.
pub fn run(project: &Project, mut flags: Flags) -> Result<()> {
    let allow_skip = flags.flag("--allow-skip");
    let name = flags.positional();
    flags.finish()?;
    let suite = match name {
        Some(name) => SUITES
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::failed(format!("no interop suite `{name}`\n{}", usage())))?,
        None => return Err(Error::failed(usage())),
    };
    run_suite(project, suite, allow_skip).map(|_| ())
}

/// Runs `suite`; with `allow_skip`, a missing prerequisite is a skip.
pub fn run_suite(project: &Project, suite: &Suite, allow_skip: bool) -> Result<Outcome> {
    match (suite.run)(project) {
        Ok(()) => Ok(Outcome::Passed),
        Err(e) if allow_skip && e.kind() == Kind::Unavailable => {
            let reason = e.to_string();
            eprintln!("xtask: SKIPPED interop suite `{}`: {reason}", suite.name);
            Ok(Outcome::Skipped(reason))
        }
        Err(e) => Err(e.context(format!("interop suite `{}`", suite.name))),
    }
}

fn usage() -> String {
    let mut text = String::from("usage: cargo xtask interop <suite> [--allow-skip]\nsuites:");
    for s in SUITES {
        text.push_str(&format!("\n  {:<8} {}", s.name, s.about));
    }
    text
}

/// Python's noiseprotocol and dissononce as Noise peers over TCP, both
/// directions, both suites; the test is `#[ignore]`d in plain test runs
/// because it needs these peers.
fn noise(project: &Project) -> Result<()> {
    const TEST: &str = "crates/crypto-handshake/tests/interop_noise.rs";
    if !project.path(TEST).is_file() {
        return Err(Error::unavailable(format!(
            "its test target {TEST} does not exist"
        )));
    }
    let venv = Venv::ensure(project)?;
    venv.ensure_packages(
        &["noiseprotocol==0.3.1", "dissononce==0.34.3"],
        "two independent Python Noise implementations the interop test runs as peers",
    )?;
    shell::run(
        project
            .cargo([
                "test",
                "-p",
                "knotwork-crypto-handshake",
                "--test",
                "interop_noise",
                "--",
                "--include-ignored",
                "--nocapture",
            ])
            .env("KNOTWORK_PYTHON", venv.python()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_names_are_unique_and_listed() {
        let text = usage();
        for (i, s) in SUITES.iter().enumerate() {
            assert!(text.contains(s.name));
            assert!(SUITES.iter().skip(i + 1).all(|t| t.name != s.name));
        }
    }
}
