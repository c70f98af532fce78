//! Scripted reference sequences for the policies' unit tests.

use super::{Access, EvictionPolicy, ObjId, NEVER};
use crate::{BlockCache, Outcome};

#[derive(Debug, Clone, Copy)]
enum Step {
    /// reference an object (pinning it or not) with this oracle next use and chain depth
    Ref {
        obj: ObjId,
        pin: bool,
        next_use: u64,
        depth: u32,
    },
    Unpin(ObjId),
    Remove(ObjId),
}

/// A sequence of references, pins, unpins and removals, played at logical times 0, 1, ...
#[derive(Debug, Clone, Default)]
pub struct Script(Vec<Step>);

impl Script {
    pub fn new() -> Self {
        Script(Vec::new())
    }

    /// Reference each object once, unpinned.
    pub fn refs(mut self, objs: &[ObjId]) -> Self {
        for &obj in objs {
            self.0.push(Step::Ref {
                obj,
                pin: false,
                next_use: NEVER,
                depth: 0,
            });
        }
        self
    }

    /// Reference an object and pin it.
    pub fn pin(mut self, obj: ObjId) -> Self {
        self.0.push(Step::Ref {
            obj,
            pin: true,
            next_use: NEVER,
            depth: 0,
        });
        self
    }

    /// Reference an object with an oracle next use and a depth (Belady).
    pub fn oracle(mut self, obj: ObjId, next_use: u64, depth: u32) -> Self {
        self.0.push(Step::Ref {
            obj,
            pin: false,
            next_use,
            depth,
        });
        self
    }

    pub fn unpin(mut self, obj: ObjId) -> Self {
        self.0.push(Step::Unpin(obj));
        self
    }

    pub fn remove(mut self, obj: ObjId) -> Self {
        self.0.push(Step::Remove(obj));
        self
    }

    /// Play the script; returns the evicted objects in eviction order. Validates the cache
    /// after every step.
    pub fn play<P: EvictionPolicy>(&self, cache: &mut BlockCache<P>) -> Vec<ObjId> {
        let mut evicted = Vec::new();
        for (t, step) in self.0.iter().enumerate() {
            match *step {
                Step::Ref {
                    obj,
                    pin,
                    next_use,
                    depth,
                } => {
                    let before = cache.resident();
                    let mut a = Access::at(obj, t as u64);
                    a.next_use = next_use;
                    a.depth = depth;
                    if let Outcome::Inserted(_) = cache.access(&a, pin) {
                        evicted.extend(before.into_iter().filter(|&o| !cache.contains(o)));
                    }
                }
                Step::Unpin(obj) => {
                    let e = cache.lookup(obj).expect("unpin of a resident object");
                    cache.unpin(e, t as u64);
                }
                Step::Remove(obj) => {
                    cache.remove(obj);
                }
            }
            cache
                .validate()
                .unwrap_or_else(|err| panic!("after step {t} ({step:?}): {err}"));
        }
        evicted
    }
}

/// Play `script` on a fresh cache of `capacity` objects; returns the evicted objects.
pub fn run<P: EvictionPolicy>(policy: P, capacity: u64, script: &Script) -> Vec<ObjId> {
    script.play(&mut BlockCache::new(capacity, policy))
}
