//! Chained block hashing of token ids, the way vLLM keys its prefix cache (DESIGN.md section 3):
//! `h_i = H(h_{i-1}, tokens[i*B..(i+1)*B])`, full blocks only. vLLM's `H` is sha256 over pickle;
//! inside the simulator any collision-free 64-bit chained hash gives the same hits. We use XXH3-64
//! seeded with the parent hash (64-bit output, so with n distinct blocks the chance of any
//! collision is about n^2 / 2^65: 2.7e-8 for a billion-block trace).

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The parent of the first block (vLLM's `NONE_HASH`, fixed here so runs are reproducible).
pub const NONE_HASH: u64 = 0x9E37_79B9_7F4A_7C15;

/// Hash of one full block of `tokens` whose prefix hashes to `parent`.
#[inline]
pub fn block_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut buf = [0u8; 4 * 64];
    if tokens.len() <= 64 {
        for (i, t) in tokens.iter().enumerate() {
            buf[i * 4..i * 4 + 4].copy_from_slice(&t.to_le_bytes());
        }
        xxh3_64_with_seed(&buf[..tokens.len() * 4], parent)
    } else {
        let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        xxh3_64_with_seed(&bytes, parent)
    }
}

/// The chained hashes of every *full* block of `tokens` at `block_size` (the partial tail is
/// never hashed, as in vLLM).
pub fn chained_block_hashes(tokens: &[u32], block_size: usize) -> Vec<u64> {
    assert!(block_size > 0, "block_size must be positive");
    let mut parent = NONE_HASH;
    tokens
        .chunks_exact(block_size)
        .map(|block| {
            parent = block_hash(parent, block);
            parent
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_tail_is_not_hashed() {
        let tokens: Vec<u32> = (0..40).collect();
        assert_eq!(chained_block_hashes(&tokens, 16).len(), 2);
        assert_eq!(chained_block_hashes(&tokens[..15], 16).len(), 0);
    }

    #[test]
    fn equal_prefixes_share_hashes_and_diverge_after() {
        let a: Vec<u32> = (0..64).collect();
        let mut b = a.clone();
        b[40] = 9999; // inside block 2 (tokens 32..48)
        let ha = chained_block_hashes(&a, 16);
        let hb = chained_block_hashes(&b, 16);
        assert_eq!(ha[..2], hb[..2]);
        assert_ne!(ha[2], hb[2]);
        // the chain carries the difference forward even though block 3 is identical
        assert_ne!(ha[3], hb[3]);
    }

    #[test]
    fn same_block_content_at_other_position_hashes_differently() {
        let a: Vec<u32> = [1u32; 32].to_vec();
        let h = chained_block_hashes(&a, 16);
        assert_ne!(h[0], h[1]);
    }

    #[test]
    fn large_blocks_hash_like_small_ones_would_if_equal() {
        let a: Vec<u32> = (0..1024).collect();
        let h = chained_block_hashes(&a, 256);
        assert_eq!(h.len(), 4);
        assert_eq!(h[0], block_hash(NONE_HASH, &a[..256]));
    }
}
