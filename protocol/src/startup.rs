//! The first packet of a connection: StartupMessage, SSLRequest, GSSENCRequest or CancelRequest.
//! It has no tag byte, only a length word and a 32-bit code.

use bytes::BytesMut;

use crate::reader::Reader;
use crate::ProtocolError;

/// Protocol 3.0.
pub const PROTOCOL_3_0: i32 = 196_608;
/// SSLRequest code.
pub const SSL_REQUEST: i32 = 80_877_103;
/// GSSENCRequest code.
pub const GSSENC_REQUEST: i32 = 80_877_104;
/// CancelRequest code.
pub const CANCEL_REQUEST: i32 = 80_877_102;
/// Longest startup packet accepted, as PostgreSQL's MAX_STARTUP_PACKET_LENGTH.
pub const MAX_STARTUP_LEN: usize = 10_000;

/// A decoded first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// A session start with its parameters in the order sent.
    Startup {
        /// Protocol version word (major << 16 | minor).
        version: i32,
        /// Parameter names and values (user, database, options, ...).
        params: Vec<(String, String)>,
    },
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// Cancel the query running under this key.
    Cancel {
        /// Process id from BackendKeyData.
        pid: i32,
        /// Secret key from BackendKeyData.
        secret: i32,
    },
}

/// Takes the first packet off `buf`; `Ok(None)` when more bytes are needed.
///
/// # Errors
/// A length outside 8..=10000, an unknown code, a protocol major version other than 3, or
/// parameters that are not NUL-terminated UTF-8 pairs.
pub fn split_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    // Every packet of the opening has a length and a code: nothing is judged before both are
    // there (as PgBouncer waits for a whole header).
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if !(8..=MAX_STARTUP_LEN as i32).contains(&len) {
        return Err(ProtocolError::BadLength(len));
    }
    if buf.len() < len as usize {
        return Ok(None);
    }
    let packet = buf.split_to(len as usize);
    parse_startup(&packet[4..]).map(Some)
}

/// A CancelRequest that is not exactly a code and a key.
pub const BAD_CANCEL: &str = "bad cancel request";

/// A protocol version or request code no PostgreSQL knows.
pub const UNKNOWN_CODE: &str = "unsupported protocol version";

fn parse_startup(body: &[u8]) -> Result<StartupPacket, ProtocolError> {
    let mut r = Reader::new(body, "startup");
    let code = r.i32()?;
    match code {
        SSL_REQUEST if r.is_empty() => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST if r.is_empty() => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => {
            if r.rest().len() != 8 {
                return Err(ProtocolError::Invalid(BAD_CANCEL));
            }
            let pid = r.i32()?;
            let secret = r.i32()?;
            Ok(StartupPacket::Cancel { pid, secret })
        }
        v if v >> 16 == 3 => {
            let mut params = Vec::new();
            loop {
                let name = r.cstr_utf8()?;
                if name.is_empty() {
                    break;
                }
                let value = r.cstr_utf8()?;
                params.push((name.to_owned(), value.to_owned()));
            }
            // The list's terminator must be the packet's last byte.
            if !r.is_empty() {
                return Err(ProtocolError::Unterminated("startup"));
            }
            Ok(StartupPacket::Startup { version: v, params })
        }
        v if v >> 16 == 2 => Err(ProtocolError::OldProtocol),
        _ => Err(ProtocolError::Invalid(UNKNOWN_CODE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build;

    #[test]
    fn round_trips_a_startup_message() {
        let mut buf = BytesMut::new();
        build::startup_message(&mut buf, &[("user", "alice"), ("database", "app")]);
        let p = split_startup(&mut buf).unwrap().unwrap();
        assert_eq!(
            p,
            StartupPacket::Startup {
                version: PROTOCOL_3_0,
                params: vec![("user".into(), "alice".into()), ("database".into(), "app".into())]
            }
        );
    }

    #[test]
    fn decodes_ssl_and_cancel() {
        let mut buf = BytesMut::from(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f][..]);
        assert_eq!(split_startup(&mut buf).unwrap(), Some(StartupPacket::SslRequest));
        let mut buf = BytesMut::new();
        build::cancel_request(&mut buf, 7, -9);
        assert_eq!(split_startup(&mut buf).unwrap(), Some(StartupPacket::Cancel { pid: 7, secret: -9 }));
    }

    #[test]
    fn protocol_2_is_named_as_such() {
        let mut buf = BytesMut::from(&[0, 0, 0, 8, 0, 2, 0, 0][..]);
        assert_eq!(split_startup(&mut buf), Err(ProtocolError::OldProtocol));
        let mut buf = BytesMut::from(&[0, 0, 0, 8, 0, 4, 0, 0][..]);
        assert_eq!(split_startup(&mut buf), Err(ProtocolError::Invalid("unsupported protocol version")));
    }

    #[test]
    fn a_cancel_must_be_a_code_and_a_key_and_a_startup_end_at_its_terminator() {
        let mut buf = BytesMut::from(&[0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1][..]);
        assert_eq!(split_startup(&mut buf), Err(ProtocolError::Invalid(BAD_CANCEL)));
        let mut buf = BytesMut::new();
        build::startup_message(&mut buf, &[("user", "alice")]);
        buf.extend_from_slice(b"x");
        let len = (buf.len() as i32).to_be_bytes();
        buf[..4].copy_from_slice(&len);
        assert_eq!(split_startup(&mut buf), Err(ProtocolError::Unterminated("startup")));
        // Four bytes are not yet a header.
        let mut buf = BytesMut::from(&[0, 0, 0, 4][..]);
        assert_eq!(split_startup(&mut buf), Ok(None));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        let cases: &[&[u8]] = &[
            b"\0\0\0\x04\0\0\0\0",
            b"\xff\xff\xff\xff\0\0\0\0",
            b"\0\x01\0\0\0\0\0\0",
            b"\0\0\0\x08\0\x02\0\0",
            b"\0\0\0\x0c\0\x03\0\0user",
            b"\0\0\0\x0c\0\x03\0\0\xff\xfe\0\0",
            b"GET / HTTP/1.1\r\n\r\n",
        ];
        for case in cases {
            let mut buf = BytesMut::from(*case);
            assert!(split_startup(&mut buf).is_err(), "{case:?}");
        }
    }
}
