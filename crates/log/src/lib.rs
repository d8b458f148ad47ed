//! knotwork-log: logging setup for knotwork programs. One call,
//! [`init_logging`], installs a
//! `tracing` subscriber from a [`LogConfig`]: a level filter (`EnvFilter`
//! directives such as `info` or `knotwork_node=debug,warn`), `text` or
//! `json` lines, to stderr or to a file rotated every minute, hour or day.
//! `KNOT_LOG_LEVEL`, `KNOT_LOG_FORMAT`, `KNOT_LOG_FILE`, `KNOT_LOG_ROTATION`
//! and `KNOT_LOG_MAX_FILES` override the config ([`LogConfig::with_env`]).
//!
//! JSON lines carry the event's spans: `knotwork-node` runs each channel's reader
//! and writer tasks (on a multi-stream transport: the first stream's, and
//! the readers of the others) in a `channel` span with the fields `peer`
//! (the PeerId), `channel` (a number unique in the process) and
//! `direction` (`inbound` or `outbound`), so every line they log names its
//! channel.
//!
//! ```
//! use knotwork_log::{LogConfig, LogFormat};
//!
//! let config = LogConfig {
//!     level: "knotwork_node=debug,info".into(),
//!     format: LogFormat::Json,
//!     ..LogConfig::default()
//! };
//! // In main: keep the guard until the program ends (it flushes a file).
//! let _guard = knotwork_log::init_logging(&config.with_env()?)?;
//! tracing::info!("started");
//! # Ok::<(), knotwork_log::LogError>(())
//! ```

use std::io::IsTerminal;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing_appender::rolling::{self, Rotation};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the event's spans.
    Json,
}

/// When a log file starts a new one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogRotation {
    /// One file, never rotated.
    #[default]
    Never,
    /// A file per minute.
    Minutely,
    /// A file per hour.
    Hourly,
    /// A file per day.
    Daily,
}

/// Where and how to log; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `EnvFilter` directives (`info`, `knotwork_node=debug,warn`, …).
    pub level: String,
    /// Text or JSON lines.
    pub format: LogFormat,
    /// Log to this file instead of stderr; with rotation, a date suffix is
    /// added to its name.
    pub file: Option<PathBuf>,
    /// When the file is rotated.
    pub rotation: LogRotation,
    /// Rotated files kept at most (`None`: all).
    pub max_files: Option<usize>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
            file: None,
            rotation: LogRotation::Never,
            max_files: None,
        }
    }
}

fn bad(var: &str, value: &str) -> LogError {
    LogError::Setup(format!("{var}={value:?} is not valid"))
}

impl LogConfig {
    /// This config with the `KNOT_LOG_*` environment variables applied.
    pub fn with_env(self) -> Result<Self, LogError> {
        self.with_vars(|name| std::env::var(name).ok())
    }

    /// This config with the `KNOT_LOG_*` variables that `var` returns
    /// applied (an empty `KNOT_LOG_FILE` means stderr).
    pub fn with_vars(mut self, var: impl Fn(&str) -> Option<String>) -> Result<Self, LogError> {
        if let Some(level) = var("KNOT_LOG_LEVEL") {
            self.level = level;
        }
        if let Some(format) = var("KNOT_LOG_FORMAT") {
            self.format = match format.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(bad("KNOT_LOG_FORMAT", &format)),
            };
        }
        if let Some(file) = var("KNOT_LOG_FILE") {
            self.file = (!file.is_empty()).then(|| PathBuf::from(file));
        }
        if let Some(rotation) = var("KNOT_LOG_ROTATION") {
            self.rotation = match rotation.as_str() {
                "never" => LogRotation::Never,
                "minutely" => LogRotation::Minutely,
                "hourly" => LogRotation::Hourly,
                "daily" => LogRotation::Daily,
                _ => return Err(bad("KNOT_LOG_ROTATION", &rotation)),
            };
        }
        if let Some(max) = var("KNOT_LOG_MAX_FILES") {
            self.max_files = Some(max.parse().map_err(|_| bad("KNOT_LOG_MAX_FILES", &max))?);
        }
        Ok(self)
    }
}

/// Keeps a log file's background writer; dropping it flushes the file.
#[derive(Debug)]
#[must_use = "dropping the guard stops writing to the log file"]
pub struct LogGuard {
    _worker: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// The subscriber [`init_logging`] installs, writing to `writer` (tests and
/// programs with a writer of their own).
pub fn subscriber(
    config: &LogConfig,
    writer: BoxMakeWriter,
) -> Result<impl tracing::Subscriber + Send + Sync + 'static, LogError> {
    build(config, writer, false)
}

/// [`subscriber`], with colours in text lines if `ansi`.
fn build(
    config: &LogConfig,
    writer: BoxMakeWriter,
    ansi: bool,
) -> Result<impl tracing::Subscriber + Send + Sync + 'static, LogError> {
    let filter = EnvFilter::try_new(&config.level)
        .map_err(|e| LogError::Setup(format!("level {:?}: {e}", config.level)))?;
    let layer = match config.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(writer)
            .boxed(),
    };
    Ok(tracing_subscriber::registry().with(layer.with_filter(filter)))
}

/// Installs the global `tracing` subscriber `config` describes; see the
/// module docs. Fails if the level does not parse, the file cannot be
/// opened, or a subscriber is installed already.
pub fn init_logging(config: &LogConfig) -> Result<LogGuard, LogError> {
    let (writer, worker) = match &config.file {
        None => (BoxMakeWriter::new(std::io::stderr), None),
        Some(path) => {
            let name = path
                .file_name()
                .ok_or_else(|| LogError::Setup(format!("{} names no file", path.display())))?;
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            let rotation = match config.rotation {
                LogRotation::Never => Rotation::NEVER,
                LogRotation::Minutely => Rotation::MINUTELY,
                LogRotation::Hourly => Rotation::HOURLY,
                LogRotation::Daily => Rotation::DAILY,
            };
            let mut builder = rolling::Builder::new()
                .rotation(rotation)
                .filename_prefix(name.to_string_lossy());
            if let Some(max) = config.max_files {
                builder = builder.max_log_files(max);
            }
            let appender = builder
                .build(dir.unwrap_or_else(|| std::path::Path::new(".")))
                .map_err(|e| LogError::Setup(format!("{}: {e}", path.display())))?;
            let (writer, worker) = tracing_appender::non_blocking(appender);
            (BoxMakeWriter::new(writer), Some(worker))
        }
    };
    let ansi = worker.is_none() && std::io::stderr().is_terminal();
    tracing::subscriber::set_global_default(build(config, writer, ansi)?)
        .map_err(|e| LogError::Setup(e.to_string()))?;
    Ok(LogGuard { _worker: worker })
}

/// The logging setup failed: a bad level, format or file, or a subscriber
/// installed already.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// What failed, with the setting or variable it came from.
    #[error("logging setup: {0}")]
    Setup(String),
}

/// Compiles and runs the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn env_overrides_the_config_and_bad_values_are_named() {
        let config = LogConfig {
            file: Some("/tmp/x.log".into()),
            ..LogConfig::default()
        };
        let got = config
            .clone()
            .with_vars(vars(&[
                ("KNOT_LOG_LEVEL", "debug"),
                ("KNOT_LOG_FORMAT", "json"),
                ("KNOT_LOG_FILE", ""),
                ("KNOT_LOG_ROTATION", "hourly"),
                ("KNOT_LOG_MAX_FILES", "3"),
            ]))
            .unwrap();
        assert_eq!(
            got,
            LogConfig {
                level: "debug".into(),
                format: LogFormat::Json,
                file: None,
                rotation: LogRotation::Hourly,
                max_files: Some(3),
            }
        );
        assert_eq!(config.clone().with_vars(vars(&[])).unwrap(), config);
        for (var, value) in [
            ("KNOT_LOG_FORMAT", "xml"),
            ("KNOT_LOG_ROTATION", "weekly"),
            ("KNOT_LOG_MAX_FILES", "many"),
        ] {
            let err = LogConfig::default().with_vars(vars(&[(var, value)]));
            assert!(
                matches!(err, Err(LogError::Setup(m)) if m.contains(var)),
                "{var}"
            );
        }
        let err = subscriber(
            &LogConfig {
                level: "=[".into(),
                ..LogConfig::default()
            },
            BoxMakeWriter::new(std::io::sink),
        );
        assert!(matches!(err, Err(LogError::Setup(_))));
    }
}
