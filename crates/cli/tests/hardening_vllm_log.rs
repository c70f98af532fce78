//! Issue 14's two vLLM-log cases, from the command line: a request line with an unreadable
//! time is an error at its line (it used to vanish and its request was blamed on
//! VLLM_LOGGING_LEVEL); a stray 01-01 stamp in a December log does not move the year (it
//! made 203,760 windows, without a note).

use std::process::Command;

mod common;

fn simulate(log: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.log");
    std::fs::write(&path, log).unwrap();
    Command::new(common::BIN)
        .current_dir(dir.path())
        .args([
            "simulate",
            "--no-cpu-tier",
            "--gpu-blocks",
            "100",
            "--json",
            "-q",
        ])
        .arg("--input-file")
        .arg(&path)
        .output()
        .unwrap()
}

fn request(stamp: &str, id: &str) -> String {
    format!(
        "DEBUG {stamp} [l.py:1] Request {id} details: prompt: '', prompt_token_ids: [1, 2, 3], \
         prompt_embeds shape: None.\n"
    )
}

#[test]
fn a_request_line_with_a_bad_time_is_an_error_at_its_line() {
    let log = [
        request("12-10 10:00:00", "a"),
        request("12-1O 10:00:01", "b"),
    ]
    .concat();
    let out = simulate(&log);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.log:2") && err.contains("--skip-invalid"),
        "{err}"
    );
    assert!(!err.contains("panicked at"), "{err}");
}

#[test]
fn a_stray_new_year_stamp_does_not_make_a_year_of_windows() {
    let log = [
        request("12-10 10:00:00", "a"),
        request("01-01 00:00:00", "b"),
        request("12-10 10:00:05", "c"),
    ]
    .concat();
    let out = simulate(&log);
    common::assert_ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let notes = doc["input"]["notes"].to_string();
    assert!(notes.contains("half a year"), "{notes}");
    // 22 days of 60 s windows at most, not a year's
    let windows = doc["results"][0]["windows"].as_array().unwrap().len();
    assert!(windows < 40_000, "{windows}");
}
