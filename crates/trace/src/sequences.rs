//! Each request's whole *sequence* (prompt, then answer) cut into full GPU blocks, as vLLM's
//! prefix cache sees it (DESIGN.md section 3): every sampled token extends the request's block
//! hashes (`Request.append_output_token_ids`) and `allocate_slots` caches blocks up to the
//! tokens computed, so after a request `prompt + output - 1` tokens are cached (the last sampled
//! token is never computed). In multi-turn chat the next prompt repeats the answer, and those
//! blocks hit.
//!
//! Where the answer's tokens come from, per request, in this order under [`AnswerBlocks::Auto`]:
//! 1. logged: the output token ids the input records (vLLM `--enable-log-outputs`, native
//!    `output_tokens`);
//! 2. next prompt: the tokens (or block ids) that follow this prompt in its follow-up, the first
//!    later request whose prompt starts with this whole prompt (found on the prefix chain, so
//!    it works for logs and id traces without conversation ids);
//! 3. fresh: blocks that match nothing (an answer that is never sent again still takes room).
//!
//! Answer blocks past what the source covers (a follow-up that repeats only part of the answer)
//! are fresh.

use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::blocks::BlockedTrace;
use crate::error::{TraceError, TraceResult};
use crate::hash::{block_hash, chained_block_hashes};
use crate::model::{Content, HashedTokens, Request, Trace};

/// Which answer blocks the sequences carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerBlocks {
    /// Logged output ids, else the follow-up's prompt, else fresh blocks.
    #[default]
    Auto,
    /// The follow-up's prompt, else fresh blocks (logged ids ignored).
    NextPrompt,
    /// Blocks that never match: answers take room but are never reused.
    Fresh,
    /// Prompt blocks only (the model before answer blocks were simulated).
    Off,
}

impl std::str::FromStr for AnswerBlocks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AnswerBlocks::Auto),
            "next-prompt" => Ok(AnswerBlocks::NextPrompt),
            "fresh" => Ok(AnswerBlocks::Fresh),
            "off" => Ok(AnswerBlocks::Off),
            _ => Err(format!(
                "unknown answer-blocks mode '{s}'; expected auto, next-prompt, fresh or off"
            )),
        }
    }
}

impl std::fmt::Display for AnswerBlocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AnswerBlocks::Auto => "auto",
            AnswerBlocks::NextPrompt => "next-prompt",
            AnswerBlocks::Fresh => "fresh",
            AnswerBlocks::Off => "off",
        })
    }
}

/// How many requests took their answer blocks from each source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnswerSources {
    pub logged: u64,
    pub next_prompt: u64,
    pub fresh: u64,
    /// Requests with no answer block at all (answers shorter than what fills a block, or `off`).
    pub none: u64,
}

/// Full-block keys of every request's sequence: request `i`'s are
/// `keys[offsets[i]..offsets[i+1]]`, head first; the first `prompt_blocks[i]` are its prompt's
/// full blocks. Keys are dense object ids; equal keys mean equal prefixes.
#[derive(Debug, Clone)]
pub struct SequenceBlocks {
    pub blocks: BlockedTrace,
    pub prompt_blocks: Vec<u32>,
    pub sources: AnswerSources,
}

/// A request's prompt hashes at the block size, full blocks only.
fn prompt_hashes(trace: &Trace, r: &Request, bs: u32) -> TraceResult<Vec<u64>> {
    Ok(match &r.content {
        Content::Tokens(t) => chained_block_hashes(t, bs as usize),
        Content::HashIds(ids) => {
            let native = trace.block_size.unwrap_or(bs);
            if bs % native != 0 {
                return Err(TraceError::Unsupported(format!(
                    "{}: the trace's block ids are for {native}-token blocks; use --block-size \
                     {native} or a multiple of it",
                    trace.source.display()
                )));
            }
            let k = (bs / native) as usize;
            let full = (r.input_length as usize / bs as usize).min(ids.len() / k);
            (0..full).map(|j| ids[(j + 1) * k - 1]).collect()
        }
        // a trace hashed at read time is cut by `SequenceBlocks::build_hashed`
        Content::Hashed(_) => Vec::new(),
        Content::None => Vec::new(),
    })
}

/// Whether prompt `b` starts with prompt `a` (both hashed at read time at `g` tokens).
fn hashed_starts_with(a: &HashedTokens, a_len: u32, b: &HashedTokens, b_len: u32, g: u32) -> bool {
    if a_len as usize == a.blocks.len() * g as usize {
        // whole blocks: equal last block ids are equal prefixes
        b_len >= a_len
            && a.blocks
                .last()
                .is_none_or(|last| b.blocks.get(a.blocks.len() - 1) == Some(last))
    } else {
        b.extends.contains(&a.prompt)
    }
}

/// A block that matches nothing: request `i`'s answer block `b`.
fn fresh(i: usize, b: usize) -> u64 {
    xxh3_64_with_seed(
        &[(i as u64).to_le_bytes(), (b as u64).to_le_bytes()].concat(),
        0xA5A5,
    )
}

impl SequenceBlocks {
    /// Cut every request's sequence into `block_size`-token blocks.
    pub fn build(trace: &Trace, block_size: u32, answers: AnswerBlocks) -> TraceResult<Self> {
        if block_size == 0 {
            return Err(TraceError::Unsupported(
                "block size must be positive".into(),
            ));
        }
        if trace.hashing.is_some() {
            return Self::build_hashed(trace, block_size, answers);
        }
        let bs = block_size as usize;
        let reqs = &trace.requests;
        let prompts: Vec<Vec<u64>> = reqs
            .iter()
            .map(|r| prompt_hashes(trace, r, block_size))
            .collect::<TraceResult<_>>()?;

        // each request's follow-up: the first later request whose prompt extends it
        let mut follow_up: Vec<Option<u32>> = vec![None; reqs.len()];
        if matches!(answers, AnswerBlocks::Auto | AnswerBlocks::NextPrompt) {
            // last full-block hash -> latest request whose prompt ends (in full blocks) there
            let mut ends_at: FxHashMap<u64, u32> = FxHashMap::default();
            for (j, hj) in prompts.iter().enumerate() {
                for d in (0..hj.len()).rev() {
                    let Some(&i) = ends_at.get(&hj[d]) else {
                        continue;
                    };
                    let i = i as usize;
                    if prompts[i].len() != d + 1 || follow_up[i].is_some() {
                        continue;
                    }
                    let extends = match (&reqs[i].content, &reqs[j].content) {
                        (Content::Tokens(a), Content::Tokens(b)) => b.starts_with(a),
                        _ => reqs[j].input_length >= reqs[i].input_length,
                    };
                    if extends {
                        follow_up[i] = Some(j as u32);
                        break;
                    }
                }
                if let Some(&last) = hj.last() {
                    ends_at.insert(last, j as u32);
                }
            }
        }

        let mut intern: FxHashMap<u64, u32> = FxHashMap::default();
        let mut offsets = Vec::with_capacity(reqs.len() + 1);
        let mut keys: Vec<u32> = Vec::new();
        let mut prompt_blocks = Vec::with_capacity(reqs.len());
        let mut sources = AnswerSources::default();
        offsets.push(0);
        let mut push = |h: u64, keys: &mut Vec<u32>| {
            let next = intern.len() as u32;
            keys.push(*intern.entry(h).or_insert(next));
        };
        for (i, r) in reqs.iter().enumerate() {
            let hp = &prompts[i];
            for &h in hp {
                push(h, &mut keys);
            }
            prompt_blocks.push(hp.len() as u32);
            let len = r.input_length as usize;
            // blocks cached by the end: full blocks of prompt + output - 1 tokens
            let total = if r.output_length == 0 || answers == AnswerBlocks::Off {
                hp.len()
            } else {
                ((len + r.output_length as usize - 1) / bs).max(hp.len())
            };
            if total == hp.len() || matches!(r.content, Content::None) {
                sources.none += 1;
                offsets.push(keys.len());
                continue;
            }
            let mut answer: Vec<u64> = Vec::with_capacity(total - hp.len());
            let logged = match (&r.content, &r.output_tokens, answers) {
                (Content::Tokens(t), Some(out), AnswerBlocks::Auto) => Some((t, out)),
                _ => None,
            };
            if let Some((t, out)) = logged {
                sources.logged += 1;
                let n_out = (r.output_length as usize - 1).min(out.len());
                let tail = t[hp.len() * bs..].iter().chain(&out[..n_out]);
                let seq: Vec<u32> = tail.copied().collect();
                let mut parent = hp.last().copied().unwrap_or(crate::hash::NONE_HASH);
                for block in seq.chunks_exact(bs).take(total - hp.len()) {
                    parent = block_hash(parent, block);
                    answer.push(parent);
                }
            } else if let Some(j) = follow_up[i] {
                sources.next_prompt += 1;
                let hj = &prompts[j as usize];
                answer.extend(hj.iter().take(total).skip(hp.len()));
            } else if answers != AnswerBlocks::Off {
                sources.fresh += 1;
            }
            for b in hp.len() + answer.len()..total {
                answer.push(fresh(i, b));
            }
            for h in answer {
                push(h, &mut keys);
            }
            offsets.push(keys.len());
        }
        let num_objects = intern.len() as u32;
        Ok(SequenceBlocks {
            blocks: BlockedTrace {
                block_size,
                offsets,
                keys,
                num_objects,
            },
            prompt_blocks,
            sources,
        })
    }

    /// [`Self::build`] for a trace hashed at read time ([`Trace::hashing`]): the same keys,
    /// read from the requests' block ids where they are needed instead of from a copy of every
    /// prompt's hashes, and interned through a `Vec` over the dense ids (issue 19: at 20 GB of
    /// log the copy was 8 bytes per block reference).
    fn build_hashed(trace: &Trace, block_size: u32, answers: AnswerBlocks) -> TraceResult<Self> {
        let g = trace.hashing.map_or(1, |h| h.block_size);
        let num_ids = trace.hashing.map_or(0, |h| h.num_ids) as usize;
        let k = crate::blocks::hashed_factor(trace, block_size)?;
        let bs = block_size as usize;
        let reqs = &trace.requests;
        let hashed = |i: usize| match &reqs[i].content {
            Content::Hashed(h) => Some(h),
            _ => None,
        };
        // request i's prompt blocks here: every k-th id, full blocks only
        let n_prompt = |i: usize| {
            hashed(i).map_or(0, |h| {
                (reqs[i].input_length as usize / bs).min(h.blocks.len() / k)
            })
        };
        let key = |h: &HashedTokens, j: usize| h.blocks[(j + 1) * k - 1];

        // each request's follow-up, as in `build`
        let mut follow_up: Vec<Option<u32>> = vec![None; reqs.len()];
        if matches!(answers, AnswerBlocks::Auto | AnswerBlocks::NextPrompt) {
            let mut ends_at: FxHashMap<u32, u32> = FxHashMap::default();
            for j in 0..reqs.len() {
                let Some(hj) = hashed(j) else { continue };
                let nj = n_prompt(j);
                for d in (0..nj).rev() {
                    let Some(&i) = ends_at.get(&key(hj, d)) else {
                        continue;
                    };
                    let i = i as usize;
                    if n_prompt(i) != d + 1 || follow_up[i].is_some() {
                        continue;
                    }
                    let hi = hashed(i).expect("only hashed prompts end somewhere");
                    let (li, lj) = (reqs[i].input_length, reqs[j].input_length);
                    if hashed_starts_with(hi, li, hj, lj, g) {
                        follow_up[i] = Some(j as u32);
                        break;
                    }
                }
                if nj > 0 {
                    ends_at.insert(key(hj, nj - 1), j as u32);
                }
            }
        }

        let mut remap = vec![u32::MAX; num_ids];
        let mut next = 0u32;
        let mut intern = |id: u32, keys: &mut Vec<u32>, next: &mut u32| {
            let slot = &mut remap[id as usize];
            if *slot == u32::MAX {
                *slot = *next;
                *next += 1;
            }
            keys.push(*slot);
        };
        let mut offsets = Vec::with_capacity(reqs.len() + 1);
        let mut keys: Vec<u32> = Vec::new();
        let mut prompt_blocks = Vec::with_capacity(reqs.len());
        let mut sources = AnswerSources::default();
        offsets.push(0);
        for (i, r) in reqs.iter().enumerate() {
            let np = n_prompt(i);
            let hr = hashed(i);
            if let Some(h) = hr {
                for j in 0..np {
                    intern(key(h, j), &mut keys, &mut next);
                }
            }
            prompt_blocks.push(np as u32);
            let len = r.input_length as usize;
            let total = if r.output_length == 0 || answers == AnswerBlocks::Off {
                np
            } else {
                ((len + r.output_length as usize - 1) / bs).max(np)
            };
            let Some(h) = hr.filter(|_| total > np) else {
                sources.none += 1;
                offsets.push(keys.len());
                continue;
            };
            let start = keys.len();
            match (&h.answer, answers, follow_up[i]) {
                (Some(logged), AnswerBlocks::Auto, _) => {
                    sources.logged += 1;
                    let seq_len = h.blocks.len() + logged.len();
                    for m in np..total {
                        let at = (m + 1) * k - 1;
                        if at >= seq_len {
                            break;
                        }
                        let id = match h.blocks.get(at) {
                            Some(&id) => id,
                            None => logged[at - h.blocks.len()],
                        };
                        intern(id, &mut keys, &mut next);
                    }
                }
                (_, _, Some(j)) => {
                    sources.next_prompt += 1;
                    let hj = hashed(j as usize).expect("a follow-up is hashed");
                    for m in np..total.min(n_prompt(j as usize)) {
                        intern(key(hj, m), &mut keys, &mut next);
                    }
                }
                _ => sources.fresh += 1,
            }
            // blocks past what the source covers match nothing: new keys, in order of
            // appearance as `build` interns its fresh hashes
            for _ in keys.len() - start..total - np {
                keys.push(next);
                next += 1;
            }
            offsets.push(keys.len());
        }
        Ok(SequenceBlocks {
            blocks: BlockedTrace {
                block_size,
                offsets,
                keys,
                num_objects: next,
            },
            prompt_blocks,
            sources,
        })
    }

    /// Request `i`'s sequence keys (prompt blocks, then answer blocks).
    #[inline]
    pub fn request(&self, i: usize) -> &[u32] {
        self.blocks.request(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: usize, tokens: Vec<u32>, out: u32, output: Option<Vec<u32>>) -> Request {
        Request {
            id: id.to_string(),
            timestamp: id as f64,
            finish_time: None,
            conversation: None,
            turn: 0,
            input_length: tokens.len() as u32,
            output_length: out,
            kind: None,
            content: Content::Tokens(tokens),
            output_tokens: output,
            output_times: None,
        }
    }

    fn trace(requests: Vec<Request>) -> Trace {
        Trace {
            requests,
            ..Default::default()
        }
    }

    #[test]
    fn logged_answers_extend_the_prompt_and_the_next_turn_hits_them() {
        // prompt 20 tokens, answer 30 (29 computed): 49 tokens -> 3 full blocks of 16; the next
        // turn repeats prompt + answer + 10 new tokens: its first 3 blocks are the same keys
        let p: Vec<u32> = (0..20).collect();
        let a: Vec<u32> = (100..130).collect();
        let next: Vec<u32> = p.iter().chain(&a).copied().chain(500..510).collect();
        let t = trace(vec![
            req(0, p.clone(), 30, Some(a.clone())),
            req(1, next, 5, None),
        ]);
        let s = SequenceBlocks::build(&t, 16, AnswerBlocks::Auto).unwrap();
        assert_eq!(s.prompt_blocks, vec![1, 3]);
        assert_eq!(s.request(0).len(), 3);
        assert_eq!(s.request(0), &s.request(1)[..3]);
        assert_eq!(s.sources.logged, 1);
        // the last request has no follow-up: its 5-token answer fills no block past its prompt
        // (60 + 4 = 64 tokens = 4 blocks, the prompt has 3 full + a partial one: 1 fresh block)
        assert_eq!(s.request(1).len(), 4);
        assert_eq!(s.sources.fresh, 1);
    }

    #[test]
    fn without_logged_ids_the_follow_up_supplies_the_answer() {
        let p: Vec<u32> = (0..20).collect();
        let a: Vec<u32> = (100..130).collect();
        let next: Vec<u32> = p.iter().chain(&a).copied().chain(500..510).collect();
        let t = trace(vec![req(0, p, 30, None), req(1, next, 1, None)]);
        let s = SequenceBlocks::build(&t, 16, AnswerBlocks::Auto).unwrap();
        assert_eq!(s.request(0), &s.request(1)[..3]);
        assert_eq!(s.sources.next_prompt, 1);
        // fresh answers never match the follow-up
        let f = SequenceBlocks::build(&t, 16, AnswerBlocks::Fresh).unwrap();
        assert_eq!(f.request(0)[0], f.request(1)[0]);
        assert_ne!(f.request(0)[1..3], f.request(1)[1..3]);
        // off: prompt blocks only
        let o = SequenceBlocks::build(&t, 16, AnswerBlocks::Off).unwrap();
        assert_eq!(o.request(0).len(), 1);
    }

    #[test]
    fn a_prompt_that_only_shares_a_system_prompt_is_not_a_follow_up() {
        let sys: Vec<u32> = (0..32).collect();
        let a: Vec<u32> = sys.iter().copied().chain(40..50).collect();
        let b: Vec<u32> = sys.iter().copied().chain(60..90).collect();
        let t = trace(vec![req(0, a, 40, None), req(1, b, 1, None)]);
        let s = SequenceBlocks::build(&t, 16, AnswerBlocks::Auto).unwrap();
        assert_eq!(s.sources.next_prompt, 0);
        assert_eq!(s.sources.fresh, 1);
        assert_eq!(s.request(0)[..2], s.request(1)[..2]);
        assert_ne!(s.request(0)[2], s.request(1)[2]);
    }
}
