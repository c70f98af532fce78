//! An intrusive doubly linked list over dense ids (prev/next side by side in one `Vec`, no allocation per
//! operation, no `unsafe`): the building block of LRU, FIFO, MRU, SIEVE, S3-FIFO and ARC.

use super::EntryId;

const NIL: u32 = u32::MAX;
/// `prev` of an id that is not in the list (ids must stay below this)
const OUT: u32 = u32::MAX - 1;

/// The links of one id, side by side so that a list operation touches one cache line per id.
#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

const DETACHED: Link = Link {
    prev: OUT,
    next: NIL,
};

#[derive(Debug, Clone)]
pub struct List {
    /// per id; `prev == OUT` for ids not in the list
    links: Vec<Link>,
    head: u32,
    tail: u32,
    len: usize,
}

impl Default for List {
    fn default() -> Self {
        List::new()
    }
}

impl List {
    pub fn new() -> Self {
        List {
            links: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    #[inline]
    fn grow(&mut self, e: EntryId) {
        debug_assert!(e < OUT, "id {e} too large for a list");
        if self.links.len() <= e as usize {
            self.links.resize(e as usize + 1, DETACHED);
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
        self.links.get(e as usize).is_some_and(|l| l.prev != OUT)
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
        let n = self.links[e as usize].next;
        (n != NIL).then_some(n)
    }

    #[inline]
    pub fn prev_of(&self, e: EntryId) -> Option<EntryId> {
        let p = self.links[e as usize].prev;
        (p != NIL && p != OUT).then_some(p)
    }

    /// Append `e` (not a member) at the tail.
    #[inline]
    pub fn push_back(&mut self, e: EntryId) {
        self.grow(e);
        debug_assert!(!self.contains(e));
        self.links[e as usize] = Link {
            prev: self.tail,
            next: NIL,
        };
        if self.tail != NIL {
            self.links[self.tail as usize].next = e;
        } else {
            self.head = e;
        }
        self.tail = e;
        self.len += 1;
    }

    /// Unlink `e` (a member).
    #[inline]
    pub fn remove(&mut self, e: EntryId) {
        debug_assert!(self.contains(e));
        let Link { prev: p, next: n } = self.links[e as usize];
        if p != NIL {
            self.links[p as usize].next = n;
        } else {
            self.head = n;
        }
        if n != NIL {
            self.links[n as usize].prev = p;
        } else {
            self.tail = p;
        }
        self.links[e as usize] = DETACHED;
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
            cur = self.links[e as usize].next;
            Some(e)
        })
    }

    /// Check links, length and membership.
    pub fn validate(&self) -> Result<(), String> {
        let mut count = 0usize;
        let mut prev = NIL;
        let mut cur = self.head;
        while cur != NIL {
            let Some(link) = self.links.get(cur as usize) else {
                return Err(format!("entry {cur} linked but has no slot"));
            };
            if link.prev == OUT {
                return Err(format!("entry {cur} linked but not flagged as member"));
            }
            if link.prev != prev {
                return Err(format!("entry {cur} has a wrong prev link"));
            }
            count += 1;
            if count > self.len {
                return Err("list is longer than its length (cycle?)".into());
            }
            prev = cur;
            cur = link.next;
        }
        if prev != self.tail {
            return Err("tail does not end the list".into());
        }
        if count != self.len {
            return Err(format!("length {} but {count} linked", self.len));
        }
        let flagged = self.links.iter().filter(|l| l.prev != OUT).count();
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
        for e in 0..slab.max(self.links.len()) as EntryId {
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
