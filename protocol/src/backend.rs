//! Views of the server messages the pooler must understand; everything else passes through.

use crate::reader::Reader;
use crate::ProtocolError;

/// Transaction status from ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// 'I': not in a transaction block; the server can go back to the pool.
    Idle,
    /// 'T': inside a transaction block.
    InTransaction,
    /// 'E': inside a failed transaction block.
    Failed,
}

/// Status byte of a ReadyForQuery body.
///
/// # Errors
/// An empty body or an unknown status byte.
pub fn ready_for_query(body: &[u8]) -> Result<TxStatus, ProtocolError> {
    match body.first() {
        Some(b'I') => Ok(TxStatus::Idle),
        Some(b'T') => Ok(TxStatus::InTransaction),
        Some(b'E') => Ok(TxStatus::Failed),
        _ => Err(ProtocolError::Invalid("bad ReadyForQuery status")),
    }
}

/// Name and value of a ParameterStatus body.
///
/// # Errors
/// Missing NUL terminators.
pub fn parameter_status(body: &[u8]) -> Result<(&[u8], &[u8]), ProtocolError> {
    let mut r = Reader::new(body, "ParameterStatus");
    Ok((r.cstr()?, r.cstr()?))
}

/// Process id and secret of a BackendKeyData body.
///
/// # Errors
/// A body shorter than eight bytes.
pub fn backend_key_data(body: &[u8]) -> Result<(i32, i32), ProtocolError> {
    let mut r = Reader::new(body, "BackendKeyData");
    Ok((r.i32()?, r.i32()?))
}

/// The columns of a DataRow (`None` for NULL).
///
/// # Errors
/// A truncated body or a negative length other than -1.
pub fn data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolError> {
    let mut r = Reader::new(body, "DataRow");
    let n = r.i16()?;
    let mut out = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let len = r.i32()?;
        if len == -1 {
            out.push(None);
        } else if len < 0 {
            return Err(ProtocolError::Invalid("negative DataRow column length"));
        } else {
            out.push(Some(r.bytes(len as usize)?));
        }
    }
    Ok(out)
}

/// An Authentication request from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    /// Logged in.
    Ok,
    /// Send the password in clear text.
    Cleartext,
    /// Send md5 of the password with this salt.
    Md5([u8; 4]),
    /// Start SASL with one of these mechanisms.
    Sasl(Vec<&'a [u8]>),
    /// Next SASL challenge.
    SaslContinue(&'a [u8]),
    /// SASL outcome (server signature).
    SaslFinal(&'a [u8]),
    /// A method pgmux does not speak (Kerberos, GSS, SSPI).
    Unsupported(i32),
}

/// Decodes an Authentication body.
///
/// # Errors
/// Truncated bodies.
pub fn authentication(body: &[u8]) -> Result<AuthRequest<'_>, ProtocolError> {
    let mut r = Reader::new(body, "Authentication");
    Ok(match r.i32()? {
        0 => AuthRequest::Ok,
        3 => AuthRequest::Cleartext,
        5 => {
            let s = r.bytes(4)?;
            AuthRequest::Md5([s[0], s[1], s[2], s[3]])
        }
        10 => {
            let mut mechs = Vec::new();
            loop {
                let m = r.cstr()?;
                if m.is_empty() {
                    break;
                }
                mechs.push(m);
            }
            AuthRequest::Sasl(mechs)
        }
        11 => AuthRequest::SaslContinue(r.rest()),
        12 => AuthRequest::SaslFinal(r.rest()),
        other => AuthRequest::Unsupported(other),
    })
}

/// The fields of an ErrorResponse or NoticeResponse body, read lazily.
#[derive(Debug, Clone, Copy)]
pub struct ErrorFields<'a> {
    body: &'a [u8],
}

impl<'a> ErrorFields<'a> {
    /// Wraps an ErrorResponse / NoticeResponse body.
    pub fn new(body: &'a [u8]) -> Self {
        Self { body }
    }

    /// The value of field `code` (b'C' SQLSTATE, b'M' message, b'S' severity), if present and
    /// well-formed.
    pub fn field(&self, code: u8) -> Option<&'a [u8]> {
        let mut r = Reader::new(self.body, "ErrorResponse");
        loop {
            let c = r.u8().ok()?;
            if c == 0 {
                return None;
            }
            let v = r.cstr().ok()?;
            if c == code {
                return Some(v);
            }
        }
    }

    /// SQLSTATE, or "XX000" when the server sent none (an attacker's or a broken server's).
    pub fn sqlstate(&self) -> &'a [u8] {
        self.field(b'C').unwrap_or(b"XX000")
    }

    /// Primary message text, lossily decoded for logs.
    pub fn message(&self) -> String {
        String::from_utf8_lossy(self.field(b'M').unwrap_or(b"")).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_error_fields_and_survives_garbage() {
        let body = b"SERROR\0C42P01\0Mrelation \"x\" does not exist\0\0";
        let e = ErrorFields::new(body);
        assert_eq!(e.sqlstate(), b"42P01");
        assert_eq!(e.message(), "relation \"x\" does not exist");
        let e = ErrorFields::new(b"SERROR\0Mno code");
        assert_eq!(e.sqlstate(), b"XX000");
        assert_eq!(ErrorFields::new(b"").field(b'M'), None);
    }

    #[test]
    fn decodes_auth_requests() {
        assert_eq!(authentication(&[0, 0, 0, 0]).unwrap(), AuthRequest::Ok);
        assert_eq!(authentication(&[0, 0, 0, 5, 1, 2, 3, 4]).unwrap(), AuthRequest::Md5([1, 2, 3, 4]));
        assert!(authentication(&[0, 0, 0, 5, 1]).is_err());
        let sasl = b"\0\0\0\x0aSCRAM-SHA-256\0\0";
        assert_eq!(authentication(sasl).unwrap(), AuthRequest::Sasl(vec![&b"SCRAM-SHA-256"[..]]));
        assert!(authentication(b"\0\0\0\x0aSCRAM").is_err());
    }

    #[test]
    fn reads_ready_for_query_and_parameter_status() {
        assert_eq!(ready_for_query(b"T").unwrap(), TxStatus::InTransaction);
        assert!(ready_for_query(b"").is_err());
        assert_eq!(parameter_status(b"TimeZone\0UTC\0").unwrap(), (&b"TimeZone"[..], &b"UTC"[..]));
        assert!(parameter_status(b"TimeZone\0UTC").is_err());
    }
}
