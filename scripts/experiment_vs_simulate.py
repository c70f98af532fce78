#!/usr/bin/env python3
"""Each point of an `inferencelab experiment` run against `inferencelab simulate` on its own log.

    scripts/experiment_vs_simulate.py EXPERIMENT_DIR [--block-size 32] [--bin target/debug/inferencelab]

For every ok row of EXPERIMENT_DIR/points*.jsonl without LMCache and with a
`num_gpu_blocks_override` (the runner's record says both), it prints vLLM's own counters
(`vllm:prefix_cache_hits_total` / `vllm:prefix_cache_queries_total` from the point's
`metrics_final.prom`, and `vllm:num_preemptions_total` next to simulate's count), the sum of the per-request
`cached_tokens` the bench recorded (`usage.prompt_tokens_details`), and simulate's figure on the
server log (`--schedule trace --gpu-blocks N --block-size B --no-cpu-tier`, N as given to vLLM:
simulate takes the null block off itself), then how many requests simulate predicts to the token
(joined on the response id, `chatcmpl-<bench id>`). Nothing is fitted: simulate reads only the
log's prompt and output token ids and their times.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile


def counter(prom, name):
    m = re.search(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.e+]+)$", prom, re.M)
    return float(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("experiment_dir")
    ap.add_argument("--block-size", type=int, default=32)
    ap.add_argument("--bin", default=os.environ.get("INFERENCELAB_BIN", "target/debug/inferencelab"))
    a = ap.parse_args()
    rows = {}
    for f in sorted(glob.glob(os.path.join(a.experiment_dir, "points*.jsonl"))):
        for line in open(f):
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("status") == "ok":
                rows[r["point"]["stem"]] = r
    if not rows:
        sys.exit(f"{a.experiment_dir}: no ok point in points*.jsonl")
    print(f"{'point':<40} {'vLLM hits/queries':>18} {'vLLM %':>7} {'preemptions vLLM/sim':>20} "
          f"{'sum cached':>10} {'simulate':>13} {'sim %':>7} {'requests exact':>14}")
    worst = 0
    for stem, r in sorted(rows.items(), key=lambda kv: kv[1]["point"]["index"]):
        p = r["point"]
        n = p.get("num_gpu_blocks_override")
        if p.get("lmcache") or n is None:
            print(f"{stem:<40} skipped: needs no LMCache and a num_gpu_blocks_override")
            continue
        bench_dir = r["bench_dir"]
        prom = open(os.path.join(bench_dir, "metrics_final.prom")).read()
        hits = counter(prom, "vllm:prefix_cache_hits_total")
        queries = counter(prom, "vllm:prefix_cache_queries_total")
        preempt = counter(prom, "vllm:num_preemptions_total")
        bench = [json.loads(l) for l in open(os.path.join(bench_dir, "requests.jsonl"))]
        with tempfile.TemporaryDirectory() as tmp:
            per = os.path.join(tmp, "per_request.jsonl")
            subprocess.run(
                [a.bin, "simulate", "--input-file", r["server_log"], "--block-size",
                 str(a.block_size), "--gpu-blocks", str(n), "--no-cpu-tier", "--schedule",
                 "trace", "--per-request", per, "--quiet", "--output",
                 os.path.join(tmp, "summary.json")],
                check=True, stdout=subprocess.DEVNULL)
            sim = {s["request_id"]: s for s in map(json.loads, open(per))}
        sim_hits = sum(s["gpu_hit_tokens"] for s in sim.values())
        sim_prompt = sum(s["prompt_tokens"] for s in sim.values())
        sim_preempt = sum(s.get("preemptions", 0) for s in sim.values())
        exact = sum(1 for b in bench
                    if b.get("success") and b["response_id"] in sim
                    and sim[b["response_id"]]["gpu_hit_tokens"] == b["cached_tokens"])
        ok = sum(1 for b in bench if b.get("success"))
        print(f"{stem:<40} {f'{hits:.0f}/{queries:.0f}':>18} {100 * hits / queries:>6.2f}% "
              f"{f'{preempt:.0f}/{sim_preempt}':>20} {sum(b['cached_tokens'] or 0 for b in bench):>10} "
              f"{f'{sim_hits}/{sim_prompt}':>13} {100 * sim_hits / sim_prompt:>6.2f}% "
              f"{f'{exact}/{ok}':>14}")
        worst = max(worst, ok - exact, abs(sim_hits - hits))
    sys.exit(1 if worst else 0)


if __name__ == "__main__":
    main()
