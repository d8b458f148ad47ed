//! Where the repository is and how to start cargo in it.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// The knotwork checkout xtask works on.
#[derive(Debug)]
pub struct Project {
    root: PathBuf,
    cargo: OsString,
}

impl Project {
    /// Finds the repository root: the parent of this package's directory.
    pub fn locate() -> Result<Self> {
        let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir
            .parent()
            .ok_or_else(|| Error::failed("xtask's manifest directory has no parent"))?
            .to_path_buf();
        if !root.join("Cargo.toml").is_file() {
            return Err(Error::failed(format!(
                "no Cargo.toml at {}: run xtask from a knotwork checkout",
                root.display()
            )));
        }
        // `cargo run` tells us which cargo started us; use the same one.
        let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        Ok(Self { root, cargo })
    }

    /// The repository root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path inside the repository.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Cargo's target directory: `CARGO_TARGET_DIR`, else `target/`.
    pub fn target_dir(&self) -> PathBuf {
        env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.path("target"))
    }

    /// `cargo <args>` run from the repository root.
    pub fn cargo<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(&self.cargo);
        cmd.args(args).current_dir(&self.root);
        cmd
    }
}
