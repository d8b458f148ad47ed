//! The one error type of xtask: what went wrong, and the fix to name.

use std::fmt;

/// Whether a failure is the project's fault or a missing prerequisite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A check failed: a test, a lint, a crash found by the fuzzer.
    Failed,
    /// Something the command needs is not there (a tool that cannot be
    /// installed, a test target not written yet). `interop --allow-skip`
    /// turns this kind into a loud skip; everything else fails.
    Unavailable,
}

/// An xtask failure: a message, and when known the command that fixes it.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
    fix: Option<String>,
}

/// xtask's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A failed check.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Failed,
            message: message.into(),
            fix: None,
        }
    }

    /// A missing prerequisite.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Unavailable,
            message: message.into(),
            fix: None,
        }
    }

    /// Names the fix, unless a more precise one was already named.
    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        if self.fix.is_none() {
            self.fix = Some(fix.into());
        }
        self
    }

    /// Prefixes the message with where it happened.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fix_wins_and_context_prefixes() {
        let e = Error::failed("exit status 1")
            .with_fix("run `cargo fmt --all`")
            .with_fix("something vaguer")
            .context("fmt");
        assert_eq!(e.kind(), Kind::Failed);
        assert_eq!(
            e.to_string(),
            "fmt: exit status 1\n  fix: run `cargo fmt --all`"
        );
    }
}
