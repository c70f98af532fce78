//! The library API as `batch` calls it: load a result file, draw it, get the files back.

use std::path::{Path, PathBuf};

use inferencelab_report::{load_results, plot_results, ReportError, REPORT_FILE};
use serde_json::json;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/batch_summary.json")
}

#[test]
fn returns_every_file_written_report_last() {
    let rows = load_results(&fixture()).unwrap();
    assert_eq!(rows.len(), 30);
    let out = tempfile::tempdir().unwrap();
    let files = plot_results(&rows, out.path(), "fixture").unwrap();
    // 2 chart sets x 5 charts x (PNG + SVG) + the report
    assert_eq!(files.len(), 21);
    assert_eq!(files.last().unwrap(), &out.path().join(REPORT_FILE));
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len > 1000, "{}: {len} bytes", f.display());
    }
    let html = std::fs::read_to_string(out.path().join(REPORT_FILE)).unwrap();
    assert!(html.contains("<title>fixture</title>"));
}

#[test]
fn failed_points_only_still_make_a_report() {
    let rows = vec![
        json!({"policy": "s3fifo", "trace": "t", "error": "bad <policy> parameter"}),
        json!({"policy": "lru", "trace": "t", "error": "missing file"}),
    ];
    let out = tempfile::tempdir().unwrap();
    let files = plot_results(&rows, out.path(), "all failed").unwrap();
    assert_eq!(files, vec![out.path().join(REPORT_FILE)]);
    let html = std::fs::read_to_string(&files[0]).unwrap();
    assert!(html.contains("Failed points (2)"));
    assert!(html.contains("bad &lt;policy&gt; parameter"));
}

#[test]
fn no_rows_is_an_error() {
    let out = tempfile::tempdir().unwrap();
    assert!(matches!(
        plot_results(&[], out.path(), "x"),
        Err(ReportError::NoRows)
    ));
}

/// Odd but valid inputs draw without errors: one row, only `ideal`, no windows, no GiB, a
/// zero capacity, everything hitting, capacities within one decade (linear axis).
#[test]
fn odd_inputs_still_draw() {
    let row = |policy: &str, blocks: u64, hit: f64| json!({"policy": policy, "gpu_blocks": blocks, "token_hit_ratio": hit, "trace": "t"});
    let cases: Vec<(&str, Vec<serde_json::Value>)> = vec![
        ("one row", vec![row("lru", 100, 0.5)]),
        (
            "only ideal",
            vec![row("ideal", 100, 0.9), row("ideal", 200, 0.9)],
        ),
        (
            "zero capacity",
            vec![row("lru", 0, 0.0), row("lru", 10, 0.1)],
        ),
        (
            "all hit, linear axis",
            vec![
                row("lru", 100, 1.0),
                row("lru", 300, 1.0),
                row("belady", 100, 1.0),
                row("belady", 300, 1.0),
                row("fifo", 100, 1.0),
            ],
        ),
    ];
    for (name, rows) in cases {
        let out = tempfile::tempdir().unwrap();
        let files = plot_results(&rows, out.path(), name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(files.len() >= 5, "{name}: {files:?}");
    }
}

/// The gap-closed chart clips its axis far below -100%; the clipped points are then named on the
/// chart, so a line pinned to the bottom edge does not read as "-100%" (issue 15).
#[test]
fn gap_closed_chart_says_when_it_clips() {
    let row = |policy: &str, blocks: u64, hit: f64| json!({"policy": policy, "gpu_blocks": blocks, "token_hit_ratio": hit, "trace": "t"});
    let draw = |fifo: f64| {
        let rows = vec![
            row("lru", 100, 0.40),
            row("lru", 1000, 0.50),
            row("belady", 100, 0.45),
            row("belady", 1000, 0.55),
            row("fifo", 100, fifo),
            row("fifo", 1000, 0.52),
        ];
        let out = tempfile::tempdir().unwrap();
        plot_results(&rows, out.path(), "gap").unwrap();
        std::fs::read_to_string(out.path().join("gap_closed_vs_belady.svg")).unwrap()
    };
    // fifo at 100 blocks: (0.10 - 0.40) / (0.45 - 0.40) = -600%, below the -105% edge
    let clipped = draw(0.10);
    assert!(
        clipped.contains("1 point(s) below -105% clipped"),
        "the clipped point is named"
    );
    // (0.42 - 0.40) / 0.05 = 40%: nothing clipped, nothing said
    assert!(!draw(0.42).contains("clipped"));
}

/// The admission-delay chart is drawn when some request waited, with the delays in the report's
/// table, and left out when nobody did (the fixture: no delays).
#[test]
fn admission_delay_chart_only_when_requests_waited() {
    let row = |policy: &str, blocks: u64, p50: f64, p90: f64| {
        json!({"policy": policy, "gpu_blocks": blocks, "token_hit_ratio": 0.3, "trace": "t",
               "queue_delay_p50_s": p50, "queue_delay_p90_s": p90})
    };
    let chart = "admission_delay_vs_capacity.png";
    let waited = vec![
        row("lru", 100, 3555.0, 4940.0),
        row("lru", 1000, 2064.0, 2249.0),
        row("conversation_aware", 100, 3000.0, 4000.0),
        row("conversation_aware", 1000, 1800.0, 2100.0),
    ];
    let out = tempfile::tempdir().unwrap();
    let files = plot_results(&waited, out.path(), "queue").unwrap();
    assert!(files.contains(&out.path().join(chart)), "{files:?}");
    let html = std::fs::read_to_string(out.path().join(REPORT_FILE)).unwrap();
    assert!(
        html.contains("Queue p50 s") && html.contains("3555"),
        "{html}"
    );
    let idle: Vec<_> = waited
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["queue_delay_p50_s"] = json!(0.0);
            r["queue_delay_p90_s"] = json!(0.0);
            r
        })
        .collect();
    let out = tempfile::tempdir().unwrap();
    let files = plot_results(&idle, out.path(), "no queue").unwrap();
    assert!(!files.contains(&out.path().join(chart)), "{files:?}");
    // the fixture predates the delays: no chart, no columns
    let out = tempfile::tempdir().unwrap();
    plot_results(&load_results(&fixture()).unwrap(), out.path(), "fixture").unwrap();
    let html = std::fs::read_to_string(out.path().join(REPORT_FILE)).unwrap();
    assert!(!html.contains("Queue p50 s"));
}
