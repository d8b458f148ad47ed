//! [`KnotError`]: every error of the `knot` command, grouped by fault.

use crate::control::{EXCHANGE_TIMEOUT, MAX_LINE};

/// What went wrong, grouped by fault: the configuration (file, environment,
/// flags), the control socket, the bytes on it, the node's answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum KnotError {
    // --- The configuration ----------------------------------------------------
    /// The file is not TOML, or a key is unknown or has the wrong type; the
    /// message names the key.
    #[error("{0}")]
    Syntax(String),
    /// A `KNOT_*` environment variable that matches no field.
    #[error("unknown variable {0} (`knot config env` lists them)")]
    UnknownVariable(String),
    /// A value that does not parse or is out of range.
    #[error("{field}: {reason} (got {value:?})")]
    BadValue {
        /// The field (`max_inbound`, `listen[1]`, `ping.timeout_ms`) or
        /// variable (`KNOT_MAX_INBOUND`).
        field: String,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    // --- The control socket ---------------------------------------------------
    /// No node answers at the socket (none running with this data directory).
    #[error("no node running: cannot reach {path}: {source}")]
    NotRunning {
        /// The socket path.
        path: String,
        /// Why connecting failed.
        source: std::io::Error,
    },
    /// A node already serves the socket.
    #[error("a node already runs with control socket {0}")]
    InUse(String),
    /// Creating the directory or socket, reading or writing failed.
    #[error("control socket i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The exchange took longer than [`EXCHANGE_TIMEOUT`].
    #[error("control exchange timed out after {EXCHANGE_TIMEOUT:?}")]
    Timeout,

    // --- The bytes on the control socket --------------------------------------
    /// A line longer than [`MAX_LINE`].
    #[error("control line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// The other side closed before sending a whole line.
    #[error("control connection closed before a whole line")]
    Truncated,
    /// A line that is not a valid message.
    #[error("malformed control message: {0}")]
    Malformed(String),

    // --- The node's answer ----------------------------------------------------
    /// The node answered with an error.
    #[error("node refused the request: {0}")]
    Refused(String),
}
