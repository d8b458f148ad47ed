//! Where the two ends of a measurement run: [`Sides`] holds a runtime handle
//! for the server end and one for the client end.
//!
//! - [`Placement::Pinned`]: one current-thread runtime on a thread held to
//!   one CPU runs both ends (the headline: no cross-CPU wake-ups).
//! - [`Placement::Unpinned`]: each end has its own current-thread runtime
//!   on its own thread and the OS places them.
//!
//! [`Sides::multi_thread`] puts both ends on one multi-thread runtime whose
//! workers the OS places (the multi-core rows).
//!
//! [`Sides::split`] always gives each end its own thread (for the inbound
//! handshake rate, where the dialers must not eat the server's core): when
//! pinned, the server on the chosen CPU and the dialers on another one.

use std::future::Future;
use std::thread::JoinHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

use crate::sys;

/// How the ends of a measurement are placed on CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Both ends on one thread held to this CPU.
    Pinned(usize),
    /// Each end on its own thread, placed by the OS.
    Unpinned,
}

impl Placement {
    /// The label in tables, JSON and the chart.
    pub fn label(self) -> String {
        match self {
            Placement::Pinned(cpu) => format!("pinned (cpu {cpu})"),
            Placement::Unpinned => "unpinned".to_string(),
        }
    }

    /// The short key in JSON.
    pub fn key(self) -> &'static str {
        match self {
            Placement::Pinned(_) => "pinned",
            Placement::Unpinned => "unpinned",
        }
    }
}

/// A runtime driven by its own thread until dropped.
struct Driver {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Driver {
    /// A current-thread runtime (`workers` `None`; on `cpu` if given) or a
    /// multi-thread one of `workers` worker threads.
    fn start(name: &str, cpu: Option<usize>, workers: Option<usize>) -> Driver {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let worker_name = format!("{name}-worker");
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    sys::pin_current_thread(cpu).expect("pin thread");
                }
                let mut builder = match workers {
                    None => Builder::new_current_thread(),
                    Some(n) => {
                        let mut b = Builder::new_multi_thread();
                        b.worker_threads(n).thread_name(worker_name);
                        b
                    }
                };
                let rt = builder.enable_all().build().expect("runtime");
                ready_tx.send(rt.handle().clone()).expect("send handle");
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .expect("spawn runtime thread");
        let handle = ready_rx.recv().expect("runtime handle");
        Driver {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The runtimes of the two ends; see the module docs.
pub struct Sides {
    server: Handle,
    client: Handle,
    _drivers: Vec<Driver>,
}

impl Sides {
    /// The layout of `placement` for ordinary measurements.
    pub fn new(placement: Placement) -> Sides {
        match placement {
            Placement::Pinned(cpu) => {
                let one = Driver::start("perf-pinned", Some(cpu), None);
                Sides {
                    server: one.handle.clone(),
                    client: one.handle.clone(),
                    _drivers: vec![one],
                }
            }
            Placement::Unpinned => Sides::two(None, None),
        }
    }

    /// Both ends on one multi-thread runtime of `workers` worker threads,
    /// placed by the OS.
    pub fn multi_thread(workers: usize) -> Sides {
        let runtime = Driver::start("perf-multi", None, Some(workers));
        Sides {
            server: runtime.handle.clone(),
            client: runtime.handle.clone(),
            _drivers: vec![runtime],
        }
    }

    /// Each end on its own thread; when pinned, the client on another CPU.
    pub fn split(placement: Placement) -> Sides {
        match placement {
            Placement::Pinned(cpu) => {
                let other = (0..sys::cpus()).find(|&c| c != cpu);
                Sides::two(Some(cpu), other)
            }
            Placement::Unpinned => Sides::two(None, None),
        }
    }

    fn two(server_cpu: Option<usize>, client_cpu: Option<usize>) -> Sides {
        let server = Driver::start("perf-server", server_cpu, None);
        let client = Driver::start("perf-client", client_cpu, None);
        Sides {
            server: server.handle.clone(),
            client: client.handle.clone(),
            _drivers: vec![server, client],
        }
    }

    /// Runs `f` on the server end and waits for its result.
    pub fn server<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        wait(self.server.spawn(f))
    }

    /// Starts `f` on the server end; [`wait`] for it later.
    pub fn spawn_server<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.server.spawn(f)
    }

    /// Runs `f` on the client end and waits for its result.
    pub fn client<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        wait(self.client.spawn(f))
    }
}

/// Blocks the calling (idle, unpinned) thread until `task` ends.
pub fn wait<T>(task: tokio::task::JoinHandle<T>) -> T {
    futures::executor::block_on(task).expect("measurement task panicked")
}
