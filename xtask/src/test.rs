//! `cargo xtask test [args..]`: the workspace's tests.
//!
//! Uses cargo-nextest when it is installed (plus `cargo test --doc`, since
//! nextest does not run doctests), else plain `cargo test`, which runs
//! doctests itself. `KNOTWORK_TEST_RUNNER=cargo|nextest` picks one. Extra
//! arguments go to both commands unchanged; `--workspace` is added unless
//! they select packages themselves.

use std::env;

use crate::error::{Error, Result};
use crate::project::Project;
use crate::shell;

/// Which test runner to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// `cargo nextest run`, then `cargo test --doc`.
    Nextest,
    /// `cargo test`.
    Cargo,
}

impl std::fmt::Display for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Nextest => "nextest + doctests",
            Self::Cargo => "cargo test",
        })
    }
}

impl Runner {
    /// `KNOTWORK_TEST_RUNNER` if set, else nextest when installed.
    fn detect(project: &Project) -> Result<Self> {
        match env::var("KNOTWORK_TEST_RUNNER").as_deref() {
            Ok("nextest") => Ok(Self::Nextest),
            Ok("cargo") => Ok(Self::Cargo),
            Ok(other) => Err(Error::failed(format!(
                "KNOTWORK_TEST_RUNNER=`{other}`: expected `cargo` or `nextest`"
            ))),
            Err(_) if shell::succeeds(&mut project.cargo(["nextest", "--version"])) => {
                Ok(Self::Nextest)
            }
            Err(_) => Ok(Self::Cargo),
        }
    }
}

/// Runs the tests with `args` passed through; says which runner ran them.
pub fn run(project: &Project, args: &[String]) -> Result<Runner> {
    let runner = Runner::detect(project)?;
    let mut args = args.to_vec();
    if !selects_packages(&args) {
        args.insert(0, "--workspace".to_owned());
    }
    match runner {
        Runner::Nextest => {
            shell::run(project.cargo(["nextest", "run"]).args(&args))?;
            // nextest skips doctests; they run here.
            shell::run(project.cargo(["test", "--doc"]).args(&args))?;
        }
        Runner::Cargo => shell::run(project.cargo(["test"]).args(&args))?,
    }
    Ok(runner)
}

/// Whether the arguments before any `--` already choose packages.
fn selects_packages(args: &[String]) -> bool {
    args.iter().take_while(|a| *a != "--").any(|a| {
        matches!(a.as_str(), "-p" | "--package" | "--workspace" | "--all")
            || a.starts_with("--package=")
            || (a.starts_with("-p") && !a.starts_with("--"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn package_selection_is_detected_before_the_separator_only() {
        assert!(selects_packages(&words("-p knotwork-wire")));
        assert!(selects_packages(&words("-pknotwork-wire")));
        assert!(selects_packages(&words("--package=knotwork-wire")));
        assert!(!selects_packages(&words("codec -- -p")));
        assert!(!selects_packages(&words("--no-fail-fast")));
    }
}
