//! Read buffers used again: a READ's buffer comes back once its Data-In
//! has gone out, so the next READ of that size neither zeroes nor faults
//! in fresh memory (both show in profiles of sequential reads).

use bytes::Bytes;
use std::sync::{Arc, Mutex, PoisonError};

/// Bytes kept for reuse, all buffers together.
const BUDGET: usize = 16 << 20;
/// Buffers larger than this are freed...
const MAX_KEPT: usize = 4 << 20;
/// ...and so are smaller ones than this: not worth keeping.
const MIN_KEPT: usize = 4096;

/// A free list of read buffers, at most [`BUDGET`] bytes in all.
#[derive(Debug, Default)]
pub struct BufferPool {
    free: Mutex<Free>,
}

#[derive(Debug, Default)]
struct Free {
    buffers: Vec<Vec<u8>>,
    /// Sum of the buffers' capacities.
    bytes: usize,
}

impl BufferPool {
    /// A buffer of `len` bytes. Its contents are whatever a previous read
    /// left (zeroes only where it had to grow): callers overwrite all of it.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let reused = {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            let buf = free.buffers.pop();
            free.bytes -= buf.as_ref().map_or(0, Vec::capacity);
            buf
        };
        match reused {
            Some(mut buf) => {
                buf.resize(len, 0);
                buf
            }
            None => vec![0; len],
        }
    }

    fn give(&self, buf: Vec<u8>) {
        if (MIN_KEPT..=MAX_KEPT).contains(&buf.capacity()) {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            if free.bytes + buf.capacity() <= BUDGET {
                free.bytes += buf.capacity();
                free.buffers.push(buf);
            }
        }
    }

    /// `data` as `Bytes` that return their buffer to `pool` when the last
    /// clone is dropped.
    pub fn wrap(pool: &Arc<Self>, data: Vec<u8>) -> Bytes {
        Bytes::from_owner(Lent {
            data,
            pool: pool.clone(),
        })
    }
}

/// A buffer out of the pool, on its way to the wire.
struct Lent {
    data: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_after_their_bytes_are_dropped() {
        let pool = Arc::new(BufferPool::default());
        let mut first = pool.take(128 << 10);
        first.fill(7);
        let pointer = first.as_ptr();
        let bytes = BufferPool::wrap(&pool, first);
        let slice = bytes.slice(4096..8192);
        drop(bytes);
        assert!(pool.take(64).capacity() < MIN_KEPT, "still lent while a slice lives");
        assert_eq!(&slice[..], &[7; 4096][..]);
        drop(slice);
        let again = pool.take(128 << 10);
        assert_eq!(again.as_ptr(), pointer, "the same memory, not zeroed again");
        assert_eq!(again.len(), 128 << 10);
    }

    #[test]
    fn the_pool_is_bounded() {
        let pool = Arc::new(BufferPool::default());
        let size = 1 << 20;
        let lent: Vec<Bytes> = (0..BUDGET / size + 10)
            .map(|_| BufferPool::wrap(&pool, vec![1; size]))
            .collect();
        drop(lent);
        let kept = |pool: &BufferPool| {
            let free = pool.free.lock().unwrap();
            (free.buffers.len(), free.bytes)
        };
        assert_eq!(kept(&pool), (BUDGET / size, BUDGET));
        let _ = pool.take(size);
        drop(BufferPool::wrap(&pool, vec![0; MAX_KEPT + 1]));
        drop(BufferPool::wrap(&pool, vec![0; 16]));
        assert_eq!(
            kept(&pool),
            (BUDGET / size - 1, BUDGET - size),
            "too big and too small are freed"
        );
    }
}
