//! `simulate --cpu-cache-gb 1,4` (issue 16): the LMCache tier's sizes are a grid axis beside the
//! policies and GPU sizes; each point gives what a run at that one size gives.

mod common;

fn trace() -> String {
    common::repo("data/traces/mooncake/synthetic_trace.jsonl")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_list_of_cpu_sizes_is_a_grid_of_single_size_runs() {
    let t = trace();
    let base = ["--input-file", &t, "-p", "lru,fifo", "--gpu-blocks", "3000"];
    let grid = common::simulate_json(&[&base[..], &["--cpu-cache-gb", "1,4"]].concat());
    let rows = grid["results"].as_array().unwrap();
    // (rows also carry each run's speed, refs/s: compare the figures, not whole rows)
    assert_eq!(rows.len(), 4, "2 policies x 1 GPU size x 2 CPU sizes");
    for gb in ["1", "4"] {
        let one = common::simulate_json(&[&base[..], &["--cpu-cache-gb", gb]].concat());
        for r in one["results"].as_array().unwrap() {
            let same = rows
                .iter()
                .find(|g| g["policy"] == r["policy"] && g["cpu_chunks"] == r["cpu_chunks"])
                .unwrap_or_else(|| panic!("{gb} GiB, {}: not in the grid", r["policy"]));
            for k in [
                "cpu_cache_gb",
                "cpu_hit_tokens",
                "cpu_evictions",
                "token_hit_ratio",
                "total_token_hit_ratio",
            ] {
                assert_eq!(same[k], r[k], "{gb} GiB, {}: {k}", r["policy"]);
            }
        }
    }
    let chunks: Vec<u64> = rows
        .iter()
        .map(|r| r["cpu_chunks"].as_u64().unwrap())
        .collect();
    assert!(chunks[0] < chunks[1], "{chunks:?}");
    // without the flag: LMCache's default 5 GiB, one column
    let default = common::simulate_json(&base);
    let five = common::simulate_json(&[&base[..], &["--cpu-cache-gb", "5"]].concat());
    let figures = |doc: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value)> {
        doc["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["cpu_chunks"].clone(), r["total_token_hit_ratio"].clone()))
            .collect()
    };
    assert_eq!(figures(&default), figures(&five));
}
