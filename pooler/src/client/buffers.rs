//! Read buffers lent to clients while data flows: an idle client holds no buffer, an active one
//! takes one from a per-thread free list and gives it back when it goes idle, so 10,000 idle
//! clients cost no buffer memory and busy ones do not allocate per transaction.

use std::cell::RefCell;

use bytes::BytesMut;

/// Capacity of a fresh buffer.
pub const CHUNK: usize = 16 * 1024;
/// Buffers kept per thread for reuse.
const KEEP: usize = 64;
/// Buffers that grew past this (a large row, a big COPY) are freed rather than kept.
const MAX_KEPT_CAPACITY: usize = 4 * CHUNK;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with at least `CHUNK` capacity.
pub fn take() -> BytesMut {
    FREE.with(|f| f.borrow_mut().pop()).unwrap_or_else(|| BytesMut::with_capacity(CHUNK))
}

/// Returns an empty buffer for reuse (a non-empty one is kept by the caller instead).
pub fn give(mut b: BytesMut) {
    if !b.is_empty() {
        return;
    }
    // A buffer read from and advanced past has lost the front of its capacity; an empty one
    // gets it back without allocating (bytes moves the view to the start of its allocation).
    // Without this every transaction freed its buffers and allocated new ones, and the heap's
    // top grew and shrank under it (brk and page faults: a tenth of pgmux's CPU at 16 clients).
    if b.capacity() < CHUNK {
        b.reserve(CHUNK);
    }
    if b.capacity() < CHUNK || b.capacity() > MAX_KEPT_CAPACITY {
        return;
    }
    FREE.with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < KEEP {
            f.push(b);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_oversized_ones_dropped() {
        let b = take();
        assert!(b.capacity() >= CHUNK);
        let ptr = b.as_ptr();
        give(b);
        assert_eq!(take().as_ptr(), ptr, "the same allocation comes back");
        // A buffer advanced past most of its capacity comes back whole, the same allocation.
        let mut used = take();
        let ptr = used.as_ptr();
        used.extend_from_slice(&[1; CHUNK - 10]);
        bytes::Buf::advance(&mut used, CHUNK - 10);
        assert!(used.capacity() < CHUNK);
        give(used);
        let again = take();
        assert_eq!((again.as_ptr(), again.capacity() >= CHUNK), (ptr, true));
        give(again);
        let mut big = BytesMut::with_capacity(MAX_KEPT_CAPACITY * 2);
        big.clear();
        give(big);
        assert!(take().capacity() <= MAX_KEPT_CAPACITY);
    }
}
