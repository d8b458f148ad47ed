//! [`lock`]: a std mutex lock that carries on past poisoning.
//!
//! Every knotwork crate guards small state with std mutexes held for a few
//! statements, never across an await. A panic while one is held (a bug)
//! leaves the data as consistent as the statements before it made it, so
//! the crates take the guard anyway instead of propagating the poison.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning (see the module docs).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
