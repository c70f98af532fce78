//! Per-object state indexed by object id, grown a chunk at a time so that growing never
//! copies: a `Vec` that doubles copies what it holds and touches twice its final memory, and a
//! run pays each page it touches in a fault (glibc returns the memory between runs). On the
//! Mooncake bench, most of a run's page faults were such copies.

const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;

/// A value per index, `fill` until set; storage is allocated in chunks of 4,096 values.
#[derive(Debug, Clone)]
pub struct Chunked<T> {
    chunks: Vec<Box<[T]>>,
    fill: T,
}

impl<T: Copy + Default> Default for Chunked<T> {
    fn default() -> Self {
        Chunked::new(T::default())
    }
}

impl<T: Copy> Chunked<T> {
    pub fn new(fill: T) -> Self {
        Chunked {
            chunks: Vec::new(),
            fill,
        }
    }

    /// The value of `i` (`fill` when never set).
    #[inline]
    pub fn get(&self, i: usize) -> T {
        match self.chunks.get(i >> CHUNK_BITS) {
            Some(c) => c[i & (CHUNK - 1)],
            None => self.fill,
        }
    }

    /// The value of `i`, its chunk created (`fill`) when new.
    #[inline]
    pub fn get_mut(&mut self, i: usize) -> &mut T {
        let c = i >> CHUNK_BITS;
        if self.chunks.len() <= c {
            self.grow(c);
        }
        &mut self.chunks[c][i & (CHUNK - 1)]
    }

    #[cold]
    fn grow(&mut self, c: usize) {
        while self.chunks.len() <= c {
            self.chunks.push(vec![self.fill; CHUNK].into_boxed_slice());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fill_until_set() {
        let mut c = Chunked::new(7u32);
        assert_eq!(c.get(0), 7);
        assert_eq!(c.get(100_000), 7);
        *c.get_mut(5000) = 1;
        *c.get_mut(CHUNK - 1) = 2;
        assert_eq!(
            (c.get(5000), c.get(CHUNK - 1), c.get(4999), c.get(CHUNK)),
            (1, 2, 7, 7)
        );
        assert_eq!(c.chunks.len(), 2);
    }
}
