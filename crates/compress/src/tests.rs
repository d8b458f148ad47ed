use super::*;
use proptest::prelude::*;
use tokio::io::AsyncReadExt;

/// Text that compresses well.
fn text(len: usize) -> Vec<u8> {
    b"the quick brown fox jumps over the lazy dog; "
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// Bytes that do not compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// What the writer puts on the stream for `batch`.
fn blocks(deflate: &mut Deflate, batch: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut packed = Vec::new();
    for block in batch.chunks(MAX_BLOCK_LEN) {
        if deflate.pack(block, &mut packed) {
            wire.extend_from_slice(&packed);
        } else {
            wire.extend_from_slice(&raw_header(block.len()));
            wire.extend_from_slice(block);
        }
    }
    wire
}

/// Everything `Inflate` reads from `wire` (after `buffered`).
async fn inflate(algorithm: Compression, buffered: &[u8], wire: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    Inflate::new(wire, algorithm, buffered)
        .read_to_end(&mut out)
        .await?;
    Ok(out)
}

/// The block error `Inflate` fails with on `wire`.
async fn refusal(algorithm: Compression, wire: &[u8]) -> CompressError {
    let e = inflate(algorithm, &[], wire).await.unwrap_err();
    let inner = e.into_inner().unwrap();
    *inner.downcast::<CompressError>().unwrap()
}

fn packed_header(tag: u8, packed: u32, raw: u32) -> Vec<u8> {
    let mut h = vec![tag];
    h.extend_from_slice(&packed.to_be_bytes());
    h.extend_from_slice(&raw.to_be_bytes());
    h
}

#[test]
fn both_sides_agree_on_the_best_they_share() {
    let names =
        |c: Compression| -> Vec<String> { c.offered().iter().map(|s| (*s).to_owned()).collect() };
    use Compression::*;
    for (ours, theirs, agreed) in [
        (Zstd, Zstd, Zstd),
        (Zstd, Lz4, Lz4),
        (Lz4, Zstd, Lz4),
        (Lz4, Lz4, Lz4),
        (None, Zstd, None),
        (Zstd, None, None),
    ] {
        assert_eq!(ours.agree(&names(theirs)), agreed, "{ours} with {theirs}");
        assert_eq!(theirs.agree(&names(ours)), agreed, "symmetric");
    }
    assert_eq!("zstd".parse::<Compression>().unwrap(), Zstd);
    assert!(matches!(
        "gzip".parse::<Compression>(),
        Err(CompressError::UnknownCompression(_))
    ));
}

#[tokio::test]
async fn text_shrinks_and_comes_back_whole() {
    for algorithm in [Compression::Lz4, Compression::Zstd] {
        let batch = text(200_000);
        let wire = blocks(&mut Deflate::new(algorithm), &batch);
        assert!(
            wire.len() < batch.len() / 10,
            "{algorithm}: {} bytes",
            wire.len()
        );
        assert_eq!(inflate(algorithm, &[], &wire).await.unwrap(), batch);
    }
}

#[test]
fn small_and_incompressible_blocks_go_raw_and_back_off() {
    let mut deflate = Deflate::new(Compression::Lz4);
    let mut packed = Vec::new();
    assert!(
        !deflate.pack(&text(MIN_PACK_LEN - 1), &mut packed),
        "too small"
    );
    // Each miss doubles the raw blocks sent without trying, up to MAX_SKIP.
    let mut tries = 0;
    for i in 0..199 {
        let before = deflate.skip;
        assert!(!deflate.pack(&noise(4096, i), &mut packed));
        if before == 0 {
            tries += 1;
        }
    }
    // Tries at blocks 0, 2, 5, 10, 19, 36, 69 and 134 (1, 2, 4 ... 64 skipped
    // after each), the next at 199.
    assert_eq!(tries, 8);
    assert!(packed.is_empty());
    // A block that shrinks (once the skips are used up) resets the backoff.
    while deflate.skip > 0 {
        assert!(!deflate.pack(&text(4096), &mut packed));
    }
    assert!(deflate.pack(&text(4096), &mut packed));
    assert_eq!(deflate.backoff, 1);
}

#[tokio::test]
async fn a_declared_size_over_the_limit_is_refused_before_allocating() {
    let bomb = packed_header(LZ4, 10, (MAX_BLOCK_LEN + 1) as u32);
    assert!(matches!(
        refusal(Compression::Lz4, &bomb).await,
        CompressError::BlockTooLarge { declared, max: MAX_BLOCK_LEN } if declared == MAX_BLOCK_LEN + 1
    ));
    let raw = raw_header(MAX_BLOCK_LEN + 1);
    assert!(matches!(
        refusal(Compression::Lz4, &raw).await,
        CompressError::BlockTooLarge { .. }
    ));
}

#[tokio::test]
async fn a_block_that_expands_past_its_declared_size_is_refused() {
    for algorithm in [Compression::Lz4, Compression::Zstd] {
        // 64 KiB of zeros packs to a few dozen bytes; declare less.
        let mut packed = Vec::new();
        assert!(Deflate::new(algorithm).pack(&vec![0u8; MAX_BLOCK_LEN], &mut packed));
        let body = packed.get(PACKED_HEADER_LEN..).unwrap();
        let mut wire = packed_header(algorithm.tag(), body.len() as u32, 1000);
        wire.extend_from_slice(body);
        assert!(
            matches!(
                refusal(algorithm, &wire).await,
                CompressError::BadBlock { declared: 1000, algorithm: a } if a == algorithm
            ),
            "{algorithm}"
        );
    }
}

#[tokio::test]
async fn malformed_blocks_are_named() {
    // An algorithm the channel did not agree on.
    let zstd = packed_header(ZSTD, 1, 2);
    assert!(matches!(
        refusal(Compression::Lz4, &zstd).await,
        CompressError::UnknownBlock(ZSTD)
    ));
    assert!(matches!(
        refusal(Compression::Lz4, &[7]).await,
        CompressError::UnknownBlock(7)
    ));
    // Packed not smaller than raw, empty blocks.
    for wire in [packed_header(LZ4, 100, 100), packed_header(LZ4, 0, 100)] {
        assert!(matches!(
            refusal(Compression::Lz4, &wire).await,
            CompressError::BadBlockLength { raw: 100, .. }
        ));
    }
    assert!(matches!(
        refusal(Compression::Lz4, &raw_header(0)).await,
        CompressError::BadBlockLength { raw: 0, .. }
    ));
    // Garbage that does not decompress.
    let mut wire = packed_header(LZ4, 4, 100);
    wire.extend_from_slice(&[0xff; 4]);
    assert!(matches!(
        refusal(Compression::Lz4, &wire).await,
        CompressError::BadBlock { .. }
    ));
}

#[tokio::test]
async fn a_stream_cut_mid_block_is_an_eof_not_a_block_error() {
    let wire = blocks(&mut Deflate::new(Compression::Lz4), &text(10_000));
    let cut = wire.get(..wire.len() - 1).unwrap();
    let e = inflate(Compression::Lz4, &[], cut).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(block_error(&e).is_none());
    assert!(
        inflate(Compression::Lz4, &[], &[])
            .await
            .unwrap()
            .is_empty()
    );
}

proptest! {
    /// Any batches, packed or not, split anywhere between what came with
    /// the version exchange and what is read later, come back whole.
    #[test]
    fn round_trip(
        batches in prop::collection::vec(
            prop_oneof![
                (0usize..150_000).prop_map(text),
                (0usize..5_000, any::<u64>()).prop_map(|(n, s)| noise(n, s)),
            ],
            1..5,
        ),
        zstd in any::<bool>(),
        split in any::<prop::sample::Index>(),
    ) {
        let algorithm = if zstd { Compression::Zstd } else { Compression::Lz4 };
        let mut deflate = Deflate::new(algorithm);
        let wire: Vec<u8> = batches.iter().flat_map(|b| blocks(&mut deflate, b)).collect();
        let at = split.index(wire.len() + 1);
        let (buffered, rest) = wire.split_at(at);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let out = rt.block_on(inflate(algorithm, buffered, rest)).unwrap();
        prop_assert_eq!(out, batches.concat());
    }
}
