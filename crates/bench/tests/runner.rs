//! The dispatch loop against the fake executor on a paused tokio clock: every time below is
//! exact, and the tests take no real time.

use std::sync::Arc;
use std::time::Duration;

use inferencelab_bench::executor::{FakeExecutor, FakeReply};
use inferencelab_bench::metrics::summarize;
use inferencelab_bench::record::ErrorKind;
use inferencelab_bench::runner::{run, NoObserver, RunConfig, StopReason};
use inferencelab_bench::workload::{
    BodyOptions, ConversationSpec, ConversationWorkload, Prompt, RandomWorkload, TokenRange,
    TurnSpec,
};
use inferencelab_bench::Arrival;

fn cfg(arrival: Arrival) -> RunConfig {
    RunConfig {
        arrival,
        max_concurrency: None,
        num_prompts: None,
        duration: None,
        time_scale: 1.0,
        seed: 0,
        request_id_prefix: "t-".into(),
        request_id_header: Default::default(),
        body: BodyOptions::default(),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[tokio::test(start_paused = true)]
async fn closed_loop_with_max_concurrency() {
    // 4 requests at once, 2 slots; each request: first token after 100 ms, 4 more 10 ms apart.
    //   slot A: r0 [0, 140ms) r2 [140, 280)
    //   slot B: r1 [0, 140ms) r3 [140, 280)
    let exec = Arc::new(FakeExecutor::fixed(
        Duration::from_millis(100),
        Duration::from_millis(10),
    ));
    let mut w = RandomWorkload::new(Some(4), 8, 5, 0, TokenRange::default());
    let mut c = cfg(Arrival::Burst);
    c.max_concurrency = Some(2);
    let out = run(exec, &mut w, &c, &mut NoObserver, std::future::pending())
        .await
        .unwrap();
    assert_eq!(out.stop, StopReason::Completed);
    assert_eq!(out.records.len(), 4);
    let sends: Vec<f64> = out.records.iter().map(|r| r.send_s).collect();
    assert!(close(sends[0], 0.0) && close(sends[1], 0.0), "{sends:?}");
    assert!(close(sends[2], 0.14) && close(sends[3], 0.14), "{sends:?}");
    // Client lag shows the wait for a slot (scheduled at 0, sent at 140 ms).
    assert!(close(out.records[3].client_lag_s, 0.14));
    for r in &out.records {
        assert!(r.success, "{r:?}");
        assert!(close(r.ttft_s, 0.1) && close(r.e2el_s, 0.14));
        assert!(close(r.tpot_s, 0.01));
        assert_eq!(r.itl_s.len(), 4);
        assert_eq!(r.output_tokens, 5);
        assert_eq!(r.prompt_len, 8);
    }
    let s = summarize(&out.records, out.duration_s, &[99.0], &[]);
    assert!(close(out.duration_s, 0.28));
    assert_eq!(s.completed, 4);
    assert_eq!(s.max_concurrent_requests, 2);
    assert!(close(s.ttft.mean, 100.0) && close(s.itl.median, 10.0));
    assert!(close(s.request_throughput, 4.0 / 0.28));
    assert_eq!(s.total_output_tokens, 20);
}

#[tokio::test(start_paused = true)]
async fn poisson_schedule_is_followed_and_limits_stop_sending() {
    let exec = Arc::new(FakeExecutor::fixed(
        Duration::from_millis(5),
        Duration::from_millis(1),
    ));
    let mut w = RandomWorkload::new(Some(50), 4, 2, 0, TokenRange::default());
    let c = cfg(Arrival::from_rate(20.0, 1.0));
    let out = run(
        exec.clone(),
        &mut w,
        &c,
        &mut NoObserver,
        std::future::pending(),
    )
    .await
    .unwrap();
    let last = out.records.last().unwrap();
    assert!(close(last.scheduled_s, 50.0 / 20.0), "vLLM normalization");
    // tokio's timer wheel has millisecond slots: a send is at most 1 ms late.
    assert!(out
        .records
        .iter()
        .all(|r| (0.0..0.001 + 1e-9).contains(&r.client_lag_s)));

    let mut w = RandomWorkload::new(None, 4, 2, 0, TokenRange::default());
    let mut c = cfg(Arrival::Constant { rate: 10.0 });
    c.num_prompts = Some(7);
    let out = run(
        exec.clone(),
        &mut w,
        &c,
        &mut NoObserver,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!((out.sent, out.stop), (7, StopReason::NumPrompts));

    let mut w = RandomWorkload::new(None, 4, 2, 0, TokenRange::default());
    let mut c = cfg(Arrival::Constant { rate: 10.0 });
    c.duration = Some(Duration::from_millis(1050));
    let out = run(exec, &mut w, &c, &mut NoObserver, std::future::pending())
        .await
        .unwrap();
    assert_eq!(out.stop, StopReason::Duration);
    assert_eq!(out.sent, 10, "sends at 0.1 .. 1.0 s");
    assert_eq!(out.records.len(), 10, "all ended before the limit");
}

#[tokio::test(start_paused = true)]
async fn duration_is_a_hard_limit_that_cuts_the_requests_in_flight() {
    // Request 0 answers in 10 ms, the others would take 100 s.
    let exec = Arc::new(FakeExecutor::new(|r| {
        let i: u64 = r.request_id.trim_start_matches("t-").parse().unwrap();
        FakeReply {
            ttft: Duration::from_millis(if i == 0 { 10 } else { 100_000 }),
            itl: Duration::from_millis(1),
            output_tokens: 2,
            prompt_tokens: 4,
            cached_tokens: 0,
            token_text: "x".into(),
            error: None,
        }
    }));
    // sends at 0.1, 0.2, 0.3 s; 0 ends at 0.111 s; 1 and 2 are cut at 0.35 s
    let mut w = RandomWorkload::new(None, 4, 2, 0, TokenRange::default());
    let mut c = cfg(Arrival::Constant { rate: 10.0 });
    c.duration = Some(Duration::from_millis(350));
    let out = run(
        exec.clone(),
        &mut w,
        &c,
        &mut NoObserver,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(out.stop, StopReason::Duration);
    assert_eq!((out.sent, out.records.len(), out.cancelled), (3, 1, 2));
    assert!(out.records[0].success);
    assert!(close(out.duration_s, 0.35), "{}", out.duration_s);

    // the limit also cuts requests left in flight after --num-prompts stopped sending
    let mut w = RandomWorkload::new(None, 4, 2, 0, TokenRange::default());
    c.num_prompts = Some(2);
    let out = run(exec, &mut w, &c, &mut NoObserver, std::future::pending())
        .await
        .unwrap();
    assert_eq!(out.stop, StopReason::Duration);
    assert_eq!((out.sent, out.records.len(), out.cancelled), (2, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn conversation_turns_wait_for_the_answer_plus_think_time() {
    // The fake answers with "A<n>" tokens; turn 2 must carry it and start 50 ms after turn 1
    // ended plus think time 4 s / time_scale 2 = 2 s.
    let exec = Arc::new(FakeExecutor::new(|r| FakeReply {
        ttft: Duration::from_millis(30),
        itl: Duration::from_millis(10),
        output_tokens: r.max_tokens,
        prompt_tokens: 0,
        cached_tokens: 3,
        token_text: "A".into(),
        error: None,
    }));
    let turn = |u: &str, t: f64, think: f64| TurnSpec {
        user: u.into(),
        reference_answer: "ref".into(),
        max_tokens: 3,
        timestamp: Some(t),
        think_s: think,
    };
    let convs = vec![
        ConversationSpec {
            id: "c0".into(),
            system: None,
            turns: vec![turn("hello", 0.0, 0.0), turn("more", 10.0, 4.0)],
        },
        ConversationSpec {
            id: "c1".into(),
            system: None,
            turns: vec![turn("other", 1.0, 0.0)],
        },
    ];
    let mut w = ConversationWorkload::new(convs);
    let mut c = cfg(Arrival::Trace { time_scale: 2.0 });
    c.time_scale = 2.0;
    let out = run(exec, &mut w, &c, &mut NoObserver, std::future::pending())
        .await
        .unwrap();
    let by_turn = |conv: u64, turn: u32| {
        out.records
            .iter()
            .find(|r| r.conversation == Some(conv) && r.turn == Some(turn))
            .unwrap()
    };
    let t0 = by_turn(0, 0);
    let t1 = by_turn(0, 1);
    assert!(
        close(by_turn(1, 0).send_s, 0.5),
        "second conversation at 1 s / 2"
    );
    assert!(close(t0.e2el_s, 0.05));
    assert!(close(t1.scheduled_s, 0.05 + 2.0), "{}", t1.scheduled_s);
    assert!(close(t1.send_s, t1.scheduled_s));
    assert_eq!(t0.generated_text, "AAA");
    assert_eq!(t1.cached_tokens, 3);
    let Prompt::Chat(h) = w.prepare_history_for_test(0) else {
        panic!()
    };
    assert_eq!(h[1].content, "AAA", "the live answer is in the history");
}

#[tokio::test(start_paused = true)]
async fn failures_are_counted_and_interrupt_keeps_finished_records() {
    let exec = Arc::new(FakeExecutor::new(|r| {
        let i: u64 = r.request_id.trim_start_matches("t-").parse().unwrap();
        FakeReply {
            ttft: Duration::from_millis(if i == 3 { 10_000 } else { 10 }),
            itl: Duration::from_millis(1),
            output_tokens: 2,
            prompt_tokens: 4,
            cached_tokens: 0,
            token_text: "x".into(),
            error: (i == 1).then(|| (ErrorKind::Http, "HTTP 500".to_string())),
        }
    }));
    let mut w = RandomWorkload::new(Some(4), 4, 2, 0, TokenRange::default());
    let c = cfg(Arrival::Burst);
    let stop = tokio::time::sleep(Duration::from_secs(1));
    let out = run(exec, &mut w, &c, &mut NoObserver, stop).await.unwrap();
    assert_eq!(out.stop, StopReason::Interrupted);
    assert_eq!((out.sent, out.cancelled, out.records.len()), (4, 1, 3));
    let s = summarize(&out.records, out.duration_s, &[99.0], &[]);
    assert_eq!((s.completed, s.failed), (2, 1));
    assert_eq!(s.errors_by_kind.get("http"), Some(&1));
    assert!(close(out.duration_s, 1.0));
}
