//! vLLM's KV cache events (`--kv-events-config`), with vLLM's flag, JSON keys and wire format,
//! so the consumers of vLLM's events (vllm-router's `kv_aware`, llm-d's KV cache manager,
//! Dynamo's router) can subscribe to the emulator unchanged.
//!
//! Read from vLLM 0.33 (`vllm/config/kv_events.py`, `vllm/distributed/kv_events.py`):
//! - The flag's JSON: `enable_kv_cache_events` (false), `publisher` ("zmq" when enabled, else
//!   "null"), `endpoint` ("tcp://*:5557"; `*` binds, a host connects), `replay_endpoint`
//!   (none), `buffer_steps` (10000), `hwm` (100000), `max_queue_size` (100000), `topic` ("").
//! - ZMQ PUB, one multipart message per batch: `[topic, seq as 8 bytes big-endian, payload]`,
//!   `seq` counting from 0.
//! - The payload: msgpack of `KVEventBatch` (a msgspec `array_like` struct with
//!   `omit_defaults`): `[ts, [event...], data_parallel_rank]` (the rank only when set). Each
//!   event is a msgspec tagged struct, a map whose first key is `type` (the class name), then
//!   its fields in declaration order, fields equal to their default left out:
//!   `BlockStored {block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium,
//!   lora_name}` (`extra_keys`, `group_idx`, ... default to None and are omitted),
//!   `BlockRemoved {block_hashes, medium}`, `AllBlocksCleared {}`. Block hashes are integers
//!   (vLLM's `ExternalBlockHash` is `bytes | int`; the emulator's are 64-bit ints).
//!
//! What `serve --kv-events-config` publishes ([`KvEventTracker`]): after every engine step, the
//! blocks the GPU pool lost (`BlockRemoved`, one event per step) and the blocks it gained
//! (`BlockStored`, one event per request and run of new consecutive blocks, with their tokens
//! and the parent's hash), in one batch stamped with the step's end. Hashes are the emulator's
//! chained 64-bit block hashes (vLLM's are sha256 of its own chain: a consumer that recomputes
//! hashes from token ids, rather than reading the events', sees other numbers).
//!
//! vllm-router 0.1.17's `kv_aware` (read from its sdist, checked against its binary;
//! docs/replicas.md) does not read these hashes as keys: it hashes each block of the events'
//! `token_ids` itself (sha256 of the u32 ids, little-endian) and uses `block_hashes` /
//! `parent_block_hash` only to name and chain its index's nodes, so the emulator's events work
//! unchanged. Its static `--kv-event-source` subscribes with topic `""` and skips frames of any
//! other topic: leave `topic` unset for it.
//!
//! Deviations from vLLM, which emits an event inside the step as the pool changes: a block
//! evicted and cached again within one step is in neither list (the diff sees no change), and
//! the order inside a step is removals first, then stores.
//!
//! Not yet (issue 21, partial): the replay socket (`replay_endpoint`) is refused.

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, ReqKey, StepReport};
use inferencelab_trace::hash::chained_block_hashes;

/// `--kv-events-config`, vLLM's `KVEventsConfig`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KvEventsConfig {
    pub enable_kv_cache_events: bool,
    pub publisher: Option<String>,
    pub endpoint: String,
    pub replay_endpoint: Option<String>,
    pub buffer_steps: u64,
    pub hwm: u64,
    pub max_queue_size: u64,
    pub topic: String,
}

impl Default for KvEventsConfig {
    fn default() -> Self {
        KvEventsConfig {
            enable_kv_cache_events: false,
            publisher: None,
            endpoint: "tcp://*:5557".into(),
            replay_endpoint: None,
            buffer_steps: 10_000,
            hwm: 100_000,
            max_queue_size: 100_000,
            topic: String::new(),
        }
    }
}

impl KvEventsConfig {
    /// Parse the flag's JSON; the error names the flag and what to fix.
    pub fn parse(json: &str) -> Result<Self, String> {
        let c: KvEventsConfig = serde_json::from_str(json).map_err(|e| {
            format!(
                "--kv-events-config: {e}; expected vLLM's JSON, e.g. \
                 '{{\"enable_kv_cache_events\": true, \"publisher\": \"zmq\", \
                 \"endpoint\": \"tcp://*:5557\"}}'"
            )
        })?;
        match c.publisher() {
            "zmq" | "null" => {}
            p => {
                return Err(format!(
                    "--kv-events-config: publisher '{p}' is not one vLLM has; expected zmq or null"
                ))
            }
        }
        if c.replay_endpoint.is_some() && c.publishes() {
            return Err(
                "--kv-events-config: replay_endpoint is not implemented by the \
                        emulator yet (issue 21); drop it"
                    .into(),
            );
        }
        Ok(c)
    }

    /// vLLM's `__post_init__`: no publisher given means zmq when enabled, else null.
    pub fn publisher(&self) -> &str {
        match &self.publisher {
            Some(p) => p,
            None if self.enable_kv_cache_events => "zmq",
            None => "null",
        }
    }

    /// Events go out (vLLM's `EventPublisherFactory.create`).
    pub fn publishes(&self) -> bool {
        self.enable_kv_cache_events && self.publisher() == "zmq"
    }
}

/// One KV cache event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum KvEvent {
    BlockStored {
        block_hashes: Vec<u64>,
        parent_block_hash: Option<u64>,
        token_ids: Vec<u32>,
        block_size: u32,
        lora_id: Option<i64>,
        medium: Option<String>,
        lora_name: Option<String>,
    },
    BlockRemoved {
        block_hashes: Vec<u64>,
        medium: Option<String>,
    },
    AllBlocksCleared {},
}

/// vLLM's `KVEventBatch`: a msgpack array `[ts, events, data_parallel_rank]`.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEventBatch {
    /// Unix seconds.
    pub ts: f64,
    pub events: Vec<KvEvent>,
    pub data_parallel_rank: Option<i64>,
}

/// The batch's msgpack bytes, byte for byte as msgspec encodes it. msgspec sizes a struct's
/// map header by the fields the struct can have (a `fixmap` up to 15, else `map16`), not by
/// the ones written: `BlockStored` (15 fields and its tag) always gets a `map16` header.
pub fn encode(batch: &KvEventBatch) -> Vec<u8> {
    let mut out = Vec::new();
    // omit_defaults: the rank (default None) only when set
    let n = if batch.data_parallel_rank.is_some() {
        3
    } else {
        2
    };
    rmp::encode::write_array_len(&mut out, n).expect("vec");
    rmp::encode::write_f64(&mut out, batch.ts).expect("vec");
    rmp::encode::write_array_len(&mut out, batch.events.len() as u32).expect("vec");
    for e in &batch.events {
        let bytes = rmp_serde::to_vec_named(e).expect("a KV event always encodes");
        match e {
            KvEvent::BlockStored { .. } => {
                // fixmap 0x8N -> map16 0xde 0x00 N
                out.extend_from_slice(&[0xde, 0x00, bytes[0] & 0x0f]);
                out.extend_from_slice(&bytes[1..]);
            }
            _ => out.extend_from_slice(&bytes),
        }
    }
    if let Some(r) = batch.data_parallel_rank {
        rmp::encode::write_sint(&mut out, r).expect("vec");
    }
    out
}

/// The ZMQ frames of batch number `seq`: topic, sequence number, payload.
pub fn frames(topic: &str, seq: u64, batch: &KvEventBatch) -> [Vec<u8>; 3] {
    [
        topic.as_bytes().to_vec(),
        seq.to_be_bytes().to_vec(),
        encode(batch),
    ]
}

/// A ZMQ PUB socket sending batches as vLLM's `ZmqEventPublisher` does.
pub struct ZmqPublisher {
    socket: zeromq::PubSocket,
    topic: String,
    next_seq: u64,
    /// The endpoint bound or connected to (a `tcp://*:0` endpoint names the port the OS gave).
    pub endpoint: String,
}

impl ZmqPublisher {
    /// Bind (`tcp://*:PORT`, `tcp://0.0.0.0:PORT`, `ipc://`) or connect (a host) as vLLM does.
    pub async fn start(config: &KvEventsConfig) -> Result<Self, String> {
        use zeromq::Socket;
        let mut socket = zeromq::PubSocket::new();
        let ep = &config.endpoint;
        let bind = ep.contains('*') || ep.contains("::") || ep.starts_with("ipc://");
        let endpoint = if bind {
            let local = ep.replace('*', "0.0.0.0");
            let got = socket
                .bind(&local)
                .await
                .map_err(|e| format!("--kv-events-config: cannot bind {ep}: {e}"))?;
            got.to_string()
        } else {
            socket
                .connect(ep)
                .await
                .map_err(|e| format!("--kv-events-config: cannot connect to {ep}: {e}"))?;
            ep.clone()
        };
        Ok(ZmqPublisher {
            socket,
            topic: config.topic.clone(),
            next_seq: 0,
            endpoint,
        })
    }

    /// Send one batch (dropped, as ZMQ PUB drops, when nobody subscribes).
    pub async fn publish(&mut self, batch: &KvEventBatch) -> Result<(), String> {
        use zeromq::SocketSend;
        let [topic, seq, payload] = frames(&self.topic, self.next_seq, batch);
        self.next_seq += 1;
        let mut msg = zeromq::ZmqMessage::from(topic);
        msg.push_back(seq.into());
        msg.push_back(payload.into());
        self.socket
            .send(msg)
            .await
            .map_err(|e| format!("KV events: send failed: {e}"))
    }
}

/// One request as the tracker follows it: its cached sequence (prompt + output - 1 tokens, as
/// the engine caches it), its full blocks' hashes, the first block not yet seen cached.
struct Tracked {
    tokens: Vec<u32>,
    hashes: Vec<u64>,
    next: usize,
    admitted: bool,
}

/// The GPU pool's changes, step by step, as vLLM's KV events (see the module's top).
pub struct KvEventTracker {
    block_size: usize,
    requests: FxHashMap<ReqKey, Tracked>,
    /// Blocks announced stored and not removed since.
    stored: FxHashSet<u64>,
    evictions: u64,
}

impl KvEventTracker {
    pub fn new(block_size: u32) -> Self {
        KvEventTracker {
            block_size: block_size.max(1) as usize,
            requests: FxHashMap::default(),
            stored: FxHashSet::default(),
            evictions: 0,
        }
    }

    /// The engine took request `key` with this prompt and answer (drawn up front).
    pub fn submitted(&mut self, key: ReqKey, prompt: &[u32], output: &[u32]) {
        let mut tokens = prompt.to_vec();
        tokens.extend_from_slice(&output[..output.len().saturating_sub(1)]);
        let hashes = chained_block_hashes(&tokens, self.block_size);
        self.requests.insert(
            key,
            Tracked {
                tokens,
                hashes,
                next: 0,
                admitted: false,
            },
        );
    }

    /// The request left without finishing (aborted).
    pub fn forget(&mut self, key: ReqKey) {
        self.requests.remove(&key);
    }

    /// The prefix cache was reset: everything is gone.
    pub fn cleared(&mut self) -> Vec<KvEvent> {
        self.stored.clear();
        for t in self.requests.values_mut() {
            t.next = 0;
        }
        vec![KvEvent::AllBlocksCleared {}]
    }

    /// The events of the step `rep` just ran on `engine`.
    pub fn after_step(&mut self, engine: &Engine, rep: &StepReport) -> Vec<KvEvent> {
        let mut events = Vec::new();
        // removals: only a step that evicted can have lost a block
        if engine.gpu_evictions() != self.evictions
            || engine.gpu_cached_blocks() < self.stored.len() as u64
        {
            self.evictions = engine.gpu_evictions();
            let mut gone: Vec<u64> = self
                .stored
                .iter()
                .copied()
                .filter(|&h| !engine.gpu_block_cached(h))
                .collect();
            if !gone.is_empty() {
                gone.sort_unstable();
                let set: FxHashSet<u64> = gone.iter().copied().collect();
                for h in &gone {
                    self.stored.remove(h);
                }
                // a request that had such a block cached may cache it again
                for t in self.requests.values_mut() {
                    if let Some(i) = t.hashes[..t.next].iter().position(|x| set.contains(x)) {
                        t.next = i;
                    }
                }
                events.push(KvEvent::BlockRemoved {
                    block_hashes: gone,
                    medium: Some("GPU".into()),
                });
            }
        }
        for a in &rep.admitted {
            if let Some(t) = self.requests.get_mut(&a.key) {
                t.admitted = true;
            }
        }
        // stores: the running requests' blocks from the first one not yet seen cached
        let bs = self.block_size;
        let mut keys: Vec<ReqKey> = self
            .requests
            .iter()
            .filter(|(_, t)| t.admitted && t.next < t.hashes.len())
            .map(|(&k, _)| k)
            .collect();
        keys.sort_unstable();
        for key in keys {
            let t = self.requests.get_mut(&key).expect("listed");
            let mut run: Option<(usize, usize)> = None;
            let mut flush = |run: &mut Option<(usize, usize)>, t: &Tracked| {
                if let Some((from, to)) = run.take() {
                    events.push(KvEvent::BlockStored {
                        block_hashes: t.hashes[from..to].to_vec(),
                        parent_block_hash: from.checked_sub(1).map(|p| t.hashes[p]),
                        token_ids: t.tokens[from * bs..to * bs].to_vec(),
                        block_size: bs as u32,
                        lora_id: None,
                        medium: Some("GPU".into()),
                        lora_name: None,
                    });
                }
            };
            while t.next < t.hashes.len() && engine.gpu_block_cached(t.hashes[t.next]) {
                let h = t.hashes[t.next];
                if self.stored.insert(h) {
                    match &mut run {
                        Some((_, to)) => *to = t.next + 1,
                        None => run = Some((t.next, t.next + 1)),
                    }
                } else {
                    flush(&mut run, t);
                }
                t.next += 1;
            }
            flush(&mut run, t);
        }
        for f in &rep.finished {
            self.requests.remove(&f.key);
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KvEventBatch {
        KvEventBatch {
            ts: 1.5,
            events: vec![
                KvEvent::BlockStored {
                    block_hashes: vec![7, 8],
                    parent_block_hash: None,
                    token_ids: vec![1, 2, 3, 4],
                    block_size: 2,
                    lora_id: None,
                    medium: Some("GPU".into()),
                    lora_name: None,
                },
                KvEvent::BlockRemoved {
                    block_hashes: vec![7],
                    medium: Some("GPU".into()),
                },
                KvEvent::AllBlocksCleared {},
            ],
            data_parallel_rank: Some(0),
        }
    }

    #[test]
    fn the_payload_is_byte_for_byte_what_vllm_encodes() {
        // msgspec.msgpack.encode(KVEventBatch(ts=1.5, events=[BlockStored(block_hashes=[7, 8],
        // parent_block_hash=None, token_ids=[1, 2, 3, 4], block_size=2, lora_id=None,
        // medium="GPU", lora_name=None), BlockRemoved(block_hashes=[7], medium="GPU"),
        // AllBlocksCleared()], data_parallel_rank=0)) in vLLM 0.33's venv
        let vllm = "93cb3ff800000000000093de0008a474797065ab426c6f636b53746f726564ac626c6f63\
                    6b5f686173686573920708b1706172656e745f626c6f636b5f68617368c0a9746f6b656e5f\
                    6964739401020304aa626c6f636b5f73697a6502a76c6f72615f6964c0a66d656469756da3\
                    475055a96c6f72615f6e616d65c083a474797065ac426c6f636b52656d6f766564ac626c6f\
                    636b5f6861736865739107a66d656469756da347505581a474797065b0416c6c426c6f636b\
                    73436c656172656400";
        let ours: String = encode(&sample())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(ours, vllm);
    }

    /// Drive an engine with a small pool (evicting) and check after every step that the
    /// events, replayed, give exactly the blocks the pool holds (among every block any request
    /// could cache), that stored blocks carry their tokens and parent, and that removals happen.
    #[test]
    fn the_events_replayed_are_the_pool_step_by_step() {
        use crate::engine::tests::{answer, config};
        use crate::engine::Prompt;
        let mut engine = Engine::new(config(40, None));
        let bs = engine.config().block_size as usize;
        let mut tracker = KvEventTracker::new(engine.config().block_size);
        let mut every: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
        let mut held: FxHashSet<u64> = FxHashSet::default();
        let (mut stores, mut removes) = (0, 0);
        let mut now = 0u64;
        for round in 0..12u32 {
            // conversations of 3 turns over 4 shared system prompts: hits, evictions
            let sys = round % 4;
            let prompt: Vec<u32> = (0..(64 + 16 * (round % 3)))
                .map(|i| {
                    if i < 48 {
                        sys * 1000 + i
                    } else {
                        50_000 + round * 100 + i
                    }
                })
                .collect();
            let out = answer(20 + round);
            let key = engine
                .submit(
                    Prompt::for_config(prompt.clone(), engine.config()),
                    out.clone(),
                    now,
                )
                .unwrap();
            tracker.submitted(key, &prompt, &out);
            let mut seq = prompt.clone();
            seq.extend_from_slice(&out[..out.len() - 1]);
            for (h, blk) in chained_block_hashes(&seq, bs)
                .into_iter()
                .zip(seq.chunks_exact(bs))
            {
                every.insert(h, blk.to_vec());
            }
            while let Some(rep) = engine.step(now) {
                now = rep.end_us;
                for e in tracker.after_step(&engine, &rep) {
                    match e {
                        KvEvent::BlockStored {
                            block_hashes,
                            parent_block_hash,
                            token_ids,
                            ..
                        } => {
                            stores += 1;
                            assert_eq!(token_ids.len(), block_hashes.len() * bs);
                            for (h, blk) in block_hashes.iter().zip(token_ids.chunks(bs)) {
                                assert_eq!(every[h], blk, "a stored block's tokens");
                                assert!(held.insert(*h), "stored twice without a removal");
                            }
                            if let Some(p) = parent_block_hash {
                                assert!(every.contains_key(&p));
                            }
                        }
                        KvEvent::BlockRemoved { block_hashes, .. } => {
                            removes += 1;
                            for h in block_hashes {
                                assert!(held.remove(&h), "removed a block never stored");
                            }
                        }
                        KvEvent::AllBlocksCleared {} => held.clear(),
                    }
                }
                let cached: FxHashSet<u64> = every
                    .keys()
                    .copied()
                    .filter(|&h| engine.gpu_block_cached(h))
                    .collect();
                assert_eq!(
                    held, cached,
                    "round {round}: the events replayed are the pool"
                );
                if engine.is_idle() {
                    break;
                }
            }
        }
        assert!(engine.gpu_evictions() > 0 && removes > 0 && stores > 10);
        // a reset clears everything
        assert!(engine.reset_prefix_cache());
        assert_eq!(tracker.cleared(), [KvEvent::AllBlocksCleared {}]);
    }

    #[test]
    fn frames_carry_the_topic_and_a_big_endian_sequence_number() {
        let [topic, seq, _] = frames("kv-events", 258, &sample());
        assert_eq!(topic, b"kv-events");
        assert_eq!(seq, vec![0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn the_flag_reads_vllms_json_and_names_itself_in_errors() {
        let c = KvEventsConfig::parse(
            r#"{"enable_kv_cache_events": true, "publisher": "zmq",
                "endpoint": "tcp://*:5557", "topic": "kv-events"}"#,
        )
        .unwrap();
        assert!(c.publishes());
        assert_eq!(c.buffer_steps, 10_000);
        // no publisher: zmq when enabled (vLLM's __post_init__)
        let c = KvEventsConfig::parse(r#"{"enable_kv_cache_events": true}"#).unwrap();
        assert_eq!(c.publisher(), "zmq");
        assert!(!KvEventsConfig::parse("{}").unwrap().publishes());
        let e = KvEventsConfig::parse(r#"{"enable_kv_cache_event": true}"#).unwrap_err();
        assert!(
            e.starts_with("--kv-events-config:") && e.contains("unknown field"),
            "{e}"
        );
        let e = KvEventsConfig::parse(r#"{"publisher": "kafka"}"#).unwrap_err();
        assert!(e.contains("expected zmq or null"), "{e}");
    }
}
