//! [`Channel`]: one authenticated connection to one peer.
//!
//! A channel owns two tasks. The **writer** owns the write half: senders
//! serialize their frames straight into a shared, bounded byte buffer (see
//! `outbox`), and the writer takes everything waiting there (up to
//! [`ChannelConfig::batch_bytes`] and a frame) and writes and flushes it
//! once, so the secure stream below seals the whole batch in one AEAD
//! call. The **reader** decodes frames, meters them (see
//! [`crate::meter`]), and hands them to the [`MessageSubsystem`], which queues
//! them in typed bounded subscriptions; a full subscription makes the reader
//! wait, so a slow consumer slows the peer instead of losing messages.
//! Responses go to the request that is waiting for them, matched by request
//! id.
//!
//! Idle connections hold no buffers: the reader's frame decoder (see
//! `frames`) and the secure stream below each free theirs when a read finds
//! the connection quiet, and the writer frees its batch buffers after a
//! small batch (see `BUSY_BURST`).
//!
//! Protocols attached to a channel run as its [`Jobs`](crate::jobs::Jobs); when
//! the channel closes (either side, any reason) every job is aborted, every
//! subscription ends and every pending request fails with
//! [`NodeError::Closed`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use knotwork_core::{PeerAddr, PeerId, lock};
use knotwork_wire::{Frame, FrameCodec, FrameKind, FrameRef, Message, WireError, decode};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::codec::FramedParts;
use tokio_util::sync::CancellationToken;

use crate::buffers::{BufferedBytes, StreamBuffers};
use crate::error::{CloseReason, DisconnectReason, NodeError};
use crate::frames::FrameReader;
use crate::meter::{Meter, MeterConfig, Offence, RateBudget, Verdict};
use crate::metrics::{Direction, Tally, offence_label};
use crate::outbox::{Limits, Outbox, PushError};
use crate::registry::SessionKind;
use crate::subsystem::{
    Delivery, Dispatcher, Kind, MessageSubsystem, RequestSubscription, Subscription,
};
use crate::version::{Disconnect, Version};
use knotwork_crypto_handshake::BUSY_BURST;

/// The message id of a response that says "no answer": the peer has no
/// handler for the request, or its handler dropped it.
pub const REFUSED_RESPONSE_ID: u32 = 0;

/// The empty response that says "no answer" ([`REFUSED_RESPONSE_ID`]).
#[derive(Serialize, Deserialize)]
struct Refused;

impl Message for Refused {
    /// The type name refusals are counted under in the metrics.
    const NAME: &'static str = "knot/refused";
    const ID: u32 = REFUSED_RESPONSE_ID;
    // A unit struct encodes to nothing.
    const MAX_BYTES: usize = 0;
}

/// Settings shared by all channels of a node.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ChannelConfig {
    /// Frames waiting for the writer, at most; `send` waits when full.
    /// The writer takes what is waiting in one batch, so up to as many
    /// again may be in its hands at once.
    pub send_queue: usize,
    /// Messages waiting in each subscription, at most (and, as for
    /// `send_queue`, as many again taken by the subscriber's last `recv`).
    pub subscription_capacity: usize,
    /// Default time a request waits for its response.
    pub request_timeout: Duration,
    /// Largest frame payload accepted from the peer.
    pub max_frame_len: usize,
    /// Bytes waiting for the writer before `send` waits (a frame is let in
    /// while fewer are waiting): the most a batch holds, plus one frame.
    pub batch_bytes: usize,
    /// How long closing waits for queued frames to go out.
    pub drain_timeout: Duration,
    /// Misbehaviour thresholds.
    pub meter: MeterConfig,
    /// Budget of message types without their own entry in `budgets`.
    pub default_budget: RateBudget,
    /// Budgets per message id.
    pub budgets: HashMap<u32, RateBudget>,
    /// Byte and frame counters (set by the node).
    pub(crate) metrics: Option<crate::metrics::Metrics>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            send_queue: 256,
            subscription_capacity: 64,
            request_timeout: Duration::from_secs(10),
            max_frame_len: knotwork_wire::DEFAULT_MAX_FRAME_LEN,
            batch_bytes: 60 * 1024,
            drain_timeout: Duration::from_secs(2),
            meter: MeterConfig::default(),
            default_budget: RateBudget::default(),
            budgets: HashMap::new(),
            metrics: None,
        }
    }
}

impl ChannelConfig {
    /// The budget of message id `id`.
    pub fn budget(&self, id: u32) -> RateBudget {
        self.budgets
            .get(&id)
            .copied()
            .unwrap_or(self.default_budget)
    }
}

/// What the node knows about the peer at the other end of a channel.
#[derive(Clone, Debug)]
pub struct ChannelInfo {
    /// The authenticated identity of the peer.
    pub peer_id: PeerId,
    /// The address the connection goes to (dialed) or comes from (accepted).
    pub remote_addr: PeerAddr,
    /// How the connection was made.
    pub session: SessionKind,
    /// The peer's version message.
    pub version: Version,
}

struct Pending {
    expected: u32,
    max_bytes: usize,
    tx: oneshot::Sender<Frame>,
}

struct Inner {
    info: ChannelInfo,
    config: Arc<ChannelConfig>,
    out: Outbox,
    subsystem: MessageSubsystem,
    pending: Mutex<HashMap<u32, Pending>>,
    next_request_id: AtomicU32,
    jobs: crate::jobs::Jobs,
    rtt: Mutex<Option<Duration>>,
    reason: Mutex<Option<CloseReason>>,
    /// What the peer did to be closed for misbehaviour (a metrics label).
    misbehaviour: OnceLock<&'static str>,
    /// The stream's buffers, once started.
    buffers: OnceLock<Arc<dyn StreamBuffers>>,
    /// Cancelled when the channel starts closing.
    closing: CancellationToken,
    /// Mirrors `closing` for a lock-free check on the send path.
    closing_flag: AtomicBool,
    /// Cancelled when the writer task has ended (its last bytes written,
    /// or abandoned after the drain timeout).
    written: CancellationToken,
    /// Cancelled when the channel is fully closed and cleaned up.
    closed: CancellationToken,
}

impl Inner {
    fn begin_close(&self) {
        self.closing_flag.store(true, Ordering::Release);
        self.closing.cancel();
    }
}

/// A handle to one connection; cheap to clone. See the module docs.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("peer", &self.inner.info.peer_id)
            .field("addr", &self.inner.info.remote_addr)
            .field("session", &self.inner.info.session)
            .finish_non_exhaustive()
    }
}

/// The I/O half of a channel, kept until its protocols are attached.
pub(crate) struct Unstarted<S> {
    parts: FramedParts<S, FrameCodec>,
}

impl Channel {
    /// A channel over `parts` (the stream after the version exchange), not
    /// yet reading or writing: subscribe first, then [`Unstarted::start`].
    pub(crate) fn new<S>(
        parts: FramedParts<S, FrameCodec>,
        info: ChannelInfo,
        config: Arc<ChannelConfig>,
    ) -> (Self, Unstarted<S>) {
        let out = Outbox::new(
            FrameCodec::with_max_frame_len(config.max_frame_len),
            Limits {
                frames: config.send_queue,
                bytes: config.batch_bytes,
            },
            config.metrics.clone(),
        );
        let inner = Arc::new(Inner {
            info,
            config,
            out,
            subsystem: MessageSubsystem::default(),
            pending: Mutex::new(HashMap::new()),
            next_request_id: AtomicU32::new(1),
            jobs: crate::jobs::Jobs::default(),
            rtt: Mutex::new(None),
            reason: Mutex::new(None),
            misbehaviour: OnceLock::new(),
            buffers: OnceLock::new(),
            closing: CancellationToken::new(),
            closing_flag: AtomicBool::new(false),
            written: CancellationToken::new(),
            closed: CancellationToken::new(),
        });
        let channel = Self { inner };
        channel.register::<Disconnect>();
        channel.register::<Refused>();
        (channel, Unstarted { parts })
    }

    /// The authenticated identity of the peer.
    pub fn remote_peer_id(&self) -> PeerId {
        self.inner.info.peer_id
    }

    /// The peer's address as seen on this connection.
    pub fn remote_addr(&self) -> &PeerAddr {
        &self.inner.info.remote_addr
    }

    /// What the node knows about the peer.
    pub fn info(&self) -> &ChannelInfo {
        &self.inner.info
    }

    /// The last round-trip time measured by the ping protocol.
    pub fn rtt(&self) -> Option<Duration> {
        *lock(&self.inner.rtt)
    }

    /// Records a ping round-trip time (and feeds the RTT histogram).
    pub(crate) fn set_rtt(&self, rtt: Duration) {
        *lock(&self.inner.rtt) = Some(rtt);
        self.metrics().inspect(|m| m.rtt(rtt));
    }

    fn metrics(&self) -> Option<&crate::metrics::Metrics> {
        self.inner.config.metrics.as_ref()
    }

    /// Registers type `M` so the frames received of it are counted under its name.
    fn register<M: Message>(&self) {
        self.metrics().inspect(|m| m.register_type(M::ID, M::NAME));
    }

    /// What the peer did to be closed for misbehaviour: the label of its
    /// ban in the metrics (`other` if nobody said).
    pub(crate) fn misbehaviour(&self) -> &'static str {
        self.inner.misbehaviour.get().copied().unwrap_or("other")
    }

    /// Closes the channel for misbehaviour `what` (a short label, as in
    /// `knot_bans_total{reason}`); the node bans the peer.
    pub async fn close_misbehaving(&self, what: &'static str) {
        let _ = self.inner.misbehaviour.set(what);
        self.close(DisconnectReason::Misbehaviour).await;
    }

    /// Bytes the connection's stream holds in its buffers now (0 before
    /// the channel starts).
    pub fn buffered_bytes(&self) -> usize {
        self.inner.buffers.get().map_or(0, |b| b.capacity())
    }

    /// The message subsystem of this channel.
    pub fn subsystem(&self) -> &MessageSubsystem {
        &self.inner.subsystem
    }

    /// Whether `self` and `other` are handles to the same connection.
    pub fn same(&self, other: &Channel) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Whether the channel is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closing_flag.load(Ordering::Acquire)
    }

    /// Waits until the channel is closed; returns why. By then the writer
    /// has ended: what was queued (a closing `Disconnect` among it) has
    /// been written, or abandoned after the drain timeout.
    pub async fn closed(&self) -> CloseReason {
        self.inner.closed.cancelled().await;
        self.close_reason().unwrap_or(CloseReason::Eof)
    }

    /// Why the channel closed, once it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        lock(&self.inner.reason).clone()
    }

    fn closed_error(&self) -> NodeError {
        NodeError::Closed(self.close_reason().unwrap_or(CloseReason::Eof))
    }

    /// Records the first reason only.
    fn set_reason(&self, reason: CloseReason) {
        lock(&self.inner.reason).get_or_insert(reason);
    }

    /// Subscribes to one-way messages of type `M`. Subscribe before the
    /// peer sends: a message of a type nobody subscribed to counts as
    /// misbehaviour.
    pub fn subscribe<M: Message>(&self) -> Subscription<M> {
        let (sub, erased) = Subscription::new(self.inner.config.subscription_capacity);
        self.register::<M>();
        if !self.is_closed() {
            self.inner.subsystem.add(
                Kind::Message,
                M::ID,
                M::MAX_BYTES,
                self.inner.config.budget(M::ID),
                erased,
            );
        }
        sub
    }

    /// Subscribes to requests of type `M`; answer each with its [`Responder`].
    pub fn subscribe_requests<M: Message>(&self) -> RequestSubscription<M> {
        let (sub, erased) = RequestSubscription::new(self.inner.config.subscription_capacity);
        self.register::<M>();
        if !self.is_closed() {
            self.inner.subsystem.add(
                Kind::Request,
                M::ID,
                M::MAX_BYTES,
                self.inner.config.budget(M::ID),
                erased,
            );
        }
        sub
    }

    /// Queues a frame of `kind` carrying `msg`, waiting for room.
    async fn send_frame<M: Message>(
        &self,
        kind: FrameKind,
        request_id: u32,
        msg: &M,
    ) -> Result<(), NodeError> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        // Fast path: room in the outbox, no future to set up.
        let pushed = match self.inner.out.try_push(kind, request_id, msg) {
            Ok(()) => {
                // Stay fair: a tight send loop still yields now and then.
                tokio::task::consume_budget().await;
                Ok(())
            }
            Err(PushError::Full) => self.inner.out.push(kind, request_id, msg).await,
            Err(e) => Err(e),
        };
        match pushed {
            Ok(()) => Ok(()),
            Err(PushError::Encode(e)) => Err(e.into()),
            Err(PushError::Full | PushError::Closed) => Err(self.closed_error()),
        }
    }

    /// Sends a one-way message. Waits while the send queue is full.
    pub async fn send<M: Message>(&self, msg: &M) -> Result<(), NodeError> {
        self.send_frame(FrameKind::Message, 0, msg).await
    }

    /// Sends a request and waits for its response, at most
    /// [`ChannelConfig::request_timeout`].
    pub async fn request<Req: Message, Resp: Message>(&self, req: &Req) -> Result<Resp, NodeError> {
        self.request_timeout(req, self.inner.config.request_timeout)
            .await
    }

    /// Sends a request and waits for its response, at most `timeout`.
    pub async fn request_timeout<Req: Message, Resp: Message>(
        &self,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, NodeError> {
        // (Sent types are registered by the outbox as they go out.)
        self.register::<Resp>();
        let id = loop {
            let id = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                break id;
            }
        };
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending).insert(
            id,
            Pending {
                expected: Resp::ID,
                max_bytes: Resp::MAX_BYTES,
                tx,
            },
        );
        // Remove the entry however this future ends (timeout, cancellation).
        struct Cleanup<'a>(&'a Inner, u32);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                lock(&self.0.pending).remove(&self.1);
            }
        }
        let _cleanup = Cleanup(&self.inner, id);
        self.send_frame(FrameKind::Request, id, req).await?;
        let frame = match tokio::time::timeout(timeout, rx).await {
            Err(_) => return Err(NodeError::RequestTimeout),
            Ok(Err(_)) => return Err(self.closed_error()),
            Ok(Ok(frame)) => frame,
        };
        match frame.msg_id {
            id if id == Resp::ID => Ok(decode::<Resp>(&frame.payload)?),
            REFUSED_RESPONSE_ID => Err(NodeError::RequestRefused),
            got => Err(NodeError::UnexpectedResponse {
                expected: Resp::ID,
                got,
            }),
        }
    }

    /// Runs `job` until it ends or the channel closes, whichever is first;
    /// finished jobs are reaped (see [`crate::jobs`]).
    pub fn spawn<F>(&self, job: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.jobs.spawn(job);
    }

    /// Jobs running on this channel now.
    pub fn jobs(&self) -> usize {
        self.inner.jobs.len()
    }

    /// Closes the channel: tells the peer `reason`, sends what is queued
    /// (for at most [`ChannelConfig::drain_timeout`]), and stops every job.
    pub async fn close(&self, reason: DisconnectReason) {
        if self.is_closed() {
            return;
        }
        self.set_reason(CloseReason::Local(reason.clone()));
        let bye = Disconnect { reason };
        let bye = self.inner.out.push(FrameKind::Message, 0, &bye);
        let _ = tokio::time::timeout(self.inner.config.drain_timeout, bye).await;
        self.inner.begin_close();
    }

    /// Closes without waiting: used where awaiting is impossible.
    fn close_now(&self, reason: CloseReason, notify: Option<DisconnectReason>) {
        self.set_reason(reason);
        if let Some(reason) = notify {
            let _ = self
                .inner
                .out
                .try_push(FrameKind::Message, 0, &Disconnect { reason });
        }
        self.inner.begin_close();
    }
}

/// Answers one request; see [`Channel::subscribe_requests`]. Dropping it
/// unanswered tells the peer the request was refused.
pub struct Responder {
    channel: Channel,
    request_id: u32,
    answered: bool,
}

impl Responder {
    pub(crate) fn new(channel: Channel, request_id: u32) -> Self {
        Self {
            channel,
            request_id,
            answered: false,
        }
    }

    /// Sends `resp` as the answer.
    pub async fn respond<M: Message>(mut self, resp: &M) -> Result<(), NodeError> {
        self.answered = true;
        self.channel
            .send_frame(FrameKind::Response, self.request_id, resp)
            .await
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            // Best effort: if the queue is full the requester times out instead.
            let _ = self
                .channel
                .inner
                .out
                .try_push(FrameKind::Response, self.request_id, &Refused);
        }
    }
}

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
        let (r, w, buffers) = crate::buffers::split(io);
        let _ = channel.inner.buffers.set(buffers.clone());
        let framed = FrameReader::new(r, codec, &read_buf);
        tokio::spawn(write_loop(channel.clone(), w));
        tokio::spawn(read_loop(channel.clone(), framed));
    }
}

/// The writer task; see the module docs.
async fn write_loop<W: AsyncWrite + Unpin>(channel: Channel, mut w: W) {
    let inner = &channel.inner;
    // However the writer ends (even aborted), senders are refused and
    // `closed` may then fire.
    struct Ended<'a>(&'a Inner);
    impl Drop for Ended<'_> {
        fn drop(&mut self) {
            self.0.out.close();
            self.0.written.cancel();
        }
    }
    let _ended = Ended(inner);
    // What the writer took from the outbox; its capacity goes back to the
    // senders at the next take. Both buffers are freed after a small
    // batch, so an idle channel holds no write buffer.
    let mut buf = BytesMut::new();
    let result: Result<(), NodeError> = async {
        loop {
            tokio::select! {
                biased;
                () = inner.out.ready() => {}
                () = inner.closing.cancelled() => break,
            }
            buf.clear();
            if !inner.out.take(&mut buf) {
                continue;
            }
            // A peer that stops reading blocks this write; once the channel
            // is closing, it gets the drain timeout and is then abandoned.
            let write = async {
                w.write_all(&buf).await?;
                w.flush().await
            };
            let grace = async {
                inner.closing.cancelled().await;
                tokio::time::sleep(inner.config.drain_timeout).await;
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
            if buf.len() < BUSY_BURST && inner.out.release_if_empty() {
                buf = BytesMut::new();
            }
            if inner.closing_flag.load(Ordering::Acquire) {
                break;
            }
        }
        // Closing: send what is still waiting (the Disconnect among it),
        // then shut the write side down.
        let drain = async {
            buf.clear();
            if inner.out.take(&mut buf) {
                w.write_all(&buf).await?;
            }
            w.shutdown().await?;
            Ok::<(), NodeError>(())
        };
        let _ = tokio::time::timeout(inner.config.drain_timeout, drain).await;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        // A broken write usually means the peer closed the connection; its
        // Disconnect may still wait in our receive buffer. Let the reader
        // find it (or EOF) before calling this an I/O failure.
        tokio::select! {
            () = inner.closing.cancelled() => {}
            () = tokio::time::sleep(inner.config.drain_timeout) => {
                channel.close_now(CloseReason::Io(e.to_string()), None);
            }
        }
    }
}

/// The reader task; see the module docs.
async fn read_loop<R: AsyncRead + Unpin>(channel: Channel, mut framed: FrameReader<R>) {
    let inner = &channel.inner;
    let mut state = ReaderState {
        meter: Meter::new(inner.config.meter, Instant::now().into_std()),
        now: Instant::now().into_std(),
        cache: None,
        tally: Tally::new(inner.config.metrics.clone(), Direction::In),
    };
    let mut burst = 0u32;
    loop {
        // Frames already buffered are handled without arming the select,
        // and share one clock reading per burst of up to 32.
        let frame = match framed.peek() {
            Some(f) if !inner.closing_flag.load(Ordering::Acquire) => {
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
                let filled = tokio::select! {
                    biased;
                    () = inner.closing.cancelled() => break,
                    r = framed.fill() => r,
                };
                burst = 0;
                state.now = Instant::now().into_std();
                match filled {
                    Ok(true) => continue,
                    Ok(false) => channel.close_now(CloseReason::Eof, None),
                    Err(WireError::Io(e)) => {
                        channel.close_now(CloseReason::Io(e.to_string()), None)
                    }
                    Err(e) => bad_framing(&channel, &mut state, &e),
                }
                break;
            }
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                bad_framing(&channel, &mut state, &e);
                break;
            }
        };
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
            let stop = handle_frame(&channel, &mut state, frame).await;
            framed.consume(len);
            stop
        };
        if let Some(reason) = stop {
            channel.close_now(reason.0, reason.1);
            break;
        }
    }
    state.tally.flush();
    // Clean up: end subscriptions, fail pending requests, stop jobs.
    inner.begin_close();
    inner.subsystem.clear();
    lock(&inner.pending).clear();
    inner.jobs.close();
    // Closed means the writer is done too: whoever waits for it (a node
    // shutting down, then the process exiting) must not cut the Disconnect
    // and the queued frames off before they are written.
    inner.written.cancelled().await;
    tracing::debug!(peer = %inner.info.peer_id.short(), reason = ?channel.close_reason(), "channel closed");
    inner.closed.cancel();
}

type Stop = (CloseReason, Option<DisconnectReason>);

/// Closes the channel for a framing error (`e`), which bans the peer.
fn bad_framing(channel: &Channel, state: &mut ReaderState, e: &WireError) {
    let inner = &channel.inner;
    tracing::debug!(peer = %inner.info.peer_id.short(), "bad framing: {e}");
    state.meter.offend(Offence::BadFraming, state.now);
    let _ = inner.misbehaviour.set(offence_label(Offence::BadFraming));
    channel.close_now(
        CloseReason::Local(DisconnectReason::Misbehaviour),
        Some(DisconnectReason::Misbehaviour),
    );
}

/// What the reader keeps between frames.
struct ReaderState {
    meter: Meter,
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
fn offend(
    channel: &Channel,
    meter: &mut Meter,
    now: std::time::Instant,
    o: Offence,
    msg_id: u32,
) -> Verdict {
    tracing::debug!(peer = %channel.inner.info.peer_id.short(), offence = ?o, msg_id, "peer offence");
    meter.offend(o, now)
}

/// Closes the channel for misbehaviour `o` (the peer is banned).
fn misbehaved(channel: &Channel, o: Offence) -> Option<Stop> {
    let _ = channel.inner.misbehaviour.set(offence_label(o));
    Some((
        CloseReason::Local(DisconnectReason::Misbehaviour),
        Some(DisconnectReason::Misbehaviour),
    ))
}

/// Hands a response to the request waiting for it; `Some` closes the
/// channel.
fn handle_response(channel: &Channel, state: &mut ReaderState, frame: Frame) -> Option<Stop> {
    let pending = lock(&channel.inner.pending).remove(&frame.request_id);
    let fits = pending.as_ref().is_some_and(|p| {
        (frame.msg_id == p.expected && frame.payload.len() <= p.max_bytes)
            || (frame.msg_id == REFUSED_RESPONSE_ID && frame.payload.is_empty())
    });
    let Some(p) = pending else {
        // Most likely the answer to a request that timed out.
        return None;
    };
    let msg_id = frame.msg_id;
    // A mismatched answer still reaches the requester, which reports it as
    // a typed error; the peer pays for it.
    let _ = p.tx.send(frame);
    let o = Offence::UnexpectedResponse;
    if !fits && offend(channel, &mut state.meter, state.now, o, msg_id) == Verdict::Ban {
        return misbehaved(channel, o);
    }
    None
}

/// Handles one inbound message or request, seen in the read buffer;
/// `Some` closes the channel.
async fn handle_frame(
    channel: &Channel,
    state: &mut ReaderState,
    frame: FrameRef<'_>,
) -> Option<Stop> {
    let inner = &channel.inner;
    let now = state.now;
    let msg_id = frame.msg_id;
    let offend = |meter: &mut Meter, o: Offence| offend(channel, meter, now, o, msg_id);
    let misbehaved = |o: Offence| misbehaved(channel, o);
    let kind = match frame.kind {
        FrameKind::Message if frame.msg_id == Disconnect::ID => {
            let reason = decode::<Disconnect>(frame.payload)
                .map(|d| d.reason)
                .unwrap_or_else(|_| DisconnectReason::other("malformed disconnect"));
            return Some((CloseReason::Remote(reason), None));
        }
        FrameKind::Message => Kind::Message,
        FrameKind::Request => Kind::Request,
        // The reader hands responses to `handle_response` instead.
        FrameKind::Response => return None,
    };
    let dispatcher =
        ReaderState::dispatcher(&mut state.cache, &inner.subsystem, kind, frame.msg_id);
    let meter = &mut state.meter;
    let Some(dispatcher) = dispatcher else {
        if kind == Kind::Request {
            let _ = inner
                .out
                .try_push(FrameKind::Response, frame.request_id, &Refused);
        }
        return match offend(meter, Offence::UnknownMessage) {
            Verdict::Ban => misbehaved(Offence::UnknownMessage),
            _ => None,
        };
    };
    if frame.payload.len() > dispatcher.max_bytes {
        return match offend(meter, Offence::Oversized) {
            Verdict::Ban => misbehaved(Offence::Oversized),
            _ => None,
        };
    }
    match meter.charge(frame.msg_id, dispatcher.budget, now) {
        Verdict::Accept => {}
        Verdict::Drop => return None,
        Verdict::Ban => {
            // Named once, when it bans (every dropped frame would flood the log).
            tracing::debug!(peer = %inner.info.peer_id.short(), offence = ?Offence::OverBudget, msg_id, "peer offence");
            return misbehaved(Offence::OverBudget);
        }
    }
    for sub in dispatcher.subscribers.iter() {
        match sub.deliver(frame.payload, frame.request_id, channel) {
            Ok(Delivery::Done | Delivery::Gone) => {}
            Ok(Delivery::Wait(pending)) => {
                tokio::select! {
                    () = pending => {}
                    () = inner.closing.cancelled() => return None,
                }
            }
            Err(_) => {
                if offend(meter, Offence::Malformed) == Verdict::Ban {
                    return misbehaved(Offence::Malformed);
                }
                break;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ping::{Ping, Pong};
    use bytes::Bytes;
    use futures::{FutureExt, SinkExt, StreamExt};
    use knotwork_core::Keypair;
    use knotwork_wire::encode;
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Poll};
    use tokio::io::{DuplexStream, ReadBuf};
    use tokio_util::codec::Framed;

    /// A stream that counts flushes and can make each write wait first.
    struct Counted {
        io: DuplexStream,
        flushes: Arc<AtomicUsize>,
        /// How long each write waits before it starts.
        write_delay: Duration,
        /// The wait of the write in progress.
        waiting: Option<Pin<Box<tokio::time::Sleep>>>,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let this = self.get_mut();
            if !this.write_delay.is_zero() {
                let delay = this.write_delay;
                let wait = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
                std::task::ready!(wait.as_mut().poll(cx));
                this.waiting = None;
            }
            Pin::new(&mut this.io).poll_write(cx, buf)
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            let this = self.get_mut();
            this.flushes.fetch_add(1, Ordering::SeqCst);
            Pin::new(&mut this.io).poll_flush(cx)
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
        }
    }

    impl BufferedBytes for Counted {
        fn buffer_capacity(&self) -> usize {
            0
        }
    }

    type Peer = Framed<DuplexStream, FrameCodec>;

    fn channel(config: ChannelConfig) -> (Channel, Unstarted<Counted>, Peer, Arc<AtomicUsize>) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let flushes = Arc::new(AtomicUsize::new(0));
        let io = Counted {
            io: a,
            flushes: flushes.clone(),
            write_delay: Duration::ZERO,
            waiting: None,
        };
        let parts = FramedParts::new::<Frame>(io, FrameCodec::new());
        let info = ChannelInfo {
            peer_id: Keypair::generate().unwrap().peer_id(),
            remote_addr: PeerAddr::Mem(1),
            session: SessionKind::Inbound,
            version: Version::new(&[], &[], &PeerAddr::Mem(1)),
        };
        let (ch, io) = Channel::new(parts, info, Arc::new(config));
        (ch, io, Framed::new(b, FrameCodec::new()), flushes)
    }

    /// Sends `frame` from the peer `n` times; returns how the channel closed.
    async fn abuse(config: ChannelConfig, n: usize, frame: Frame) -> (Channel, Peer) {
        let (ch, io, mut peer, _) = channel(config);
        let _pings = ch.subscribe::<Ping>();
        io.start(&ch);
        for _ in 0..n {
            if peer.send(frame.clone()).await.is_err() {
                break;
            }
        }
        (ch, peer)
    }

    async fn assert_banned(ch: &Channel, peer: &mut Peer) {
        let reason = tokio::time::timeout(Duration::from_secs(5), ch.closed())
            .await
            .unwrap();
        assert_eq!(reason, CloseReason::Local(DisconnectReason::Misbehaviour));
        // The peer is told why.
        loop {
            let f = peer.next().await.unwrap().unwrap();
            if f.msg_id == Disconnect::ID {
                let d: Disconnect = decode(&f.payload).unwrap();
                assert_eq!(d.reason, DisconnectReason::Misbehaviour);
                break;
            }
        }
    }

    #[tokio::test]
    async fn oversized_payloads_get_the_peer_banned() {
        let frame = Frame::message(Ping::ID, Bytes::from(vec![0u8; Ping::MAX_BYTES + 1]));
        let (ch, mut peer) = abuse(ChannelConfig::default(), 4, frame).await;
        assert_banned(&ch, &mut peer).await;
    }

    #[tokio::test]
    async fn malformed_payloads_get_the_peer_banned() {
        // Ten 0xff bytes are a varint that never ends: not a u64.
        let frame = Frame::message(Ping::ID, Bytes::from(vec![0xffu8; 10]));
        let (ch, mut peer) = abuse(ChannelConfig::default(), 4, frame).await;
        assert_banned(&ch, &mut peer).await;
    }

    #[tokio::test]
    async fn unknown_types_get_the_peer_banned_at_the_threshold_only() {
        let frame = Frame::message(12345, Bytes::new());
        let (ch, _peer) = abuse(ChannelConfig::default(), 9, frame.clone()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!ch.is_closed(), "90 points stay under the threshold of 100");
        let (ch, mut peer) = abuse(ChannelConfig::default(), 10, frame).await;
        assert_banned(&ch, &mut peer).await;
    }

    #[tokio::test]
    async fn a_flood_over_budget_gets_the_peer_banned() {
        let mut config = ChannelConfig::default();
        config.budgets.insert(Ping::ID, RateBudget::new(1.0, 1));
        let frame = Frame::message(Ping::ID, encode(&Ping { nonce: 1 }).unwrap());
        let (ch, mut peer) = abuse(config, 60, frame).await;
        assert_banned(&ch, &mut peer).await;
    }

    /// A message large enough to grow the secure stream's read buffer.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Bulk(Vec<u8>);
    impl Message for Bulk {
        const NAME: &'static str = "test/bulk/1";
        // length varint 3 + 200 KB.
        const MAX_BYTES: usize = 3 + 200_000;
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_channel_gives_its_read_buffer_back() {
        use knotwork_crypto_handshake::SecureConfig;
        let (a, b) = tokio::io::duplex(1 << 20);
        let (ka, kb) = (Keypair::generate().unwrap(), Keypair::generate().unwrap());
        let (ca, cb) = (
            SecureConfig::new(ka).unwrap(),
            SecureConfig::new(kb).unwrap(),
        );
        let (ours, theirs) = tokio::join!(ca.upgrade_inbound(a), cb.upgrade_outbound(b, None));
        let (ours, theirs) = (ours.unwrap(), theirs.unwrap());
        let info = ChannelInfo {
            peer_id: ours.remote_peer_id(),
            remote_addr: PeerAddr::Mem(1),
            session: SessionKind::Inbound,
            version: Version::new(&[], &[], &PeerAddr::Mem(1)),
        };
        let parts = FramedParts::new::<Frame>(ours, FrameCodec::new());
        let (ch, io) = Channel::new(parts, info, Arc::new(ChannelConfig::default()));
        let mut bulk = ch.subscribe::<Bulk>();
        io.start(&ch);
        let mut peer = Framed::new(theirs, FrameCodec::new());
        let payload = encode(&Bulk(vec![7; 200_000])).unwrap();
        peer.send(Frame::message(Bulk::ID, payload)).await.unwrap();
        assert_eq!(bulk.recv().await.unwrap().0.len(), 200_000);
        // A busy stream may keep its read buffer after a large burst; the
        // next small exchange (as a ping would be) lets it go as soon as
        // the reader's next read finds the connection empty: nothing stays
        // behind, without any timer.
        let small = encode(&Bulk(vec![1; 10])).unwrap();
        peer.send(Frame::message(Bulk::ID, small)).await.unwrap();
        assert_eq!(bulk.recv().await.unwrap().0.len(), 10);
        let freed = async {
            while ch.buffered_bytes() > 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(1), freed)
            .await
            .is_err()
        {
            panic!(
                "still buffered after the burst: {} bytes",
                ch.buffered_bytes()
            );
        }
        // The channel still reads afterwards.
        let payload = encode(&Bulk(vec![1; 10])).unwrap();
        peer.send(Frame::message(Bulk::ID, payload)).await.unwrap();
        assert_eq!(bulk.recv().await.unwrap().0, vec![1; 10]);
    }

    #[tokio::test]
    async fn queued_frames_leave_in_one_flush() {
        let (ch, io, mut peer, flushes) = channel(ChannelConfig::default());
        for nonce in 0..50 {
            ch.send(&Pong { nonce }).await.unwrap();
        }
        io.start(&ch);
        for nonce in 0..50 {
            let f = peer.next().await.unwrap().unwrap();
            assert_eq!(decode::<Pong>(&f.payload).unwrap(), Pong { nonce });
        }
        assert_eq!(flushes.load(Ordering::SeqCst), 1, "50 frames, one flush");
    }

    /// Regression: `closed` used to fire as soon as the reader stopped, while
    /// the writer still held the Disconnect; a process exiting right after
    /// `Node::shutdown` then cut it off and the peer saw a bare EOF.
    #[tokio::test(start_paused = true)]
    async fn closed_means_the_disconnect_was_written() {
        let (ch, mut io, mut peer, _) = channel(ChannelConfig::default());
        io.parts.io.write_delay = Duration::from_millis(100);
        io.start(&ch);
        ch.close(DisconnectReason::Shutdown).await;
        ch.closed().await;
        let f = peer
            .next()
            .now_or_never()
            .expect("the Disconnect is already written")
            .unwrap()
            .unwrap();
        assert_eq!(f.msg_id, Disconnect::ID);
        let d: Disconnect = decode(&f.payload).unwrap();
        assert_eq!(d.reason, DisconnectReason::Shutdown);
        assert!(
            peer.next().await.is_none(),
            "then the write side shuts down"
        );
    }

    #[tokio::test]
    async fn a_dropped_responder_refuses_the_request() {
        let (ch, io, mut peer, _) = channel(ChannelConfig::default());
        let mut requests = ch.subscribe_requests::<Ping>();
        io.start(&ch);
        let payload = encode(&Ping { nonce: 9 }).unwrap();
        peer.send(Frame::request(Ping::ID, 77, payload))
            .await
            .unwrap();
        let (ping, responder) = requests.recv().await.unwrap();
        assert_eq!(ping, Ping { nonce: 9 });
        drop(responder);
        let f = peer.next().await.unwrap().unwrap();
        assert_eq!(
            (f.kind, f.msg_id, f.request_id),
            (FrameKind::Response, REFUSED_RESPONSE_ID, 77)
        );
    }

    #[tokio::test]
    async fn closing_ends_subscriptions_and_pending_requests() {
        let (ch, io, mut peer, _) = channel(ChannelConfig::default());
        let mut pongs = ch.subscribe::<Pong>();
        io.start(&ch);
        let requester = ch.clone();
        let pending =
            tokio::spawn(async move { requester.request::<Ping, Pong>(&Ping { nonce: 1 }).await });
        let f = peer.next().await.unwrap().unwrap();
        assert_eq!(f.kind, FrameKind::Request);
        let bye = encode(&Disconnect {
            reason: DisconnectReason::other("bye"),
        })
        .unwrap();
        peer.send(Frame::message(Disconnect::ID, bye))
            .await
            .unwrap();
        assert_eq!(
            ch.closed().await,
            CloseReason::Remote(DisconnectReason::Other("bye".into()))
        );
        assert!(pongs.recv().await.is_none());
        assert!(matches!(
            pending.await.unwrap(),
            Err(NodeError::Closed(CloseReason::Remote(_)))
        ));
        assert!(matches!(
            ch.send(&Pong { nonce: 2 }).await,
            Err(NodeError::Closed(_))
        ));
    }
}
