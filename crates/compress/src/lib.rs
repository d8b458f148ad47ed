//! knotwork-compress: per-channel compression for knotwork nodes: which
//! algorithm two nodes agree on, how a channel's writer packs a batch into blocks ([`Deflate`]), and how its
//! reader unpacks them ([`Inflate`]).
//!
//! Compression sits under the AEAD and above the frame codec: the writer
//! takes a batch of encoded frames from its outbox, cuts it into blocks of
//! at most [`MAX_BLOCK_LEN`] bytes, compresses each block that pays, and
//! writes the blocks to the secure stream, which seals them. The reader
//! turns the blocks back into the byte stream of frames before the frame
//! decoder sees it, so every frame limit holds after decompression.
//!
//! # Negotiation
//! Each node lists the algorithms it accepts among the protocol names of its
//! version message ([`LZ4_NAME`], [`ZSTD_NAME`]); a channel uses the best one
//! both list (zstd over lz4), or none. A node configured with
//! [`Compression::Zstd`] lists both, so it still speaks lz4 to a node
//! configured with [`Compression::Lz4`]. Older nodes list neither.
//!
//! # Blocks
//! Once a channel compresses, each direction of each stream is a sequence
//! of blocks (big-endian numbers):
//!
//! | block | bytes |
//! |---|---|
//! | raw | `0`, u32 length, the bytes |
//! | lz4 | `1`, u32 packed length, u32 raw length, an LZ4 block |
//! | zstd | `2`, u32 packed length, u32 raw length, a zstd frame |
//!
//! A raw length is 1 to [`MAX_BLOCK_LEN`]; a packed length is 1 to the raw
//! length minus one (a block that does not get smaller is sent raw); the
//! packed bytes must expand to exactly the raw length. The reader checks
//! the lengths before it allocates anything, and decompresses into a buffer
//! of the declared size that cannot grow: a block that breaks any rule is a
//! named [`CompressError`] and closes the channel as misbehaviour (the peer is
//! banned).
//!
//! # Off by default
//! Both nodes must enable it (`knotwork_node::ChannelConfig::compression`).
//! Measured with the perf harness (`perf --only compress`, pinned to one
//! CPU, 16 KiB messages between two nodes on loopback TCP): random bytes
//! cost nothing (lz4 0.98-1.12x, zstd 1.00-1.03x of "off"), but compressible
//! text goes at 0.41-0.50x with lz4 and 0.25-0.30x with zstd, because
//! loopback bandwidth is free and compressing is not. Compression is for
//! links slower than the CPU (a few hundred MB/s and below).
//!
//! # When it pays
//! Blocks under [`MIN_PACK_LEN`] are sent raw. After a block that did not
//! shrink, the writer sends the next blocks raw without trying (1, 2, 4, …
//! up to [`MAX_SKIP`] of them), so a stream of incompressible data pays for
//! one attempt in [`MAX_SKIP`] blocks.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::poll_read_buf;

/// The protocol name a node lists in its version message to accept lz4.
pub const LZ4_NAME: &str = "knot/compress/lz4";
/// The protocol name a node lists in its version message to accept zstd.
pub const ZSTD_NAME: &str = "knot/compress/zstd";

/// Most raw bytes in one block.
pub const MAX_BLOCK_LEN: usize = 64 * 1024;
/// Blocks shorter than this are sent raw.
pub const MIN_PACK_LEN: usize = 512;
/// Most blocks sent raw without trying after blocks that did not shrink.
pub const MAX_SKIP: u32 = 64;
/// The zstd level: its fastest standard one.
const ZSTD_LEVEL: i32 = 1;

const RAW: u8 = 0;
const LZ4: u8 = 1;
const ZSTD: u8 = 2;
const RAW_HEADER_LEN: usize = 5;
const PACKED_HEADER_LEN: usize = 9;

/// A compression algorithm for a channel, or none; ordered from the least
/// to the most a node offers.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression (the default).
    #[default]
    None,
    /// LZ4 (the `lz4_flex` block format): cheap, for fast links.
    Lz4,
    /// Zstandard at level 1: smaller, for slow links. A node offering it
    /// also accepts lz4.
    Zstd,
}

impl Compression {
    /// The protocol names this setting lists in the version message.
    pub fn offered(self) -> &'static [&'static str] {
        match self {
            Compression::None => &[],
            Compression::Lz4 => &[LZ4_NAME],
            Compression::Zstd => &[ZSTD_NAME, LZ4_NAME],
        }
    }

    /// What a channel uses when this node offers `self` and the peer lists
    /// `theirs` in its version message: the best both list.
    pub fn agree(self, theirs: &[String]) -> Compression {
        let ours = self.offered();
        [Compression::Zstd, Compression::Lz4]
            .into_iter()
            .find(|c| {
                c.name()
                    .is_some_and(|n| ours.contains(&n) && theirs.iter().any(|p| p == n))
            })
            .unwrap_or(Compression::None)
    }

    /// The protocol name of the algorithm (none for [`Compression::None`]).
    fn name(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Lz4 => Some(LZ4_NAME),
            Compression::Zstd => Some(ZSTD_NAME),
        }
    }

    fn tag(self) -> u8 {
        match self {
            Compression::None => RAW,
            Compression::Lz4 => LZ4,
            Compression::Zstd => ZSTD,
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        })
    }
}

impl std::str::FromStr for Compression {
    type Err = CompressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(CompressError::UnknownCompression(
                s.chars().take(32).collect(),
            )),
        }
    }
}

/// The header of a raw block of `len` bytes (at most [`MAX_BLOCK_LEN`]).
pub fn raw_header(len: usize) -> [u8; RAW_HEADER_LEN] {
    let [a, b, c, d] = (len as u32).to_be_bytes();
    [RAW, a, b, c, d]
}

/// The writer's side: packs blocks that pay; see the module docs.
#[derive(Debug)]
pub struct Deflate {
    algorithm: Compression,
    /// Blocks still to send raw without trying.
    skip: u32,
    /// Raw blocks to skip after the next block that does not shrink.
    backoff: u32,
}

impl Deflate {
    /// A packer for `algorithm` (not [`Compression::None`]).
    pub fn new(algorithm: Compression) -> Self {
        Self {
            algorithm,
            skip: 0,
            backoff: 1,
        }
    }

    /// Packs `block` (at most [`MAX_BLOCK_LEN`] bytes) into `out` as a
    /// compressed block with its header, if that pays: `true`. `false`: send
    /// it raw (`out` is then empty).
    pub fn pack(&mut self, block: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        if block.len() < MIN_PACK_LEN || block.len() > MAX_BLOCK_LEN {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        let packed = match self.algorithm {
            Compression::None => None,
            Compression::Lz4 => {
                out.resize(
                    PACKED_HEADER_LEN + lz4_flex::block::get_maximum_output_size(block.len()),
                    0,
                );
                out.get_mut(PACKED_HEADER_LEN..)
                    .and_then(|room| lz4_flex::block::compress_into(block, room).ok())
            }
            Compression::Zstd => {
                // Room for one byte less than the block: zstd stops as
                // soon as the output would not be smaller.
                out.resize(PACKED_HEADER_LEN + block.len() - 1, 0);
                out.get_mut(PACKED_HEADER_LEN..)
                    .and_then(|room| zstd::bulk::compress_to_buffer(block, room, ZSTD_LEVEL).ok())
            }
        };
        match packed {
            Some(n) if n > 0 && n < block.len() => {
                out.truncate(PACKED_HEADER_LEN + n);
                let lens = (n as u32).to_be_bytes().into_iter();
                let lens = lens.chain((block.len() as u32).to_be_bytes());
                let header = std::iter::once(self.algorithm.tag()).chain(lens);
                out.iter_mut().zip(header).for_each(|(slot, b)| *slot = b);
                self.backoff = 1;
                true
            }
            _ => {
                out.clear();
                self.skip = self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_SKIP);
                false
            }
        }
    }
}

/// Where [`BlockDecoder`] is in the block stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    /// Between blocks: the next bytes are a header.
    Header,
    /// This many bytes of a raw block are still to come.
    Raw(usize),
    /// A packed block of `packed` bytes that expands to `raw` bytes.
    Packed {
        algorithm: Compression,
        packed: usize,
        raw: usize,
    },
}

/// The sans-IO part of [`Inflate`]: parses block headers and unpacks
/// packed blocks; raw bytes pass by.
#[derive(Debug)]
pub(crate) struct BlockDecoder {
    /// The algorithm the channel agreed on: the only packed kind accepted.
    algorithm: Compression,
    state: Block,
}

/// What [`BlockDecoder::step`] found at the front of its input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// More input is needed (at least this many bytes buffered in all).
    Need(usize),
    /// The next this-many bytes of input are raw bytes of the stream (the
    /// caller takes them and calls [`BlockDecoder::took_raw`]).
    Raw(usize),
    /// A packed block was unpacked and appended to the output.
    Unpacked,
}

impl BlockDecoder {
    /// A decoder of blocks packed with `algorithm` (or raw ones).
    pub(crate) fn new(algorithm: Compression) -> Self {
        Self {
            algorithm,
            state: Block::Header,
        }
    }

    /// Whether the decoder stands between blocks.
    pub(crate) fn between_blocks(&self) -> bool {
        self.state == Block::Header
    }

    /// Looks at `input`: parses a header (consuming it), unpacks a whole
    /// packed block (consuming it, appending to `output`), or says how many
    /// raw bytes come next. A block that breaks the rules is an error.
    pub(crate) fn step(
        &mut self,
        input: &mut BytesMut,
        output: &mut BytesMut,
    ) -> Result<Step, CompressError> {
        loop {
            match self.state {
                Block::Header => {
                    let Some(&tag) = input.first() else {
                        return Ok(Step::Need(1));
                    };
                    // The kind is checked as soon as it arrives.
                    let algorithm = match tag {
                        RAW => Compression::None,
                        LZ4 => Compression::Lz4,
                        ZSTD => Compression::Zstd,
                        _ => return Err(CompressError::UnknownBlock(tag)),
                    };
                    if algorithm != Compression::None && algorithm != self.algorithm {
                        return Err(CompressError::UnknownBlock(tag));
                    }
                    let need = if tag == RAW {
                        RAW_HEADER_LEN
                    } else {
                        PACKED_HEADER_LEN
                    };
                    let Some(header) = input.get(..need) else {
                        return Ok(Step::Need(need));
                    };
                    let len = |at: usize| {
                        header
                            .get(at..at + 4)
                            .and_then(|b| <[u8; 4]>::try_from(b).ok())
                            .map_or(0, |b| u32::from_be_bytes(b) as usize)
                    };
                    let first = len(1);
                    let raw = if algorithm == Compression::None {
                        first
                    } else {
                        len(5)
                    };
                    if raw > MAX_BLOCK_LEN {
                        return Err(CompressError::BlockTooLarge {
                            declared: raw,
                            max: MAX_BLOCK_LEN,
                        });
                    }
                    if raw == 0 || (algorithm != Compression::None && (first == 0 || first >= raw))
                    {
                        return Err(CompressError::BadBlockLength { packed: first, raw });
                    }
                    input.advance(need);
                    self.state = match algorithm {
                        Compression::None => Block::Raw(raw),
                        _ => Block::Packed {
                            algorithm,
                            packed: first,
                            raw,
                        },
                    };
                }
                Block::Raw(left) => return Ok(Step::Raw(left)),
                Block::Packed {
                    algorithm,
                    packed,
                    raw,
                } => {
                    let Some(src) = input.get(..packed) else {
                        return Ok(Step::Need(packed));
                    };
                    let start = output.len();
                    output.resize(start + raw, 0);
                    let dst = output.get_mut(start..).unwrap_or_default();
                    let n = match algorithm {
                        Compression::Lz4 => lz4_flex::block::decompress_into(src, dst).ok(),
                        _ => zstd::bulk::decompress_to_buffer(src, dst).ok(),
                    };
                    if n != Some(raw) {
                        output.truncate(start);
                        return Err(CompressError::BadBlock {
                            algorithm,
                            declared: raw,
                        });
                    }
                    input.advance(packed);
                    self.state = Block::Header;
                    return Ok(Step::Unpacked);
                }
            }
        }
    }

    /// The caller took `n` raw bytes (at most what [`Step::Raw`] said).
    pub(crate) fn took_raw(&mut self, n: usize) {
        if let Block::Raw(left) = self.state {
            let left = left.saturating_sub(n);
            self.state = if left == 0 {
                Block::Header
            } else {
                Block::Raw(left)
            };
        }
    }
}

/// The reader's side: the byte stream of frames out of a stream of blocks
/// read from `R`; see the module docs. Raw bytes go straight from `R` to
/// the caller. A block that breaks the rules is an `InvalidData` I/O error
/// carrying the [`CompressError`] (see [`block_error`]).
pub struct Inflate<R> {
    io: R,
    decoder: BlockDecoder,
    /// Bytes read from `io` and not yet decoded.
    input: BytesMut,
    /// Unpacked bytes not yet handed out.
    output: BytesMut,
    eof: bool,
}

impl<R> Inflate<R> {
    /// Unpacks blocks packed with `algorithm` from `io`, after `buffered`
    /// (bytes that came with the version exchange).
    pub fn new(io: R, algorithm: Compression, buffered: &[u8]) -> Self {
        Self {
            io,
            decoder: BlockDecoder::new(algorithm),
            input: BytesMut::from(buffered),
            output: BytesMut::new(),
            eof: false,
        }
    }
}

/// The block error inside an I/O error from [`Inflate`], if it is one.
pub fn block_error(e: &std::io::Error) -> Option<&CompressError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<CompressError>())
}

impl<R: AsyncRead + Unpin> AsyncRead for Inflate<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if dst.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(dst.remaining());
                dst.put_slice(this.output.get(..n).unwrap_or_default());
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            let step = this
                .decoder
                .step(&mut this.input, &mut this.output)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let need = match step {
                Step::Unpacked => continue,
                Step::Raw(left) if !this.input.is_empty() => {
                    let n = left.min(this.input.len()).min(dst.remaining());
                    dst.put_slice(this.input.get(..n).unwrap_or_default());
                    this.input.advance(n);
                    this.decoder.took_raw(n);
                    return Poll::Ready(Ok(()));
                }
                Step::Raw(left) => {
                    if this.eof {
                        return Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                    // Read straight into the caller's buffer; what comes
                    // past the block's end moves to `input`.
                    let before = dst.filled().len();
                    std::task::ready!(Pin::new(&mut this.io).poll_read(cx, dst))?;
                    let got = dst.filled().len() - before;
                    if got == 0 {
                        this.eof = true;
                        continue;
                    }
                    if got > left {
                        let past = dst.filled().get(before + left..).unwrap_or_default();
                        this.input.extend_from_slice(past);
                        dst.set_filled(before + left);
                    }
                    this.decoder.took_raw(got.min(left));
                    return Poll::Ready(Ok(()));
                }
                Step::Need(n) => n,
            };
            if this.eof {
                // A clean end only between blocks.
                return Poll::Ready(if this.input.is_empty() && this.decoder.between_blocks() {
                    Ok(())
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                });
            }
            // `need` is at most a header or a packed block's checked length.
            this.input
                .reserve(need.saturating_sub(this.input.len()).max(RAW_HEADER_LEN));
            match poll_read_buf(Pin::new(&mut this.io), cx, &mut this.input) {
                Poll::Pending => {
                    if this.input.is_empty() {
                        this.input = BytesMut::new();
                        this.output = BytesMut::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => this.eof = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Errors of the block codec: a setting that does not parse, or a peer's
/// block that breaks the rules (see the module docs).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompressError {
    // --- The peer's blocks break the rules --------------------------------
    /// A compressed channel's peer sent a block of an unknown kind, or
    /// packed with an algorithm the channel did not agree on.
    #[error("unknown compressed block kind {0}")]
    UnknownBlock(u8),
    /// A compressed channel's peer declared a block larger than the limit
    /// (refused before anything is allocated: a decompression bomb).
    #[error("compressed block declares {declared} bytes, more than {max}")]
    BlockTooLarge {
        /// The declared raw length.
        declared: usize,
        /// The limit ([`MAX_BLOCK_LEN`]).
        max: usize,
    },
    /// A compressed channel's peer sent a block with an empty raw length,
    /// or a packed length that is empty or not smaller than the raw one.
    #[error("compressed block of {packed} bytes for {raw} raw bytes")]
    BadBlockLength {
        /// The declared packed length (the raw one for a raw block).
        packed: usize,
        /// The declared raw length.
        raw: usize,
    },
    /// A packed block did not expand to exactly its declared length: it
    /// is corrupt, or expands past it (a decompression bomb).
    #[error("{algorithm} block does not expand to its declared {declared} bytes")]
    BadBlock {
        /// The block's algorithm.
        algorithm: Compression,
        /// The declared raw length.
        declared: usize,
    },

    // --- Local settings -----------------------------------------------------
    /// A compression setting that is not `none`, `lz4` or `zstd`.
    #[error("unknown compression {0:?} (none, lz4 or zstd)")]
    UnknownCompression(String),
}

/// Compiles and runs the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests;
