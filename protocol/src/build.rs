//! Builders for the messages pgmux originates. Each appends one whole message to a `BytesMut`;
//! writing it is the caller's job.

use bytes::{BufMut, BytesMut};

use crate::startup::{CANCEL_REQUEST, PROTOCOL_3_0};

/// Appends `tag`, a length placeholder, the body written by `f`, then patches the length.
fn message(buf: &mut BytesMut, tag: u8, f: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    f(buf);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

/// Severity of an error or notice we originate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The session goes on.
    Error,
    /// The session ends after this message.
    Fatal,
    /// Informational notice.
    Notice,
    /// Warning notice.
    Warning,
}

impl Severity {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Severity::Error => b"ERROR",
            Severity::Fatal => b"FATAL",
            Severity::Notice => b"NOTICE",
            Severity::Warning => b"WARNING",
        }
    }
}

/// ErrorResponse (or NoticeResponse for notice severities) with severity, SQLSTATE and message.
pub fn error_response(buf: &mut BytesMut, severity: Severity, sqlstate: &str, text: &str) {
    error_response_detail(buf, severity, sqlstate, text, None);
}

/// [`error_response`] with a DETAIL field when `detail` is given.
pub fn error_response_detail(buf: &mut BytesMut, severity: Severity, sqlstate: &str, text: &str, detail: Option<&str>) {
    let tag = match severity {
        Severity::Error | Severity::Fatal => b'E',
        Severity::Notice | Severity::Warning => b'N',
    };
    message(buf, tag, |b| {
        b.put_u8(b'S');
        cstr(b, severity.as_bytes());
        b.put_u8(b'V');
        cstr(b, severity.as_bytes());
        b.put_u8(b'C');
        cstr(b, sqlstate.as_bytes());
        b.put_u8(b'M');
        // A NUL inside the text would end the field early; PostgreSQL never sends one.
        let clean = |t: &str| -> Vec<u8> { t.bytes().filter(|&c| c != 0).collect() };
        cstr(b, &clean(text));
        if let Some(d) = detail {
            b.put_u8(b'D');
            cstr(b, &clean(d));
        }
        b.put_u8(0);
    });
}

/// AuthenticationOk.
pub fn auth_ok(buf: &mut BytesMut) {
    message(buf, b'R', |b| b.put_i32(0));
}

/// AuthenticationCleartextPassword.
pub fn auth_cleartext(buf: &mut BytesMut) {
    message(buf, b'R', |b| b.put_i32(3));
}

/// AuthenticationMD5Password with its salt.
pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    message(buf, b'R', |b| {
        b.put_i32(5);
        b.put_slice(&salt);
    });
}

/// AuthenticationSASL listing mechanisms.
pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    message(buf, b'R', |b| {
        b.put_i32(10);
        for m in mechanisms {
            cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

/// AuthenticationSASLContinue.
pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

/// AuthenticationSASLFinal.
pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'R', |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

/// ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    message(buf, b'S', |b| {
        cstr(b, name);
        cstr(b, value);
    });
}

/// BackendKeyData.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    message(buf, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// ReadyForQuery with status byte b'I', b'T' or b'E'.
pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    message(buf, b'Z', |b| b.put_u8(status));
}

/// RowDescription of text columns (type oid 25 unless given).
pub fn row_description(buf: &mut BytesMut, columns: &[(&str, u32)]) {
    message(buf, b'T', |b| {
        b.put_i16(columns.len() as i16);
        for (name, oid) in columns {
            cstr(b, name.as_bytes());
            b.put_i32(0);
            b.put_i16(0);
            b.put_u32(*oid);
            b.put_i16(type_size(*oid));
            b.put_i32(-1);
            b.put_i16(0);
        }
    });
}

/// The size of a fixed-size type (pg_type.typlen: bool 1, int2 2, int4 4, int8 8), -1 for the
/// variable-size ones, as RowDescription carries it.
fn type_size(oid: u32) -> i16 {
    match oid {
        16 => 1,
        21 => 2,
        23 => 4,
        20 => 8,
        _ => -1,
    }
}

/// DataRow; `None` is SQL NULL.
pub fn data_row(buf: &mut BytesMut, values: &[Option<&[u8]>]) {
    message(buf, b'D', |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// CommandComplete with its tag ("SELECT 3", "SHOW").
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    message(buf, b'C', |b| cstr(b, tag.as_bytes()));
}

/// EmptyQueryResponse.
pub fn empty_query(buf: &mut BytesMut) {
    message(buf, b'I', |_| {});
}

/// NegotiateProtocolVersion: the newest protocol version we speak and the `_pq_.` options we
/// did not recognise. The version goes out whole (`3 << 16 | minor`), as PostgreSQL and
/// PgBouncer send it and libpq 18 reads it, although the protocol docs call the field a minor
/// version.
pub fn negotiate_protocol_version(buf: &mut BytesMut, newest: i32, unrecognized: &[&str]) {
    message(buf, b'v', |b| {
        b.put_i32(newest);
        b.put_i32(unrecognized.len() as i32);
        for o in unrecognized {
            cstr(b, o.as_bytes());
        }
    });
}

/// StartupMessage, protocol 3.0.
pub fn startup_message(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let at = buf.len();
    buf.put_i32(0);
    buf.put_i32(PROTOCOL_3_0);
    for (k, v) in params {
        cstr(buf, k.as_bytes());
        cstr(buf, v.as_bytes());
    }
    buf.put_u8(0);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// CancelRequest for a server's key.
pub fn cancel_request(buf: &mut BytesMut, pid: i32, secret: i32) {
    buf.put_i32(16);
    buf.put_i32(CANCEL_REQUEST);
    buf.put_i32(pid);
    buf.put_i32(secret);
}

/// PasswordMessage (clear text or md5 hex).
pub fn password(buf: &mut BytesMut, password: &[u8]) {
    message(buf, b'p', |b| cstr(b, password));
}

/// SASLInitialResponse.
pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    message(buf, b'p', |b| {
        cstr(b, mechanism.as_bytes());
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

/// SASLResponse.
pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    message(buf, b'p', |b| b.put_slice(data));
}

/// Simple Query.
pub fn query(buf: &mut BytesMut, sql: &str) {
    message(buf, b'Q', |b| cstr(b, sql.as_bytes()));
}

/// Parse of `sql` into statement `name` (empty: unnamed), parameter types left to the server.
pub fn parse(buf: &mut BytesMut, name: &str, sql: &str) {
    message(buf, b'P', |b| {
        cstr(b, name.as_bytes());
        cstr(b, sql.as_bytes());
        b.put_i16(0);
    });
}

/// Bind of statement `statement` to `portal` with text parameters (`None` is NULL) and text
/// results.
pub fn bind(buf: &mut BytesMut, portal: &str, statement: &str, params: &[Option<&[u8]>]) {
    message(buf, b'B', |b| {
        cstr(b, portal.as_bytes());
        cstr(b, statement.as_bytes());
        b.put_i16(0);
        b.put_i16(params.len() as i16);
        for p in params {
            match p {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
        b.put_i16(0);
    });
}

/// Execute of `portal`, all rows.
pub fn execute(buf: &mut BytesMut, portal: &str) {
    message(buf, b'E', |b| {
        cstr(b, portal.as_bytes());
        b.put_i32(0);
    });
}

/// Sync.
pub fn sync(buf: &mut BytesMut) {
    message(buf, b'S', |_| {});
}

/// Flush: the server sends what it has without waiting for a Sync.
pub fn flush(buf: &mut BytesMut) {
    message(buf, b'H', |_| {});
}

/// Terminate.
pub fn terminate(buf: &mut BytesMut) {
    message(buf, b'X', |_| {});
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{self, ErrorFields};
    use crate::split_frame;
    use bytes::Buf;

    #[test]
    fn error_response_round_trips() {
        let mut buf = BytesMut::new();
        error_response(&mut buf, Severity::Fatal, "08P01", "bad\0 packet");
        let f = split_frame(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!(f.tag, b'E');
        let e = ErrorFields::new(f.body());
        assert_eq!(e.sqlstate(), b"08P01");
        assert_eq!(e.message(), "bad packet");
        assert_eq!(e.field(b'S'), Some(&b"FATAL"[..]));
    }

    #[test]
    fn small_messages_round_trip() {
        let mut buf = BytesMut::new();
        parameter_status(&mut buf, b"TimeZone", b"UTC");
        ready_for_query(&mut buf, b'T');
        backend_key_data(&mut buf, 1, -2);
        let f = split_frame(&mut buf, 64).unwrap().unwrap();
        assert_eq!(backend::parameter_status(f.body()).unwrap(), (&b"TimeZone"[..], &b"UTC"[..]));
        let f = split_frame(&mut buf, 64).unwrap().unwrap();
        assert_eq!(backend::ready_for_query(f.body()).unwrap(), backend::TxStatus::InTransaction);
        let f = split_frame(&mut buf, 64).unwrap().unwrap();
        assert_eq!(backend::backend_key_data(f.body()).unwrap(), (1, -2));
    }

    #[test]
    fn row_descriptions_carry_the_size_of_fixed_size_types() {
        let mut buf = BytesMut::new();
        row_description(&mut buf, &[("name", 25), ("port", 23), ("serial", 20), ("total", 1700)]);
        let f = split_frame(&mut buf, 1 << 10).unwrap().unwrap();
        let mut body = f.body();
        assert_eq!(body.get_i16(), 4);
        let mut sizes = Vec::new();
        for _ in 0..4 {
            let end = body.iter().position(|b| *b == 0).unwrap();
            body.advance(end + 1 + 4 + 2);
            let (oid, size, typmod, format) = (body.get_u32(), body.get_i16(), body.get_i32(), body.get_i16());
            assert_eq!((typmod, format), (-1, 0));
            sizes.push((oid, size));
        }
        assert_eq!(sizes, [(25, -1), (23, 4), (20, 8), (1700, -1)]);
    }
}
