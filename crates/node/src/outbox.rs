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
//! Outbound frames are counted for the metrics here, under the lock (and
//! their type registered by name, see `Tally::add_typed`), so the writer
//! never has to parse what it sends.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;

use bytes::BytesMut;
use futures::task::AtomicWaker;
use knotwork_core::sync::Flag;
use knotwork_crypto_handshake::BUSY_BURST;
use knotwork_wire::{FrameCodec, FrameKind, HEADER_LEN, Message, WireError};
use tokio::sync::Notify;

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
}

impl Outbox {
    /// An empty outbox (no buffer allocated) encoding with `codec`.
    pub(crate) fn new(codec: FrameCodec, limits: Limits, metrics: Option<Metrics>) -> Self {
        Self {
            state: Mutex::new(State {
                buf: BytesMut::new(),
                frames: 0,
                tally: Tally::new(metrics, Direction::Out),
                closed: false,
            }),
            codec,
            limits: Limits {
                frames: limits.frames.max(1),
                bytes: limits.bytes.max(1),
            },
            ready: AtomicWaker::new(),
            room: Notify::new(),
        }
    }

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
        let was_empty = {
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
            state.buf.reserve(HEADER_LEN + M::MAX_BYTES.min(BUSY_BURST));
            let len = self
                .codec
                .encode_message(kind, request_id, msg, &mut state.buf)
                .map_err(PushError::Encode)?;
            state.tally.add_typed::<M>(len);
            state.frames += 1;
            state.frames == 1
        };
        if was_empty {
            self.ready.wake();
        }
        Ok(())
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
        let go = move || self.lock().frames > 0 || stop.is_raised();
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
    /// capacity goes to the senders) and adds their frames to the metrics.
    /// Returns whether there were any.
    pub(crate) fn take(&self, buf: &mut BytesMut) -> bool {
        let was_full = {
            let mut state = self.lock();
            if state.frames == 0 {
                return false;
            }
            let was_full =
                state.frames >= self.limits.frames || state.buf.len() >= self.limits.bytes;
            std::mem::swap(&mut state.buf, buf);
            state.frames = 0;
            state.tally.flush();
            was_full
        };
        if was_full {
            self.room.notify_waiters();
        }
        true
    }

    /// Whether no frame is waiting; if so, the senders' buffer is freed
    /// (the writer calls this after a small batch: the channel is quiet).
    pub(crate) fn release_if_empty(&self) -> bool {
        let mut state = self.lock();
        if state.frames > 0 {
            return false;
        }
        state.buf = BytesMut::new();
        true
    }

    /// The writer is gone: senders get [`PushError::Closed`] from now on,
    /// and the bytes still waiting are dropped.
    pub(crate) fn close(&self) {
        {
            let mut state = self.lock();
            state.closed = true;
            state.buf = BytesMut::new();
            state.frames = 0;
        }
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knotwork_wire::decode;
    use serde::{Deserialize, Serialize};
    use tokio_util::codec::Decoder;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Note(String);

    impl Message for Note {
        const NAME: &'static str = "test/note/1";
        const MAX_BYTES: usize = 64;
    }

    fn outbox(frames: usize, bytes: usize) -> Outbox {
        Outbox::new(FrameCodec::new(), Limits { frames, bytes }, None)
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
        assert!(out.release_if_empty());
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
        assert!(out.release_if_empty());
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
        let stop = Flag::default();
        out.ready(&stop).await;
        let mut second = BytesMut::new();
        assert!(out.take(&mut second));
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
}
