#!/usr/bin/env python3
"""Ground truth from vLLM's REAL V1 scheduler for InferenceLab's GPU-tier model (issue 13).

Drives vLLM's own `Scheduler` (or `AsyncScheduler` with --async-scheduling) with its own
`KVCacheManager` / `BlockPool` (prefix caching and chunked prefill on) in VIRTUAL time, on CPU.
Nothing in vLLM is patched: the script builds the configs, creates `Request` objects with vLLM's
own block hasher, calls `schedule()` / `update_from_output()` as `EngineCore` does, and stands in
for the model runner with a stub that returns forced output tokens. vLLM's own `RequestLogger`
writes a server log of the same run (virtual timestamps).

Per (workload, capacity) it writes into --out-dir/<workload>-<sync|async>/blocks<N>/:
  trace.jsonl   InferenceLab native trace (with the new optional `output_tokens` field)
  server.log    what `vllm serve --enable-log-requests --enable-log-outputs` at DEBUG would log
  vllm.jsonl    per-request truth (vLLM's own figures)
  summary.json  vLLM's PrefixCacheStats totals, preemptions, run parameters
With --compare BIN it runs `BIN simulate` on trace.jsonl (--schedule vllm) and server.log
(--schedule trace) and prints vLLM vs ours. See scripts/vllm_engine_check_README.md.

Needs a venv with vllm (0.33.x) installed; see the README. Run it with that venv's python.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import random
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

# --------------------------------------------------------------------------------------------
# Workload (pure Python, no vLLM needed)
# --------------------------------------------------------------------------------------------

TOKEN_LO, TOKEN_HI = 1000, 50000


@dataclass
class Turn:
    conv: int
    turn: int
    rid: str
    user: list[int]  # new user tokens of this turn
    output: list[int]  # forced output tokens (the answer)
    fresh: list[int]  # same length as output: the answer's stand-in when answers are not reused
    think_s: float  # think time after the previous turn's finish (0 for turn 0)
    prompt: list[int] = field(default_factory=list)


@dataclass
class Conversation:
    conv: int
    start_s: float
    system: list[int]
    turns: list[Turn]


@dataclass
class WorkloadParams:
    conversations: int = 55
    turns_min: int = 3
    turns_max: int = 8
    systems: int = 4
    system_min: int = 200
    system_max: int = 800
    user_min: int = 20
    user_max: int = 200
    answer_min: int = 50
    answer_max: int = 400
    think_min: float = 5.0
    think_max: float = 60.0
    conv_interarrival_s: float = 7.0  # mean of the exponential gap between conversation starts


PRESETS = {
    # ~300 requests: the check of issue 13
    "default": WorkloadParams(),
    # ~40 requests with short prompts: the golden fixture (files stay small)
    "small": WorkloadParams(
        conversations=14, turns_min=2, turns_max=4, systems=2, system_min=32, system_max=64,
        user_min=8, user_max=24, answer_min=8, answer_max=32, think_min=1.0, think_max=6.0,
        conv_interarrival_s=0.5,
    ),
}


def rand_tokens(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(TOKEN_LO, TOKEN_HI) for _ in range(n)]


def gen_workload(seed: int, p: WorkloadParams, answer_reuse: bool) -> list[Conversation]:
    """The same seed gives the same conversations (systems, user turns, answers, think times,
    starts) with and without answer reuse; only the history differs."""
    rng = random.Random(seed)
    systems = [rand_tokens(rng, rng.randint(p.system_min, p.system_max)) for _ in range(p.systems)]
    convs: list[Conversation] = []
    t = 0.0
    for c in range(p.conversations):
        if c > 0:
            t += rng.expovariate(1.0 / p.conv_interarrival_s)
        system = systems[rng.randrange(p.systems)]
        nturns = rng.randint(p.turns_min, p.turns_max)
        turns = []
        for k in range(nturns):
            user = rand_tokens(rng, rng.randint(p.user_min, p.user_max))
            out_len = rng.randint(p.answer_min, p.answer_max)
            output = rand_tokens(rng, out_len)
            fresh = rand_tokens(rng, out_len)
            think = rng.uniform(p.think_min, p.think_max) if k > 0 else 0.0
            turns.append(Turn(c, k, f"chatcmpl-c{c:03d}t{k}", user, output, fresh, think))
        # prompts: turn k = system + history + user_k, history = previous prompt + answer
        prev: list[int] | None = None
        for k, tr in enumerate(turns):
            if k == 0:
                tr.prompt = list(system) + tr.user
            else:
                before = turns[k - 1]
                answer = before.output if answer_reuse else before.fresh
                tr.prompt = prev + answer + tr.user  # type: ignore[operator]
            prev = tr.prompt
        convs.append(Conversation(c, t, system, turns))
    return convs


# --------------------------------------------------------------------------------------------
# vLLM engine (imports vLLM lazily: --compare-only runs do not need it)
# --------------------------------------------------------------------------------------------

TINY_HF_CONFIG = {
    # A tiny Llama-shaped config: no weights are ever loaded; ModelConfig only needs to parse it.
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "vocab_size": 65536,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "torch_dtype": "float16",
    "bos_token_id": 1,
    "eos_token_id": 2,
}

BASE_EPOCH = 1767225600.0  # 2026-01-01 00:00:00 UTC: virtual t = 0 in server.log


class VirtualClockFilter(logging.Filter):
    """Stamps request-log records with the virtual clock (and a fixed pid) so server.log is
    reproducible; the message, level, file info and format are vLLM's own."""

    def __init__(self, pid: int):
        super().__init__()
        self.now = 0.0
        self.pid = pid

    def filter(self, record: logging.LogRecord) -> bool:
        created = BASE_EPOCH + self.now
        record.created = created
        record.msecs = (created - int(created)) * 1000.0
        record.process = self.pid
        return True


class VllmHarness:
    def __init__(self, args):
        self.args = args
        t0 = time.time()
        import vllm  # noqa: F401

        self.vllm_version = vllm.__version__
        from vllm.config import ModelConfig

        cfg_dir = Path(args.model_dir) if args.model_dir else Path(tempfile.mkdtemp(prefix="tinyhf-"))
        if not (cfg_dir / "config.json").exists():
            cfg_dir.mkdir(parents=True, exist_ok=True)
            (cfg_dir / "config.json").write_text(json.dumps(TINY_HF_CONFIG))
        self.model_config = ModelConfig(
            model=str(cfg_dir), skip_tokenizer_init=True, max_model_len=args.max_model_len,
            dtype="float16",
        )
        log(f"vLLM {self.vllm_version} imported, ModelConfig built ({time.time() - t0:.1f} s)")

    # -- one engine per run ------------------------------------------------------------------
    def make_scheduler(self, num_gpu_blocks: int, async_scheduling: bool):
        import torch
        from vllm.config import CacheConfig, DeviceConfig, SchedulerConfig, VllmConfig
        from vllm.utils.hashing import get_hash_fn_by_name
        from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
        from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
        from vllm.v1.structured_output import StructuredOutputManager

        a = self.args
        sched_cfg = SchedulerConfig(
            max_model_len=a.max_model_len, is_encoder_decoder=False,
            max_num_batched_tokens=a.max_num_batched_tokens, max_num_seqs=a.max_num_seqs,
            enable_chunked_prefill=True, async_scheduling=async_scheduling,
        )
        cache_cfg = CacheConfig(block_size=a.block_size, enable_prefix_caching=True)
        cache_cfg.num_gpu_blocks = num_gpu_blocks
        vcfg = VllmConfig(
            model_config=self.model_config, scheduler_config=sched_cfg, cache_config=cache_cfg,
            # No GPU here and a CUDA wheel: vLLM cannot infer the platform, so name the device.
            device_config=DeviceConfig(device="cpu"),
        )
        sc, cc = vcfg.scheduler_config, vcfg.cache_config
        assert cc.enable_prefix_caching and sc.enable_chunked_prefill, "vLLM turned caching off"
        assert bool(sc.async_scheduling) == async_scheduling, sc.async_scheduling
        assert cc.block_size == a.block_size and cc.num_gpu_blocks == num_gpu_blocks
        kv_cfg = KVCacheConfig(
            num_blocks=num_gpu_blocks,
            kv_cache_tensors=[],
            kv_cache_groups=[
                KVCacheGroupSpec(
                    [f"model.layers.{i}.self_attn.attn" for i in range(2)],
                    FullAttentionSpec(block_size=a.block_size, num_kv_heads=2, head_size=16,
                                      dtype=torch.float16),
                )
            ],
        )
        scheduler_cls = sc.get_scheduler_cls()  # Scheduler or AsyncScheduler, as EngineCore
        scheduler = scheduler_cls(
            vllm_config=vcfg, kv_cache_config=kv_cfg,
            structured_output_manager=StructuredOutputManager(vcfg),
            block_size=a.block_size, hash_block_size=a.block_size,
            include_finished_set=False, log_stats=True,
        )
        # EngineCore's block hasher (prefix_caching_hash_algo, default sha256)
        hash_fn = get_hash_fn_by_name(cc.prefix_caching_hash_algo)
        init_none_hash(hash_fn)
        hasher = get_request_block_hasher(a.block_size, hash_fn, vcfg.num_hash_lookahead_tokens)
        return scheduler, hasher, vcfg

    def make_request_logger(self, path: Path):
        """vLLM's RequestLogger writing to `path` with vLLM's own formatter (the server's
        DEBUG format), stamped with the virtual clock."""
        import vllm.logger as vlogger
        from vllm.entrypoints.serve.utils import request_logger as rl_mod
        from vllm.logging_utils import NewLineFormatter

        from vllm.config.logging import LoggingConfig

        # What the server does at start-up (installs vLLM's record factory and console
        # handler); the console keeps its level, only the request logger goes to DEBUG.
        vlogger.configure_logging_if_needed(LoggingConfig())
        vlogger.set_vllm_process_name("APIServer")
        logging.getLogger("vllm").setLevel(logging.WARNING)  # a quiet console
        fcfg = vlogger.DEFAULT_LOGGING_CONFIG["formatters"]["vllm"]
        formatter = NewLineFormatter(fcfg["format"], fcfg["datefmt"], log_level="DEBUG")
        formatter.converter = time.gmtime  # virtual stamps are UTC-based: reproducible anywhere
        handler = logging.FileHandler(path, mode="w", encoding="utf-8")
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(formatter)
        clock = VirtualClockFilter(self.args.log_pid)
        handler.addFilter(clock)
        lg = rl_mod.logger
        for h in list(lg.handlers):
            lg.removeHandler(h)
            h.close()
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)  # as VLLM_LOGGING_LEVEL=DEBUG
        lg.propagate = False  # only into server.log, not onto the console
        return rl_mod.RequestLogger(max_log_len=None), clock, handler


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Rec:
    turn: Turn
    arrival_s: float
    req: object = None
    added_s: float | None = None
    admitted_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    gpu_hit_tokens: int | None = None
    local_hit_tokens: int | None = None
    output_ids: list[int] | None = None


def run_engine(h: VllmHarness, convs: list[Conversation], num_gpu_blocks: int,
               async_scheduling: bool, case_dir: Path, workload_name: str) -> dict:
    from vllm.sampling_params import SamplingParams
    from vllm.v1.outputs import ModelRunnerOutput
    from vllm.v1.request import Request

    a = h.args
    scheduler, hasher, vcfg = h.make_scheduler(num_gpu_blocks, async_scheduling)
    case_dir.mkdir(parents=True, exist_ok=True)
    req_logger, clock, handler = h.make_request_logger(case_dir / "server.log")

    recs: dict[str, Rec] = {}
    by_conv = {c.conv: c for c in convs}
    pending: list[tuple[float, int, int, int]] = []  # (arrival, seq, conv, turn)
    seq = 0
    for c in convs:
        heapq.heappush(pending, (c.start_s, seq, c.conv, 0))
        seq += 1
    arrival_order: list[str] = []
    totals = dict(requests=0, queries=0, hits=0, preempted_requests=0, preempted_queries=0,
                  preempted_hits=0)
    steps = 0
    busy_steps = 0
    now = 0.0
    last_finish = 0.0  # async: when the GPU finishes the batches handed to it so far
    in_flight: deque = deque()  # async batch queue: (out, finish_s, sampling_ids, sched_s)
    batch_queue_size = vcfg.max_concurrent_batches if async_scheduling else 1
    P = a.prefill_tokens_per_s
    D = a.decode_ms_per_token / 1000.0

    def add_arrivals():
        nonlocal seq
        while pending and pending[0][0] <= now:
            t, _, ci, k = heapq.heappop(pending)
            tr = by_conv[ci].turns[k]
            sp = SamplingParams(max_tokens=len(tr.output), ignore_eos=True, temperature=0.0)
            req = Request(request_id=tr.rid, prompt_token_ids=list(tr.prompt), sampling_params=sp,
                          pooling_params=None, arrival_time=BASE_EPOCH + t, block_hasher=hasher)
            rec = Rec(tr, t, req, added_s=now)
            recs[tr.rid] = rec
            arrival_order.append(tr.rid)
            clock.now = now
            req_logger.log_inputs(tr.rid, None, list(tr.prompt), None, params=sp,
                                  lora_request=None)
            scheduler.add_request(req)

    def schedule_step():
        """schedule() plus this step's virtual duration and which requests sample a token."""
        nonlocal steps, busy_steps
        # Before the step: computed tokens and outputs (incl. async placeholders) of the
        # running requests; waiting / preempted requests have 0 computed tokens.
        before = {r.request_id: (r.num_computed_tokens,
                                 r.num_output_tokens + r.num_output_placeholders)
                  for r in scheduler.running}
        out = scheduler.schedule()
        steps += 1
        prefill_tokens = 0
        any_decode = False
        sampling = set()
        for rid, n in out.num_scheduled_tokens.items():
            r = scheduler.requests[rid]
            comp, nout = before.get(rid, (0, 0))
            if comp >= r.num_prompt_tokens and nout >= 1:
                any_decode = True
            else:
                prefill_tokens += n
            if not r.is_prefill_chunk:
                sampling.add(rid)
            rec = recs[rid]
            if rec.admitted_s is None:
                rec.admitted_s = now
        if out.total_num_scheduled_tokens > 0:
            busy_steps += 1
        dur = prefill_tokens / P + (D if any_decode else 0.0)
        return out, dur, sampling

    def model_output(out, sampling):
        req_ids = list(out.num_scheduled_tokens.keys())
        sampled = []
        for rid in req_ids:
            if rid in sampling:
                r = scheduler.requests.get(rid)
                forced = recs[rid].turn.output
                k = r.num_output_tokens if r is not None else len(forced)
                # past the forced answer (cannot happen with max_tokens = its length): filler
                sampled.append([forced[k] if k < len(forced) else TOKEN_LO])
            else:
                sampled.append([])
        return ModelRunnerOutput(req_ids=req_ids,
                                 req_id_to_index={rid: i for i, rid in enumerate(req_ids)},
                                 sampled_token_ids=sampled)

    def process(out, sampling):
        nonlocal seq
        eco = scheduler.update_from_output(out, model_output(out, sampling))
        for outs in eco.values():
            st = outs.scheduler_stats
            if st is not None and st.prefix_cache_stats is not None:
                pcs = st.prefix_cache_stats
                for key in totals:
                    totals[key] += getattr(pcs, key)
            for o in outs.outputs:
                rec = recs[o.request_id]
                if o.new_token_ids and rec.first_token_s is None:
                    rec.first_token_s = now
                if a.stream_outputs and o.new_token_ids:
                    # the API server of a streamed request with --enable-log-outputs: one
                    # delta line per token as it arrives (serving_chat / serving_completion)
                    clock.now = now
                    req_logger.log_outputs(o.request_id, "<token>", list(o.new_token_ids),
                                           finish_reason=(str(o.finish_reason)
                                                          if o.finish_reason is not None
                                                          else None),
                                           is_streaming=True, delta=True)
                if o.prefill_stats is not None and rec.gpu_hit_tokens is None:
                    # what OutputProcessor turns into RequestOutput.num_cached_tokens
                    rec.gpu_hit_tokens = o.prefill_stats.num_cached_tokens
                    rec.local_hit_tokens = o.prefill_stats.num_local_cached_tokens
                if o.finish_reason is not None:
                    rec.finish_s = now
                    rec.output_ids = list(rec.req.output_token_ids)
                    clock.now = now
                    text = f"<{len(rec.output_ids)} forced tokens>"
                    if a.stream_outputs:
                        # vLLM 0.32's final line of a streamed response carries no ids
                        req_logger.log_outputs(o.request_id, text, None,
                                               finish_reason=str(o.finish_reason),
                                               is_streaming=True, delta=False)
                    else:
                        req_logger.log_outputs(o.request_id, text, rec.output_ids,
                                               finish_reason=str(o.finish_reason),
                                               is_streaming=False)
                    tr = rec.turn
                    conv = by_conv[tr.conv]
                    if tr.turn + 1 < len(conv.turns):
                        nxt = conv.turns[tr.turn + 1]
                        heapq.heappush(pending, (now + nxt.think_s, seq, tr.conv, tr.turn + 1))
                        seq += 1

    wall0 = time.time()
    if not async_scheduling:
        while True:
            add_arrivals()
            if scheduler.get_num_unfinished_requests() == 0:
                if not pending:
                    break
                now = pending[0][0]
                continue
            out, dur, sampling = schedule_step()
            if out.total_num_scheduled_tokens == 0:
                # nothing fits and nothing runs: only an arrival can change that
                if scheduler.running or not pending:
                    raise RuntimeError(f"vLLM scheduled nothing at t={now} with "
                                       f"{len(scheduler.running)} running, nothing pending")
                process(out, sampling)
                now = max(now, pending[0][0])
                continue
            now += dur
            process(out, sampling)
    else:
        # EngineCore.step_with_batch_queue in virtual time: schedule the next batch while the
        # previous one runs; a batch's output is processed when the GPU finishes it.
        while True:
            add_arrivals()
            if scheduler.get_num_unfinished_requests() == 0 and not in_flight:
                if not pending:
                    break
                now = max(now, pending[0][0])
                continue
            if scheduler.has_requests():
                out, dur, sampling = schedule_step()
                executed = out.total_num_scheduled_tokens > 0
                start = max(now, last_finish)
                fin = start + dur
                last_finish = fin
                in_flight.appendleft((out, fin, sampling))
                if len(in_flight) < batch_queue_size and (executed or scheduler.has_requests()):
                    continue
            if not in_flight:
                continue
            out, fin, sampling = in_flight.pop()
            now = max(now, fin)
            process(out, sampling)
            if (all(o.total_num_scheduled_tokens == 0 for o, _, _ in in_flight)
                    and out.total_num_scheduled_tokens == 0 and not scheduler.running):
                if pending:
                    now = max(now, pending[0][0])
                elif scheduler.get_num_unfinished_requests():
                    raise RuntimeError(f"vLLM scheduled nothing at t={now}, nothing pending")
    handler.close()
    wall = time.time() - wall0

    # ---- checks and outputs ------------------------------------------------------------
    for rid, rec in recs.items():
        assert rec.finish_s is not None, f"{rid} did not finish"
        assert rec.output_ids == rec.turn.output, f"{rid}: outputs differ from the forced ones"
        assert rec.gpu_hit_tokens is not None, rid
    total_prompt = sum(len(recs[r].turn.prompt) for r in arrival_order)
    total_hits = sum(recs[r].gpu_hit_tokens for r in arrival_order)
    assert totals["requests"] == len(recs), (totals, len(recs))
    assert totals["queries"] == total_prompt, (totals, total_prompt)
    assert totals["hits"] == total_hits, (totals, total_hits)
    preemptions = sum(recs[r].req.num_preemptions for r in arrival_order)

    # heap pops are in (t, seq) order and a new turn always arrives after `now`: arrival order
    order = arrival_order
    assert all(recs[x].arrival_s <= recs[y].arrival_s for x, y in zip(order, order[1:]))
    with open(case_dir / "trace.jsonl", "w") as f:
        f.write(json.dumps({"inferencelab_trace": 1, "block_size": None,
                            "partial_last_block": False, "content": "tokens",
                            "source": "vllm_engine_check"}) + "\n")
        for rid in order:
            rec = recs[rid]
            tr = rec.turn
            f.write(json.dumps({"id": rid, "t": rec.arrival_s, "finish": rec.finish_s,
                                "conv": tr.conv, "turn": tr.turn, "in": len(tr.prompt),
                                "out": len(tr.output), "tokens": tr.prompt,
                                "output_tokens": rec.output_ids}, separators=(",", ":")) + "\n")
    with open(case_dir / "vllm.jsonl", "w") as f:
        for rid in order:
            rec = recs[rid]
            tr = rec.turn
            f.write(json.dumps({
                "request_id": rid, "conv": tr.conv, "turn": tr.turn,
                "prompt_tokens": len(tr.prompt), "output_tokens": len(tr.output),
                "gpu_hit_tokens": rec.gpu_hit_tokens, "arrival_s": rec.arrival_s,
                "added_s": rec.added_s, "admitted_s": rec.admitted_s,
                "first_token_s": rec.first_token_s, "finish_s": rec.finish_s,
                "preemptions": rec.req.num_preemptions,
            }) + "\n")
    summary = {
        "vllm_version": h.vllm_version,
        "workload": workload_name,
        "scheduler": "AsyncScheduler" if async_scheduling else "Scheduler",
        "num_gpu_blocks": num_gpu_blocks,
        "usable_blocks": num_gpu_blocks - 1,
        "block_size": a.block_size,
        "max_num_batched_tokens": a.max_num_batched_tokens,
        "max_num_seqs": a.max_num_seqs,
        "max_model_len": a.max_model_len,
        "prefill_tokens_per_s": a.prefill_tokens_per_s,
        "decode_ms_per_token": a.decode_ms_per_token,
        "seed": a.seed,
        "preset": a.preset,
        "workload_params": vars(h.params),
        "answer_reuse": workload_name == "reuse",
        "requests": len(recs),
        "prefix_cache_stats": totals,
        "queries": totals["queries"],
        "hits": totals["hits"],
        "token_hit_ratio": totals["hits"] / totals["queries"] if totals["queries"] else 0.0,
        "num_preemptions": preemptions,
        "preempted_requests": sum(1 for r in recs.values() if r.req.num_preemptions > 0),
        "output_tokens": sum(len(r.turn.output) for r in recs.values()),
        "virtual_seconds": now,
        "engine_steps": steps,
        "busy_steps": busy_steps,
    }
    (case_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    summary["_wall"] = wall  # console only: summary.json stays reproducible
    return summary


# --------------------------------------------------------------------------------------------
# Comparison with `inferencelab simulate`
# --------------------------------------------------------------------------------------------

COMPARE_FLAGS = ["--schedule", "--per-request", "--max-num-batched-tokens", "--max-num-seqs"]


def simulate_help(binary: str) -> str:
    try:
        p = subprocess.run([binary, "simulate", "--help"], capture_output=True, text=True,
                           timeout=60)
        return p.stdout + p.stderr
    except (OSError, subprocess.SubprocessError) as e:
        return f"<cannot run {binary}: {e}>"


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows


def run_ours(binary: str, a, case_dir: Path, summary: dict, source: str, extra: list[str],
             help_text: str, legacy: bool) -> dict:
    """source 'trace': trace.jsonl with --schedule vllm; 'log': server.log with --schedule trace.
    legacy: the binary lacks the new flags; run without them (hit ratio only, from --json)."""
    inp = case_dir / ("trace.jsonl" if source == "trace" else "server.log")
    per_req = case_dir / f"ours_{source}.jsonl"
    if per_req.exists():
        per_req.unlink()
    opts: list[tuple[str, str | None]] = [
        ("--input-file", str(inp)), ("--block-size", str(a.block_size)),
        ("--gpu-blocks", str(summary["num_gpu_blocks"])), ("--no-cpu-tier", None),
        ("--eviction-policy", "lru"), ("--schedule", "vllm" if source == "trace" else "trace"),
        ("--max-num-batched-tokens", str(a.max_num_batched_tokens)),
        ("--max-num-seqs", str(a.max_num_seqs)),
        ("--prefill-tokens-per-s", fmt_num(a.prefill_tokens_per_s)),
        ("--decode-ms-per-token", fmt_num(a.decode_ms_per_token)),
        ("--per-request", str(per_req)), ("--json", None), ("-q", None),
        ("-o", str(case_dir / f"ours_{source}_summary.json")),
    ]
    cmd = [binary, "simulate"]
    dropped = []
    for flag, val in opts:
        if legacy and flag.startswith("--") and flag not in help_text:
            dropped.append(flag)
            continue
        cmd += [flag] + ([val] if val is not None else [])
    cmd += extra
    res: dict = {"source": source, "cmd": cmd, "legacy": legacy, "dropped_flags": dropped}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.compare_timeout)
    except (OSError, subprocess.SubprocessError) as e:
        res["error"] = f"cannot run: {e}"
        return res
    if p.returncode != 0:
        err = (p.stderr or p.stdout).strip()
        lines = err.splitlines()
        first = next((ln for ln in lines if ln.lower().startswith("error")), lines[0] if lines else "")
        bad = [f for f, _ in opts if f.startswith("--") and f"'{f}" in err]
        hint = (f" (the binary rejects {', '.join(bad)}: not implemented yet?)"
                if bad and "unexpected argument" in err else "")
        res["error"] = f"exit {p.returncode}{hint}: {first.strip()}"
        return res
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        doc = None
    res["json"] = doc
    truth = {r["request_id"]: r for r in read_jsonl(case_dir / "vllm.jsonl")}
    res["total"] = len(truth)
    if not per_req.exists():
        if not legacy:
            res["error"] = f"no per-request file {per_req.name} written"
            return res
        try:
            r0 = doc["results"][0]
            res["ratio"] = r0["gpu_hit_tokens"] / r0["prompt_tokens"]
        except (TypeError, KeyError, IndexError, ZeroDivisionError):
            res["error"] = "legacy run: no results[0].gpu_hit_tokens in the --json output"
            return res
        res["preemptions"] = None
        res["exact"] = res["matched"] = None
        res["mismatches"] = []
        return res
    ours = read_jsonl(per_req)
    q = sum(int(r["prompt_tokens"]) for r in ours)
    hsum = sum(int(r["gpu_hit_tokens"]) for r in ours)
    res["ratio"] = hsum / q if q else 0.0
    res["preemptions"] = sum(int(r.get("preemptions") or 0) for r in ours)
    ours_by_id = {str(r["request_id"]): r for r in ours}
    matched = exact = 0
    mismatches = []
    for rid, t in truth.items():
        o = ours_by_id.get(rid)
        if o is None:
            continue
        matched += 1
        if int(o["gpu_hit_tokens"]) == int(t["gpu_hit_tokens"]):
            exact += 1
        else:
            mismatches.append((rid, t["gpu_hit_tokens"], int(o["gpu_hit_tokens"])))
    res.update(ours_rows=len(ours), matched=matched, exact=exact, mismatches=mismatches)
    return res


def fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def compare_all(a, cases: list[tuple[Path, dict]]) -> int:
    binary = a.compare
    help_text = simulate_help(binary)
    missing = [f for f in COMPARE_FLAGS if f not in help_text]
    legacy = bool(missing) and a.legacy
    if missing:
        log(f"note: `{binary} simulate --help` does not list {', '.join(missing)} yet"
            + ("; running without them (--legacy: hit ratio only, not the bar)" if legacy
               else "; trying anyway (--legacy runs without them)"))
    extra_async = ["--async-scheduling"] if "--async-scheduling" in help_text else []
    extra = a.compare_arg or []
    rows = []
    fail = False
    for case_dir, s in cases:
        is_async = s["scheduler"] == "AsyncScheduler"
        if is_async and not extra_async:
            log(f"note: {binary} simulate has no --async-scheduling; {case_dir} compared as is")
        for source in ("trace", "log"):
            r = run_ours(binary, a, case_dir, s, source,
                         extra + (extra_async if is_async else []), help_text, legacy)
            (case_dir / f"compare_{source}.json").write_text(json.dumps(r, indent=1) + "\n")
            rows.append((case_dir, s, r))
    hdr = (f"{'workload':<14} {'blocks':>6} {'input':<5} {'vLLM':>7} {'ours':>7} {'diff pt':>8} "
           f"{'exact':>9} {'preempt v/o':>11}  bar")
    print(hdr)
    print("-" * len(hdr))
    for case_dir, s, r in rows:
        wl = f"{s['workload']}-{'async' if s['scheduler'] == 'AsyncScheduler' else 'sync'}"
        if "error" in r:
            print(f"{wl:<14} {s['num_gpu_blocks']:>6} {r['source']:<5} "
                  f"{s['token_hit_ratio']:>7.4f}  n/a: {r['error']}")
            fail = True
            continue
        diff = (r["ratio"] - s["token_hit_ratio"]) * 100.0
        limit = 1.0 if s["num_preemptions"] > 0 else 0.3
        if r["exact"] is None:  # legacy: no per-request figures
            ok = False
            exact_s, pre_s, verdict = "-", f"{s['num_preemptions']}/-", "legacy (no bar)"
        else:
            share = r["exact"] / r["total"] if r["total"] else 0.0
            ok = abs(diff) <= limit and share >= 0.98 and r["matched"] == r["total"]
            exact_s = f"{r['exact']}/{r['total']}"
            pre_s = f"{s['num_preemptions']}/{r['preemptions']}"
            verdict = (f"{'ok' if ok else 'MISS'} (|diff| <= {limit}, >= 98% exact)"
                       + ("" if r["matched"] == r["total"] else f" [{r['matched']} ids matched]"))
        fail |= not ok
        print(f"{wl:<14} {s['num_gpu_blocks']:>6} {r['source']:<5} {s['token_hit_ratio']:>7.4f} "
              f"{r['ratio']:>7.4f} {diff:>+8.2f} {exact_s:>9} {pre_s:>11}  {verdict}")
        if a.verbose:
            for rid, v, o in r["mismatches"][:10]:
                print(f"      {rid}: vLLM {v}, ours {o}")
    if fail and a.strict:
        print("some cases miss issue 13's bar (--strict)")
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="outputs/vllm_engine_check", type=Path)
    ap.add_argument("--seed", type=int, default=20251204,
                    help="workload seed (default 20251204; development used 7 and 11)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default",
                    help="workload shape: default (~300 requests) or small (~40, the fixture)")
    ap.add_argument("--conversations", type=int, help="override the preset's conversation count")
    ap.add_argument("--conv-interarrival-s", type=float,
                    help="override the mean gap between conversation starts")
    ap.add_argument("--answer-reuse", choices=["yes", "no", "both"], default="both",
                    help="history = previous prompt + the answer (yes) or + fresh tokens of the "
                         "same length (no)")
    ap.add_argument("--capacities", default="50000,2600,1600,800,400",
                    help="vLLM num_gpu_blocks values, comma separated (block 0 is vLLM's null "
                         "block: N-1 usable)")
    ap.add_argument("--async-scheduling", action="store_true",
                    help="drive vLLM's AsyncScheduler (two batches in flight) instead of Scheduler")
    ap.add_argument("--both-schedulers", action="store_true", help="run sync and async")
    ap.add_argument("--stream-outputs", action="store_true",
                    help="log every response as a streamed one: a (streaming delta) line per "
                         "token when it is sampled, as a server with --enable-log-outputs does "
                         "for streamed requests (default: one line at the end)")
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--max-model-len", type=int, default=16384)
    ap.add_argument("--prefill-tokens-per-s", type=float, default=10000.0)
    ap.add_argument("--decode-ms-per-token", type=float, default=20.0)
    ap.add_argument("--model-dir", help="tiny HF config dir (default: a temporary one)")
    ap.add_argument("--log-pid", type=int, default=1, help="pid written in server.log")
    ap.add_argument("--compare", metavar="BIN", help="inferencelab binary to compare against")
    ap.add_argument("--compare-only", action="store_true",
                    help="do not run vLLM: compare the cases already in --out-dir")
    ap.add_argument("--compare-arg", action="append",
                    help="extra argument for `simulate` (repeatable)")
    ap.add_argument("--compare-timeout", type=float, default=600.0)
    ap.add_argument("--legacy", action="store_true",
                    help="if the binary lacks the new simulate flags, run without them (token "
                         "hit ratio only; never passes --strict)")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when a case misses the bar (0.3 pt / 1 pt with preemption, "
                         ">= 98%% requests exact)")
    ap.add_argument("-v", "--verbose", action="store_true")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    p = PRESETS[a.preset]
    if a.conversations is not None:
        p.conversations = a.conversations
    if a.conv_interarrival_s is not None:
        p.conv_interarrival_s = a.conv_interarrival_s
    caps = [int(x) for x in a.capacities.split(",") if x.strip()]
    variants = {"yes": [True], "no": [False], "both": [True, False]}[a.answer_reuse]
    modes = [False, True] if a.both_schedulers else [a.async_scheduling]
    cases: list[tuple[Path, dict]] = []
    if a.compare_only:
        for sp in a.out_dir.glob("*/blocks*/summary.json"):
            cases.append((sp.parent, json.loads(sp.read_text())))
        cases.sort(key=lambda c: (c[0].parent.name, -c[1]["num_gpu_blocks"]))
        if not cases:
            log(f"no cases under {a.out_dir}")
            return 2
    else:
        h = VllmHarness(a)
        h.params = p
        print(f"vLLM {h.vllm_version}, seed {a.seed}, preset {a.preset}")
        print(f"{'workload':<16} {'blocks':>6} {'reqs':>5} {'hit ratio':>9} {'hits':>8} "
              f"{'queries':>8} {'preempt':>7} {'preempted q/h':>15} {'wall s':>6}")
        for reuse in variants:
            wname = "reuse" if reuse else "noreuse"
            convs = gen_workload(a.seed, p, reuse)
            for is_async in modes:
                for cap in caps:
                    case_dir = a.out_dir / f"{wname}-{'async' if is_async else 'sync'}" / f"blocks{cap}"
                    s = run_engine(h, convs, cap, is_async, case_dir, wname)
                    st = s["prefix_cache_stats"]
                    print(f"{wname + ('-async' if is_async else '-sync'):<16} {cap:>6} "
                          f"{s['requests']:>5} {s['token_hit_ratio']:>9.4f} {s['hits']:>8} "
                          f"{s['queries']:>8} {s['num_preemptions']:>7} "
                          f"{st['preempted_queries']:>7}/{st['preempted_hits']:<7} "
                          f"{s.pop('_wall'):>6.1f}", flush=True)
                    cases.append((case_dir, s))
    if a.compare:
        return compare_all(a, cases)
    return 0


if __name__ == "__main__":
    sys.exit(main())
