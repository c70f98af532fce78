//! From conversations to scheduled requests: render every message through the chat template
//! once, tokenize each block once, lay the turns on a synthetic timeline and build the trace.
//!
//! Timeline (docs/convert.md, "How the workload is made"): a conversation starts at its first
//! turn's CSV time (or on a seeded Poisson process of `arrival_rate` conversations per second
//! when the CSV has no times).
//! Turn k takes `prompt_tokens / prefill_tokens_per_second + output_tokens / tokens_per_second`
//! from send to finish (one request alone on the server: no queueing, no batching slowdown, the
//! whole prompt prefilled even when cached). Turn k+1 is sent `think` seconds after turn k
//! finished: from the CSV, `max(0, (t[k+1] - t[k]) - response_time[k])`, i.e. the user's
//! original pause minus the time our server needed; without CSV times (or with `--think-time`),
//! log-normal with the given median and sigma, seeded per conversation.

use rayon::prelude::*;

use inferencelab_trace::time::days_from_civil;
use inferencelab_trace::{Content, Format, Request, Trace};

use crate::csv_input::ConversationSet;
use crate::error::{ConvertError, ConvertResult};
use crate::template::ChatTemplate;
use crate::timestamp::Stamp;
use crate::tokenizer::TextTokenizer;
use inferencelab_trace::rng::SplitMix64;

/// Median think time (s) when the CSV gives none: log-normal, median 10 s, sigma 1.0
/// (mean ~16.5 s, 90th percentile ~36 s).
pub const DEFAULT_THINK_MEDIAN_S: f64 = 10.0;
pub const DEFAULT_THINK_SIGMA: f64 = 1.0;
/// New conversations per second when the CSV has no times (Poisson).
pub const DEFAULT_ARRIVAL_RATE: f64 = 0.2;
pub const DEFAULT_PREFILL_TOKENS_PER_SECOND: f64 = 10_000.0;
/// The log's wall clock when the CSV has no calendar times: 2025-06-02 09:00:00 UTC.
pub fn default_start_unix_ns() -> i64 {
    (days_from_civil(2025, 6, 2) * 86_400 + 9 * 3600) * NS
}

const NS: i64 = 1_000_000_000;
/// Plain-second stamps at least this large are taken as Unix times (2000-01-01).
const UNIX_2000_NS: i64 = 946_684_800 * NS;

#[derive(Debug, Clone)]
pub struct TimelineConfig {
    /// Decode rate (output tokens per second per request), the prototype's `--tokens-per-second`.
    pub tokens_per_second: f64,
    pub prefill_tokens_per_second: f64,
    /// `Some(median)`: synthetic think times even when the CSV has times.
    pub think_time: Option<f64>,
    pub think_time_sigma: f64,
    pub arrival_rate: f64,
    pub seed: u64,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        TimelineConfig {
            tokens_per_second: 100.0,
            prefill_tokens_per_second: DEFAULT_PREFILL_TOKENS_PER_SECOND,
            think_time: None,
            think_time_sigma: DEFAULT_THINK_SIGMA,
            arrival_rate: DEFAULT_ARRIVAL_RATE,
            seed: 0,
        }
    }
}

impl TimelineConfig {
    fn validate(&self) -> ConvertResult<()> {
        let positive = |v: f64, flag: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ConvertError::Config(format!(
                    "{flag} must be a positive number, not {v}"
                )))
            }
        };
        positive(self.tokens_per_second, "--tokens-per-second")?;
        positive(
            self.prefill_tokens_per_second,
            "--prefill-tokens-per-second",
        )?;
        positive(self.arrival_rate, "--arrival-rate")?;
        if let Some(t) = self.think_time {
            if !(t.is_finite() && t >= 0.0) {
                return Err(ConvertError::Config(format!(
                    "--think-time must be a non-negative number of seconds, not {t}"
                )));
            }
        }
        if !(self.think_time_sigma.is_finite() && self.think_time_sigma >= 0.0) {
            return Err(ConvertError::Config(format!(
                "--think-time-sigma must be >= 0, not {}",
                self.think_time_sigma
            )));
        }
        Ok(())
    }
}

/// Rendered text and its token ids.
#[derive(Debug, Clone, Default)]
pub(crate) struct Block {
    pub text: String,
    pub ids: Vec<u32>,
}

impl Block {
    fn new(text: String, tok: &TextTokenizer) -> ConvertResult<Self> {
        let ids = tok.encode(&text)?;
        Ok(Block { text, ids })
    }
}

#[derive(Debug)]
pub(crate) struct RenderedTurn {
    pub user: Block,
    /// The last-message form when the template renders it differently (Mistral + system).
    pub last_user: Option<Block>,
    pub assistant: Block,
    /// The logged output token ids: the answer's tokens (see `answer_ids`).
    pub answer_ids: Vec<u32>,
}

#[derive(Debug)]
pub(crate) struct RenderedConversation {
    pub prefix: Block,
    pub turns: Vec<RenderedTurn>,
}

/// A converted workload: the trace (requests in send order, with prompt token ids) plus what the
/// log writer needs to print prompts and answers.
#[derive(Debug)]
pub struct Workload {
    pub trace: Trace,
    /// Wall-clock time of trace time 0, Unix nanoseconds (the log's stamps).
    pub start_unix_ns: i64,
    pub template: ChatTemplate,
    pub tokenizer: String,
    /// The embedded o200k_base stand-in tokenized the prompts (not the model's tokenizer).
    pub tokenizer_is_stand_in: bool,
    pub conversations: usize,
    pub output_tokens: u64,
    pub(crate) set: ConversationSet,
    pub(crate) rendered: Vec<RenderedConversation>,
    pub(crate) generation: Block,
}

impl Workload {
    /// The blocks of request `r`'s prompt, in order.
    pub(crate) fn prompt_blocks(&self, r: &Request) -> Vec<&Block> {
        let conv = &self.rendered[r.conversation.unwrap_or_default() as usize];
        let k = r.turn as usize;
        let mut blocks = Vec::with_capacity(2 * k + 3);
        blocks.push(&conv.prefix);
        for t in &conv.turns[..k] {
            blocks.push(&t.user);
            blocks.push(&t.assistant);
        }
        let last = &conv.turns[k];
        blocks.push(last.last_user.as_ref().unwrap_or(&last.user));
        blocks.push(&self.generation);
        blocks
    }

    pub(crate) fn answer(&self, r: &Request) -> (&str, &[u32]) {
        let (c, k) = (r.conversation.unwrap_or_default() as usize, r.turn as usize);
        (
            &self.set.conversations[c].turns[k].assistant,
            &self.rendered[c].turns[k].answer_ids,
        )
    }

    /// Trace time span from the first send to the last finish, seconds.
    pub fn duration(&self) -> f64 {
        self.trace
            .requests
            .iter()
            .map(|r| r.finish_time.unwrap_or(r.timestamp))
            .fold(0.0, f64::max)
    }
}

/// The answer's token ids: its slice of the assistant block's ids when the block's ids are the
/// frame's head ids + something + the frame's tail ids (then the answer is tokenized once, in
/// context, exactly as the history of the next turn holds it), else the answer on its own.
fn answer_ids(
    block: &[u32],
    frame: &(Vec<u32>, Vec<u32>),
    answer: &str,
    tok: &TextTokenizer,
) -> ConvertResult<Vec<u32>> {
    let (head, tail) = frame;
    if block.len() > head.len() + tail.len() && block.starts_with(head) && block.ends_with(tail) {
        Ok(block[head.len()..block.len() - tail.len()].to_vec())
    } else {
        tok.encode(answer)
    }
}

fn render(
    set: &ConversationSet,
    tok: &TextTokenizer,
    template: ChatTemplate,
) -> ConvertResult<Vec<RenderedConversation>> {
    let (head, tail) = template.assistant_frame();
    let frame = (tok.encode(head)?, tok.encode(tail)?);
    // Conversations share system prompts: tokenize each distinct prefix once.
    let mut systems: Vec<Option<&str>> = set
        .conversations
        .iter()
        .map(|c| c.system.as_deref())
        .collect();
    systems.sort_unstable();
    systems.dedup();
    let prefixes: std::collections::HashMap<Option<&str>, Block> = systems
        .into_par_iter()
        .map(|s| Ok((s, Block::new(template.prefix(s), tok)?)))
        .collect::<ConvertResult<_>>()?;
    set.conversations
        .par_iter()
        .map(|c| {
            let system = c.system.as_deref();
            let prefix = prefixes[&system].clone();
            let turns = c
                .turns
                .iter()
                .map(|t| {
                    let assistant = Block::new(template.assistant(&t.assistant), tok)?;
                    Ok(RenderedTurn {
                        user: Block::new(template.user(&t.user), tok)?,
                        last_user: template
                            .last_user(&t.user, system)
                            .map(|s| Block::new(s, tok))
                            .transpose()?,
                        answer_ids: answer_ids(&assistant.ids, &frame, &t.assistant, tok)?,
                        assistant,
                    })
                })
                .collect::<ConvertResult<Vec<_>>>()?;
            Ok(RenderedConversation { prefix, turns })
        })
        .collect()
}

/// Unique request id in vLLM's shape: `chatcmpl-` + a UUID4 in hex (`random_uuid()`), seeded.
fn request_id(seed: u64, conv: usize, turn: usize) -> String {
    let mut rng = SplitMix64::derive(seed, conv as u64, 0x1D00_0000 + turn as u64);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    b[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    b[6] = (b[6] & 0x0F) | 0x40; // version 4
    b[8] = (b[8] & 0x3F) | 0x80; // RFC 4122 variant
    let mut s = String::with_capacity(41);
    s.push_str("chatcmpl-");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Render, tokenize and schedule every turn.
pub fn build_workload(
    set: ConversationSet,
    tok: &TextTokenizer,
    template: ChatTemplate,
    cfg: &TimelineConfig,
) -> ConvertResult<Workload> {
    cfg.validate()?;
    let rendered = render(&set, tok, template)?;
    let generation = Block::new(template.generation_prompt().to_string(), tok)?;

    // Conversation start times, seconds from the earliest.
    let firsts: Vec<Option<Stamp>> = set
        .conversations
        .iter()
        .map(|c| c.turns[0].timestamp)
        .collect();
    let (starts, start_unix_ns): (Vec<f64>, i64) = if set.has_timestamps {
        let min = firsts
            .iter()
            .flatten()
            .map(|s| s.nanos())
            .min()
            .unwrap_or(0);
        let unix = match firsts.iter().flatten().next() {
            Some(Stamp::DateTime(_)) => min,
            _ if min >= UNIX_2000_NS => min,
            _ => default_start_unix_ns(),
        };
        (
            firsts
                .iter()
                .map(|s| s.map_or(0.0, |s| (s.nanos() - min) as f64 / NS as f64))
                .collect(),
            unix,
        )
    } else {
        let mut rng = SplitMix64::derive(cfg.seed, u64::MAX, 0xA441);
        let mut t = 0.0;
        let starts = (0..firsts.len())
            .map(|i| {
                if i > 0 {
                    t += rng.exponential(cfg.arrival_rate);
                }
                t
            })
            .collect();
        (starts, default_start_unix_ns())
    };

    let csv_think = set.has_timestamps && cfg.think_time.is_none();
    let median = cfg.think_time.unwrap_or(DEFAULT_THINK_MEDIAN_S);
    // (send, finish, conv, turn, prompt tokens)
    let mut schedule: Vec<(f64, f64, usize, usize, usize)> = Vec::with_capacity(set.turns());
    for (c, (conv, r)) in set.conversations.iter().zip(&rendered).enumerate() {
        let mut rng = SplitMix64::derive(cfg.seed, c as u64, 0x7417);
        let mut send = starts[c];
        let mut history = r.prefix.ids.len();
        for (k, t) in r.turns.iter().enumerate() {
            let last = t.last_user.as_ref().unwrap_or(&t.user);
            let prompt = history + last.ids.len() + generation.ids.len();
            let response = prompt as f64 / cfg.prefill_tokens_per_second
                + t.answer_ids.len() as f64 / cfg.tokens_per_second;
            let finish = send + response;
            schedule.push((send, finish, c, k, prompt));
            history += t.user.ids.len() + t.assistant.ids.len();
            if k + 1 < r.turns.len() {
                let think = if csv_think {
                    let gap = match (conv.turns[k].timestamp, conv.turns[k + 1].timestamp) {
                        (Some(a), Some(b)) => (b.nanos() - a.nanos()) as f64 / NS as f64,
                        _ => 0.0,
                    };
                    (gap - response).max(0.0)
                } else {
                    rng.lognormal(median, cfg.think_time_sigma)
                };
                send = finish + think;
            }
        }
    }
    schedule.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));

    let seed = cfg.seed;
    let requests: Vec<Request> = schedule
        .par_iter()
        .map(|&(send, finish, c, k, prompt)| {
            let r = &rendered[c];
            let mut tokens = Vec::with_capacity(prompt);
            tokens.extend_from_slice(&r.prefix.ids);
            for t in &r.turns[..k] {
                tokens.extend_from_slice(&t.user.ids);
                tokens.extend_from_slice(&t.assistant.ids);
            }
            let last = &r.turns[k];
            tokens.extend_from_slice(&last.last_user.as_ref().unwrap_or(&last.user).ids);
            tokens.extend_from_slice(&generation.ids);
            debug_assert_eq!(tokens.len(), prompt);
            Request {
                id: request_id(seed, c, k),
                timestamp: send,
                finish_time: Some(finish),
                conversation: Some(c as u64),
                turn: k as u32,
                input_length: tokens.len() as u32,
                output_length: last.answer_ids.len() as u32,
                kind: None,
                content: Content::Tokens(tokens),
                output_tokens: None,
                output_times: None,
            }
        })
        .collect();
    let output_tokens = requests.iter().map(|r| r.output_length as u64).sum();
    let trace =
        Trace {
            requests,
            block_size: None,
            partial_last_block: false,
            format: Some(Format::Native),
            source: set.source.clone(),
            notes: vec![format!(
            "converted from {} by inferencelab convert: chat template {template}, tokenizer {}, \
             {} output tokens/s, {} prefill tokens/s, think time {}, seed {seed}",
            set.source.display(),
            tok.describe(),
            cfg.tokens_per_second,
            cfg.prefill_tokens_per_second,
            if csv_think {
                "from the CSV's times".to_string()
            } else {
                format!("log-normal(median {median} s, sigma {})", cfg.think_time_sigma)
            },
        )],
            ..Default::default()
        };
    Ok(Workload {
        trace,
        start_unix_ns,
        template,
        tokenizer: tok.describe(),
        tokenizer_is_stand_in: tok.is_fallback(),
        conversations: set.conversations.len(),
        output_tokens,
        set,
        rendered,
        generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csv_input::{parse_csv, ColumnNames};
    use crate::tokenizer::tests::tiny_tokenizer;
    use std::path::Path;

    const CSV: &str = "conversation_id,timestamp,system_prompt,user_message,assistant_response\n\
        a,2025-01-01 10:00:00,Be brief.,hi,hello and hi\n\
        b,2025-01-01 10:00:05,,hello,hi\n\
        a,2025-01-01 10:01:00,,and ?,hello\n\
        a,2025-01-01 10:01:00.5,,hi hi,brief\n";

    fn set(text: &str) -> ConversationSet {
        parse_csv(Path::new("t.csv"), text.as_bytes(), &ColumnNames::default()).unwrap()
    }

    fn tokens(r: &Request) -> &[u32] {
        match &r.content {
            Content::Tokens(t) => t,
            _ => panic!("token trace"),
        }
    }

    #[test]
    fn blockwise_ids_equal_the_whole_rendered_prompt() {
        let (_d, tok) = tiny_tokenizer();
        for template in ChatTemplate::ALL {
            let w = build_workload(set(CSV), &tok, template, &TimelineConfig::default()).unwrap();
            for r in &w.trace.requests {
                let c = &w.set.conversations[r.conversation.unwrap() as usize];
                let k = r.turn as usize;
                let history: Vec<(&str, &str)> = c.turns[..k]
                    .iter()
                    .map(|t| (t.user.as_str(), t.assistant.as_str()))
                    .collect();
                let whole = template.render(c.system.as_deref(), &history, &c.turns[k].user);
                assert_eq!(
                    tokens(r),
                    tok.encode(&whole).unwrap(),
                    "{template} {whole:?}"
                );
                let text: String = w.prompt_blocks(r).iter().map(|b| b.text.as_str()).collect();
                assert_eq!(text, whole);
                assert_eq!(r.input_length as usize, tokens(r).len());
            }
        }
    }

    #[test]
    fn later_turns_extend_earlier_prompts_except_mistral_with_a_system_prompt() {
        let (_d, tok) = tiny_tokenizer();
        for template in ChatTemplate::ALL {
            let w = build_workload(set(CSV), &tok, template, &TimelineConfig::default()).unwrap();
            let a: Vec<&Request> = w
                .trace
                .requests
                .iter()
                .filter(|r| r.conversation == Some(0))
                .collect();
            assert_eq!(a.len(), 3);
            for pair in a.windows(2) {
                let (p0, p1) = (tokens(pair[0]), tokens(pair[1]));
                let gen = w.generation.ids.len();
                let shared = p1.starts_with(&p0[..p0.len() - gen]);
                assert_eq!(shared, template != ChatTemplate::Mistral, "{template}");
            }
        }
    }

    #[test]
    fn csv_times_give_send_times_and_think_time_is_floored() {
        let (_d, tok) = tiny_tokenizer();
        let cfg = TimelineConfig {
            tokens_per_second: 1.0,
            prefill_tokens_per_second: 1e9,
            ..Default::default()
        };
        let w = build_workload(set(CSV), &tok, ChatTemplate::ChatMl, &cfg).unwrap();
        let r = &w.trace.requests;
        let order: Vec<(u64, u32)> = r
            .iter()
            .map(|r| (r.conversation.unwrap(), r.turn))
            .collect();
        assert_eq!(order, [(0, 0), (1, 0), (0, 1), (0, 2)]);
        // a/0 at 0 s: 3 output tokens at 1 token/s -> finish ~3 s; its user came back at 60 s
        assert!(r[0].timestamp.abs() < 1e-9);
        assert!((r[0].finish_time.unwrap() - 3.0).abs() < 1e-6);
        assert!((r[1].timestamp - 5.0).abs() < 1e-9);
        assert!((r[2].timestamp - 60.0).abs() < 1e-6, "{}", r[2].timestamp);
        // a/2: the CSV gap (0.5 s) is shorter than a/1's response (1 s): no think time
        assert!((r[3].timestamp - r[2].finish_time.unwrap()).abs() < 1e-9);
        let start = crate::timestamp::parse_stamp("2025-01-01 10:00:00")
            .unwrap()
            .nanos();
        assert_eq!(w.start_unix_ns, start);
        assert_eq!(w.trace.requests[0].output_length, 3);
    }

    #[test]
    fn without_times_arrivals_and_think_times_are_seeded() {
        let (_d, tok) = tiny_tokenizer();
        let text = "conversation_id,user_message,assistant_response\n\
                    x,hi,hello\ny,hi,hello\nx,and,hi\ny,hello,hi\nx,hi,hi\n";
        let build = |seed, think: Option<f64>| {
            let cfg = TimelineConfig {
                seed,
                think_time: think,
                think_time_sigma: if think.is_some() { 0.0 } else { 1.0 },
                ..Default::default()
            };
            build_workload(set(text), &tok, ChatTemplate::ChatMl, &cfg).unwrap()
        };
        let times = |w: &Workload| -> Vec<(String, f64)> {
            w.trace
                .requests
                .iter()
                .map(|r| (r.id.clone(), r.timestamp))
                .collect()
        };
        assert_eq!(times(&build(3, None)), times(&build(3, None)));
        assert_ne!(times(&build(3, None)), times(&build(4, None)));
        let w = build(3, Some(7.0));
        assert_eq!(w.start_unix_ns, default_start_unix_ns());
        for r in &w.trace.requests {
            assert!(r.id.starts_with("chatcmpl-") && r.id.len() == 41);
            assert_eq!(&r.id[21..22], "4", "UUID4 version nibble");
        }
        let x: Vec<&Request> = w
            .trace
            .requests
            .iter()
            .filter(|r| r.conversation == Some(0))
            .collect();
        for pair in x.windows(2) {
            let gap = pair[1].timestamp - pair[0].finish_time.unwrap();
            assert!((gap - 7.0).abs() < 1e-9, "fixed think time: {gap}");
        }
    }

    #[test]
    fn output_ids_are_the_answer_tokens() {
        let (_d, tok) = tiny_tokenizer();
        for template in ChatTemplate::ALL {
            let w = build_workload(set(CSV), &tok, template, &TimelineConfig::default()).unwrap();
            for r in &w.trace.requests {
                let (text, ids) = w.answer(r);
                assert_eq!(ids, tok.encode(text.trim()).unwrap(), "{template}");
                assert_eq!(r.output_length as usize, ids.len());
            }
        }
        let o200k = TextTokenizer::embedded();
        let frame = (
            o200k.encode("<|im_start|>assistant\n").unwrap(),
            o200k.encode("<|im_end|>\n").unwrap(),
        );
        let block = o200k
            .encode("<|im_start|>assistant\nSure, here it is.<|im_end|>\n")
            .unwrap();
        let ids = answer_ids(&block, &frame, "Sure, here it is.", &o200k).unwrap();
        assert_eq!(ids, o200k.encode("Sure, here it is.").unwrap());
    }

    #[test]
    fn bad_rates_are_refused_by_flag() {
        let (_d, tok) = tiny_tokenizer();
        let cfg = TimelineConfig {
            tokens_per_second: 0.0,
            ..Default::default()
        };
        let e = build_workload(set(CSV), &tok, ChatTemplate::ChatMl, &cfg).unwrap_err();
        assert!(e.to_string().contains("--tokens-per-second"), "{e}");
    }
}
