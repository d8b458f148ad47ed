//! [`Channel`]: one authenticated connection to one peer.
//!
//! A channel owns two tasks. The **writer** owns the write half: senders
//! serialize their frames straight into a shared, bounded byte buffer (see
//! `outbox`), and the writer takes everything waiting there (up to
//! [`ChannelConfig::batch_bytes`] and a frame) and writes and flushes it
//! once, so the secure stream below seals the whole batch in one AEAD
//! call. On a quiet channel a sender writes its frame itself instead (no
//! task switch for either side of a request/response exchange; the sends
//! that follow without a read in between go to the writer, batched: see
//! `outbox`). The **reader** decodes frames, meters them (see
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
//! # Several streams (QUIC)
//! On a connection whose transport carries several independent streams
//! ([`knotwork_core::Transport::substreams`]), one-way messages do not
//! share one byte stream:
//!
//! | stream | carries |
//! |---|---|
//! | the first stream | the version exchange, control (`Disconnect`), ping and pong, every request and every response |
//! | one stream per one-way message type | the messages of that type, opened by the sender on its first message of the type |
//!
//! Each stream has its own writer (and send queue) on the sending side and
//! its own reader on the receiving side, so a subscriber that stops
//! reading stalls only its type's stream: flow control stops that stream's
//! sender, while ping, requests and other types go on. A stream carries
//! what its first frame says and nothing else: another type, a request, a
//! response, a control message, or a second stream of a type already
//! streaming is [`Offence::WrongStream`] (the peer is banned). All streams
//! share the channel's meter (budgets and misbehaviour score). Order holds
//! within a type, not across types; messages still on a type's stream when
//! the channel closes may arrive after the `Disconnect`, and are dropped
//! then. Over TCP, BLE and the memory transport everything shares the one
//! stream, and a stalled subscriber stalls the channel (up to the ping
//! timeout).
//!
//! Protocols attached to a channel run as its [`Jobs`](crate::jobs::Jobs); when
//! the channel closes (either side, any reason) every job is aborted, every
//! subscription ends and every pending request fails with
//! [`NodeError::Closed`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use futures::task::AtomicWaker;
use knotwork_core::sync::Flag;
use knotwork_core::{PeerAddr, PeerId, Substreams, lock};
use knotwork_wire::{Frame, FrameCodec, FrameKind, FrameRef, Message, WireError, decode};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::codec::FramedParts;

use crate::buffers::BufferedBytes;
use crate::error::{CloseReason, DisconnectReason, NodeError};
use crate::frames::FrameReader;
use crate::meter::{Meter, MeterConfig, Offence, RateBudget, TokenBucket, Verdict};
use crate::metrics::{Direction, Tally};
use crate::outbox::{Limits, Outbox, PushError};
use crate::registry::SessionKind;
use crate::subsystem::{
    Delivery, Dispatcher, Kind, MessageSubsystem, RequestSubscription, Served, Subscriber,
    Subscription,
};
use crate::version::{Disconnect, Version};
use knotwork_compress::{Compression, Deflate, Inflate};
use knotwork_crypto_handshake::BUSY_BURST;
use requests::{Arm, Pending, Requests};

/// The message id of a response that says "no answer": the peer has no
/// handler for the request, or its handler dropped it.
pub const REFUSED_RESPONSE_ID: u32 = 0;

/// A request timeout longer than this waits this long: thirty years.
const FOREVER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

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

/// The empty response that says "this node has no handler for the request's
/// type": the requester gets [`NodeError::Unsupported`] and may fall back to
/// an older version of its protocol. Costs the requester nothing (within a
/// budget of unknown types, see the reader).
#[derive(Serialize, Deserialize)]
pub(crate) struct Unsupported;

impl Message for Unsupported {
    const NAME: &'static str = "knot/unsupported/1";
    // A unit struct encodes to nothing.
    const MAX_BYTES: usize = 0;
}

/// The empty response that says "over this type's rate budget, not
/// handled": the requester gets [`NodeError::RateLimited`].
#[derive(Serialize, Deserialize)]
pub(crate) struct RateLimited;

impl Message for RateLimited {
    const NAME: &'static str = "knot/rate-limited/1";
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
    /// The best compression this node offers (default none). A channel
    /// compresses only when both nodes offer it; see [`knotwork_compress`].
    pub compression: Compression,
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
            compression: Compression::None,
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

struct Inner {
    info: ChannelInfo,
    config: Arc<ChannelConfig>,
    out: Outbox,
    subsystem: MessageSubsystem,
    /// Requests waiting for their responses.
    requests: Requests,
    next_request_id: AtomicU32,
    jobs: crate::jobs::Jobs,
    /// Budgets and misbehaviour score, shared by the readers of all streams.
    meter: Mutex<Meter>,
    /// The compression both nodes agreed on (see [`knotwork_compress`]).
    compression: Compression,
    /// The connection's further streams and their queues, if its transport
    /// has them (boxed: most channels have none).
    lanes: Option<Box<Lanes>>,
    /// The last ping's round trip in nanoseconds (at least 1), 0 before
    /// the first.
    rtt: AtomicU64,
    reason: Mutex<Option<CloseReason>>,
    /// What the peer did to be closed for misbehaviour (a metrics label).
    misbehaviour: OnceLock<&'static str>,
    /// Raised when the channel starts closing.
    closing: Flag,
    /// The first stream's reader while it waits for bytes: `begin_close`
    /// wakes it (see `io::FirstStream`).
    reader: AtomicWaker,
    /// Raised when the writer task has ended (its last bytes written, or
    /// abandoned after the drain timeout).
    written: Flag,
    /// Raised when the channel is fully closed and cleaned up.
    closed: Flag,
    /// Called once, right after `closed` is raised (see
    /// [`Channel::on_closed`]).
    on_closed: Mutex<Option<ClosedHook>>,
}

/// What runs when a channel has closed: the node's clean-up.
type ClosedHook = Box<dyn FnOnce(&Channel, CloseReason) + Send>;

/// A connection's further streams (see the module docs).
struct Lanes {
    substreams: Arc<dyn Substreams>,
    /// The send queue of each one-way message type on a stream of its own;
    /// types are ours, so this is bounded.
    outbound: Mutex<HashMap<u32, Arc<Outbox>>>,
    /// Message types the peer streams to us now, one stream each (at most
    /// as many as the transport lets it open at once).
    inbound: Mutex<HashSet<u32>>,
}

impl Inner {
    fn begin_close(&self) {
        self.closing.raise();
        self.reader.wake();
        // The writers wait for frames or `closing` on one notification.
        self.out.wake_writer();
        if let Some(lanes) = &self.lanes {
            for out in lock(&lanes.outbound).values() {
                out.wake_writer();
            }
        }
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
    /// With `substreams`, one-way messages get streams of their own (see
    /// the module docs).
    pub(crate) fn new<S>(
        parts: FramedParts<S, FrameCodec>,
        info: ChannelInfo,
        config: Arc<ChannelConfig>,
        substreams: Option<Arc<dyn Substreams>>,
    ) -> (Self, Unstarted<S>) {
        let meter = Meter::new(config.meter, Instant::now().into_std());
        let compression = config.compression.agree(&info.version.protocols);
        // Senders may write to the stream themselves, unless the writer
        // packs what it writes into blocks.
        let out = outbox(&config, compression == Compression::None);
        let inner = Arc::new(Inner {
            compression,
            info,
            config,
            out,
            subsystem: MessageSubsystem::default(),
            requests: Requests::default(),
            next_request_id: AtomicU32::new(1),
            jobs: crate::jobs::Jobs::default(),
            meter: Mutex::new(meter),
            lanes: substreams.map(|substreams| {
                Box::new(Lanes {
                    substreams,
                    outbound: Mutex::new(HashMap::new()),
                    inbound: Mutex::new(HashSet::new()),
                })
            }),
            rtt: AtomicU64::new(0),
            reason: Mutex::new(None),
            misbehaviour: OnceLock::new(),
            closing: Flag::default(),
            reader: AtomicWaker::new(),
            written: Flag::default(),
            closed: Flag::default(),
            on_closed: Mutex::new(None),
        });
        let channel = Self { inner };
        channel.register::<Disconnect>();
        channel.register::<Refused>();
        channel.register::<Unsupported>();
        channel.register::<RateLimited>();
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

    /// The compression this channel uses: the best both nodes offer.
    pub fn compression(&self) -> Compression {
        self.inner.compression
    }

    /// The last round-trip time measured by the ping protocol.
    pub fn rtt(&self) -> Option<Duration> {
        match self.inner.rtt.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// Records a ping round-trip time (and feeds the RTT histogram).
    pub(crate) fn set_rtt(&self, rtt: Duration) {
        let nanos = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.inner.rtt.store(nanos, Ordering::Relaxed);
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
        self.inner.out.stream().map_or(0, |s| s.capacity())
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
        self.inner.closing.is_raised()
    }

    /// Waits until the channel is closed; returns why. By then the writer
    /// has ended: what was queued (a closing `Disconnect` among it) has
    /// been written, or abandoned after the drain timeout.
    pub async fn closed(&self) -> CloseReason {
        self.inner.closed.raised().await;
        self.close_reason().unwrap_or(CloseReason::Eof)
    }

    /// Calls `hook` once the channel has closed (at once if it has): in
    /// the reader task as it ends, so a channel needs no task of its own
    /// waiting for that. Replaces a hook set before.
    pub(crate) fn on_closed(&self, hook: impl FnOnce(&Channel, CloseReason) + Send + 'static) {
        let mut slot = lock(&self.inner.on_closed);
        // The reader raises `closed` before it takes the hook, both under
        // this lock's order: a hook set after the take runs here.
        if self.inner.closed.is_raised() {
            drop(slot);
            hook(self, self.close_reason().unwrap_or(CloseReason::Eof));
        } else {
            *slot = Some(Box::new(hook));
        }
    }

    /// Runs the hook set by [`Channel::on_closed`], if any (the reader,
    /// once `closed` is raised).
    fn run_closed_hook(&self) {
        let hook = lock(&self.inner.on_closed).take();
        if let Some(hook) = hook {
            hook(self, self.close_reason().unwrap_or(CloseReason::Eof));
        }
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

    /// Adds `sub` as a subscriber of `kind` frames of type `M` (with the
    /// type's size limit and budget), unless the channel is closed.
    fn attach<M: Message>(&self, kind: Kind, sub: Arc<dyn Subscriber>) {
        self.register::<M>();
        if !self.is_closed() {
            let budget = self.inner.config.budget(M::ID);
            self.inner
                .subsystem
                .add(kind, M::ID, M::MAX_BYTES, budget, sub);
        }
    }

    /// Subscribes to one-way messages of type `M`. Subscribe before the
    /// peer sends: a message of a type nobody subscribed to counts as
    /// misbehaviour.
    pub fn subscribe<M: Message>(&self) -> Subscription<M> {
        let (sub, erased) = Subscription::new(self.inner.config.subscription_capacity);
        self.attach::<M>(Kind::Message, erased);
        sub
    }

    /// Subscribes to requests of type `M`; answer each with its [`Responder`].
    pub fn subscribe_requests<M: Message>(&self) -> RequestSubscription<M> {
        let (sub, erased) = RequestSubscription::new(self.inner.config.subscription_capacity);
        self.attach::<M>(Kind::Request, erased);
        sub
    }

    /// Answers every request of type `Req` with `handler(request)`, called
    /// by the channel's reader as each request arrives: no task, no queue
    /// and no [`Responder`] between the request and its answer, so a round
    /// trip costs less than with [`Channel::subscribe_requests`]. For
    /// answers computed from what is at hand (a lookup, an echo, a
    /// counter): the handler must return quickly and never block, since
    /// nothing else is read from this peer while it runs. A handler that
    /// has to wait for anything (I/O, another peer, a lock held across an
    /// await) belongs in a task with `subscribe_requests`.
    ///
    /// A response that finds the send queue full makes the reader wait for
    /// room, as a full subscription does. One that does not encode (larger
    /// than `Resp::MAX_BYTES`), or a handler that panics, is logged and the
    /// request refused ([`NodeError::RequestRefused`] at the requester); the
    /// channel goes on.
    pub fn serve<Req, Resp, F>(&self, handler: F)
    where
        Req: Message,
        Resp: Message + Send + Sync + 'static,
        F: Fn(Req) -> Resp + Send + Sync + 'static,
    {
        self.attach::<Req>(Kind::Request, Arc::new(Served::new(handler)));
    }

    /// Queues `resp` as the answer to request `request_id` (an inline
    /// handler's, see [`Channel::serve`]); waits only if the queue is full.
    pub(crate) fn answer<'a, M: Message + Send + Sync + 'static>(
        &self,
        request_id: u32,
        resp: M,
    ) -> Delivery<'a> {
        let out = &self.inner.out;
        match out.try_push(FrameKind::Response, request_id, &resp) {
            Ok(()) | Err(PushError::Closed) => Delivery::Done,
            Err(PushError::Full) => {
                let channel = self.clone();
                Delivery::Wait(Box::pin(async move {
                    let out = &channel.inner.out;
                    let _ = out.push(FrameKind::Response, request_id, &resp).await;
                }))
            }
            Err(PushError::Encode(e)) => {
                tracing::warn!(peer = %self.inner.info.peer_id.short(), response = M::NAME, "inline handler's response does not encode, request refused: {e}");
                self.refuse(request_id);
                Delivery::Done
            }
        }
    }

    /// Refuses request `request_id` (best effort: if the send queue is
    /// full, the requester times out instead).
    pub(crate) fn refuse(&self, request_id: u32) {
        let _ = self
            .inner
            .out
            .try_push(FrameKind::Response, request_id, &Refused);
    }

    /// The send queue of one-way messages of type `id` when they have a
    /// stream of their own (see the module docs), started on first use;
    /// `None`: the first stream's.
    #[inline]
    fn lane(&self, kind: FrameKind, id: u32) -> Option<Arc<Outbox>> {
        // Most transports have one stream: that check stays in the caller.
        let all = self.inner.lanes.as_deref()?;
        if kind != FrameKind::Message || on_first_stream(id) {
            return None;
        }
        self.lane_of(all, id)
    }

    /// [`Channel::lane`] on a connection with several streams.
    #[inline(never)]
    fn lane_of(&self, all: &Lanes, id: u32) -> Option<Arc<Outbox>> {
        let mut lanes = lock(&all.outbound);
        if let Some(lane) = lanes.get(&id) {
            return Some(lane.clone());
        }
        let lane = Arc::new(outbox(&self.inner.config, false));
        lanes.insert(id, lane.clone());
        tokio::spawn(io::lane_loop(
            self.clone(),
            all.substreams.clone(),
            lane.clone(),
        ));
        Some(lane)
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
        let lane = self.lane(kind, M::ID);
        let out = lane.as_deref().unwrap_or(&self.inner.out);
        // Fast path: room in the outbox, no future to set up.
        let pushed = match out.try_push(kind, request_id, msg) {
            Ok(()) => {
                // Stay fair: a tight send loop still yields now and then.
                tokio::task::consume_budget().await;
                Ok(())
            }
            // Boxed: inline, the wait for room made every future that
            // sends (a protocol's whole job, idle or not) about 200 bytes
            // larger; a full queue is the slow path anyway.
            Err(PushError::Full) => Box::pin(out.push(kind, request_id, msg)).await,
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

    /// Sends a one-way message if the send queue has room now, else fails
    /// with [`NodeError::QueueFull`] at once. For work one peer causes that
    /// goes to another (relaying, forwarding): it must never wait on the
    /// other peer's outbox, or a slow peer stalls the first one's channel.
    pub fn try_send<M: Message>(&self, msg: &M) -> Result<(), NodeError> {
        if self.is_closed() {
            return Err(self.closed_error());
        }
        let lane = self.lane(FrameKind::Message, M::ID);
        let out = lane.as_deref().unwrap_or(&self.inner.out);
        match out.try_push(FrameKind::Message, 0, msg) {
            Ok(()) => Ok(()),
            Err(PushError::Full) => Err(NodeError::QueueFull),
            Err(PushError::Encode(e)) => Err(e.into()),
            Err(PushError::Closed) => Err(self.closed_error()),
        }
    }

    /// Sends request `req` and waits for the response its type names
    /// ([`knotwork_wire::Request`]), at most [`ChannelConfig::request_timeout`].
    pub async fn call<R: knotwork_wire::Request>(&self, req: &R) -> Result<R::Response, NodeError> {
        self.request::<R, R::Response>(req).await
    }

    /// Sends a request and waits for its response, at most
    /// [`ChannelConfig::request_timeout`].
    pub async fn request<Req: Message, Resp: Message>(&self, req: &Req) -> Result<Resp, NodeError> {
        self.request_timeout(req, self.inner.config.request_timeout)
            .await
    }

    /// Sends a request and waits for its response, at most `timeout` from
    /// the call (a wait for room in the send queue counts); then fails with
    /// [`NodeError::RequestTimeout`].
    pub async fn request_timeout<Req: Message, Resp: Message>(
        &self,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, NodeError> {
        // (Sent types are registered by the outbox as they go out.)
        self.register::<Resp>();
        if self.is_closed() {
            // (Before the entry: no sweeper for a closed channel.)
            return Err(self.closed_error());
        }
        let id = loop {
            let id = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                break id;
            }
        };
        let now = Instant::now();
        // (A timeout past any real one waits as good as forever; thirty
        // years from now is an `Instant`, so the fallback is never taken.)
        let deadline = now.checked_add(timeout.min(FOREVER)).unwrap_or(now);
        let pending = Pending::new(Resp::ID, Resp::MAX_BYTES, deadline);
        if self.inner.requests.insert(id, pending) == Arm::Start {
            tokio::spawn(requests::sweep(Arc::downgrade(&self.inner), |i: &Inner| {
                &i.requests
            }));
        }
        // Remove the entry however this future ends (timeout, cancellation),
        // unless the answer took it.
        struct Cleanup<'a>(&'a Inner, Option<u32>);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                if let Some(id) = self.1 {
                    self.0.requests.remove(id);
                }
            }
        }
        let mut cleanup = Cleanup(&self.inner, Some(id));
        self.send_frame(FrameKind::Request, id, req).await?;
        let answer = std::future::poll_fn(|cx| self.inner.requests.poll_answer(id, cx)).await;
        cleanup.1 = None;
        let frame = match answer {
            Some(frame) => frame,
            // The sweeper dropped the request: its time was up.
            None if requests::expired(deadline, Instant::now()) => {
                return Err(NodeError::RequestTimeout);
            }
            None => return Err(self.closed_error()),
        };
        match frame.msg_id {
            id if id == Resp::ID => Ok(decode::<Resp>(&frame.payload)?),
            REFUSED_RESPONSE_ID => Err(NodeError::RequestRefused),
            id if id == Unsupported::ID => Err(NodeError::Unsupported(Req::NAME)),
            id if id == RateLimited::ID => Err(NodeError::RateLimited(Req::NAME)),
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

    /// Whether the peer announced protocol `name` (say `example/echo/2`) in
    /// its version message: ask before sending a newer version's messages.
    pub fn speaks(&self, name: &str) -> bool {
        self.inner.info.version.protocols.iter().any(|p| p == name)
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

/// A send queue with the limits of `config`; see [`Outbox::new`] for
/// `direct`.
fn outbox(config: &ChannelConfig, direct: bool) -> Outbox {
    Outbox::new(
        FrameCodec::with_max_frame_len(config.max_frame_len),
        Limits {
            frames: config.send_queue,
            bytes: config.batch_bytes,
        },
        config.metrics.clone(),
        direct,
    )
}

/// Whether one-way messages of type `id` stay on the first stream when
/// there are several: control and ping, so that liveness never waits
/// behind a type's stream.
fn on_first_stream(id: u32) -> bool {
    use crate::protocol::ping::{Ping, Pong};
    id == Disconnect::ID || id == Ping::ID || id == Pong::ID
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
            self.channel.refuse(self.request_id);
        }
    }
}

mod io;
mod requests;

#[cfg(test)]
mod tests;
