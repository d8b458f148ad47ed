//! Arbitrary bytes into a compressed channel's block reader
//! (`knotwork_compress::Inflate`), mixed with valid blocks so the
//! fuzzer reaches the decompressors with real lz4 and zstd data.
//!
//! Input layout: byte 0 picks the algorithm (bit 0: lz4 or zstd) and the
//! read size ((byte >> 1) + 1 bytes); then ops until the input ends:
//! `op len bytes[len]`. An even `op` packs `bytes` (repeated `op` times,
//! to make blocks that compress) as valid blocks; an odd `op` appends
//! `bytes` raw (junk). The reader is fed the wire in chunks of 97 bytes,
//! saying "not yet" before each.
//! Checks: nothing panics; the reader yields exactly the bytes of the valid
//! blocks before the first junk, and never more than the wire could
//! declare; after junk it fails with a block error or an unexpected EOF
//! (or junk that happens to be valid blocks reads on); without junk it
//! reaches a clean EOF.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use knotwork_compress::{Compression, Deflate, Inflate, MAX_BLOCK_LEN, block_error, raw_header};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

/// Hands out `data` 97 bytes at a time, then EOF, "not yet" before each.
struct Chunks {
    data: Vec<u8>,
    pos: usize,
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
        let end = (self.pos + 97).min(self.data.len());
        let n = (end - self.pos).min(buf.remaining());
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let algorithm = if first & 1 == 0 { Compression::Lz4 } else { Compression::Zstd };
    let read_size = usize::from(first >> 1) + 1;
    let mut deflate = Deflate::new(algorithm);
    let mut wire = Vec::new();
    let mut valid = Vec::new();
    let mut junk = false;
    let mut packed = Vec::new();
    while let [op, len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let (bytes, tail) = tail.split_at(take);
        rest = tail;
        if op % 2 == 1 {
            wire.extend_from_slice(bytes);
            junk |= !bytes.is_empty();
            continue;
        }
        let plain = bytes.repeat(usize::from(*op).max(1));
        for block in plain.chunks(MAX_BLOCK_LEN) {
            if deflate.pack(block, &mut packed) {
                wire.extend_from_slice(&packed);
            } else {
                wire.extend_from_slice(&raw_header(block.len()));
                wire.extend_from_slice(block);
            }
        }
        if !junk {
            valid.extend_from_slice(&plain);
        }
    }
    let wire_len = wire.len();
    let mut reader = Inflate::new(Chunks { data: wire, pos: 0, stall: false }, algorithm, &[]);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut buf = vec![0u8; read_size];
    let result = loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut reader).poll_read(&mut cx, &mut rb) {
            Poll::Pending => continue,
            Poll::Ready(Ok(())) if rb.filled().is_empty() => break Ok(()),
            Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
            Poll::Ready(Err(e)) => break Err(e),
        }
        // Blocks of at most MAX_BLOCK_LEN from headers of at least 5 bytes.
        assert!(out.len() <= (wire_len / 5 + 1) * MAX_BLOCK_LEN);
    };
    assert!(out.starts_with(&valid), "valid blocks come out whole");
    match result {
        Ok(()) if !junk => assert_eq!(out.len(), valid.len()),
        Ok(()) => {}
        Err(e) => {
            assert!(junk, "valid blocks never fail: {e}");
            assert!(
                block_error(&e).is_some() || e.kind() == std::io::ErrorKind::UnexpectedEof,
                "{e}"
            );
        }
    }
});
