//! `simulate` on LMCache lookup-hash logs (`--input-format lmcache-lookup`, detected from the
//! file or a directory of `lookup_hashes_*.jsonl`): the LMCache tier alone, sized and counted as
//! LMCache's own `lmcache tool cache-simulator` does (docs/lmcache-lookup.md).

use std::io::Read;
use std::path::Path;

use anyhow::bail;
use inferencelab_trace::readers::lmcache_lookup::{self, LookupFilter};
use inferencelab_trace::{detect_format, read_trace_hashed, Format, ReadOptions, Trace};

use crate::cli::SimulateArgs;

/// What a lookup log carries beside its trace.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub chunk_size: u32,
    /// From the first lookup's shapes and dtypes (0: unknown).
    pub kv_bytes_per_chunk: u64,
    pub models: Vec<String>,
}

/// Whether `path` is a lookup-hash log (a file whose first line is one, or a directory of them).
pub fn looks_like(path: &Path, format: Option<Format>) -> bool {
    match format {
        Some(f) => f == Format::LmcacheLookup,
        None if path.is_dir() => lmcache_lookup::is_lookup_dir(path),
        // only a regular file is sniffed: a FIFO would block here (the reader refuses it)
        None if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) => false,
        None => {
            let mut head = Vec::with_capacity(4096);
            let read = std::fs::File::open(path)
                .and_then(|f| f.take(4096).read_to_end(&mut head))
                .is_ok();
            read && detect_format(path, &String::from_utf8_lossy(&head))
                .is_ok_and(|f| f == Format::LmcacheLookup)
        }
    }
}

/// The block size token ids are hashed at as they are read (issue 19): one that divides the GPU
/// block size and the LMCache chunk size (their defaults for a token trace: vLLM's 16 and
/// LMCache's 256), so both are cut from the same hashes.
fn hash_block(args: &SimulateArgs) -> u32 {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let block = args
        .block_size
        .unwrap_or(inferencelab_sim::plan::VLLM_DEFAULT_BLOCK);
    let chunk = match args.no_cpu_tier {
        true => 0,
        false => args
            .chunk_size
            .unwrap_or(inferencelab_sim::plan::LMCACHE_DEFAULT_CHUNK),
    };
    // --infer-conversations compares 16-token prefixes: hashed at a divisor of 16, it finds
    // what it finds from the tokens
    let conversations = if args.input.infer_conversations {
        16
    } else {
        0
    };
    gcd(gcd(block, chunk), conversations).max(1)
}

/// Read the input: a lookup log with its filter and chunk bytes, or any other trace.
pub fn read(args: &SimulateArgs, opts: &ReadOptions) -> anyhow::Result<(Trace, Option<Lookup>)> {
    if !looks_like(&args.input.input_file, args.input.input_format) {
        if args.lookup_model.is_some() || args.kv_bytes_per_chunk.is_some() {
            bail!(
                "--lookup-model and --kv-bytes-per-chunk apply to LMCache lookup-hash logs \
                 (--input-format lmcache-lookup); {} is not one",
                args.input.input_file.display()
            );
        }
        return Ok((
            read_trace_hashed(&args.input.input_file, opts, hash_block(args))?,
            None,
        ));
    }
    let filter = LookupFilter {
        model: args.lookup_model.clone(),
        max_samples: None,
    };
    let log = lmcache_lookup::read(&args.input.input_file, opts, &filter)?;
    if log.models.len() > 1 {
        eprintln!(
            "note: the log holds lookups of {} models ({}); LMCache's simulator mixes them too \
             unless filtered: --lookup-model NAME",
            log.models.len(),
            log.models.join(", ")
        );
    }
    Ok((
        log.trace,
        Some(Lookup {
            chunk_size: log.chunk_size,
            kv_bytes_per_chunk: log.kv_bytes_per_chunk,
            models: log.models,
        }),
    ))
}

/// LMCache's simulator's capacity: `max(1, int(gib * 2^30) // kv_bytes_per_chunk)`, bytes per
/// chunk from `--kv-bytes-per-chunk` or the log's first lookup (times the coarsening factor when
/// `--chunk-size` is a multiple of the log's).
pub fn cpu_chunks(
    args: &SimulateArgs,
    lookup: &Lookup,
    chunk_size: u32,
    gib: f64,
) -> anyhow::Result<u64> {
    let per_log_chunk = match args.kv_bytes_per_chunk.or(Some(lookup.kv_bytes_per_chunk)) {
        Some(b) if b > 0 => b,
        _ => bail!(
            "{}: the first lookup's shapes/dtypes give no KV bytes per chunk; pass \
             --kv-bytes-per-chunk BYTES (or size the tier in chunks: --cpu-chunks N)",
            args.input.input_file.display()
        ),
    };
    let factor = u64::from((chunk_size / lookup.chunk_size.max(1)).max(1));
    let bytes = (gib * (1u64 << 30) as f64) as u64;
    Ok((bytes / per_log_chunk.saturating_mul(factor)).max(1))
}
