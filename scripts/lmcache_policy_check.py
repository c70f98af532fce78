#!/usr/bin/env python3
"""The Python `conversation_aware` (python/lmcache_policy/) against LMCache's own LRU, through
LMCache 0.5.6's REAL storage classes (issue 17).

Reuses scripts/lmcache_engine_check.py: its workloads (chat and agentic, the `default` preset and
seed, so the traces are the ones its grid runs) and its `Driver` (LMCache's StorageManager /
LocalCPUBackend called in the order the engine and the vLLM connector do, one request at a time,
vLLM's GPU prefix cache off). Per workload and CPU size it runs:

  lru       LMCache's own LRUCachePolicy
  defaults  conversation_aware with configs/scorer_default.yaml (adaptive: the shadows' judge)
  alone     the same YAML with `adaptive: false` (the prediction alone)

(`--workloads toy` adds python/lmcache_policy/test_lmcache_policy.py's small workload.) It prints
the token hit ratio of each, the infinite cache's (every full chunk ever stored kept; computed
here without LMCache: leading chunks seen before, minus the recomputed last token of a
full-prompt hit), the judge's counters (evictions decided by the prediction / by LRU), and two
diagnoses that use what the harness knows and the policy does not (each request's chunk chain):
the shadows' hits counted per chunk held (whatever its parent) and per leading run (as LMCache
serves them: a request's referenced chunks in prompt order up to the shadow's first miss), and
the mean share of resident chunks LMCache cannot serve (an earlier chunk of their prompt
evicted). The harness only observes: hits are those of LMCache's own classes. Deterministic: the
policy's `clock` is the trace's time (the trace spaces requests 100 s apart, `t` in
trace.jsonl) instead of wall-clock time, and each cell runs in a fresh process with
PYTHONHASHSEED=0 (the shadows' sample hash).

    /work/venvs/lmcache/bin/python scripts/lmcache_policy_check.py \
        [--workloads chat,agentic,toy] [--sizes 0.5,1,2,4] [--jobs 2] [--out-dir outputs/lmcache_policy_check]

Writes --out-dir/<workload>/trace.jsonl, one <variant>-<gib>.json per cell (totals, counters,
per-request hits) and --out-dir/summary.json (all cells).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "python" / "lmcache_policy"))

import lmcache_engine_check as lec  # noqa: E402

VARIANTS = ("lru", "defaults", "alone")


def gen_toy(_preset, _seed):
    """python/lmcache_policy/test_lmcache_policy.py's workload (24 conversations of 6 turns, each
    round visits every conversation: LRU's loop), 100 s apart as in the other traces."""
    import test_lmcache_policy as t

    return [lec.Req(rid, 0, 0, toks, 0, float(i * 100)) for i, (rid, toks) in enumerate(t.workload())]


GENERATORS = dict(lec.GENERATORS, toy=gen_toy)


def infinite_hits(reqs):
    """Token hits of an infinite LMCache: a request hits its leading full chunks stored by any
    earlier request (chunk keys are prefix-chained: a chunk is identified by all tokens up to its
    end), minus the last token when the whole prompt hits (vllm_v1_adapter.py:1453-1455)."""
    C = lec.CHUNK
    seen = set()
    hits = 0
    for r in reqs:
        P = len(r.tokens)
        n_full = P // C
        keys = [hash(tuple(r.tokens[: (i + 1) * C])) for i in range(n_full)]
        h = 0
        for k in keys:
            if k not in seen:
                break
            h += C
        if h == P and P > 0:
            h -= 1
        hits += h
        seen.update(keys)
    return hits


def run_cell(cell):
    """One (workload, variant, CPU size) in this process; writes its JSON."""
    import inferencelab_cache_policy as icp

    t0 = time.time()
    wdir = Path(cell["dir"])
    reqs = lec.read_trace(wdir / "trace.jsonl")
    variant = cell["variant"]
    if variant == "lru":
        policy = "lru"
    else:
        icp.register()
        policy = "conversation_aware"
        cfg = Path(cell["config"]).read_text()
        if variant == "alone":
            cfg += "\nadaptive: false\n"
        f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        f.write(cfg)
        f.close()
        os.environ["INFERENCELAB_SCORER_CONFIG"] = f.name
    drv = lec.Driver(policy, cell["cpu_gib"], None, None, cell["max_batched"])
    pol = drv.cpu.cache_policy
    now = [0.0]
    if variant != "lru":
        assert isinstance(pol, icp.ConversationAwareCachePolicy), type(pol)
        pol.clock = lambda: now[0]  # the trace's time, not wall-clock time
    # Diagnosis, from the harness's knowledge of each request's chunk chain (LMCache's interface
    # gives the policy only keys): a chunk's parent is the chunk before it in the prompt.
    parent = {}
    hot = drv.cpu.hot_cache
    unreachable = []  # per request: share of resident chunks LMCache cannot serve (an ancestor out)
    refs = []  # the shadows' references of the current request: (key, in LRU's, in the prediction's)
    shadow = dict(lru_chunk=0, pred_chunk=0, lru_run=0, pred_run=0)
    if variant != "lru":
        judge_reference = pol._shadow_reference

        def recording_reference(key, t):
            refs.append((key, key in pol.shadow_lru, key in pol.shadow_predicted))
            judge_reference(key, t)

        pol._shadow_reference = recording_reference
    rows = []
    try:
        for r in reqs:
            now[0] = float(r.at)
            keys = [k for s, e, k in drv.tdb.process_tokens(r.tokens) if e - s == lec.CHUNK]
            for i in range(1, len(keys)):
                parent[keys[i]] = keys[i - 1]
            refs.clear()
            res = drv.run_request(r.rid, r.tokens)
            drv.check_no_pins()
            rows.append(res["lmcache_hit_tokens"])
            memo = {}

            def servable(k):
                if k not in memo:
                    p = parent.get(k)
                    memo[k] = p is None or (p in hot and servable(p))
                return memo[k]

            if hot:
                unreachable.append(sum(1 for k in hot if not servable(k)) / len(hot))
            if variant != "lru" and pol.shadow_capacity:
                # per chunk held (whatever its parent) and per leading run (what LMCache serves: a
                # request's referenced chunks in prompt order, up to the shadow's first miss)
                pos = {k: i for i, k in enumerate(keys)}
                ordered = sorted((pos[k], lh, ph) for k, lh, ph in refs if k in pos)
                for name, idx in (("lru", 1), ("pred", 2)):
                    shadow[f"{name}_chunk"] += sum(x[idx] for x in ordered)
                    alive = True
                    for x in ordered:
                        alive = alive and x[idx]
                        shadow[f"{name}_run"] += alive
    finally:
        drv.close()
    prompt = sum(len(r.tokens) for r in reqs)
    out = dict(workload=wdir.name, variant=variant, cpu_gib=cell["cpu_gib"],
               cpu_chunks=drv.cpu_chunks, requests=len(reqs), prompt_tokens=prompt,
               hit_tokens=sum(rows), token_hit_ratio=sum(rows) / prompt,
               max_num_batched_tokens=cell["max_batched"],
               mean_unreachable_resident=sum(unreachable) / max(len(unreachable), 1),
               per_request_hit_tokens=rows,
               seconds=round(time.time() - t0, 1))
    if variant != "lru":
        out.update(decided_by_prediction=pol.decided_by_prediction,
                   decided_by_lru=pol.decided_by_lru, shadow_lru_hits=pol.lru_hits,
                   shadow_predicted_hits=pol.predicted_hits, shadow_capacity=pol.shadow_capacity,
                   sampling_rate=pol.rate, config=cell["config"],
                   shadow_hits_after_first_eviction=shadow)
    with open(wdir / f"{variant}-{lec.gib_name(cell['cpu_gib'])}.json", "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", type=Path, default=Path("outputs/lmcache_policy_check"))
    ap.add_argument("--seed", type=int, default=20261204,
                    help="workload seed (default: lmcache_engine_check.py's)")
    ap.add_argument("--workloads", default="chat,agentic,toy")
    ap.add_argument("--sizes", default="0.5,1,2,4", help="CPU GiB, comma separated")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--config", default=str(REPO / "configs" / "scorer_default.yaml"),
                    help="scorer YAML of `defaults` (and of `alone`, plus adaptive: false)")
    ap.add_argument("--max-num-batched-tokens", type=int, default=8192)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--_cell", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._cell:
        run_cell(json.loads(a._cell))
        return 0

    preset = lec.PRESETS["default"]
    variants = [v for v in a.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"--variants: unknown '{v}' (one of {', '.join(VARIANTS)})")
    sizes = [float(x) for x in a.sizes.split(",")]
    specs, infinite = [], {}
    for wl in a.workloads.split(","):
        wdir = a.out_dir / wl
        wdir.mkdir(parents=True, exist_ok=True)
        reqs = GENERATORS[wl](preset.get(wl), a.seed)
        lec.write_trace(wdir / "trace.jsonl", reqs)
        prompt = sum(len(r.tokens) for r in reqs)
        infinite[wl] = infinite_hits(reqs) / prompt
        print(f"{wl}: {len(reqs)} requests, {prompt} prompt tokens, infinite cache "
              f"{100 * infinite[wl]:.2f} %", flush=True)
        for s in sizes:
            for v in variants:
                specs.append(dict(dir=str(wdir), variant=v, cpu_gib=s, config=a.config,
                                  max_batched=a.max_num_batched_tokens))

    env = dict(os.environ, PYTHONHASHSEED="0")

    def launch(spec):
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--_cell", json.dumps(spec)],
                           capture_output=True, text=True, env=env)
        name = f"{Path(spec['dir']).name}/{spec['variant']}-{lec.gib_name(spec['cpu_gib'])}"
        if p.returncode != 0:
            tail = "\n".join((p.stderr or "").strip().splitlines()[-15:])
            raise SystemExit(f"cell {name} failed (rc {p.returncode}):\n{tail}")
        out = json.load(open(Path(spec["dir"]) / f"{spec['variant']}-{lec.gib_name(spec['cpu_gib'])}.json"))
        print(f"  {name}: {100 * out['token_hit_ratio']:.3f} % ({out['seconds']} s)", flush=True)
        return out

    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        cells = list(ex.map(launch, specs))

    by = {(c["workload"], c["cpu_gib"], c["variant"]): c for c in cells}
    print(f"\ntoken hit ratio % (LMCache {lec._lmcache_version()}, config {a.config}, "
          f"seed {a.seed}); judge: evictions of the defaults decided by the prediction / by LRU "
          f"where the two differ; shadows (defaults, from the first eviction on): hits of LRU's / "
          f"the prediction's per chunk held and per leading run (what LMCache "
          f"serves); dead: mean % of resident chunks LMCache cannot serve (an ancestor evicted), "
          f"LRU / alone")
    print(f"{'workload':<8} {'GiB':>4} {'chunks':>6} {'inf':>6} {'LRU':>7} {'defaults':>8} "
          f"{'d-LRU':>6} {'alone':>7} {'a-LRU':>6} {'judge':>9} {'per chunk':>10} "
          f"{'lead run':>10} {'dead':>9}")
    for wl in a.workloads.split(","):
        for s in sizes:
            row = {v: by.get((wl, s, v)) for v in VARIANTS}
            anyc = next(c for c in row.values() if c)
            f = lambda c: f"{100 * c['token_hit_ratio']:.3f}" if c else "-"
            d = lambda c: (f"{100 * (c['token_hit_ratio'] - row['lru']['token_hit_ratio']):+.2f}"
                           if c and row["lru"] else "-")
            dj = row["defaults"]
            judge = f"{dj['decided_by_prediction']}/{dj['decided_by_lru']}" if dj else "-"
            sh = dj["shadow_hits_after_first_eviction"] if dj else None
            chunk = f"{sh['lru_chunk']}/{sh['pred_chunk']}" if sh else "-"
            run = f"{sh['lru_run']}/{sh['pred_run']}" if sh else "-"
            dead = "/".join(f"{100 * row[v]['mean_unreachable_resident']:.0f}" if row[v] else "-"
                            for v in ("lru", "alone"))
            print(f"{wl:<8} {lec.gib_name(s):>4} {anyc['cpu_chunks']:>6} "
                  f"{100 * infinite[wl]:>6.2f} {f(row['lru']):>7} {f(row['defaults']):>8} "
                  f"{d(row['defaults']):>6} {f(row['alone']):>7} {d(row['alone']):>6} "
                  f"{judge:>9} {chunk:>10} {run:>10} {dead:>9}")
    with open(a.out_dir / "summary.json", "w") as fh:
        json.dump(dict(lmcache_version=lec._lmcache_version(), seed=a.seed, config=a.config,
                       infinite_token_hit_ratio=infinite,
                       cells=[{k: v for k, v in c.items() if k != "per_request_hit_tokens"}
                              for c in cells]), fh, indent=1)
        fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
