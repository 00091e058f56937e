//! The protocol crate's one error type: every way a peer's bytes can be malformed.

/// Malformed input from a peer. Each variant is an expected condition on untrusted bytes, never a
/// bug: callers answer with SQLSTATE 08P01 and close the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// A length word below the minimum the protocol allows.
    #[error("bad packet length {0}")]
    BadLength(i32),
    /// A message longer than the configured maximum.
    #[error("packet too large: {0} bytes")]
    Oversized(usize),
    /// The body ended before a field it announces.
    #[error("truncated {0} message")]
    Truncated(&'static str),
    /// A string field without its terminating NUL.
    #[error("unterminated string in {0} message")]
    Unterminated(&'static str),
    /// Bytes that are valid framing but wrong content (bad protocol version, bad SCRAM attribute).
    #[error("{0}")]
    Invalid(&'static str),
    /// A startup packet of protocol 2, which PostgreSQL dropped in version 14.
    #[error("old V2 protocol not supported")]
    OldProtocol,
}
