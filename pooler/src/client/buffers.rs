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
    if b.capacity() < CHUNK || b.capacity() > MAX_KEPT_CAPACITY || !b.is_empty() {
        return;
    }
    b.clear();
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
        let mut big = BytesMut::with_capacity(MAX_KEPT_CAPACITY * 2);
        big.clear();
        give(big);
        assert!(take().capacity() <= MAX_KEPT_CAPACITY);
    }
}
