//! An intrusive doubly linked list over dense entry ids (prev/next in `Vec`s, no allocation per
//! operation, no `unsafe`): the building block of LRU, FIFO, MRU, SIEVE, S3-FIFO and ARC.

use super::EntryId;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Default)]
pub struct List {
    prev: Vec<u32>,
    next: Vec<u32>,
    /// membership flag per entry
    member: Vec<bool>,
    head: u32,
    tail: u32,
    len: usize,
}

impl List {
    pub fn new() -> Self {
        List {
            head: NIL,
            tail: NIL,
            ..Default::default()
        }
    }

    #[inline]
    fn grow(&mut self, e: EntryId) {
        if self.prev.len() <= e as usize {
            let n = e as usize + 1;
            self.prev.resize(n, NIL);
            self.next.resize(n, NIL);
            self.member.resize(n, false);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn contains(&self, e: EntryId) -> bool {
        self.member.get(e as usize).copied().unwrap_or(false)
    }

    /// The first (oldest) entry.
    #[inline]
    pub fn head(&self) -> Option<EntryId> {
        (self.head != NIL).then_some(self.head)
    }

    /// The last (newest) entry.
    #[inline]
    pub fn tail(&self) -> Option<EntryId> {
        (self.tail != NIL).then_some(self.tail)
    }

    #[inline]
    pub fn next_of(&self, e: EntryId) -> Option<EntryId> {
        let n = self.next[e as usize];
        (n != NIL).then_some(n)
    }

    #[inline]
    pub fn prev_of(&self, e: EntryId) -> Option<EntryId> {
        let p = self.prev[e as usize];
        (p != NIL).then_some(p)
    }

    /// Append `e` (not a member) at the tail.
    #[inline]
    pub fn push_back(&mut self, e: EntryId) {
        self.grow(e);
        debug_assert!(!self.member[e as usize]);
        self.prev[e as usize] = self.tail;
        self.next[e as usize] = NIL;
        if self.tail != NIL {
            self.next[self.tail as usize] = e;
        } else {
            self.head = e;
        }
        self.tail = e;
        self.member[e as usize] = true;
        self.len += 1;
    }

    /// Unlink `e` (a member).
    #[inline]
    pub fn remove(&mut self, e: EntryId) {
        debug_assert!(self.contains(e));
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        if p != NIL {
            self.next[p as usize] = n;
        } else {
            self.head = n;
        }
        if n != NIL {
            self.prev[n as usize] = p;
        } else {
            self.tail = p;
        }
        self.prev[e as usize] = NIL;
        self.next[e as usize] = NIL;
        self.member[e as usize] = false;
        self.len -= 1;
    }

    /// Move a member to the tail.
    #[inline]
    pub fn move_to_back(&mut self, e: EntryId) {
        if self.tail != e {
            self.remove(e);
            self.push_back(e);
        }
    }

    pub fn pop_front(&mut self) -> Option<EntryId> {
        let h = self.head()?;
        self.remove(h);
        Some(h)
    }

    /// Entries from head to tail.
    pub fn iter(&self) -> impl Iterator<Item = EntryId> + '_ {
        let mut cur = self.head;
        std::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let e = cur;
            cur = self.next[e as usize];
            Some(e)
        })
    }

    /// Check links, length and membership flags.
    pub fn validate(&self) -> Result<(), String> {
        let mut count = 0usize;
        let mut prev = NIL;
        let mut cur = self.head;
        while cur != NIL {
            if !self.member[cur as usize] {
                return Err(format!("entry {cur} linked but not flagged as member"));
            }
            if self.prev[cur as usize] != prev {
                return Err(format!("entry {cur} has a wrong prev link"));
            }
            count += 1;
            if count > self.len {
                return Err("list is longer than its length (cycle?)".into());
            }
            prev = cur;
            cur = self.next[cur as usize];
        }
        if prev != self.tail {
            return Err("tail does not end the list".into());
        }
        if count != self.len {
            return Err(format!("length {} but {count} linked", self.len));
        }
        let flagged = self.member.iter().filter(|&&m| m).count();
        if flagged != self.len {
            return Err(format!("{flagged} flagged members, length {}", self.len));
        }
        Ok(())
    }

    /// Check that the members are exactly the entries for which `live` is true.
    pub fn validate_members(
        &self,
        live: &dyn Fn(EntryId) -> bool,
        slab: usize,
    ) -> Result<(), String> {
        self.validate()?;
        for e in 0..slab.max(self.member.len()) as EntryId {
            if self.contains(e) != live(e) {
                return Err(format!(
                    "entry {e}: tracked={} but live={}",
                    self.contains(e),
                    live(e)
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_remove_move() {
        let mut l = List::new();
        for e in [3, 1, 4] {
            l.push_back(e);
            l.validate().unwrap();
        }
        assert_eq!(l.iter().collect::<Vec<_>>(), [3, 1, 4]);
        l.move_to_back(3);
        assert_eq!(l.iter().collect::<Vec<_>>(), [1, 4, 3]);
        l.remove(4);
        l.validate().unwrap();
        assert_eq!(l.iter().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(l.pop_front(), Some(1));
        assert_eq!(l.pop_front(), Some(3));
        assert_eq!(l.pop_front(), None);
        l.validate().unwrap();
    }
}
