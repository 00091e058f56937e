//! The client socket during login (and the admin console's whole session): a read buffer split
//! into frames, a write buffer, error replies in PgBouncer's words, and why a connection ended
//! early. Below both the client and the admin modules, which each use it.

use bytes::BytesMut;
use pgmux_protocol::build::{self, Severity};
use pgmux_protocol::{split_frame, Frame, ProtocolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Stream;

/// Why a client connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client closed the connection.
    #[error("client closed the connection")]
    Closed,
    /// Socket error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The TLS handshake with the client failed (the reason in plain text).
    #[error("TLS handshake error: handshake failed: {0}")]
    TlsHandshake(String),
    /// The client sent bytes that are not the protocol.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// pgmux refuses the client with this SQLSTATE and message (already decided, not yet sent).
    #[error("{1}")]
    Refused(&'static str, String),
}

/// Longest message accepted during login. Passwords may be long (PgBouncer takes any size up
/// to max_packet_size); 1 MiB keeps what an unauthenticated client can make pgmux hold bounded.
pub const MAX_LOGIN_MESSAGE: usize = 1 << 20;

/// A client connection and its buffers.
#[derive(Debug)]
pub struct ClientIo {
    /// The socket.
    pub stream: Stream,
    /// Bytes read and not yet consumed.
    pub rbuf: BytesMut,
    /// Bytes to send.
    pub wbuf: BytesMut,
    /// What the TLS handshake learned, when the client uses TLS.
    pub tls: Option<Box<crate::tls::AcceptedTls>>,
}

impl ClientIo {
    /// Wraps a fresh connection.
    pub fn new(stream: Stream) -> Self {
        Self { stream, rbuf: BytesMut::with_capacity(1024), wbuf: BytesMut::with_capacity(1024), tls: None }
    }

    /// A fresh connection: its first bytes when they have come already, read without a wait
    /// for readiness (the login's first read then finds them in `rbuf`).
    pub fn new_reading(stream: Stream) -> Self {
        let mut io = Self::new(stream);
        let room = io.rbuf.capacity();
        io.stream.read_waiting(&mut io.rbuf, room);
        io
    }

    /// Reads more bytes; `ClientError::Closed` at EOF.
    ///
    /// # Cancel safety
    /// Cancel-safe: bytes are appended to `rbuf` only when the read completes.
    pub async fn fill(&mut self) -> Result<(), ClientError> {
        if self.stream.read_buf(&mut self.rbuf).await? == 0 {
            return Err(ClientError::Closed);
        }
        Ok(())
    }

    /// The next whole message.
    ///
    /// # Errors
    /// EOF, socket errors, or a malformed header (the client has been sent 08P01).
    pub async fn read_frame(&mut self) -> Result<Frame, ClientError> {
        loop {
            match split_frame(&mut self.rbuf, MAX_LOGIN_MESSAGE) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => self.fill().await?,
                Err(e) => {
                    self.fatal(pgmux_protocol::sqlstate::PROTOCOL_VIOLATION, &e.to_string()).await;
                    return Err(e.into());
                }
            }
        }
    }

    /// Writes out `wbuf`.
    ///
    /// # Errors
    /// Socket errors.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.stream.flush().await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Writes `bytes` out.
    ///
    /// # Errors
    /// Socket errors.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends a FATAL error and flushes; the caller then closes the connection.
    pub async fn fatal(&mut self, sqlstate: &str, message: &str) {
        build::error_response(&mut self.wbuf, Severity::Fatal, sqlstate, message);
        let _ = self.flush().await;
    }
}
