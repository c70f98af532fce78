#!/usr/bin/env python3
"""vllm-router's kv_aware against the emulator's caches (issue 21; docs/replicas.md).

Two steps of scripts/kv_aware_check.sh:

  capture ENDPOINT... --out FILE   subscribe to every replica's KV events (vLLM's ZMQ wire format:
                                   [topic, seq as 8 bytes big-endian, msgpack KVEventBatch]) and
                                   write one JSON line per batch until SIGTERM:
                                   {"r": replica, "seq": n, "ts": stamp, "ev": [...]} with
                                   ["S", block_hashes, parent_block_hash, token_ids] for BlockStored,
                                   ["R", block_hashes] for BlockRemoved, ["C"] for AllBlocksCleared.
                                   Needs pyzmq and msgspec (e.g. /work/venvs/vllm/bin/python).
  analyze DIR                      read DIR/events.jsonl, the replicas' logs DIR/replica*.log and the
                                   router's debug log DIR/router.out; write DIR/requests.jsonl and
                                   DIR/summary.json and print the figures. Standard library only.

The oracle: each replica's GPU prefix cache as its events say, replayed up to the moment the
request reached its replica (its `Received request` stamp, on the same emulated clock as the
batches' stamps). A request's prefix on a replica = the longest run of its 16-token blocks from
block 0 held there, at most (prompt tokens - 1) / 16 blocks (vLLM never hits the last token; the
router credits the same). A request "lands right" when its replica's prefix is the longest of
all replicas' (ties included: with nothing cached anywhere every replica is right). Every other
request is an exception, printed with what explains it:
  load         the router's cost, (new prefill tokens + in-flight prefill tokens) x (requests in
               flight + 1), is no higher on the chosen replica than on every replica holding a
               longer prefix: load outweighed the prefix. In flight: requests the router sent there
               before this one (its decision lines' order) that had not finished when this one
               arrived. Their prefill tokens still counted (before their first token) are not in
               the logs: the rule holds with none of them counted, or with all (the new prefill
               tokens of the router's decision line);
  fresh        the blocks that made the longer prefix (or the removals that shortened the chosen
               one) were published less than FRESH_MS (emulated) before the arrival: stored after
               the router's decision, or not yet received by it (its subscriber polls every 10 ms);
  unexplained  neither.
The router's debug line for each request (matched by replica and prompt length, in order) gives
its credited prefix on the replica it chose; where it differs from the events' at arrival, the
view was `stale` when the blocks in between were stored or removed less than FRESH_MS before the
arrival, else `unexplained`. Ties on a fleet idle for the router must fit one worker order (the
router takes the first of the cheapest in its own order).
"""
import datetime
import glob
import json
import os
import re
import signal
import sys

BLOCK = 16
FRESH_MS = 100.0


def capture(endpoints, out):
    import msgspec
    import zmq

    ctx = zmq.Context()
    poller = zmq.Poller()
    socks = {}
    for k, ep in enumerate(endpoints):
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.RCVHWM, 0)
        s.connect(ep)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        poller.register(s, zmq.POLLIN)
        socks[s] = k
    dec = msgspec.msgpack.Decoder()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with open(out, "w") as f:
        print("subscribed", flush=True)
        while not stop:
            for s, _ in poller.poll(100):
                topic, seq, payload = s.recv_multipart()
                batch = dec.decode(payload)
                evs = []
                for e in batch[1]:
                    t = e["type"] if isinstance(e, dict) else e[0]
                    if t == "BlockStored":
                        evs.append(["S", e["block_hashes"], e.get("parent_block_hash"), e["token_ids"]])
                    elif t == "BlockRemoved":
                        evs.append(["R", e["block_hashes"]])
                    else:
                        evs.append(["C"])
                f.write(json.dumps({"r": socks[s], "seq": int.from_bytes(seq, "big"),
                                    "ts": batch[0], "ev": evs}) + "\n")
            f.flush()


STAMP = re.compile(r"(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d(?:\.\d+)?) \[")
RECEIVED = re.compile(r"Received request ((?:chatcmpl|cmpl)-\S+?):")
DETAILS = re.compile(r"Request ((?:chatcmpl|cmpl)-\S+) details: .*prompt_token_ids: \[([0-9, ]*)\]")
FINISHED = re.compile(r"Generated response ((?:chatcmpl|cmpl)-[^\s:]+)(?: \(streaming complete\))?: output: ")
INDEX = re.compile(r"bench-[0-9a-f]+-(\d+)$")
DECISION = re.compile(r'KV prefix decision outcome="([a-z_]+)" worker="([^"]+)" input_tokens=(\d+) '
                      r'new_prefill_tokens=(\d+) credited_prefix_tokens=(\d+)')
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def stamp_seconds(m, year):
    mo, d, h, mi, s = m.groups()
    base = datetime.datetime(year, int(mo), int(d), int(h), int(mi), tzinfo=datetime.timezone.utc)
    return base.timestamp() + float(s)


def read_logs(d, urls, year):
    """Every request: id, replica, arrival and finish stamps, prompt token ids."""
    reqs = {}
    for k in range(len(urls)):
        name = "replica.log" if k == 0 else f"replica.replica{k}.log"
        for line in open(os.path.join(d, name)):
            if "-probe-" in line:
                continue
            m = STAMP.search(line)
            t = stamp_seconds(m, year) if m else None
            if (x := RECEIVED.search(line)):
                reqs.setdefault(x.group(1), {})
                reqs[x.group(1)].update(id=x.group(1), replica=k, arrival=t)
            elif (x := DETAILS.search(line)):
                reqs.setdefault(x.group(1), {})["tokens"] = [int(v) for v in x.group(2).split(",") if v.strip()]
            elif (x := FINISHED.search(line)):
                reqs.setdefault(x.group(1), {})["finish"] = t
    out = [r for r in reqs.values() if "replica" in r and "tokens" in r]
    for r in out:
        m = INDEX.search(r["id"])
        r["index"] = int(m.group(1)) if m else -1
    out.sort(key=lambda r: (r["arrival"], r["index"]))
    return out


class Oracle:
    """Every replica's cached blocks, replayed from the events; blocks are nodes of one trie of
    token blocks (parent node, 16 token ids), so a prompt's prefix is walked without the
    emulator's hash function."""

    def __init__(self, replicas):
        self.trie = {}          # (parent node, tokens) -> node
        self.node_of = {}       # block hash -> node
        self.held = [dict() for _ in range(replicas)]   # node -> stamp of its store
        self.removed_at = [dict() for _ in range(replicas)]  # node -> stamp of its removal
        self.unplaced = 0

    def apply(self, b):
        r, ts = b["r"], b["ts"]
        for e in b["ev"]:
            if e[0] == "S":
                _, hashes, parent, tokens = e
                node = self.node_of.get(parent) if parent is not None else 0
                if parent is not None and node is None:
                    self.unplaced += len(hashes)
                    continue
                for i, h in enumerate(hashes):
                    key = (node, tuple(tokens[i * BLOCK:(i + 1) * BLOCK]))
                    node = self.trie.setdefault(key, len(self.trie) + 1)
                    self.node_of[h] = node
                    self.held[r][node] = ts
            elif e[0] == "R":
                for h in e[1]:
                    node = self.node_of.get(h)
                    if node is not None and self.held[r].pop(node, None) is not None:
                        self.removed_at[r][node] = ts
            else:
                for node in self.held[r]:
                    self.removed_at[r][node] = ts
                self.held[r].clear()

    def path(self, tokens):
        nodes, node = [], 0
        for i in range((len(tokens) - 1) // BLOCK):
            node = self.trie.get((node, tuple(tokens[i * BLOCK:(i + 1) * BLOCK])))
            if node is None:
                break
            nodes.append(node)
        return nodes

    def prefix(self, r, nodes):
        n = 0
        for node in nodes:
            if node not in self.held[r]:
                break
            n += 1
        return n


def analyze(d):
    urls = open(os.path.join(d, "worker_urls.txt")).read().split()
    batches = [json.loads(l) for l in open(os.path.join(d, "events.jsonl"))]
    batches.sort(key=lambda b: (b["ts"], b["r"], b["seq"]))
    year = datetime.datetime.fromtimestamp(batches[0]["ts"], datetime.timezone.utc).year if batches else 2000
    gaps = {}
    for k in range(len(urls)):
        seqs = sorted(b["seq"] for b in batches if b["r"] == k)
        gaps[k] = {"batches": len(seqs), "first_seq": seqs[0] if seqs else None,
                   "missing": (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0}
    reqs = read_logs(d, urls, year)
    decisions = []
    if os.path.exists(os.path.join(d, "router.out")):
        for line in open(os.path.join(d, "router.out"), errors="replace"):
            m = DECISION.search(ANSI.sub("", line))
            if m:
                decisions.append({"outcome": m.group(1), "worker": m.group(2),
                                  "input_tokens": int(m.group(3)), "new_prefill": int(m.group(4)),
                                  "credited": int(m.group(5))})
    oracle = Oracle(len(urls))
    bi = 0
    rows, causes, used = [], {"load": 0, "fresh": 0, "unexplained": 0}, set()
    for i, r in enumerate(reqs):
        while bi < len(batches) and batches[bi]["ts"] < r["arrival"]:
            oracle.apply(batches[bi])
            bi += 1
        nodes = oracle.path(r["tokens"])
        pre = [oracle.prefix(k, nodes) for k in range(len(urls))]
        best = max(pre)
        chosen = r["replica"]
        row = {"index": r["index"], "id": r["id"], "replica": chosen, "arrival": r["arrival"],
               "finish": r.get("finish"), "prompt_tokens": len(r["tokens"]), "prefix_blocks": pre,
               "new_prefill": len(r["tokens"]) - BLOCK * pre[chosen], "decision": None,
               "right": pre[chosen] == best}
        # the router's decision line for this request: the next unused one within 3 places of
        # its arrival rank with its replica and prompt length (decisions made within a few ms
        # can reach the replicas in the other order)
        dec = next((j for j in range(max(0, i - 3), min(len(decisions), i + 4))
                    if j not in used and decisions[j]["worker"] == urls[chosen]
                    and decisions[j]["input_tokens"] == len(r["tokens"])), None)
        if dec is not None:
            used.add(dec)
            dl = decisions[dec]
            row["decision"] = dec
            # the router counts the new prefill tokens it computed while the request is in prefill
            row["new_prefill"] = dl["new_prefill"]
            row["router"] = {"worker": dl["worker"], "credited_tokens": dl["credited"],
                             "outcome": dl["outcome"], "matches": True}
            rb = dl["credited"] // BLOCK
            if dl["credited"] != BLOCK * pre[chosen]:
                # the router's view of the chosen replica differs from the events at arrival:
                # stale when the blocks in between were stored or removed just before
                lo, hi = min(rb, pre[chosen]), max(rb, pre[chosen])
                ts = [oracle.held[chosen].get(n, oracle.removed_at[chosen].get(n))
                      for n in nodes[lo:hi]]
                young = [(r["arrival"] - t) * 1e3 for t in ts if t is not None]
                stale = len(nodes) >= hi and young and min(young) < FRESH_MS
                row["router"]["view"] = "stale" if stale else "unexplained"
                row["router"]["youngest_ms"] = round(min(young), 1) if young else None
        if not row["right"]:
            longer = [k for k in range(len(urls)) if pre[k] > pre[chosen]]
            ages = []
            for k in longer:
                ages += [(r["arrival"] - oracle.held[k][n]) * 1e3 for n in nodes[pre[chosen]:pre[k]]]
            gone = [(r["arrival"] - oracle.removed_at[chosen][n]) * 1e3 for n in nodes[pre[chosen]:best]
                    if n in oracle.removed_at[chosen]]
            row["youngest_block_ms"] = round(min(ages + gone), 1) if ages + gone else None
        rows.append(row)
    # the router's cost per replica, with the requests in flight there when it decided: routed
    # before this one (in its decision order; in arrival order for a request without a decision
    # line) and not finished at this one's arrival. Their prefill tokens still counted by the
    # router (before their first token) are not in the logs: none of them (cost) or all of
    # them (cost_hi).
    def before(q, r):
        if q["decision"] is not None and r["decision"] is not None:
            return q["decision"] < r["decision"]
        return q["arrival"] < r["arrival"]
    for r in rows:
        chosen, pre, n_tok = r["replica"], r["prefix_blocks"], r["prompt_tokens"]
        busy = [[q for q in rows if q is not r and q["replica"] == k and before(q, r)
                 and (q["finish"] is None or q["finish"] > r["arrival"])] for k in range(len(urls))]
        inflight = [len(b) for b in busy]
        cost = [(n_tok - BLOCK * pre[k]) * (inflight[k] + 1) for k in range(len(urls))]
        cost_hi = [(n_tok - BLOCK * pre[k] + sum(q["new_prefill"] for q in busy[k])) * (inflight[k] + 1)
                   for k in range(len(urls))]
        r.update(in_flight=inflight, cost=cost, cost_hi=cost_hi,
                 cost_agrees=cost[chosen] == min(cost) or cost_hi[chosen] == min(cost_hi))
        if not r["right"]:
            longer = [k for k in range(len(urls)) if pre[k] > pre[chosen]]
            youngest = r["youngest_block_ms"]
            if all(cost[chosen] <= cost[k] for k in longer) or all(cost_hi[chosen] <= cost_hi[k] for k in longer):
                cause = "load"
            elif youngest is not None and youngest < FRESH_MS:
                cause = "fresh"
            else:
                cause = "unexplained"
            causes[cause] += 1
            r["cause"] = cause
    # ties: the router takes the first of the cheapest in its own worker order (fixed for a run,
    # not --worker-urls'). On an idle fleet (nothing in flight anywhere, no bound needed) every
    # tie says the chosen replica comes before the others tied with it; those constraints must
    # fit one order (no cycle). Idle for the router too: no request finished less than FRESH_MS
    # before (the router releases a request when its stream has passed through, after the
    # replica logged its end)
    after = {k: set() for k in range(len(urls))}
    ties = 0
    for r in rows:
        if any(r["in_flight"]) or not r["cost_agrees"] or any(
                q["finish"] is not None and 0 <= (r["arrival"] - q["finish"]) * 1e3 < FRESH_MS for q in rows):
            continue
        tied = [k for k in range(len(urls)) if r["cost"][k] == min(r["cost"])]
        if len(tied) > 1:
            ties += 1
            after[r["replica"]].update(k for k in tied if k != r["replica"])
    order, left = [], set(after)
    while left:
        first = sorted(k for k in left if not any(k in after[j] for j in left))
        if not first:
            break
        order.append(first[0])
        left.discard(first[0])
    tie_order = order if not left else None
    with open(os.path.join(d, "requests.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    n = len(rows)
    right = sum(r["right"] for r in rows)
    decisive = [r for r in rows if max(r["prefix_blocks"]) > 0 and min(r["prefix_blocks"]) < max(r["prefix_blocks"])]
    matched = [r for r in rows if r.get("router", {}).get("matches")]
    credited_equal = sum(1 for r in matched if r["router"]["credited_tokens"] == BLOCK * r["prefix_blocks"][r["replica"]])
    summary = {
        "requests": n,
        "worker_urls": urls,
        "requests_per_replica": [sum(1 for r in rows if r["replica"] == k) for k in range(len(urls))],
        "landed_on_longest_prefix": right,
        "exceptions": n - right,
        "exception_causes": causes,
        "decisive_requests": len(decisive),
        "decisive_landed_right": sum(r["right"] for r in decisive),
        "cost_model_agrees": sum(r["cost_agrees"] for r in rows),
        "idle_ties": ties,
        "idle_ties_fit_one_order": tie_order is not None,
        "router_decisions": len(decisions),
        "router_decisions_matched": len(matched),
        "router_credit_equals_oracle": credited_equal,
        "router_credit_differs": {v: sum(1 for r in matched if r["router"].get("view") == v)
                                  for v in ("stale", "unexplained")},
        "event_batches": gaps,
        "unplaced_blocks": oracle.unplaced,
        "fresh_ms": FRESH_MS,
    }
    json.dump(summary, open(os.path.join(d, "summary.json"), "w"), indent=1, sort_keys=True)
    print(f"{right}/{n} requests landed on a replica holding their longest cached prefix "
          f"({n - right} exceptions: {causes}); {len(decisive)} decisive (some replica held more "
          f"than another), {summary['decisive_landed_right']} of them right; requests per replica "
          f"{summary['requests_per_replica']}")
    print(f"the router's cost formula with the logs' in-flight counts (in-flight prefill tokens none or all) picks its choice for "
          f"{summary['cost_model_agrees']}/{n}")
    print(f"ties on an idle fleet: {ties}, broken in one worker order: "
          f"{'yes, ' + str(tie_order) if tie_order is not None else 'NO (a cycle)'}")
    print(f"router decisions {len(decisions)}, matched to requests {len(matched)}, router's credited "
          f"prefix = the oracle's on the chosen replica for {credited_equal} (differs: "
          f"{summary['router_credit_differs']}); event batches {gaps}; "
          f"unplaced blocks {oracle.unplaced}")
    for r in rows:
        if not r["right"]:
            print(f"  exception: request {r['index']} ({r['prompt_tokens']} tokens) on replica "
                  f"{r['replica']}: prefix blocks per replica {r['prefix_blocks']}, in flight "
                  f"{r['in_flight']}, cost {r['cost']}, router credited {r.get('router', {}).get('credited_tokens')} "
                  f"tokens; cause {r['cause']} (youngest block {r['youngest_block_ms']} ms)")
    return summary


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "capture":
        args = sys.argv[2:]
        out = args[args.index("--out") + 1]
        capture([a for i, a in enumerate(args) if a != "--out" and (i == 0 or args[i - 1] != "--out")], out)
    elif len(sys.argv) == 3 and sys.argv[1] == "analyze":
        analyze(sys.argv[2])
    else:
        sys.exit(__doc__)
