#!/usr/bin/env python3
"""vLLM V1's block pool replayed on the step order a real run shows (a diagnostic for
scripts/real_vllm_check.sh: where `simulate` and vLLM disagree per request, is it the rules or
the timeline?).

    python3 scripts/real_vllm_step_replay.py /tmp/realcheck/blocks385 385             # client stamps
    python3 scripts/real_vllm_step_replay.py /tmp/realcheck/blocks385 385 --log-steps # the log alone

DIR is one capacity's directory of scripts/real_vllm_check.sh (server.log, bench/requests.jsonl);
NUM_GPU_BLOCKS is vLLM's (block 0 is the null block). Prompt and output token ids come from the
server log. The engine steps come either from the client (default: every token's arrival,
send + ttft + itls, sub-millisecond; arrivals closer than --gap s belong to one step) or from
the log alone (--log-steps: the `(streaming delta)` lines, one per token, in file order; a step
ends where a request shows up a second time, since a request gets at most one token per step).

Per step, in vLLM's order (sync scheduler, vLLM 0.32 `v1/core/sched/scheduler.py`,
`kv_cache_manager.py`, `block_pool.py`): running requests (admission order) get the slot of the
token they compute, a new block when it starts one; then requests whose first token the step
made are admitted: the leading run of cached full blocks (at most n - 1 tokens) is touched, the
rest of the prompt allocated from the head of the free queue (a cached block there is evicted),
full blocks cached when scheduled; then requests whose last token the step made are freed chain
tail first (hashed blocks to the tail of the free queue, unhashed ones to the head). The last
sampled token is never computed. Not modelled: preemption, chunked prefill (every prompt here
fits the 2048-token budget), admission control (the real admission step is given).
Prints the number of requests whose replayed hit equals vLLM's `cached_tokens`.
"""
import argparse
import json
import re
from collections import OrderedDict

B = 32
ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("num_gpu_blocks", type=int)
ap.add_argument("--log-steps", action="store_true")
ap.add_argument("--gap", type=float, default=0.004)
args = ap.parse_args()
d = args.dir

prompt_re = re.compile(r"Request (\S+) details: prompt: .*prompt_token_ids: \[([0-9, ]*)\]")
delta_re = re.compile(
    r"Generated response (\S+) \(streaming delta\) details: output_token_ids: \[([0-9, ]*)\]")
prompts, outputs, log_events = {}, {}, []
seen, step_no = set(), 0
for line in open(f"{d}/server.log", errors="replace"):
    m = prompt_re.search(line)
    if m:
        prompts[m.group(1)] = [int(x) for x in m.group(2).split(",") if x.strip()]
        continue
    m = delta_re.search(line)
    if m:
        rid = m.group(1)
        ids = [int(x) for x in m.group(2).split(",") if x.strip()]
        outputs.setdefault(rid, []).extend(ids)
        if rid in seen:
            step_no += 1
            seen = set()
        seen.add(rid)
        log_events.append((step_no, rid, len(outputs[rid])))
recs = [json.loads(line) for line in open(f"{d}/bench/requests.jsonl")]

if args.log_steps:
    steps = {}
    for s, rid, k in log_events:
        steps.setdefault(s, []).append((rid, k))
    steps = [steps[s] for s in sorted(steps)]
else:
    events = []
    for r in recs:
        t = r["send_unix_s"] + r["ttft_s"]
        times = [t]
        for g in r["itl_s"]:
            t += g
            times.append(t)
        assert len(times) == len(outputs[r["response_id"]]), r["response_id"]
        events += [(tk, r["response_id"], k) for k, tk in enumerate(times, 1)]
    events.sort()
    steps, last = [], None
    for t, rid, k in events:
        if last is None or t - last > args.gap:
            steps.append([])
        steps[-1].append((rid, k))
        last = t

n_blocks = args.num_gpu_blocks
free = OrderedDict((b, None) for b in range(1, n_blocks))  # head = next to allocate
ref = [0] * n_blocks
block_hash = [None] * n_blocks
cached = {}
held, cached_tokens, running = {}, {}, []


def alloc():
    b, _ = free.popitem(last=False)
    if block_hash[b] is not None:
        del cached[block_hash[b]]
        block_hash[b] = None
    ref[b] = 1
    return b


def cache_full_blocks(rid, upto):
    toks = prompts[rid] + outputs[rid]
    for j in range(upto // B):
        h = tuple(toks[: (j + 1) * B])
        b = held[rid][j]
        if block_hash[b] is None and h not in cached:
            block_hash[b] = h
            cached[h] = b


for step in steps:
    k_of = dict(step)
    for rid in running:  # decode: the step that samples token k computes token k - 1
        k = k_of.get(rid)
        if k is None or k < 2:
            continue
        pos = len(prompts[rid]) + k - 1
        while len(held[rid]) * B < pos:
            held[rid].append(alloc())
        cache_full_blocks(rid, pos)
    for rid, k in step:  # admissions
        if k != 1:
            continue
        toks = prompts[rid]
        hits = []
        for j in range((len(toks) - 1) // B):
            h = tuple(toks[: (j + 1) * B])
            if h not in cached:
                break
            hits.append(cached[h])
        for b in hits:
            if ref[b] == 0:
                del free[b]
            ref[b] += 1
        held[rid] = hits
        cached_tokens[rid] = len(hits) * B
        while len(held[rid]) * B < len(toks):
            held[rid].append(alloc())
        cache_full_blocks(rid, len(toks))
        running.append(rid)
    for rid, k in step:  # finished: freed chain tail first
        if k != len(outputs[rid]):
            continue
        for b in reversed(held.pop(rid)):
            ref[b] -= 1
            if ref[b] == 0:
                free[b] = None
                if block_hash[b] is None:
                    free.move_to_end(b, last=False)
        running.remove(rid)

off = [r for r in recs if cached_tokens[r["response_id"]] != r["cached_tokens"]]
print(f"{len(steps)} steps; {len(recs) - len(off)} of {len(recs)} requests' hits equal vLLM's "
      f"cached_tokens; hits {sum(cached_tokens.values())} vs vLLM's {sum(r['cached_tokens'] for r in recs)}")
for r in off:
    print(f"  {r['response_id']}: vLLM {r['cached_tokens']}, replay {cached_tokens[r['response_id']]}")
