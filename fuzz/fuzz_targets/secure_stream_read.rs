//! Arbitrary ciphertext into a `SecureStream` reader, mixed with valid
//! frames so the fuzzer gets past the first tag check.
//!
//! Input layout: byte 0 picks the suite (bit 0), the rekey interval (bits
//! 1-2: never, 1, 2, 3 messages) and the read size (bits 3-7: v < 16 gives
//! (v + 1) x 97 bytes, v >= 16 gives (v - 15) x 8 KiB, which lets large
//! frames be read straight into the caller's buffer). Then ops until the
//! input ends: `op len bytes[len]`; an even `op` seals `bytes` as a valid
//! frame (repeated 256 times when bit 1 of `op` is set, to make frames
//! over 16 KiB), an odd `op` appends `bytes` raw (junk). The reader is fed
//! the wire in chunks of the last `op`'s value x 64 (+1).
//! Checks: nothing panics; the reader yields exactly the plaintext of the
//! valid frames before the first junk; after junk it fails with a named
//! error (Decrypt, FrameTooShort or Truncated), without junk it reaches EOF.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use knotwork_core::Keypair;
use knotwork_crypto_handshake::{
    CipherState, Established, HandshakeError, Pattern, SecureStream, Suite,
};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tokio::io::{AsyncRead, ReadBuf};

/// Hands out `data` `chunk` bytes at a time, then EOF; every other call
/// says "not yet" (Pending) first, so partial frames wait across polls.
struct Chunks {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    stall: bool,
}

impl AsyncRead for Chunks {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.stall = !self.stall;
        if self.stall {
            return Poll::Pending;
        }
        let n = self
            .chunk
            .min(buf.remaining())
            .min(self.data.len() - self.pos);
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

fn peer() -> knotwork_core::PeerId {
    static ID: OnceLock<knotwork_core::PeerId> = OnceLock::new();
    *ID.get_or_init(|| Keypair::generate().expect("keypair").peer_id())
}

const KEY: [u8; 32] = [0x42; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, mut ops)) = data.split_first() else {
        return;
    };
    let suite = if cfg & 1 == 0 {
        Suite::ChaChaPoly
    } else {
        Suite::AesGcm
    };
    let rekey = u64::from((cfg >> 1) & 3);
    let v = usize::from(cfg >> 3);
    let read_size = if v < 16 {
        (v + 1) * 97
    } else {
        (v - 15) * 8192
    };
    let mut tx = CipherState::new(suite, &KEY, rekey).expect("key");
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let mut junk = false;
    let mut chunk = 1;
    while let [op, len, rest @ ..] = ops {
        let n = usize::from(*len).min(rest.len());
        let (bytes, tail) = rest.split_at(n);
        chunk = usize::from(*op) * 64 + 1;
        if op % 2 == 0 {
            let plain = if op & 2 != 0 {
                bytes.repeat(256)
            } else {
                bytes.to_vec()
            };
            let mut msg = plain.clone();
            let tag = tx.seal_in_place(&mut msg).expect("seal");
            msg.extend_from_slice(&tag);
            let len = u16::try_from(msg.len()).expect("small");
            wire.extend_from_slice(&len.to_be_bytes());
            wire.extend_from_slice(&msg);
            if !junk {
                expected.extend_from_slice(&plain);
            }
        } else if !bytes.is_empty() {
            wire.extend_from_slice(bytes);
            junk = true;
        }
        ops = tail;
    }
    let est = Established {
        remote: peer(),
        remote_static: [0; 32],
        suite,
        pattern: Pattern::Xx,
        send: CipherState::new(suite, &KEY, 0).expect("key"),
        recv: CipherState::new(suite, &KEY, 0).expect("key"),
        early_data: Vec::new(),
    };
    let io = Chunks {
        data: wire,
        pos: 0,
        chunk,
        stall: false,
    };
    let mut stream = SecureStream::new(io, est, rekey);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut buf = vec![0u8; read_size];
    let end = loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut stream).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => break Ok(()),
            Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
            Poll::Ready(Err(e)) => break Err(e),
            Poll::Pending => {} // the next poll gets bytes
        }
    };
    assert_eq!(out, expected);
    match end {
        Ok(()) => assert!(!junk, "junk accepted"),
        Err(e) => {
            assert!(junk, "valid frames rejected: {e}");
            let inner = HandshakeError::from_io(&e).expect("named error");
            assert!(matches!(
                inner,
                HandshakeError::Decrypt
                    | HandshakeError::FrameTooShort(_)
                    | HandshakeError::Truncated
            ));
        }
    }
});
