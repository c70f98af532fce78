//! Turning a trace into per-request sequences of dense block keys at a given block size: chained
//! hashing of token ids, coarsening ("re-blocking") of id traces, interning to dense `u32` object
//! ids (so caches index `Vec`s, never hash maps, in their hot loop) and next-use annotation.

use rustc_hash::FxHashMap;

use crate::error::{TraceError, TraceResult};
use crate::hash::chained_block_hashes;
use crate::model::{Content, Trace};

/// How to cut prompts into cacheable units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    /// Tokens per block (vLLM block) or per chunk (LMCache chunk).
    pub block_size: u32,
    /// Count the partial last block of a prompt as a cacheable block when the trace gives it an
    /// id (Mooncake does). Token traces never hash partial blocks, as in vLLM; LMCache does not
    /// save partial chunks by default (`save_unfull_chunk: false`).
    pub include_partial: bool,
}

/// A trace cut into blocks: request `i`'s keys are `keys[offsets[i]..offsets[i+1]]`, head first.
/// Keys are dense object ids `0..num_objects`; equal keys mean equal prefixes.
#[derive(Debug, Clone)]
pub struct BlockedTrace {
    pub block_size: u32,
    pub offsets: Vec<usize>,
    pub keys: Vec<u32>,
    pub num_objects: u32,
}

/// Marks "never used again" in next-use arrays.
pub const NEVER: u64 = u64::MAX;

impl BlockedTrace {
    /// Cut `trace` into blocks of `blocking.block_size` tokens.
    ///
    /// Token traces are hashed at any block size. Id traces can only be coarsened to a multiple
    /// `k` of their own block size (keep every k-th id: chained ids identify the whole prefix up
    /// to the end of their block); asking for a finer block size is an error.
    pub fn build(trace: &Trace, blocking: Blocking) -> TraceResult<Self> {
        let bs = blocking.block_size;
        if bs == 0 {
            return Err(TraceError::Unsupported(
                "block size must be positive".into(),
            ));
        }
        let k = match trace.block_size {
            Some(native) if trace_has_ids(trace) => {
                if bs % native != 0 {
                    return Err(TraceError::Unsupported(format!(
                        "{}: the trace's block ids are for {native}-token blocks; they can be \
                         coarsened to a multiple of {native} (e.g. {}) but never refined to {bs}. \
                         Use --block-size/--chunk-size {native} or a multiple of it.",
                        trace.source.display(),
                        native * bs.div_ceil(native).max(1)
                    )));
                }
                (bs / native) as usize
            }
            _ => 1,
        };
        let hashed_k = hashed_factor(trace, bs)?;
        let mut intern: FxHashMap<u64, u32> = FxHashMap::default();
        // ids hashed at read time are dense already: a Vec maps them to this trace's keys
        let mut remap: Vec<u32> = match trace.hashing {
            Some(h) => vec![u32::MAX; h.num_ids as usize],
            None => Vec::new(),
        };
        let mut remapped = 0u32;
        let mut offsets = Vec::with_capacity(trace.requests.len() + 1);
        let mut keys: Vec<u32> = Vec::new();
        offsets.push(0);
        let push =
            |intern: &mut FxHashMap<u64, u32>, h: u64, keys: &mut Vec<u32>, remapped: u32| {
                let next = intern.len() as u32 + remapped;
                keys.push(*intern.entry(h).or_insert(next));
            };
        for r in &trace.requests {
            match &r.content {
                Content::Hashed(h) => {
                    let full = r.input_length as usize / bs as usize;
                    for j in 0..full.min(h.blocks.len() / hashed_k) {
                        let id = h.blocks[(j + 1) * hashed_k - 1] as usize;
                        if remap[id] == u32::MAX {
                            remap[id] = intern.len() as u32 + remapped;
                            remapped += 1;
                        }
                        keys.push(remap[id]);
                    }
                }
                Content::Tokens(tokens) => {
                    for h in chained_block_hashes(tokens, bs as usize) {
                        push(&mut intern, h, &mut keys, remapped);
                    }
                }
                Content::HashIds(ids) => {
                    let full = (r.input_length as usize / bs as usize).min(ids.len() / k);
                    for j in 0..full {
                        push(&mut intern, ids[(j + 1) * k - 1], &mut keys, remapped);
                    }
                    let covered = full * bs as usize;
                    if blocking.include_partial
                        && trace.partial_last_block
                        && (r.input_length as usize) > covered
                        && ids.len() > full * k
                    {
                        // the partial last (coarse) block is identified by the last id
                        push(&mut intern, *ids.last().unwrap(), &mut keys, remapped);
                    }
                }
                Content::None => {}
            }
            offsets.push(keys.len());
        }
        let num_objects = intern.len() as u32 + remapped;
        Ok(BlockedTrace {
            block_size: bs,
            offsets,
            keys,
            num_objects,
        })
    }

    pub fn num_requests(&self) -> usize {
        self.offsets.len() - 1
    }

    #[inline]
    pub fn request(&self, i: usize) -> &[u32] {
        &self.keys[self.offsets[i]..self.offsets[i + 1]]
    }

    /// For each position in `keys`, the flat position of the next reference to the same key
    /// (`NEVER` if none): the oracle a classic Belady over the flattened stream needs.
    pub fn next_use_flat(&self) -> Vec<u64> {
        let mut last = vec![NEVER; self.num_objects as usize];
        let mut next = vec![NEVER; self.keys.len()];
        for (pos, &key) in self.keys.iter().enumerate().rev() {
            next[pos] = last[key as usize];
            last[key as usize] = pos as u64;
        }
        next
    }

    /// For each position, the next *request* that references the same key, as
    /// `request_index << 24 | depth` (`NEVER` if none). Ordering by this value evicts the block
    /// needed farthest in the future first and, among blocks needed by the same request, the
    /// deeper one first: a child block is never needed earlier than its parent, so this keeps
    /// cached prefixes closed (DESIGN.md section 7).
    pub fn next_use_by_request(&self) -> Vec<u64> {
        // One pass from the last request back (issue 19): `next[key]` is the first reference of
        // `key` in the requests after the current one, kept as `request << 24 | depth`. Only
        // that (8 bytes per object) and the answer (8 per reference) are held: no flat next-use
        // array, no request-of-position map.
        let mut next = vec![NEVER; self.num_objects as usize];
        let mut out = vec![NEVER; self.keys.len()];
        for i in (0..self.num_requests()).rev() {
            let (start, end) = (self.offsets[i], self.offsets[i + 1]);
            for pos in start..end {
                out[pos] = next[self.keys[pos] as usize];
            }
            // the request's shallowest reference of a key wins: walk it deepest first
            for pos in (start..end).rev() {
                let depth = (pos - start).min((1 << 24) - 1) as u64;
                next[self.keys[pos] as usize] = (i as u64) << 24 | depth;
            }
        }
        out
    }
}

/// For a trace hashed at read time: how many hashed blocks make one `block_size` block (an
/// error naming the fix when `block_size` is not a multiple of the hashing block size). 1 for
/// every other trace.
pub(crate) fn hashed_factor(trace: &Trace, block_size: u32) -> TraceResult<usize> {
    match trace.hashing {
        Some(h) if block_size % h.block_size != 0 => Err(TraceError::Unsupported(format!(
            "{}: the token ids were hashed into {}-token blocks as the input was read; {} is \
             not a multiple of {}. Read it again hashing at a block size that divides every \
             block and chunk size the run uses",
            trace.source.display(),
            h.block_size,
            block_size,
            h.block_size
        ))),
        Some(h) => Ok((block_size / h.block_size) as usize),
        None => Ok(1),
    }
}

fn trace_has_ids(trace: &Trace) -> bool {
    trace
        .requests
        .iter()
        .any(|r| matches!(r.content, Content::HashIds(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Request;

    fn id_req(input_length: u32, ids: Vec<u64>) -> Request {
        Request {
            id: String::new(),
            timestamp: 0.0,
            finish_time: None,
            conversation: None,
            turn: 0,
            input_length,
            output_length: 1,
            kind: None,
            content: Content::HashIds(ids),
            output_tokens: None,
            output_times: None,
        }
    }

    fn mooncake_like(reqs: Vec<Request>) -> Trace {
        Trace {
            requests: reqs,
            block_size: Some(512),
            partial_last_block: true,
            ..Default::default()
        }
    }

    #[test]
    fn ids_keep_partial_last_block_when_the_trace_has_one() {
        let t = mooncake_like(vec![id_req(1100, vec![10, 11, 12])]);
        let b = BlockedTrace::build(
            &t,
            Blocking {
                block_size: 512,
                include_partial: true,
            },
        )
        .unwrap();
        assert_eq!(b.request(0).len(), 3);
        let b = BlockedTrace::build(
            &t,
            Blocking {
                block_size: 512,
                include_partial: false,
            },
        )
        .unwrap();
        assert_eq!(b.request(0).len(), 2);
    }

    #[test]
    fn coarsening_keeps_every_kth_id() {
        // 5 blocks of 512 = 2560 tokens + partial: ids a0..a5
        let t = mooncake_like(vec![
            id_req(2600, vec![0, 1, 2, 3, 4, 5]),
            id_req(2048, vec![0, 1, 2, 3]),
        ]);
        let b = BlockedTrace::build(
            &t,
            Blocking {
                block_size: 1024,
                include_partial: false,
            },
        )
        .unwrap();
        // full 1024-blocks: ids[1], ids[3]
        assert_eq!(b.request(0), &[0, 1]);
        assert_eq!(b.request(1), &[0, 1]);
        let b = BlockedTrace::build(
            &t,
            Blocking {
                block_size: 1024,
                include_partial: true,
            },
        )
        .unwrap();
        // partial coarse block (tokens 2048..2600) keyed by the last id
        assert_eq!(b.request(0).len(), 3);
        assert_eq!(b.request(1).len(), 2);
    }

    #[test]
    fn refining_is_refused_with_a_fix() {
        let t = mooncake_like(vec![id_req(1100, vec![10, 11, 12])]);
        let err = BlockedTrace::build(
            &t,
            Blocking {
                block_size: 16,
                include_partial: true,
            },
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("never refined"), "{msg}");
        assert!(msg.contains("512"), "{msg}");
    }

    /// The two-array form the one-pass `next_use_by_request` replaced: the flat next use,
    /// then repeats inside the same request skipped.
    fn next_use_by_request_reference(b: &BlockedTrace) -> Vec<u64> {
        let flat = b.next_use_flat();
        let mut req_of_pos = vec![0usize; b.keys.len()];
        for i in 0..b.num_requests() {
            for slot in &mut req_of_pos[b.offsets[i]..b.offsets[i + 1]] {
                *slot = i;
            }
        }
        (0..b.keys.len())
            .map(|pos| {
                let mut n = flat[pos];
                while n != NEVER && req_of_pos[n as usize] == req_of_pos[pos] {
                    n = flat[n as usize];
                }
                if n == NEVER {
                    return NEVER;
                }
                let r = req_of_pos[n as usize];
                (r as u64) << 24 | (n as usize - b.offsets[r]) as u64
            })
            .collect()
    }

    #[test]
    fn one_pass_next_use_equals_the_flat_reference() {
        // requests of 0..12 keys out of 20, with repeats inside a request
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut offsets = vec![0];
        let mut keys = Vec::new();
        for _ in 0..500 {
            for _ in 0..rnd(12) {
                keys.push(rnd(20) as u32);
            }
            offsets.push(keys.len());
        }
        let b = BlockedTrace {
            block_size: 16,
            offsets,
            keys,
            num_objects: 20,
        };
        assert_eq!(b.next_use_by_request(), next_use_by_request_reference(&b));
    }

    #[test]
    fn next_use_orders_by_request_then_depth() {
        let t = mooncake_like(vec![
            id_req(1536, vec![1, 2, 3]),
            id_req(512, vec![9]),
            id_req(1024, vec![1, 2]),
        ]);
        let b = BlockedTrace::build(
            &t,
            Blocking {
                block_size: 512,
                include_partial: true,
            },
        )
        .unwrap();
        let flat = b.next_use_flat();
        assert_eq!(flat, vec![4, 5, NEVER, NEVER, NEVER, NEVER]);
        let by_req = b.next_use_by_request();
        assert_eq!(by_req[0], 2 << 24);
        assert_eq!(by_req[1], 2 << 24 | 1);
        assert!(by_req[1] > by_req[0], "deeper block is needed 'later'");
        assert_eq!(by_req[2], NEVER);
    }
}
