//! Both BLE roles through a real D-Bus daemon against python-dbusmock's
//! `bluez5` template extended by `tests/fixture/knotwork_bluez.py`.
//!
//! Run it with `cargo xtask interop ble` (or `cargo test -p
//! knotwork-transport-ble --test interop_ble -- --include-ignored`). Like an
//! `#[ignore]`d test it does nothing in a plain `cargo test`. When asked to
//! run, it starts a private bus daemon and the mocked BlueZ, adds adapter
//! `hci0`, runs the scenarios in a child process of itself whose
//! `DBUS_SYSTEM_BUS_ADDRESS` points at that bus (btleplug and libdbus read
//! it from the environment), and kills both processes by PID afterwards,
//! also when a scenario fails.
//!
//! In both scenarios the fixture bridges the GATT characteristics to a TCP
//! socket (length-prefixed fragments) where the test runs the other knotwork
//! endpoint, so a full Noise handshake and a ping cross the D-Bus GATT path.
//! The node scenarios (`interop_ble/nodes.rs`) splice the fixture's two
//! roles instead: two nodes talk to each other through the mock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(all(feature = "central", feature = "peripheral", target_os = "linux"))]
#[path = "interop_ble/scenarios.rs"]
mod scenarios;

#[cfg(all(feature = "central", feature = "peripheral", target_os = "linux"))]
#[path = "interop_ble/nodes.rs"]
mod nodes;

#[cfg(all(feature = "central", feature = "peripheral", target_os = "linux"))]
fn main() {
    if !list_requested() {
        scenarios::main();
    }
}

#[cfg(not(all(feature = "central", feature = "peripheral", target_os = "linux")))]
fn main() {
    if list_requested() {
        return;
    }
    println!("interop_ble: needs features central + peripheral on Linux; nothing to run");
}

/// Answers a test runner's `--list` (cargo-nextest's protocol): this binary
/// holds one test, `interop_ble`, ignored unless asked for like `#[ignore]`.
fn list_requested() -> bool {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--list") {
        return false;
    }
    if args.iter().any(|a| a == "--ignored") {
        println!("interop_ble: test");
    }
    true
}
