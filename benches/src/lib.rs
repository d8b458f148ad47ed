//! Benchmarks across knotwork crates.
