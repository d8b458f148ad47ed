//! The control socket of a `knot run` node, spoken directly: one JSON
//! request line out, one JSON response line back (the format of
//! `knot`'s `control` module). Unix sockets are files, so the xtask reaches
//! every node from the root namespace, whatever network namespace it runs in.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::json;

/// Longer than the node's own exchange timeout (5 s), so the node answers
/// first.
const TIMEOUT: Duration = Duration::from_secs(7);

/// A node's answer and how long the exchange took.
#[derive(Debug)]
pub struct Answer {
    /// The response line, or why there is none: the node's `error`
    /// message, or the socket's.
    pub line: Result<String, String>,
    /// From connecting to the last byte.
    pub took: Duration,
}

impl Answer {
    /// The milliseconds the exchange took.
    pub fn ms(&self) -> f64 {
        self.took.as_secs_f64() * 1e3
    }
}

/// Sends `request` (a JSON object, no newline) to the node whose control
/// socket is `socket`.
pub fn ask(socket: &Path, request: &str) -> Answer {
    let start = Instant::now();
    let line = exchange(socket, request).and_then(|line| {
        if json::field(&line, "response") == Some("error") {
            Err(json::text(&line, "message").unwrap_or(line))
        } else {
            Ok(line)
        }
    });
    Answer {
        line,
        took: start.elapsed(),
    }
}

fn exchange(socket: &Path, request: &str) -> Result<String, String> {
    let io = |e: std::io::Error| format!("control socket {}: {e}", socket.display());
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(io)?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(io)?;
    match text.strip_suffix('\n') {
        Some(line) => Ok(line.to_owned()),
        None => Err(format!(
            "control socket {}: no whole line",
            socket.display()
        )),
    }
}

/// A request with string fields, as a JSON object.
pub fn request(name: &str, fields: &[(&str, &str)]) -> String {
    let mut out = format!("{{\"request\":{}", json::quote(name));
    for (key, value) in fields {
        out.push_str(&format!(",{}:{}", json::quote(key), json::quote(value)));
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_json_objects_tagged_by_name() {
        assert_eq!(request("metrics", &[]), r#"{"request":"metrics"}"#);
        assert_eq!(
            request("dht_put", &[("key", "k\"1"), ("value", "v")]),
            r#"{"request":"dht_put","key":"k\"1","value":"v"}"#
        );
    }

    #[test]
    fn a_missing_socket_is_an_answer_not_a_panic() {
        let answer = ask(Path::new("/nonexistent/knotwork/control.sock"), "{}");
        assert!(answer.line.unwrap_err().contains("control socket"));
    }
}
