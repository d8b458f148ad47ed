//! knotwork-testkit: test beds shared by knotwork's crates (dev-dependency
//! only).
//!
//! # Layout
//! - [`transport`]: the conformance suite for any
//!   [`Transport`](knotwork_core::Transport), and the
//!   [`transport_conformance!`] macro that makes one test per check.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod transport;
