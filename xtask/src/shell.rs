//! Running commands: echoed first, stdio inherited, failures as [`Error`]s.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use crate::error::{Error, Result};

/// The command line as a person would type it (explicit env vars first).
pub fn display(cmd: &Command) -> String {
    let mut words: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), quote(v?))))
        .collect();
    words.extend(
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|word| {
                // Show `cargo`, not the full path cargo handed us in $CARGO.
                if Path::new(word).file_stem() == Some("cargo".as_ref()) {
                    "cargo".to_owned()
                } else {
                    quote(word)
                }
            }),
    );
    words.join(" ")
}

/// A word as a shell would need it typed.
fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    if word.is_empty() || word.contains([' ', '*', '"', '$']) {
        format!("'{word}'")
    } else {
        word.into_owned()
    }
}

/// Runs `cmd` with inherited stdout/stderr (stdin closed: CI has none) and
/// fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    println!("$ {}", display(cmd));
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .map_err(|e| spawn_error(cmd, &e))?;
    check(cmd, status)
}

/// Like [`run`], but also hands each line the command writes to stderr to
/// `watch` after echoing it (libFuzzer reports its statistics there).
pub fn run_watching_stderr(cmd: &mut Command, mut watch: impl FnMut(&str)) -> Result<()> {
    println!("$ {}", display(cmd));
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(cmd, &e))?;
    if let Some(stderr) = child.stderr.take() {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        let mut echo = std::io::stderr();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    // Echo failures (a closed terminal) must not stop the child.
                    let _ = echo.write_all(&line);
                    watch(String::from_utf8_lossy(&line).trim_end());
                }
            }
        }
    }
    let status = child.wait().map_err(|e| spawn_error(cmd, &e))?;
    check(cmd, status)
}

/// Runs `cmd` quietly and returns its stdout; stderr is shown only on failure.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(cmd, &e))?;
    if !out.status.success() {
        let _ = std::io::stderr().write_all(&out.stderr);
    }
    check(cmd, out.status)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `cmd` can be started and exits 0, all output discarded. For
/// probing tools (`cargo fuzz --version`).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn check(cmd: &Command, status: ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        Err(Error::failed(format!(
            "`{}` failed ({status})",
            display(cmd)
        )))
    }
}

fn spawn_error(cmd: &Command, e: &std::io::Error) -> Error {
    Error::unavailable(format!(
        "could not run `{}`: {e}",
        cmd.get_program().to_string_lossy()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_globs_and_shows_env() {
        let mut cmd = Command::new("taskset");
        cmd.env("RUSTDOCFLAGS", "-D warnings").args([
            "-c",
            "0",
            "/root/.cargo/bin/cargo",
            "bench",
            "--bench",
            "*",
        ]);
        assert_eq!(
            display(&cmd),
            "RUSTDOCFLAGS='-D warnings' taskset -c 0 cargo bench --bench '*'"
        );
    }

    #[cfg(unix)]
    #[test]
    fn failure_names_the_command() {
        let err = run(Command::new("false").arg("x")).unwrap_err();
        assert!(err.to_string().starts_with("`false x` failed"), "{err}");
    }

    #[test]
    fn missing_program_is_unavailable() {
        let err = run(&mut Command::new("knotwork-no-such-program")).unwrap_err();
        assert_eq!(err.kind(), crate::error::Kind::Unavailable);
    }

    #[cfg(unix)]
    #[test]
    fn stderr_lines_reach_the_watcher() {
        let mut seen = Vec::new();
        run_watching_stderr(
            Command::new("sh").args(["-c", "echo one >&2; echo two >&2"]),
            |line| seen.push(line.to_owned()),
        )
        .unwrap();
        assert_eq!(seen, ["one", "two"]);
    }
}
