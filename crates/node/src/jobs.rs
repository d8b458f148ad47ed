//! [`Jobs`]: a set of owned tasks that are aborted together and reaped as
//! they finish.
//!
//! A channel runs its protocols and their per-request work as jobs, and the
//! node runs its services' node-wide work the same way. A plain
//! [`JoinSet`] keeps the result of every finished task until it is joined,
//! so a set that is only ever spawned into grows by one entry per task for
//! as long as it lives: a peer sending requests that each spawn a job would
//! grow the channel's set without bound. Here every spawn first reaps what
//! has finished, so a set holds its running jobs plus at most the ones that
//! finished since the last spawn.

use std::future::Future;
use std::sync::Mutex;

use knotwork_core::lock;
use tokio::task::JoinSet;

/// Owned tasks: see the module docs. Closing the set aborts every job.
#[derive(Debug)]
pub struct Jobs {
    set: Mutex<Option<JoinSet<()>>>,
}

impl Default for Jobs {
    fn default() -> Self {
        Self {
            set: Mutex::new(Some(JoinSet::new())),
        }
    }
}

/// Drops the entries of finished tasks.
fn reap(set: &mut JoinSet<()>) {
    while set.try_join_next().is_some() {}
}

impl Jobs {
    /// Runs `job` until it ends or the set is closed. Returns `false`, and
    /// drops `job` unstarted, once the set is closed.
    pub fn spawn<F>(&self, job: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut set = lock(&self.set);
        let Some(set) = set.as_mut() else {
            return false;
        };
        reap(set);
        set.spawn(job);
        true
    }

    /// Jobs running now (finished ones reaped first).
    pub fn len(&self) -> usize {
        let mut set = lock(&self.set);
        set.as_mut().map_or(0, |set| {
            reap(set);
            set.len()
        })
    }

    /// Whether no job runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`Jobs::close`] was called.
    pub fn is_closed(&self) -> bool {
        lock(&self.set).is_none()
    }

    /// Aborts every job; later spawns do nothing.
    pub fn close(&self) {
        let set = lock(&self.set).take();
        drop(set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finished_jobs_are_reaped_on_the_next_spawn() {
        let jobs = Jobs::default();
        for _ in 0..1_000 {
            jobs.spawn(async {});
            tokio::task::yield_now().await;
        }
        // Without reaping the set would hold 1,000 finished entries.
        assert!(lock(&jobs.set).as_ref().unwrap().len() <= 2);
        assert!(jobs.len() <= 1);
    }

    #[tokio::test]
    async fn closing_aborts_running_jobs_and_refuses_new_ones() {
        let jobs = Jobs::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        jobs.spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        assert_eq!(jobs.len(), 1);
        jobs.close();
        // The aborted job drops its sender.
        assert!(rx.await.is_err());
        assert!(!jobs.spawn(async {}));
        assert!(jobs.is_closed() && jobs.is_empty());
    }
}
