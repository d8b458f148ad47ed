//! Runs the examples as tests: `examples/echo.rs` (a custom protocol in
//! under 30 lines) and `examples/presence.rs` (a service on the same
//! extension API the NAT traversal crate uses).

#[path = "../examples/echo.rs"]
mod echo;

#[path = "../examples/presence.rs"]
mod presence;

#[test]
fn echo_example_runs() {
    if let Err(e) = echo::main() {
        panic!("echo example failed: {e}");
    }
}

#[test]
fn presence_example_runs() {
    if let Err(e) = presence::main() {
        panic!("presence example failed: {e}");
    }
}
