#!/usr/bin/env python3
"""Ground truth from LMCache 0.5.6's REAL storage classes for InferenceLab's CPU/disk tier (issue 22).

Runs LMCache's own `ChunkedTokenDatabase`, `StorageManager` (which builds `LocalCPUBackend` with its
cache policy over a `MixedMemoryAllocator` -> `TensorMemoryAllocator`, and `LocalDiskBackend` when a
disk is configured) on CPU. `LMCacheEngine.__init__` starts telemetry, a pin monitor and workers, and
the vLLM connector needs vLLM, so the few engine / connector calls are transcribed here, each with
the file:line of LMCache 0.5.6 it follows (paths under site-packages/lmcache/). Nothing in LMCache is
patched: the driver calls its classes in the order the engine and the connector do.

Per request (one at a time, vLLM's GPU prefix cache off: vLLM computed tokens = 0 at every lookup):
  1. scheduler: `get_num_new_matched_tokens` -> lookup client -> `LMCacheEngine.lookup(pin=True)`,
     hit minus 1 when it is the whole prompt (vllm_v1_adapter.py:1447-1455);
  2. worker, first step: `start_load_kv` -> `LMCacheEngine.retrieve` of the hit, then `lookup_unpin`;
  3. worker, every prefill step: `wait_for_save` -> `lookup_unpin`, then `LMCacheEngine.store` of the
     chunks the step completed, from `skip_leading_tokens` aligned down to the chunk (vLLM chunked
     prefill with --max-num-batched-tokens; default 8192). Decode tokens are never stored
     (save_decode_cache false). Disk writes are waited for before the next step.

Per workload it writes into --out-dir/<workload>/:
  trace.jsonl                              InferenceLab native trace (content "tokens")
  lmcache-<policy>-<gib>.jsonl             per request: request_id, prompt_tokens, lmcache_hit_tokens
  lmcache-<policy>-<gib>-disk-<gib>.jsonl  ... plus cpu_hit_tokens, disk_hit_tokens
  <same name>.summary.json                 totals, hit ratios, LMCache's capacity in chunks, run params
  summary.json                             all cells of the workload
and --out-dir/chunks_per_gib.json (LMCache's allocator: chunks in 1 GiB for qwen-8b at TP 1/2/4 and
for DeepSeek-V2-Lite, MLA).

With --compare BIN it runs, per cell,
  BIN simulate --input-file trace.jsonl --gpu-blocks 0 --no-pinning --cpu-eviction-policy P
      --cpu-cache-gb G --chunk-size 256 -m qwen-8b --per-request ours.jsonl --json -q [--disk-cache-gb D]
and prints LMCache vs ours per cell (CPU token hit %, diff in points, requests equal / total);
--strict exits 1 when a cell differs by more than 0.05 points or < 99 % of requests are equal.
--reuse keeps LMCache outputs already in --out-dir (same parameters), so --compare can be re-run
with the system python (no LMCache needed then).

Setup (venv outside the repo; PyPI serves Linux torch only as a CUDA build, which runs on CPU):
    python3 -m venv /work/venvs/lmcache
    /work/venvs/lmcache/bin/pip install torch==2.15.0
    /work/venvs/lmcache/bin/pip install --no-deps lmcache==0.5.6
    /work/venvs/lmcache/bin/pip install "numpy<=2.2.6" "prometheus_client<=0.24.1" pyyaml numba \
        requests cachetools sortedcontainers py-cpuinfo psutil aiohttp aiofile msgspec pyzmq \
        transformers cryptography     # what importing the classes below needs (lmcache's pins)
    /work/venvs/lmcache/bin/python scripts/lmcache_engine_check.py --out-dir outputs/lmcache_engine_check \
        [--compare target/release/inferencelab] [--strict]
Golden fixture (crates/cli/tests/fixtures/lmcache_engine/, see its README.md):
    /work/venvs/lmcache/bin/python scripts/lmcache_engine_check.py --preset small \
        --out-dir crates/cli/tests/fixtures/lmcache_engine
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

LMCACHE_VERSION = "0.5.6"
CHUNK = 256
GIB = 1 << 30

# qwen-8b (configs/models/qwen-8b.yaml): 36 layers, 8 KV heads, head_dim 128, bf16
QWEN8B = dict(name="qwen-8b", layers=36, kv_heads=8, head_dim=128, dtype="bfloat16")
# DeepSeek-V2-Lite (MLA): 27 layers, kv_lora_rank 512 + qk_rope_head_dim 64; vLLM reports 1 KV head
# and head size 576 for MLA (vllm_service_factory.py:94-109: kv_shape[1] = 1 if use_mla)
DSV2LITE = dict(name="deepseek-v2-lite", layers=27, kv_heads=1, head_dim=512 + 64, dtype="bfloat16")


# --------------------------------------------------------------------------------------------
# Workloads (pure Python: no LMCache needed)
# --------------------------------------------------------------------------------------------


@dataclass
class Req:
    rid: str
    conv: int
    turn: int
    tokens: list
    out: int
    at: float  # virtual arrival (orders the interleaving; the trace spaces requests 100 s apart)


PRESETS = {
    # ~300 requests, ~1 M prompt tokens each workload
    "default": dict(
        chat=dict(conversations=46, systems=[500, 1200, 2000, 3000], turns=(2, 12),
                  user=(20, 2000, 4.8, 1.0), doc_prob=0.2, doc=(2000, 6000),
                  answer=(40, 500), conv_gap=1.0, think=1.0, vocab=(1000, 150000),
                  max_prompt=16000, target=300),
        agentic=dict(sessions=44, prefixes=[4, 6, 10, 14, 20], zipf=1.1, block=512,
                     task=(1, 4), steps=(1, 8), grow=(1, 4), conv_gap=1.0, think=1.0,
                     out=(40, 600), vocab=(1000, 150000), max_prompt=24000, target=150),
        sizes=dict(chat=[0.5, 1, 2, 4, 8], agentic=[0.5, 1, 2, 4, 8]),
        disk=dict(chat=(2, 6), agentic=(3, 8)),
        workloads=["chat", "agentic"],
    ),
    # golden fixture: ~60 requests, two sizes (0.25 GiB holds 7 chunks, less than the longest
    # prompt), small token ids so the files stay small
    "small": dict(
        chat=dict(conversations=16, systems=[250, 600, 1000], turns=(3, 6),
                  user=(20, 400, 4.3, 0.9), doc_prob=0.2, doc=(900, 1500),
                  answer=(30, 250), conv_gap=1.0, think=1.0, vocab=(10, 100),
                  max_prompt=3200, target=60),
        sizes=dict(chat=[0.25, 1]),
        disk=dict(chat=(1, 2)),
        workloads=["chat"],
    ),
}


def _rand_tokens(rng, n, vocab):
    lo, hi = vocab
    return [rng.randrange(lo, hi) for _ in range(n)]


def _lognormal_int(rng, lo, hi, mu, sigma):
    return max(lo, min(hi, int(rng.lognormvariate(mu, sigma))))


def _interleave(convs, rng, conv_gap, think, target):
    """convs: list of lists of (conv, turn, tokens, out). Conversation starts are a Poisson process,
    turns follow after an exponential think time, so turns of different conversations alternate."""
    reqs = []
    start = 0.0
    for turns in convs:
        start += rng.expovariate(1.0 / conv_gap)
        at = start
        for (conv, turn, toks, out) in turns:
            if turn > 0:
                at += rng.expovariate(1.0 / think)
            reqs.append(Req("", conv, turn, toks, out, at))
    reqs.sort(key=lambda r: (r.at, r.conv, r.turn))
    reqs = reqs[:target] if target else reqs
    for i, r in enumerate(reqs):
        r.rid = f"req-{i:04d}-c{r.conv}-t{r.turn}"
    return reqs


def gen_chat(p, seed):
    """Sequential multi-turn chat: shared system prompts, turn k = history (previous prompts and
    answers) + new user tokens; some conversations open with a long document."""
    rng = random.Random(seed * 7919 + 1)
    systems = [_rand_tokens(rng, n, p["vocab"]) for n in p["systems"]]
    convs = []
    for c in range(p["conversations"]):
        sys_toks = systems[rng.randrange(len(systems))]
        hist = list(sys_toks)
        nturns = rng.randint(*p["turns"])
        turns = []
        for k in range(nturns):
            lo, hi, mu, sg = p["user"]
            n_user = _lognormal_int(rng, lo, hi, mu, sg)
            if k == 0 and rng.random() < p["doc_prob"]:
                n_user += rng.randint(*p["doc"])
            user = _rand_tokens(rng, n_user, p["vocab"])
            prompt = hist + user
            if len(prompt) > p["max_prompt"]:
                break
            out = rng.randint(*p["answer"])
            answer = _rand_tokens(rng, out, p["vocab"])
            turns.append((c, k, prompt, out))
            hist = prompt + answer
        convs.append(turns)
    return _interleave(convs, rng, p["conv_gap"], p["think"], p["target"])


def gen_agentic(p, seed):
    """Mooncake-like id-shape workload: prompts are chains of 512-token blocks (Mooncake's
    hash_ids) over a few popular shared prefixes (Zipf), agent sessions extend their own context
    step by step, and every prompt ends with a unique partial block."""
    rng = random.Random(seed * 7919 + 2)
    blk = p["block"]
    prefixes = [[_rand_tokens(rng, blk, p["vocab"]) for _ in range(n)] for n in p["prefixes"]]
    weights = [1.0 / (i + 1) ** p["zipf"] for i in range(len(prefixes))]
    convs = []
    for s in range(p["sessions"]):
        pre = rng.choices(range(len(prefixes)), weights)[0]
        ctx = [b for b in prefixes[pre]]
        ctx += [_rand_tokens(rng, blk, p["vocab"]) for _ in range(rng.randint(*p["task"]))]
        steps = rng.randint(*p["steps"])
        turns = []
        for k in range(steps):
            tail = _rand_tokens(rng, rng.randrange(0, blk), p["vocab"])
            prompt = [t for b in ctx for t in b] + tail
            if len(prompt) > p["max_prompt"]:
                break
            turns.append((s, k, prompt, rng.randint(*p["out"])))
            ctx += [_rand_tokens(rng, blk, p["vocab"]) for _ in range(rng.randint(*p["grow"]))]
        convs.append(turns)
    return _interleave(convs, rng, p["conv_gap"], p["think"], p["target"])


GENERATORS = {"chat": gen_chat, "agentic": gen_agentic}


def write_trace(path, reqs):
    with open(path, "w") as f:
        f.write(json.dumps({"inferencelab_trace": 1, "block_size": None, "partial_last_block": False,
                            "content": "tokens", "source": "lmcache_engine_check"}) + "\n")
        for i, r in enumerate(reqs):
            f.write(json.dumps({"id": r.rid, "t": float(i * 100), "conv": r.conv, "turn": r.turn,
                                "in": len(r.tokens), "out": r.out, "tokens": r.tokens},
                               separators=(",", ":")) + "\n")


def read_trace(path):
    reqs = []
    with open(path) as f:
        next(f)
        for line in f:
            if line.strip():
                d = json.loads(line)
                reqs.append(Req(d["id"], d["conv"], d["turn"], d["tokens"], d["out"], d["t"]))
    return reqs


def gib_name(g):
    return f"{g:g}"


def cell_name(policy, cpu_gib, disk_gib=None):
    n = f"lmcache-{policy}-{gib_name(cpu_gib)}"
    return n + (f"-disk-{gib_name(disk_gib)}" if disk_gib else "")


# --------------------------------------------------------------------------------------------
# LMCache driver (imports LMCache lazily: the compare path runs without it)
# --------------------------------------------------------------------------------------------


def _quiet_lmcache():
    os.environ.setdefault("LMCACHE_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _metadata(model, tp=1, use_mla=False):
    import torch
    from lmcache.v1.metadata import LMCacheMetadata

    # kv_shape = (num_layer, 1 if use_mla else 2, chunk_size, num_kv_head, head_size), num_kv_head
    # per rank (vllm_service_factory.py:97-109; model_config.get_num_kv_heads(parallel_config))
    heads = model["kv_heads"] if use_mla else max(1, model["kv_heads"] // tp)
    kv_shape = (model["layers"], 1 if use_mla else 2, CHUNK, heads, model["head_dim"])
    return LMCacheMetadata(model_name=model["name"], world_size=tp, local_world_size=tp, worker_id=0,
                           local_worker_id=0, kv_dtype=getattr(torch, model["dtype"]),
                           kv_shape=kv_shape, use_mla=use_mla, role="worker", chunk_size=CHUNK)


def _count_chunks(cpu_backend, md, fmt):
    """LMCache's own capacity: allocate chunk-sized objects without eviction until the allocator
    says no (local_cpu_backend.py:644-684), then free them all again."""
    objs = []
    while True:
        o = cpu_backend.allocate(md.get_shapes(CHUNK), md.get_dtypes(), fmt, eviction=False)
        if o is None:
            break
        objs.append(o)
    phys = objs[0].get_physical_size() if objs else 0
    for o in objs:
        o.ref_count_down()  # ref 1 -> 0: back to the TensorMemoryAllocator's free list
    return len(objs), phys


def chunks_per_gib():
    _quiet_lmcache()
    from lmcache.v1.config import LMCacheEngineConfig
    from lmcache.v1.memory_management import MemoryFormat
    from lmcache.v1.storage_backend.local_cpu_backend import LocalCPUBackend

    rows = []
    cases = [(QWEN8B, tp, False) for tp in (1, 2, 4)] + [(DSV2LITE, 1, True), (DSV2LITE, 2, True)]
    for model, tp, mla in cases:
        cfg = LMCacheEngineConfig.from_defaults(chunk_size=CHUNK, local_cpu=True,
                                                max_local_cpu_size=1.0)
        md = _metadata(model, tp, mla)
        cpu = LocalCPUBackend(cfg, md)  # builds MixedMemoryAllocator(1 GiB) -> TensorMemoryAllocator
        # the engine allocates MLA chunks as KV_MLA_FMT (cache_engine.py:210-211), others KV_2LTD
        fmt = MemoryFormat.KV_MLA_FMT if mla else None
        n, phys = _count_chunks(cpu, md, fmt)
        raw = cpu.get_full_chunk_size_bytes()
        rows.append(dict(model=model["name"], tp=tp, use_mla=mla, kv_shape=list(md.kv_shape),
                         chunk_bytes=raw, chunk_bytes_aligned=phys,
                         kv_bytes_per_token=raw // CHUNK, chunks_per_gib=n,
                         calculate_chunk_budget=cpu.calculate_chunk_budget(),
                         pool_bytes=cpu.memory_allocator.size))
        cpu.close()
    return dict(lmcache_version=_lmcache_version(), chunk_size=CHUNK, gib=GIB, rows=rows,
                notes=["chunks_per_gib: TensorMemoryAllocator allocations (4 KiB aligned) that fit "
                       "in max_local_cpu_size = 1.0 (int(1.0 * 1024**3) bytes, "
                       "local_cpu_backend.py:403), counted by allocating until it refuses",
                       "MLA: vLLM gives 1 KV head of size kv_lora_rank + qk_rope_head_dim at every "
                       "TP rank (no split); save_only_first_rank defaults to True for MLA "
                       "(cache_engine.py:117-120): only rank 0 stores, the pool size is then "
                       "min(configured, available RAM - reserve_local_cpu_size) "
                       "(local_cpu_backend.py:315-373)"])


def _lmcache_version():
    try:
        import lmcache
        return lmcache.__version__
    except Exception:
        return None


class Driver:
    """One LMCache worker (TP 1) and the connector calls of one vLLM instance, one request at a
    time."""

    def __init__(self, policy, cpu_gib, disk_gib, disk_dir, max_batched, disk_io_threads=1):
        _quiet_lmcache()
        import torch
        from lmcache.v1.config import LMCacheEngineConfig
        from lmcache.v1.event_manager import EventManager
        from lmcache.v1.storage_backend.storage_manager import StorageManager
        from lmcache.v1.token_database import ChunkedTokenDatabase

        torch.set_num_threads(1)
        self.torch = torch
        kw = dict(chunk_size=CHUNK, local_cpu=True, max_local_cpu_size=float(cpu_gib),
                  cache_policy=policy.upper())
        if disk_gib:
            # disk_io_threads 1: writes complete in submission order, so the disk's policy order
            # is deterministic (with the default 4 threads it follows write completion order,
            # local_disk_backend.py:173-176, 700-714)
            kw.update(local_disk=str(disk_dir), max_local_disk_size=float(disk_gib),
                      extra_config={"disk_io_threads": disk_io_threads})
        self.cfg = LMCacheEngineConfig.from_defaults(**kw)
        self.md = _metadata(QWEN8B)
        # LMCacheEngine.__init__: self.fmt None unless layerwise / MLA (cache_engine.py:202-211)
        self.fmt = None
        # lookup client (scheduler) and engine (worker) each build a ChunkedTokenDatabase from the
        # same config (lmcache_lookup_client.py:74-79; LMCacheEngineBuilder._Create_token_database)
        self.client_tdb = ChunkedTokenDatabase(self.cfg, self.md)
        self.tdb = ChunkedTokenDatabase(self.cfg, self.md)
        # LMCacheEngine.__init__ creates the PinMonitor singleton that MemoryObj.pin() reports to
        # (cache_engine.py:223-224; memory_management.py:818-820); its 300 s timeout never fires
        # here (pins live for one request)
        from lmcache.v1.pin_monitor import PinMonitor
        PinMonitor.GetOrCreate(self.cfg, self.md)
        # LMCacheEngine.post_init builds the StorageManager (LocalCPUBackend, LocalDiskBackend)
        self.sm = StorageManager(self.cfg, self.md, EventManager())
        self.cpu = self.sm.storage_backends["LocalCPUBackend"]
        self.disk = self.sm.storage_backends.get("LocalDiskBackend")
        self.cpu_chunks, self.chunk_phys = _count_chunks(self.cpu, self.md, self.fmt)
        am = self.cpu.memory_allocator.pin_allocator.address_manager
        assert len(am._explicit_list) == 1, "allocator not back to one free block"
        self.disk_chunks = (int(self.disk.max_cache_size // self.chunk_phys) if self.disk else None)
        self.lookup_pins = {}  # LMCacheEngine.lookup_pins: lookup_id -> {location: [keys]}
        self.max_batched = max_batched
        self.stats = dict(store_calls=0, chunks_allocated=0, truncated_stores=0,
                          retrieved_chunks=0, retrieve_calls=0, full_prompt_hits=0)

    def close(self):
        self.sm.close()

    # ---- LMCacheEngine.lookup via LMCacheLookupClient / LMCacheLookupServer ----
    def lookup(self, token_ids, lookup_id):
        # LMCacheLookupClient.lookup: hashes and offsets on the scheduler side
        # (lmcache_lookup_client.py:102-117); no chunk -> 0 without asking the worker
        hashes, offsets = [], []
        for start, end, key in self.client_tdb.process_tokens(token_ids, make_key=False):
            hashes.append(key)
            offsets.append(end - start)
        if not hashes:
            return 0, {}
        # LMCacheLookupServer -> engine.lookup(hashes=, offsets=, lookup_id=, pin=True)
        # (lmcache_lookup_client.py:243-252); engine.lookup non-layerwise (cache_engine.py:1206-1276)
        res = 0
        block_mapping = {}
        try:
            chunk_info_list, keys = [], []
            for chunk_info in self.tdb.process_tokens(tokens=None, hashes=hashes, offsets=offsets,
                                                      request_configs=None):
                chunk_info_list.append(chunk_info)
                keys.append(chunk_info[2])
            search_range = self.cfg.retrieve_locations  # None: every backend (cache_engine.py:1206-1207)
            hit_chunks, block_mapping = self.sm.batched_contains(keys, search_range, True)
            if block_mapping:
                self.lookup_pins[lookup_id] = block_mapping  # cache_engine.py:1258-1262
            for idx, (start, end, key) in enumerate(chunk_info_list):
                if idx < hit_chunks:
                    res = end
                    continue
                break
        finally:
            self.sm.touch_cache()  # pin=True (cache_engine.py:1273-1276)
        return res, block_mapping

    # ---- LMCacheEngine.lookup_unpin (cache_engine.py:1573-1577) ----
    def lookup_unpin(self, lookup_id):
        if lookup_id in self.lookup_pins:
            for location, keys in self.lookup_pins.pop(lookup_id).items():
                self.sm.batched_unpin(keys, [location])

    # ---- LMCacheEngine.retrieve, synchronous, non-layerwise (cache_engine.py:861-964) ----
    def retrieve(self, tokens, mask, req_id):
        torch = self.torch
        ret_mask = torch.zeros(len(tokens), dtype=torch.bool, device="cpu")
        # _process_tokens_internal (cache_engine.py:1762-1843)
        chunk_infos = []
        for start, end, key in self.tdb.process_tokens(tokens=tokens, mask=mask, request_configs=None):
            chunk_infos.append((key, start, end))
        if req_id in self.lookup_pins and len(self.lookup_pins[req_id]) == 1:
            location = next(iter(self.lookup_pins[req_id].keys()))
            block_mapping = {location: chunk_infos}
        else:
            block_mapping = self.sm.get_block_mapping(chunk_infos)
        n_chunks = sum(len(b) for b in block_mapping.values())
        if "LocalDiskBackend" in block_mapping and n_chunks > self.cpu_chunks:
            # LocalDiskBackend.batched_get_blocking allocates its staging objects in the CPU
            # backend with busy_loop=True (local_disk_backend.py:532-537, 765-766;
            # local_cpu_backend.py:686-736): with the CPU-hit chunks pinned and referenced and the
            # disk chunks held until promoted, more chunks than the CPU pool holds never fit and
            # LMCache spins forever. Refuse instead of hanging.
            raise RuntimeError(f"{req_id}: retrieve of {n_chunks} chunks with a disk part needs "
                               f"more than the CPU pool's {self.cpu_chunks} chunks: LMCache "
                               "0.5.6 would busy-loop here; use a larger --disk-case CPU size")
        last_failed_block_start = None
        reordered_chunks = []
        for location, blocks in block_mapping.items():
            keys = [key for key, _, _ in blocks]
            memory_objs = self.sm.batched_get(keys=keys, location=location)
            used_keys = set()
            for (key, start, end), memory_obj in zip(blocks, memory_objs):
                if memory_obj is None:
                    if last_failed_block_start is None or last_failed_block_start > start:
                        last_failed_block_start = start
                    break
                reordered_chunks.append((key, memory_obj, start, end))
                ret_mask[start:end] = True
                used_keys.add(key)
            for (key, _, _), memory_obj in zip(blocks, memory_objs):
                if memory_obj is not None and key not in used_keys:
                    memory_obj.ref_count_down()
        if last_failed_block_start is not None:
            ret_mask[last_failed_block_start:] = False
            kept = []
            for key, memory_obj, start, end in reordered_chunks:
                if end <= last_failed_block_start:
                    kept.append((key, memory_obj, start, end))
                else:
                    memory_obj.ref_count_down()
            reordered_chunks = kept
        # gpu_connector.batched_to_gpu (cache_engine.py:902-937): copies bytes only; no GPU here
        for key, memory_obj, _, _ in reordered_chunks:
            # not async, not passive, no remove_after_retrieve (cache_engine.py:959-964)
            memory_obj.ref_count_down()
        self.stats["retrieve_calls"] += 1
        self.stats["retrieved_chunks"] += len(reordered_chunks)
        return ret_mask

    # ---- LMCacheEngine.store (cache_engine.py:471-580) ----
    def store(self, token_ids, mask):
        keys, memory_objs = [], []
        wanted = 0
        for start, end, key in self.tdb.process_tokens(token_ids, None, None, mask,
                                                       request_configs=None):
            if end <= start:
                continue
            wanted += 1
            memory_obj = self.sm.allocate(
                self.md.get_shapes(end - start), self.md.get_dtypes(),
                busy_loop=self.cfg.get_extra_config_value("force_store_wait", False),
                fmt=self.fmt)
            if memory_obj is None:
                self.stats["truncated_stores"] += 1  # "Local cpu memory under pressure" (:518-525)
                break
            keys.append(key)
            memory_objs.append(memory_obj)
        self.stats["store_calls"] += 1
        self.stats["chunks_allocated"] += len(memory_objs)
        if not memory_objs:
            return
        # gpu_connector.batched_from_gpu (cache_engine.py:568-569): copies bytes only; no GPU here
        self.sm.batched_put(keys, memory_objs, transfer_spec=None, location=self.cfg.store_location)
        self._wait_disk_writes()

    def _wait_disk_writes(self):
        # LocalDiskBackend writes asynchronously (local_disk_backend.py:426-437) and publishes the
        # key when the write is done (:714-716); requests here are 100 s apart, so every write of a
        # step is done before the next step: wait for them.
        if self.disk is None:
            return
        w = self.disk.disk_worker
        while True:
            with w.put_lock:
                if not w.put_tasks:
                    return
            time.sleep(0.0005)

    # ---- one request through the vLLM connector (vllm_v1_adapter.py) ----
    def run_request(self, rid, prompt):
        P = len(prompt)
        C = CHUNK
        # get_num_new_matched_tokens (vllm_v1_adapter.py:1393-1534)
        num_computed_tokens = 0  # vLLM's GPU prefix cache off
        num_external_hit_tokens, block_mapping = self.lookup(prompt, rid)
        need_to_allocate = num_external_hit_tokens - num_computed_tokens
        if num_external_hit_tokens == P:  # full-prompt hit: recompute the last token (:1453-1455)
            need_to_allocate -= 1
            self.stats["full_prompt_hits"] += 1
        load_spec = dict(vllm_cached_tokens=num_computed_tokens,
                         lmcache_cached_tokens=num_external_hit_tokens, can_load=False)
        num_external = need_to_allocate if need_to_allocate > 0 else 0  # :1527-1534
        # update_state_after_alloc (:1579-1612)
        if num_external > 0:
            load_spec["can_load"] = True
        # per tier, as the lookup found them; the recomputed last token comes off the last tier
        cpu_tok = len(block_mapping.get("LocalCPUBackend", ())) * C
        disk_tok = len(block_mapping.get("LocalDiskBackend", ())) * C
        if num_external_hit_tokens == P and P > 0:
            if disk_tok:
                disk_tok -= 1
            else:
                cpu_tok -= 1

        # vLLM scheduler: num_computed = local + external; chunked prefill, one request running:
        # each step schedules min(remaining, max_num_batched_tokens) tokens
        computed = num_computed_tokens + num_external
        tracker = None
        first = True
        while computed < P:
            n = min(P - computed, self.max_batched)
            if first:
                # build_connector_meta, new request (:1646-1683); RequestTracker.from_new_request
                # (:188-200): token_ids = prompt[:num_tokens_to_compute],
                # num_saved_tokens = lmcache_cached_tokens
                tracker = dict(prompt_len=P, token_ids=prompt[:computed + n],
                               num_saved_tokens=load_spec["lmcache_cached_tokens"],
                               is_decode_phase=False)
                ls = load_spec
            else:
                # cached request (:1732-1852); RequestTracker.update (:240-267)
                slice_base = min(computed, len(tracker["token_ids"]))
                new_token_ids = prompt[slice_base:slice_base + n]
                tracker["token_ids"] = tracker["token_ids"] + new_token_ids
                if len(new_token_ids) == 1:
                    tracker["is_decode_phase"] = True  # a 1-token prefill step counts as decode
                ls = None
            meta = self._req_meta(tracker, ls)
            if meta is not None:
                # start_load_kv (:794-868)
                if ls is not None and ls["can_load"]:
                    tokens = meta["token_ids"]
                    mask = self.torch.ones(len(tokens), dtype=self.torch.bool)
                    masked = ls["vllm_cached_tokens"] // C * C
                    mask[:masked] = False
                    lct = ls["lmcache_cached_tokens"]
                    self.retrieve(tokens[:lct], mask[:lct], rid)
                    self.lookup_unpin(rid)  # synchronous load releases its pins (:864-868)
                # wait_for_save (:1145-1257)
                self.lookup_unpin(rid)
                if meta["can_save"]:
                    token_ids = meta["token_ids"]
                    skip = meta["skip_leading_tokens"]
                    if skip != len(token_ids):
                        skip = skip // C * C
                        store_mask = self.torch.ones(len(token_ids), dtype=self.torch.bool)
                        store_mask[:skip] = False
                        if not meta["is_last_prefill"]:
                            aligned = len(token_ids) // C * C
                            token_ids = token_ids[:aligned]
                            store_mask = store_mask[:aligned]
                        self.store(token_ids, store_mask)
            computed += n
            first = False
        # decode steps: save_decode_cache false -> from_request_tracker returns None (:335-343)
        self.lookup_unpin(rid)
        lmcache_hit = num_external
        return dict(lookup_hit_tokens=num_external_hit_tokens, lmcache_hit_tokens=lmcache_hit,
                    cpu_hit_tokens=max(0, cpu_tok), disk_hit_tokens=max(0, disk_tok))

    @staticmethod
    def _req_meta(tracker, load_spec):
        """ReqMeta.from_request_tracker (vllm_v1_adapter.py:314-361), discard_partial_chunks true
        (save_unfull_chunk false, :555-560), save_decode_cache false, no disagg / skip configs."""
        C = CHUNK
        input_token_ids = tracker["token_ids"]
        input_token_len = len(input_token_ids)
        is_last_prefill = input_token_len >= tracker["prompt_len"]
        skip_leading_tokens = tracker["num_saved_tokens"]
        chunk_boundary = -(-(tracker["num_saved_tokens"] + 1) // C) * C
        skip_save = ((tracker["num_saved_tokens"] > 0 and input_token_len < chunk_boundary)
                     or tracker["is_decode_phase"])
        if skip_save and load_spec is None:
            return None
        num_tokens_to_save = input_token_len // C * C
        if not skip_save:
            tracker["num_saved_tokens"] = num_tokens_to_save
        return dict(token_ids=input_token_ids[:num_tokens_to_save], is_last_prefill=is_last_prefill,
                    skip_leading_tokens=skip_leading_tokens, can_save=not skip_save)

    def check_no_pins(self):
        for k, o in self.cpu.hot_cache.items():
            assert not o.is_pinned and o.get_ref_count() == 1, f"leaked pin/ref on {k}"


def run_cell(cell):
    """Runs one (policy, CPU size[, disk]) cell in this process and writes its files."""
    t0 = time.time()
    wdir = Path(cell["dir"])
    reqs = read_trace(wdir / "trace.jsonl")
    disk_dir = None
    if cell.get("disk_gib"):
        disk_dir = Path(tempfile.mkdtemp(prefix="lmcache_disk_", dir=cell["disk_root"]))
    drv = Driver(cell["policy"], cell["cpu_gib"], cell.get("disk_gib"), disk_dir,
                 cell["max_batched"], cell.get("disk_io_threads", 1))
    rows = []
    try:
        for r in reqs:
            res = drv.run_request(r.rid, r.tokens)
            drv.check_no_pins()
            row = dict(request_id=r.rid, prompt_tokens=len(r.tokens),
                       lmcache_hit_tokens=res["lmcache_hit_tokens"])
            if cell.get("disk_gib"):
                row.update(cpu_hit_tokens=res["cpu_hit_tokens"], disk_hit_tokens=res["disk_hit_tokens"])
            rows.append(row)
    finally:
        drv.close()
        if disk_dir is not None:
            shutil.rmtree(disk_dir, ignore_errors=True)
    name = cell_name(cell["policy"], cell["cpu_gib"], cell.get("disk_gib"))
    with open(wdir / f"{name}.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tot_p = sum(r["prompt_tokens"] for r in rows)
    tot_h = sum(r["lmcache_hit_tokens"] for r in rows)
    summ = dict(
        lmcache_version=_lmcache_version(), cell=name, policy=cell["policy"],
        cpu_gib=cell["cpu_gib"], disk_gib=cell.get("disk_gib"), model=QWEN8B["name"],
        chunk_size=CHUNK, kv_bytes_per_token=drv.md.get_shapes(1)[0].numel() * 2,
        chunk_bytes=drv.chunk_phys, cpu_capacity_chunks=drv.cpu_chunks,
        cpu_chunk_budget=drv.cpu.calculate_chunk_budget(), disk_capacity_chunks=drv.disk_chunks,
        max_num_batched_tokens=cell["max_batched"], trace_sha256=cell["trace_sha256"],
        disk_io_threads=cell.get("disk_io_threads", 1) if cell.get("disk_gib") else None,
        requests=len(rows), prompt_tokens=tot_p, lmcache_hit_tokens=tot_h,
        lmcache_token_hit_ratio=tot_h / tot_p if tot_p else 0.0,
        requests_with_hit=sum(1 for r in rows if r["lmcache_hit_tokens"] > 0),
        **{k: v for k, v in drv.stats.items()})
    if cell.get("disk_gib"):
        c = sum(r["cpu_hit_tokens"] for r in rows)
        d = sum(r["disk_hit_tokens"] for r in rows)
        summ.update(cpu_hit_tokens=c, disk_hit_tokens=d, cpu_token_hit_ratio=c / tot_p,
                    disk_token_hit_ratio=d / tot_p)
    else:
        summ.update(cpu_hit_tokens=tot_h, disk_hit_tokens=0, cpu_token_hit_ratio=tot_h / tot_p)
    with open(wdir / f"{name}.summary.json", "w") as f:
        json.dump(summ, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"seconds {time.time() - t0:.1f}")
    return summ


# --------------------------------------------------------------------------------------------
# Comparison with `inferencelab simulate`
# --------------------------------------------------------------------------------------------


def _simulate_help(binary):
    try:
        return subprocess.run([binary, "simulate", "--help"], capture_output=True, text=True,
                              timeout=60).stdout
    except Exception:
        return ""


def run_ours(binary, wdir, summ, extra_args, help_text, timeout):
    """Returns (per_request dict or None, aggregate dict or None, message)."""
    cmd = [binary, "simulate", "--input-file", str(wdir / "trace.jsonl"), "--gpu-blocks", "0",
           "--no-pinning", "--cpu-eviction-policy", summ["policy"], "--cpu-cache-gb",
           gib_name(summ["cpu_gib"]), "--chunk-size", str(CHUNK), "-m", QWEN8B["name"]]
    if summ.get("disk_gib"):
        cmd += ["--disk-cache-gb", gib_name(summ["disk_gib"])]
    if "--max-num-batched-tokens" in help_text:
        cmd += ["--max-num-batched-tokens", str(summ["max_num_batched_tokens"])]
    cmd += list(extra_args)
    with tempfile.TemporaryDirectory() as td:
        per = Path(td) / "ours.jsonl"
        p = subprocess.run(cmd + ["--per-request", str(per), "--json", "-q"], capture_output=True,
                           text=True, timeout=timeout)
        if p.returncode == 0:
            rows = {}
            with open(per) as f:
                for line in f:
                    if line.strip():
                        d = json.loads(line)
                        rows[str(d["request_id"])] = d
            return rows, _aggregate(p.stdout), " ".join(cmd + ["--per-request", "ours.jsonl", "--json", "-q"])
        msg = f"`{binary} simulate ... --per-request ours.jsonl --json -q` failed (rc " \
              f"{p.returncode}): " + (p.stderr.strip().splitlines() or [""])[0]
        q = subprocess.run(cmd + ["--json", "-q"], capture_output=True, text=True, timeout=timeout)
        agg = _aggregate(q.stdout) if q.returncode == 0 else None
        return None, agg, msg


def _aggregate(stdout):
    try:
        d = json.loads(stdout)
        r = d["results"][0]
        return dict(cpu=r.get("cpu_hit_tokens"), disk=r.get("disk_hit_tokens"),
                    prompt=r.get("prompt_tokens"), cpu_chunks=r.get("cpu_chunks"),
                    disk_chunks=r.get("disk_chunks"))
    except Exception:
        return None


def compare(binary, workdirs, extra_args, strict, timeout, jobs):
    help_text = _simulate_help(binary)
    if "--max-num-batched-tokens" not in help_text:
        print(f"note: {binary} simulate has no --max-num-batched-tokens; LMCache's side used "
              "the value in each summary (chunked prefill stores per step)")
    failures = []
    shown = set()
    per_request_missing = False
    for wl, wdir in workdirs:
        summs = json.load(open(wdir / "summary.json"))["cells"]
        lm_rows = {}
        for s in summs:
            with open(wdir / f"{s['cell']}.jsonl") as f:
                lm_rows[s["cell"]] = [json.loads(l) for l in f if l.strip()]
        with ThreadPoolExecutor(max_workers=jobs) as ex:
            outs = list(ex.map(lambda s: run_ours(binary, wdir, s, extra_args, help_text, timeout),
                               summs))
        print(f"\n== {wl}: LMCache {summs[0]['lmcache_version']} vs {binary} "
              f"({summs[0]['requests']} requests, {summs[0]['prompt_tokens']} prompt tokens, "
              f"max_num_batched_tokens {summs[0]['max_num_batched_tokens']})")
        print(f"{'cell':<28} {'chunks':>11} {'LMCache %':>10} {'ours %':>10} {'diff pts':>9} "
              f"{'equal/total':>12}")
        for s, (ours, agg, msg) in zip(summs, outs):
            P = s["prompt_tokens"]
            disk = bool(s.get("disk_gib"))
            lm_cpu = 100.0 * s["cpu_hit_tokens"] / P
            lm_disk = 100.0 * s["disk_hit_tokens"] / P
            chunks = f"{s['cpu_capacity_chunks']}" + (f"+{s['disk_capacity_chunks']}" if disk else "")
            if ours is None:
                per_request_missing = True
                o_cpu = o_disk = None
                if agg is not None and agg.get("cpu") is not None:
                    o_cpu = 100.0 * agg["cpu"] / P
                    o_disk = 100.0 * (agg.get("disk") or 0) / P
                eq = "n/a"
                if msg not in shown:
                    shown.add(msg)
                    print(f"  ! {msg}")
            else:
                rows = lm_rows[s["cell"]]
                oc = od = 0
                n_eq = 0
                missing = 0
                for r in rows:
                    o = ours.get(r["request_id"])
                    if o is None:
                        missing += 1
                        continue
                    c, d = int(o.get("cpu_hit_tokens", 0)), int(o.get("disk_hit_tokens", 0))
                    oc += c
                    od += d
                    if disk:
                        ok = c == r["cpu_hit_tokens"] and d == r["disk_hit_tokens"]
                    else:
                        ok = c == r["lmcache_hit_tokens"] and d == 0
                    n_eq += ok
                o_cpu, o_disk = 100.0 * oc / P, 100.0 * od / P
                eq = f"{n_eq}/{len(rows)}" + (f" ({missing} missing)" if missing else "")
                if n_eq < 0.99 * len(rows):
                    failures.append(f"{wl}/{s['cell']}: {n_eq}/{len(rows)} requests equal")
            for label, lm, o in ([("cpu", lm_cpu, o_cpu), ("disk", lm_disk, o_disk)] if disk
                                 else [("cpu", lm_cpu, o_cpu)]):
                diff = None if o is None else o - lm
                name = s["cell"] + (f" [{label}]" if disk else "")
                print(f"{name:<28} {chunks:>11} {lm:>10.3f} "
                      f"{('%.3f' % o) if o is not None else 'n/a':>10} "
                      f"{('%+.3f' % diff) if diff is not None else 'n/a':>9} {eq:>12}")
                if diff is None or abs(diff) > 0.05:
                    failures.append(f"{wl}/{s['cell']} [{label}]: LMCache {lm:.3f} % vs ours "
                                    f"{'n/a' if o is None else '%.3f %%' % o}")
            if agg is not None and agg.get("cpu_chunks") not in (None, s["cpu_capacity_chunks"]):
                print(f"  ! capacity: ours {agg['cpu_chunks']} CPU chunks, LMCache "
                      f"{s['cpu_capacity_chunks']}")
                failures.append(f"{wl}/{s['cell']}: capacity {agg['cpu_chunks']} vs "
                                f"{s['cpu_capacity_chunks']} chunks")
    if per_request_missing:
        print(f"\n!! {binary} rejects --per-request: per-request agreement not checked "
              "(aggregate shown where the JSON summary had it)")
    if failures:
        print(f"\n{len(failures)} check(s) outside tolerance (0.05 points, 99 % of requests):")
        for f_ in failures[:40]:
            print("  " + f_)
    else:
        print("\nall cells within 0.05 points and >= 99 % of requests equal")
    return 1 if (strict and failures) else 0


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def _print_lmcache_table(wl, summs):
    print(f"\n== {wl}: LMCache {summs[0]['lmcache_version']} "
          f"({summs[0]['requests']} requests, {summs[0]['prompt_tokens']} prompt tokens)")
    print(f"{'cell':<28} {'CPU chunks':>10} {'disk chunks':>11} {'CPU hit %':>10} {'disk hit %':>10} "
          f"{'trunc':>6}")
    for s in summs:
        print(f"{s['cell']:<28} {s['cpu_capacity_chunks']:>10} "
              f"{(s['disk_capacity_chunks'] if s['disk_capacity_chunks'] is not None else '-'):>11} "
              f"{100 * s['cpu_token_hit_ratio']:>10.3f} "
              f"{100 * s.get('disk_token_hit_ratio', 0.0):>10.3f} {s['truncated_stores']:>6}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=Path("outputs/lmcache_engine_check"))
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default")
    ap.add_argument("--seed", type=int, default=20261204)
    ap.add_argument("--workloads", help="comma separated (default: the preset's)")
    ap.add_argument("--policies", default="lru,lfu,fifo,mru")
    ap.add_argument("--sizes", help="CPU GiB, comma separated, for every workload "
                                    "(default: the preset's)")
    ap.add_argument("--disk-case", help="CPU_GIB:DISK_GIB for the disk cell (LRU), 'none' to skip "
                                        "(default: the preset's)")
    ap.add_argument("--disk-root", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where LocalDiskBackend writes its files (default /dev/shm)")
    ap.add_argument("--max-num-batched-tokens", type=int, default=8192,
                    help="vLLM chunked prefill budget: one store per step (default 8192)")
    ap.add_argument("--disk-io-threads", type=int, default=1,
                    help="LocalDiskBackend write threads (LMCache's default is 4; 1 makes the "
                         "disk's policy order follow submission order, i.e. deterministic)")
    ap.add_argument("--jobs", type=int, default=1, help="cells run in parallel (each holds its "
                                                         "CPU pool in RAM)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep LMCache outputs already in --out-dir when their parameters match")
    ap.add_argument("--no-chunks-per-gib", action="store_true")
    ap.add_argument("--compare", metavar="BIN", help="inferencelab binary to compare against")
    ap.add_argument("--compare-arg", action="append", default=[],
                    help="extra argument for `BIN simulate` (repeatable)")
    ap.add_argument("--compare-timeout", type=float, default=900.0)
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--_cell", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a._cell:
        run_cell(json.loads(a._cell))
        return 0

    preset = PRESETS[a.preset]
    workloads = a.workloads.split(",") if a.workloads else preset["workloads"]
    policies = [p.strip().lower() for p in a.policies.split(",") if p.strip()]
    a.out_dir.mkdir(parents=True, exist_ok=True)
    workdirs = []
    all_cells = []
    for wl in workloads:
        wdir = a.out_dir / wl if a.preset == "default" or len(workloads) > 1 else a.out_dir
        wdir.mkdir(parents=True, exist_ok=True)
        trace = wdir / "trace.jsonl"
        reqs = GENERATORS[wl](preset[wl], a.seed)
        write_trace(trace, reqs)
        sha = _sha256(trace)
        lens = [len(r.tokens) for r in reqs]
        print(f"{wl}: {len(reqs)} requests, {sum(lens)} prompt tokens, longest {max(lens)} "
              f"({math.ceil(max(lens) / CHUNK)} chunks), {len(set(r.conv for r in reqs))} "
              f"conversations -> {trace}")
        sizes = ([float(x) for x in a.sizes.split(",")] if a.sizes else preset["sizes"][wl])
        cells = [(p, s, None) for p in policies for s in sizes]
        dc = a.disk_case if a.disk_case is not None else \
            ":".join(gib_name(x) for x in preset["disk"][wl])
        if dc and dc != "none":
            c, d = (float(x) for x in dc.split(":"))
            cells.append(("lru", c, d))
        specs = []
        for (p, s, d) in cells:
            spec = dict(dir=str(wdir), policy=p, cpu_gib=s, disk_gib=d, disk_root=a.disk_root,
                        max_batched=a.max_num_batched_tokens, trace_sha256=sha,
                        disk_io_threads=a.disk_io_threads)
            specs.append(spec)
        workdirs.append((wl, wdir, specs))
        all_cells += specs

    def params_match(spec):
        f = Path(spec["dir"]) / f"{cell_name(spec['policy'], spec['cpu_gib'], spec['disk_gib'])}.summary.json"
        if not f.exists():
            return False
        s = json.load(open(f))
        return (s.get("trace_sha256") == spec["trace_sha256"]
                and s.get("max_num_batched_tokens") == spec["max_batched"]
                and (not spec["disk_gib"] or s.get("disk_io_threads") == spec["disk_io_threads"]))

    todo = [s for s in all_cells if not (a.reuse and params_match(s))]
    if todo:
        print(f"running {len(todo)} LMCache cell(s) ({len(all_cells) - len(todo)} reused), "
              f"{a.jobs} at a time")

    def launch(spec):
        t = time.time()
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--_cell", json.dumps(spec)],
                           capture_output=True, text=True)
        name = cell_name(spec["policy"], spec["cpu_gib"], spec["disk_gib"])
        if p.returncode != 0:
            tail = "\n".join((p.stderr or "").strip().splitlines()[-15:])
            raise SystemExit(f"cell {name} failed (rc {p.returncode}):\n{tail}")
        print(f"  {Path(spec['dir']).name}/{name}: {time.time() - t:.1f} s", flush=True)

    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        list(ex.map(launch, todo))

    for wl, wdir, specs in workdirs:
        summs = []
        for spec in specs:
            name = cell_name(spec["policy"], spec["cpu_gib"], spec["disk_gib"])
            summs.append(json.load(open(wdir / f"{name}.summary.json")))
        # keep the cells of earlier runs on the same trace and parameters (partial re-runs)
        if (wdir / "summary.json").exists():
            have = {s["cell"] for s in summs}
            for s in json.load(open(wdir / "summary.json")).get("cells", []):
                if (s["cell"] not in have and s.get("trace_sha256") == summs[0]["trace_sha256"]
                        and s.get("max_num_batched_tokens") == summs[0]["max_num_batched_tokens"]
                        and (wdir / f"{s['cell']}.jsonl").exists()):
                    summs.append(s)
            summs.sort(key=lambda s: (s.get("disk_gib") is not None,
                                      ["lru", "lfu", "fifo", "mru"].index(s["policy"])
                                      if s["policy"] in ("lru", "lfu", "fifo", "mru") else 9,
                                      s["cpu_gib"]))
        with open(wdir / "summary.json", "w") as f:
            json.dump(dict(lmcache_version=summs[0]["lmcache_version"], workload=wl,
                           seed=a.seed, preset=a.preset, cells=summs), f, indent=1, sort_keys=True)
            f.write("\n")
        _print_lmcache_table(wl, summs)

    if not a.no_chunks_per_gib:
        cpg_file = a.out_dir / "chunks_per_gib.json"
        if not (a.reuse and cpg_file.exists()):
            p = subprocess.run([sys.executable, "-c",
                                "import json,sys; sys.path.insert(0, %r); import lmcache_engine_check as m; "
                                "print(json.dumps(m.chunks_per_gib()))" % os.path.dirname(os.path.abspath(__file__))],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise SystemExit("chunks per GiB failed:\n" + p.stderr[-2000:])
            cpg = json.loads(p.stdout.strip().splitlines()[-1])
            with open(cpg_file, "w") as f:
                json.dump(cpg, f, indent=1, sort_keys=True)
                f.write("\n")
        cpg = json.load(open(cpg_file))
        print(f"\nLMCache {cpg['lmcache_version']} chunks per GiB (chunk {CHUNK} tokens, from the "
              f"allocator):")
        for r in cpg["rows"]:
            print(f"  {r['model']:<17} TP {r['tp']}  mla={str(r['use_mla']):<5} kv_shape "
                  f"{tuple(r['kv_shape'])}  {r['chunk_bytes_aligned']:>9} B/chunk  "
                  f"{r['chunks_per_gib']:>4} chunks/GiB (calculate_chunk_budget "
                  f"{r['calculate_chunk_budget']})")

    if a.compare:
        return compare(a.compare, [(wl, wdir) for wl, wdir, _ in workdirs], a.compare_arg,
                       a.strict, a.compare_timeout, max(1, a.jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
