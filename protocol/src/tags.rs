//! Message type bytes, split by direction: the same byte means different messages each way.

/// Messages a client (frontend) sends.
pub mod frontend {
    /// Simple query.
    pub const QUERY: u8 = b'Q';
    /// Extended protocol: parse a statement.
    pub const PARSE: u8 = b'P';
    /// Extended protocol: bind a portal.
    pub const BIND: u8 = b'B';
    /// Extended protocol: execute a portal.
    pub const EXECUTE: u8 = b'E';
    /// Extended protocol: describe.
    pub const DESCRIBE: u8 = b'D';
    /// Extended protocol: close a statement or portal.
    pub const CLOSE: u8 = b'C';
    /// Extended protocol: end of a pipeline segment; the server answers ReadyForQuery.
    pub const SYNC: u8 = b'S';
    /// Extended protocol: flush pending output.
    pub const FLUSH: u8 = b'H';
    /// Fast-path function call; answered with ReadyForQuery.
    pub const FUNCTION_CALL: u8 = b'F';
    /// Session end.
    pub const TERMINATE: u8 = b'X';
    /// Password, SASLInitialResponse and SASLResponse share this tag.
    pub const PASSWORD: u8 = b'p';
    /// COPY FROM STDIN data.
    pub const COPY_DATA: u8 = b'd';
    /// COPY FROM STDIN end.
    pub const COPY_DONE: u8 = b'c';
    /// COPY FROM STDIN abort.
    pub const COPY_FAIL: u8 = b'f';
}

/// Messages a server (backend) sends.
pub mod backend {
    /// Authentication request family (ok, md5, SASL ...).
    pub const AUTHENTICATION: u8 = b'R';
    /// Cancellation key.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// Reported run-time parameter.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// Ready for a new query, with the transaction status byte.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// Error.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// Notice.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// Command complete.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// Row description.
    pub const ROW_DESCRIPTION: u8 = b'T';
    /// Data row.
    pub const DATA_ROW: u8 = b'D';
    /// Empty query response.
    pub const EMPTY_QUERY: u8 = b'I';
    /// COPY IN start.
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// COPY OUT start.
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    /// COPY BOTH start (replication).
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    /// Asynchronous notification.
    pub const NOTIFICATION: u8 = b'A';
    /// Parse done.
    pub const PARSE_COMPLETE: u8 = b'1';
    /// Bind done.
    pub const BIND_COMPLETE: u8 = b'2';
    /// Close done.
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// Describe of something that returns no rows.
    pub const NO_DATA: u8 = b'n';
    /// Parameter types of a described statement (before its RowDescription or NoData).
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    /// Execute stopped at its row limit.
    pub const PORTAL_SUSPENDED: u8 = b's';
}
