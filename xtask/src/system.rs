//! System programs a command needs (from Debian packages): checked, and
//! installed with apt-get when xtask runs as root on a Debian-like system.

use std::process::Command;

use crate::error::{Error, Result};
use crate::shell;

/// A program and the Debian package that provides it.
pub type Program = (&'static str, &'static str);

/// Makes sure every program is on `PATH`, installing the missing ones'
/// packages with apt-get when possible, and saying why.
pub fn ensure_programs(programs: &[Program], why: &str) -> Result<()> {
    let mut packages: Vec<&str> = programs
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|&(_, package)| package)
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
        assert!(on_path("sh"));
        assert!(!on_path("knotwork-no-such-program"));
    }

    #[test]
    fn present_programs_need_nothing() {
        let cargo = if cfg!(windows) { "cargo.exe" } else { "cargo" };
        ensure_programs(&[(cargo, "cargo")], "test").unwrap();
    }
}
