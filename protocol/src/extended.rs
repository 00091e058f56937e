//! The extended-query messages that name a prepared statement (Parse, Bind, Describe, Close):
//! views of what a client sends and builders for what pgmux sends instead (protocol docs:
//! "Extended Query"). Views borrow the body and read only up to the statement name, so a large
//! Bind can be rewritten before its parameters have arrived.

use bytes::{BufMut, BytesMut};

use crate::reader::Reader;
use crate::ProtocolError;

/// Describe / Close target kind: a prepared statement.
pub const STATEMENT: u8 = b'S';
/// Describe / Close target kind: a portal.
pub const PORTAL: u8 = b'P';

/// A Parse body: the statement name and everything after it (query text, parameter types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Statement name; empty for the unnamed statement.
    pub name: &'a [u8],
    /// Query text with its NUL, parameter count and types, exactly as sent.
    pub rest: &'a [u8],
}

/// Reads a whole Parse body.
///
/// # Errors
/// No NUL after the name, or no query text after it.
pub fn parse(body: &[u8]) -> Result<Parse<'_>, ProtocolError> {
    let mut r = Reader::new(body, "Parse");
    let name = r.cstr()?;
    let rest = r.rest();
    // Query text, then an int16 count of parameter types (PostgreSQL checks the rest).
    let mut q = Reader::new(rest, "Parse");
    q.cstr()?;
    q.i16()?;
    Ok(Parse { name, rest })
}

/// The start of a Bind body: portal and statement names. The parameters that follow are not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindHead<'a> {
    /// Destination portal; empty for the unnamed portal.
    pub portal: &'a [u8],
    /// Source statement; empty for the unnamed statement.
    pub statement: &'a [u8],
}

impl BindHead<'_> {
    /// Offset of the statement name in the body.
    pub fn statement_at(&self) -> usize {
        self.portal.len() + 1
    }
}

/// Reads the portal and statement names at the start of a Bind body, which may be partial.
///
/// # Errors
/// A name is not terminated within `body` (more bytes needed, or a malformed message).
pub fn bind_head(body: &[u8]) -> Result<BindHead<'_>, ProtocolError> {
    let mut r = Reader::new(body, "Bind");
    Ok(BindHead { portal: r.cstr()?, statement: r.cstr()? })
}

/// Describe or Close: what is targeted and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// [`STATEMENT`] or [`PORTAL`].
    pub kind: u8,
    /// Its name; empty for the unnamed one.
    pub name: &'a [u8],
}

impl Target<'_> {
    /// A named prepared statement (not a portal, not the unnamed statement).
    pub fn is_named_statement(&self) -> bool {
        self.kind == STATEMENT && !self.name.is_empty()
    }

    /// The unnamed prepared statement.
    pub fn is_unnamed_statement(&self) -> bool {
        self.kind == STATEMENT && self.name.is_empty()
    }
}

/// Reads a Describe or Close body.
///
/// # Errors
/// Empty body, an unknown kind, or no NUL after the name.
pub fn target(body: &[u8]) -> Result<Target<'_>, ProtocolError> {
    let mut r = Reader::new(body, "Describe/Close");
    let kind = r.u8()?;
    if kind != STATEMENT && kind != PORTAL {
        return Err(ProtocolError::Invalid("bad Describe/Close kind"));
    }
    Ok(Target { kind, name: r.cstr()? })
}

fn header(buf: &mut BytesMut, tag: u8, body_len: usize) {
    buf.put_u8(tag);
    buf.put_i32((body_len + 4) as i32);
}

/// Parse of statement `name` with the query text and types of another Parse (`Parse::rest`).
pub fn parse_raw(buf: &mut BytesMut, name: &[u8], rest: &[u8]) {
    header(buf, b'P', name.len() + 1 + rest.len());
    buf.put_slice(name);
    buf.put_u8(0);
    buf.put_slice(rest);
}

/// Close (`b'C'`) or Describe (`b'D'`) of `kind` / `name`.
pub fn target_message(buf: &mut BytesMut, tag: u8, kind: u8, name: &[u8]) {
    header(buf, tag, name.len() + 2);
    buf.put_u8(kind);
    buf.put_slice(name);
    buf.put_u8(0);
}

/// ParseComplete (`b'1'`) or CloseComplete (`b'3'`): what pgmux answers for a Parse or Close it
/// did not send (as PgBouncer's fake responses).
pub fn complete(buf: &mut BytesMut, tag: u8) {
    header(buf, tag, 0);
}

/// The tag of a CommandComplete body, without the NUL.
///
/// # Errors
/// No NUL terminator.
pub fn command_tag(body: &[u8]) -> Result<&[u8], ProtocolError> {
    Reader::new(body, "CommandComplete").cstr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split_frame;

    #[test]
    fn parse_round_trips_and_keeps_types() {
        let mut buf = BytesMut::new();
        parse_raw(&mut buf, b"s1", b"SELECT $1\0\0\x01\0\0\0\x17");
        let f = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f.tag, b'P');
        let p = parse(f.body()).unwrap();
        assert_eq!(p.name, b"s1");
        assert_eq!(p.rest, b"SELECT $1\0\0\x01\0\0\0\x17");
    }

    #[test]
    fn targets_round_trip() {
        let mut buf = BytesMut::new();
        target_message(&mut buf, b'C', STATEMENT, b"pgmux_1");
        target_message(&mut buf, b'D', PORTAL, b"");
        let f = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!((f.tag, target(f.body()).unwrap()), (b'C', Target { kind: STATEMENT, name: b"pgmux_1" }));
        assert!(target(f.body()).unwrap().is_named_statement());
        let f = split_frame(&mut buf, 1024).unwrap().unwrap();
        assert!(!target(f.body()).unwrap().is_named_statement());
    }

    #[test]
    fn bind_head_reads_only_names() {
        let h = bind_head(b"p\0stmt\0\0\0").unwrap();
        assert_eq!((h.portal, h.statement, h.statement_at()), (&b"p"[..], &b"stmt"[..], 2));
        // The parameters may not have arrived yet.
        assert_eq!(bind_head(b"\0s\0").unwrap().statement, b"s");
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for bad in [&b""[..], b"name", b"name\0", b"name\0query"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        for bad in [&b""[..], b"portal", b"\0stmt"] {
            assert!(bind_head(bad).is_err(), "{bad:?}");
        }
        for bad in [&b""[..], b"S", b"Xname\0", b"Sname"] {
            assert!(target(bad).is_err(), "{bad:?}");
        }
        assert!(command_tag(b"DISCARD ALL").is_err());
        assert_eq!(command_tag(b"DISCARD ALL\0").unwrap(), b"DISCARD ALL");
    }
}
