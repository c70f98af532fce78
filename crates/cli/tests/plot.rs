//! CLI tests of `inferencelab plot`: the real binary on the checked-in result fixture
//! (crates/report/tests/fixtures/batch_summary.json: two chart sets, LMCache off and 16 GiB;
//! lru, fifo, s3fifo, belady, ideal at three capacities; one failed point).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

mod common;

const POLICIES: [&str; 5] = ["lru", "fifo", "s3fifo", "belady", "ideal"];
const CHARTS: [&str; 5] = [
    "hit_ratio_vs_capacity",
    "hit_ratio_over_time",
    "tier_breakdown",
    "compute_saved_vs_capacity",
    "gap_closed_vs_belady",
];

fn fixture() -> PathBuf {
    common::repo("crates/report/tests/fixtures/batch_summary.json")
}

fn plot(input: &Path, out: &Path) -> std::process::Output {
    common::bin()
        .arg("plot")
        .arg("--summary-file")
        .arg(input)
        .arg("--output-dir")
        .arg(out)
        .output()
        .unwrap()
}

fn plot_ok(input: &Path, out: &Path) {
    let o = plot(input, out);
    assert!(
        o.status.success(),
        "plot failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Decode a PNG; return its size and how many distinct colors it has.
fn decode_png(path: &Path) -> (u32, u32, usize) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{}: not a PNG: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let px = info.color_type.samples();
    let mut colors: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    colors.sort_unstable();
    colors.dedup();
    (info.width, info.height, colors.len())
}

fn check_chart_set(dir: &Path) {
    for chart in CHARTS {
        let png = dir.join(format!("{chart}.png"));
        let (w, h, colors) = decode_png(&png);
        assert!(w >= 1000 && h >= 600, "{}: {w}x{h}", png.display());
        // text is anti-aliased and lines are colored: a real chart has many colors
        assert!(colors > 50, "{}: only {colors} colors", png.display());
        let svg = std::fs::read_to_string(dir.join(format!("{chart}.svg"))).unwrap();
        assert!(
            svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{chart}.svg"
        );
        assert!(svg.contains("<text"), "{chart}.svg has no text");
    }
}

fn check_report(html: &str, inline_charts: usize) {
    assert!(html.starts_with("<!DOCTYPE html>"));
    // self-contained: nothing to fetch (inline SVGs drop their xmlns)
    for bad in [
        "http://", "https://", "//cdn", "<link", "src=\"//", "@import", "url(",
    ] {
        assert!(!html.contains(bad), "the report contains {bad:?}");
    }
    for p in POLICIES {
        assert!(
            html.contains(&format!(">{p}<")) || html.contains(&format!(">{p} ")),
            "{p}"
        );
    }
    assert_eq!(html.matches("<svg").count(), inline_charts);
    assert!(html.contains("<table class=\"sortable\""));
    assert!(html.contains("<script>") && html.contains("</html>"));
}

#[test]
fn plot_batch_summary_writes_charts_and_a_self_contained_report() {
    let out = tempfile::tempdir().unwrap();
    plot_ok(&fixture(), out.path());
    let mut sets: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    let names: Vec<String> = sets
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["01-cpu_size-off", "02-cpu_size-16-gib"]);
    for set in &sets {
        check_chart_set(set);
    }
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    check_report(&html, 10);
    // the failed point is listed with its error, and is in no chart
    assert!(html.contains("Failed points (1)"));
    assert!(html.contains("not implemented: policy not written yet"));
    assert!(html.contains("01-cpu_size-off/hit_ratio_vs_capacity.png"));
}

#[test]
fn plot_reads_jsonl_rows_and_simulate_summaries() {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(fixture()).unwrap()).unwrap();
    let rows = doc["results"].as_array().unwrap();
    let dir = tempfile::tempdir().unwrap();

    // batch's results.jsonl, cut off mid-line as by a killed run: the torn line is dropped
    let jsonl = dir.path().join("results.jsonl");
    let mut text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    text.push_str("{\"policy\": \"lru\", \"gpu_blo");
    std::fs::write(&jsonl, text).unwrap();
    let out = dir.path().join("from-jsonl");
    plot_ok(&jsonl, &out);
    check_report(
        &std::fs::read_to_string(out.join("report.html")).unwrap(),
        10,
    );

    // simulate's summary: rows without the batch parameters, the trace given once on top;
    // one chart set, straight into the output directory
    let sim_rows: Vec<Value> = rows
        .iter()
        .filter(|r| r["cpu_size"].is_null() && r["error"].is_null())
        .map(|r| {
            let mut r = r.clone();
            for k in [
                "trace",
                "trace_path",
                "point_id",
                "point_index",
                "gpu_size",
                "cpu_size",
            ] {
                r.as_object_mut().unwrap().remove(k);
            }
            r
        })
        .collect();
    let sim = dir.path().join("simulate_synthetic_trace.json");
    let summary = json!({
        "command": "simulate",
        "input": {"path": "data/traces/mooncake/synthetic_trace.jsonl", "format": "mooncake"},
        "results": sim_rows,
    });
    std::fs::write(&sim, summary.to_string()).unwrap();
    let out = dir.path().join("from-simulate");
    plot_ok(&sim, &out);
    check_chart_set(&out);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    check_report(&html, 5);
    assert!(html.contains("data/traces/mooncake/synthetic_trace.jsonl"));
    assert!(html.contains("<title>InferenceLab: simulate_synthetic_trace</title>"));
}

#[test]
fn plot_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plots");

    let missing = dir.path().join("nope.json");
    let o = plot(&missing, &out);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("nope.json"), "{err}");

    let bad = dir.path().join("results.jsonl");
    std::fs::write(
        &bad,
        "{\"policy\": \"lru\"}\n{\"policy\" 1}\n{\"policy\": \"lru\"}\n",
    )
    .unwrap();
    let o = plot(&bad, &out);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("results.jsonl:2:"), "{err}");

    let not_results = dir.path().join("config.json");
    std::fs::write(&not_results, "{\"name\": \"x\"}").unwrap();
    let o = plot(&not_results, &out);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("config.json") && err.contains("results"),
        "{err}"
    );
    assert!(!out.join("report.html").exists());
}
