//! In-place edits of a relay buffer: replace a byte range with other bytes, moving only what
//! follows it. The buffer keeps its allocation (no split/unsplit, which would reallocate), so
//! rewriting a statement name or dropping a ParseComplete costs a `memmove` of the unsent tail.

use bytes::BytesMut;

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
    }
}
