//! The engine core thread: owns the [`Engine`], runs its steps on the (scaled) real clock, paces
//! every stream's tokens to the end of the step that produced them, writes the logs and keeps
//! the metrics. One OS thread, like vLLM's `EngineCore` process: its timing does not depend on
//! the async runtime's timer granularity.
//!
//! Pacing, per step: the engine computes the step (and so its end on the emulated clock) when it
//! starts; the core then draws every token of the step and does its bookkeeping at once, waits
//! for the step's end as an absolute deadline (`recv_timeout`, which also takes in new requests
//! while a step "runs", then a short spin: a sleeping thread wakes 0.1-0.3 ms late on a VM), and
//! at the deadline only hands the prepared tokens to their streams. The next step starts at
//! `max(now, this step's end)`, so a late wake-up never shifts later steps: lateness does not
//! accumulate.

use std::io::Write;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::sync::{mpsc::UnboundedSender, oneshot};

use crate::engine::{Engine, Prompt, ReqKey, StepReport, SubmitError};
use crate::kv_events::{KvEvent, KvEventBatch, KvEventTracker};
use crate::metrics::Metrics;
use crate::tokenizer::Tokenizer;
use inferencelab_trace::vllm_log::write::{LogFormat, RequestInfo, Stamp};

/// One streamed token's times, for pacing measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPacing {
    /// When the time model scheduled it: the real instant of the end of the step that produced
    /// it.
    pub due: Instant,
    /// When the engine core handed it to the stream's channel.
    pub queued: Instant,
    /// When the stream handed its SSE bytes to the HTTP connection (hyper writes them to the
    /// socket in the same poll; with TCP_NODELAY they leave at once).
    pub sent: Instant,
}

/// Pacing records of every streamed response: response id -> one entry per token. Filled when a
/// stream ends (nothing is locked per token).
pub type PacingLog = Arc<Mutex<FxHashMap<String, Vec<TokenPacing>>>>;

/// The emulated clock.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// Emulated time runs `scale` times faster than real time from `start`.
    Real { start: Instant, scale: f64 },
    /// No pacing: emulated time is the engine's own clock (a request arrives at the end of the
    /// last step); steps run back to back. Deterministic given the order of arrivals.
    Logical,
}

impl Clock {
    fn now_us(&self, engine_now: u64) -> u64 {
        match *self {
            Clock::Real { start, scale } => (start.elapsed().as_secs_f64() * scale * 1e6) as u64,
            Clock::Logical => engine_now,
        }
    }

    fn us_at(&self, t: Instant, engine_now: u64) -> u64 {
        match *self {
            Clock::Real { start, scale } => {
                (t.saturating_duration_since(start).as_secs_f64() * scale * 1e6) as u64
            }
            Clock::Logical => engine_now,
        }
    }

    /// The real instant of emulated time `us`.
    pub fn instant_at(&self, us: u64) -> Option<Instant> {
        match *self {
            Clock::Real { start, scale } => {
                Some(start + Duration::from_secs_f64(us as f64 / 1e6 / scale))
            }
            Clock::Logical => None,
        }
    }
}

/// What a stream hears from the core.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// The scheduler admitted the request: local plus external cached tokens.
    Admitted { cached_tokens: u64 },
    /// One output token, due now. With pacing records on: when it was due and when the core
    /// queued it.
    Token {
        id: u32,
        finished: bool,
        times: Option<(Instant, Instant)>,
    },
}

/// A request handed to the core.
pub struct Submission {
    pub prompt: Prompt,
    pub max_tokens: u32,
    pub finish_reason: &'static str,
    pub arrival: Instant,
    pub info: RequestInfo,
    pub streaming: bool,
    /// The generated tokens' random stream: `None` draws it from the server seed and the
    /// request's engine key (every request its own answer); a request with `seed` or
    /// `temperature: 0` gives one so the same request gets the same text.
    pub sample_seed: Option<u64>,
    /// vLLM's `stop` strings: the answer ends at the first token whose text completes one
    /// (not before `min_tokens`), with finish reason `stop`.
    pub stop: Vec<String>,
    pub min_tokens: u32,
    pub events: UnboundedSender<Event>,
    pub reply: oneshot::Sender<Result<Accepted, SubmitError>>,
}

/// A request the engine took: its key and the answer it will stream.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub key: ReqKey,
    pub output: Vec<u32>,
    pub finish_reason: &'static str,
    /// The stop string that ended the answer.
    pub stop_reason: Option<String>,
}

/// The first stop string the answer completes: `(tokens kept, the stop string)`, in the text
/// the tokens add after the prompt (decoded incrementally, as the response's text is).
pub fn find_stop(
    tokenizer: &dyn Tokenizer,
    prompt: &[u32],
    output: &[u32],
    stop: &[String],
    min_tokens: u32,
) -> Option<(usize, String)> {
    if stop.iter().all(String::is_empty) {
        return None;
    }
    let mut text = String::new();
    for (i, piece) in tokenizer.decode_stream(prompt, output).iter().enumerate() {
        text.push_str(piece);
        if (i as u32) + 1 < min_tokens {
            continue;
        }
        if let Some(s) = stop
            .iter()
            .find(|s| !s.is_empty() && text.contains(s.as_str()))
        {
            return Some((i + 1, s.clone()));
        }
    }
    None
}

pub enum Command {
    Submit(Box<Submission>),
    Abort(ReqKey),
    ResetPrefixCache(oneshot::Sender<bool>),
    /// Stop now: in-flight streams end where they are.
    Cancel,
}

struct Stream {
    events: UnboundedSender<Event>,
    info: RequestInfo,
    prompt_len: u64,
    output_ids: Vec<u32>,
    last_token_us: u64,
    streaming: bool,
    finish_reason: &'static str,
}

/// Where log lines go.
pub type LogSink = Box<dyn Write + Send>;

pub struct CoreConfig {
    pub clock: Clock,
    pub seed: u64,
    pub log_requests: bool,
    /// Streamed responses are logged token by token (`--enable-log-outputs`).
    pub log_deltas: bool,
    pub format: LogFormat,
    /// Emulated time zero, microseconds since the Unix epoch (for log stamps).
    pub epoch_us: u64,
    pub stats_interval_us: u64,
    pub tokenizer: Arc<dyn Tokenizer>,
    /// Stamp every token event with its due and queued instants (pacing measurements).
    pub pacing: bool,
}

pub struct Core {
    engine: Engine,
    cfg: CoreConfig,
    log: Option<std::io::BufWriter<LogSink>>,
    log_dirty: bool,
    streams: FxHashMap<ReqKey, Stream>,
    metrics: Arc<Mutex<Metrics>>,
    deferred_aborts: Vec<ReqKey>,
    last_stats_us: u64,
    window_prompt: u64,
    window_generation: u64,
    last_window_nonzero: bool,
    /// `--kv-events-config`: the pool's changes, sent to the publisher task after each step.
    kv: Option<(KvEventTracker, UnboundedSender<KvEventBatch>)>,
}

/// How long before a step's end the core stops sleeping and spins (sleeping threads wake late by
/// the kernel's timer slack plus scheduling latency: 0.1-0.3 ms measured on a 2-vCPU VM).
const SPIN_BEFORE_DEADLINE: Duration = Duration::from_micros(300);

/// One token of a step, drawn before the step's end.
struct Prepared {
    key: ReqKey,
    id: u32,
    finished: bool,
}

/// The emulator's stateless 64-bit mixer (token ids, sampled tokens, jitter).
pub(crate) use inferencelab_trace::rng::splitmix64 as mix;

impl Core {
    pub fn new(
        engine: Engine,
        cfg: CoreConfig,
        log: Option<LogSink>,
        metrics: Arc<Mutex<Metrics>>,
    ) -> Self {
        Core {
            engine,
            cfg,
            log: log.map(|w| std::io::BufWriter::with_capacity(1 << 16, w)),
            log_dirty: false,
            streams: FxHashMap::default(),
            metrics,
            deferred_aborts: Vec::new(),
            last_stats_us: 0,
            window_prompt: 0,
            window_generation: 0,
            last_window_nonzero: false,
            kv: None,
        }
    }

    /// Publish vLLM's KV cache events of every step to `to` (`--kv-events-config`).
    pub fn with_kv_events(mut self, to: UnboundedSender<KvEventBatch>) -> Self {
        let tracker = KvEventTracker::new(self.engine.config().block_size);
        self.kv = Some((tracker, to));
        self
    }

    fn send_kv(&mut self, events: Vec<KvEvent>, at_us: u64) {
        if let (Some((_, to)), false) = (&self.kv, events.is_empty()) {
            let _ = to.send(KvEventBatch {
                ts: (self.cfg.epoch_us + at_us) as f64 / 1e6,
                events,
                data_parallel_rank: None,
            });
        }
    }

    fn stamp(&self, us: u64) -> Stamp {
        Stamp(self.cfg.epoch_us + us)
    }

    /// Write a line (or lines) to the log.
    pub fn write_log(&mut self, text: &str) {
        if let Some(w) = self.log.as_mut() {
            let _ = w.write_all(text.as_bytes());
            self.log_dirty = true;
        }
    }

    fn flush_log(&mut self) {
        if self.log_dirty {
            if let Some(w) = self.log.as_mut() {
                let _ = w.flush();
            }
            self.log_dirty = false;
        }
    }

    /// The engine's clock now, on the emulated timeline.
    pub fn now_us(&self) -> u64 {
        self.cfg.clock.now_us(self.engine.now_us())
    }

    /// Handle a command; false: stop.
    fn handle(&mut self, cmd: Command, in_step: bool) -> bool {
        match cmd {
            Command::Submit(s) => {
                let s = *s;
                // The engine hears of a request now, not when its HTTP request arrived: the
                // API server tokenizes and renders it first, and on a busy machine the hand-off
                // can take several steps. vLLM's `RequestLogger` also writes the request when
                // the API server hands it to the engine (after preprocessing), so the log's
                // stamp is when the engine could first schedule it, as `simulate` reads it.
                let arrival = self.now_us().max(self.cfg.clock.us_at(s.arrival, 0));
                let tokens = if self.cfg.log_requests {
                    s.prompt.tokens.clone()
                } else {
                    Vec::new()
                };
                let prompt_len = s.prompt.len() as u64;
                let kv_prompt = self.kv.as_ref().map(|_| s.prompt.tokens.clone());
                // the answer's token ids, drawn up front: the engine caches its blocks
                let mut rng = s
                    .sample_seed
                    .unwrap_or_else(|| mix(self.cfg.seed ^ mix(self.engine.next_key())));
                let mut output: Vec<u32> = (0..s.max_tokens)
                    .map(|_| {
                        rng = mix(rng);
                        self.cfg.tokenizer.sample(rng)
                    })
                    .collect();
                let mut finish_reason = s.finish_reason;
                let mut stop_reason = None;
                if let Some((keep, stop)) = find_stop(
                    &*self.cfg.tokenizer,
                    &s.prompt.tokens,
                    &output,
                    &s.stop,
                    s.min_tokens,
                ) {
                    output.truncate(keep);
                    finish_reason = "stop";
                    stop_reason = Some(stop);
                }
                let result = self
                    .engine
                    .submit(s.prompt, output.clone(), arrival)
                    .map(|key| Accepted {
                        key,
                        output,
                        finish_reason,
                        stop_reason,
                    });
                if let Ok(Accepted { key, output, .. }) = &result {
                    let key = *key;
                    if let (Some((kv, _)), Some(p)) = (self.kv.as_mut(), &kv_prompt) {
                        kv.submitted(key, p, output);
                    }
                    // vLLM's RequestLogger writes the request when the API server gets it
                    if self.cfg.log_requests {
                        let text = self
                            .cfg
                            .format
                            .request(self.stamp(arrival), &s.info, &tokens);
                        self.write_log(&text);
                    }
                    self.streams.insert(
                        key,
                        Stream {
                            events: s.events,
                            info: s.info,
                            prompt_len,
                            output_ids: Vec::new(),
                            last_token_us: 0,
                            streaming: s.streaming,
                            finish_reason,
                        },
                    );
                }
                let _ = s.reply.send(result);
                true
            }
            Command::Abort(key) => {
                if in_step {
                    self.deferred_aborts.push(key);
                } else {
                    self.abort(key);
                }
                true
            }
            Command::ResetPrefixCache(reply) => {
                let done = self.engine.reset_prefix_cache();
                if let Some((kv, _)) = self.kv.as_mut().filter(|_| done) {
                    let events = kv.cleared();
                    self.send_kv(events, self.engine.now_us());
                }
                let _ = reply.send(done);
                true
            }
            Command::Cancel => false,
        }
    }

    fn abort(&mut self, key: ReqKey) {
        self.engine.abort(key);
        if let Some((kv, _)) = self.kv.as_mut() {
            kv.forget(key);
        }
        if self.streams.remove(&key).is_some() {
            if let Ok(mut m) = self.metrics.lock() {
                m.count_finish("abort");
            }
        }
        self.publish(None);
    }

    /// Run until cancelled or every sender is gone.
    pub fn run(mut self, rx: Receiver<Command>) {
        self.publish(None);
        loop {
            loop {
                match rx.try_recv() {
                    Ok(c) => {
                        if !self.handle(c, false) {
                            return self.finish();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return self.finish(),
                }
            }
            let report = if self.engine.is_idle() {
                None
            } else {
                let now = self.now_us();
                self.engine.step(now)
            };
            let Some(rep) = report else {
                self.flush_log();
                match rx.recv() {
                    Ok(c) => {
                        if !self.handle(c, false) {
                            return self.finish();
                        }
                        continue;
                    }
                    Err(_) => return self.finish(),
                }
            };
            self.on_admitted(&rep);
            let (tokens, itl) = self.prepare(&rep);
            let deadline = self.cfg.clock.instant_at(rep.end_us);
            if let Some(deadline) = deadline {
                if !self.wait_until(&rx, deadline) {
                    return self.finish();
                }
            }
            // metrics first: a client that has read a stream's last token and then scrapes
            // /metrics sees that request counted
            self.publish(Some((&rep, &itl)));
            self.send(&tokens, deadline);
            self.after_step(&rep);
            if let Some((kv, _)) = self.kv.as_mut() {
                let events = kv.after_step(&self.engine, &rep);
                self.send_kv(events, rep.end_us);
            }
            for key in std::mem::take(&mut self.deferred_aborts) {
                self.abort(key);
            }
            self.stats_line(rep.end_us);
            self.flush_log();
        }
    }

    /// Take in commands until `deadline` (sleeping, then for the last [`SPIN_BEFORE_DEADLINE`]
    /// polling with `yield_now`, which leaves the CPU to other runnable threads); false: stop.
    fn wait_until(&mut self, rx: &Receiver<Command>, deadline: Instant) -> bool {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            let left = deadline - now;
            if left > SPIN_BEFORE_DEADLINE {
                match rx.recv_timeout(left - SPIN_BEFORE_DEADLINE) {
                    Ok(c) => {
                        if !self.handle(c, true) {
                            return false;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return false,
                }
            } else {
                match rx.try_recv() {
                    Ok(c) => {
                        if !self.handle(c, true) {
                            return false;
                        }
                    }
                    Err(TryRecvError::Empty) => std::thread::yield_now(),
                    Err(TryRecvError::Disconnected) => return false,
                }
            }
        }
    }

    fn finish(mut self) {
        // dropping the streams' senders ends every stream still open
        self.streams.clear();
        self.flush_log();
    }

    fn on_admitted(&mut self, rep: &StepReport) {
        let at = self.stamp(rep.start_us);
        let kv = self.engine.config().timing.kv_bytes_per_token;
        for a in &rep.admitted {
            let Some(s) = self.streams.get(&a.key) else {
                continue;
            };
            let _ = s.events.send(Event::Admitted {
                cached_tokens: a.cached_tokens(),
            });
            let mut text = String::new();
            if let Some(lm) = a.lmcache {
                let load = self.engine.config().timing.load_seconds(a.loaded_tokens);
                text.push_str(
                    &self.cfg.format.lmcache(
                        at,
                        &s.info.request_id,
                        a.prompt_tokens,
                        a.gpu_hit_tokens,
                        lm.hit_tokens,
                        lm.need_to_load,
                        a.loaded_tokens,
                        lm.new_chunks
                            * self
                                .engine
                                .config()
                                .lmcache
                                .as_ref()
                                .map_or(0, |l| l.chunk_size as u64),
                        kv,
                        load,
                    ),
                );
            }
            if !text.is_empty() {
                self.write_log(&text);
            }
        }
    }

    /// Draw the step's tokens and do their bookkeeping (before the step's end).
    fn prepare(&mut self, rep: &StepReport) -> (Vec<Prepared>, Vec<f64>) {
        let mut tokens = Vec::with_capacity(rep.tokens.len());
        let mut itl: Vec<f64> = Vec::new();
        for t in &rep.tokens {
            let Some(s) = self.streams.get_mut(&t.key) else {
                continue;
            };
            let id = t.id;
            if self.cfg.log_requests {
                s.output_ids.push(id);
            }
            if t.index == 0 {
                self.window_prompt += s.prompt_len;
            } else {
                itl.push((rep.end_us - s.last_token_us) as f64 / 1e6);
            }
            s.last_token_us = rep.end_us;
            tokens.push(Prepared {
                key: t.key,
                id,
                finished: t.finished,
            });
        }
        self.window_generation += rep.tokens.len() as u64;
        (tokens, itl)
    }

    /// Hand the step's tokens to their streams (at the step's end).
    fn send(&mut self, tokens: &[Prepared], due: Option<Instant>) {
        let due = due.filter(|_| self.cfg.pacing);
        for t in tokens {
            let Some(s) = self.streams.get(&t.key) else {
                continue;
            };
            if s.events
                .send(Event::Token {
                    id: t.id,
                    finished: t.finished,
                    times: due.map(|d| (d, Instant::now())),
                })
                .is_err()
                && !t.finished
            {
                self.deferred_aborts.push(t.key);
            }
        }
    }

    /// After the step's tokens are out: response log lines.
    fn after_step(&mut self, rep: &StepReport) {
        let at = self.stamp(rep.end_us);
        let mut text = String::new();
        if self.cfg.log_deltas {
            for t in &rep.tokens {
                let Some(s) = self.streams.get(&t.key).filter(|s| s.streaming) else {
                    continue;
                };
                text.push_str(&self.cfg.format.delta(
                    at,
                    &s.info.request_id,
                    t.id,
                    &self.cfg.tokenizer.decode(&[t.id]),
                    t.finished.then_some(s.finish_reason),
                ));
            }
        }
        for f in &rep.finished {
            let Some(s) = self.streams.remove(&f.key) else {
                continue;
            };
            if self.cfg.log_requests {
                let output = self.cfg.tokenizer.decode(&s.output_ids);
                let deltas = self.cfg.log_deltas && s.streaming;
                text.push_str(&self.cfg.format.response(
                    at,
                    &s.info.request_id,
                    s.streaming,
                    &output,
                    (!deltas).then_some(&s.output_ids[..]),
                    s.finish_reason,
                ));
            }
        }
        if !text.is_empty() {
            self.write_log(&text);
        }
    }

    /// Copy the engine's state into the shared metrics (and observe a step's latencies).
    fn publish(&mut self, step: Option<(&StepReport, &[f64])>) {
        let mut m = self.metrics.lock().expect("metrics");
        m.counters = *self.engine.counters();
        m.running = self.engine.num_running();
        m.waiting = self.engine.num_waiting();
        m.kv_cache_usage = self.engine.kv_cache_usage();
        m.cpu_chunks = self.engine.cpu_chunks();
        m.lmcache_mp = self.engine.lmcache_mp();
        m.num_preemptions = self.engine.preemptions();
        let Some((rep, itl)) = step else { return };
        m.iteration_tokens
            .observe((rep.prefill_tokens + rep.decode_tokens) as f64);
        for &x in itl {
            m.itl.observe(x);
        }
        let s = |us: u64| us as f64 / 1e6;
        for f in &rep.finished {
            m.ttft
                .observe(s(f.first_token_us.saturating_sub(f.arrival_us)));
            m.e2e.observe(s(f.finish_us.saturating_sub(f.arrival_us)));
            m.queue
                .observe(s(f.admitted_us.saturating_sub(f.arrival_us)));
            m.inference.observe(s(f.finish_us - f.admitted_us));
            m.prefill.observe(s(f.first_token_us - f.admitted_us));
            m.decode.observe(s(f.finish_us - f.first_token_us));
            if f.output_tokens > 1 {
                m.tpot_request
                    .observe(s(f.finish_us - f.first_token_us) / (f.output_tokens - 1) as f64);
            }
            m.request_prompt_tokens.observe(f.prompt_tokens as f64);
            m.request_generation_tokens.observe(f.output_tokens as f64);
            m.request_num_preemptions.observe(f.preemptions as f64);
            m.request_prefill_kv_computed_tokens
                .observe(f.prompt_tokens.saturating_sub(f.cached_tokens) as f64);
            m.count_finish(
                self.streams
                    .get(&f.key)
                    .map_or("length", |s| s.finish_reason),
            );
        }
    }

    /// vLLM's periodic `Engine 000: ...` line, every `stats_interval` of emulated time, when
    /// the engine was not idle.
    fn stats_line(&mut self, now_us: u64) {
        let elapsed = now_us.saturating_sub(self.last_stats_us);
        if elapsed < self.cfg.stats_interval_us {
            return;
        }
        let secs = elapsed as f64 / 1e6;
        let prompt = self.window_prompt as f64 / secs;
        let generation = self.window_generation as f64 / secs;
        let nonzero = prompt > 0.0 || generation > 0.0;
        if nonzero || self.last_window_nonzero {
            let c = *self.engine.counters();
            let rate = |h: u64, q: u64| if q == 0 { 0.0 } else { h as f64 / q as f64 };
            let line = self.cfg.format.engine_stats(
                self.stamp(now_us),
                prompt,
                generation,
                self.engine.num_running(),
                self.engine.num_waiting(),
                self.engine.kv_cache_usage(),
                rate(c.prefix_cache_hits, c.prefix_cache_queries),
                self.engine.config().lmcache.as_ref().map(|_| {
                    rate(
                        c.external_prefix_cache_hits,
                        c.external_prefix_cache_queries,
                    )
                }),
            );
            self.write_log(&line);
        }
        self.last_window_nonzero = nonzero;
        self.last_stats_us = now_us;
        self.window_prompt = 0;
        self.window_generation = 0;
    }
}
