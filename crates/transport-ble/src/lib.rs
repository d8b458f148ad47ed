//! knotwork-transport-ble: the Bluetooth LE transport and BLE discovery.
//!
//! **Not implemented yet.** This crate is a placeholder in the workspace
//! layout; it exports nothing. The work is tracked in issue 7.
