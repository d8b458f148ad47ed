//! Tests of single modules that need nothing private: the DHT-free
//! sans-IO pieces and the channel over in-memory streams.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod config;
mod discovery;
mod ping;
mod version;
