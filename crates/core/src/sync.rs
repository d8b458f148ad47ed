//! Small synchronisation helpers every knotwork crate uses: [`lock`], a
//! std mutex lock that carries on past poisoning, and (feature `tokio`)
//! [`Flag`], a one-time event that tasks can wait for.
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

/// A switch that is raised once and can be waited for: what a
/// `CancellationToken` does for "this has ended" signals, stored inline (a
/// token is a pointer to a node of its own on the heap, 112 bytes; a node's
/// channel has three of these).
#[cfg(feature = "tokio")]
#[derive(Debug, Default)]
pub struct Flag {
    raised: std::sync::atomic::AtomicBool,
    waiters: tokio::sync::Notify,
}

#[cfg(feature = "tokio")]
impl Flag {
    /// Raises the flag and wakes every waiter.
    pub fn raise(&self) {
        self.raised
            .store(true, std::sync::atomic::Ordering::Release);
        self.waiters.notify_waiters();
    }

    /// Whether the flag is raised.
    pub fn is_raised(&self) -> bool {
        self.raised.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until the flag is raised (returns at once if it is).
    pub async fn raised(&self) {
        loop {
            // Registered before looking, so a raise in between is not missed.
            let wake = self.waiters.notified();
            let mut wake = std::pin::pin!(wake);
            wake.as_mut().enable();
            if self.is_raised() {
                return;
            }
            wake.await;
        }
    }
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use std::sync::Arc;

    use super::Flag;

    #[tokio::test]
    async fn a_flag_wakes_its_waiters_once_raised_and_stays_raised() {
        let flag = Arc::new(Flag::default());
        let waiter = tokio::spawn({
            let flag = flag.clone();
            async move { flag.raised().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished() && !flag.is_raised());
        flag.raise();
        waiter.await.unwrap();
        // Raised before the wait: returns at once.
        flag.raised().await;
        assert!(flag.is_raised());
    }
}
