//! Options every command shares, and how they combine with `knot.toml` and
//! the `KNOT_*` environment into one configuration.

use std::path::{Path, PathBuf};

use crate::config::{FileConfig, expand_home};
use serde::Serialize;

use crate::CliResult;

/// Options of every command.
#[derive(Debug, clap::Args)]
pub(crate) struct Global {
    /// The configuration file (see `knot config example`).
    #[arg(
        long,
        short = 'C',
        global = true,
        value_name = "FILE",
        env = "KNOT_CONFIG"
    )]
    pub(crate) config: Option<PathBuf>,
    /// The data directory: identity key and control socket
    /// [default: data_dir of the config, else ~/.local/share/knot].
    #[arg(long, short = 'd', global = true, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// The identity file's name inside the data directory.
pub(crate) const IDENTITY_FILE: &str = "identity.key";

impl Global {
    /// The file (if given), then `KNOT_*` variables, then `--data-dir`.
    pub(crate) fn file_config(&self) -> CliResult<FileConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                FileConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        config.apply_env(std::env::vars().filter(|(k, _)| k != "KNOT_CONFIG"))?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        Ok(config)
    }

    /// The data directory, `~/` expanded.
    pub(crate) fn data_dir(&self) -> CliResult<PathBuf> {
        Ok(resolve_dir(&self.file_config()?.data_dir))
    }
}

/// `dir` with a leading `~/` replaced by `$HOME`.
pub(crate) fn resolve_dir(dir: &Path) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    expand_home(dir, home.as_deref())
}

/// Prints `value` as one line of JSON.
pub(crate) fn print_json<T: Serialize>(value: &T) -> CliResult<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// `d` for people: `850 ms`, `12 s`, `3 m 4 s`, `2 h 5 m`, `3 d 1 h`.
pub(crate) fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms} ms"),
        1..60 => format!("{s} s"),
        60..3600 => format!("{} m {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} m", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(850), "850 ms");
        assert_eq!(human_duration(12_400), "12 s");
        assert_eq!(human_duration(184_000), "3 m 4 s");
        assert_eq!(human_duration(7_500_000), "2 h 5 m");
        assert_eq!(human_duration(262_800_000), "3 d 1 h");
    }
}
