//! Reader throughput (MB/s of input) on the real shared inputs when this machine has them:
//! the 2.6 MB vLLM 0.33 sample log (200 requests, DEBUG request logging) and the Mooncake
//! synthetic trace (3,993 requests). Inputs are read into memory first: this times parsing only.
//!
//! `cargo bench -p inferencelab-trace --bench readers`

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use inferencelab_trace::readers::parse_str;
use inferencelab_trace::{Format, ReadOptions};

const INPUTS: [(&str, Format, &str); 2] = [
    (
        "vllm_log",
        Format::VllmLog,
        "/work/shared/data/vllm-logs/server_vllm-0.33_synthetic_200req.log",
    ),
    (
        "mooncake",
        Format::Mooncake,
        "/work/shared/data/mooncake/synthetic_trace.jsonl",
    ),
];

fn readers(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, format, path) in INPUTS {
        let Ok(text) = std::fs::read_to_string(path) else {
            eprintln!("skipping {name}: {path} is not here");
            continue;
        };
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let t = parse_str(format, Path::new(path), &text, &ReadOptions::default()).unwrap();
                assert!(!t.requests.is_empty());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, readers);
criterion_main!(benches);
