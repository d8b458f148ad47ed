//! `cargo xtask interop <suite> [--allow-skip]`: our protocols against
//! independent implementations, run as real peers.
//!
//! A [`Suite`] is an integration test of one crate (`#[ignore]`d in plain
//! test runs, because it needs the peers) plus a `prepare` function that
//! installs those peers and returns the environment the test reads. A suite
//! whose prerequisites are missing fails, unless `--allow-skip` is given:
//! then it says loudly that it was skipped and why, and the test gets
//! `KNOTWORK_ALLOW_SKIP=1` so that it too skips (loudly) what this machine
//! cannot run, such as network namespaces without root. A failing test always
//! fails.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::error::{Error, Kind, Result};
use crate::flags::Flags;
use crate::project::Project;
use crate::python::Venv;
use crate::shell;
use crate::system::{self, Need};

/// Environment variables a suite's test reads (where its peers are).
type TestEnv = Vec<(&'static str, OsString)>;

/// One interop suite.
#[derive(Debug)]
pub struct Suite {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it proves, in one line.
    pub about: &'static str,
    /// The package whose integration test it runs (`knotwork-<dir>`).
    package: &'static str,
    /// The integration test target, `crates/<dir>/tests/<test>.rs`.
    test: &'static str,
    /// Extra libtest arguments (after `--include-ignored --nocapture`).
    test_args: &'static [&'static str],
    /// Installs the peers; returns the environment variables the test reads.
    prepare: fn(&Project) -> Result<TestEnv>,
}

/// Every suite, in the order `cargo xtask ci` runs them.
pub const SUITES: &[Suite] = &[
    Suite {
        name: "noise",
        about: "our Noise handshake and transport messages against Python's noiseprotocol and dissononce",
        package: "knotwork-crypto-handshake",
        test: "interop_noise",
        test_args: &[],
        prepare: noise_peers,
    },
    Suite {
        name: "mdns",
        about: "our mDNS discovery against avahi and python-zeroconf in network namespaces (root)",
        package: "knotwork-discovery-mdns",
        test: "interop_mdns",
        // Each test builds its own namespaces; one at a time keeps them apart.
        test_args: &["--test-threads=1"],
        prepare: mdns_peers,
    },
    Suite {
        name: "ble",
        about: "both BLE roles over a private D-Bus against python-dbusmock's BlueZ",
        package: "knotwork-transport-ble",
        test: "interop_ble",
        test_args: &[],
        prepare: ble_peers,
    },
    Suite {
        name: "ws",
        about: "a Python websockets client upgrades against our WebSocket listener and sees binary frames",
        package: "knotwork-transport-ws",
        test: "interop_ws",
        test_args: &[],
        prepare: ws_peers,
    },
    Suite {
        name: "nat",
        about: "knot nodes behind nftables masquerade routers and miniupnpd in network namespaces (root)",
        package: "knotwork-knot",
        test: "interop_nat",
        // Each test builds its own test bed; one at a time keeps the machine calm.
        test_args: &["--test-threads=1"],
        prepare: nat_routers,
    },
];

/// How a suite ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its tests ran and passed.
    Passed,
    /// It could not run (the reason) and `--allow-skip` was given.
    Skipped(String),
}

impl Suite {
    /// Where its test target lives.
    pub fn test_file(&self, project: &Project) -> PathBuf {
        let dir = self.package.trim_start_matches("knotwork-");
        project.path(&format!("crates/{dir}/tests/{}.rs", self.test))
    }
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
    match prepare_and_test(project, suite, allow_skip) {
        Ok(()) => Ok(Outcome::Passed),
        Err(e) if allow_skip && e.kind() == Kind::Unavailable => {
            let reason = e.to_string();
            eprintln!("xtask: SKIPPED interop suite `{}`: {reason}", suite.name);
            Ok(Outcome::Skipped(reason))
        }
        Err(e) => Err(e.context(format!("interop suite `{}`", suite.name))),
    }
}

fn prepare_and_test(project: &Project, suite: &Suite, allow_skip: bool) -> Result<()> {
    let file = suite.test_file(project);
    if !file.is_file() {
        return Err(Error::unavailable(format!(
            "its test target {} does not exist",
            file.display()
        ))
        .with_fix(format!(
            "{} must provide it; `--allow-skip` skips the suite until then",
            suite.package
        )));
    }
    let env = (suite.prepare)(project)?;
    let mut cmd = project.cargo(["test", "-p", suite.package, "--test", suite.test]);
    cmd.args(["--", "--include-ignored", "--nocapture"])
        .args(suite.test_args)
        .envs(env);
    if allow_skip {
        cmd.env("KNOTWORK_ALLOW_SKIP", "1");
    }
    shell::run(&mut cmd)
}

fn usage() -> String {
    let mut text = String::from("usage: cargo xtask interop <suite> [--allow-skip]\nsuites:");
    for s in SUITES {
        text.push_str(&format!("\n  {:<8} {}", s.name, s.about));
    }
    text
}

/// Python's noiseprotocol and dissononce, in `.venv`; the test starts them
/// with the interpreter named by `KNOTWORK_PYTHON`.
fn noise_peers(project: &Project) -> Result<TestEnv> {
    let venv = Venv::ensure(project)?;
    venv.ensure_packages(
        &["noiseprotocol==0.3.1", "dissononce==0.34.3"],
        "two independent Python Noise implementations the interop test runs as peers",
    )?;
    Ok(vec![("KNOTWORK_PYTHON", venv.python().into_os_string())])
}

/// Python's websockets in `.venv`; the test starts it with the interpreter
/// named by `KNOTWORK_PYTHON`.
fn ws_peers(project: &Project) -> Result<TestEnv> {
    let venv = Venv::ensure(project)?;
    venv.ensure_packages(
        &["websockets==15.0.1"],
        "an independent WebSocket client the ws interop test runs against our listener",
    )?;
    Ok(vec![("KNOTWORK_PYTHON", venv.python().into_os_string())])
}

/// avahi (daemon and command-line tools) with its own D-Bus, `ip` for the
/// namespaces, and python-zeroconf in `.venv`.
fn mdns_peers(project: &Project) -> Result<TestEnv> {
    system::ensure(
        &[
            Need::Program("ip", "iproute2"),
            Need::Program("dbus-daemon", "dbus"),
            Need::Program("avahi-daemon", "avahi-daemon"),
            Need::Program("avahi-browse", "avahi-utils"),
            Need::Program("avahi-publish", "avahi-utils"),
        ],
        "avahi is the independent mDNS peer, in network namespaces the test creates",
    )?;
    if !system::is_root() {
        return Err(Error::unavailable(
            "the mdns suite needs root for network namespaces",
        ));
    }
    let venv = Venv::ensure(project)?;
    venv.ensure_packages(
        &["zeroconf==0.154.0"],
        "python-zeroconf, a second independent mDNS stack the test runs as a peer",
    )?;
    Ok(vec![
        ("KNOTWORK_PYTHON", venv.python().into_os_string()),
        ("KNOTWORK_KNOT", knot_binary(project)?.into_os_string()),
    ])
}

/// Builds the `knot` command (the mdns suite runs two `knot run` nodes) and
/// returns the path cargo reports for it.
fn knot_binary(project: &Project) -> Result<PathBuf> {
    let json = shell::output(&mut project.cargo([
        "build",
        "-p",
        "knotwork-knot",
        "--bin",
        "knot",
        "--message-format=json-render-diagnostics",
    ]))?;
    executable(&json, "knot").ok_or_else(|| Error::failed("cargo built no `knot` executable"))
}

/// The `"executable"` cargo's JSON messages report for binary `name`.
fn executable(messages: &str, name: &str) -> Option<PathBuf> {
    const KEY: &str = "\"executable\":\"";
    messages
        .lines()
        .filter(|l| l.contains(&format!("\"name\":\"{name}\"")))
        .find_map(|l| {
            let rest = l.get(l.find(KEY)? + KEY.len()..)?;
            Some(PathBuf::from(rest.get(..rest.find('"')?)?))
        })
}

/// A D-Bus daemon and python-dbusmock (Debian's, for the system Python);
/// the test starts the private bus and the mocked BlueZ itself.
fn ble_peers(_: &Project) -> Result<TestEnv> {
    system::ensure(
        &[
            Need::Program("dbus-daemon", "dbus"),
            Need::PythonModule("dbusmock", "python3-dbusmock"),
        ],
        "python-dbusmock's BlueZ on a private D-Bus is the peer both BLE roles talk to",
    )?;
    Ok(Vec::new())
}

/// `ip` for the namespaces, nftables for the routers' masquerade and
/// filter, miniupnpd built for nftables as the UPnP gateway and miniupnpc's
/// `upnpc` to list its mappings; the test builds the topology itself.
fn nat_routers(_: &Project) -> Result<TestEnv> {
    system::ensure(
        &[
            Need::Program("ip", "iproute2"),
            Need::Program("nft", "nftables"),
            Need::Program("miniupnpd", "miniupnpd-nftables"),
            Need::Program("upnpc", "miniupnpc"),
        ],
        "NAT routers (nftables masquerade) and a UPnP gateway (miniupnpd) in network namespaces",
    )?;
    if !system::is_root() {
        return Err(Error::unavailable(
            "the nat suite needs root for network namespaces",
        ));
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executable_is_read_from_cargo_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"knotwork_node"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"knot"},"executable":"/t/debug/knot","fresh":true}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
        );
        assert_eq!(
            executable(messages, "knot"),
            Some(PathBuf::from("/t/debug/knot"))
        );
        assert_eq!(executable(messages, "knotwork_node"), None);
    }

    #[test]
    fn suite_names_are_unique_and_listed() {
        let text = usage();
        for (i, s) in SUITES.iter().enumerate() {
            assert!(text.contains(s.name));
            assert!(SUITES.iter().skip(i + 1).all(|t| t.name != s.name));
        }
    }

    #[test]
    fn each_suite_names_an_existing_package() {
        let project = Project::locate().unwrap();
        for s in SUITES {
            let crate_dir = s.test_file(&project);
            let crate_dir = crate_dir.parent().and_then(|tests| tests.parent()).unwrap();
            let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
            assert!(
                manifest.contains(&format!("name = \"{}\"", s.package)),
                "{}",
                s.name
            );
        }
    }
}
