//! The send side of a channel: frames encoded straight into one byte
//! buffer that the writer takes whole.
//!
//! A sender serializes its message into the shared buffer under a short
//! lock ([`FrameCodec::encode_message`]: header and payload written in
//! place, no payload buffer of its own, no frame queued and copied later).
//! The writer swaps that buffer for its own empty one and writes what it
//! took in one go, so the secure stream below seals the batch in as few
//! AEAD calls as it can. Senders wait while [`Limits::frames`] frames or
//! [`Limits::bytes`] bytes are waiting (a frame is let in while there is
//! less, so one larger frame always fits); the writer holds up to as much
//! again while it writes.
//!
//! Wake-ups are as in [`crate::queue`]: the one writer waits only after it
//! found the buffer empty, leaving its waker in an [`AtomicWaker`] and
//! looking once more, and the frame that ends an empty buffer wakes it;
//! senders waiting for room register before they look, and a take from a
//! full buffer wakes them all.
//!
//! A sender writes its frame itself, without waking the writer, when the
//! outbox is idle: no frame waiting, no batch being written (by the writer
//! or another sender), and the channel's reader has read a batch since the
//! last such write ([`Outbox::rearm`]). That last rule keeps a stream of
//! sends batched (the first goes at once, the rest wait for the writer,
//! one write for all of them), while each side of a request/response
//! exchange, which reads between its writes, writes at once: a round trip
//! without a task switch on either end. The sender's write does not wait
//! ([`StreamHandle::write_now`]): what the stream does not take at once,
//! and a flush it could not finish, go to the writer ahead of anything
//! queued since. The outbox's `busy` flag is the pen: whoever holds it (the
//! writer with a batch it took, or a sender with its frame) is the only one
//! writing to the stream, so frames go out in the order they were queued.
//!
//! Outbound frames are counted for the metrics here, under the lock (and
//! their type registered by name, see `Tally::add_typed`), so the writer
//! never has to parse what it sends.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::Poll;

use bytes::{Buf, BytesMut};
use futures::task::AtomicWaker;
use knotwork_core::sync::Flag;
use knotwork_crypto_handshake::BUSY_BURST;
use knotwork_wire::{FrameCodec, FrameKind, HEADER_LEN, Message, WireError};
use tokio::sync::Notify;

use crate::buffers::StreamHandle;
use crate::metrics::{Direction, Metrics, Tally};

/// When senders wait.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Frames waiting, at most.
    pub(crate) frames: usize,
    /// Bytes waiting before senders wait (a frame is let in below this).
    pub(crate) bytes: usize,
}

/// Why a frame was not queued.
#[derive(Debug)]
pub(crate) enum PushError {
    /// The limits are reached; try again when the writer took the bytes.
    Full,
    /// The writer is gone.
    Closed,
    /// The message was refused; nothing was queued.
    Encode(WireError),
}

struct State {
    buf: BytesMut,
    frames: usize,
    tally: Tally,
    closed: bool,
    /// A batch is being written (taken by the writer, or a sender's own
    /// frame): nobody else writes to the stream or takes until it is done.
    busy: bool,
    /// A sender's own write left bytes (at the front of `buf`) or a flush
    /// for the writer.
    owed: bool,
    /// The writer is draining: senders no longer write themselves.
    draining: bool,
}

/// What [`Outbox::try_push`] does after queuing.
enum Then<'a> {
    /// Nothing: the writer is awake, or will be woken by whoever holds the
    /// pen.
    Nothing,
    /// Wakes the writer.
    Wake,
    /// Writes these bytes itself (holding the pen).
    Write(&'a dyn StreamHandle, BytesMut),
}

/// Encoded frames waiting for the writer; see the module docs.
pub(crate) struct Outbox {
    state: Mutex<State>,
    codec: FrameCodec,
    limits: Limits,
    /// The writer, while it waits for frames.
    ready: AtomicWaker,
    /// Wakes every waiting sender.
    room: Notify,
    /// The stream, once the channel started.
    stream: OnceLock<Arc<dyn StreamHandle>>,
    /// Whether senders may write to `stream` themselves (not where the
    /// writer packs blocks, nor on a lane: their own writers).
    direct: bool,
    /// Whether the next frame into an idle outbox may be written by its
    /// sender: cleared by such a write, set again by the reader after each
    /// batch it reads (see the module docs).
    armed: AtomicBool,
    metrics: Option<Metrics>,
}

impl Outbox {
    /// An empty outbox (no buffer allocated) encoding with `codec`; with
    /// `direct`, senders write to the stream themselves when it is idle
    /// (once [`Outbox::attach`] gave it the stream).
    pub(crate) fn new(
        codec: FrameCodec,
        limits: Limits,
        metrics: Option<Metrics>,
        direct: bool,
    ) -> Self {
        Self {
            state: Mutex::new(State {
                buf: BytesMut::new(),
                frames: 0,
                tally: Tally::new(metrics.clone(), Direction::Out),
                closed: false,
                busy: false,
                owed: false,
                draining: false,
            }),
            codec,
            limits: Limits {
                frames: limits.frames.max(1),
                bytes: limits.bytes.max(1),
            },
            ready: AtomicWaker::new(),
            room: Notify::new(),
            stream: OnceLock::new(),
            direct,
            armed: AtomicBool::new(true),
            metrics,
        }
    }

    /// Gives the outbox the channel's stream (once, as the channel starts).
    pub(crate) fn attach(&self, stream: Arc<dyn StreamHandle>) {
        let _ = self.stream.set(stream);
    }

    /// The channel's stream, once started.
    pub(crate) fn stream(&self) -> Option<&Arc<dyn StreamHandle>> {
        self.stream.get()
    }

    /// The reader read a batch: the next frame into an idle outbox may be
    /// written by its sender again.
    pub(crate) fn rearm(&self) {
        self.armed.store(true, Ordering::Relaxed);
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, State> {
        knotwork_core::lock(&self.state)
    }

    /// Queues a frame of `kind` carrying `msg`, if there is room.
    pub(crate) fn try_push<M: Message>(
        &self,
        kind: FrameKind,
        request_id: u32,
        msg: &M,
    ) -> Result<(), PushError> {
        let then = {
            let mut state = self.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            if state.frames >= self.limits.frames || state.buf.len() >= self.limits.bytes {
                return Err(PushError::Full);
            }
            let state = &mut *state;
            // One allocation for a small frame, not one for the header and
            // another for the payload.
            let room = HEADER_LEN + M::MAX_BYTES.min(BUSY_BURST);
            if state.buf.capacity() == 0 {
                // (Fresh, not `reserve`: see `FrameReader::poll_fill`.)
                state.buf = BytesMut::with_capacity(room);
            } else {
                state.buf.reserve(room);
            }
            let len = self
                .codec
                .encode_message(kind, request_id, msg, &mut state.buf)
                .map_err(PushError::Encode)?;
            state.tally.add_typed::<M>(len);
            state.frames += 1;
            if state.frames > 1 {
                Then::Nothing
            } else {
                self.claim(state)
            }
        };
        match then {
            Then::Nothing => {}
            Then::Wake => self.ready.wake(),
            Then::Write(stream, bytes) => self.write_own(stream, bytes),
        }
        Ok(())
    }

    /// For the one frame now waiting: the pen, to write it at once, if the
    /// outbox is idle and armed (see the module docs); else whether to wake
    /// the writer.
    fn claim(&self, state: &mut State) -> Then<'_> {
        if state.busy {
            // Whoever holds the pen wakes the writer when done.
            return Then::Nothing;
        }
        let stream = match self.stream.get() {
            Some(stream) if self.direct && !state.owed && !state.draining => stream,
            _ => return Then::Wake,
        };
        if !self.armed.swap(false, Ordering::Relaxed) {
            return Then::Wake;
        }
        state.busy = true;
        state.frames = 0;
        state.tally.flush();
        Then::Write(stream.as_ref(), std::mem::take(&mut state.buf))
    }

    /// Writes `bytes` (a sender's frame) holding the pen; hands what did not
    /// go out at once to the writer, ahead of what was queued meanwhile.
    fn write_own(&self, stream: &dyn StreamHandle, mut bytes: BytesMut) {
        let wrote = stream.write_now(&bytes);
        if let Some(m) = &self.metrics {
            m.bytes_out(wrote.taken);
        }
        let wake = {
            let mut state = self.lock();
            state.busy = false;
            if !wrote.done {
                bytes.advance(wrote.taken.min(bytes.len()));
                if !bytes.is_empty() {
                    bytes.extend_from_slice(&state.buf);
                    state.buf = bytes;
                }
                state.owed = true;
            }
            state.frames > 0 || state.owed || state.draining
        };
        if wake {
            self.ready.wake();
        }
    }

    /// Queues a frame of `kind` carrying `msg`, waiting for room; never
    /// [`PushError::Full`].
    pub(crate) async fn push<M: Message>(
        &self,
        kind: FrameKind,
        request_id: u32,
        msg: &M,
    ) -> Result<(), PushError> {
        loop {
            let room = self.room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            match self.try_push(kind, request_id, msg) {
                Err(PushError::Full) => room.await,
                done => return done,
            }
        }
    }

    /// Waits until frames are waiting or `stop` is raised (returns at
    /// once if either is so). Whoever raises `stop` calls
    /// [`Outbox::wake_writer`] after it: the writer waits on one
    /// notification, not two (each would make its idle future larger).
    pub(crate) fn ready<'a>(&'a self, stop: &'a Flag) -> impl Future<Output = ()> + 'a {
        let go = move || {
            let state = self.lock();
            (!state.busy && (state.frames > 0 || state.owed)) || stop.is_raised()
        };
        std::future::poll_fn(move |cx| {
            if go() {
                return Poll::Ready(());
            }
            // Registered before the second look: a push in between wakes us.
            self.ready.register(cx.waker());
            if go() { Poll::Ready(()) } else { Poll::Pending }
        })
    }

    /// Wakes the writer waiting in [`Outbox::ready`] to look at its `stop`.
    pub(crate) fn wake_writer(&self) {
        self.ready.wake();
    }

    /// Swaps the waiting bytes into `buf` (which must be empty: its
    /// capacity goes to the senders), adds their frames to the metrics and
    /// takes the pen until [`Outbox::finished`]. Returns whether there was
    /// anything to write (bytes, or a flush a sender left); false while
    /// someone else holds the pen.
    pub(crate) fn take(&self, buf: &mut BytesMut) -> bool {
        let was_full = {
            let mut state = self.lock();
            if state.busy || (state.frames == 0 && !state.owed) {
                return false;
            }
            let was_full =
                state.frames >= self.limits.frames || state.buf.len() >= self.limits.bytes;
            std::mem::swap(&mut state.buf, buf);
            state.frames = 0;
            state.owed = false;
            state.busy = true;
            state.tally.flush();
            was_full
        };
        if was_full {
            self.room.notify_waiters();
        }
        true
    }

    /// The writer wrote what it took (and flushed): gives the pen back.
    /// After a `quiet` (small) batch, if no frame is waiting, the senders'
    /// buffer is freed too; returns whether it was.
    pub(crate) fn finished(&self, quiet: bool) -> bool {
        let mut state = self.lock();
        state.busy = false;
        if !quiet || state.frames > 0 || state.owed {
            return false;
        }
        state.buf = BytesMut::new();
        true
    }

    /// The writer starts draining: senders stop writing themselves; waits
    /// for one that is writing to finish.
    pub(crate) fn drain(&self) -> impl Future<Output = ()> + '_ {
        self.lock().draining = true;
        std::future::poll_fn(move |cx| {
            if !self.lock().busy {
                return Poll::Ready(());
            }
            // Registered before the second look: `write_own` wakes us.
            self.ready.register(cx.waker());
            if self.lock().busy {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
    }

    /// The writer is gone: senders get [`PushError::Closed`] from now on,
    /// and the bytes still waiting are dropped.
    pub(crate) fn close(&self) {
        {
            let mut state = self.lock();
            state.closed = true;
            state.buf = BytesMut::new();
            state.frames = 0;
            state.owed = false;
        }
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_wire::decode;
    use serde::{Deserialize, Serialize};
    use std::sync::Mutex;
    use tokio_util::codec::Decoder;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Note(String);

    impl Message for Note {
        const NAME: &'static str = "test/note/1";
        const MAX_BYTES: usize = 64;
    }

    fn outbox(frames: usize, bytes: usize) -> Outbox {
        Outbox::new(FrameCodec::new(), Limits { frames, bytes }, None, false)
    }

    fn note(s: &str) -> Note {
        Note(s.into())
    }

    /// The frames in `buf`, decoded.
    fn notes(buf: &mut BytesMut) -> Vec<(FrameKind, u32, Note)> {
        let mut codec = FrameCodec::new();
        let mut out = Vec::new();
        while let Some(f) = codec.decode(buf).unwrap() {
            out.push((f.kind, f.request_id, decode::<Note>(&f.payload).unwrap()));
        }
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn the_writer_takes_every_frame_in_order_in_one_buffer() {
        let out = outbox(8, 1024);
        out.try_push(FrameKind::Message, 0, &note("a")).unwrap();
        out.try_push(FrameKind::Request, 5, &note("b")).unwrap();
        out.try_push(FrameKind::Response, 9, &note("c")).unwrap();
        let mut buf = BytesMut::new();
        assert!(out.take(&mut buf));
        assert_eq!(
            notes(&mut buf),
            [
                (FrameKind::Message, 0, note("a")),
                (FrameKind::Request, 5, note("b")),
                (FrameKind::Response, 9, note("c")),
            ]
        );
        assert!(!out.take(&mut buf));
        assert!(out.finished(true));
    }

    #[test]
    fn senders_wait_at_the_frame_limit_and_at_the_byte_limit() {
        let by_frames = outbox(2, 1024);
        by_frames
            .try_push(FrameKind::Message, 0, &note("a"))
            .unwrap();
        by_frames
            .try_push(FrameKind::Message, 0, &note("b"))
            .unwrap();
        assert!(matches!(
            by_frames.try_push(FrameKind::Message, 0, &note("c")),
            Err(PushError::Full)
        ));
        // One frame larger than the byte limit still goes, alone.
        let by_bytes = outbox(8, 10);
        by_bytes
            .try_push(FrameKind::Message, 0, &note("a longer note"))
            .unwrap();
        assert!(matches!(
            by_bytes.try_push(FrameKind::Message, 0, &note("d")),
            Err(PushError::Full)
        ));
        let mut buf = BytesMut::new();
        assert!(by_bytes.take(&mut buf));
        by_bytes
            .try_push(FrameKind::Message, 0, &note("d"))
            .unwrap();
        // Taken while the writer still writes the first batch: not yet.
        assert!(!by_bytes.take(&mut BytesMut::new()));
        assert!(!by_bytes.finished(true), "a frame waits");
        assert!(by_bytes.take(&mut BytesMut::new()));
    }

    #[test]
    fn a_refused_message_queues_nothing() {
        let out = outbox(8, 1024);
        out.try_push(FrameKind::Message, 0, &note("a")).unwrap();
        let err = out
            .try_push(FrameKind::Message, 0, &Note("x".repeat(100)))
            .unwrap_err();
        assert!(matches!(
            err,
            PushError::Encode(WireError::MessageTooLarge { len: 101, .. })
        ));
        let err = out.try_push(FrameKind::Message, 7, &note("b")).unwrap_err();
        assert!(matches!(
            err,
            PushError::Encode(WireError::RequestIdOnMessage(7))
        ));
        let mut buf = BytesMut::new();
        assert!(out.take(&mut buf));
        assert_eq!(notes(&mut buf), [(FrameKind::Message, 0, note("a"))]);
    }

    #[test]
    fn closing_refuses_senders_and_drops_what_waits() {
        let out = outbox(8, 1024);
        out.try_push(FrameKind::Message, 0, &note("a")).unwrap();
        out.close();
        assert!(out.finished(true));
        assert!(matches!(
            out.try_push(FrameKind::Message, 0, &note("b")),
            Err(PushError::Closed)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_sender_goes_on_when_the_writer_takes_and_the_writer_wakes_on_a_push() {
        let out = std::sync::Arc::new(outbox(1, 1024));
        out.try_push(FrameKind::Message, 0, &note("a")).unwrap();
        let sender = tokio::spawn({
            let out = out.clone();
            async move { out.push(FrameKind::Message, 0, &note("b")).await }
        });
        tokio::task::yield_now().await;
        assert!(!sender.is_finished());
        let mut buf = BytesMut::new();
        assert!(out.take(&mut buf));
        sender.await.unwrap().unwrap();
        out.finished(false);
        let stop = Flag::default();
        out.ready(&stop).await;
        let mut second = BytesMut::new();
        assert!(out.take(&mut second));
        out.finished(false);
        assert_eq!(notes(&mut buf), [(FrameKind::Message, 0, note("a"))]);
        assert_eq!(notes(&mut second), [(FrameKind::Message, 0, note("b"))]);

        let writer = tokio::spawn({
            let out = out.clone();
            async move { out.ready(&Flag::default()).await }
        });
        tokio::task::yield_now().await;
        assert!(!writer.is_finished());
        out.try_push(FrameKind::Message, 0, &note("c")).unwrap();
        writer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_writer_wakes_when_its_stop_is_raised() {
        let out = std::sync::Arc::new(outbox(1, 1024));
        let stop = std::sync::Arc::new(Flag::default());
        let writer = tokio::spawn({
            let (out, stop) = (out.clone(), stop.clone());
            async move { out.ready(&stop).await }
        });
        tokio::task::yield_now().await;
        assert!(!writer.is_finished());
        stop.raise();
        out.wake_writer();
        writer.await.unwrap();
        // Raised, it returns at once.
        out.ready(&stop).await;
    }

    /// A stream that takes at most `room` bytes per write and flushes
    /// only when told it may.
    #[derive(Default)]
    struct Wire {
        got: Mutex<Vec<u8>>,
        room: std::sync::atomic::AtomicUsize,
        flushes: AtomicBool,
    }

    impl StreamHandle for Wire {
        fn capacity(&self) -> usize {
            0
        }

        fn write_now(&self, bytes: &[u8]) -> crate::buffers::WriteNow {
            let taken = bytes.len().min(self.room.load(Ordering::SeqCst));
            self.got.lock().unwrap().extend_from_slice(&bytes[..taken]);
            let done = taken == bytes.len() && self.flushes.load(Ordering::SeqCst);
            crate::buffers::WriteNow { taken, done }
        }
    }

    fn direct(wire: &Arc<Wire>) -> Outbox {
        let out = Outbox::new(
            FrameCodec::new(),
            Limits {
                frames: 8,
                bytes: 1024,
            },
            None,
            true,
        );
        out.attach(wire.clone());
        out
    }

    fn open_wire() -> Arc<Wire> {
        let wire = Arc::new(Wire::default());
        wire.room.store(usize::MAX, Ordering::SeqCst);
        wire.flushes.store(true, Ordering::SeqCst);
        wire
    }

    #[test]
    fn a_frame_into_an_idle_outbox_is_written_by_its_sender_then_sends_batch_until_a_read() {
        let wire = open_wire();
        let out = direct(&wire);
        out.try_push(FrameKind::Request, 1, &note("a")).unwrap();
        // Written at once: nothing for the writer.
        let mut buf = BytesMut::new();
        assert!(!out.take(&mut buf));
        assert_eq!(
            notes(&mut BytesMut::from(&wire.got.lock().unwrap()[..])),
            [(FrameKind::Request, 1, note("a"))]
        );
        // A stream of sends: the rest wait for the writer, in one batch.
        out.try_push(FrameKind::Message, 0, &note("b")).unwrap();
        out.try_push(FrameKind::Message, 0, &note("c")).unwrap();
        assert!(out.take(&mut buf));
        assert_eq!(
            notes(&mut buf),
            [
                (FrameKind::Message, 0, note("b")),
                (FrameKind::Message, 0, note("c"))
            ]
        );
        out.finished(true);
        // The reader read a batch: the next one goes at once again.
        wire.got.lock().unwrap().clear();
        out.rearm();
        out.try_push(FrameKind::Response, 2, &note("d")).unwrap();
        assert!(!out.take(&mut BytesMut::new()));
        assert_eq!(
            notes(&mut BytesMut::from(&wire.got.lock().unwrap()[..])),
            [(FrameKind::Response, 2, note("d"))]
        );
    }

    #[test]
    fn what_the_stream_does_not_take_goes_to_the_writer_ahead_of_later_frames() {
        let wire = open_wire();
        wire.room.store(5, Ordering::SeqCst);
        let out = direct(&wire);
        out.try_push(FrameKind::Message, 0, &note("first")).unwrap();
        // Armed again (a read), but a write is owed: the writer goes first.
        out.rearm();
        out.try_push(FrameKind::Message, 0, &note("second"))
            .unwrap();
        let mut buf = BytesMut::new();
        assert!(out.take(&mut buf));
        let mut all = BytesMut::from(&wire.got.lock().unwrap()[..]);
        all.extend_from_slice(&buf);
        assert_eq!(
            notes(&mut all),
            [
                (FrameKind::Message, 0, note("first")),
                (FrameKind::Message, 0, note("second")),
            ]
        );
        out.finished(true);
    }

    #[test]
    fn an_unfinished_flush_is_owed_to_the_writer() {
        let wire = open_wire();
        wire.flushes.store(false, Ordering::SeqCst);
        let out = direct(&wire);
        out.try_push(FrameKind::Message, 0, &note("a")).unwrap();
        // All taken, not flushed: the writer has an empty batch to flush.
        let mut buf = BytesMut::new();
        assert!(out.take(&mut buf));
        assert!(buf.is_empty());
        out.finished(true);
        assert!(!out.take(&mut buf));
    }

    #[tokio::test]
    async fn draining_stops_senders_writing_themselves() {
        let wire = open_wire();
        let out = direct(&wire);
        out.drain().await;
        out.try_push(FrameKind::Message, 0, &note("bye")).unwrap();
        assert!(wire.got.lock().unwrap().is_empty());
        let mut buf = BytesMut::new();
        assert!(out.take(&mut buf));
        assert_eq!(notes(&mut buf), [(FrameKind::Message, 0, note("bye"))]);
    }
}
