//! `bench --input-file TRACE --export-custom-dataset FILE` (issue 16): a trace with block ids
//! (an LMCache lookup-hash log above all, or Mooncake, Bailian, WEKA; a vLLM log's token ids) as
//! a `vllm bench serve --dataset-name custom` JSONL, one `{"prompt": TEXT, "output_tokens": N}`
//! per request in trace order, as LMCache's `lmcache tool cache-simulator gen-dataset` writes it
//! (lmcache/tools/cache_simulator/gen_bench_dataset.py): every chunk id becomes a fixed sequence
//! of `chunk_size` tokens, so requests share exactly the prefixes the log's lookups shared, and
//! the unfull tail is unique per request. The tokens are words of the `--tokenizer`'s vocabulary
//! (tokens that decode to ` word` and encode back to themselves, LMCache's "safe vocabulary"
//! with a leading space) and the prompt is their decoded text, so the serving model's tokenizer
//! reads the same tokens back; each prompt's re-tokenized length is checked and reported.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use inferencelab_emu::tokenizer::{self, Tokenizer, WordTokenizer};
use inferencelab_trace::rng::splitmix64;
use inferencelab_trace::{read_trace, Content, Format};

use super::BenchArgs;

/// Output tokens of a lookup log's requests (LMCache logs none): gen-dataset's default.
const LOOKUP_OUTPUT_LEN: u32 = 128;
const CHUNK_SALT: u64 = 0x6C6D_6361_6368_6521;
const TAIL_SALT: u64 = 0x7461_696C_7461_696C;

/// `n` vocabulary words for a seed: the same seed gives the same tokens on every run.
fn words(tok: &dyn Tokenizer, seed: u64, n: usize, out: &mut Vec<u32>) {
    let s = splitmix64(seed);
    out.extend((0..n as u64).map(|k| tok.sample(splitmix64(s.wrapping_add(k)))));
}

/// A request's prompt tokens: chunk `i` is `words(ids[i])`, cut to `input_length`; tokens past
/// the last id are unique to request `index`.
pub fn prompt_tokens(
    tok: &dyn Tokenizer,
    ids: &[u64],
    chunk: u32,
    input_length: u32,
    index: u64,
) -> Vec<u32> {
    let n = input_length as usize;
    let mut out = Vec::with_capacity(n);
    for &id in ids {
        if out.len() >= n {
            break;
        }
        words(tok, id ^ CHUNK_SALT, chunk as usize, &mut out);
    }
    out.truncate(n);
    if out.len() < n {
        let need = n - out.len();
        words(tok, index ^ TAIL_SALT, need, &mut out);
    }
    out
}

pub fn run(args: &BenchArgs, out_path: &Path) -> anyhow::Result<()> {
    let Some(path) = &args.input_file else {
        bail!(
            "--export-custom-dataset needs --input-file TRACE (an LMCache lookup-hash log or \
             directory, or any trace with block ids)"
        );
    };
    let tok: Arc<dyn Tokenizer> = match &args.vllm.tokenizer {
        Some(spec) => tokenizer::load(spec).map_err(|e| anyhow::anyhow!("--tokenizer {e}"))?,
        None => Arc::new(WordTokenizer::default()),
    };
    let trace = read_trace(path, &args.read_options())?;
    if trace.requests.is_empty() {
        bail!("{}: no requests", path.display());
    }
    let chunk = trace.block_size.unwrap_or(16);
    let lookup_log = trace.format == Some(Format::LmcacheLookup);
    let output_len = |n: u32| match args.vllm.custom_output_len {
        Some(v) if v > 0 => v as u32,
        _ if lookup_log => LOOKUP_OUTPUT_LEN,
        _ => n.max(1),
    };
    let file = std::fs::File::create(out_path)
        .with_context(|| format!("--export-custom-dataset {}", out_path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let (mut tokens_total, mut differ) = (0u64, 0usize);
    for (i, r) in trace.requests.iter().enumerate() {
        let ids = match &r.content {
            Content::HashIds(ids) => prompt_tokens(&*tok, ids, chunk, r.input_length, i as u64),
            // a vLLM log's token ids: that model's text when --tokenizer is that model's
            Content::Tokens(t) => t.clone(),
            // lengths only (Azure), or hashed at read time
            _ => bail!(
                "{}: request {} has no block ids or token ids (an Azure trace, or lengths \
                 only): a custom dataset needs the prefix structure",
                path.display(),
                r.id
            ),
        };
        let text = tok.decode(&ids);
        if tok.encode(&text).len() != ids.len() {
            differ += 1;
        }
        tokens_total += ids.len() as u64;
        let line =
            serde_json::json!({ "prompt": text, "output_tokens": output_len(r.output_length) });
        writeln!(w, "{line}").with_context(|| format!("writing {}", out_path.display()))?;
    }
    w.flush()
        .with_context(|| format!("writing {}", out_path.display()))?;
    eprintln!(
        "wrote {}: {} prompts, {} prompt tokens ({}-token chunks), text from {}",
        out_path.display(),
        trace.requests.len(),
        tokens_total,
        chunk,
        tok.describe()
    );
    if differ > 0 {
        eprintln!(
            "note: {differ} of {} prompts re-tokenize to another length with this tokenizer \
             (their prefix structure may shift by a token at chunk edges)",
            trace.requests.len()
        );
    }
    eprintln!(
        "replay it: vllm bench serve --dataset-name custom --dataset-path {} \
         --skip-chat-template --disable-shuffle --num-prompts {} ...  (or inferencelab bench \
         with the same flags)",
        out_path.display(),
        trace.requests.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_chunk_ids_give_shared_token_prefixes_and_the_tail_is_unique() {
        let t = WordTokenizer::default();
        let a = prompt_tokens(&t, &[7, 8], 4, 10, 0);
        let b = prompt_tokens(&t, &[7, 9], 4, 10, 1);
        let c = prompt_tokens(&t, &[7, 8], 4, 10, 2);
        assert_eq!(a.len(), 10);
        assert_eq!(a[..4], b[..4]);
        assert_ne!(a[4..8], b[4..8]);
        assert_eq!(a[..8], c[..8]);
        assert_ne!(a[8..], c[8..], "the unfull tail is the request's own");
        // the text reads back as the same tokens
        assert_eq!(t.encode(&t.decode(&a)), a);
    }
}
