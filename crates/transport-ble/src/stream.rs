//! [`BleStream`]: a [`Link`] driven by a tokio task, seen as a byte stream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::{BleError, Link, LinkConfig};

#[derive(Debug)]
struct Shared {
    link: Link,
    /// The rest of the message the reader is in.
    reading: Bytes,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    error: Option<BleError>,
    /// The carrier of fragments ended (disconnect).
    carrier_gone: bool,
    /// The [`BleStream`] was dropped.
    dropped: bool,
}

impl Shared {
    fn wake(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

/// A reliable byte stream over a BLE connection (or any carrier of
/// fragments): tokio `AsyncRead` + `AsyncWrite`, so a knotwork
/// [`RawConnection`](knotwork_core::RawConnection).
///
/// Writes block (return `Pending`) while the peer has granted no credit;
/// reads grant consumed bytes back. Dropping the stream closes the link after
/// the queued data went out. A peer that breaks the link protocol ends the
/// stream with an `InvalidData` error wrapping the [`BleError`].
#[derive(Debug)]
pub struct BleStream {
    shared: Arc<Mutex<Shared>>,
    driver: Arc<Notify>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic while holding the lock cannot leave the link half-updated in a
    // way that matters more than the panic itself; keep going.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

impl BleStream {
    /// Runs a new [`Link`] over a fragment carrier: `inbound` yields every
    /// received value (notification or write), `write` sends one fragment
    /// (write-without-response or notification) and resolves when it is
    /// handed to the stack. Spawns the driver task on the current tokio
    /// runtime; it ends when the stream is dropped, the carrier ends or the
    /// peer breaks the protocol.
    pub fn spawn<I, W, F>(config: LinkConfig, inbound: I, write: W) -> Result<Self, BleError>
    where
        I: Stream<Item = Bytes> + Send + Unpin + 'static,
        W: FnMut(Bytes) -> F + Send + 'static,
        F: Future<Output = Result<(), BleError>> + Send + 'static,
    {
        let (stream, driver) = Self::new(config, inbound, write)?;
        tokio::spawn(driver);
        Ok(stream)
    }

    /// Like [`spawn`](Self::spawn) but returns the driver future for the
    /// caller to run (and to follow with its own cleanup).
    pub fn new<I, W, F>(
        config: LinkConfig,
        inbound: I,
        write: W,
    ) -> Result<(Self, impl Future<Output = ()> + Send + 'static), BleError>
    where
        I: Stream<Item = Bytes> + Send + Unpin + 'static,
        W: FnMut(Bytes) -> F + Send + 'static,
        F: Future<Output = Result<(), BleError>> + Send + 'static,
    {
        let shared = Arc::new(Mutex::new(Shared {
            link: Link::new(config)?,
            reading: Bytes::new(),
            read_waker: None,
            write_waker: None,
            error: None,
            carrier_gone: false,
            dropped: false,
        }));
        let driver = Arc::new(Notify::new());
        let task = drive(shared.clone(), driver.clone(), inbound, write);
        Ok((Self { shared, driver }, task))
    }
}

/// What woke the driver.
enum Event {
    /// The fragment in flight was handed to the carrier (or failed).
    Wrote(Result<(), BleError>),
    /// The carrier delivered a fragment, or ended (`None`).
    Received(Option<Bytes>),
    /// The stream queued data, read data (credit to grant) or was dropped.
    Notified,
}

/// Moves fragments between the carrier and the link until one side ends.
///
/// One fragment is in flight at a time (writes stay in order); received
/// fragments are taken meanwhile, so a carrier whose two directions share a
/// buffer cannot stall both ends.
async fn drive<I, W, F>(
    shared: Arc<Mutex<Shared>>,
    notify: Arc<Notify>,
    mut inbound: I,
    mut write: W,
) where
    I: Stream<Item = Bytes> + Unpin,
    W: FnMut(Bytes) -> F,
    F: Future<Output = Result<(), BleError>>,
{
    let mut in_flight: Option<Pin<Box<F>>> = None;
    loop {
        if in_flight.is_none() {
            let (next, dropped) = {
                let mut s = lock(&shared);
                (s.link.poll_fragment(), s.dropped)
            };
            match next {
                Some(fragment) => in_flight = Some(Box::pin(write(fragment))),
                None if dropped => return,
                None => {}
            }
        }
        let notified = notify.notified();
        tokio::pin!(notified);
        let event = std::future::poll_fn(|cx| {
            if let Some(w) = in_flight.as_mut()
                && let Poll::Ready(r) = w.as_mut().poll(cx)
            {
                return Poll::Ready(Event::Wrote(r));
            }
            if let Poll::Ready(f) = inbound.poll_next_unpin(cx) {
                return Poll::Ready(Event::Received(f));
            }
            if notified.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Notified);
            }
            Poll::Pending
        })
        .await;
        let mut s = lock(&shared);
        match event {
            Event::Wrote(Ok(())) => in_flight = None,
            Event::Wrote(Err(e)) => {
                s.error = Some(e);
                s.wake();
                return;
            }
            Event::Received(Some(f)) => {
                let result = s.link.handle_fragment(&f);
                if let Err(e) = result {
                    s.error = Some(e);
                    s.wake();
                    return;
                }
                s.wake();
            }
            Event::Received(None) => {
                s.carrier_gone = true;
                s.wake();
                return;
            }
            Event::Notified => {}
        }
    }
}

impl AsyncRead for BleStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut s = lock(&self.shared);
        loop {
            if !s.reading.is_empty() {
                let n = s.reading.len().min(buf.remaining());
                buf.put_slice(s.reading.get(..n).unwrap_or_default());
                s.reading.advance(n);
                s.link.release(n);
                let wake = s.link.wants_write();
                drop(s);
                if wake {
                    self.driver.notify_one();
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(msg) = s.link.poll_message() {
                s.reading = msg;
                continue;
            }
            if let Some(e) = &s.error {
                return Poll::Ready(Err(e.clone().into()));
            }
            if s.link.is_finished() || s.carrier_gone {
                return Poll::Ready(Ok(()));
            }
            s.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
    }
}

impl AsyncWrite for BleStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = lock(&self.shared);
        if let Some(e) = &s.error {
            return Poll::Ready(Err(e.clone().into()));
        }
        if s.carrier_gone {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if s.link.is_closed() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = s.link.send_capacity().min(buf.len());
        if n == 0 {
            // Out of credit: the driver wakes us when a grant arrives.
            s.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
        if let Err(e) = s.link.send(chunk) {
            return Poll::Ready(Err(e.into()));
        }
        drop(s);
        self.driver.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are already queued on the link; the driver sends them
        // as fast as the carrier takes them.
        let s = lock(&self.shared);
        match &s.error {
            Some(e) => Poll::Ready(Err(e.clone().into())),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.shared).link.close();
        self.driver.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Drop for BleStream {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        s.link.close();
        s.dropped = true;
        drop(s);
        self.driver.notify_one();
    }
}
