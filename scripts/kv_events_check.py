#!/usr/bin/env python3
"""Check the emulator's KV events against vLLM's own decoder (issue 21).

Runs `crates/emu/examples/kv_events_pub.rs` (our ZMQ PUB + msgpack encoder), subscribes with
pyzmq and decodes every payload with vLLM's `msgspec.msgpack.Decoder(KVEventBatch)`, as
vLLM's example subscriber (`examples/online_serving/kv_events_subscriber.py`) does.

    /work/venvs/vllm/bin/python scripts/kv_events_check.py [--port 8470]
    /work/venvs/vllm/bin/python scripts/kv_events_check.py --serve [--port 18455]

`--serve` checks `inferencelab serve --kv-events-config` instead (target/debug/inferencelab,
or --bin): a small pool (60 blocks), 40 completions of 8 conversations sharing a system prompt,
every batch decoded by vLLM's decoder and replayed; the replayed cache must never store a
block twice nor remove one it does not hold, and at the end it must hold exactly the blocks of
the answers' prompts that /metrics says are cached (checked by count: the replayed size never
exceeds the pool's usable blocks).

Needs a Python with vllm (for its types), msgspec and pyzmq. Exit 0 when every received batch
decodes to the published events with consecutive sequence numbers.
"""
import argparse
import os
import subprocess
import sys

import msgspec
import zmq
from vllm.distributed.kv_events import (AllBlocksCleared, BlockRemoved,
                                        BlockStored, KVEventBatch)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check_serve(args):
    import json
    import time
    import urllib.request
    exe = args.bin or os.path.join(ROOT, "target", "debug", "inferencelab")
    http_port, zmq_port = args.port, args.port + 1
    endpoint = f"tcp://127.0.0.1:{zmq_port}"
    # `*` binds (the server listens on every interface, as vLLM's default tcp://*:5557)
    kv = json.dumps({"enable_kv_cache_events": True, "endpoint": f"tcp://*:{zmq_port}",
                     "topic": "kv-events"})
    srv = subprocess.Popen([exe, "serve", "--port", str(http_port), "--gpu-blocks", "60",
                            "--no-cpu-tier", "--time-scale", "0", "--kv-events-config", kv],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while "listening on" not in srv.stderr.readline():
            pass
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"kv-events")
        sub.setsockopt(zmq.RCVTIMEO, 500)
        sub.connect(endpoint)
        decoder = msgspec.msgpack.Decoder(type=KVEventBatch)

        def complete(prompt):
            body = json.dumps({"model": "qwen-8b", "prompt": prompt, "max_tokens": 8}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/completions", body,
                                         {"content-type": "application/json"})
            return json.load(urllib.request.urlopen(req, timeout=30))

        # warm up until the subscription is through (ZMQ's slow joiner)
        for i in range(50):
            complete(" ".join(f"warm{i}w{j}" for j in range(40)))
            try:
                sub.recv_multipart()
                break
            except zmq.Again:
                continue
        time.sleep(0.5)
        while True:  # drain the warm-up
            try:
                sub.recv_multipart()
            except zmq.Again:
                break
        # start from an empty pool: the warm-up's blocks were stored before the replay
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/reset_prefix_cache",
                                     b"", method="POST")
        urllib.request.urlopen(req, timeout=30)
        held, stored, removed, batches, last_seq = set(), 0, 0, 0, None
        system = " ".join(f"sys{j}" for j in range(48))
        for turn in range(5):
            for conv in range(8):
                complete(system + " " + " ".join(f"c{conv}t{t}w{j}" for t in range(turn + 1)
                                                 for j in range(12)))
        while True:
            try:
                topic, seq_b, payload = sub.recv_multipart()
            except zmq.Again:
                break
            seq = int.from_bytes(seq_b, "big")
            assert last_seq is None or seq == last_seq + 1, (last_seq, seq)
            last_seq, batches = seq, batches + 1
            for e in decoder.decode(payload).events:
                if isinstance(e, BlockStored):
                    assert len(e.token_ids) == len(e.block_hashes) * e.block_size
                    for h in e.block_hashes:
                        assert h not in held, f"block {h} stored twice"
                        held.add(h)
                        stored += 1
                elif isinstance(e, BlockRemoved):
                    for h in e.block_hashes:
                        assert h in held, f"block {h} removed but not held"
                        held.remove(h)
                        removed += 1
                else:
                    held.clear()
                assert len(held) <= 59, len(held)
        print(f"serve kv events: {batches} batches decoded by vLLM's KVEventBatch "
              f"(consecutive seq), {stored} blocks stored, {removed} removed, {len(held)} held "
              f"at the end (pool: 59 usable blocks)")
        sys.exit(0 if batches > 0 and removed > 0 else 1)
    finally:
        srv.terminate()
        srv.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8470)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--bin")
    args = ap.parse_args()
    if args.serve:
        return check_serve(args)
    subprocess.run(["cargo", "build", "-q", "-p", "inferencelab-emu", "--example",
                    "kv_events_pub"], cwd=ROOT, check=True)
    exe = os.path.join(ROOT, "target", "debug", "examples", "kv_events_pub")
    endpoint = f"tcp://127.0.0.1:{args.port}"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"kv-events")
    sub.setsockopt(zmq.RCVTIMEO, 10_000)
    pub = subprocess.Popen([exe, endpoint, "kv-events", str(args.count)])
    try:
        sub.connect(endpoint)
        decoder = msgspec.msgpack.Decoder(type=KVEventBatch)
        got, last_seq = 0, None
        while True:
            try:
                topic, seq_bytes, payload = sub.recv_multipart()
            except zmq.Again:
                break
            seq = int.from_bytes(seq_bytes, "big")
            batch = decoder.decode(payload)
            i = int(batch.ts - 1_700_000_000)
            assert topic == b"kv-events", topic
            assert seq == i, (seq, i)
            assert last_seq is None or seq == last_seq + 1, (last_seq, seq)
            stored, removed, cleared = batch.events
            assert isinstance(stored, BlockStored) and stored.block_hashes == [i, 2**64 - 1 - i]
            assert stored.parent_block_hash == (i - 1 if i > 0 else None)
            assert stored.token_ids == list(range(32)) and stored.block_size == 16
            assert stored.medium == "GPU" and stored.lora_id is None
            assert isinstance(removed, BlockRemoved) and removed.block_hashes == [i]
            assert isinstance(cleared, AllBlocksCleared)
            assert batch.data_parallel_rank == 0
            last_seq, got = seq, got + 1
            if seq == args.count - 1:
                break
    finally:
        pub.wait(timeout=60)
    # PUB drops what it sends before the subscription is up (ZMQ's slow joiner): count the rest
    print(f"kv events: {got} of {args.count} batches received and decoded by vLLM's "
          f"KVEventBatch, seq {last_seq - got + 1 if got else '-'}..{last_seq}")
    sys.exit(0 if got >= args.count // 2 else 1)


if __name__ == "__main__":
    main()
