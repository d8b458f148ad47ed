//! A small command-line reader: `--flag`, `--name VALUE` / `--name=VALUE`,
//! positionals, and everything after `--` kept verbatim.

use std::str::FromStr;

use crate::error::{Error, Result};

/// The arguments of one xtask command, consumed as the command reads them.
#[derive(Debug)]
pub struct Flags {
    args: Vec<String>,
    /// Whatever followed a bare `--`, passed through untouched.
    trailing: Vec<String>,
}

impl Flags {
    /// Reads `args` (the words after the command name).
    pub fn new(args: impl IntoIterator<Item = String>) -> Self {
        let mut args: Vec<String> = args.into_iter().collect();
        let trailing = match args.iter().position(|a| a == "--") {
            Some(i) => {
                let rest = args.split_off(i);
                rest.into_iter().skip(1).collect()
            }
            None => Vec::new(),
        };
        Self { args, trailing }
    }

    /// Removes `--name` if present and says whether it was.
    pub fn flag(&mut self, name: &str) -> bool {
        let before = self.args.len();
        self.args.retain(|a| a != name);
        self.args.len() != before
    }

    /// Removes `--name VALUE` or `--name=VALUE` and parses the value.
    pub fn value<T: FromStr>(&mut self, name: &str) -> Result<Option<T>> {
        let prefix = format!("{name}=");
        let Some(i) = self
            .args
            .iter()
            .position(|a| a == name || a.starts_with(&prefix))
        else {
            return Ok(None);
        };
        let word = self.args.remove(i);
        let text = match word.strip_prefix(&prefix) {
            Some(text) => text.to_owned(),
            None if i < self.args.len() => self.args.remove(i),
            None => return Err(Error::failed(format!("{name} needs a value"))),
        };
        text.parse()
            .map(Some)
            .map_err(|_| Error::failed(format!("{name}: `{text}` is not a valid value")))
    }

    /// Removes and returns the next word that is not an option.
    pub fn positional(&mut self) -> Option<String> {
        let i = self.args.iter().position(|a| !a.starts_with('-'))?;
        Some(self.args.remove(i))
    }

    /// Fails on any word nobody read; returns the words after `--`.
    pub fn finish(self) -> Result<Vec<String>> {
        match self.args.first() {
            Some(extra) => Err(Error::failed(format!(
                "unexpected argument `{extra}` (see `cargo xtask help`)"
            ))),
            None => Ok(self.trailing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(words: &str) -> Flags {
        Flags::new(words.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn reads_flags_values_positionals_and_trailing() {
        let mut f = flags("wire_decode --seconds=5 --quick --pin 0 -- --exact x");
        assert!(f.flag("--quick"));
        assert!(!f.flag("--all"));
        assert_eq!(f.value::<u64>("--seconds").unwrap(), Some(5));
        assert_eq!(f.value::<u32>("--pin").unwrap(), Some(0));
        assert_eq!(f.positional().as_deref(), Some("wire_decode"));
        assert_eq!(f.finish().unwrap(), ["--exact", "x"]);
    }

    #[test]
    fn rejects_leftovers_missing_and_bad_values() {
        assert!(flags("--bogus").finish().is_err());
        assert!(flags("--seconds").value::<u64>("--seconds").is_err());
        assert!(flags("--seconds ten").value::<u64>("--seconds").is_err());
    }
}
