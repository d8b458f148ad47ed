//! [`Link`]: one end of a BLE byte stream, sans-IO.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::BleError;
use crate::frame::{Fragmenter, Reassembler, Record};

/// Settings of a [`Link`]. Both ends must use the same `max_message`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkConfig {
    /// ATT MTU (23..=517); each fragment carries at most `mtu − 3` bytes.
    pub mtu: u16,
    /// Longest message either end sends or accepts.
    pub max_message: u32,
    /// Bytes of received data this end buffers before the application reads
    /// them: the credit granted to the peer. At least `max_message`.
    pub window: u32,
}

/// Default longest message: 16 KiB.
pub const DEFAULT_MAX_MESSAGE: u32 = 16 * 1024;
/// Default receive window: 64 KiB.
pub const DEFAULT_WINDOW: u32 = 64 * 1024;

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            mtu: crate::frame::MIN_MTU,
            max_message: DEFAULT_MAX_MESSAGE,
            window: DEFAULT_WINDOW,
        }
    }
}

impl LinkConfig {
    /// The default config with ATT MTU `mtu`.
    pub fn with_mtu(mtu: u16) -> Self {
        Self {
            mtu,
            ..Self::default()
        }
    }
}

/// One end of a BLE connection: messages in and out, fragments in and out,
/// credit-based flow control in between. No I/O, no clock.
///
/// # Polling contract
/// - Inputs: [`handle_fragment`](Self::handle_fragment) with each received
///   write or notification value; [`send`](Self::send) with each outgoing
///   message (at most [`send_capacity`](Self::send_capacity) bytes);
///   [`release`](Self::release) when the application has consumed received
///   bytes; [`close`](Self::close) at the end.
/// - Outputs: [`poll_message`](Self::poll_message) for received messages;
///   [`poll_fragment`](Self::poll_fragment) for the next value to write or
///   notify. Call it after every input until it returns `None`.
///
/// # Flow control
/// Each end grants the other credit in bytes of message data, starting with
/// its whole `window` (the first fragment a new link emits). A writer never
/// sends beyond its credit; a peer that does is cut off with
/// [`BleError::CreditViolation`]. Consumed bytes are granted back in batches
/// of a quarter window so credit records stay rare.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    tx: Fragmenter,
    rx: Reassembler,
    /// Data bytes the peer allows us to send.
    send_credit: u32,
    /// Consumed bytes not yet granted back.
    pending_grant: u32,
    received: VecDeque<Bytes>,
    closed: bool,
}

impl Link {
    /// A new link; it queues the initial credit grant.
    pub fn new(config: LinkConfig) -> Result<Self, BleError> {
        if config.max_message == 0 {
            return Err(BleError::InvalidConfig("max_message must be at least 1"));
        }
        if config.window < config.max_message {
            return Err(BleError::InvalidConfig(
                "window must be at least max_message",
            ));
        }
        let mut tx = Fragmenter::new(config.mtu)?;
        let mut rx = Reassembler::new(config.max_message);
        tx.push_credit(config.window);
        rx.grant(config.window);
        Ok(Self {
            config,
            tx,
            rx,
            send_credit: 0,
            pending_grant: 0,
            received: VecDeque::new(),
            closed: false,
        })
    }

    /// The config in use (with the current MTU).
    pub fn config(&self) -> LinkConfig {
        self.config
    }

    /// Changes the ATT MTU (after an MTU exchange).
    pub fn set_mtu(&mut self, mtu: u16) -> Result<(), BleError> {
        self.tx.set_mtu(mtu)?;
        self.config.mtu = mtu;
        Ok(())
    }

    /// Feeds one received fragment. A peer error is sticky: the connection
    /// must be dropped.
    pub fn handle_fragment(&mut self, fragment: &[u8]) -> Result<(), BleError> {
        let send_credit = &mut self.send_credit;
        let received = &mut self.received;
        self.rx.push(fragment, |record| {
            match record {
                Record::Data(msg) => received.push_back(msg),
                Record::Credit(n) => {
                    *send_credit = send_credit.checked_add(n).ok_or(BleError::CreditOverflow)?;
                }
                Record::Close => {}
            }
            Ok(())
        })
    }

    /// The longest message [`send`](Self::send) accepts now (0 when out of
    /// credit or closed).
    pub fn send_capacity(&self) -> usize {
        if self.closed {
            return 0;
        }
        self.send_credit.min(self.config.max_message) as usize
    }

    /// Queues a message (1..=`send_capacity()` bytes).
    pub fn send(&mut self, msg: Bytes) -> Result<(), BleError> {
        if self.closed {
            return Err(BleError::Closed);
        }
        let len = msg.len();
        let Some(len32) = u32::try_from(len)
            .ok()
            .filter(|&l| l <= self.config.max_message)
        else {
            return Err(BleError::SendTooLarge {
                len,
                max: self.config.max_message,
            });
        };
        if len32 == 0 {
            return Err(BleError::EmptyMessage);
        }
        if len32 > self.send_credit {
            return Err(BleError::NoCredit {
                len,
                available: self.send_credit,
            });
        }
        self.send_credit -= len32;
        self.tx.push_data(msg);
        Ok(())
    }

    /// Closes our sending side; the peer reads end-of-stream after the data
    /// already queued.
    pub fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.tx.push_close();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The next received message.
    pub fn poll_message(&mut self) -> Option<Bytes> {
        self.received.pop_front()
    }

    /// Whether the peer closed its side and every message was polled.
    pub fn is_finished(&self) -> bool {
        self.rx.is_closed() && self.received.is_empty()
    }

    /// The application consumed `n` received bytes: grant them back to the
    /// peer (batched to a quarter window).
    pub fn release(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.pending_grant = self.pending_grant.saturating_add(n);
        if self.pending_grant >= (self.config.window / 4).max(1) && !self.rx.is_closed() {
            self.tx.push_credit(self.pending_grant);
            self.rx.grant(self.pending_grant);
            self.pending_grant = 0;
        }
    }

    /// The next fragment to write or notify, at most `mtu − 3` bytes.
    pub fn poll_fragment(&mut self) -> Option<Bytes> {
        self.tx.poll_fragment()
    }

    /// Whether fragments are waiting in [`poll_fragment`](Self::poll_fragment).
    pub fn wants_write(&self) -> bool {
        self.tx.queued() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moves every fragment from `a` to `b`; returns how many bytes moved.
    fn pump(a: &mut Link, b: &mut Link) -> Result<usize, BleError> {
        let mut n = 0;
        while let Some(f) = a.poll_fragment() {
            assert!(f.len() <= usize::from(a.config().mtu - 3));
            n += f.len();
            b.handle_fragment(&f)?;
        }
        Ok(n)
    }

    fn pair(cfg: LinkConfig) -> (Link, Link) {
        let mut a = Link::new(cfg).unwrap();
        let mut b = Link::new(cfg).unwrap();
        pump(&mut a, &mut b).unwrap();
        pump(&mut b, &mut a).unwrap();
        (a, b)
    }

    #[test]
    fn initial_credit_is_window() {
        let cfg = LinkConfig {
            mtu: 23,
            max_message: 100,
            window: 300,
        };
        let (a, b) = pair(cfg);
        assert_eq!(a.send_capacity(), 100);
        assert_eq!(a.send_credit, 300);
        assert_eq!(b.send_credit, 300);
    }

    #[test]
    fn writer_stops_at_credit_and_resumes_after_release() {
        let cfg = LinkConfig {
            mtu: 23,
            max_message: 100,
            window: 200,
        };
        let (mut a, mut b) = pair(cfg);
        a.send(Bytes::from(vec![1; 100])).unwrap();
        a.send(Bytes::from(vec![2; 100])).unwrap();
        assert_eq!(a.send_capacity(), 0);
        assert_eq!(
            a.send(Bytes::from_static(b"x")),
            Err(BleError::NoCredit {
                len: 1,
                available: 0
            })
        );
        pump(&mut a, &mut b).unwrap();
        let m = b.poll_message().unwrap();
        assert_eq!(m.len(), 100);
        b.release(m.len());
        pump(&mut b, &mut a).unwrap();
        assert_eq!(a.send_capacity(), 100);
    }

    #[test]
    fn peer_exceeding_credit_is_cut_off() {
        let cfg = LinkConfig {
            mtu: 23,
            max_message: 100,
            window: 100,
        };
        let (mut a, mut b) = pair(cfg);
        // A writer that ignores its credit: forge the records directly.
        a.send(Bytes::from(vec![1; 100])).unwrap();
        a.tx.push_data(Bytes::from(vec![2; 10]));
        let err = pump(&mut a, &mut b).unwrap_err();
        assert_eq!(
            err,
            BleError::CreditViolation {
                len: 10,
                available: 0
            }
        );
        assert!(err.is_peer_fault());
        // Sticky.
        assert_eq!(b.handle_fragment(&[2]), Err(err));
    }

    #[test]
    fn credit_overflow_is_cut_off() {
        let (mut a, _b) = pair(LinkConfig::default());
        let mut forged = Fragmenter::new(23).unwrap();
        forged.push_credit(u32::MAX);
        let f = forged.poll_fragment().unwrap();
        assert_eq!(a.handle_fragment(&f), Err(BleError::CreditOverflow));
    }

    #[test]
    fn local_misuse_errors() {
        let (mut a, _b) = pair(LinkConfig::default());
        assert_eq!(a.send(Bytes::new()), Err(BleError::EmptyMessage));
        assert_eq!(
            a.send(Bytes::from(vec![0; 20_000])),
            Err(BleError::SendTooLarge {
                len: 20_000,
                max: DEFAULT_MAX_MESSAGE
            })
        );
        a.close();
        assert_eq!(a.send(Bytes::from_static(b"x")), Err(BleError::Closed));
        assert_eq!(a.send_capacity(), 0);
        assert_eq!(a.set_mtu(600), Err(BleError::InvalidMtu(600)));
        let bad = LinkConfig {
            mtu: 23,
            max_message: 10,
            window: 5,
        };
        assert!(matches!(Link::new(bad), Err(BleError::InvalidConfig(_))));
    }

    #[test]
    fn close_gives_end_of_stream_after_data() {
        let (mut a, mut b) = pair(LinkConfig::default());
        a.send(Bytes::from_static(b"bye")).unwrap();
        a.close();
        pump(&mut a, &mut b).unwrap();
        assert!(!b.is_finished());
        assert_eq!(b.poll_message().unwrap(), Bytes::from_static(b"bye"));
        assert!(b.is_finished());
    }

    #[test]
    fn framing_overhead_per_message() {
        // Header = tag + varint length: 2 bytes under 128, 3 under 16 KiB.
        for (len, overhead) in [
            (1usize, 2usize),
            (127, 2),
            (128, 3),
            (16_383, 3),
            (16_384, 4),
        ] {
            let (mut a, _b) = pair(LinkConfig::default());
            for _ in 0..3 {
                a.send(Bytes::from(vec![0; len])).unwrap();
            }
            let mut wire = 0;
            while let Some(f) = a.poll_fragment() {
                wire += f.len();
            }
            assert_eq!(wire, 3 * (len + overhead), "len {len}");
            assert_eq!(crate::frame::header_len(len as u32), overhead);
        }
    }

    #[test]
    fn mtu_change_recuts_fragments() {
        let (mut a, mut b) = pair(LinkConfig::default());
        a.set_mtu(185).unwrap();
        a.send(Bytes::from(vec![9; 1000])).unwrap();
        let first = a.poll_fragment().unwrap();
        assert_eq!(first.len(), 182);
        b.handle_fragment(&first).unwrap();
        pump(&mut a, &mut b).unwrap();
        assert_eq!(b.poll_message().unwrap().len(), 1000);
    }
}
