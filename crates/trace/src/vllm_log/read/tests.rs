//! The reader's tests: formats, the clock, errors, and the two threads against the whole text.

use super::*;

const P: &str = "v.log";

fn read(text: &str) -> TraceResult<Trace> {
    parse(Path::new(P), text, &ReadOptions::default())
}

fn tokens(t: &Trace, i: usize) -> &[u32] {
    match &t.requests[i].content {
        Content::Tokens(t) => t,
        c => panic!("{c:?}"),
    }
}

const SP: &str =
    "SamplingParams(n=1, temperature=0.7, stop=[', max_tokens=1'], max_tokens=12, min_tokens=0)";

#[test]
fn reads_new_format_requests_and_outputs() {
    let text = format!(
            "(APIServer pid=7) INFO 08-12 12:00:00 [x.py:1] Starting\n\
             (APIServer pid=7) DEBUG 08-12 12:00:06 [entrypoints/.../utils/request_logger.py:56] Request chatcmpl-a details: prompt: 'it\\'s \"prompt_token_ids: [9, 9]\" ok', prompt_token_ids: [1, 2, 3], prompt_embeds shape: None.\n\
             (APIServer pid=7) INFO 08-12 12:00:06 [entrypoints/.../utils/request_logger.py:66] Received request chatcmpl-a: params: {SP}, lora_request: None.\n\
             (APIServer pid=7) DEBUG 08-12 12:00:05 [request_logger.py:56] Request chatcmpl-b details: prompt: \"x\", prompt_token_ids: [4], prompt_embeds shape: None.\n\
             (APIServer pid=7) INFO 08-12 12:00:05 [request_logger.py:66] Received request chatcmpl-b: params: {SP}, lora_request: None.\n\
             (APIServer pid=7) DEBUG 08-12 12:00:08 [request_logger.py:112] Generated response chatcmpl-a (streaming complete) details: output_token_ids: [5, 6]\n\
             (APIServer pid=7) INFO 08-12 12:00:08 [request_logger.py:119] Generated response chatcmpl-a (streaming complete): output: 'done, finish_reason: x', finish_reason: stop\n"
        );
    let t = read(&text).unwrap();
    assert_eq!(t.requests.len(), 2);
    // sorted by arrival: b came first
    assert_eq!(t.requests[0].id, "chatcmpl-b");
    assert_eq!(t.requests[0].timestamp, 0.0);
    assert_eq!(t.requests[0].output_length, 12, "max_tokens fallback");
    // a's finish is the second of two lines with its stamp: one microsecond later
    assert_eq!(t.requests[1].timestamp, 1.0);
    assert_eq!(t.requests[1].finish_time, Some(3.000001));
    assert_eq!(tokens(&t, 1), [1, 2, 3]);
    assert_eq!(t.requests[1].input_length, 3);
    assert_eq!(t.requests[1].output_length, 2);
    assert!(t
        .notes
        .iter()
        .any(|n| n.starts_with("1 requests have no logged output")));
}

#[test]
fn reads_old_format_lines() {
    let text = "INFO 08-12 05:00:01 [logger.py:43] Received request cmpl-1-0: prompt: 'a, params: SamplingParams(max_tokens=99), prompt_token_ids: [7]', params: SamplingParams(n=1, max_tokens=16, min_tokens=0), prompt_token_ids: [11, 12], prompt_embeds shape: None, lora_request: None, prompt_adapter_request: None.\n\
                    INFO 08-12 05:00:03 logger.py:36] Received request cmpl-2-0: prompt: None, sampling_params: SamplingParams(n=1, max_tokens=None), prompt_token_ids: [13], lora_request: None.\n";
    let t = read(text).unwrap();
    assert_eq!(tokens(&t, 0), [11, 12]);
    assert_eq!(t.requests[0].output_length, 16);
    assert_eq!(tokens(&t, 1), [13]);
    assert_eq!(t.requests[1].timestamp, 2.0);
    assert_eq!(t.requests[1].output_length, 0);
}

#[test]
fn streaming_deltas_add_up() {
    let text = "DEBUG 01-01 00:00:00 [l.py:1] Request r details: prompt: '', prompt_token_ids: [], prompt_embeds shape: None.\n\
                    INFO 01-01 00:00:01 [l.py:1] Generated response r (streaming delta): output: 'a', output_token_ids: [1, 2], finish_reason: None\n\
                    INFO 01-01 00:00:02 [l.py:1] Generated response r (streaming delta): output: 'b', output_token_ids: [3], finish_reason: stop\n";
    let t = read(text).unwrap();
    assert_eq!(t.requests[0].output_length, 3);
    assert_eq!(t.requests[0].finish_time, Some(2.0));
    // each delta line's time for the tokens it carried
    assert_eq!(t.requests[0].output_times, Some(vec![1.0, 1.0, 2.0]));
    assert_eq!(t.requests[0].input_length, 0);
}

#[test]
fn lines_sharing_a_second_keep_their_order() {
    let req = |stamp: &str, id: &str| {
        format!(
            "DEBUG 03-01 10:00:{stamp} [l.py:1] Request {id} details: prompt: '', \
                 prompt_token_ids: [1], prompt_embeds shape: None.\n"
        )
    };
    let done = |stamp: &str, id: &str| {
        format!(
            "DEBUG 03-01 10:00:{stamp} [l.py:1] Generated response {id} (streaming complete) \
                 details: output_token_ids: [2]\n"
        )
    };
    // a finishes before b arrives, all in second 01
    let text = [
        req("00", "a"),
        done("01", "a"),
        req("01", "b"),
        done("01", "b"),
    ]
    .concat();
    let t = read(&text).unwrap();
    let (a, b) = (&t.requests[0], &t.requests[1]);
    assert_eq!(a.timestamp, 0.0);
    // three lines in second 01, a microsecond apart
    assert!((a.finish_time.unwrap() - 1.0).abs() < 1e-9);
    assert!(a.finish_time.unwrap() < b.timestamp);
    assert!((b.timestamp - 1.000001).abs() < 1e-9);
    assert!((b.finish_time.unwrap() - 1.000002).abs() < 1e-9);
    // the other way round: b arrives before a finishes
    let text = [
        req("00", "a"),
        req("01", "b"),
        done("01", "a"),
        done("01", "b"),
    ]
    .concat();
    let t = read(&text).unwrap();
    assert!(t.requests[1].timestamp < t.requests[0].finish_time.unwrap());
    // 2,000 lines in one millisecond: a microsecond each does not fit, k / n of it does
    let text: String = (0..2000).map(|i| req("00.250", &format!("r{i}"))).collect();
    let t = read(&text).unwrap();
    assert!((t.requests[1999].timestamp - 0.0009995).abs() < 1e-12);
    // a microsecond stamp is one instant (one step's end): its lines share it, in file order
    let text = [
        req("00.000000", "a"),
        done("01.000250", "a"),
        req("01.000250", "b"),
        done("01.500000", "b"),
    ]
    .concat();
    let t = read(&text).unwrap();
    let (a, b) = (&t.requests[0], &t.requests[1]);
    assert_eq!((a.id.as_str(), b.id.as_str()), ("a", "b"));
    assert_eq!(a.finish_time, Some(b.timestamp));
    assert!((b.timestamp - 1.00025).abs() < 1e-9);
}

#[test]
fn a_stray_new_year_stamp_in_a_december_log_does_not_move_the_year() {
    let req = |stamp: &str, id: &str| {
        format!(
            "DEBUG {stamp} [l.py:1] Request {id} details: prompt: '', prompt_token_ids: [1], \
                 prompt_embeds shape: None.\n"
        )
    };
    let text = [
        req("12-10 10:00:00", "a"),
        req("01-01 00:00:00", "b"),
        req("12-10 10:00:05", "c"),
        req("12-10 10:00:09", "d"),
    ]
    .concat();
    let t = read(&text).unwrap();
    let at = |id: &str| t.requests.iter().find(|r| r.id == id).unwrap().timestamp;
    // c and d are seconds after a, not a year
    assert!((at("c") - 5.0).abs() < 1e-3 && (at("d") - 9.0).abs() < 1e-3);
    assert!(
        t.notes.iter().any(|n| n.contains("first: line 3")),
        "{:?}",
        t.notes
    );
}

#[test]
fn a_request_line_with_an_unreadable_time_is_an_error_at_its_line() {
    let text = "DEBUG 12-10 10:00:00 [l.py:1] Request a details: prompt: '', prompt_token_ids: [1], prompt_embeds shape: None.\n\
                    DEBUG 12-1O 10:00:01 [l.py:1] Request b details: prompt: '', prompt_token_ids: [2], prompt_embeds shape: None.\n";
    let err = read(text).unwrap_err().to_string();
    assert!(err.contains(":2") && err.contains("prefix"), "{err}");
    let skipped = parse(
        Path::new(P),
        text,
        &ReadOptions {
            skip_invalid: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(skipped.requests.len(), 1);
    assert_eq!(skipped.skipped, 1);
}

#[test]
fn clock_unwraps_year_end_and_keeps_small_steps_back() {
    let line = |stamp: &str, id: &str| {
        format!("DEBUG {stamp} [l.py:1] Request {id} details: prompt: 'p', prompt_token_ids: [1], prompt_embeds shape: None.\n")
    };
    let text = [
        line("12-31 23:59:50", "a"),
        line("12-31 23:59:40", "b"),
        line("01-01 00:00:10", "c"),
        line("02-29 00:00:00", "d"),
    ]
    .concat();
    let t = read(&text).unwrap();
    let got: Vec<_> = t
        .requests
        .iter()
        .map(|r| (r.id.as_str(), r.timestamp))
        .collect();
    assert_eq!(
        got,
        [
            ("b", 0.0),
            ("a", 10.0),
            ("c", 30.0),
            ("d", 30.0 - 10.0 + (31.0 + 28.0) * 86_400.0)
        ]
    );
}

#[test]
fn the_streamed_reader_finds_the_leap_day_from_the_stamps() {
    // read in one pass, the log's leap day is not known until its end: the times must
    // come out as the whole-text reader's, which looks for a 02-29 first
    let line = |stamp: &str, id: &str| {
        format!("DEBUG {stamp} [l.py:1] Request {id} details: prompt: 'p', prompt_token_ids: [1], prompt_embeds shape: None.\n")
    };
    let common = [
        line("02-28 12:00:00", "c"),
        line("03-01 12:00:00", "d"),
        line("12-31 23:59:50", "a"),
        line("01-01 00:00:10", "b"),
        line("03-01 12:00:00", "g"),
        line("12-31 12:00:00", "e"),
        line("01-01 12:00:00", "f"),
        line("03-01 12:00:00", "i"),
    ]
    .concat();
    let leap = format!("{common}{}", line("02-29 12:00:00", "h"));
    for text in [common, leap] {
        let whole = read(&text).unwrap();
        let mut bytes = 0;
        let streamed = parse_reader(
            Path::new(P),
            &mut text.as_bytes(),
            &ReadOptions::default(),
            None,
            None,
            &mut bytes,
        )
        .unwrap();
        let times = |t: &Trace| -> Vec<(String, f64)> {
            t.requests
                .iter()
                .map(|r| (r.id.clone(), r.timestamp))
                .collect()
        };
        assert_eq!(times(&whole), times(&streamed));
    }
    // without a 02-29, 02-28 12:00 to 03-01 12:00 is one day
    let whole = read(&[line("02-28 12:00:00", "c"), line("03-01 12:00:00", "d")].concat());
    assert_eq!(whole.unwrap().requests[1].timestamp, 86_400.0);
}

#[test]
fn a_clock_wrapping_every_other_line_does_not_overflow() {
    let mut text = String::new();
    for i in 0..2000 {
        let stamp = if i % 2 == 0 {
            "12-31 00:00:00"
        } else {
            "01-01 00:00:00"
        };
        text += &format!("DEBUG {stamp} [l.py:1] Request r{i} details: prompt: 'p', prompt_token_ids: [1], prompt_embeds shape: None.\n");
    }
    let t = read(&text).unwrap();
    assert_eq!(t.requests.len(), 2000);
    // read as a day's back and forth across one year end, not 1,000 years
    assert!(t.requests.iter().all(|r| r.timestamp <= 86_400.0 + 1.0));
    assert!(t.notes.iter().any(|n| n.contains("999 request lines")));
}

#[test]
fn ansi_colours_are_ignored() {
    let text = "\x1b[32mINFO\x1b[0m 08-12 05:00:01 [logger.py:43] Received request r: prompt: 'x', params: SamplingParams(max_tokens=3), prompt_token_ids: [1], lora_request: None.\n";
    let t = read(text).unwrap();
    assert_eq!(t.requests[0].output_length, 3);
}

#[test]
fn info_only_logs_name_the_fix() {
    let text = format!(
            "INFO 08-12 12:00:06 [request_logger.py:66] Received request a: params: {SP}, lora_request: None.\n"
        );
    let err = read(&text).unwrap_err().to_string();
    assert!(
        err.starts_with("v.log: 1 requests are logged but none with its prompt_token_ids"),
        "{err}"
    );
    assert!(
        err.contains("VLLM_LOGGING_LEVEL=DEBUG") && err.contains("--enable-log-requests"),
        "{err}"
    );
    let err = read("INFO 08-12 12:00:06 [x.py:1] hello\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("--enable-log-requests"), "{err}");
}

#[test]
fn cut_lines_name_file_and_line() {
    let cases = [
            ("DEBUG 01-01 00:00:00 [l.py:1] Request r details: prompt: 'abc, prompt_token_ids: [1, 2", "v.log:1: the quoted string does not end"),
            ("DEBUG 01-01 00:00:00 [l.py:1] Request r details: prompt: 'abc', prompt_token_ids: [1, 2", "v.log:1: prompt_token_ids is cut off"),
            ("DEBUG 01-01 00:00:00 [l.py:1] Request r details: prompt: 'abc', prompt_token_ids: [1, x]", "v.log:1: prompt_token_ids has a bad token id"),
            ("DEBUG 01-01 00:00:00 [l.py:1] Request r details: prompt: 'abc', prompt_token_ids: [4294967296]", "v.log:1: prompt_token_ids has a token id that does not fit"),
            ("INFO 01-01 00:00:00 [l.py:1] Received request r", "v.log:1: no \": \" after the request id"),
        ];
    for (text, want) in cases {
        let err = read(text).unwrap_err().to_string();
        assert!(err.starts_with(want), "{err}");
    }
    let opts = ReadOptions {
        skip_invalid: true,
        ..Default::default()
    };
    let text = "DEBUG 01-01 00:00:00 [l.py:1] Request r details: prompt: 'a', prompt_token_ids: [1], prompt_embeds shape: None.\n\
                    DEBUG 01-01 00:00:01 [l.py:1] Request s details: prompt: 'a', prompt_token_ids: [1, 2";
    let t = parse(Path::new(P), text, &opts).unwrap();
    assert_eq!((t.requests.len(), t.skipped), (1, 1));
}

#[test]
fn lmcache_lines_are_matched_to_requests() {
    let text = "DEBUG 01-01 00:00:00 [l.py:1] Request chatcmpl-x details: prompt: 'a', prompt_token_ids: [1, 2, 3], prompt_embeds shape: None.\n\
                    [2025-01-01 00:00:00,123] LMCache INFO: Reqid: chatcmpl-x-1a2b3c4d, Total tokens 3, Inference Engine computed tokens: 0, LMCache hit tokens: 2, need to load: 2 (vllm_v1_adapter.py:1:m)\n\
                    (EngineCore pid=2) [2025-01-01 00:00:00,200] LMCache INFO: Reqid: chatcmpl-x, Total tokens 3, LMCache hit tokens: 2, need to load: -1 (a.py:1:m)\n\
                    [2025-01-01 00:00:00,300] LMCache INFO: Reqid: other, Total tokens 9, LMCache hit tokens: 0, need to load: 0\n";
    let t = read(text).unwrap();
    assert_eq!(
        t.lmcache,
        [
            LmcacheLookup {
                request_id: "chatcmpl-x".into(),
                matched: true,
                total_tokens: 3,
                engine_computed_tokens: None,
                hit_tokens: 2,
                need_to_load: -1,
            },
            LmcacheLookup {
                request_id: "other".into(),
                matched: false,
                total_tokens: 9,
                engine_computed_tokens: None,
                hit_tokens: 0,
                need_to_load: 0,
            },
        ]
    );
    assert!(
        t.notes
            .iter()
            .any(|n| n.starts_with("1 LMCache lookup lines")),
        "{:?}",
        t.notes
    );
    let bad = "[x] LMCache INFO: Reqid: r, Total tokens many";
    let text = format!("DEBUG 01-01 00:00:00 [l.py:1] Request r details: prompt: 'a', prompt_token_ids: [1], prompt_embeds shape: None.\n{bad}\n");
    let err = read(&text).unwrap_err().to_string();
    assert!(
        err.starts_with("v.log:2: no number after \"Total tokens\""),
        "{err}"
    );
}

#[test]
fn max_log_len_truncation_is_reported() {
    let req = |id: &str, prompt: &str, toks: &[u32]| {
        format!("DEBUG 01-01 00:00:00 [l.py:1] Request {id} details: prompt: {prompt:?}, prompt_token_ids: {toks:?}, prompt_embeds shape: None.\n")
    };
    // prompt text cut at the same length as the ids: definite
    let cut: Vec<u32> = (0..16).collect();
    let text = [req("a", "abcdefghijklmnop", &cut), req("b", "xy", &[1, 2])].concat();
    let t = read(&text).unwrap();
    let note = t
        .notes
        .iter()
        .find(|n| n.contains("--max-log-len 16"))
        .expect("note");
    assert!(
        note.starts_with("1 of 2 requests log exactly 16 prompt token ids"),
        "{note}"
    );
    assert!(
        note.contains("prompt text cut at exactly 16 characters"),
        "{note}"
    );
    assert!(
        note.contains("underestimated") && note.contains("restart vLLM"),
        "{note}"
    );
    // identical cut prefixes of one conversation: likely
    let text = [
        req("a", "<elided>", &[1, 2, 3]),
        req("b", "<elided>", &[1, 2, 3]),
        req("c", "<elided>", &[1]),
    ]
    .concat();
    let t = read(&text).unwrap();
    assert!(
        t.notes.iter().any(|n| n.contains("--max-log-len 3")),
        "{:?}",
        t.notes
    );
    // a fixed-length benchmark (every prompt equally long) is not reported
    let text = [req("a", "<elided>", &[1, 2]), req("b", "<elided>", &[3, 4])].concat();
    let notes = read(&text).unwrap().notes;
    assert!(
        !notes.iter().any(|n| n.contains("--max-log-len")),
        "{notes:?}"
    );
}

#[test]
fn reused_ids_make_new_requests() {
    let line = |t: &str| {
        format!("DEBUG 01-01 00:00:0{t} [l.py:1] Request same details: prompt: 'p', prompt_token_ids: [1], prompt_embeds shape: None.\n")
    };
    let t = read(&[line("0"), line("5")].concat()).unwrap();
    assert_eq!(t.requests.len(), 2);
    assert_eq!(t.requests[1].timestamp, 5.0);
}

/// A list read by `parse_id_list`, by the careful parser alone.
type Both = (
    Result<(usize, Option<Vec<u32>>), String>,
    Result<Vec<u32>, String>,
);

/// `parse_id_list` on `s`, and what the careful parser alone gives.
fn both_ways(s: &str) -> Both {
    let mut arena = vec![7];
    let fast = parse_id_list(s.as_bytes(), "ids", &mut arena)
        .map(|(used, r)| (used, r.map(|r| arena[r].to_vec())));
    assert_eq!(arena[0], 7, "{s}: the arena's earlier ids are kept");
    if fast.is_err() {
        assert_eq!(arena.len(), 1, "{s}: nothing is left behind on an error");
    }
    let mut ids = Vec::new();
    let careful = parse_ids_checked(s.as_bytes(), "ids", &mut ids).map(|_| ids);
    (fast, careful)
}

#[test]
fn id_lists_read_eight_bytes_at_a_time_read_as_the_careful_parser_does() {
    let cases = [
        "[]",
        "[0]",
        "[1, 2, 3]",
        "[151644, 8948, 198]",
        "[01, 007]",
        "[4294967295]",
        "[1234567, 12345678, 123456789, 1234567890]",
        "[4294967296]",
        "[12345678901]",
        "[ 1 ,2 ]",
        "[1,2]",
        "[1, ]",
        "[",
        "[1, 2",
        "[1, 2, x]",
        "[-1]",
        "x",
        "[1]]",
        "[1, 2], tail",
        "[99999999, 9], prompt_embeds shape: None.",
    ];
    for s in cases {
        let (fast, careful) = both_ways(s);
        match (fast, careful) {
            (Ok((_, Some(a))), Ok(b)) => assert_eq!(a, b, "{s}"),
            (Err(a), Err(b)) => assert_eq!(a, b, "{s}"),
            (a, b) => panic!("{s}: {a:?} vs {b:?}"),
        }
    }
    assert_eq!(both_ways("None, x").0, Ok((4, None)));
    // every digit count at every distance from the end of the text, and after it
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for len in 0..40 {
        let ids: Vec<u32> = (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let digits = 1 + (i + len) % 10;
                (x % 10u64.pow(digits as u32)).min(u32::MAX as u64) as u32
            })
            .collect();
        let list = format!("{ids:?}");
        for tail in ["", "]", ", finish_reason: stop", "9"] {
            let s = format!("{list}{tail}");
            let (fast, _) = both_ways(&s);
            assert_eq!(fast, Ok((list.len(), Some(ids.clone()))), "{s}");
        }
    }
}

fn fixture(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// [`parse_reader`]'s threads reading `chunk_bytes` at a time, the id lists read by the
/// reader thread, by the other one, or as they balance (`keep_lists`).
fn read_in_chunks(
    text: &str,
    chunk_bytes: usize,
    keep_lists: Option<bool>,
    opts: &ReadOptions,
) -> TraceResult<Trace> {
    let mut p = LineParser::new(Path::new(P), opts, true, None);
    p.find_leap_day = true;
    let mut bytes = 0;
    read_lines(
        &mut p,
        &mut text.as_bytes(),
        chunk_bytes,
        keep_lists,
        &mut bytes,
    )?;
    assert_eq!(bytes, text.len() as u64, "every byte is counted");
    p.finish()
}

#[test]
fn the_reader_thread_splits_lines_across_chunks_as_the_whole_text_is() {
    for name in [
        "vllm_new_small.log",
        "vllm_old_small.log",
        "vllm_lmcache.log",
    ] {
        let text = fixture(name);
        let whole = format!("{:?}", read(&text).unwrap());
        // lines cut at every kind of place, lines longer than a chunk, no final newline
        for chunk in [1, 7, 100, 4096, 1 << 20] {
            for text in [text.clone(), text.trim_end().replace('\n', "\r\n")] {
                for keep in [Some(false), Some(true), None] {
                    let t = read_in_chunks(&text, chunk, keep, &ReadOptions::default());
                    let what = format!("{name} in {chunk}-byte chunks, lists kept {keep:?}");
                    assert_eq!(format!("{:?}", t.unwrap()), whole, "{what}");
                }
            }
        }
    }
}

#[test]
fn the_reader_thread_reports_the_first_bad_line() {
    let good = "DEBUG 01-01 00:00:00 [l.py:1] Request a details: prompt: 'p', prompt_token_ids: [1], prompt_embeds shape: None.\n";
    let cut =
        "DEBUG 01-01 00:00:01 [l.py:1] Request b details: prompt: 'p', prompt_token_ids: [1, 2\n";
    let strict = ReadOptions::default();
    let skip = ReadOptions {
        skip_invalid: true,
        ..Default::default()
    };
    for (chunk, keep) in [(5, None), (64, Some(true)), (1 << 20, Some(false))] {
        let err = |text: &str, opts: &ReadOptions| {
            read_in_chunks(text, chunk, keep, opts)
                .unwrap_err()
                .to_string()
        };
        // a bad line before a line that is not text is reported first
        let text = format!("{good}\n{cut}x\0y\n{good}");
        assert!(err(&text, &strict).contains("v.log:3: prompt_token_ids is cut off"));
        assert!(err(&text, &skip).contains("v.log:4: contains NUL bytes"));
        let bytes = [good.as_bytes(), b"\xff\xfe\n", good.as_bytes()].concat();
        let mut p = LineParser::new(Path::new(P), &strict, true, None);
        let e = read_lines(&mut p, &mut bytes.as_slice(), chunk, keep, &mut 0).unwrap_err();
        assert!(e.to_string().contains("v.log:2: is not UTF-8"), "{e}");
        // a NUL before a bad byte on the same line: not UTF-8, as when read whole
        let bytes = [good.as_bytes(), b"\0\xff\n"].concat();
        let mut p = LineParser::new(Path::new(P), &strict, true, None);
        let e = read_lines(&mut p, &mut bytes.as_slice(), chunk, keep, &mut 0).unwrap_err();
        assert!(e.to_string().contains("v.log:2: is not UTF-8"), "{e}");
    }
    // a bad id list left to the other thread gives the error reading it in place gives
    let line = |list: &str| {
        format!("DEBUG 01-01 00:00:00 [l.py:1] Request a details: prompt: 'p', prompt_token_ids: {list}, prompt_embeds shape: None.\n")
    };
    for list in [
        "[1, x]",
        "[1, 2",
        "[99999999999]",
        "[1 , 2]]",
        "junk",
        "[]",
        "None",
    ] {
        let text = line(list);
        let whole = format!("{:?}", read(&text));
        for keep in [Some(true), Some(false)] {
            let t = read_in_chunks(&text, 1 << 20, keep, &strict);
            assert_eq!(format!("{t:?}"), whole, "{list}, lists kept {keep:?}");
        }
    }
}

#[test]
fn prompt_text_scanned_eight_bytes_at_a_time_counts_as_one_at_a_time() {
    // the same scan, one byte at a time
    fn slow(s: &str) -> Result<(usize, usize), ()> {
        let b = s.as_bytes();
        let q = b[0];
        let (mut i, mut chars) = (1, 0);
        while let Some(&c) = b.get(i) {
            if c == b'\\' {
                i += match b.get(i + 1).ok_or(())? {
                    b'x' => 4,
                    b'u' => 6,
                    b'U' => 10,
                    _ => 2,
                };
                chars += 1;
            } else if c == q {
                return Ok((i + 1, chars));
            } else {
                chars += (c & 0xC0 != 0x80) as usize;
                i += 1;
            }
        }
        Err(())
    }
    let pieces = [
        "a",
        "é",
        "€",
        "😀",
        "\\n",
        "\\'",
        "\\\\",
        "\\x0b",
        "\\u2028",
        "\\U0001f600",
        "\"",
        " ",
        "'",
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for n in 0..400 {
        let q = if n % 2 == 0 { '\'' } else { '"' };
        let mut s = q.to_string();
        for _ in 0..n % 37 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let p = pieces[(x % pieces.len() as u64) as usize];
            if !p.contains(q) || p.starts_with('\\') {
                s.push_str(p);
            }
        }
        for end in [
            format!("{q}, prompt_token_ids: [1]"),
            String::new(),
            "\\".into(),
        ] {
            let text = format!("{s}{end}");
            let fast = scan_repr(&text).map(|(used, chars)| (used, chars.unwrap()));
            assert_eq!(fast.map_err(|_| ()), slow(&text), "{text}");
        }
    }
}

#[test]
fn finished_sending_lines_are_matched_to_requests_by_the_engines_id() {
    // the engine's id is the API's plus a random suffix; a line for an unknown request and one
    // naming the API id itself are taken as they match
    let text = format!(
        "(APIServer pid=7) DEBUG 12-05 00:40:05.000 [request_logger.py:55] Request chatcmpl-bench-1 details: prompt: 'x', prompt_token_ids: [1, 2], prompt_embeds shape: None.\n\
         (APIServer pid=7) INFO 12-05 00:40:05.000 [request_logger.py:65] Received request chatcmpl-bench-1: params: {SP}, lora_request: None.\n\
         (APIServer pid=7) DEBUG 12-05 00:40:05.100 [request_logger.py:55] Request b details: prompt: 'y', prompt_token_ids: [3], prompt_embeds shape: None.\n\
         (APIServer pid=7) INFO 12-05 00:40:06.467 [request_logger.py:108] Generated response chatcmpl-bench-1 (streaming complete): output: 'z', finish_reason: length\n\
         (EngineCore pid=8) DEBUG 12-05 00:40:06.494 [v1/core/sched/scheduler.py:3233] Finished sending KV transfer for request chatcmpl-bench-1-b99578e2\n\
         (EngineCore pid=8) DEBUG 12-05 00:40:06.600 [v1/core/sched/scheduler.py:3233] Finished sending KV transfer for request gone-12345678\n\
         (EngineCore pid=8) DEBUG 12-05 00:40:06.700 [v1/core/sched/scheduler.py:3233] Finished sending KV transfer for request b\n"
    );
    let t = read(&text).unwrap();
    assert_eq!(t.requests.len(), 2);
    assert_eq!(t.requests[0].finish_time, Some(1.467));
    let sent = |id: &str| t.kv_sent_s.get(id).map(|s| (s * 1000.0).round());
    assert_eq!(sent("chatcmpl-bench-1"), Some(1494.0));
    assert_eq!(sent("b"), Some(1700.0));
    assert_eq!(t.kv_sent_s.len(), 2);
}
