//! [`MessageSubsystem`]: dispatches inbound frames by message id to typed,
//! bounded subscriptions.
//!
//! There is one dispatcher per message type and frame kind (one-way messages
//! and requests are separate). Each holds the type's `MAX_BYTES`, its
//! [`RateBudget`] and its subscribers. The channel's reader hands every frame
//! to the dispatcher of its message id; each subscriber decodes the payload
//! into its own typed value and puts it in its bounded queue. A full queue
//! makes the reader wait (which stops reading the socket and so slows the
//! peer through TCP flow control); nothing is dropped.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use knotwork_wire::{Message, WireError, decode};

use crate::channel::{Channel, Responder};
use crate::meter::RateBudget;
use crate::queue::{self, TrySendError};

/// A delivery that has to wait for room in a full queue.
pub(crate) type Pending<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What delivering one payload to one subscriber did.
pub(crate) enum Delivery<'a> {
    /// Queued.
    Done,
    /// The subscriber is gone.
    Gone,
    /// The queue is full; await this to deliver.
    Wait(Pending<'a>),
}

/// A type-erased subscriber: decodes a payload into its type and queues it.
pub(crate) trait Subscriber: Send + Sync {
    fn deliver<'a>(
        &'a self,
        payload: &[u8],
        request_id: u32,
        channel: &Channel,
    ) -> Result<Delivery<'a>, WireError>;
}

/// Queues `item`, or (its queue full) the wait for room.
fn queue_item<T: Send>(tx: &queue::Sender<T>, item: T) -> Delivery<'_> {
    match tx.try_send(item) {
        Ok(()) => Delivery::Done,
        Err(TrySendError::Closed) => Delivery::Gone,
        Err(TrySendError::Full(item)) => Delivery::Wait(Box::pin(async move {
            tx.send(item).await;
        })),
    }
}

struct MessageSub<M>(queue::Sender<M>);

impl<M: Message> Subscriber for MessageSub<M> {
    fn deliver<'a>(
        &'a self,
        payload: &[u8],
        _: u32,
        _: &Channel,
    ) -> Result<Delivery<'a>, WireError> {
        Ok(queue_item(&self.0, decode::<M>(payload)?))
    }
}

struct RequestSub<M>(queue::Sender<(M, Responder)>);

impl<M: Message> Subscriber for RequestSub<M> {
    fn deliver<'a>(
        &'a self,
        payload: &[u8],
        request_id: u32,
        channel: &Channel,
    ) -> Result<Delivery<'a>, WireError> {
        let msg = decode::<M>(payload)?;
        let item = (msg, Responder::new(channel.clone(), request_id));
        Ok(queue_item(&self.0, item))
    }
}

/// A request handler the reader runs itself ([`Channel::serve`]).
pub(crate) struct Served<Req, Resp, F> {
    handler: F,
    types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp, F> Served<Req, Resp, F> {
    pub(crate) fn new(handler: F) -> Self {
        Self {
            handler,
            types: PhantomData,
        }
    }
}

impl<Req, Resp, F> Subscriber for Served<Req, Resp, F>
where
    Req: Message,
    Resp: Message + Send + Sync + 'static,
    F: Fn(Req) -> Resp + Send + Sync,
{
    fn deliver<'a>(
        &'a self,
        payload: &[u8],
        request_id: u32,
        channel: &Channel,
    ) -> Result<Delivery<'a>, WireError> {
        let req = decode::<Req>(payload)?;
        // The reader runs the handler: a panic in it must not end the
        // reader (and with it the channel, never closed); the request is
        // refused instead.
        match std::panic::catch_unwind(AssertUnwindSafe(|| (self.handler)(req))) {
            Ok(resp) => Ok(channel.answer(request_id, resp)),
            Err(_) => {
                tracing::error!(peer = %channel.remote_peer_id().short(), request = Req::NAME, "inline handler panicked, request refused");
                channel.refuse(request_id);
                Ok(Delivery::Done)
            }
        }
    }
}

/// Everything the reader needs to know about one message type.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    pub(crate) max_bytes: usize,
    pub(crate) budget: RateBudget,
    /// One allocation for the list (an `Arc<Vec>` took two, and a `Vec`
    /// grows to four slots on its first push).
    pub(crate) subscribers: Arc<[Arc<dyn Subscriber>]>,
}

/// Which frames a dispatcher is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Message,
    Request,
}

/// Message-type dispatchers of one channel; see the module docs.
#[derive(Default)]
pub struct MessageSubsystem {
    dispatchers: Mutex<HashMap<(Kind, u32), Dispatcher>>,
    /// Bumped on every change, so the reader can cache lookups.
    generation: AtomicU64,
}

impl MessageSubsystem {
    fn lock(&self) -> MutexGuard<'_, HashMap<(Kind, u32), Dispatcher>> {
        self.dispatchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add(
        &self,
        kind: Kind,
        id: u32,
        max_bytes: usize,
        budget: RateBudget,
        sub: Arc<dyn Subscriber>,
    ) {
        let mut map = self.lock();
        let d = map.entry((kind, id)).or_insert_with(|| Dispatcher {
            max_bytes,
            budget,
            subscribers: Arc::new([]),
        });
        let subs = d.subscribers.iter().cloned().chain(std::iter::once(sub));
        d.subscribers = subs.collect();
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Changes whenever a subscriber is added or all are dropped.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The dispatcher for a frame, if anyone ever subscribed to its type.
    pub(crate) fn dispatcher(&self, kind: Kind, id: u32) -> Option<Dispatcher> {
        self.lock().get(&(kind, id)).cloned()
    }

    /// Drops every subscriber: their `recv` returns `None` once drained.
    pub(crate) fn clear(&self) {
        self.lock().clear();
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Whether anyone subscribed to one-way messages of type `M`.
    pub fn is_subscribed<M: Message>(&self) -> bool {
        self.lock().contains_key(&(Kind::Message, M::ID))
    }
}

/// A bounded queue of `M`s received on one channel.
pub struct Subscription<M> {
    rx: queue::Receiver<M>,
}

impl<M: Message> Subscription<M> {
    pub(crate) fn new(capacity: usize) -> (Self, Arc<dyn Subscriber>) {
        let (tx, rx) = queue::bounded(capacity);
        (Self { rx }, Arc::new(MessageSub(tx)))
    }

    /// The next message; `None` once the channel closed and the queue is empty.
    /// Cancel-safe.
    pub fn recv(&mut self) -> impl Future<Output = Option<M>> + '_ {
        self.rx.recv()
    }

    /// [`Subscription::recv`] for a hand-written future or stream: the next
    /// message if one is queued (`Ready(None)` once the channel closed and
    /// the queue is empty), else `Pending`, and `cx` is woken when that
    /// changes.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<M>> {
        self.rx.poll_recv(cx)
    }
}

/// A bounded queue of requests of type `M`, each with its [`Responder`].
pub struct RequestSubscription<M> {
    rx: queue::Receiver<(M, Responder)>,
}

impl<M: Message> RequestSubscription<M> {
    pub(crate) fn new(capacity: usize) -> (Self, Arc<dyn Subscriber>) {
        let (tx, rx) = queue::bounded(capacity);
        (Self { rx }, Arc::new(RequestSub(tx)))
    }

    /// The next request; `None` once the channel closed and the queue is empty.
    /// Cancel-safe.
    pub fn recv(&mut self) -> impl Future<Output = Option<(M, Responder)>> + '_ {
        self.rx.recv()
    }

    /// [`RequestSubscription::recv`] for a hand-written future or stream;
    /// see [`Subscription::poll_recv`].
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<(M, Responder)>> {
        self.rx.poll_recv(cx)
    }
}
