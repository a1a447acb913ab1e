//! A process-wide pool of large pixel buffers, recycled between grid cells.
//!
//! A WSI cell needs a few buffers of 44–170 MB (the region as read — or its
//! bands, a few MB each, when it is resized as it is read —, the
//! horizontal resize pass, the standardized 3840² image). Fresh ones cost
//! more than the work done in them: the kernel maps and zeroes every page on
//! first touch (measured on the development VM: up to a third of a 40×
//! build's CPU samples in `clear_page` when another large process ran just
//! before, as the host had taken the freed memory back).
//! Cells of one build have the same sizes, so buffers given back after a cell
//! fit the next one.
//!
//! The pool holds at most [`MAX_BUFFERS`] buffers and [`MAX_BYTES`] in all
//! (less under a small memory budget: [`limit_bytes`]), so what it keeps is
//! bounded by what a few cells in flight need, never by the slide's size or
//! the number of slides.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Most buffers the pool keeps (2 workers × 3 buffers per cell, plus slack).
pub const MAX_BUFFERS: usize = 8;
/// Most bytes the pool keeps in all (one 40× cell needs ~300 MB).
pub const MAX_BYTES: usize = 512 << 20;
/// Buffers smaller than this are not worth pooling (the allocator reuses them).
pub const MIN_BYTES: usize = 1 << 20;

/// A pool of buffers; [`take`] and [`give`] use the process-wide one.
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    /// Most bytes kept: [`MAX_BYTES`] unless lowered.
    limit: AtomicUsize,
}

static POOL: BufferPool = BufferPool::new();

/// Bounds what the process-wide pool keeps to `bytes` (at most
/// [`MAX_BYTES`]): the engine keeps idle buffers within a fraction of its
/// memory budget. Buffers already held beyond it are let go.
pub fn limit_bytes(bytes: u64) {
    let bytes = usize::try_from(bytes).unwrap_or(usize::MAX).min(MAX_BYTES);
    POOL.limit.store(bytes, Ordering::Relaxed);
    if let Ok(mut free) = POOL.free.lock() {
        let mut held: usize = free.iter().map(Vec::capacity).sum();
        while held > bytes {
            match free.pop() {
                Some(b) => held -= b.capacity(),
                None => break,
            }
        }
    }
}

/// [`BufferPool::take`] on the process-wide pool.
pub fn take(len: usize) -> Vec<u8> {
    POOL.take(len)
}

/// [`BufferPool::give`] on the process-wide pool.
pub fn give(buffer: Vec<u8>) {
    POOL.give(buffer)
}

impl BufferPool {
    /// An empty pool.
    pub const fn new() -> BufferPool {
        BufferPool {
            free: Mutex::new(Vec::new()),
            limit: AtomicUsize::new(MAX_BYTES),
        }
    }

    /// A buffer of exactly `len` bytes whose contents are unspecified (stale
    /// pixels of an earlier cell, or zeros): callers overwrite every byte.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let reused = if len >= MIN_BYTES {
            self.free.lock().ok().and_then(|mut free| {
                // The smallest buffer that fits, so a small request does not
                // take the buffer a large one needs.
                let best = free
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.capacity() >= len)
                    .min_by_key(|(_, b)| b.capacity())
                    .map(|(i, _)| i)?;
                Some(free.swap_remove(best))
            })
        } else {
            None
        };
        match reused {
            Some(mut b) => {
                // Only bytes past the old length are written (zeroed) here.
                b.resize(len, 0);
                b
            }
            None => vec![0; len],
        }
    }

    /// Gives a buffer back for later [`BufferPool::take`]s; dropped instead
    /// when it is small or the pool is full.
    pub fn give(&self, buffer: Vec<u8>) {
        if buffer.capacity() < MIN_BYTES {
            return;
        }
        if let Ok(mut free) = self.free.lock() {
            let held: usize = free.iter().map(Vec::capacity).sum();
            let limit = self.limit.load(Ordering::Relaxed);
            if free.len() < MAX_BUFFERS && held + buffer.capacity() <= limit {
                free.push(buffer);
            }
        }
    }
}

impl Default for BufferPool {
    fn default() -> Self {
        BufferPool::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_with_the_requested_length() {
        let pool = BufferPool::new();
        let big = pool.take(3 * MIN_BYTES);
        assert_eq!(big.len(), 3 * MIN_BYTES);
        let ptr = big.as_ptr();
        pool.give(big);
        // A smaller request reuses it (same allocation), truncated.
        let again = pool.take(2 * MIN_BYTES);
        assert_eq!((again.len(), again.as_ptr()), (2 * MIN_BYTES, ptr));
        pool.give(again);
        // Growing back within the capacity keeps the allocation too.
        let grown = pool.take(3 * MIN_BYTES);
        assert_eq!((grown.len(), grown.as_ptr()), (3 * MIN_BYTES, ptr));
        // Small buffers are not pooled; a request larger than every pooled
        // buffer gets a fresh, zeroed one.
        pool.give(vec![1; 10]);
        assert!(pool.free.lock().unwrap().is_empty());
        pool.give(grown);
        let fresh = pool.take(4 * MIN_BYTES);
        assert_ne!(fresh.as_ptr(), ptr);
        assert!(fresh.iter().all(|&b| b == 0));
    }

    #[test]
    fn the_pool_is_bounded() {
        let pool = BufferPool::new();
        for _ in 0..MAX_BUFFERS + 3 {
            pool.give(Vec::with_capacity(MIN_BYTES));
        }
        assert_eq!(pool.free.lock().unwrap().len(), MAX_BUFFERS);
        let pool = BufferPool::new();
        for _ in 0..3 {
            pool.give(Vec::with_capacity(MAX_BYTES / 2));
        }
        assert_eq!(pool.free.lock().unwrap().len(), 2);
    }
}
