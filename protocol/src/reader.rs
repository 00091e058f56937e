//! A bounds-checked cursor over a message body: every read returns `Result`, none can panic.

use crate::ProtocolError;

/// Cursor over untrusted bytes; `what` names the message in errors.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    /// Bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// True when everything was read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next `n` bytes.
    ///
    /// # Errors
    /// Fewer than `n` bytes left.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(ProtocolError::Truncated(self.what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// A big-endian i32.
    ///
    /// # Errors
    /// Fewer than four bytes left.
    pub fn i32(&mut self) -> Result<i32, ProtocolError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A big-endian i16.
    ///
    /// # Errors
    /// Fewer than two bytes left.
    pub fn i16(&mut self) -> Result<i16, ProtocolError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    /// One byte.
    ///
    /// # Errors
    /// Nothing left.
    pub fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.bytes(1)?[0])
    }

    /// A NUL-terminated string, without the NUL.
    ///
    /// # Errors
    /// No NUL before the end.
    pub fn cstr(&mut self) -> Result<&'a [u8], ProtocolError> {
        let end = memchr::memchr(0, self.buf).ok_or(ProtocolError::Unterminated(self.what))?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    /// A NUL-terminated string that must be UTF-8.
    ///
    /// # Errors
    /// No NUL, or invalid UTF-8.
    pub fn cstr_utf8(&mut self) -> Result<&'a str, ProtocolError> {
        std::str::from_utf8(self.cstr()?).map_err(|_| ProtocolError::Invalid("invalid UTF-8 in string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        let mut r = Reader::new(b"ab", "test");
        assert!(r.i32().is_err());
        assert!(r.cstr().is_err());
        assert_eq!(r.bytes(2).unwrap(), b"ab");
        assert!(r.u8().is_err());
        assert!(r.i16().is_err());
    }
}
