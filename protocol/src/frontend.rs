//! Views of the client messages the pooler reads: passwords and SASL responses during login,
//! and the statement name of Parse (for stats). Everything else is forwarded unread.

use crate::reader::Reader;
use crate::ProtocolError;

/// A PasswordMessage body as a clear-text or md5 password (without the NUL).
///
/// # Errors
/// No NUL terminator.
pub fn password(body: &[u8]) -> Result<&[u8], ProtocolError> {
    Reader::new(body, "PasswordMessage").cstr()
}

/// SASLInitialResponse: mechanism name and the client's first message.
///
/// # Errors
/// Truncated body, or a data length that does not match the body.
pub fn sasl_initial_response(body: &[u8]) -> Result<(&[u8], &[u8]), ProtocolError> {
    let mut r = Reader::new(body, "SASLInitialResponse");
    let mechanism = r.cstr()?;
    let len = r.i32()?;
    if len < 0 || len as usize != r.rest().len() {
        return Err(ProtocolError::Invalid("bad SASLInitialResponse length"));
    }
    Ok((mechanism, r.rest()))
}

/// Query text of a simple Query body (without the NUL).
///
/// # Errors
/// No NUL terminator.
pub fn query(body: &[u8]) -> Result<&[u8], ProtocolError> {
    Reader::new(body, "Query").cstr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_initial_response_checks_its_length() {
        assert_eq!(
            sasl_initial_response(b"SCRAM-SHA-256\0\0\0\0\x03abc").unwrap(),
            (&b"SCRAM-SHA-256"[..], &b"abc"[..])
        );
        assert!(sasl_initial_response(b"SCRAM-SHA-256\0\0\0\0\x09abc").is_err());
        assert!(sasl_initial_response(b"SCRAM-SHA-256\0\xff\xff\xff\xffabc").is_err());
        assert!(sasl_initial_response(b"SCRAM").is_err());
    }
}
