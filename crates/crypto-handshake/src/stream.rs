//! [`SecureStream`]: an encrypted, authenticated byte stream over any
//! `AsyncRead + AsyncWrite`.
//!
//! # Write path
//! Bytes written are copied into one buffer laid out as the frame to send
//! (`len | plaintext | tag`). When it holds [`MAX_PLAINTEXT`] bytes, or on
//! `poll_flush`, it is sealed in place with one AEAD call and written out.
//! Small writes thus share one Noise message; call `flush` to send.
//!
//! # Read path
//! Ciphertext is read into one buffer, a frame is opened in place there and
//! its plaintext copied to the caller. Reads look at most a few KiB past the
//! current frame, so partial frames rarely need moving. While large frames
//! arrive and the caller reads into a buffer that can hold one, the frame
//! body is read into the caller's buffer and opened there instead.
//!
//! Buffers are allocated on demand and never zeroed. The write buffer is
//! released on flush unless it held between [`BUSY_BURST`] and about 16
//! KiB (a stream sending mid-sized batches keeps it; after a small one, as
//! a quiet stream's last write is, nothing stays); the read buffer (up to
//! one frame + 16 KiB, read into uninitialised capacity) is released
//! when a read finds the connection empty with nothing left buffered,
//! unless the reads since the last such time brought at least
//! [`BUSY_BURST`] bytes: a busy stream keeps it for the next burst (taking
//! and freeing it per burst cost a tenth of the node's pipelined message
//! rate, mostly in malloc merging its free lists before each large
//! allocation), and the next quiet exchange (a ping) releases it, so an
//! idle stream holds no read buffer. A stream that is merely waiting pays
//! one allocation per wake-up for that, and no zeroing.
//!
//! Errors (tampered data: [`HandshakeError::Decrypt`]; a connection cut
//! mid-frame: [`HandshakeError::Truncated`]) come back as `io::Error`s
//! carrying the `HandshakeError` ([`HandshakeError::from_io`]) and are
//! final: every later read fails the same way.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, BytesMut};
use knotwork_core::PeerId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::cipher::{CipherState, TAG_LEN};
use crate::handshake::{Established, LEN_PREFIX};
use crate::{HandshakeError, Pattern, Suite};

/// The largest Noise message.
pub const MAX_MESSAGE: usize = 65535;
/// The most plaintext one Noise message carries.
pub const MAX_PLAINTEXT: usize = MAX_MESSAGE - TAG_LEN;
/// The largest frame on the wire (length prefix included).
const MAX_FRAME: usize = LEN_PREFIX + MAX_MESSAGE;
/// How far reads may look past the end of the current frame.
const LOOKAHEAD: usize = 16 * 1024;
/// The read buffer's size when it is allocated again after being freed
/// while quiet: one small allocation (glibc serves up to 1,032 bytes from a
/// per-thread cache) where a request/response exchange would otherwise
/// take a 16 KiB one per message.
const FIRST_READ: usize = 1024;
/// Frames at least this long may be read straight into the caller's buffer.
const DIRECT_MIN: usize = 16 * 1024;
/// The read buffer never grows past this.
const READ_BUF_LIMIT: usize = MAX_FRAME + LOOKAHEAD;
/// Bytes read between two reads that find the connection empty, at or
/// above which the read buffer is kept (see the module docs).
pub const BUSY_BURST: usize = 4 * 1024;

/// Write buffers larger than this are released on flush, read buffers by
/// [`SecureStream::release_idle_buffers`].
const IDLE_KEEP: usize = 16 * 1024 + LEN_PREFIX + 64;

/// An authenticated, encrypted stream to one peer; see the module docs.
pub struct SecureStream<T> {
    io: T,
    remote: PeerId,
    remote_static: [u8; 32],
    suite: Suite,
    pattern: Pattern,
    send: CipherState,
    recv: CipherState,
    /// `len | plaintext...` while filling; `len | ciphertext | tag` once sealed.
    wbuf: Vec<u8>,
    sealed: bool,
    /// Bytes of the sealed frame already written.
    wpos: usize,
    /// Received bytes; its length is `rend`.
    rbuf: BytesMut,
    /// Received bytes not yet consumed: `rbuf[rstart..rend]`.
    rstart: usize,
    rend: usize,
    /// Decrypted plaintext not yet given out: `rbuf[ppos..pend]`; the frame
    /// holding it ends at `frame_end`.
    ppos: usize,
    pend: usize,
    frame_end: usize,
    /// Length of the last frame opened (steers the direct read path).
    last_frame_len: usize,
    /// Bytes read since a read last found the connection empty.
    burst: usize,
    read_err: Option<HandshakeError>,
}

impl<T> std::fmt::Debug for SecureStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureStream")
            .field("remote", &self.remote)
            .field("suite", &self.suite)
            .field("pattern", &self.pattern)
            .finish_non_exhaustive()
    }
}

impl<T> SecureStream<T> {
    /// Wraps `io` with the keys of a finished handshake, rekeying every
    /// `rekey_interval` messages in each direction (0: never).
    pub fn new(io: T, established: Established, rekey_interval: u64) -> Self {
        let Established {
            remote,
            remote_static,
            suite,
            pattern,
            mut send,
            mut recv,
            early_data: _,
        } = established;
        send.set_rekey_interval(rekey_interval);
        recv.set_rekey_interval(rekey_interval);
        Self {
            io,
            remote,
            remote_static,
            suite,
            pattern,
            send,
            recv,
            wbuf: Vec::new(),
            sealed: false,
            wpos: 0,
            rbuf: BytesMut::new(),
            rstart: 0,
            rend: 0,
            ppos: 0,
            pend: 0,
            frame_end: 0,
            last_frame_len: 0,
            burst: 0,
            read_err: None,
        }
    }

    /// [`SecureStream::new`] for a driver that read past the handshake:
    /// `received` is what it read from `io` after the handshake's last
    /// message (the start of the peer's first frames), taken as if read
    /// from `io` now.
    pub fn with_received(
        io: T,
        established: Established,
        rekey_interval: u64,
        received: &[u8],
    ) -> Self {
        let mut stream = Self::new(io, established, rekey_interval);
        if !received.is_empty() {
            stream.rbuf = BytesMut::from(received);
            stream.rend = received.len();
        }
        stream
    }

    /// The authenticated remote peer.
    pub fn remote_peer_id(&self) -> PeerId {
        self.remote
    }

    /// The remote peer's X25519 static key.
    pub fn remote_static(&self) -> &[u8; 32] {
        &self.remote_static
    }

    /// The negotiated suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The handshake pattern that was used.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// The underlying connection.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The underlying connection. Plaintext written but not flushed, and
    /// bytes received but not read, are dropped.
    pub fn into_inner(self) -> T {
        self.io
    }

    /// Releases buffers that hold nothing: the read buffer when no received
    /// bytes wait in it, the write buffer (when larger than about 16 KiB)
    /// when no plaintext or ciphertext waits in it. Reads release the read
    /// buffer by themselves when the connection goes quiet; this is for an
    /// owner that wants the memory back at a time of its choosing.
    pub fn release_idle_buffers(&mut self) {
        self.release_read_buffer();
        if self.wbuf.is_empty() && self.wbuf.capacity() > IDLE_KEEP {
            self.wbuf = Vec::new();
        }
    }

    /// Frees the read buffer if nothing waits in it.
    fn release_read_buffer(&mut self) {
        if self.rstart == self.rend && self.ppos == self.pend && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
            self.rstart = 0;
            self.rend = 0;
            self.ppos = 0;
            self.pend = 0;
            self.frame_end = 0;
        }
    }

    /// Bytes currently held in buffers (for memory accounting).
    pub fn buffer_capacity(&self) -> usize {
        self.wbuf.capacity() + self.rbuf.capacity()
    }

    fn seal(&mut self) -> Result<(), HandshakeError> {
        let plain = self.wbuf.get_mut(LEN_PREFIX..).unwrap_or_default();
        let len = plain.len() + TAG_LEN;
        let tag = self.send.seal_in_place(plain)?;
        self.wbuf.extend_from_slice(&tag);
        let prefix = u16::try_from(len)
            .map_err(|_| HandshakeError::FrameTooLarge {
                len,
                max: MAX_MESSAGE,
            })?
            .to_be_bytes();
        for (dst, src) in self.wbuf.iter_mut().zip(prefix) {
            *dst = src;
        }
        self.sealed = true;
        self.wpos = 0;
        Ok(())
    }

    /// Opens the frame at `rstart` if it is complete. `Ok(true)`: plaintext
    /// (possibly empty) is ready at `ppos..pend`.
    fn open_frame(&mut self) -> Result<bool, HandshakeError> {
        let window = self.rbuf.get(self.rstart..self.rend).unwrap_or_default();
        let len = match window {
            [hi, lo, ..] => usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => return Ok(false),
        };
        if len < TAG_LEN {
            return Err(HandshakeError::FrameTooShort(len));
        }
        if window.len() < LEN_PREFIX + len {
            return Ok(false);
        }
        let start = self.rstart + LEN_PREFIX;
        let end = start + len;
        let msg = self
            .rbuf
            .get_mut(start..end)
            .ok_or(HandshakeError::Truncated)?;
        let plain_len = self.recv.open_in_place(msg)?.len();
        self.ppos = start;
        self.pend = start + plain_len;
        self.frame_end = end;
        self.last_frame_len = len;
        Ok(true)
    }

    /// Room to read into: the current frame (or its header) plus
    /// [`LOOKAHEAD`] after `rstart`, within [`READ_BUF_LIMIT`]; moves the
    /// unread bytes to the front when they would not fit. Returns the end of
    /// the range to read into (capacity is reserved up to it).
    fn prepare_read(&mut self) -> usize {
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
            self.rbuf.clear();
        }
        let window = self.rbuf.get(self.rstart..self.rend).unwrap_or_default();
        let frame_len = match window {
            [hi, lo, ..] => LEN_PREFIX + usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => LEN_PREFIX,
        };
        // Until a burst has brought `BUSY_BURST` bytes, reads look ahead
        // little, so a buffer freed while quiet comes back small (see
        // `FIRST_READ`); a burst grows it to the full look-ahead.
        let lookahead = if self.burst < BUSY_BURST {
            FIRST_READ - LEN_PREFIX
        } else {
            LOOKAHEAD
        };
        let target = frame_len + lookahead;
        if self.rstart + target > READ_BUF_LIMIT && self.rstart > 0 {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
            self.rbuf.truncate(self.rend);
        }
        let want_end = self.rstart + target;
        let more = want_end.saturating_sub(self.rend);
        if self.rbuf.capacity() == 0 {
            // A fresh buffer costs less than `reserve`'s growth path.
            self.rbuf = BytesMut::with_capacity(more);
        } else {
            self.rbuf.reserve(more);
        }
        want_end
    }
}

impl<T: AsyncWrite + Unpin> SecureStream<T> {
    /// Writes out a sealed frame, if one is pending.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sealed {
            let pending = self.wbuf.get(self.wpos..).unwrap_or_default();
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
            if self.wpos >= self.wbuf.len() {
                self.wbuf.clear();
                self.sealed = false;
                self.wpos = 0;
            }
        }
        Poll::Ready(Ok(()))
    }

    fn buffered_plaintext(&self) -> usize {
        self.wbuf.len().saturating_sub(LEN_PREFIX)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SecureStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = &this.read_err {
            return Poll::Ready(Err(e.duplicate().into_io()));
        }
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.ppos < this.pend {
                let avail = this.rbuf.get(this.ppos..this.pend).unwrap_or_default();
                let n = avail.len().min(out.remaining());
                out.put_slice(avail.get(..n).unwrap_or_default());
                this.ppos += n;
                if this.ppos == this.pend {
                    this.rstart = this.frame_end;
                }
                return Poll::Ready(Ok(()));
            }
            match this.open_frame() {
                Ok(true) => {
                    if this.ppos == this.pend {
                        // An empty message: nothing to hand out.
                        this.rstart = this.frame_end;
                    }
                    continue;
                }
                Ok(false) => {}
                Err(e) => return Poll::Ready(Err(this.fail(e))),
            }
            match ready!(this.poll_direct(cx, out)) {
                Ok(Direct::Delivered) => return Poll::Ready(Ok(())),
                Ok(Direct::Empty) => continue,
                Ok(Direct::NotApplicable) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            let mut end = this.prepare_read();
            if this.last_frame_len >= DIRECT_MIN && out.remaining() >= DIRECT_MIN {
                // Large frames are arriving and the caller has room: read
                // no further than the end of the current frame (or only the
                // next header when none is buffered), so that the next body
                // can go straight into the caller's buffer.
                let current_end = match this.rbuf.get(this.rstart..this.rend) {
                    Some([hi, lo, ..]) => {
                        this.rstart + LEN_PREFIX + usize::from(u16::from_be_bytes([*hi, *lo]))
                    }
                    _ => this.rstart + LEN_PREFIX,
                };
                end = end.min(current_end);
            }
            let mut room = (&mut this.rbuf).limit(end.saturating_sub(this.rend));
            let n = match poll_read_buf(Pin::new(&mut this.io), cx, &mut room) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if this.burst < BUSY_BURST {
                        this.release_read_buffer();
                    }
                    this.burst = 0;
                    return Poll::Pending;
                }
            };
            if n == 0 {
                if this.rstart == this.rend {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(this.fail(HandshakeError::Truncated)));
            }
            this.rend += n;
            this.burst = this.burst.saturating_add(n);
        }
    }
}

/// Outcome of [`SecureStream::poll_direct`].
enum Direct {
    /// Plaintext was put in the caller's buffer.
    Delivered,
    /// A valid empty message was consumed.
    Empty,
    /// The next frame is not a large one whose header alone is buffered.
    NotApplicable,
}

impl<T: AsyncRead + Unpin> SecureStream<T> {
    /// Makes a read error final and returns it as an `io::Error`.
    fn fail(&mut self, e: HandshakeError) -> io::Error {
        let dup = e.duplicate();
        self.read_err = Some(e);
        dup.into_io()
    }

    /// When exactly one frame header is buffered, the frame is large and
    /// the caller's buffer can hold it, reads the frame body straight into
    /// the caller's buffer and opens it there: no copy through `rbuf`. If
    /// the body does not arrive in one go, what came is moved to `rbuf` and
    /// the usual path continues.
    fn poll_direct(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<Direct>> {
        let len = match self.rbuf.get(self.rstart..self.rend) {
            Some(&[hi, lo]) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => return Poll::Ready(Ok(Direct::NotApplicable)),
        };
        if len < DIRECT_MIN || out.remaining() < len {
            return Poll::Ready(Ok(Direct::NotApplicable));
        }
        let dst = out.initialize_unfilled_to(len);
        let mut got = 0;
        while got < len {
            let mut rb = ReadBuf::new(dst.get_mut(got..).unwrap_or_default());
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    return Poll::Ready(Err(self.fail(HandshakeError::Truncated)));
                }
                Poll::Ready(Ok(())) => got += rb.filled().len(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if got > 0 {
                        self.rbuf
                            .extend_from_slice(dst.get(..got).unwrap_or_default());
                        self.rend += got;
                    }
                    return Poll::Pending;
                }
            }
        }
        let plain_len = match self.recv.open_in_place(dst) {
            Ok(plain) => plain.len(),
            Err(e) => return Poll::Ready(Err(self.fail(e))),
        };
        self.rstart = 0;
        self.rend = 0;
        self.rbuf.clear();
        self.last_frame_len = len;
        out.advance(plain_len);
        Poll::Ready(Ok(if plain_len == 0 {
            Direct::Empty
        } else {
            Direct::Delivered
        }))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SecureStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(this.poll_drain(cx))?;
        if this.wbuf.is_empty() {
            let room = (LEN_PREFIX + buf.len() + TAG_LEN).min(MAX_FRAME);
            if this.wbuf.capacity() == 0 {
                // (Fresh, not `reserve`: see `prepare_read`.)
                this.wbuf = Vec::with_capacity(room);
            } else {
                this.wbuf.reserve(room);
            }
            this.wbuf.extend_from_slice(&[0, 0]);
        }
        let room = MAX_PLAINTEXT - this.buffered_plaintext();
        let n = room.min(buf.len());
        this.wbuf
            .extend_from_slice(buf.get(..n).unwrap_or_default());
        if this.buffered_plaintext() == MAX_PLAINTEXT {
            this.seal().map_err(HandshakeError::into_io)?;
            // Start sending now; what does not go out yet goes on the next call.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if this.buffered_plaintext() > 0 {
            this.seal().map_err(HandshakeError::into_io)?;
            ready!(this.poll_drain(cx))?;
        }
        let kept = BUSY_BURST..=IDLE_KEEP;
        if !kept.contains(&this.wbuf.capacity()) {
            this.wbuf = Vec::new();
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
