//! What the testnet asks of its nodes, and what they answered.
//!
//! Each operation is one control exchange ([`control::ask`]) run on a
//! small thread [`Pool`] so a slow DHT query never holds up the schedule;
//! its [`Op`] comes back with the time it started (seconds from the start
//! of the measurement), how long it took and whether it did what it
//! should: a put acknowledged by a peer, a get that returns the value put,
//! a find that returns the peer asked for, a publish sent to a peer, a
//! task `done` with the right FNV-1a hash. Metrics scrapes come back as
//! [`Scrape`]s. Choices are drawn from [`Rng`], seeded by `--seed`.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use super::control::{self, request};
use super::prom::Scrape;
use crate::json;

/// splitmix64: small, seedable, good enough to pick nodes and keys.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        match u64::try_from(n) {
            Ok(0) | Err(_) => 0,
            Ok(n) => usize::try_from(self.next_u64() % n).unwrap_or(0),
        }
    }

    /// A random element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }
}

/// The kinds of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `dht_put` of a record.
    Put,
    /// `dht_get` of a record.
    Get,
    /// `dht_find` of a live peer.
    Find,
    /// `gossip_publish` on the testnet topic.
    Publish,
    /// `task_submit` of an `fnv` task.
    Task,
}

/// What an operation was about, beyond its kind.
#[derive(Debug, Clone)]
pub enum Detail {
    /// Nothing more.
    None,
    /// Record number `key`; for a get, the record's age and whether it was
    /// part of the final sweep.
    Record {
        /// The record's number.
        key: usize,
        /// Seconds since its put was acknowledged (gets).
        age: f64,
        /// Whether the get belongs to the sweep at the end.
        sweep: bool,
    },
    /// A published gossip message.
    Published {
        /// Its id: the publisher...
        origin: String,
        /// ...and sequence number.
        seq: u64,
        /// When it was published (µs since the UNIX epoch).
        at_us: u64,
    },
}

/// One finished operation.
#[derive(Debug, Clone)]
pub struct Op {
    /// What it was.
    pub kind: Kind,
    /// When it started, in seconds from the start of the measurement.
    pub at: f64,
    /// Whether it did what it should.
    pub ok: bool,
    /// How long it took, in milliseconds.
    pub ms: f64,
    /// The node's or the socket's error text, when there was one.
    pub error: Option<String>,
    /// The rest.
    pub detail: Detail,
}

/// What a job returns.
#[derive(Debug)]
pub enum Done {
    /// An operation.
    Op(Op),
    /// A metrics scrape of slot `slot`'s node number `node`.
    Scrape(Scrape),
}

type Job = Box<dyn FnOnce() -> Done + Send>;

/// Threads that run control exchanges; results come back in order of
/// completion.
pub struct Pool {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
    /// Jobs submitted and not yet collected.
    pending: usize,
}

impl Pool {
    /// `threads` workers.
    pub fn new(threads: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (report, done) = mpsc::channel();
        let queue = Arc::new(Mutex::new(queue));
        let threads = (0..threads)
            .map(|_| {
                let queue = queue.clone();
                let report = report.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(job) = job else { return };
                        if report.send(job()).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Self {
            jobs: Some(jobs),
            done,
            threads,
            pending: 0,
        }
    }

    /// Queues `job`.
    pub fn submit(&mut self, job: impl FnOnce() -> Done + Send + 'static) {
        if let Some(jobs) = &self.jobs
            && jobs.send(Box::new(job)).is_ok()
        {
            self.pending += 1;
        }
    }

    /// The results finished so far.
    pub fn collect(&mut self) -> Vec<Done> {
        let done: Vec<Done> = self.done.try_iter().collect();
        self.pending = self.pending.saturating_sub(done.len());
        done
    }

    /// Jobs not collected yet.
    pub fn pending(&self) -> usize {
        self.pending
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The key of record number `key`.
pub fn record_key(key: usize) -> String {
    format!("testnet-record-{key}")
}

/// The value of record number `key`.
fn record_value(key: usize) -> String {
    format!("value of record {key}")
}

/// FNV-1a (64 bit) of `bytes`, as the `fnv` task computes it.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Seconds from `start` to now.
pub fn secs_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

fn op(kind: Kind, at: f64, answer: &control::Answer, ok: bool, detail: Detail) -> Done {
    Done::Op(Op {
        kind,
        at,
        ok,
        ms: answer.ms(),
        error: answer.line.as_ref().err().cloned(),
        detail,
    })
}

/// Puts record `key` through the node at `socket`.
pub fn put(socket: PathBuf, key: usize, start: Instant) -> impl FnOnce() -> Done + Send {
    move || {
        let at = secs_since(start);
        let req = request(
            "dht_put",
            &[("key", &record_key(key)), ("value", &record_value(key))],
        );
        let answer = control::ask(&socket, &req);
        let ok = answer
            .line
            .as_ref()
            .is_ok_and(|l| json::num(l, "stored") > 0.0);
        let detail = Detail::Record {
            key,
            age: 0.0,
            sweep: false,
        };
        op(Kind::Put, at, &answer, ok, detail)
    }
}

/// Gets record `key` (acknowledged at `put_at`) through the node at `socket`.
pub fn get(
    socket: PathBuf,
    key: usize,
    put_at: f64,
    sweep: bool,
    start: Instant,
) -> impl FnOnce() -> Done + Send {
    move || {
        let at = secs_since(start);
        let answer = control::ask(&socket, &request("dht_get", &[("key", &record_key(key))]));
        let value = answer
            .line
            .as_ref()
            .ok()
            .and_then(|l| json::field(l, "record"))
            .and_then(|r| json::text(r, "value"));
        let ok = value.as_deref() == Some(record_value(key).as_str());
        let detail = Detail::Record {
            key,
            age: at - put_at,
            sweep,
        };
        op(Kind::Get, at, &answer, ok, detail)
    }
}

/// Looks `peer` up through the node at `socket`.
pub fn find(socket: PathBuf, peer: String, start: Instant) -> impl FnOnce() -> Done + Send {
    move || {
        let at = secs_since(start);
        let answer = control::ask(&socket, &request("dht_find", &[("peer", &peer)]));
        let ok = answer
            .line
            .as_ref()
            .ok()
            .and_then(|l| json::field(l, "peer"))
            .and_then(|p| json::field(p, "peer_id"))
            == Some(peer.as_str());
        op(Kind::Find, at, &answer, ok, Detail::None)
    }
}

/// Publishes message number `n` on `topic` through the node at `socket`.
pub fn publish(
    socket: PathBuf,
    topic: &'static str,
    n: usize,
    start: Instant,
) -> impl FnOnce() -> Done + Send {
    move || {
        let at = secs_since(start);
        let data = format!("message {n}");
        let req = request("gossip_publish", &[("topic", topic), ("data", &data)]);
        let answer = control::ask(&socket, &req);
        let line = answer.line.as_ref().ok();
        let sent = line.map_or(0.0, |l| json::num(l, "sent"));
        let detail = Detail::Published {
            origin: line
                .and_then(|l| json::field(l, "origin"))
                .unwrap_or_default()
                .to_owned(),
            seq: line.and_then(|l| json::uint(l, "seq")).unwrap_or(0),
            at_us: line.and_then(|l| json::uint(l, "at_us")).unwrap_or(0),
        };
        op(Kind::Publish, at, &answer, sent > 0.0, detail)
    }
}

/// Runs an `fnv` task of input `input` through the node at `socket`.
pub fn task(socket: PathBuf, input: String, start: Instant) -> impl FnOnce() -> Done + Send {
    move || {
        let at = secs_since(start);
        let req = request("task_submit", &[("kind", "fnv"), ("input", &input)]);
        let answer = control::ask(&socket, &req);
        let want: String = fnv(input.as_bytes())
            .to_le_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let ok = answer.line.as_ref().is_ok_and(|l| {
            json::field(l, "outcome") == Some("done") && json::field(l, "output") == Some(&want)
        });
        op(Kind::Task, at, &answer, ok, Detail::None)
    }
}

/// Scrapes the metrics of slot `slot`'s node `node` at `socket`.
pub fn scrape(
    socket: PathBuf,
    slot: usize,
    node: usize,
    start: Instant,
) -> impl FnOnce() -> Done + Send {
    move || {
        let at = secs_since(start);
        let answer = control::ask(&socket, &request("metrics", &[]));
        let text = answer
            .line
            .as_ref()
            .ok()
            .and_then(|l| json::text(l, "text"))
            .unwrap_or_default();
        Done::Scrape(Scrape::parse(&text, at, slot, node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_seeded_and_spreads() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(8).next_u64(), xs[0]);
        let mut r = Rng::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[r.below(10)] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn fnv_matches_the_knot_task() {
        // FNV-1a 64 test vectors.
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
