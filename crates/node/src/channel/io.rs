//! A channel's I/O: the writer task (the outbox to the stream, one write
//! per batch) and the reader task (frames, metering, dispatch), started by
//! [`Unstarted::start`]; with several streams, a writer per one-way
//! message type ([`lane_loop`]), and a reader per stream the peer opens
//! ([`accept_loop`]). See the parent module's docs.

use super::*;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use futures::future::Either;
use tracing::Instrument;

impl<S> Unstarted<S>
where
    S: AsyncRead + AsyncWrite + BufferedBytes + Send + Unpin + 'static,
{
    /// Starts the reader and writer tasks of `channel`.
    pub(crate) fn start(self, channel: &Channel) {
        let FramedParts { io, read_buf, .. } = self.parts;
        // The exchange used a codec limited to a version message; the
        // channel accepts frames up to its configured size.
        let codec = FrameCodec::with_max_frame_len(channel.inner.config.max_frame_len);
        let (r, w, stream) = crate::buffers::split(io);
        channel.inner.out.attach(stream);
        // In the caller's span: the channel's (session.rs).
        tokio::spawn(write_loop(channel.clone(), w).in_current_span());
        spawn_reader(channel, r, codec, &read_buf, Stream::First);
        if let Some(lanes) = &channel.inner.lanes {
            let substreams = lanes.substreams.clone();
            tokio::spawn(accept_loop(channel.clone(), substreams).in_current_span());
        }
    }
}

/// Starts the reader of `stream` over `r` (after `buffered`, bytes that
/// came with the version exchange), unpacking blocks first when the
/// channel compresses.
fn spawn_reader<R>(channel: &Channel, r: R, codec: FrameCodec, buffered: &[u8], stream: Stream)
where
    R: AsyncRead + Send + Unpin + 'static,
{
    match channel.inner.compression {
        Compression::None => {
            spawn_read_loop(channel, FrameReader::new(r, codec, buffered), stream);
        }
        algorithm => {
            let framed = FrameReader::new(Inflate::new(r, algorithm, buffered), codec, &[]);
            spawn_read_loop(channel, framed, stream);
        }
    }
}

/// Spawns the reader of `stream` over `framed`, waiting as its stream does
/// (see [`Wait`]).
fn spawn_read_loop<R>(channel: &Channel, framed: FrameReader<R>, stream: Stream)
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let channel = channel.clone();
    match stream {
        Stream::First => {
            tokio::spawn(read_loop::<R, FirstStream>(channel, framed, stream).in_current_span())
        }
        Stream::Lane(_) => {
            tokio::spawn(read_loop::<R, LaneStream>(channel, framed, stream).in_current_span())
        }
    };
}

/// How a reader waits for bytes, and for its channel to start closing.
trait Wait {
    /// Fills `framed` (see [`FrameReader::fill`]); `None` once the channel
    /// is closing.
    fn fill_or_close<'a, R: AsyncRead + Unpin + Send>(
        inner: &'a Inner,
        framed: &'a mut FrameReader<R>,
    ) -> impl Future<Output = Option<Result<bool, WireError>>> + Send + 'a;
}

/// The first stream's reader: woken by `begin_close` through
/// `Inner::reader`, so its waiting future is one poll function, not a
/// select with a `closing` future (which made every idle channel's reader
/// about 80 bytes larger).
struct FirstStream;

impl Wait for FirstStream {
    fn fill_or_close<'a, R: AsyncRead + Unpin + Send>(
        inner: &'a Inner,
        framed: &'a mut FrameReader<R>,
    ) -> impl Future<Output = Option<Result<bool, WireError>>> + Send + 'a {
        std::future::poll_fn(move |cx| {
            if inner.closing.is_raised() {
                return Poll::Ready(None);
            }
            // Registered before the second look: a `begin_close` in
            // between wakes this task.
            inner.reader.register(cx.waker());
            if inner.closing.is_raised() {
                return Poll::Ready(None);
            }
            framed.poll_fill(cx).map(Some)
        })
    }
}

/// A lane's reader (one of several per channel): waits on `closing` itself.
struct LaneStream;

impl Wait for LaneStream {
    async fn fill_or_close<R: AsyncRead + Unpin + Send>(
        inner: &Inner,
        framed: &mut FrameReader<R>,
    ) -> Option<Result<bool, WireError>> {
        tokio::select! {
            biased;
            () = inner.closing.raised() => None,
            r = framed.fill() => Some(r),
        }
    }
}

/// The writer of one-way messages of one type on a stream of their own
/// (see `Channel::lane`): opens the stream when the first is queued.
pub(super) async fn lane_loop(channel: Channel, substreams: Arc<dyn Substreams>, out: Arc<Outbox>) {
    let inner = &channel.inner;
    // However this ends, senders of the type are refused.
    struct Ended<'a>(&'a Outbox);
    impl Drop for Ended<'_> {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _ended = Ended(&out);
    // (`begin_close` wakes this wait too.)
    out.ready(&inner.closing).await;
    if inner.closing.is_raised() {
        return;
    }
    let stream = tokio::select! {
        r = substreams.open_stream() => r,
        () = inner.closing.raised() => return,
    };
    let result = match stream {
        Ok(stream) => pump(&channel, &out, stream).await,
        Err(e) => Err(e.into()),
    };
    if let Err(e) = result {
        Box::pin(broken(&channel, e)).await;
    }
}

/// Reads every stream the peer opens on the connection, each in a task of
/// its own, until the channel closes.
async fn accept_loop(channel: Channel, substreams: Arc<dyn Substreams>) {
    loop {
        let accepted = tokio::select! {
            r = substreams.accept_stream() => r,
            () = channel.inner.closing.raised() => return,
        };
        // An error: the connection is gone, the first stream's reader
        // finds that out too.
        let Ok(stream) = accepted else { return };
        let codec = FrameCodec::with_max_frame_len(channel.inner.config.max_frame_len);
        spawn_reader(&channel, stream, codec, &[], Stream::Lane(None));
    }
}

/// The writer task; see the module docs.
async fn write_loop<W: AsyncWrite + Unpin>(channel: Channel, w: W) {
    let inner = &channel.inner;
    // However the writer ends (even aborted), senders are refused and
    // `closed` may then fire.
    struct Ended<'a>(&'a Inner);
    impl Drop for Ended<'_> {
        fn drop(&mut self) {
            self.0.out.close();
            self.0.written.raise();
        }
    }
    let _ended = Ended(inner);
    // (The error is moved into the boxed future: held across the wait,
    // it would be part of every writer's future.)
    let Err(e) = pump(&channel, &inner.out, w).await else {
        return;
    };
    Box::pin(broken(&channel, e)).await;
}

/// Writes what `out` queues to `w`, one write per batch, until the channel
/// closes; then drains `out` and shuts `w` down.
async fn pump<W: AsyncWrite + Unpin>(
    channel: &Channel,
    out: &Outbox,
    mut w: W,
) -> Result<(), NodeError> {
    let inner = &channel.inner;
    // What the writer took from the outbox; its capacity goes back to the
    // senders at the next take. Both buffers are freed after a small
    // batch, so an idle channel holds no write buffer.
    let mut buf = BytesMut::new();
    let mut blocks = Blocks::new(inner.compression);
    loop {
        // (`begin_close` wakes this wait: no second one for `closing`.)
        out.ready(&inner.closing).await;
        if inner.closing.is_raised() {
            break;
        }
        buf.clear();
        if !out.take(&mut buf) {
            continue;
        }
        // A peer that stops reading blocks this write; once the channel
        // is closing, it gets the drain timeout and is then abandoned.
        let write = async {
            blocks.write(&mut w, &buf).await?;
            w.flush().await
        };
        // (The timer is boxed, made only once closing: a task's future
        // is as large as its largest state, idle or not.)
        let grace = async {
            inner.closing.raised().await;
            Box::pin(tokio::time::sleep(inner.config.drain_timeout)).await;
        };
        tokio::select! {
            r = write => r?,
            () = grace => return Ok(()),
        }
        inner
            .config
            .metrics
            .as_ref()
            .inspect(|m| m.bytes_out(buf.len()));
        // A small batch (the queue ran dry: quiet) gives the buffer
        // back; after a large one it stays for the next (see
        // `BUSY_BURST`).
        if out.finished(buf.len() < BUSY_BURST) {
            buf = BytesMut::new();
            blocks.release();
        }
        if inner.closing.is_raised() {
            break;
        }
    }
    // Closing: send what is still waiting (the Disconnect among it),
    // then shut the write side down.
    let drain = async {
        out.drain().await;
        buf.clear();
        if out.take(&mut buf) {
            blocks.write(&mut w, &buf).await?;
        }
        w.shutdown().await?;
        Ok::<(), NodeError>(())
    };
    // Boxed: made once, at the end (see `grace`).
    let _ = Box::pin(tokio::time::timeout(inner.config.drain_timeout, drain)).await;
    Ok(())
}

/// How a writer puts its batches on the stream: as they are, or cut into
/// blocks, packed where that pays (see [`knotwork_compress`]).
struct Blocks {
    deflate: Option<Deflate>,
    /// A packed block with its header.
    packed: Vec<u8>,
}

impl Blocks {
    fn new(compression: Compression) -> Self {
        Self {
            deflate: (compression != Compression::None).then(|| Deflate::new(compression)),
            packed: Vec::new(),
        }
    }

    /// Writes `batch` to `w` (not flushed). Not an `async fn`: the plain
    /// write is returned as it is, and only packing (boxed) has a state
    /// of its own, so the writer's future, compressed or not, stays as
    /// small as a `write_all`.
    fn write<'a, W: AsyncWrite + Unpin>(
        &'a mut self,
        w: &'a mut W,
        batch: &'a [u8],
    ) -> impl Future<Output = std::io::Result<()>> + 'a {
        match self.deflate.as_mut() {
            None => Either::Left(w.write_all(batch)),
            Some(deflate) => Either::Right(Box::pin(Self::write_packed(
                deflate,
                &mut self.packed,
                w,
                batch,
            ))),
        }
    }

    /// Writes `batch` in blocks, packed where that pays.
    async fn write_packed<W: AsyncWrite + Unpin>(
        deflate: &mut Deflate,
        packed: &mut Vec<u8>,
        w: &mut W,
        batch: &[u8],
    ) -> std::io::Result<()> {
        for block in batch.chunks(knotwork_compress::MAX_BLOCK_LEN) {
            if deflate.pack(block, packed) {
                w.write_all(packed).await?;
            } else {
                w.write_all(&knotwork_compress::raw_header(block.len()))
                    .await?;
                w.write_all(block).await?;
            }
        }
        Ok(())
    }

    /// Frees the packing buffer (a quiet writer holds none).
    fn release(&mut self) {
        self.packed = Vec::new();
    }
}

/// A write failed with `e`. That usually means the peer closed the
/// connection; its Disconnect may still wait in our receive buffer. Let
/// the reader find it (or EOF) before calling this an I/O failure.
async fn broken(channel: &Channel, e: NodeError) {
    tokio::select! {
        () = channel.inner.closing.raised() => {}
        () = tokio::time::sleep(channel.inner.config.drain_timeout) => {
            channel.close_now(CloseReason::Io(e.to_string()), None);
        }
    }
}

/// Which stream a reader reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stream {
    /// The connection's first stream: everything, and its end is the
    /// channel's.
    First,
    /// A stream the peer opened for one one-way message type (the type,
    /// once its first frame named it): that type only. Its end is not the
    /// channel's.
    Lane(Option<u32>),
}

impl Stream {
    /// Whether a frame of `kind` and `msg_id` may come on this stream; a
    /// lane learns its type from its first frame, which must not be one
    /// another lane streams already.
    fn admits(&mut self, channel: &Channel, kind: FrameKind, msg_id: u32) -> bool {
        match *self {
            Stream::First => true,
            _ if kind != FrameKind::Message || on_first_stream(msg_id) => false,
            Stream::Lane(Some(id)) => id == msg_id,
            Stream::Lane(None) => {
                let fresh = channel
                    .inner
                    .lanes
                    .as_ref()
                    .is_some_and(|l| lock(&l.inbound).insert(msg_id));
                if fresh {
                    *self = Stream::Lane(Some(msg_id));
                }
                fresh
            }
        }
    }
}

/// The reader task of `stream`; see the module docs.
///
/// Not an `async fn`: one keeps its arguments twice (as arguments, and
/// moved into the body's locals), 80 bytes more for every channel's reader
/// (`framed` is most of it), and a reader's task is at the edge of tokio's
/// 128-byte steps (see `an_idle_channels_futures_stay_small`). An `async
/// move` block uses what it captured in place.
#[allow(clippy::manual_async_fn)]
fn read_loop<R: AsyncRead + Unpin + Send, W: Wait>(
    channel: Channel,
    mut framed: FrameReader<R>,
    mut stream: Stream,
) -> impl Future<Output = ()> {
    async move {
        let inner = &channel.inner;
        let mut state = ReaderState {
            unknown: TokenBucket::new(UNKNOWN_TYPES, Instant::now().into_std()),
            now: Instant::now().into_std(),
            cache: None,
            tally: Tally::new(inner.config.metrics.clone(), Direction::In),
        };
        let mut burst = 0u32;
        loop {
            // Frames already buffered are handled without arming the select,
            // and share one clock reading per burst of up to 32.
            let frame = match framed.peek() {
                Some(f) if !inner.closing.is_raised() => {
                    burst += 1;
                    if burst >= 32 {
                        burst = 0;
                        state.now = Instant::now().into_std();
                        state.tally.flush();
                    }
                    f
                }
                _ => {
                    state.tally.flush();
                    // A batch read: a sender may write its next frame
                    // itself again (see `crate::outbox`).
                    inner.out.rearm();
                    let Some(filled) = W::fill_or_close(inner, &mut framed).await else {
                        break;
                    };
                    burst = 0;
                    state.now = Instant::now().into_std();
                    match filled {
                        Ok(true) => continue,
                        // A compressed block that breaks the rules: the peer
                        // is banned, on any stream.
                        Err(WireError::Io(e)) if knotwork_compress::block_error(&e).is_some() => {
                            bad_block(&channel, &e)
                        }
                        // A lane's end (the peer's writer closing, the
                        // connection going) is not the channel's: the first
                        // stream's reader tells.
                        Ok(false) | Err(WireError::Io(_)) if stream != Stream::First => {}
                        Ok(false) => channel.close_now(CloseReason::Eof, None),
                        Err(WireError::Io(e)) => {
                            channel.close_now(CloseReason::Io(e.to_string()), None)
                        }
                        Err(e) => bad_framing(&channel, &e),
                    }
                    break;
                }
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => {
                    bad_framing(&channel, &e);
                    break;
                }
            };
            if !stream.admits(&channel, frame.kind, frame.msg_id) {
                offend(&channel, state.now, Offence::WrongStream, frame.msg_id);
                let (reason, notify) = misbehaved(&channel, Offence::WrongStream);
                channel.close_now(reason, notify);
                break;
            }
            state.tally.add(frame.msg_id, frame.payload.len());
            let stop = if frame.kind == FrameKind::Response {
                // The response travels on to its requester: it gets a frame of
                // its own (a view of the buffer, not a copy).
                match framed.take() {
                    Some(Ok(owned)) => handle_response(&channel, &mut state, owned),
                    _ => None,
                }
            } else {
                let len = frame.encoded_len();
                let stop = match handle_frame(&channel, &mut state, frame) {
                    Handled::Done(stop) => stop,
                    Handled::Wait(rest) => rest.await,
                };
                framed.consume(len);
                stop
            };
            if let Some(reason) = stop {
                channel.close_now(reason.0, reason.1);
                break;
            }
        }
        state.tally.flush();
        if let Stream::Lane(id) = stream {
            if let Some(id) = id {
                if let Some(lanes) = &inner.lanes {
                    lock(&lanes.inbound).remove(&id);
                }
            }
            return;
        }
        // Clean up: end subscriptions, fail pending requests, stop jobs.
        inner.begin_close();
        inner.subsystem.clear();
        inner.requests.clear();
        inner.jobs.close();
        // Closed means the writer is done too: whoever waits for it (a node
        // shutting down, then the process exiting) must not cut the Disconnect
        // and the queued frames off before they are written.
        inner.written.raised().await;
        tracing::debug!(peer = %inner.info.peer_id.short(), reason = ?channel.close_reason(), "channel closed");
        inner.closed.raise();
        channel.run_closed_hook();
    }
}

type Stop = (CloseReason, Option<DisconnectReason>);

/// Closes the channel for a framing error (`e`), which bans the peer.
fn bad_framing(channel: &Channel, e: &WireError) {
    let inner = &channel.inner;
    tracing::debug!(peer = %inner.info.peer_id.short(), "bad framing: {e}");
    let (reason, notify) = misbehaved(channel, Offence::BadFraming);
    channel.close_now(reason, notify);
}

/// Closes the channel for a compressed block that breaks the rules (`e`),
/// which bans the peer.
fn bad_block(channel: &Channel, e: &std::io::Error) {
    tracing::debug!(peer = %channel.inner.info.peer_id.short(), "bad compressed block: {e}");
    let (reason, notify) = misbehaved(channel, Offence::BadCompression);
    channel.close_now(reason, notify);
}

/// What the reader keeps between frames.
struct ReaderState {
    /// Frames of unknown types the peer may still send for free.
    unknown: TokenBucket,
    /// The arrival time of the current burst of frames.
    now: std::time::Instant,
    /// The last dispatcher looked up, valid for one subsystem generation.
    cache: Option<(Kind, u32, u64, Dispatcher)>,
    /// Frames read and not yet added to the metrics.
    tally: Tally,
}

impl ReaderState {
    /// The dispatcher of `(kind, id)`, from the cache when it is still valid.
    fn dispatcher<'a>(
        cache: &'a mut Option<(Kind, u32, u64, Dispatcher)>,
        subsystem: &MessageSubsystem,
        kind: Kind,
        id: u32,
    ) -> Option<&'a Dispatcher> {
        let generation = subsystem.generation();
        let valid = cache
            .as_ref()
            .is_some_and(|(k, i, g, _)| (*k, *i, *g) == (kind, id, generation));
        if !valid {
            *cache = Some((kind, id, generation, subsystem.dispatcher(kind, id)?));
        }
        cache.as_ref().map(|(.., d)| d)
    }
}

/// Counts offence `o` by the frame of id `msg_id` against the peer.
fn offend(channel: &Channel, now: std::time::Instant, o: Offence, msg_id: u32) -> Verdict {
    tracing::debug!(peer = %channel.inner.info.peer_id.short(), offence = ?o, msg_id, "peer offence");
    lock(&channel.inner.meter).offend(o, now)
}

/// Charges a frame of type `msg_id` against `budget`.
#[inline]
fn charge(channel: &Channel, now: std::time::Instant, msg_id: u32, budget: RateBudget) -> Verdict {
    if budget.is_unlimited() {
        // Nothing to count: not even the meter's lock (two atomic
        // operations, a tenth of a pipelined message's time).
        return Verdict::Accept;
    }
    charge_metered(channel, now, msg_id, budget)
}

/// [`charge`] of a type with a budget: out of line, so an unlimited type's
/// frame pays no call for it.
#[inline(never)]
fn charge_metered(
    channel: &Channel,
    now: std::time::Instant,
    msg_id: u32,
    budget: RateBudget,
) -> Verdict {
    lock(&channel.inner.meter).charge(msg_id, budget, now)
}

/// How to close the channel for misbehaviour `o` (the peer is banned).
fn misbehaved(channel: &Channel, o: Offence) -> Stop {
    let _ = channel.inner.misbehaviour.set(o.label());
    (
        CloseReason::Local(DisconnectReason::Misbehaviour),
        Some(DisconnectReason::Misbehaviour),
    )
}

/// Hands a response to the request waiting for it; `Some` closes the
/// channel.
/// Frames of types nobody subscribed to that a peer may send for free
/// (a newer protocol version it tries); beyond it each is an offence.
const UNKNOWN_TYPES: RateBudget = RateBudget::new(10.0, 20);

/// The longest a request waits for its type's budget before it is answered
/// `RateLimited` instead.
const MAX_BACKPRESSURE: Duration = Duration::from_secs(1);

/// Responses to no outstanding request a peer may send (answers that
/// arrive after their request timed out are honest, a stream of them is not).
const UNSOLICITED_RESPONSES: RateBudget = RateBudget::new(10.0, 100);

/// The meter's bucket key for unsolicited responses: the id of no message
/// type (types are FNV-1a hashes of their names, 0 is "refused").
const UNSOLICITED_RESPONSE_KEY: u32 = u32::MAX;

fn handle_response(channel: &Channel, state: &mut ReaderState, frame: Frame) -> Option<Stop> {
    let msg_id = frame.msg_id;
    // A mismatched answer still reaches the requester, which reports it as
    // a typed error; the peer pays for it.
    let fits = channel
        .inner
        .requests
        .answer(frame.request_id, frame, |p, f| {
            (f.msg_id == p.expected && f.payload.len() <= p.max_bytes)
                || (f.msg_id == REFUSED_RESPONSE_ID && f.payload.is_empty())
        });
    let Some(fits) = fits else {
        // Most likely the answer to a request that timed out: free within a
        // budget, but a stream of them is charged (review finding L3).
        let budget = UNSOLICITED_RESPONSES;
        if charge(channel, state.now, UNSOLICITED_RESPONSE_KEY, budget) == Verdict::Ban {
            return Some(misbehaved(channel, Offence::OverBudget));
        }
        return None;
    };
    let o = Offence::UnexpectedResponse;
    if !fits && offend(channel, state.now, o, msg_id) == Verdict::Ban {
        return Some(misbehaved(channel, o));
    }
    None
}

/// What [`handle_frame`] left to do.
enum Handled<'a> {
    /// Nothing; `Some` closes the channel.
    Done(Option<Stop>),
    /// The rest has to wait (a request over its budget, a full
    /// subscription): await it; `Some` closes the channel.
    Wait(Pin<Box<dyn Future<Output = Option<Stop>> + Send + 'a>>),
}

/// Handles one inbound message or request, seen in the read buffer.
///
/// Not an `async fn`: almost every frame is handled at once, and only
/// what has to wait is boxed ([`Handled::Wait`]). Inline, the waiting
/// states made every reader's future (an idle channel's too) about 90
/// bytes larger.
fn handle_frame<'a>(
    channel: &'a Channel,
    state: &'a mut ReaderState,
    frame: FrameRef<'a>,
) -> Handled<'a> {
    let inner = &channel.inner;
    let now = state.now;
    let msg_id = frame.msg_id;
    let offend = |o: Offence| offend(channel, now, o, msg_id);
    let misbehaved = |o: Offence| Handled::Done(Some(misbehaved(channel, o)));
    let kind = match frame.kind {
        FrameKind::Message if frame.msg_id == Disconnect::ID => {
            let reason = decode::<Disconnect>(frame.payload)
                .map(|d| d.reason)
                .unwrap_or_else(|_| DisconnectReason::other("malformed disconnect"));
            return Handled::Done(Some((CloseReason::Remote(reason), None)));
        }
        FrameKind::Message => Kind::Message,
        FrameKind::Request => Kind::Request,
        // The reader hands responses to `handle_response` instead.
        FrameKind::Response => return Handled::Done(None),
    };
    let dispatcher =
        ReaderState::dispatcher(&mut state.cache, &inner.subsystem, kind, frame.msg_id);
    let Some(dispatcher) = dispatcher else {
        // A type nobody here subscribed to: most likely a newer version of
        // a protocol this node does not speak yet. A request is answered
        // `Unsupported` so the peer can fall back; within the budget of
        // unknown types it costs nothing (rolling out a protocol v2 must not
        // get half the network banned), beyond it each one is an offence.
        if kind == Kind::Request {
            let _ = inner
                .out
                .try_push(FrameKind::Response, frame.request_id, &Unsupported);
        }
        if state.unknown.take(UNKNOWN_TYPES, now) {
            return Handled::Done(None);
        }
        return match offend(Offence::UnknownMessage) {
            Verdict::Ban => misbehaved(Offence::UnknownMessage),
            _ => Handled::Done(None),
        };
    };
    if frame.payload.len() > dispatcher.max_bytes {
        return match offend(Offence::Oversized) {
            Verdict::Ban => misbehaved(Offence::Oversized),
            _ => Handled::Done(None),
        };
    }
    if kind == Kind::Request {
        // Requests over budget are backpressured (the reader waits for the
        // token, so the peer's writes wait too), never dropped: a plain
        // request loop slows down instead of timing out. A wait longer than
        // MAX_BACKPRESSURE (a budget under one a second) is answered
        // `RateLimited` at once instead.
        let wait = if dispatcher.budget.is_unlimited() {
            Duration::ZERO
        } else {
            lock(&inner.meter).wait(frame.msg_id, dispatcher.budget, now)
        };
        if wait > MAX_BACKPRESSURE {
            let _ = inner
                .out
                .try_push(FrameKind::Response, frame.request_id, &RateLimited);
            return Handled::Done(None);
        }
        if !wait.is_zero() {
            let clock = &mut state.now;
            return Handled::Wait(Box::pin(async move {
                if !unless_closing(inner, tokio::time::sleep(wait)).await {
                    return None;
                }
                *clock = tokio::time::Instant::now().into_std();
                match charge_and_deliver(channel, *clock, dispatcher, &frame) {
                    Delivered::Done(stop) => stop,
                    waiting => deliver_rest(channel, *clock, dispatcher, &frame, waiting).await,
                }
            }));
        }
    }
    match charge_and_deliver(channel, now, dispatcher, &frame) {
        Delivered::Done(stop) => Handled::Done(stop),
        waiting => Handled::Wait(Box::pin(async move {
            deliver_rest(channel, now, dispatcher, &frame, waiting).await
        })),
    }
}

/// How far [`deliver`] got.
enum Delivered<'a> {
    /// Every subscriber has the frame (or it was refused); `Some` closes
    /// the channel.
    Done(Option<Stop>),
    /// A subscriber's queue is full: await this, then go on from the
    /// subscriber at this index.
    Wait(crate::subsystem::Pending<'a>, usize),
}

/// Charges the frame to its type's budget, then delivers it.
#[inline(always)]
fn charge_and_deliver<'a>(
    channel: &Channel,
    now: std::time::Instant,
    dispatcher: &'a Dispatcher,
    frame: &FrameRef<'_>,
) -> Delivered<'a> {
    match charge(channel, now, frame.msg_id, dispatcher.budget) {
        Verdict::Accept => deliver(channel, now, dispatcher, frame, 0),
        Verdict::Drop => Delivered::Done(None),
        Verdict::Ban => {
            // Named once, when it bans (every dropped frame would flood the log).
            tracing::debug!(peer = %channel.inner.info.peer_id.short(), offence = ?Offence::OverBudget, msg_id = frame.msg_id, "peer offence");
            Delivered::Done(Some(misbehaved(channel, Offence::OverBudget)))
        }
    }
}

/// Hands the frame to the subscribers from index `from` on, up to the
/// first that has to wait.
fn deliver<'a>(
    channel: &Channel,
    now: std::time::Instant,
    dispatcher: &'a Dispatcher,
    frame: &FrameRef<'_>,
    from: usize,
) -> Delivered<'a> {
    for (i, sub) in dispatcher.subscribers.iter().enumerate().skip(from) {
        match sub.deliver(frame.payload, frame.request_id, channel) {
            Ok(Delivery::Done | Delivery::Gone) => {}
            Ok(Delivery::Wait(pending)) => return Delivered::Wait(pending, i + 1),
            Err(_) => {
                let o = Offence::Malformed;
                if offend(channel, now, o, frame.msg_id) == Verdict::Ban {
                    return Delivered::Done(Some(misbehaved(channel, o)));
                }
                break;
            }
        }
    }
    Delivered::Done(None)
}

/// Waits where [`deliver`] stopped and goes on, until every subscriber
/// has the frame (or the channel starts closing).
async fn deliver_rest(
    channel: &Channel,
    now: std::time::Instant,
    dispatcher: &Dispatcher,
    frame: &FrameRef<'_>,
    mut step: Delivered<'_>,
) -> Option<Stop> {
    loop {
        match step {
            Delivered::Done(stop) => return stop,
            Delivered::Wait(pending, next) => {
                if !unless_closing(&channel.inner, pending).await {
                    return None;
                }
                step = deliver(channel, now, dispatcher, frame, next);
            }
        }
    }
}

/// Waits for `done` unless the channel starts closing first (`false`).
/// (Only ever inside a boxed [`Handled::Wait`].)
async fn unless_closing(inner: &Inner, done: impl Future<Output = ()>) -> bool {
    tokio::select! {
        () = done => true,
        () = inner.closing.raised() => false,
    }
}

/// The first stream's reader future over `r`, for tests of its size.
#[cfg(test)]
pub(super) fn read_loop_for_test<R: AsyncRead + Unpin + Send>(
    channel: Channel,
    r: R,
    codec: FrameCodec,
    buffered: &[u8],
) -> impl Future<Output = ()> {
    read_loop::<R, FirstStream>(channel, FrameReader::new(r, codec, buffered), Stream::First)
}

/// The writer future over `w`, for tests of its size.
#[cfg(test)]
pub(super) fn write_loop_for_test<W: AsyncWrite + Unpin>(
    channel: Channel,
    w: W,
) -> impl Future<Output = ()> {
    write_loop(channel, w)
}
