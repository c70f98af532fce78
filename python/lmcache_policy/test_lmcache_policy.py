#!/usr/bin/env python3
"""conversation_aware driven through LMCache 0.5.6's own classes (CPU): LMCache's factory
(`get_cache_policy`) builds it by name once registered, and its `LocalCPUBackend` (built by
LMCache's `StorageManager`, via scripts/lmcache_engine_check.py's Driver, which calls LMCache's
engine and connector steps in order) calls it on every hit, put and eviction.

Checks: (1) the factory resolves `conversation_aware` to this policy with the YAML's fields;
(2) with `scale: 0` (every predicted gap 0, InferenceLab's definition of LRU's point) and
`adaptive: false`, every request's hit equals LMCache's own LRU on the same workload; (3) with the
shipped defaults the workload runs, evicts, and the shadows judge (LRU as a second expert at
work): they count hits, and where the prediction's shadow does not lead LRU decides. Run: /work/venvs/lmcache/bin/python python/lmcache_policy/test_lmcache_policy.py
"""

import os
import random
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "scripts"))

import inferencelab_cache_policy as icp  # noqa: E402
import lmcache_engine_check as lec  # noqa: E402


def workload(seed=7, convs=24, turns=6):
    """Multi-turn chats: each turn resends the conversation so far plus new tokens."""
    rng = random.Random(seed)
    reqs = []
    hist = {c: [rng.randrange(50_000) for _ in range(rng.randrange(300, 1500))] for c in range(convs)}
    order = [c for t in range(turns) for c in rng.sample(range(convs), convs)]
    for i, c in enumerate(order):
        hist[c] += [rng.randrange(50_000) for _ in range(rng.randrange(100, 600))]
        reqs.append((f"r{i}", list(hist[c])))
    return reqs


def run(policy, cfg_path):
    os.environ["INFERENCELAB_SCORER_CONFIG"] = cfg_path or ""
    drv = lec.Driver(policy, 2.0, None, None, 8192)
    hits = []
    try:
        for rid, prompt in workload():
            hits.append(drv.run_request(rid, prompt)["lmcache_hit_tokens"])
            drv.check_no_pins()
        pol = drv.cpu.cache_policy
    finally:
        drv.close()
    return hits, pol


def runner_environment():
    """What the experiment runner does for `cache_policy: conversation_aware` (in-process
    LMCache; crates/runner/src/experiment/commands.rs): the two files and the bundled scorer in
    one folder, that folder on PYTHONPATH, LMCACHE_CACHE_POLICY=CONVERSATION_AWARE. A fresh
    Python (as vLLM's would be) must get the policy from LMCache's own config and factory,
    with no call to register(): sitecustomize.py does it at start-up."""
    import shutil
    import subprocess

    d = Path(tempfile.mkdtemp()) / "lmcache_policy"
    d.mkdir()
    for f in ("inferencelab_cache_policy.py", "sitecustomize.py"):
        shutil.copy(HERE / f, d / f)
    shutil.copy(REPO / "configs/scorer_default.yaml", d / "scorer.yaml")
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(d),
        LMCACHE_CACHE_POLICY="CONVERSATION_AWARE",
        INFERENCELAB_SCORER_CONFIG=str(d / "scorer.yaml"),
        LMCACHE_TRACK_USAGE="false",
    )
    probe = (
        "from lmcache.v1.config import LMCacheEngineConfig\n"
        "from lmcache.v1.storage_backend.cache_policy import get_cache_policy\n"
        "p = get_cache_policy(LMCacheEngineConfig.from_env().cache_policy)\n"
        "print('POLICY', type(p).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300
    )
    assert "POLICY ConversationAwareCachePolicy" in out.stdout, (out.stdout, out.stderr[-2000:])


def main():
    lec._quiet_lmcache()
    icp.register()
    from lmcache.v1.storage_backend.cache_policy import get_cache_policy

    tmp = Path(tempfile.mkdtemp())
    lru_point = tmp / "lru_point.yaml"
    lru_point.write_text("scale: 0\nadaptive: false\n")
    os.environ["INFERENCELAB_SCORER_CONFIG"] = str(REPO / "configs/scorer_default.yaml")
    p = get_cache_policy("conversation_aware")
    assert isinstance(p, icp.ConversationAwareCachePolicy), p
    import yaml

    shipped = yaml.safe_load((REPO / "configs/scorer_default.yaml").read_text())
    assert p.cfg["w_probability"] == shipped["w_probability"] and p.cfg["adaptive"] is True
    runner_environment()
    bad = tmp / "bad.yaml"
    bad.write_text("sclae: 1\n")
    try:
        icp.load_config(str(bad))
        raise AssertionError("an unknown key must be an error")
    except ValueError as e:
        assert "sclae" in str(e) and str(bad) in str(e)

    lru, _ = run("lru", None)
    point, _ = run("conversation_aware", str(lru_point))
    assert point == lru, "scale 0 must evict as LMCache's LRU does"
    dflt, pol = run("conversation_aware", str(REPO / "configs/scorer_default.yaml"))
    total = sum(len(p) for _, p in workload())
    print(f"token hit ratio on {len(lru)} requests: LMCache LRU {sum(lru) / total:.4f}, "
          f"conversation_aware scale 0 {sum(point) / total:.4f}, defaults {sum(dflt) / total:.4f}; "
          f"shadow hits: LRU {pol.lru_hits}, prediction {pol.predicted_hits}; evictions decided "
          f"by the prediction {pol.decided_by_prediction}, by LRU {pol.decided_by_lru}")
    assert sum(lru) < sum(len(p) for _, p in workload()) * 0.9, "the workload must evict"
    assert pol.capacity > 0 and pol.lru_hits > 0, "the shadows must have judged"
    assert pol.rate == 1.0 and pol.shadow_capacity == pol.capacity, "a small cache: no sampling"
    assert pol.decided_by_prediction + pol.decided_by_lru > 0, "the experts must disagree"
    # the judge follows the prediction only with a lead in its shadow
    if pol.decided_by_prediction:
        assert pol.predicted_hits > pol.lru_hits
    # LocalCPUBackend reports each lookup's and each store's chunks together (register()), so
    # the policy knows each chunk's parent: it evicts first the chunks LMCache could not serve,
    # and its shadows count only servable hits. Without that the defaults lost to LRU here
    # (0.0252 against 0.0322 of the tokens).
    assert pol.parent, "the chains must reach the policy"
    assert sum(dflt) >= sum(lru), "the defaults must not lose to LRU on this workload"
    # a chunk whose parent is gone cannot be served, in the real cache or a shadow
    links = icp.ConversationAwareCachePolicy(dict(icp.DEFAULTS), clock=lambda: 0.0)
    links.chain(["a", "b", "c"])
    assert links.parent == {"b": "a", "c": "b"}
    assert links._servable("c", {"b": None}) and not links._servable("c", {"a": None})
    assert links._servable("a", {})
    # sampling (crates/cache/src/learned/shadow.rs): a large cache keeps about the rate's share
    assert icp.sampling_rate(100) == 1.0 and icp.sampling_rate(512) == 0.5
    assert icp.sampling_rate(10_000) == 1.0 / 8.0
    big = icp.ConversationAwareCachePolicy(dict(icp.DEFAULTS), clock=lambda: 0.0)
    for k in range(4096):
        big.update_on_put(("chunk", k))
    big._observe_capacity(4096)
    assert big.shadow_capacity == 512 and 400 <= len(big.shadow_lru) <= 624, len(big.shadow_lru)
    assert set(big.shadow_lru) == set(big.shadow_predicted)
    print("ok")


if __name__ == "__main__":
    main()
