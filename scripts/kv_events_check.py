#!/usr/bin/env python3
"""Check the emulator's KV events against vLLM's own decoder (issue 21).

Runs `crates/emu/examples/kv_events_pub.rs` (our ZMQ PUB + msgpack encoder), subscribes with
pyzmq and decodes every payload with vLLM's `msgspec.msgpack.Decoder(KVEventBatch)`, as
vLLM's example subscriber (`examples/online_serving/kv_events_subscriber.py`) does.

    /work/venvs/vllm/bin/python scripts/kv_events_check.py [--port 8470]

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8470)
    ap.add_argument("--count", type=int, default=200)
    args = ap.parse_args()
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
