//! Ping: liveness and round-trip time of every channel.
//!
//! Each side sends a `Ping` carrying a random nonce every
//! [`PingConfig::interval`], one at a time, and answers every `Ping` it
//! receives with a `Pong` carrying the same nonce. When the matching `Pong`
//! arrives, the time since the `Ping` left is the channel's round-trip time
//! ([`Channel::rtt`]). If no matching `Pong` arrives within
//! [`PingConfig::timeout`], the peer is considered gone and the channel is
//! closed with [`DisconnectReason::PingTimeout`]; the same happens if a ping
//! or pong cannot even be queued within the timeout because the peer stopped
//! reading. Pongs with another nonce (late answers to nothing outstanding)
//! are ignored.
//!
//! A `Ping` sent as a request (as `knot ping` does) is answered with a
//! `Pong` response, so a tool can time single round trips itself.
//!
//! The bookkeeping is [`PingState`], a sans-IO state machine: time arrives as
//! `now`, [`PingState::poll_timeout`] says when to call
//! [`PingState::handle_timeout`] next, which says whether to send a ping or
//! give up. The driver at the bottom connects it to a channel.

use std::time::{Duration, Instant};

use knotwork_wire::Message;
use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::error::DisconnectReason;
use crate::meter::RateBudget;

/// Asks the peer to answer with a [`Pong`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed in the pong.
    pub nonce: u64,
}

impl Message for Ping {
    const NAME: &'static str = "knot/ping/1";
    // nonce: u64 varint, at most 10 bytes.
    const MAX_BYTES: usize = 10;
}

/// The answer to a [`Ping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The ping's nonce.
    pub nonce: u64,
}

impl Message for Pong {
    const NAME: &'static str = "knot/pong/1";
    // nonce: u64 varint, at most 10 bytes.
    const MAX_BYTES: usize = 10;
}

/// A ping sent as a request is answered with a pong (`Channel::call`).
impl knotwork_wire::Request for Ping {
    type Response = Pong;
}

/// The rate budget of pings and pongs: an honest peer sends one per interval.
pub const BUDGET: RateBudget = RateBudget::new(20.0, 40);

/// Timing of the ping protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingConfig {
    /// Time between pings.
    pub interval: Duration,
    /// How long to wait for a pong before closing the channel.
    pub timeout: Duration,
}

impl Default for PingConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(20),
        }
    }
}

/// What [`PingState::handle_timeout`] asks the driver to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingAction {
    /// Send `Ping { nonce }`.
    Send(u64),
    /// No pong in time: close the channel.
    TimedOut,
}

/// The sans-IO ping bookkeeping of one channel; see the module docs.
#[derive(Clone, Debug)]
pub struct PingState {
    config: PingConfig,
    next_ping: Instant,
    outstanding: Option<(u64, Instant)>,
    rtt: Option<Duration>,
}

impl PingState {
    /// A state that pings first at `now`.
    pub fn new(config: PingConfig, now: Instant) -> Self {
        Self {
            config,
            next_ping: now,
            outstanding: None,
            rtt: None,
        }
    }

    /// The last measured round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// When [`PingState::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Instant {
        match self.outstanding {
            Some((_, sent)) => sent + self.config.timeout,
            None => self.next_ping,
        }
    }

    /// Handles the passage of time up to `now`. `nonce` is a fresh random
    /// value, used if a ping is due.
    pub fn handle_timeout(&mut self, now: Instant, nonce: u64) -> Option<PingAction> {
        match self.outstanding {
            Some((_, sent)) if now >= sent + self.config.timeout => Some(PingAction::TimedOut),
            Some(_) => None,
            None if now >= self.next_ping => {
                self.outstanding = Some((nonce, now));
                self.next_ping = now + self.config.interval;
                Some(PingAction::Send(nonce))
            }
            None => None,
        }
    }

    /// Handles a pong received at `now`; returns the RTT if it matched.
    pub fn handle_pong(&mut self, nonce: u64, now: Instant) -> Option<Duration> {
        match self.outstanding {
            Some((expected, sent)) if expected == nonce => {
                self.outstanding = None;
                let rtt = now.saturating_duration_since(sent);
                self.rtt = Some(rtt);
                Some(rtt)
            }
            _ => None,
        }
    }
}

/// Sends `msg` unless the send queue stays full for `timeout` (the peer
/// stopped reading): then closes the channel as timed out. Returns whether
/// the protocol should go on.
async fn send_in_time<M: Message>(channel: &Channel, msg: &M, timeout: Duration) -> bool {
    match tokio::time::timeout(timeout, channel.send(msg)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::info!(peer = %channel.remote_peer_id().short(), "ping timeout: peer stopped reading");
            channel.close(DisconnectReason::PingTimeout).await;
            false
        }
    }
}

/// The ping protocol on one channel: subscribes, then returns the job.
pub fn protocol(
    channel: &Channel,
    config: PingConfig,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let mut pings = channel.subscribe::<Ping>();
    let mut pongs = channel.subscribe::<Pong>();
    // A ping request is answered by the reader itself: nothing to wait for.
    channel.serve(|Ping { nonce }| Pong { nonce });
    let channel = channel.clone();
    // The sends are boxed: made once per ping, they would otherwise make
    // every channel's idle ping job as large as a send in progress.
    async move {
        let now = || tokio::time::Instant::now().into_std();
        let mut state = PingState::new(config, now());
        loop {
            let wake = tokio::time::Instant::from_std(state.poll_timeout());
            tokio::select! {
                ping = pings.recv() => {
                    let Some(Ping { nonce }) = ping else { return };
                    if !Box::pin(send_in_time(&channel, &Pong { nonce }, config.timeout)).await {
                        return;
                    }
                }
                pong = pongs.recv() => {
                    let Some(Pong { nonce }) = pong else { return };
                    if let Some(rtt) = state.handle_pong(nonce, now()) {
                        channel.set_rtt(rtt);
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    match state.handle_timeout(now(), fastrand::u64(..)) {
                        Some(PingAction::Send(nonce))
                            if !Box::pin(send_in_time(&channel, &Ping { nonce }, config.timeout)).await =>
                        {
                            return;
                        }
                        Some(PingAction::TimedOut) => {
                            tracing::info!(peer = %channel.remote_peer_id().short(), "ping timeout");
                            Box::pin(channel.close(DisconnectReason::PingTimeout)).await;
                            return;
                        }
                        Some(PingAction::Send(_)) | None => {}
                    }
                }
            }
        }
    }
}
