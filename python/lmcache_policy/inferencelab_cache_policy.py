# SPDX-License-Identifier: Apache-2.0
"""conversation_aware as an LMCache cache policy (LMCache 0.5.x, `BaseCachePolicy` in
`lmcache/v1/storage_backend/cache_policy/`).

The same scoring as InferenceLab's `conversation_aware` (crates/cache/src/policy/
conversation_aware.rs, crates/cache/src/learned/order.rs), read from the same YAML
(configs/scorer_default.yaml or a file `sweep` wrote; path in INFERENCELAB_SCORER_CONFIG):
predicted gap G = scale * g_ref * (1 + uses)^-w_uses * (1 + depth)^w_depth * p^-w_probability,
the victim is the entry predicted farthest in the future (overdue entries: now + overdue_factor
* idle), and with `adaptive` (the default) LRU is kept as a second expert and the one proven
right more often lately picks the victim where they disagree.

What LMCache's interface gives a policy: the chunk key (`CacheEngineKey`, a prefix-chained
chunk hash), hits, puts and evictions, in wall-clock time. So the terms that need a request
(conversation id, turn, request type, depth in the chain, sharing across conversations) are
not available here and count as off: `use_conversation`, `use_request_type`, `w_sharing` and
`w_depth` are ignored (a warning says so when they are set). What remains is the path the
simulator takes on traces without conversations (Mooncake): the block's own reuse gap
(`use_block_gap`), the typical gap of blocks with as many uses (`use_reuse_model`) and the
probability that such a block is used again (`w_probability`), all learned online.

Registration: `register()` adds the policy to LMCache's `POLICY_MAPPING` as
CONVERSATION_AWARE, so `cache_policy: conversation_aware` (or LMCACHE_CACHE_POLICY) selects it.
The `sitecustomize.py` beside this file calls it in every Python process whose PYTHONPATH holds
this directory (how a vLLM server started by hand picks it up; see docs/policies.md).
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional

try:  # LMCache present: the real base class
    from lmcache.v1.storage_backend.cache_policy.base_policy import BaseCachePolicy
except ImportError:  # pragma: no cover - for reading the scoring without LMCache
    BaseCachePolicy = object  # type: ignore

DEFAULTS = {
    "scale": 1.0,
    "use_conversation": True,
    "use_block_gap": True,
    "use_request_type": False,
    "use_reuse_model": True,
    "w_uses": 0.0,
    "w_sharing": 0.0,
    "w_depth": 0.0,
    "w_probability": 1.0,
    "overdue_factor": 1.0,
    "ranking": "next_use",
    "adaptive": True,
}
# crates/cache/src/learned/order.rs DUEL_RATE
DUEL_RATE = 1.0 / 64.0
# smoothing of the online typical gaps (the simulator's tracker uses EWMAs too)
EWMA = 0.1


def load_config(path: Optional[str]) -> Dict[str, Any]:
    """The scorer YAML; unknown keys are errors naming the file and the key, as in Rust."""
    cfg = dict(DEFAULTS)
    if not path:
        return cfg
    import yaml

    with open(path) as f:
        given = yaml.safe_load(f) or {}
    for k, v in given.items():
        if k not in DEFAULTS:
            raise ValueError(f"{path}: unknown scorer field '{k}'")
        cfg[k] = v
    if cfg["ranking"] not in ("next_use", "expected_wait"):
        raise ValueError(f"{path}: ranking must be next_use or expected_wait")
    return cfg


class _Entry:
    __slots__ = ("touched", "uses", "gap", "predicted")

    def __init__(self, now: float):
        self.touched = now
        self.uses = 0
        self.gap = math.nan
        self.predicted = 0.0


class ConversationAwareCachePolicy(BaseCachePolicy):  # type: ignore[misc]
    """conversation_aware for LMCache's local CPU backend (module docs)."""

    def __init__(
        self,
        config: Optional[Dict[str, Any]] = None,
        clock: Callable[[], float] = time.time,
    ):
        self.cfg = config if config is not None else load_config(
            os.environ.get("INFERENCELAB_SCORER_CONFIG")
        )
        self.clock = clock
        # terms that need a request, which LMCache's interface does not give (module docs)
        self.ignored = [k for k in ("use_request_type", "w_sharing", "w_depth") if self.cfg[k]]
        if self.ignored:
            import logging

            logging.getLogger(__name__).warning(
                "conversation_aware in LMCache: %s need the request and are ignored",
                ", ".join(self.ignored),
            )
        # per chunk key: its state (also after eviction: uses and gaps are history)
        self.state: Dict[Any, _Entry] = {}
        # per use count: EWMA of the gap to the next use, and (next uses, touches) counts
        self.gap_by_uses: Dict[int, float] = {}
        self.next_by_uses: Dict[int, list] = {}
        self.typical_gap = math.nan
        # the duel: open verdicts [predicted, open] by evicted key and by kept key
        self.open_evicted: Dict[Any, list] = {}
        self.open_kept: Dict[Any, list] = {}
        self.score = 0.0
        self.settled = 0
        self.prediction_right = 0

    # --- BaseCachePolicy -------------------------------------------------------------------
    def init_mutable_mapping(self) -> "OrderedDict[Any, Any]":
        return OrderedDict()

    def update_on_hit(self, key: Any, cache_dict: "OrderedDict[Any, Any]") -> None:
        self._touch(key)
        cache_dict.move_to_end(key)  # LRU expert's order, as LMCache's LRU keeps it

    def update_on_put(self, key: Any) -> None:
        self._touch(key)

    def update_on_force_evict(self, key: Any) -> None:
        pass

    def get_evict_candidates(
        self, cache_dict: "OrderedDict[Any, Any]", num_candidates: int = 1
    ) -> list:
        now = self.clock()
        evictable = [k for k, v in cache_dict.items() if getattr(v, "can_evict", True)]
        out = []
        while evictable and len(out) < num_candidates:
            lru = evictable[0]
            predicted = max(evictable, key=lambda k: self._effective(k, now))
            victim = predicted
            if self.cfg["adaptive"] and predicted != lru:
                follow = self.score >= 0.0
                victim, kept = (predicted, lru) if follow else (lru, predicted)
                self._open(victim, kept, follow)
            out.append(victim)
            evictable.remove(victim)
        return out

    # --- scoring ---------------------------------------------------------------------------
    def _touch(self, key: Any) -> None:
        now = self.clock()
        self._settle(key)
        e = self.state.get(key)
        if e is None:
            e = self.state[key] = _Entry(now)
        else:
            gap = now - e.touched
            # the reuse model: gap to the next use and reuse share of blocks with e.uses uses
            g = self.gap_by_uses.get(e.uses)
            self.gap_by_uses[e.uses] = gap if g is None else g + EWMA * (gap - g)
            self.next_by_uses.setdefault(e.uses, [0, 0])[0] += 1
            self.typical_gap = gap if math.isnan(self.typical_gap) else (
                self.typical_gap + EWMA * (gap - self.typical_gap)
            )
            e.gap = gap
            e.uses += 1
            e.touched = now
        self.next_by_uses.setdefault(e.uses, [0, 0])[1] += 1
        e.predicted = self._gap(e)

    def _gap(self, e: _Entry) -> float:
        c = self.cfg
        if c["scale"] == 0:
            return 0.0
        refs = []
        if c["use_block_gap"] and not math.isnan(e.gap):
            refs.append(e.gap)
        if c["use_reuse_model"] and e.uses in self.gap_by_uses:
            refs.append(self.gap_by_uses[e.uses])
        g_ref = min(refs) if refs else self.typical_gap
        if math.isnan(g_ref):
            return 0.0
        g = c["scale"] * g_ref
        if c["w_uses"]:
            g *= (1.0 + e.uses) ** -c["w_uses"]
        if c["w_probability"]:
            nxt, seen = self.next_by_uses.get(e.uses, [0, 0])
            p = (nxt + 1.0) / (seen + 2.0)  # Laplace: no history = even odds
            g *= p ** -c["w_probability"]
        return g

    def _effective(self, key: Any, now: float) -> float:
        e = self.state[key]
        idle = max(now - e.touched, 0.0)
        if self.cfg["ranking"] == "expected_wait":
            return e.predicted + self.cfg["overdue_factor"] * idle
        at = e.touched + e.predicted
        return at if at > now else now + self.cfg["overdue_factor"] * idle

    # --- the duel with LRU (crates/cache/src/learned/order.rs) ------------------------------
    # a kept chunk can be the kept side of many open verdicts; each is settled by its next use
    def _open(self, evicted: Any, kept: Any, predicted: bool) -> None:
        old = self.open_evicted.pop(evicted, None)
        if old is not None:
            old[1] = False
        v = [predicted, True]
        self.open_evicted[evicted] = v
        self.open_kept.setdefault(kept, []).append(v)

    def _vote(self, v: list, chosen_right: bool) -> None:
        if not v[1]:
            return
        v[1] = False
        right = chosen_right == v[0]
        self.settled += 1
        self.prediction_right += right
        self.score += DUEL_RATE * ((1.0 if right else -1.0) - self.score)

    def _settle(self, key: Any) -> None:
        v = self.open_evicted.pop(key, None)
        if v is not None:
            self._vote(v, False)
        for v in self.open_kept.pop(key, ()):
            self._vote(v, True)


def register() -> None:
    """Make `cache_policy: conversation_aware` resolve in LMCache's factory."""
    from lmcache.v1.storage_backend import cache_policy

    cache_policy.POLICY_MAPPING["CONVERSATION_AWARE"] = ConversationAwareCachePolicy
