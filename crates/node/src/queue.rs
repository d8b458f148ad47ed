//! A bounded queue that holds no memory while empty: the queue of each
//! subscription (the channel's reader produces, the subscriber consumes;
//! a channel's send side is `outbox`: bytes, not items).
//!
//! `tokio::sync::mpsc` allocates its first block of 32 slots when the
//! channel is made: 1.1-1.8 KiB per subscription, and a channel has a
//! dozen subscriptions (ping, address, relay, ...), most of which never
//! see a message. Here the items live in a `VecDeque` that grows on the
//! first push and, past a few slots, is freed again when the consumer
//! empties it, so an idle queue costs one small `Arc`.
//!
//! The consumer takes everything queued at once into a batch of its own
//! (one lock per batch, not per item), so up to twice `capacity` items can
//! be in memory: `capacity` queued and a batch being consumed. A lone item
//! is taken without a batch, and the batch (boxed: an idle receiver is one
//! pointer bigger, not a whole `VecDeque`) goes when the queue is found
//! empty.
//!
//! Wake-ups: the one consumer waits only after it found the queue empty:
//! it leaves its waker in an [`AtomicWaker`] and looks once more, so a
//! push between its first look and the registration is not missed, and
//! the push that ends an empty queue wakes it (pushes onto a queue that
//! still holds items skip the wake). Waiting is [`Receiver::poll_recv`]:
//! a receive in progress is no bigger than the receiver's own reference
//! (a `Notified` future made every subscriber's waiting future 64 bytes
//! larger, three times over in a protocol that selects over three
//! subscriptions). Senders waiting for room register before they look
//! (`Notified::enable`) and a pop from a full queue wakes them all, so a
//! waiter that gives up (a timed-out send) cannot swallow the wake-up of
//! another.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio::sync::Notify;

/// Slots an emptied queue keeps (the first push allocates about this many).
const KEEP: usize = 4;

struct State<T> {
    items: VecDeque<T>,
    /// At most this many items (at least 1). In here, beside the flags,
    /// it fills padding; outside, it made each queue's allocation 16 bytes
    /// larger (a dozen queues per channel).
    capacity: u32,
    /// The sender was dropped.
    sender_gone: bool,
    /// The receiver was dropped.
    receiver_gone: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// The waiting consumer: woken on push and when the sender goes.
    item: AtomicWaker,
    /// Wakes every waiting sender on pop and when the receiver goes.
    room: Notify,
}

impl<T> State<T> {
    fn full(&self) -> bool {
        self.items.len() >= self.capacity as usize
    }
}

impl<T> Shared<T> {
    #[inline]
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        knotwork_core::lock(&self.state)
    }
}

/// Why [`Sender::try_send`] gave the item back.
pub(crate) enum TrySendError<T> {
    /// The queue holds `capacity` items.
    Full(T),
    /// The receiver is gone.
    Closed,
}

/// The producing end.
pub(crate) struct Sender<T>(Arc<Shared<T>>);

/// The consuming end: the queue and the batch taken from it.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
    // Boxed on purpose: an idle receiver holds 8 bytes here, not 32 (a
    // dozen receivers per channel; see the module docs).
    #[allow(clippy::box_collection)]
    batch: Option<Box<VecDeque<T>>>,
}

/// A queue of at most `capacity` (at least 1) items.
pub(crate) fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX).max(1),
            sender_gone: false,
            receiver_gone: false,
        }),
        item: AtomicWaker::new(),
        room: Notify::new(),
    });
    let rx = Receiver {
        shared: shared.clone(),
        batch: None,
    };
    (Sender(shared), rx)
}

impl<T> Sender<T> {
    /// Queues `item` if there is room.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let was_empty = {
            let mut state = self.0.lock();
            if state.receiver_gone {
                return Err(TrySendError::Closed);
            }
            if state.full() {
                return Err(TrySendError::Full(item));
            }
            state.items.push_back(item);
            state.items.len() == 1
        };
        // The consumer waits only after it found the queue empty, so only
        // the push that ends an empty queue need wake it.
        if was_empty {
            self.0.item.wake();
        }
        Ok(())
    }

    /// Queues `item`, waiting for room; `false` if the receiver is gone.
    pub(crate) async fn send(&self, mut item: T) -> bool {
        loop {
            let room = self.0.room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            match self.try_send(item) {
                Ok(()) => return true,
                Err(TrySendError::Closed) => return false,
                Err(TrySendError::Full(back)) => item = back,
            }
            room.await;
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.lock().sender_gone = true;
        self.0.item.wake();
    }
}

impl<T> Receiver<T> {
    /// The next item; `None` once the sender is gone and the queue empty.
    /// Cancel-safe: an item is taken only when this returns it.
    pub(crate) fn recv(&mut self) -> impl Future<Output = Option<T>> + '_ {
        std::future::poll_fn(|cx| self.poll_recv(cx))
    }

    /// The next item if there is one (`Ready(None)` once the sender is
    /// gone and the queue empty); else `Pending`, and `cx` is woken when
    /// that changes.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.pop() {
            Ok(item) => return Poll::Ready(Some(item)),
            Err(true) => return Poll::Ready(None),
            Err(false) => {}
        }
        // Registered before the second look: a push in between wakes us.
        self.shared.item.register(cx.waker());
        match self.pop() {
            Ok(item) => Poll::Ready(Some(item)),
            Err(true) => Poll::Ready(None),
            Err(false) => Poll::Pending,
        }
    }

    /// Takes the first item, or says whether the sender is gone.
    fn pop(&mut self) -> Result<T, bool> {
        if let Some(item) = self.batch.as_mut().and_then(|b| b.pop_front()) {
            return Ok(item);
        }
        let mut state = self.shared.lock();
        // Senders wait only on a full queue (and registered before they
        // saw it full), so only taking from a full queue wakes them.
        let was_full = state.full();
        let item = match state.items.len() {
            0 => {
                // Nothing queued: idle. A burst's slots go; a few stay so a
                // steady trickle does not allocate per item.
                let gone = state.sender_gone;
                if state.items.capacity() > KEEP {
                    state.items = VecDeque::new();
                }
                drop(state);
                self.batch = None;
                return Err(gone);
            }
            1 => state.items.pop_front(),
            _ => {
                // Take them all, leaving the batch's slots to the queue (busy,
                // they go back and forth).
                let batch = self.batch.get_or_insert_with(Box::default);
                std::mem::swap(&mut state.items, batch);
                batch.pop_front()
            }
        };
        drop(state);
        if was_full {
            self.shared.room.notify_waiters();
        }
        item.ok_or(false)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut state = self.shared.lock();
            state.receiver_gone = true;
            std::mem::take(&mut state.items)
        };
        // Dropped outside the lock (a `Responder` sends on drop).
        drop(items);
        self.shared.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn items_come_out_in_order_and_end_when_the_sender_goes() {
        let (tx, mut rx) = bounded(4);
        for i in 0..4 {
            assert!(tx.try_send(i).is_ok());
        }
        assert!(matches!(tx.try_send(9), Err(TrySendError::Full(9))));
        drop(tx);
        for i in 0..4 {
            assert_eq!(rx.recv().await, Some(i));
        }
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn an_empty_queue_frees_its_slots() {
        let (tx, mut rx) = bounded(64);
        assert_eq!(rx.shared.lock().items.capacity(), 0);
        for i in 0..10 {
            assert!(tx.try_send(i).is_ok());
        }
        assert!(rx.shared.lock().items.capacity() >= 10);
        for _ in 0..10 {
            rx.recv().await;
        }
        // The consumer finds it empty: the slots of queue and batch go.
        assert!(rx.pop().is_err());
        assert_eq!(rx.shared.lock().items.capacity(), 0);
        assert!(rx.batch.is_none());
        // A trickle keeps its few slots.
        assert!(tx.try_send(1).is_ok());
        rx.recv().await;
        assert!(rx.pop().is_err());
        assert!(rx.shared.lock().items.capacity() <= KEEP);
        assert!(rx.batch.is_none());
    }

    #[tokio::test]
    async fn the_consumer_takes_a_batch_and_senders_get_room_at_once() {
        let (tx, mut rx) = bounded(3);
        for i in 0..3 {
            assert!(tx.try_send(i).is_ok());
        }
        assert!(matches!(tx.try_send(9), Err(TrySendError::Full(9))));
        // One recv takes all three: the queue has room for three more
        // while the batch is consumed (at most twice the capacity in all).
        assert_eq!(rx.recv().await, Some(0));
        for i in 3..6 {
            assert!(tx.try_send(i).is_ok());
        }
        assert!(matches!(tx.try_send(9), Err(TrySendError::Full(9))));
        for i in 1..6 {
            assert_eq!(rx.recv().await, Some(i), "in order across batches");
        }
        assert!(rx.pop().is_err());
    }

    #[tokio::test]
    async fn a_full_queue_makes_the_sender_wait_for_room() {
        let (tx, mut rx) = bounded(1);
        assert!(tx.try_send(1).is_ok());
        let mut send = Box::pin(tx.send(2));
        assert!((&mut send).now_or_never().is_none(), "full: waits");
        assert_eq!(rx.recv().await, Some(1));
        assert!(send.await);
        assert_eq!(rx.recv().await, Some(2));
    }

    #[tokio::test]
    async fn the_receiver_is_woken_by_a_later_push_and_by_the_sender_going() {
        let (tx, mut rx) = bounded::<u32>(2);
        let consumer = tokio::spawn(async move { (rx.recv().await, rx.recv().await) });
        tokio::task::yield_now().await;
        assert!(tx.send(7).await);
        drop(tx);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), consumer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, (Some(7), None));
    }

    #[tokio::test]
    async fn every_waiting_sender_gets_in_even_when_one_gives_up() {
        let (tx, mut rx) = bounded(1);
        let tx = Arc::new(tx);
        assert!(tx.try_send(0).is_ok());
        let mut senders = tokio::task::JoinSet::new();
        for i in 1..=3 {
            let tx = tx.clone();
            senders.spawn(async move { tx.send(i).await });
        }
        // One more waits and gives up: its wake-up must not be lost.
        let quitter = tokio::time::timeout(std::time::Duration::from_millis(1), tx.send(9));
        assert!(quitter.await.is_err());
        let mut got = Vec::new();
        for _ in 0..4 {
            let item = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv());
            got.push(item.await.unwrap().unwrap());
        }
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3]);
        assert!(rx.pop().is_err());
        while let Some(sent) = senders.join_next().await {
            assert!(sent.unwrap());
        }
    }

    #[tokio::test]
    async fn a_dropped_receiver_closes_the_queue_for_a_waiting_sender() {
        let (tx, rx) = bounded(1);
        assert!(tx.try_send(1).is_ok());
        let sender = tokio::spawn(async move { tx.send(2).await });
        tokio::task::yield_now().await;
        drop(rx);
        let sent = tokio::time::timeout(std::time::Duration::from_secs(5), sender)
            .await
            .unwrap()
            .unwrap();
        assert!(!sent);
    }
}
