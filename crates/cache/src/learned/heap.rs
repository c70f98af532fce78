//! A 4-ary max-heap for the order's sets (`learned/order.rs`): half the levels of a binary heap,
//! so a pop, the order's most frequent heap operation, reads fewer cache lines. Its items are
//! all distinct (each carries its entry and a sequence number), so any max-heap pops them in
//! the same sequence as `std::collections::BinaryHeap`: the decisions do not depend on it.

const ARITY: usize = 4;

#[derive(Debug, Clone)]
pub struct QuadHeap<T> {
    data: Vec<T>,
}

impl<T> Default for QuadHeap<T> {
    fn default() -> Self {
        QuadHeap { data: Vec::new() }
    }
}

impl<T: Ord + Copy> QuadHeap<T> {
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

    #[inline]
    pub fn push(&mut self, x: T) {
        let i = self.data.len();
        self.data.push(x);
        self.sift_up(i, x);
    }

    /// Put `x` in the hole at `i` and move it up to its place.
    #[inline]
    fn sift_up(&mut self, mut i: usize, x: T) {
        while i > 0 {
            let parent = (i - 1) / ARITY;
            if self.data[parent] >= x {
                break;
            }
            self.data[i] = self.data[parent];
            i = parent;
        }
        self.data[i] = x;
    }

    /// Remove and return the largest item.
    #[inline]
    pub fn pop(&mut self) -> Option<T> {
        let last = self.data.pop()?;
        if self.data.is_empty() {
            return Some(last);
        }
        let top = self.data[0];
        self.sift_down_to_bottom(last);
        Some(top)
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
            self.data[i] = self.data[best];
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
            let end = (first + ARITY).min(n);
            let mut best = first;
            for c in first + 1..end {
                if self.data[c] > self.data[best] {
                    best = c;
                }
            }
            if self.data[best] <= x {
                break;
            }
            self.data[i] = self.data[best];
            i = best;
        }
        self.data[i] = x;
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

    /// Keep only the items for which `keep` is true (rebuilds the heap).
    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.data.retain(keep);
        let n = self.data.len();
        if n > 1 {
            for i in (0..=(n - 2) / ARITY).rev() {
                let x = self.data[i];
                self.sift_down(i, x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BinaryHeap;

    /// Pushes, pops and retains in a pseudo-random mix give the same items as `BinaryHeap`.
    #[test]
    fn pops_as_binary_heap() {
        let mut q = QuadHeap::default();
        let mut b = BinaryHeap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 7 {
                0..=3 => {
                    let item = (x % 1000, step);
                    q.push(item);
                    b.push(item);
                }
                4 | 5 => assert_eq!(q.pop(), b.pop()),
                _ if step % 500 == 6 => {
                    q.retain(|&(k, _)| k % 3 != 0);
                    b.retain(|&(k, _)| k % 3 != 0);
                }
                _ => {}
            }
            assert_eq!(q.len(), b.len());
            assert_eq!(q.peek(), b.peek());
        }
        while let Some(v) = b.pop() {
            assert_eq!(q.pop(), Some(v));
        }
        assert!(q.is_empty());
        assert_eq!(q.pop(), None);
    }
}
