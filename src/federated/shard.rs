//! Disjoint, seeded data shards: the general training text cut into
//! [`CHUNK_BYTES`] chunks (the last may be shorter), the chunks shuffled
//! with the replicate's seed and dealt round-robin to the workers. Every
//! byte lands in exactly one shard, and the shards differ in size by at
//! most one chunk.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Bytes of one chunk: long enough that few training windows straddle the
/// seam between two chunks of a shard, short enough to mix the corpus's
/// documents across workers.
pub const CHUNK_BYTES: usize = 4096;

/// `m` disjoint shards of `text` for replicate `seed`.
pub fn shards(text: &[u8], m: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut chunks: Vec<&[u8]> = text.chunks(CHUNK_BYTES).collect();
    chunks.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut out = vec![Vec::new(); m];
    for (i, c) in chunks.into_iter().enumerate() {
        out[i % m.max(1)].extend_from_slice(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_text_and_are_seeded() {
        let text: Vec<u8> = (0..10 * CHUNK_BYTES + 100).map(|i| (i / CHUNK_BYTES) as u8).collect();
        let s = shards(&text, 4, 7);
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().map(Vec::len).sum::<usize>(), text.len());
        // Chunks 0..=10 (the last 100 bytes long), each in exactly one shard.
        let mut seen: Vec<u8> = s.iter().flat_map(|sh| sh.chunks(CHUNK_BYTES).map(|c| c[0])).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..=10).collect::<Vec<u8>>());
        let sizes: Vec<usize> = s.iter().map(|sh| sh.len().div_ceil(CHUNK_BYTES)).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        assert_eq!(s, shards(&text, 4, 7));
        assert_ne!(s, shards(&text, 4, 8));
        assert_eq!(shards(&text, 1, 3)[0].len(), text.len());
    }
}
