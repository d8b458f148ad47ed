//! What publishing needs, checked without publishing anything:
//! `cargo xtask package` packs every published crate, `cargo xtask
//! features` checks each crate with no default features and with all of
//! them.
//!
//! Packing names every published crate to one `cargo package` (packing
//! several at once is stable since cargo 1.90): the crates depend on each
//! other unpublished, so cargo puts the ones already packed in a local
//! overlay of the registry while it packs the next. By
//! default nothing is built (`--no-verify`), which takes seconds and checks
//! what can go wrong in a manifest (a missing README or license, an
//! unpublished path dependency, files outside the package); `--verify`
//! also builds each `.crate` as crates.io users would, which rebuilds
//! every dependency once with the default profile (minutes on 2 cores).
//! Where the registry index cache already has every dependency the run
//! is offline.

use crate::error::{Error, Result};
use crate::flags::Flags;
use crate::project::Project;
use crate::shell;

/// `cargo xtask package [--verify]`.
pub fn run_package(project: &Project, mut flags: Flags) -> Result<()> {
    let verify = flags.flag("--verify");
    flags.finish()?;
    package(project, verify).map(|n| println!("package: {n} crates packed"))
}

/// `cargo xtask features`.
pub fn run_features(project: &Project, flags: Flags) -> Result<()> {
    flags.finish()?;
    features(project).map(|n| println!("features: {n} crates checked both ways"))
}

/// Packs every published crate (uncommitted changes included: this checks
/// the tree as it is); returns how many.
pub fn package(project: &Project, verify: bool) -> Result<usize> {
    let crates = published_crates(project)?;
    let mut args = vec!["package", "--locked", "--allow-dirty"];
    if !verify {
        args.push("--no-verify");
    }
    for name in &crates {
        args.extend(["-p", name]);
    }
    let mut offline = project.cargo(&args);
    offline.arg("--offline");
    if shell::run(&mut offline).is_err() {
        println!(
            "package: packing offline failed (above); once more online, in case \
             the registry index cache lacked an entry"
        );
        shell::run(&mut project.cargo(&args))?;
    }
    Ok(crates.len())
}

/// `cargo check` of each published crate alone, once with
/// `--no-default-features` and once with `--all-features` (each crate's
/// own feature resolution, as a user depending on it gets); returns how
/// many crates.
pub fn features(project: &Project) -> Result<usize> {
    let crates = published_crates(project)?;
    for name in &crates {
        for features in ["--no-default-features", "--all-features"] {
            shell::run(&mut project.cargo(["check", "--locked", "-p", name, features]))
                .map_err(|e| e.context(format!("{name} {features}")))?;
        }
    }
    Ok(crates.len())
}

/// The package names under `crates/` that are published (no
/// `publish = false`), sorted.
pub fn published_crates(project: &Project) -> Result<Vec<String>> {
    let dir = project.path("crates");
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| Error::failed(format!("reading {}: {e}", dir.display())))?;
    let mut names = Vec::new();
    for entry in entries {
        let manifest = entry
            .map_err(|e| Error::failed(format!("reading {}: {e}", dir.display())))?
            .path()
            .join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let name = package_name(&text).ok_or_else(|| {
            Error::failed(format!("{}: no `name = \"…\"` line", manifest.display()))
        })?;
        if !text.lines().any(|l| l.trim() == "publish = false") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The `name = "…"` of a manifest's `[package]` table.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(value) = line.strip_prefix("name") {
            let value = value.trim_start().strip_prefix('=')?.trim();
            return Some(value.strip_prefix('"')?.strip_suffix('"')?.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_name_comes_from_the_package_table() {
        let manifest = "[workspace]\nname = \"not-this\"\n\n[package]\n\
                        description = \"x\"\nname = \"knotwork-wire\"\n";
        assert_eq!(package_name(manifest).as_deref(), Some("knotwork-wire"));
        assert_eq!(package_name("[dependencies]\nname = \"x\"\n"), None);
    }

    #[test]
    fn the_published_crates_are_found() {
        let project = Project::locate().unwrap();
        let crates = published_crates(&project).unwrap();
        for name in ["knotwork-core", "knotwork-wire", "knotwork-discovery-dht"] {
            assert!(crates.iter().any(|c| c == name), "{name} not in {crates:?}");
        }
        assert!(
            crates
                .iter()
                .all(|c| c == "knotwork" || c.starts_with("knotwork-")),
            "{crates:?}"
        );
    }
}
