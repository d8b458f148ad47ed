//! A channel's I/O: the writer task (the outbox to the stream, one write
//! per batch) and the reader task (frames, metering, dispatch), started by
//! [`Unstarted::start`]; see the parent module's docs.

use super::*;

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
    let pending = lock(&channel.inner.pending).remove(&frame.request_id);
    let fits = pending.as_ref().is_some_and(|p| {
        (frame.msg_id == p.expected && frame.payload.len() <= p.max_bytes)
            || (frame.msg_id == REFUSED_RESPONSE_ID && frame.payload.is_empty())
    });
    let Some(p) = pending else {
        // Most likely the answer to a request that timed out: free within a
        // budget, but a stream of them is charged (review finding L3).
        let budget = UNSOLICITED_RESPONSES;
        if state
            .meter
            .charge(UNSOLICITED_RESPONSE_KEY, budget, state.now)
            == Verdict::Ban
        {
            return misbehaved(channel, Offence::OverBudget);
        }
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
            return None;
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
    if kind == Kind::Request {
        // Requests over budget are backpressured (the reader waits for the
        // token, so the peer's writes wait too), never dropped: a plain
        // request loop slows down instead of timing out. A wait longer than
        // MAX_BACKPRESSURE (a budget under one a second) is answered
        // `RateLimited` at once instead.
        let wait = meter.wait(frame.msg_id, dispatcher.budget, now);
        if wait > MAX_BACKPRESSURE {
            let _ = inner
                .out
                .try_push(FrameKind::Response, frame.request_id, &RateLimited);
            return None;
        }
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = inner.closing.cancelled() => return None,
            }
            state.now = tokio::time::Instant::now().into_std();
        }
    }
    let now = state.now;
    let meter = &mut state.meter;
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
