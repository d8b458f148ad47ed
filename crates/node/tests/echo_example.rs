//! Runs `examples/echo.rs` (the ≤ 30-line custom protocol) as a test.

#[path = "../examples/echo.rs"]
mod echo;

#[test]
fn echo_example_runs() {
    if let Err(e) = echo::main() {
        panic!("echo example failed: {e}");
    }
}
