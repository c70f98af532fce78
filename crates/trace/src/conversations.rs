//! Conversations inferred from the prefix chain, for traces that carry no conversation id
//! (Mooncake, vLLM server logs, ...), so that the conversation-aware features have something to
//! work with.
//!
//! A chat's next turn sends the whole previous prompt again (plus the answer and a new
//! message), so a request whose prompt starts with most of an earlier request's prompt is taken
//! as that request's follow-up: request `i` joins the conversation of the *latest* earlier
//! request `j` holding its deepest previously seen block, when the matched run covers at least
//! half of `j`'s blocks. A shorter match (a shared system prompt or document in front of
//! different questions) starts a new conversation. Branches (two follow-ups of one turn, as in
//! Mooncake's synthetic trace) stay in one conversation.
//!
//! Causal: request `i`'s conversation depends only on requests `0..i`, so the policies' "no
//! peeking" property survives. Ambiguity is inherent: a system prompt longer than the first
//! question merges the first conversations that share it.

use rustc_hash::FxHashMap;

use crate::model::{Content, Trace};

/// Tokens per chained key when the trace carries token ids.
const TOKEN_BLOCK: usize = 16;

/// What the inference found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inferred {
    pub conversations: usize,
    /// Requests that joined an earlier request's conversation.
    pub follow_ups: usize,
}

/// The chained keys of a request's prompt: the ids of an id trace, or chained hashes of
/// `TOKEN_BLOCK`-token chunks (`hashed`: the block size of ids hashed at read time).
fn keys(content: &Content, hashed: Option<u32>) -> Vec<u64> {
    match content {
        Content::HashIds(ids) => ids.clone(),
        Content::Tokens(t) => {
            let mut h = 0x9E37_79B9_7F4A_7C15u64;
            t.chunks_exact(TOKEN_BLOCK)
                .map(|c| {
                    for &x in c {
                        h = (h.rotate_left(5) ^ x as u64).wrapping_mul(0x517C_C1B7_2722_0A95);
                    }
                    h
                })
                .collect()
        }
        // hashed at read time (`Trace::hashing`) at g tokens: block ids, equal at equal
        // positions exactly when the prefixes are; every (TOKEN_BLOCK / g)-th is the id of the
        // prefix the tokens' key stands for, so g dividing TOKEN_BLOCK gives the tokens' keys
        // (any other g keeps its own blocks)
        Content::Hashed(h) => {
            let k = match hashed {
                Some(g) if g > 0 && TOKEN_BLOCK % g as usize == 0 => TOKEN_BLOCK / g as usize,
                _ => 1,
            };
            let ids = h.blocks.iter().skip(k - 1).step_by(k);
            ids.map(|&id| id as u64).collect()
        }
        Content::None => Vec::new(),
    }
}

/// Give every request an inferred conversation id and turn, when the trace has no conversation
/// ids at all and carries prompt content. Returns `None` (and changes nothing) otherwise.
pub fn infer_conversations(trace: &mut Trace) -> Option<Inferred> {
    let hashed = trace.hashing.map(|h| h.block_size);
    let reqs = &mut trace.requests;
    if reqs.iter().any(|r| r.conversation.is_some())
        || !reqs.iter().any(|r| !matches!(r.content, Content::None))
    {
        return None;
    }
    // (position, key) -> latest request holding it (equal ids at equal positions are equal
    // prefixes)
    let mut holder: FxHashMap<(u32, u64), u32> = FxHashMap::default();
    let mut blocks: Vec<u32> = Vec::with_capacity(reqs.len());
    let mut turns: Vec<u32> = Vec::new();
    let mut out = Inferred {
        conversations: 0,
        follow_ups: 0,
    };
    for i in 0..reqs.len() {
        let k: Vec<(u32, u64)> = keys(&reqs[i].content, hashed)
            .into_iter()
            .enumerate()
            .map(|(p, x)| (p as u32, x))
            .collect();
        let matched = k.iter().take_while(|x| holder.contains_key(x)).count();
        let parent = (matched > 0)
            .then(|| holder[&k[matched - 1]] as usize)
            .filter(|&j| 2 * matched >= blocks[j] as usize);
        let (conv, turn) = match parent {
            Some(j) => {
                out.follow_ups += 1;
                let c = reqs[j].conversation.expect("set on an earlier request");
                turns[c as usize] += 1;
                (c, turns[c as usize])
            }
            None => {
                out.conversations += 1;
                turns.push(0);
                ((out.conversations - 1) as u64, 0)
            }
        };
        reqs[i].conversation = Some(conv);
        reqs[i].turn = turn;
        blocks.push(k.len() as u32);
        for x in k {
            holder.insert(x, i as u32);
        }
    }
    trace.notes.push(format!(
        "conversations inferred from the prefix chain ({} conversations, {} follow-up requests; \
         docs/policies.md)",
        out.conversations, out.follow_ups
    ));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Request;

    fn req(t: f64, ids: &[u64]) -> Request {
        Request {
            id: format!("r{t}"),
            timestamp: t,
            finish_time: None,
            conversation: None,
            turn: 0,
            input_length: 16 * ids.len() as u32,
            output_length: 1,
            kind: None,
            content: Content::HashIds(ids.to_vec()),
            output_tokens: None,
            output_times: None,
        }
    }

    fn convs(reqs: Vec<Request>) -> Vec<(u64, u32)> {
        let mut t = Trace {
            requests: reqs,
            ..Default::default()
        };
        infer_conversations(&mut t).unwrap();
        t.requests
            .iter()
            .map(|r| (r.conversation.unwrap(), r.turn))
            .collect()
    }

    #[test]
    fn follow_ups_branches_and_shared_prefixes() {
        let got = convs(vec![
            req(0.0, &[1, 2, 3]),          // conversation 0
            req(1.0, &[1, 2, 3, 4, 5]),    // extends it: turn 1
            req(2.0, &[9, 8]),             // new: conversation 1
            req(3.0, &[1, 2, 3, 4, 6, 7]), // a branch of turn 1 (4 of 5 blocks): turn 2
            req(4.0, &[1, 20, 21, 22]),    // one block of a 6-block prompt: new conversation 2
            req(5.0, &[9, 8, 7]),          // follows conversation 1
            req(6.0, &[5, 1, 2]),          // ids at other positions are other prefixes
        ]);
        assert_eq!(
            got,
            vec![(0, 0), (0, 1), (1, 0), (0, 2), (2, 0), (1, 1), (3, 0)]
        );
    }

    #[test]
    fn tokens_are_chained_and_given_ids_are_kept() {
        let tok = |n: u32| Content::Tokens((0..n).collect());
        let mut a = req(0.0, &[]);
        a.content = tok(40);
        let mut b = req(1.0, &[]);
        b.content = tok(70); // the same first 40 tokens: 2 full chunks matched of 2
        let mut c = req(2.0, &[]);
        c.content = Content::Tokens((100..170).collect());
        assert_eq!(convs(vec![a.clone(), b, c]), vec![(0, 0), (0, 1), (1, 0)]);
        // a trace with conversation ids is left alone
        a.conversation = Some(7);
        let mut t = Trace {
            requests: vec![a, req(1.0, &[5])],
            ..Default::default()
        };
        assert_eq!(infer_conversations(&mut t), None);
        assert_eq!(t.requests[1].conversation, None);
    }
}
