//! Random operation sequences (reference with or without a pin, unpin, remove) driven through
//! `BlockCache<AnyPolicy>` for every built-in policy, checked after every operation against a
//! naive reference model and the structure's and policy's own `validate()`:
//! - a reference hits exactly when the model holds the object;
//! - the resident set equals the model's and never exceeds the capacity;
//! - an eviction happens only when the cache is full, takes exactly one unpinned object, and an
//!   admission is refused only when every resident object is pinned;
//! - for the policies with a simple definition the victim is exactly the model's: LRU (oldest
//!   touch: reference or unpin), MRU (newest touch), FIFO (oldest admission), LFU (fewest
//!   references, then oldest arrival at that count: admission, hit or unpin), Belady (farthest
//!   next use; any of equal next uses).

use std::collections::HashMap;

use inferencelab_cache::policy::s3fifo::S3FifoConfig;
use inferencelab_cache::{Access, BlockCache, ObjId, Outcome, PolicyConfig, NEVER};
use proptest::prelude::*;
use proptest::sample::Index;

const OBJECTS: u32 = 12;

#[derive(Debug, Clone)]
enum Op {
    Ref {
        obj: ObjId,
        pin: bool,
        next_use: u64,
        depth: u32,
    },
    /// unpin one of the pinned objects (if any)
    Unpin(Index),
    Remove(ObjId),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..OBJECTS, prop::bool::weighted(0.3), 0..6u64, 0..3u32).prop_map(
            |(obj, pin, n, depth)| Op::Ref {
                obj,
                pin,
                next_use: if n == 5 { NEVER } else { n },
                depth,
            }
        ),
        3 => any::<Index>().prop_map(Op::Unpin),
        1 => (0..OBJECTS).prop_map(Op::Remove),
    ]
}

/// Which victim the model can predict exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    Lru,
    Mru,
    Fifo,
    Lfu,
    Belady,
    /// any unpinned resident object
    Any,
}

fn policies() -> Vec<(PolicyConfig, Rule)> {
    vec![
        (PolicyConfig::Lru, Rule::Lru),
        (PolicyConfig::Fifo, Rule::Fifo),
        (PolicyConfig::Lfu, Rule::Lfu),
        (PolicyConfig::Mru, Rule::Mru),
        (PolicyConfig::Arc, Rule::Any),
        (PolicyConfig::S3fifo(S3FifoConfig::default()), Rule::Any),
        (
            PolicyConfig::S3fifo(S3FifoConfig {
                small_ratio: 0.5,
                ghost_ratio: 0.0,
                move_to_main_threshold: 1,
            }),
            Rule::Any,
        ),
        (PolicyConfig::Sieve, Rule::Any),
        (PolicyConfig::Belady, Rule::Belady),
        (PolicyConfig::Ideal, Rule::Any),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Obj {
    pins: u32,
    admitted: u64,
    /// last reference or unpin to zero
    touched: u64,
    refs: u32,
    next_use: u64,
}

/// The naive model: resident objects with their pin counts and the facts the rules read.
struct Model {
    capacity: u64,
    rule: Rule,
    resident: HashMap<ObjId, Obj>,
}

impl Model {
    fn expected_victims(&self) -> Vec<ObjId> {
        let unpinned = self.resident.iter().filter(|(_, o)| o.pins == 0);
        let pick = |key: &dyn Fn(&Obj) -> (u64, u64)| -> Vec<ObjId> {
            let best = unpinned.clone().map(|(_, o)| key(o)).min();
            unpinned
                .clone()
                .filter(|(_, o)| Some(key(o)) == best)
                .map(|(&id, _)| id)
                .collect()
        };
        match self.rule {
            Rule::Lru => pick(&|o| (o.touched, 0)),
            Rule::Mru => pick(&|o| (u64::MAX - o.touched, 0)),
            Rule::Fifo => pick(&|o| (o.admitted, 0)),
            Rule::Lfu => pick(&|o| (o.refs as u64, o.touched)),
            Rule::Belady => pick(&|o| (u64::MAX - o.next_use, 0)),
            Rule::Any => unpinned.map(|(&id, _)| id).collect(),
        }
    }
}

fn check(config: &PolicyConfig, rule: Rule, capacity: u64, ops: &[Op]) -> Result<(), String> {
    let capacity = if config.is_unbounded() {
        u64::MAX
    } else {
        capacity
    };
    let mut cache = BlockCache::new(capacity, config.build(capacity));
    let mut model = Model {
        capacity,
        rule,
        resident: HashMap::new(),
    };
    for (t, op) in ops.iter().enumerate() {
        let now = t as u64 + 1;
        let ctx = |msg: String| format!("{config} capacity {capacity}, op {t} {op:?}: {msg}");
        match *op {
            Op::Ref {
                obj,
                pin,
                next_use,
                depth,
            } => {
                let mut a = Access::at(obj, now);
                a.next_use = next_use;
                a.depth = depth;
                let was_resident = model.resident.contains_key(&obj);
                let full = model.resident.len() as u64 >= model.capacity;
                let victims = model.expected_victims();
                let outcome = cache.access(&a, pin);
                match outcome {
                    Outcome::Hit(e) => {
                        if !was_resident {
                            return Err(ctx("hit on an object the model does not hold".into()));
                        }
                        if cache.object(e) != Some(obj) {
                            return Err(ctx(format!("hit entry {e} holds another object")));
                        }
                        let o = model.resident.get_mut(&obj).unwrap();
                        o.touched = now;
                        o.refs += 1;
                        o.next_use = next_use;
                        o.pins += pin as u32;
                    }
                    Outcome::Inserted(_) => {
                        if was_resident {
                            return Err(ctx("miss on an object the model holds".into()));
                        }
                        let gone: Vec<ObjId> = model
                            .resident
                            .keys()
                            .copied()
                            .filter(|&o| !cache.contains(o))
                            .collect();
                        match (full, gone.as_slice()) {
                            (false, []) => {}
                            (true, [victim]) => {
                                if model.resident[victim].pins > 0 {
                                    return Err(ctx(format!("evicted pinned object {victim}")));
                                }
                                if !victims.contains(victim) {
                                    return Err(ctx(format!(
                                        "evicted {victim}, the model expects one of {victims:?}"
                                    )));
                                }
                                model.resident.remove(victim);
                            }
                            _ => {
                                return Err(ctx(format!("full={full} but evicted {gone:?}")));
                            }
                        }
                        model.resident.insert(
                            obj,
                            Obj {
                                pins: pin as u32,
                                admitted: now,
                                touched: now,
                                refs: 1,
                                next_use,
                            },
                        );
                    }
                    Outcome::Rejected => {
                        if was_resident {
                            return Err(ctx("rejected a resident object".into()));
                        }
                        if !(full && victims.is_empty()) {
                            return Err(ctx(format!(
                                "rejected with {} of {} resident and unpinned {victims:?}",
                                model.resident.len(),
                                model.capacity
                            )));
                        }
                    }
                }
            }
            Op::Unpin(i) => {
                let mut pinned: Vec<ObjId> = model
                    .resident
                    .iter()
                    .filter(|(_, o)| o.pins > 0)
                    .map(|(&id, _)| id)
                    .collect();
                if pinned.is_empty() {
                    continue;
                }
                pinned.sort_unstable();
                let obj = pinned[i.index(pinned.len())];
                let e = cache
                    .lookup(obj)
                    .ok_or_else(|| ctx(format!("pinned {obj} is not resident")))?;
                cache.unpin(e, now);
                let o = model.resident.get_mut(&obj).unwrap();
                o.pins -= 1;
                if o.pins == 0 {
                    o.touched = now;
                }
            }
            Op::Remove(obj) => {
                let removable = model.resident.get(&obj).is_some_and(|o| o.pins == 0);
                if cache.remove(obj) != removable {
                    return Err(ctx(format!("remove returned {}", !removable)));
                }
                if removable {
                    model.resident.remove(&obj);
                }
            }
        }
        cache
            .validate()
            .map_err(|e| ctx(format!("validate: {e}")))?;
        let mut got = cache.resident();
        got.sort_unstable();
        let mut want: Vec<ObjId> = model.resident.keys().copied().collect();
        want.sort_unstable();
        if got != want {
            return Err(ctx(format!("resident {got:?}, model {want:?}")));
        }
        if cache.len() > capacity {
            return Err(ctx("over capacity".into()));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_policy_agrees_with_the_model(
        capacity in 0u64..7,
        ops in prop::collection::vec(op(), 1..250),
    ) {
        for (config, rule) in policies() {
            if let Err(e) = check(&config, rule, capacity, &ops) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}

/// Long unpinned runs at a realistic size, where the rules must hold on every eviction.
#[test]
fn long_runs_without_pins() {
    let mut state = 7u64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let ops: Vec<Op> = (0..4_000)
        .map(|_| {
            let (a, b) = (rnd() % 100, rnd() % 100);
            Op::Ref {
                obj: a.min(b) as ObjId,
                pin: false,
                next_use: rnd() % 1000,
                depth: 0,
            }
        })
        .collect();
    for (config, rule) in policies() {
        check(&config, rule, 30, &ops).unwrap();
    }
}

/// Long runs with pins and removals (the random operations above, drawn by a deterministic
/// runner), long enough that the lazy structures (Belady's heap) rebuild several times while
/// entries are pinned.
#[test]
fn long_runs_with_pins() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for capacity in [3, 6, 10] {
        let ops = prop::collection::vec(op(), 6_000)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        for (config, rule) in policies() {
            check(&config, rule, capacity, &ops).unwrap();
        }
    }
}
