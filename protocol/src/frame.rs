//! Splitting a byte stream into whole messages (tag + length + body) without copying.

use bytes::{Bytes, BytesMut};

use crate::ProtocolError;

/// One whole message: `raw` is tag + length + body, a slice of the read buffer, forwarded as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message type byte.
    pub tag: u8,
    /// The whole message including tag and length.
    pub raw: Bytes,
}

impl Frame {
    /// The message body after tag and length.
    pub fn body(&self) -> &[u8] {
        &self.raw[5..]
    }
}

/// Header of the next message in `buf`, if five bytes are there: (tag, total length with tag).
///
/// # Errors
/// A length word below 4 or a total above `max_len`.
pub fn peek_header(buf: &[u8], max_len: usize) -> Result<Option<(u8, usize)>, ProtocolError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(ProtocolError::BadLength(len));
    }
    let total = len as usize + 1;
    if total > max_len {
        return Err(ProtocolError::Oversized(total));
    }
    Ok(Some((buf[0], total)))
}

/// PostgreSQL's longest Terminate, Close, Describe, Execute, Flush, Sync, CopyDone and CopyFail
/// (its PQ_SMALL_MESSAGE_LIMIT), length word included.
pub const POSTGRES_SMALL_MESSAGE: usize = 10_000;
/// PostgreSQL's longest message of any other type a client sends (PQ_LARGE_MESSAGE_LIMIT).
pub const POSTGRES_LARGE_MESSAGE: usize = 0x3fff_fffe;

/// True when PostgreSQL reads a client message of type `tag` and `total` bytes (tag included).
/// A longer one makes the backend drop the connection without a word.
pub fn postgres_reads(tag: u8, total: usize) -> bool {
    let limit = match tag {
        b'X' | b'C' | b'D' | b'E' | b'H' | b'S' | b'c' | b'f' => POSTGRES_SMALL_MESSAGE,
        _ => POSTGRES_LARGE_MESSAGE,
    };
    total - 1 <= limit
}

/// Takes the next whole message off the front of `buf`; `Ok(None)` when more bytes are needed.
///
/// # Errors
/// A length word below 4 (it must count itself) or a message longer than `max_len`.
pub fn split_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, ProtocolError> {
    let Some((tag, total)) = peek_header(buf, max_len)? else {
        return Ok(None);
    };
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(Frame { tag, raw: buf.split_to(total).freeze() }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_reads_what_its_limits_allow() {
        use super::postgres_reads;
        assert!(postgres_reads(b'S', 5));
        assert!(postgres_reads(b'S', 10_001));
        assert!(!postgres_reads(b'S', 10_002));
        assert!(!postgres_reads(b'f', 20_000));
        assert!(postgres_reads(b'Q', 0x3fff_ffff));
        assert!(!postgres_reads(b'Q', 0x4000_0001));
        assert!(postgres_reads(b'd', 1 << 29));
    }

    use super::*;

    #[test]
    fn splits_whole_messages_and_waits_for_partial_ones() {
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05IQ\0\0\0\x09SEL"[..]);
        let f = split_frame(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(f.tag, b'Z');
        assert_eq!(f.body(), b"I");
        assert!(split_frame(&mut buf, 1 << 20).unwrap().is_none());
        buf.extend_from_slice(b"1\0");
        let f = split_frame(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(f.body(), b"SEL1\0");
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_bad_lengths() {
        for (bytes, want) in [
            (&b"Q\0\0\0\x03"[..], ProtocolError::BadLength(3)),
            (&b"Q\xff\xff\xff\xff"[..], ProtocolError::BadLength(-1)),
            (&b"Q\x7f\xff\xff\xff"[..], ProtocolError::Oversized(0x8000_0000)),
        ] {
            let mut buf = BytesMut::from(bytes);
            assert_eq!(split_frame(&mut buf, 1 << 20).unwrap_err(), want);
        }
    }
}
