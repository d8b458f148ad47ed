//! System packages a command needs (Debian's): checked by what they provide,
//! and installed with apt-get when xtask runs as root on a Debian-like system.

use std::process::Command;

use crate::error::{Error, Result};
use crate::shell;

/// Something a Debian package provides, and that package.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// A program on `PATH`, from a package.
    Program(&'static str, &'static str),
    /// A module the system Python (`/usr/bin/python3`) imports, from a package.
    PythonModule(&'static str, &'static str),
}

/// The system interpreter that Debian's `python3-*` packages install into.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

impl Need {
    fn package(self) -> &'static str {
        match self {
            Need::Program(_, package) | Need::PythonModule(_, package) => package,
        }
    }

    fn present(self) -> bool {
        match self {
            Need::Program(program, _) => on_path(program),
            Need::PythonModule(module, _) => shell::succeeds(
                Command::new(SYSTEM_PYTHON).args(["-c", &format!("import {module}")]),
            ),
        }
    }
}

/// Makes sure every need is met, installing the missing packages with
/// apt-get when possible, and saying why.
pub fn ensure(needs: &[Need], why: &str) -> Result<()> {
    let mut packages: Vec<&str> = needs
        .iter()
        .filter(|need| !need.present())
        .map(|need| need.package())
        .collect();
    packages.sort_unstable();
    packages.dedup();
    if packages.is_empty() {
        return Ok(());
    }
    let list = packages.join(" ");
    if !is_root() || !on_path("apt-get") {
        return Err(
            Error::unavailable(format!("missing system packages: {list}")).with_fix(format!(
                "install them (Debian/Ubuntu: apt-get install {list})"
            )),
        );
    }
    println!("xtask: installing {list} with apt-get: {why}");
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    shell::run(&mut apt(&["update", "-q"]))
        .and_then(|()| {
            shell::run(apt(&["install", "-y", "-q", "--no-install-recommends"]).args(&packages))
        })
        .map_err(|e| Error::unavailable(e.to_string()))
}

/// Whether xtask runs as root (needed for apt-get and network namespaces).
pub fn is_root() -> bool {
    shell::output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn finds_programs_on_path() {
        assert!(Need::Program("sh", "dash").present());
        assert!(!Need::Program("knotwork-no-such-program", "x").present());
    }

    #[test]
    fn met_needs_install_nothing() {
        let cargo = if cfg!(windows) { "cargo.exe" } else { "cargo" };
        ensure(&[Need::Program(cargo, "cargo")], "test").unwrap();
    }
}
