//! `cargo xtask sim --nodes N --lookups M [--churn P] [--loss P] [--seed S]
//! [--records R] [--join oracle|protocol] [--out FILE.svg]`: the DHT
//! simulator.
//!
//! The simulator engine lives in `knotwork_discovery_dht::sim` (unit tested
//! there); its command-line front end is the crate's `dht-sim` binary behind
//! the `sim-cli` feature. This command builds it in release mode (a 10,000
//! node run is ~10x slower unoptimised) and passes the arguments through.

use crate::error::Result;
use crate::project::Project;
use crate::shell;

/// The `cargo run` arguments that start `dht-sim` with `args`, built in
/// release mode or, if not `release`, in the dev profile.
fn cargo_args(args: &[String], release: bool) -> Vec<String> {
    let mut out: Vec<String> = [
        "run",
        if release {
            "--release"
        } else {
            "--profile=dev"
        },
        "--quiet",
        "--package",
        "knotwork-discovery-dht",
        "--features",
        "sim-cli",
        "--bin",
        "dht-sim",
        "--",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    out.extend(args.iter().cloned());
    out
}

/// Builds and runs the simulator with `args`.
pub fn run(project: &Project, args: &[String]) -> Result<()> {
    shell::run(&mut project.cargo(cargo_args(args, true)))
}

/// Builds and runs the simulator with `args` quietly and returns its
/// report (`cargo xtask testnet` holds its lookups against it).
pub fn report(project: &Project, args: &[String], release: bool) -> Result<String> {
    shell::output(&mut project.cargo(cargo_args(args, release)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_pass_through_after_the_separator() {
        let args = cargo_args(&["--nodes".to_owned(), "10".to_owned()], true);
        let sep = args.iter().position(|a| a == "--").unwrap();
        assert_eq!(&args[sep + 1..], ["--nodes", "10"]);
        assert!(args.contains(&"--release".to_owned()));
        assert!(args.contains(&"sim-cli".to_owned()));
    }
}
