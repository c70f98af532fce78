//! The dispatch loop: one loop for every mode. It merges the arrival process's roots and the
//! follow-ups that finished requests release (conversation turns), waits for a
//! `--max-concurrency` slot, hands each due request to the executor, and turns each outcome
//! into a record as soon as it arrives. Limits (*until when*): `num_prompts` requests sent (the
//! sent ones finish), or the hard ones, `duration` and the stop signal (Ctrl-C), after which
//! in-flight requests are cut (counted in `cancelled`, no record) and everything finished so
//! far is returned. `vllm bench serve` has no time limit; ours is hard so that a run ends when
//! asked even if a request hangs (it would otherwise wait for `--request-timeout`).
//!
//! Coordinated omission: every record carries the time the request was *scheduled* as well as
//! the time it was *sent* (oha's `client.rs` does the same), so a slow server or a saturated
//! client shows up as client lag instead of silently stretching the schedule.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::arrival::Arrival;
use crate::executor::{Endpoint, Executor, Outcome, PreparedRequest};
use crate::record::RequestRecord;
use crate::workload::{build_body, BodyOptions, Prompt, Workload};
use inferencelab_trace::rng::{splitmix64, Xoshiro256};

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub arrival: Arrival,
    pub max_concurrency: Option<usize>,
    /// Send at most this many requests.
    pub num_prompts: Option<u64>,
    /// Hard limit from the start: stop sending and cut the requests in flight.
    pub duration: Option<Duration>,
    /// Trace seconds per real second, for think times (the arrival process has its own).
    pub time_scale: f64,
    pub seed: u64,
    /// Our request ids are `{prefix}{index}`.
    pub request_id_prefix: String,
    /// What goes in the `x-request-id` header.
    pub request_id_header: RequestIdHeader,
    pub body: BodyOptions,
}

/// The `x-request-id` header each request carries. vLLM takes any string; some servers
/// validate it (llama-cpp-python's server wants a UUID) or have no use for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestIdHeader {
    /// Our id, `{prefix}{index}` (vLLM's client sends `bench-<hex>-<i>` likewise).
    #[default]
    Ours,
    /// A UUID (version 4 layout) derived from our id, the same on every run with the same id;
    /// recorded as the request's id.
    Uuid,
    /// No header (our id is still recorded).
    None,
}

impl RequestIdHeader {
    /// The id to record for our id `ours`, and the header value (if any).
    pub fn ids(self, ours: String) -> (String, Option<String>) {
        match self {
            RequestIdHeader::Ours => (ours.clone(), Some(ours)),
            RequestIdHeader::Uuid => {
                let u = uuid_of(&ours);
                (u.clone(), Some(u))
            }
            RequestIdHeader::None => (ours, None),
        }
    }
}

/// A UUID in the version 4 layout whose 122 free bits are a hash of `s`.
fn uuid_of(s: &str) -> String {
    // FNV-1a over the bytes, then two SplitMix64 outputs
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    let hi = (splitmix64(h) & !0xF000) | 0x4000;
    let lo = (splitmix64(h ^ 0x5555_5555_5555_5555) & !(0b11 << 62)) | (0b10 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xFFFF,
        hi & 0xFFFF,
        lo >> 48,
        lo & 0xFFFF_FFFF_FFFF
    )
}

/// Why sending stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every request of the workload was sent and finished.
    Completed,
    NumPrompts,
    /// `duration` passed: in-flight requests were cut.
    Duration,
    /// The stop signal (Ctrl-C): in-flight requests were cut.
    Interrupted,
}

/// Told about progress, in the dispatch loop's task (keep it quick).
pub trait Observer: Send {
    fn on_sent(&mut self, _sent: u64) {}
    /// A request ended; an error stops the run (e.g. the records file cannot be written).
    fn on_record(&mut self, record: &RequestRecord) -> std::io::Result<()>;
}

/// Ignores everything.
pub struct NoObserver;
impl Observer for NoObserver {
    fn on_record(&mut self, _: &RequestRecord) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Finished requests, in dispatch order.
    pub records: Vec<RequestRecord>,
    pub sent: u64,
    /// In flight when the run was cut by the stop signal or `duration` (not in `records`).
    pub cancelled: u64,
    pub stop: StopReason,
    /// From the start to the last finished request (vLLM's benchmark duration), or to the cut.
    pub duration_s: f64,
    pub started_unix_s: f64,
}

struct Meta {
    index: u64,
    key: u64,
    request_id: String,
    scheduled_s: f64,
    max_tokens: u32,
    prompt_tokens: Option<u64>,
    source_id: Option<String>,
    conversation: Option<u64>,
    turn: Option<u32>,
}

fn unix_s(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn record_of(meta: Meta, out: Outcome, start: Instant, start_unix: f64) -> RequestRecord {
    let send_s = out.sent.saturating_duration_since(start).as_secs_f64();
    let ttft_s = out
        .chunk_times
        .first()
        .map_or(0.0, |t| t.saturating_duration_since(out.sent).as_secs_f64());
    let e2el_s = out
        .chunk_times
        .last()
        .map_or(0.0, |t| t.saturating_duration_since(out.sent).as_secs_f64());
    let itl_s: Vec<f64> = out
        .chunk_times
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]).as_secs_f64())
        .collect();
    let usage = out.usage.unwrap_or_default();
    let output_tokens = usage
        .completion_tokens
        .unwrap_or(out.chunk_times.len() as u64);
    let success = out.error.is_none() && !out.chunk_times.is_empty();
    let tpot_s = if success && output_tokens > 1 {
        (e2el_s - ttft_s) / (output_tokens - 1) as f64
    } else {
        0.0
    };
    let (error_kind, error) = match out.error {
        Some((k, m)) => (Some(k), m),
        None => (None, String::new()),
    };
    RequestRecord {
        index: meta.index,
        request_id: meta.request_id,
        response_id: out.response_id,
        source_id: meta.source_id,
        conversation: meta.conversation,
        turn: meta.turn,
        scheduled_s: meta.scheduled_s,
        send_s,
        client_lag_s: send_s - meta.scheduled_s,
        send_unix_s: start_unix + send_s,
        success,
        error_kind,
        error,
        http_status: out.http_status,
        prompt_len: usage
            .prompt_tokens
            .or(meta.prompt_tokens)
            .unwrap_or_default(),
        expected_output_len: meta.max_tokens,
        output_tokens,
        cached_tokens: usage.cached_tokens.unwrap_or(0),
        usage: out.usage.is_some(),
        ttft_s,
        e2el_s,
        tpot_s,
        itl_s,
        done: out.done,
        generated_text: out.generated_text,
    }
}

/// A due request waiting for a concurrency slot.
struct Due {
    key: u64,
    scheduled: Instant,
}

/// Run `workload` against `executor` until the workload is exhausted, a limit is reached or
/// `stop` resolves.
pub async fn run<E: Executor>(
    executor: Arc<E>,
    workload: &mut dyn Workload,
    cfg: &RunConfig,
    observer: &mut dyn Observer,
    stop: impl Future<Output = ()>,
) -> std::io::Result<RunOutcome> {
    let start = Instant::now();
    let start_unix = unix_s(SystemTime::now());
    let endpoint = workload.endpoint();
    let mut schedule = cfg
        .arrival
        .schedule(workload.num_roots(), Xoshiro256::new(cfg.seed));
    if cfg.max_concurrency == Some(0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "--max-concurrency 0 would never send a request: give 1 or more",
        ));
    }
    let at = |offset_s: f64| start + offset(offset_s);
    let mut next_root = workload
        .next_root()
        .map(|r| (at(schedule.next_offset(r.timestamp)), r.key));
    // Follow-ups by due time; the sequence number keeps equal times in release order.
    let mut follow_ups: BinaryHeap<Reverse<(Instant, u64, u64)>> = BinaryHeap::new();
    let mut follow_seq = 0u64;
    let permits = cfg
        .max_concurrency
        .unwrap_or(Semaphore::MAX_PERMITS)
        .min(Semaphore::MAX_PERMITS);
    let semaphore = Arc::new(Semaphore::new(permits));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Meta, Outcome)>();
    let mut tasks = JoinSet::new();
    let deadline = cfg.duration.map(|d| start + d);
    let far = start + Duration::from_secs(86_400 * 365);
    let mut records = Vec::new();
    let mut pending: Option<Due> = None;
    let mut sent = 0u64;
    let mut in_flight = 0u64;
    let mut accepting = true;
    let mut reason = StopReason::Completed;
    let mut last_end = start;
    tokio::pin!(stop);

    loop {
        if accepting && cfg.num_prompts.is_some_and(|n| sent >= n) {
            accepting = false;
            reason = StopReason::NumPrompts;
        }
        if !accepting {
            pending = None;
        }
        let next_due = if accepting && pending.is_none() {
            let f = follow_ups.peek().map(|Reverse((t, _, _))| *t);
            match (next_root.map(|(t, _)| t), f) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else {
            None
        };
        if pending.is_none() && next_due.is_none() && in_flight == 0 {
            break;
        }
        tokio::select! {
            biased;
            _ = &mut stop => {
                reason = StopReason::Interrupted;
                break;
            }
            Some((meta, out)) = rx.recv() => {
                in_flight -= 1;
                while tasks.try_join_next().is_some() {}
                let key = meta.key;
                let rec = record_of(meta, out, start, start_unix);
                last_end = Instant::now();
                observer.on_record(&rec)?;
                if let Some(f) = workload.finished(key, &rec) {
                    let due = Instant::now()
                        + offset(f.delay_s / cfg.time_scale);
                    follow_ups.push(Reverse((due, follow_seq, f.key)));
                    follow_seq += 1;
                }
                records.push(rec);
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                reason = StopReason::Duration;
                break;
            }
            permit = semaphore.clone().acquire_owned(), if pending.is_some() => {
                let permit = permit.expect("the semaphore is never closed");
                let due = pending.take().expect("guarded by the branch condition");
                let (meta, req) = request_of(workload, &due, endpoint, cfg, sent, start);
                let exec = executor.clone();
                let tx = tx.clone();
                tasks.spawn(async move {
                    let out = exec.execute(req).await;
                    drop(permit);
                    let _ = tx.send((meta, out));
                });
                sent += 1;
                in_flight += 1;
                observer.on_sent(sent);
            }
            _ = tokio::time::sleep_until(next_due.unwrap_or(far)), if next_due.is_some() => {
                let root_first = match (next_root, follow_ups.peek()) {
                    (Some((a, _)), Some(Reverse((b, _, _)))) => a <= *b,
                    (Some(_), None) => true,
                    _ => false,
                };
                if root_first {
                    let (t, key) = next_root.take().expect("checked above");
                    pending = Some(Due { key, scheduled: t });
                    next_root = workload
                        .next_root()
                        .map(|r| (at(schedule.next_offset(r.timestamp)), r.key));
                } else if let Some(Reverse((t, _, key))) = follow_ups.pop() {
                    pending = Some(Due { key, scheduled: t });
                }
            }
        }
    }
    let mut cancelled = 0;
    if matches!(reason, StopReason::Interrupted | StopReason::Duration) {
        // Keep what finished in the meantime; cut the rest.
        while let Ok((meta, out)) = rx.try_recv() {
            in_flight -= 1;
            let rec = record_of(meta, out, start, start_unix);
            observer.on_record(&rec)?;
            records.push(rec);
        }
        tasks.abort_all();
        cancelled = in_flight;
        last_end = last_end.max(Instant::now());
    }
    records.sort_by_key(|r| r.index);
    Ok(RunOutcome {
        records,
        sent,
        cancelled,
        stop: reason,
        duration_s: last_end.saturating_duration_since(start).as_secs_f64(),
        started_unix_s: start_unix,
    })
}
/// The `index`-th request: the workload's next prompt for `due`, its body and ids.
fn request_of(
    workload: &mut dyn Workload,
    due: &Due,
    endpoint: Endpoint,
    cfg: &RunConfig,
    index: u64,
    start: Instant,
) -> (Meta, PreparedRequest) {
    let ready = workload.prepare(due.key);
    let prompt_tokens = match &ready.prompt {
        Prompt::Tokens(t) => Some(t.len() as u64),
        _ => None,
    };
    let body = build_body(endpoint, &ready.prompt, ready.max_tokens, &cfg.body);
    let (request_id, header) = cfg
        .request_id_header
        .ids(format!("{}{}", cfg.request_id_prefix, index));
    let meta = Meta {
        index,
        key: due.key,
        request_id,
        scheduled_s: due.scheduled.saturating_duration_since(start).as_secs_f64(),
        max_tokens: ready.max_tokens,
        prompt_tokens,
        source_id: ready.source_id,
        conversation: ready.conversation,
        turn: ready.turn,
    };
    let req = PreparedRequest {
        request_id: header.unwrap_or_default(),
        endpoint,
        body: Bytes::from(body),
        max_tokens: ready.max_tokens,
        prompt_tokens,
    };
    (meta, req)
}

/// Seconds from now as a [`Duration`], clamped to [0, a year]: a trace timestamp of 1e300
/// (or a NaN from a broken workload) must neither panic `Duration::from_secs_f64` nor overflow
/// `Instant + Duration`; a send a year out is past any `--duration` anyway.
fn offset(seconds: f64) -> Duration {
    const YEAR: f64 = 86_400.0 * 365.0;
    if seconds > 0.0 {
        Duration::from_secs_f64(seconds.min(YEAR))
    } else {
        Duration::ZERO
    }
}
