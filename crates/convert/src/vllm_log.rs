//! Writing a workload as a vLLM server log: what `vllm serve --enable-log-requests
//! --enable-log-outputs` with `VLLM_LOGGING_LEVEL=DEBUG` prints for streamed chat completions.
//! The lines' formats are `inferencelab_trace::vllm_log::write`'s (beside the reader); this
//! module orders a workload's requests into them.
//!
//! The first two lines are printed at the request's send time, the last two at its finish time,
//! and lines are in time order as a server prints them, so responses of long requests come after
//! later requests. Stamps are Python logging's `%m-%d %H:%M:%S` (floored seconds, no year).
//! The log opens with the one start-up line that says what the server ran, vLLM's `non-default
//! args: {...}` (`model`, and `tokenizer: 'o200k_base'` when the embedded stand-in tokenized the
//! prompts): `simulate` reads it to tell a log of another model from one whose ids are the
//! stand-in's (beyond the model's vocabulary, yet the model's log).
//! Deviations: no other start-up lines, no periodic `Engine 000:` metrics lines, no uvicorn
//! access lines; `max_tokens` is the answer's length (as in the sample, a replay client's
//! setting); prompt and output are never cut (`--max-log-len` unset).

use std::io::Write;

pub use inferencelab_trace::vllm_log::write::STAND_IN_TOKENIZER;
use inferencelab_trace::vllm_log::write::{
    push_head, push_request, push_response, py_repr, SamplingParams,
};
use rayon::prelude::*;

use crate::rng::Rng;
use crate::timestamp::log_stamp;
use crate::workload::Workload;

/// Events per parallel formatting batch: bounds memory to a few batches of formatted lines.
const BATCH: usize = 2048;

/// The API server's pid in the log, seeded (vLLM runs it as a separate process).
pub fn log_pid(seed: u64) -> u32 {
    1000 + (Rng::derive(seed, u64::MAX, 0x919).next_u64() % 60_000) as u32
}

/// Write the workload as a vLLM server log of `model` (the name vLLM would be given: a Hugging
/// Face id, or the registry's name).
pub fn write_vllm_log<W: Write>(
    w: &Workload,
    pid: u32,
    model: &str,
    out: W,
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let reqs = &w.trace.requests;
    let to_ns = |t: f64| w.start_unix_ns + (t * 1e9).round() as i64;
    out.write_all(&start_line(
        pid,
        &log_stamp(to_ns(0.0)),
        model,
        w.tokenizer_is_stand_in,
    ))?;
    // (time, 0 = finish / 1 = send, request index): finishes first at equal times.
    let mut events: Vec<(i64, u8, u32)> = Vec::with_capacity(2 * reqs.len());
    for (i, r) in reqs.iter().enumerate() {
        events.push((to_ns(r.timestamp), 1, i as u32));
        events.push((to_ns(r.finish_time.unwrap_or(r.timestamp)), 0, i as u32));
    }
    events.sort_unstable();
    for batch in events.chunks(BATCH) {
        let lines: Vec<Vec<u8>> = batch
            .par_iter()
            .map(|&(t, kind, i)| {
                let mut b = Vec::new();
                let r = &reqs[i as usize];
                let stamp = log_stamp(t);
                if kind == 1 {
                    let blocks = w.prompt_blocks(r);
                    let texts: Vec<&str> = blocks.iter().map(|b| b.text.as_str()).collect();
                    let ids: Vec<&[u32]> = blocks.iter().map(|b| b.ids.as_slice()).collect();
                    // `max_tokens` is the answer's length, as a replay client sets it
                    let params = SamplingParams {
                        temperature: 0.7,
                        top_p: 1.0,
                        seed: None,
                        max_tokens: r.output_length,
                    };
                    push_request(&mut b, pid, &stamp, &r.id, &texts, &ids, &params);
                } else {
                    let (text, ids) = w.answer(r);
                    let ids: [&[u32]; 1] = [ids];
                    push_response(
                        &mut b,
                        pid,
                        &stamp,
                        &r.id,
                        true,
                        &[text],
                        Some(&ids),
                        "stop",
                    );
                }
                b
            })
            .collect();
        for l in lines {
            out.write_all(&l)?;
        }
    }
    out.flush()
}

/// vLLM's `non-default args` line (`vllm/entrypoints/utils.py`, `log_non_default_args`) as
/// `vllm serve MODEL --enable-log-requests --enable-log-outputs [--tokenizer o200k_base]` prints it.
fn start_line(pid: u32, stamp: &[u8], model: &str, stand_in: bool) -> Vec<u8> {
    let mut b = Vec::new();
    push_head(&mut b, pid, "INFO", stamp, "utils.py:253");
    let model = py_repr(model);
    let tokenizer = if stand_in {
        format!(", 'tokenizer': {}", py_repr(STAND_IN_TOKENIZER))
    } else {
        String::new()
    };
    b.extend_from_slice(
        format!(
            "non-default args: {{'model_tag': {model}, 'model': {model}{tokenizer}, \
             'enable_log_requests': True, 'enable_log_outputs': True}}\n"
        )
        .as_bytes(),
    );
    b
}
