//! In-place edits of a relay buffer: replace a byte range with other bytes, moving only what
//! follows it. The buffer keeps its allocation (no split/unsplit, which would reallocate), so
//! rewriting a statement name or dropping a ParseComplete costs a `memmove` of the unsent tail.
//! Messages pgmux injects are built in a scratch buffer of the thread's, not of each client's.

use std::cell::RefCell;

use bytes::BytesMut;

/// A scratch buffer that grew past this (a long statement text injected) is freed after use.
const MAX_KEPT_SCRATCH: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Builds messages with `build` in the thread's scratch buffer and inserts them into `buf` at
/// `at`; returns their length. A client's task holds no buffer of its own for them.
pub fn insert_built(buf: &mut BytesMut, at: usize, build: impl FnOnce(&mut BytesMut)) -> usize {
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        build(scratch);
        replace(buf, at, 0, scratch);
        let n = scratch.len();
        if scratch.capacity() > MAX_KEPT_SCRATCH {
            *scratch = BytesMut::new();
        }
        n
    })
}

/// Replaces `buf[at..at + remove]` with `insert`.
///
/// # Panics
/// `at + remove` is past the end of `buf` (a caller bug: ranges come from scanned headers).
pub fn replace(buf: &mut BytesMut, at: usize, remove: usize, insert: &[u8]) {
    let old_len = buf.len();
    let end = at + remove;
    assert!(end <= old_len, "splice range past the end of the buffer");
    if insert.len() > remove {
        buf.resize(old_len + insert.len() - remove, 0);
        buf.copy_within(end..old_len, at + insert.len());
    } else if insert.len() < remove {
        buf.copy_within(end..old_len, at + insert.len());
        buf.truncate(old_len - (remove - insert.len()));
    }
    buf[at..at + insert.len()].copy_from_slice(insert);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_shrinks_and_removes_in_place() {
        let mut b = BytesMut::from(&b"aaXXbb"[..]);
        replace(&mut b, 2, 2, b"YYYY");
        assert_eq!(&b[..], b"aaYYYYbb");
        replace(&mut b, 2, 4, b"Z");
        assert_eq!(&b[..], b"aaZbb");
        replace(&mut b, 0, 2, b"");
        assert_eq!(&b[..], b"Zbb");
        replace(&mut b, 3, 0, b"!");
        assert_eq!(&b[..], b"Zbb!");
        assert_eq!(insert_built(&mut b, 1, |s| s.extend_from_slice(b"--")), 2);
        assert_eq!(&b[..], b"Z--bb!");
    }
}
