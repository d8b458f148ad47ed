//! knotwork's project automation, run as `cargo xtask <command>` (the alias
//! lives in `.cargo/config.toml`).
//!
//! # Layout
//! One module per command — [`ci`], [`mod@test`], [`fuzz`], [`mod@bench`],
//! [`interop`], [`sim`], [`chaos`], [`testnet`], [`package`] (also
//! `features`) — and the few pieces they share: [`project`] (where the repo
//! is, how to start cargo), [`shell`] (running commands), [`python`] (the
//! `.venv` with interop peers and linters), [`lint`] (actionlint and
//! shellcheck), [`netns`] (hosts as network namespaces around a router),
//! [`proc`] and [`json`] (node processes and their JSON lines), [`flags`]
//! (arguments) and [`error`].
//!
//! Every tool a command needs is installed by the command when missing, and it
//! says what it installs and why. Failures exit non-zero with the fix named.

mod bench;
mod chaos;
mod ci;
mod error;
mod flags;
mod fuzz;
mod instructions;
mod interop;
mod json;
mod lint;
mod netns;
mod package;
mod proc;
mod project;
mod python;
mod shell;
mod sim;
mod system;
mod test;
mod testnet;

use std::process::ExitCode;

use crate::error::{Error, Result};
use crate::flags::Flags;
use crate::project::Project;

const HELP: &str = "\
usage: cargo xtask <command>

commands:
  ci [--fuzz-seconds N]          every CI check: fmt, clippy, tests, rustdoc, package,
                                 features, a short fuzz run of every target (default
                                 10 s each, also KNOTWORK_FUZZ_SECONDS), actionlint,
                                 interop suites
  test [args..]                  the workspace's tests (nextest if installed, plus
                                 doctests); args are passed through
  fuzz <target> [--seconds N]    fuzz one target (default 60 s); --all fuzzes every
                                 target, --list names them
  bench [--quick] [--pin CPU] [-- criterion args]
                                 the criterion benches (--pin: under taskset), then the
                                 perf harness (pinned to CPU, default 0, and unpinned)
  bench --vs libp2p [--quick] [--pin CPU]
                                 the perf harness alone, built with rust-libp2p 0.57:
                                 its rows beside ours (not part of ci)
  bench --instructions           instructions per 64 B message and round trip (raw TCP,
                                 SecureStream, node) under callgrind (not part of ci)
  interop <suite> [--allow-skip] our protocols against independent implementations
                                 (suites: noise, mdns, ble, ws, nat); --allow-skip skips when a
                                 prerequisite is missing instead of failing
  sim --nodes N --lookups M [--churn P] [--loss P] [--seed S] [--records R]
      [--join oracle|protocol] [--out FILE.svg]
                                 the DHT simulator (release build): success rate,
                                 hops, messages, latency, memory; SVG histograms
  package [--verify]             pack every published crate (one cargo package for all,
                                 offline where the index cache allows; --verify also
                                 builds each packed crate)
  features                       cargo check of each published crate alone with
                                 --no-default-features and with --all-features
  chaos [--quick] [--allow-skip] [--only SCENARIO]
                                 faults and hostile load on node processes in network
                                 namespaces (root): lossy, partition, crash, hostile;
                                 --quick takes under 5 minutes
  testnet --nodes N --minutes M [--churn R] [--seed S] [--max-inbound K] [--quick]
          [-- knot run args]
                                 N `knot run` processes in network namespaces (root):
                                 DHT, gossip and tasks driven through their control
                                 sockets, R of the nodes per minute stopped and
                                 restarted; report and SVG plots under
                                 <target>/testnet, hops held against `sim`;
                                 --max-inbound: every node's max_inbound; args
                                 after -- go to every `knot run`;
                                 --quick: 30 nodes, 2 min, churn 0.1 (what ci runs)
";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(mut args: Vec<String>) -> Result<()> {
    if args.is_empty() {
        print!("{HELP}");
        return Err(Error::failed("no command given"));
    }
    let command = args.remove(0);
    let project = Project::locate()?;
    match command.as_str() {
        "ci" => ci::run(&project, Flags::new(args)),
        "test" => test::run(&project, &args).map(|_| ()),
        "fuzz" => fuzz::run(&project, Flags::new(args)),
        "bench" => bench::run(&project, Flags::new(args)),
        "interop" => interop::run(&project, Flags::new(args)),
        "sim" => sim::run(&project, &args),
        "chaos" => chaos::run(&project, Flags::new(args)),
        "testnet" => testnet::run(&project, Flags::new(args)),
        // Started by `testnet` itself; see the testnet module docs.
        "testnet-guard" => testnet::guard(&args),
        "package" => package::run_package(&project, Flags::new(args)),
        "features" => package::run_features(&project, Flags::new(args)),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => Err(Error::failed(format!(
            "unknown command `{other}`; `cargo xtask help` lists them"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `.ci/run` must run exactly the test command the README gives.
    #[test]
    fn ci_script_runs_the_readme_test_command() {
        let project = Project::locate().unwrap();
        let readme = std::fs::read_to_string(project.path("README.md")).unwrap();
        let script = std::fs::read_to_string(project.path(".ci/run")).unwrap();
        assert!(
            readme.contains("cargo xtask ci"),
            "README lacks `cargo xtask ci`"
        );
        let last_command = script
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap();
        assert_eq!(last_command, "cargo xtask ci");
    }

    #[test]
    fn help_names_every_interop_suite() {
        for suite in interop::SUITES {
            assert!(HELP.contains(suite.name), "{}", suite.name);
        }
    }

    #[test]
    fn unknown_command_is_an_error() {
        let err = run(vec!["frobnicate".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("unknown command `frobnicate`"));
    }
}
