//! The project's Python virtualenv at `<repo>/.venv` (gitignored): the
//! independent peers the interop suites run and the linters CI uses are
//! installed there, never into the system Python.

use std::path::PathBuf;
use std::process::Command;

use crate::error::{Error, Result};
use crate::project::Project;
use crate::shell;
use crate::system::{self, Need};

/// A virtualenv that exists on disk.
#[derive(Debug)]
pub struct Venv {
    dir: PathBuf,
}

impl Venv {
    /// Opens `<repo>/.venv`, creating it with `python3 -m venv` if missing.
    pub fn ensure(project: &Project) -> Result<Self> {
        let venv = Self {
            dir: project.path(".venv"),
        };
        if !venv.python().is_file() {
            if cfg!(target_os = "linux") {
                // Debian's python3 makes virtualenvs only with python3-venv.
                system::ensure(
                    &[Need::PythonModule("ensurepip", "python3-venv")],
                    "python3 -m venv makes .venv with it",
                )?;
            }
            println!(
                "xtask: creating the Python virtualenv .venv (python3 -m venv .venv): \
                 interop peers and CI linters are installed there"
            );
            let system_python = if cfg!(windows) { "python" } else { "python3" };
            shell::run(
                Command::new(system_python)
                    .args(["-m", "venv"])
                    .arg(&venv.dir),
            )
            .map_err(|e| {
                Error::unavailable(e.to_string()).with_fix(
                    "install Python 3 with its venv module \
                         (Debian/Ubuntu: apt-get install python3-venv)",
                )
            })?;
        }
        Ok(venv)
    }

    /// The virtualenv's interpreter.
    pub fn python(&self) -> PathBuf {
        self.bin("python")
    }

    /// A program installed into the virtualenv.
    pub fn bin(&self, name: &str) -> PathBuf {
        if cfg!(windows) {
            self.dir.join("Scripts").join(format!("{name}.exe"))
        } else {
            self.dir.join("bin").join(name)
        }
    }

    /// Installs each `name==version` requirement not already installed at
    /// exactly that version, saying what it is for.
    pub fn ensure_packages(&self, requirements: &[&str], why: &str) -> Result<()> {
        let missing = self.missing(requirements)?;
        if missing.is_empty() {
            return Ok(());
        }
        println!(
            "xtask: installing {} into .venv with pip: {why}",
            missing.join(" ")
        );
        shell::run(
            Command::new(self.python())
                .args(["-m", "pip", "install", "--disable-pip-version-check"])
                .args(&missing),
        )
        .map_err(|e| {
            Error::unavailable(e.to_string())
                .with_fix("check that PyPI is reachable, or delete .venv and retry")
        })
    }

    /// The requirements whose exact version is not installed.
    fn missing(&self, requirements: &[&str]) -> Result<Vec<String>> {
        const SCRIPT: &str = "\
import importlib.metadata as m, sys
for req in sys.argv[1:]:
    name, _, version = req.partition('==')
    try:
        ok = m.version(name) == version
    except m.PackageNotFoundError:
        ok = False
    if not ok:
        print(req)
";
        let out = shell::output(
            Command::new(self.python())
                .args(["-c", SCRIPT])
                .args(requirements),
        )?;
        Ok(out.lines().map(str::to_owned).collect())
    }
}
