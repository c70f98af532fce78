//! A synthetic vLLM server log of any size on stdout, for `simulate --input-file -` at scale
//! (issue 19, `scripts/scale_bench.sh`): agentic multi-turn sessions (a shared system prompt,
//! then turns that each resend the whole conversation plus the answer and a new message), in
//! vLLM 0.10+'s request-logging format with `--enable-log-outputs` (the lines `convert`
//! writes). Nothing is stored: each session keeps its conversation's formatted text and ids, so
//! a turn's line is mostly one copy of bytes formatted before, and the generator writes well
//! over a GB/s on one core.
//!
//! ```text
//! cargo run --release -p inferencelab-trace --example vllm_log_generator -- --gb 20 --seed 7 \
//!     | inferencelab simulate --input-file - --eviction-policy lru --gpu-blocks 10000
//! ```
//!
//! Flags: `--gb G` (stop after G * 10^9 bytes, at a line's end; default 1), `--seed S`
//! (default 7), `--sessions N` concurrent sessions (default 64), `--max-context T` tokens a
//! session's prompt may reach before it ends (default 32768). Per session: one of 16 system
//! prompts (1,000 to 4,000 tokens), turns that add 100 to 3,000 tokens of message and answer
//! 50 to 600 tokens; a turn runs `prompt / 20,000 + output * 0.02` s and the next one arrives
//! after an exponential think time (mean 5 s). The lines are in time order, as a server prints
//! them; stamps are floored to the second (`06-02 09:00:00` on).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;

use inferencelab_trace::vllm_log::write::{push_head, push_u32, SamplingParams, REQUEST_LOGGER};

/// splitmix64: seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn exp(&mut self, mean: f64) -> f64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        -mean * (1.0 - u).ln()
    }
}

const WORDS: [&str; 32] = [
    "the ", "cache ", "block ", "request ", "server ", "token ", "prefix ", "model ", "agent ",
    "tool ", "call ", "result ", "file ", "line ", "error ", "build ", "test ", "run ", "plan ",
    "step ", "read ", "write ", "check ", "value ", "list ", "map ", "key ", "time ", "queue ",
    "page ", "user ", "reply ",
];

/// A conversation so far, formatted once.
struct Context {
    /// The prompt's text as it appears inside the repr quotes.
    text: Vec<u8>,
    /// `1, 2, 3` (no brackets).
    ids: Vec<u8>,
    tokens: usize,
}

impl Context {
    fn push(
        &mut self,
        rng: &mut Rng,
        n: usize,
        out_ids: Option<&mut Vec<u8>>,
        out_text: Option<&mut Vec<u8>>,
    ) {
        let mut new_ids = Vec::with_capacity(n * 8);
        let mut new_text = Vec::with_capacity(n * 6);
        for _ in 0..n {
            let t = rng.next();
            let id = (t % 150_000) as u32;
            if !new_ids.is_empty() {
                new_ids.extend_from_slice(b", ");
            }
            push_u32(&mut new_ids, id);
            new_text.extend_from_slice(WORDS[(t >> 40) as usize % WORDS.len()].as_bytes());
        }
        if !self.ids.is_empty() && !new_ids.is_empty() {
            self.ids.extend_from_slice(b", ");
        }
        self.ids.extend_from_slice(&new_ids);
        self.text.extend_from_slice(&new_text);
        self.tokens += n;
        if let Some(o) = out_ids {
            *o = new_ids;
        }
        if let Some(o) = out_text {
            *o = new_text;
        }
    }
}

struct Session {
    ctx: Context,
    id: String,
    /// The running turn's answer: formatted ids and text, and its length.
    answer_ids: Vec<u8>,
    answer_text: Vec<u8>,
    answer_len: usize,
}

/// `MM-DD HH:MM:SS` of `secs` after 06-02 09:00:00 (a common year: February has 28 days).
fn stamp(secs: f64) -> String {
    const DAYS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let total = secs as u64 + 9 * 3600;
    let (mut day, rest) = ((total / 86_400) as u32 + 1, total % 86_400); // 06-02 is day 1 of June + 1
    let mut month = 6u32;
    while day >= DAYS[(month - 1) as usize] {
        day -= DAYS[(month - 1) as usize];
        month = month % 12 + 1;
    }
    format!(
        "{month:02}-{:02} {:02}:{:02}:{:02}",
        day + 1,
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The line head of the request logger's line `line`.
fn head(b: &mut Vec<u8>, level: &str, at: &str, line: u32) {
    push_head(
        b,
        4242,
        level,
        at.as_bytes(),
        &format!("{REQUEST_LOGGER}:{line}"),
    );
}

fn main() -> std::io::Result<()> {
    let mut gb = 1.0f64;
    let mut seed = 7u64;
    let mut sessions = 64usize;
    let mut max_context = 32_768usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--gb" => gb = v.parse().expect("--gb G"),
            "--seed" => seed = v.parse().expect("--seed S"),
            "--sessions" => sessions = v.parse().expect("--sessions N"),
            "--max-context" => max_context = v.parse().expect("--max-context T"),
            _ => panic!("unknown flag {a}: --gb G, --seed S, --sessions N, --max-context T"),
        }
    }
    let limit = (gb * 1e9) as u64;
    let mut rng = Rng(seed);
    let systems: Vec<Context> = (0..16)
        .map(|_| {
            let mut c = Context {
                text: Vec::new(),
                ids: Vec::new(),
                tokens: 0,
            };
            let n = rng.range(1000, 4000) as usize;
            c.push(&mut rng, n, None, None);
            c
        })
        .collect();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut written = 0u64;
    let mut slots: Vec<Option<Session>> = (0..sessions).map(|_| None).collect();
    // (time in µs, 0 = finish / 1 = arrival, slot): finishes first at equal times
    let mut events: BinaryHeap<Reverse<(u64, u8, usize)>> = BinaryHeap::new();
    for s in 0..sessions {
        let t = (rng.exp(1.0) * 1e6) as u64;
        events.push(Reverse((t, 1, s)));
    }
    let mut b: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut new_ids = Vec::new();
    let mut new_text = Vec::new();
    while written < limit {
        let Reverse((t, kind, s)) = events.pop().expect("sessions never run out");
        let at = stamp(t as f64 / 1e6);
        b.clear();
        if kind == 1 {
            // a turn arrives: a new session, or the next message of a running one
            let sess = slots[s].get_or_insert_with(|| {
                let sys = &systems[rng.range(0, 15) as usize];
                Session {
                    ctx: Context {
                        text: sys.text.clone(),
                        ids: sys.ids.clone(),
                        tokens: sys.tokens,
                    },
                    id: String::new(),
                    answer_ids: Vec::new(),
                    answer_text: Vec::new(),
                    answer_len: 0,
                }
            });
            let msg = rng.range(100, 3000) as usize;
            sess.ctx.push(&mut rng, msg, None, None);
            sess.id = format!("chatcmpl-{:016x}{:016x}", rng.next(), rng.next());
            head(&mut b, "DEBUG", &at, 56);
            b.extend_from_slice(b"Request ");
            b.extend_from_slice(sess.id.as_bytes());
            b.extend_from_slice(b" details: prompt: '");
            b.extend_from_slice(&sess.ctx.text);
            b.extend_from_slice(b"', prompt_token_ids: [");
            b.extend_from_slice(&sess.ctx.ids);
            b.extend_from_slice(b"], prompt_embeds shape: None.\n");
            let answer = rng.range(50, 600) as usize;
            head(&mut b, "INFO", &at, 66);
            b.extend_from_slice(b"Received request ");
            b.extend_from_slice(sess.id.as_bytes());
            b.extend_from_slice(b": params: ");
            let params = SamplingParams {
                temperature: 0.7,
                top_p: 1.0,
                seed: None,
                max_tokens: answer as u32,
            };
            params.push(&mut b);
            b.extend_from_slice(b", lora_request: None.\n");
            // the answer is sampled now (it joins the context when the turn finishes)
            sess.ctx
                .push(&mut rng, answer, Some(&mut new_ids), Some(&mut new_text));
            sess.answer_ids = std::mem::take(&mut new_ids);
            sess.answer_text = std::mem::take(&mut new_text);
            sess.answer_len = answer;
            let run = sess.ctx.tokens as f64 / 20_000.0 + answer as f64 * 0.02;
            events.push(Reverse((t + (run * 1e6) as u64, 0, s)));
        } else {
            let sess = slots[s].as_mut().expect("a running turn has a session");
            head(&mut b, "DEBUG", &at, 112);
            b.extend_from_slice(b"Generated response ");
            b.extend_from_slice(sess.id.as_bytes());
            b.extend_from_slice(b" (streaming complete) details: output_token_ids: [");
            b.extend_from_slice(&sess.answer_ids);
            b.extend_from_slice(b"]\n");
            head(&mut b, "INFO", &at, 119);
            b.extend_from_slice(b"Generated response ");
            b.extend_from_slice(sess.id.as_bytes());
            b.extend_from_slice(b" (streaming complete): output: '");
            b.extend_from_slice(&sess.answer_text);
            b.extend_from_slice(b"', finish_reason: stop\n");
            if sess.ctx.tokens + 3600 > max_context {
                slots[s] = None; // the session ends; a new one takes its place
            }
            let think = (rng.exp(5.0) * 1e6) as u64;
            events.push(Reverse((t + think, 1, s)));
        }
        out.write_all(&b)?;
        written += b.len() as u64;
    }
    out.flush()
}
