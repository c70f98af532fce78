//! Hashing a vLLM log's token ids as its lines are read (issue 19): a prompt's ids become the
//! chained hashes of its full blocks (DESIGN.md section 3), interned to dense ids, and the ids
//! are dropped; a logged answer is hashed the same way, continuing the prompt's chain (vLLM
//! caches prompt + output - 1 tokens). What the simulator asks of the tokens besides block
//! hashes is whether one prompt starts with another (the follow-up that supplies an answer's
//! blocks, `crate::sequences`): each prompt gets an identity (its last full block's hash, its
//! partial tail), and is checked against the identities registered before it with the same
//! parent block. A prompt read *before* an earlier-arriving one it starts with (lines of
//! concurrent requests are not always written in time order) is caught by a window of the
//! last [`WINDOW`] prompts' tokens; pairs further apart than that in the file are counted and
//! reported (`out_of_window`).

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::hash::{block_hash, NONE_HASH};

/// How many recently read prompts keep their tokens, for prompts logged out of arrival order.
pub(crate) const WINDOW: usize = 64;

/// A prompt after hashing.
#[derive(Debug, Default)]
pub(crate) struct HashedPrompt {
    pub len: u32,
    pub blocks: Vec<u32>,
    /// The last full block's hash (`NONE_HASH` without one) and the partial tail after it: where
    /// the answer's chain starts.
    pub last_hash: u64,
    pub tail: Vec<u32>,
    /// The prompt's identity and those of the earlier prompts it starts with.
    pub prompt: u32,
    pub extends: Vec<u32>,
    /// Order in which prompts were read.
    pub seq: u32,
    pub max_id: Option<u32>,
}

/// A logged answer being hashed: prompt + output tokens, all but the last one (vLLM never
/// computes the last sampled token).
#[derive(Debug, Default)]
pub(crate) struct AnswerChain {
    /// Output tokens received.
    pub count: u32,
    pub max_id: Option<u32>,
    /// Ids of the full blocks past the prompt's.
    pub ids: Vec<u32>,
    parent: u64,
    buf: Vec<u32>,
    held: Option<u32>,
    started: bool,
    /// Tokens logged before the prompt was (hashed once it is).
    early: Vec<u32>,
}

/// The reader's hashing state.
pub(crate) struct Hasher {
    g: usize,
    intern: FxHashMap<u64, u32>,
    /// (parent hash, tail length, tail hash) -> prompt identity. A prompt of whole blocks has
    /// tail length 0 and tail hash 0.
    identities: FxHashMap<(u64, u32, u64), u32>,
    /// Parent hash -> the tail lengths of the prompts registered after it.
    tail_lens: FxHashMap<u64, Vec<u32>>,
    /// (entry index, tokens) of the last `WINDOW` prompts read.
    recent: VecDeque<(usize, Vec<u32>)>,
    seq: u32,
    chain: Vec<u64>,
}

impl Hasher {
    pub fn new(block_size: u32) -> Self {
        Hasher {
            g: block_size.max(1) as usize,
            intern: FxHashMap::default(),
            identities: FxHashMap::default(),
            tail_lens: FxHashMap::default(),
            recent: VecDeque::with_capacity(WINDOW + 1),
            seq: 0,
            chain: Vec::new(),
        }
    }

    pub fn block_size(&self) -> u32 {
        self.g as u32
    }

    pub fn num_ids(&self) -> u32 {
        self.intern.len() as u32
    }

    fn intern(intern: &mut FxHashMap<u64, u32>, h: u64) -> u32 {
        let next = intern.len() as u32;
        *intern.entry(h).or_insert(next)
    }

    /// Hash `tokens`, the prompt of entry `me`. Also returns the entries of the window, read
    /// before it, whose prompts start with it: the caller adds its identity to their `extends`.
    pub fn prompt(&mut self, tokens: &[u32], me: usize) -> (HashedPrompt, Vec<usize>) {
        let g = self.g;
        self.chain.clear();
        let mut parent = NONE_HASH;
        for block in tokens.chunks_exact(g) {
            parent = block_hash(parent, block);
            self.chain.push(parent);
        }
        let blocks: Vec<u32> = self
            .chain
            .iter()
            .map(|&h| Self::intern(&mut self.intern, h))
            .collect();
        let full = self.chain.len();
        // the earlier prompts (with a partial tail) this one starts with
        let mut extends: Vec<u32> = Vec::new();
        for f in 0..=full {
            let parent = if f == 0 { NONE_HASH } else { self.chain[f - 1] };
            let Some(lens) = self.tail_lens.get(&parent) else {
                continue;
            };
            for &r in lens {
                let end = f * g + r as usize;
                if end > tokens.len() {
                    continue;
                }
                let key = (parent, r, block_hash(parent, &tokens[f * g..end]));
                if let Some(&id) = self.identities.get(&key) {
                    if !extends.contains(&id) {
                        extends.push(id);
                    }
                }
            }
        }
        let tail = tokens[full * g..].to_vec();
        let r = tail.len() as u32;
        let tail_hash = if r == 0 { 0 } else { block_hash(parent, &tail) };
        let next = self.identities.len() as u32;
        let prompt = *self
            .identities
            .entry((parent, r, tail_hash))
            .or_insert(next);
        if r > 0 {
            let lens = self.tail_lens.entry(parent).or_default();
            if !lens.contains(&r) {
                lens.push(r);
            }
        }
        // prompts read before this one that start with it (they may arrive after it)
        let started_with: Vec<usize> = if r == 0 {
            Vec::new()
        } else {
            self.recent
                .iter()
                .filter(|(_, jt)| {
                    // the tail first: it rejects all but true extensions at once
                    let (n, at) = (tokens.len(), full * g);
                    jt.len() >= n && jt[at..n] == tokens[at..] && jt[..at] == tokens[..at]
                })
                .map(|&(j, _)| j)
                .collect()
        };
        // the oldest prompt's buffer takes this one's tokens
        let mut kept = match self.recent.len() {
            WINDOW => self.recent.pop_front().map(|(_, t)| t).unwrap_or_default(),
            _ => Vec::new(),
        };
        kept.clear();
        kept.extend_from_slice(tokens);
        self.recent.push_back((me, kept));
        let seq = self.seq;
        self.seq += 1;
        let hashed = HashedPrompt {
            len: tokens.len() as u32,
            blocks,
            last_hash: parent,
            tail,
            prompt,
            extends,
            seq,
            max_id: tokens.iter().copied().max(),
        };
        (hashed, started_with)
    }

    /// Output ids for `chain`: appended (`delta`) or replacing what was logged before.
    pub fn answer(
        &mut self,
        chain: &mut AnswerChain,
        prompt: Option<&HashedPrompt>,
        ids: &[u32],
        delta: bool,
    ) {
        if !delta {
            *chain = AnswerChain::default();
        }
        match prompt {
            Some(p) => {
                self.start(chain, p);
                self.feed(chain, ids);
            }
            None => chain.early.extend_from_slice(ids),
        }
    }

    /// Once the prompt is known: hash the tokens logged before it.
    pub fn start(&mut self, chain: &mut AnswerChain, p: &HashedPrompt) {
        if chain.started {
            return;
        }
        chain.started = true;
        chain.parent = p.last_hash;
        chain.buf = p.tail.clone();
        let early = std::mem::take(&mut chain.early);
        self.feed(chain, &early);
    }

    /// Output tokens `ids` join the answer: every one but the last logged so far is part of the
    /// sequence (the last is held back until a later one arrives).
    fn feed(&mut self, c: &mut AnswerChain, ids: &[u32]) {
        let Some((&last, rest)) = ids.split_last() else {
            return;
        };
        c.count += ids.len() as u32;
        c.max_id = c.max_id.max(ids.iter().copied().max());
        if let Some(h) = c.held.replace(last) {
            self.extend(c, &[h]);
        }
        self.extend(c, rest);
    }

    /// Tokens that are part of the sequence: hashed block by block.
    fn extend(&mut self, c: &mut AnswerChain, mut tokens: &[u32]) {
        let g = self.g;
        if !c.buf.is_empty() {
            let take = (g - c.buf.len()).min(tokens.len());
            c.buf.extend_from_slice(&tokens[..take]);
            tokens = &tokens[take..];
            if c.buf.len() < g {
                return;
            }
            c.parent = block_hash(c.parent, &c.buf);
            c.ids.push(Self::intern(&mut self.intern, c.parent));
            c.buf.clear();
        }
        let mut blocks = tokens.chunks_exact(g);
        for block in &mut blocks {
            c.parent = block_hash(c.parent, block);
            c.ids.push(Self::intern(&mut self.intern, c.parent));
        }
        c.buf.extend_from_slice(blocks.remainder());
    }
}

impl AnswerChain {
    /// Output tokens logged so far, whether hashed yet or not.
    pub fn len(&self) -> u32 {
        self.count + self.early.len() as u32
    }

    pub fn max_id(&self) -> Option<u32> {
        self.max_id.max(self.early.iter().copied().max())
    }
}

/// Requests whose prompt was read more than [`WINDOW`] prompts after a later-arriving one: the
/// follow-up test could not compare them (`seqs`: read order, in arrival order).
pub(crate) fn out_of_window(seqs: &[u32]) -> usize {
    let mut min_after = u32::MAX;
    let mut n = 0;
    for &s in seqs.iter().rev() {
        if min_after != u32::MAX && s as usize > min_after as usize + WINDOW {
            n += 1;
        }
        min_after = min_after.min(s);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(h: &mut Hasher, prompts: &mut Vec<HashedPrompt>, tokens: &[u32]) {
        let (p, earlier) = h.prompt(tokens, prompts.len());
        for j in earlier {
            prompts[j].extends.push(p.prompt);
        }
        prompts.push(p);
    }

    #[test]
    fn a_prompt_extends_the_earlier_prompts_it_starts_with_in_either_read_order() {
        let mut h = Hasher::new(4);
        let mut ps = Vec::new();
        let a: Vec<u32> = (0..6).collect(); // 1 block + tail [4, 5]
        let b: Vec<u32> = (0..10).collect(); // starts with a
        let c: Vec<u32> = vec![0, 1, 2, 3, 4, 9, 9]; // shares the block, not the tail
        hash(&mut h, &mut ps, &a);
        hash(&mut h, &mut ps, &b);
        hash(&mut h, &mut ps, &c);
        assert_eq!(ps[1].extends, vec![ps[0].prompt]);
        assert!(ps[2].extends.is_empty());
        // read the other way round: the window notes it on the earlier-read prompt
        let mut h = Hasher::new(4);
        let mut ps = Vec::new();
        hash(&mut h, &mut ps, &b);
        hash(&mut h, &mut ps, &a);
        assert_eq!(ps[0].extends, vec![ps[1].prompt]);
        // identical prompts share an identity
        hash(&mut h, &mut ps, &a);
        assert_eq!(ps[2].prompt, ps[1].prompt);
    }

    #[test]
    fn out_of_window_counts_pairs_read_too_far_apart() {
        let w = WINDOW as u32;
        assert_eq!(out_of_window(&[0, 1, 2, 3]), 0);
        assert_eq!(out_of_window(&[w, 0]), 0);
        assert_eq!(out_of_window(&[w + 1, 0]), 1);
    }
}
