# SPDX-License-Identifier: Apache-2.0
"""conversation_aware as an LMCache cache policy (LMCache 0.5.x, `BaseCachePolicy` in
`lmcache/v1/storage_backend/cache_policy/`).

The same scoring as InferenceLab's `conversation_aware` (crates/cache/src/policy/
conversation_aware.rs, crates/cache/src/learned/order.rs), read from the same YAML
(configs/scorer_default.yaml or a file `sweep` wrote; path in INFERENCELAB_SCORER_CONFIG):
predicted gap G = scale * g_ref * (1 + uses)^-w_uses * (1 + depth)^w_depth * p^-w_probability,
the victim is the entry predicted farthest in the future (overdue entries: now + overdue_factor
* idle), and with `adaptive` (the default) LRU is kept as a second expert: two shadow caches,
one evicting by LRU and one by the prediction, see the same chunk references, and the
prediction picks the victims only while its shadow's lead in hits is significant
(crates/cache/src/learned/shadow.rs); otherwise LRU does.

What LMCache's interface gives a policy: the chunk key (`CacheEngineKey`, a prefix-chained
chunk hash), hits, puts and evictions, in wall-clock time. So the terms that need a request
(conversation id, turn, request type, depth in the chain, sharing across conversations) are
not available here and count as off: `use_conversation`, `reuse_model_for_conversations`,
`use_request_type`, `w_sharing`, `w_depth`, `infer_conversations`, `gap_by_turn` and
`use_output_length` (a request's answer length) and `waiting_queue` (vLLM's waiting requests)
are ignored (a warning says so when one of the last six is on and that is not its default); `hit_density` and `idle_in_horizons` (they need
the cache's eviction horizon) are refused. What
remains is the path the simulator takes on traces without conversations (Mooncake): the block's own reuse gap
(`use_block_gap`), the typical gap of blocks with as many uses (`use_reuse_model`) and the
probability that such a block is used again (`w_probability`), all learned online. The shadows
ignore pins. As in Rust they simulate a hashed sample of the chunks (all of them up to 256
chunks of cache, an eighth from 2,048 on) in caches scaled alike.

Prefix closure: LMCache serves a chunk only when every earlier chunk of the prompt hits, but its
policy calls give one chunk at a time. `register()` makes `LocalCPUBackend` also hand the policy
each lookup's hits and each store's chunks together, in prompt order (`chain`), so the policy
learns each chunk's parent. The prediction then evicts first the chunks whose parent is gone
(LMCache could not serve them), and a shadow counts a hit only when it holds the chunk's parent
too (its leading run, as far as the links go; the link from a lookup's last hit to the store
that follows is not made: other requests' calls may come between them).

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
    "reuse_model_for_conversations": True,
    "w_uses": 0.0,
    "w_sharing": 0.0,
    "w_depth": 0.0,
    "w_probability": 2.0,
    "overdue_factor": 0.3,
    "ranking": "expected_wait",
    "adaptive": True,
    "infer_conversations": True,
    "gap_by_turn": False,
    "served_time": True,
    "use_output_length": True,
    "hit_density": False,
    "idle_in_horizons": False,
    "waiting_queue": True,
}
# The Rust ScorerConfig's keys and defaults (crates/cache/tests/python_policy_keys.rs checks
# both are equal). Those that need the request (module docs) are accepted, so every scorer YAML
# the simulator reads loads here too, and ignored, with a warning when set on.
# (`served_time` needs nothing: LMCache calls the policy when the engine serves the request, and
# the policy reads the clock then.)
REQUEST_TERMS = (
    "use_request_type",
    "w_sharing",
    "w_depth",
    "infer_conversations",
    "gap_by_turn",
    "use_output_length",
    "waiting_queue",
)
# Terms this policy does not compute: a non-default value is refused, not ignored
# (`hit_density` needs the cache's eviction horizon, crates/cache/src/learned/horizon.rs).
UNSUPPORTED_TERMS = ("hit_density", "idle_in_horizons")
# crates/cache/src/learned/shadow.rs EVIDENCE_FILLS, LEAD_STANDARD_ERRORS, MIN_SHADOW_BLOCKS and
# MIN_SAMPLING_RATE
EVIDENCE_FILLS = 16.0
LEAD_STANDARD_ERRORS = 2.0
MIN_SHADOW_BLOCKS = 256.0
MIN_SAMPLING_RATE = 1.0 / 8.0


def sampling_rate(capacity: int) -> float:
    """The share of chunks the shadows simulate for a cache of `capacity` chunks."""
    return min(max(MIN_SHADOW_BLOCKS / max(capacity, 1), MIN_SAMPLING_RATE), 1.0)


def batches_per_fill(shadow_capacity: int) -> int:
    """Batches the judge cuts one shadow fill into: one per MIN_SHADOW_BLOCKS chunks (shadow.rs
    `batches_per_fill`)."""
    return max(shadow_capacity // int(MIN_SHADOW_BLOCKS), 1)


def _sample_hash(key: Any) -> float:
    """A fixed hash of a chunk key in [0, 1) (stable when PYTHONHASHSEED is fixed, as LMCache's
    chunk keys need anyway)."""
    h = (hash(key) ^ 0x5851F42D4C957F2D) & 0xFFFFFFFFFFFFFFFF
    return ((h * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) / 2.0**64
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
        for k in UNSUPPORTED_TERMS:
            if self.cfg.get(k, DEFAULTS[k]) != DEFAULTS[k]:
                raise ValueError(
                    f"conversation_aware in LMCache: scorer field '{k}' is not implemented here "
                    f"(only in the simulator); remove it or set it to {DEFAULTS[k]}"
                )
        # terms that need a request, which LMCache's interface does not give (module docs)
        # (on by default, as `infer_conversations` is, it only says the simulator's default)
        self.ignored = [k for k in REQUEST_TERMS if self.cfg[k] and self.cfg[k] != DEFAULTS[k]]
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
        # the shadows (crates/cache/src/learned/shadow.rs): keys each holds, capacity, hits,
        # the current batch and the decayed batch statistics of the prediction's lead
        self.shadow_lru: "OrderedDict[Any, None]" = OrderedDict()
        self.shadow_predicted: Dict[Any, None] = {}
        self.capacity = 0
        self.shadow_capacity = 0
        self.batch_len = 0
        self.batches_per_fill = 1
        self.rate = 1.0
        self.lru_hits = 0
        self.predicted_hits = 0
        self.batch_refs = 0
        self.batch_lead = 0.0
        self.batches = 0.0
        self.lead_sum = 0.0
        self.lead_squares = 0.0
        self.follow = False
        self.decided_by_prediction = 0
        self.decided_by_lru = 0
        # per chunk key: the chunk before it in a request's chain, learned from the calls that
        # give a request's chunks together (`chain`): LMCache serves a chunk only after its
        # parent, so a chunk whose parent is gone cannot be served (prefix closure)
        self.parent: Dict[Any, Any] = {}

    # --- the chains (register() makes LocalCPUBackend report them) -------------------------
    def chain(self, keys: Any) -> None:
        """`keys` are consecutive chunks of one request, in prompt order (one lookup's hits, or
        one store): each is the parent of the next."""
        prev = None
        for k in keys:
            if prev is not None:
                self.parent[k] = prev
            prev = k

    def _servable(self, key: Any, held: Any, shadow: bool = False) -> bool:
        """`key` could be served from a cache holding `held`: its parent, when known, is held
        (in a shadow, a parent it does not sample counts as held, as an unsampled block does in
        Rust)."""
        p = self.parent.get(key)
        if p is None or (shadow and not self._sampled(p)):
            return True
        return p in held

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
        if self.cfg["adaptive"]:
            self._observe_capacity(len(cache_dict))
        evictable = [k for k, v in cache_dict.items() if getattr(v, "can_evict", True)]
        out = []
        while evictable and len(out) < num_candidates:
            lru = evictable[0]
            # the prediction evicts first what cannot be served (its parent is gone), then the
            # farthest predicted
            predicted = max(
                evictable,
                key=lambda k: (not self._servable(k, cache_dict), self._effective(k, now)),
            )
            victim = predicted
            if self.cfg["adaptive"] and predicted != lru:
                if self.follow:
                    self.decided_by_prediction += 1
                else:
                    victim = lru
                    self.decided_by_lru += 1
            out.append(victim)
            evictable.remove(victim)
        return out

    # --- scoring ---------------------------------------------------------------------------
    def _touch(self, key: Any) -> None:
        now = self.clock()
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
        if self.cfg["adaptive"]:
            self._shadow_reference(key, now)

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

    # --- the shadows that judge the prediction against LRU (crates/cache/src/learned/shadow.rs)
    def _observe_capacity(self, resident: int) -> None:
        """The real cache is full at `resident` chunks; at its first eviction the sampling rate
        is fixed and the shadows drop the chunks not sampled."""
        if resident <= self.capacity:
            return
        if self.capacity == 0:
            self.rate = sampling_rate(resident)
            for shadow in (self.shadow_lru, self.shadow_predicted):
                for k in [k for k in shadow if not self._sampled(k)]:
                    del shadow[k]
        self.capacity = resident
        self.shadow_capacity = max(round(resident * self.rate), 1)
        self.batches_per_fill = batches_per_fill(self.shadow_capacity)
        self.batch_len = -(-self.shadow_capacity // self.batches_per_fill)

    def _sampled(self, key: Any) -> bool:
        return self.rate >= 1.0 or _sample_hash(key) < self.rate

    def _shadow_reference(self, key: Any, now: float) -> None:
        if not self._sampled(key):
            return
        # a hit only where the chunk could be served: its parent held too
        lru_hit = key in self.shadow_lru and self._servable(key, self.shadow_lru, True)
        predicted_hit = key in self.shadow_predicted and self._servable(
            key, self.shadow_predicted, True
        )
        self.lru_hits += lru_hit
        self.predicted_hits += predicted_hit
        self.batch_lead += float(predicted_hit) - float(lru_hit)
        cap = self.shadow_capacity
        if cap:
            self.batch_refs += 1
            if self.batch_refs >= self.batch_len:
                self._close_batch()
        # serve the reference in each shadow, evicting first when full
        if key in self.shadow_lru:
            self.shadow_lru.move_to_end(key)
        else:
            while cap and len(self.shadow_lru) >= cap:
                self.shadow_lru.popitem(last=False)
            self.shadow_lru[key] = None
        if key not in self.shadow_predicted:
            while cap and len(self.shadow_predicted) >= cap:
                held = self.shadow_predicted
                victim = max(
                    held,
                    key=lambda k: (not self._servable(k, held, True), self._effective(k, now)),
                )
                del self.shadow_predicted[victim]
            self.shadow_predicted[key] = None

    def _close_batch(self) -> None:
        keep = 1.0 - 1.0 / (EVIDENCE_FILLS * self.batches_per_fill)
        d = self.batch_lead
        self.batches = self.batches * keep + 1.0
        self.lead_sum = self.lead_sum * keep + d
        self.lead_squares = self.lead_squares * keep + d * d
        self.batch_refs = 0
        self.batch_lead = 0.0
        n = self.batches
        mean = self.lead_sum / n
        if n <= 1.0 or mean <= 0.0:
            self.follow = False
        else:
            var = max((self.lead_squares / n - mean * mean) * n / (n - 1.0), 0.0)
            self.follow = mean * mean * n > LEAD_STANDARD_ERRORS**2 * var


def register() -> None:
    """Make `cache_policy: conversation_aware` resolve in LMCache's factory, and make
    LMCache's `LocalCPUBackend` tell a policy that asks (`chain`) which chunks one request looks
    up or stores together: its policy interface gives chunks one at a time."""
    from lmcache.v1.storage_backend import cache_policy

    cache_policy.POLICY_MAPPING["CONVERSATION_AWARE"] = ConversationAwareCachePolicy
    try:
        from lmcache.v1.storage_backend.local_cpu_backend import LocalCPUBackend
    except ImportError:  # pragma: no cover
        return
    if getattr(LocalCPUBackend, "_inferencelab_chains", False):
        return
    touch_cache = LocalCPUBackend.touch_cache
    batched_put = LocalCPUBackend.batched_submit_put_task

    def touch_cache_with_chain(self):  # one lookup's hits, in prompt order
        chain = getattr(self.cache_policy, "chain", None)
        if chain is not None:
            chain(list(self.keys_in_request))
        return touch_cache(self)

    def batched_put_with_chain(self, keys, *args, **kwargs):  # one store, in prompt order
        chain = getattr(self.cache_policy, "chain", None)
        if chain is not None:
            keys = list(keys)
            chain(keys)
        return batched_put(self, keys, *args, **kwargs)

    LocalCPUBackend.touch_cache = touch_cache_with_chain
    LocalCPUBackend.batched_submit_put_task = batched_put_with_chain
    LocalCPUBackend._inferencelab_chains = True
