//! A 4-ary max-heap with a position index for the order's sets (`learned/order.rs`): each item
//! belongs to one entry (its [`Keyed::id`], at most one item per entry), so a touch moves the
//! entry's item in place and an eviction takes it out wherever it is, instead of leaving a
//! dead item behind to be popped or compacted later. Four children per node: half the levels
//! of a binary heap, so a pop reads fewer cache lines. The items are all distinct (each
//! carries its entry), so any max-heap pops them in the same sequence as
//! `std::collections::BinaryHeap`: the decisions do not depend on it.

const ARITY: usize = 4;
const ABSENT: u32 = u32::MAX;

/// An item that knows the entry it belongs to.
pub trait Keyed: Ord + Copy {
    fn id(&self) -> u32;
    /// The same item for entry `id` (for [`QuadHeap::renumber`]).
    fn with_id(self, id: u32) -> Self;
}

#[derive(Debug, Clone)]
pub struct QuadHeap<T> {
    data: Vec<T>,
    /// per entry: the index of its item in `data`, or `ABSENT`
    pos: Vec<u32>,
}

impl<T> Default for QuadHeap<T> {
    fn default() -> Self {
        QuadHeap {
            data: Vec::new(),
            pos: Vec::new(),
        }
    }
}

impl<T: Keyed> QuadHeap<T> {
    #[inline]
    pub fn len(&self) -> usize {
        self.data.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The largest item.
    #[inline]
    pub fn peek(&self) -> Option<&T> {
        self.data.first()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.data.iter()
    }

    /// The item of entry `id`, if it has one.
    #[inline]
    pub fn get(&self, id: u32) -> Option<&T> {
        match self.pos.get(id as usize) {
            Some(&p) if p != ABSENT => Some(&self.data[p as usize]),
            _ => None,
        }
    }

    /// Insert `x`, or replace the item of its entry with it.
    #[inline]
    pub fn set(&mut self, x: T) {
        let id = x.id() as usize;
        if self.pos.len() <= id {
            self.pos.resize(id + 1, ABSENT);
        }
        let p = self.pos[id];
        if p == ABSENT {
            let i = self.data.len();
            self.data.push(x);
            self.sift_up(i, x);
        } else {
            let p = p as usize;
            if x > self.data[p] {
                self.sift_up(p, x);
            } else {
                self.sift_down(p, x);
            }
        }
    }

    /// Remove and return the item of entry `id`, if it has one.
    #[inline]
    pub fn remove(&mut self, id: u32) -> Option<T> {
        let p = match self.pos.get(id as usize) {
            Some(&p) if p != ABSENT => p as usize,
            _ => return None,
        };
        self.pos[id as usize] = ABSENT;
        let old = self.data[p];
        let last = self.data.pop().expect("the entry's item is in the heap");
        if p < self.data.len() {
            // the last item fills the hole
            if last > old {
                self.sift_up(p, last);
            } else {
                self.sift_down(p, last);
            }
        }
        Some(old)
    }

    /// Remove and return the largest item.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        let top = *self.data.first()?;
        self.pos[top.id() as usize] = ABSENT;
        let last = self.data.pop().expect("not empty");
        if !self.data.is_empty() {
            self.sift_down_to_bottom(last);
        }
        Some(top)
    }

    #[inline]
    fn place(&mut self, i: usize, x: T) {
        self.data[i] = x;
        self.pos[x.id() as usize] = i as u32;
    }

    /// Put `x` in the hole at `i` and move it up to its place.
    #[inline]
    fn sift_up(&mut self, mut i: usize, x: T) {
        while i > 0 {
            let parent = (i - 1) / ARITY;
            let p = self.data[parent];
            if p >= x {
                break;
            }
            self.place(i, p);
            i = parent;
        }
        self.place(i, x);
    }

    /// Fill the hole at the root with the largest children down to a leaf, then put `x` there
    /// and move it up (Floyd's: the last item usually belongs near the bottom, so this skips
    /// comparing it on the way down).
    #[inline]
    fn sift_down_to_bottom(&mut self, x: T) {
        let n = self.data.len();
        let mut i = 0;
        loop {
            let first = ARITY * i + 1;
            if first >= n {
                break;
            }
            let best = self.largest_child(first, n);
            let b = self.data[best];
            self.place(i, b);
            i = best;
        }
        self.sift_up(i, x);
    }

    /// Put `x` in the hole at `i` and move it down to its place.
    #[inline]
    fn sift_down(&mut self, mut i: usize, x: T) {
        let n = self.data.len();
        loop {
            let first = ARITY * i + 1;
            if first >= n {
                break;
            }
            let best = self.largest_child(first, n);
            let b = self.data[best];
            if b <= x {
                break;
            }
            self.place(i, b);
            i = best;
        }
        self.place(i, x);
    }

    /// The index of the largest of the children from `first` (a tournament: two independent
    /// comparisons, then one).
    #[inline]
    fn largest_child(&self, first: usize, n: usize) -> usize {
        if first + ARITY <= n {
            let c = &self.data[first..first + ARITY];
            let a = if c[1] > c[0] { 1 } else { 0 };
            let b = if c[3] > c[2] { 3 } else { 2 };
            first + if c[b] > c[a] { b } else { a }
        } else {
            let mut best = first;
            for c in first + 1..n {
                if self.data[c] > self.data[best] {
                    best = c;
                }
            }
            best
        }
    }

    /// Give every entry the id `new_id(id)`. `new_id` must be strictly increasing, so that
    /// the items keep their order (the entry breaks ties) and the heap stays a heap.
    pub fn renumber(&mut self, new_id: &dyn Fn(u32) -> u32) {
        self.pos.clear();
        for (p, x) in self.data.iter_mut().enumerate() {
            *x = x.with_id(new_id(x.id()));
            let id = x.id() as usize;
            if self.pos.len() <= id {
                self.pos.resize(id + 1, ABSENT);
            }
            self.pos[id] = p as u32;
        }
    }

    /// The heap property and the position index hold.
    pub fn validate(&self) -> Result<(), String> {
        for (i, x) in self.data.iter().enumerate() {
            if i > 0 && self.data[(i - 1) / ARITY] < *x {
                return Err(format!("item {i} is larger than its parent"));
            }
            if self.pos.get(x.id() as usize) != Some(&(i as u32)) {
                return Err(format!("item {i}'s entry {} is not indexed there", x.id()));
            }
        }
        let indexed = self.pos.iter().filter(|&&p| p != ABSENT).count();
        if indexed != self.data.len() {
            return Err(format!(
                "{indexed} entries indexed, {} items",
                self.data.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// (key, entry): one item per entry.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct Item(u64, u32);

    impl Keyed for Item {
        fn id(&self) -> u32 {
            self.1
        }
        fn with_id(self, id: u32) -> Self {
            Item(self.0, id)
        }
    }

    /// Sets, removals and pops in a pseudo-random mix give the items of a sorted set (the
    /// reference) in the same sequence.
    #[test]
    fn pops_as_a_sorted_set() {
        let mut q = QuadHeap::default();
        let mut reference: BTreeSet<Item> = BTreeSet::new();
        let mut key = vec![None::<u64>; 300];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..40_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let e = (x >> 20) as u32 % 300;
            match x % 7 {
                0..=3 => {
                    // insert or move (up or down) entry e's item
                    let item = Item(x % 1000, e);
                    if let Some(k) = key[e as usize].replace(item.0) {
                        reference.remove(&Item(k, e));
                    }
                    reference.insert(item);
                    q.set(item);
                }
                4 => {
                    let want = key[e as usize].take().map(|k| Item(k, e));
                    if let Some(w) = want {
                        reference.remove(&w);
                    }
                    assert_eq!(q.remove(e), want);
                }
                _ => {
                    let want = reference.pop_last();
                    if let Some(w) = want {
                        key[w.1 as usize] = None;
                    }
                    assert_eq!(q.pop(), want);
                }
            }
            assert_eq!(q.len(), reference.len());
            assert_eq!(q.peek(), reference.last());
            assert_eq!(
                q.get(e),
                key[e as usize].map(|k| Item(k, e)).as_ref(),
                "step {step}"
            );
            if step % 1000 == 0 {
                q.validate().unwrap();
            }
        }
        while let Some(v) = reference.pop_last() {
            assert_eq!(q.pop(), Some(v));
        }
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
        q.validate().unwrap();
    }
}
