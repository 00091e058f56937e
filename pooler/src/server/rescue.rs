//! A server whose client vanished in the middle of a query or a transaction is brought back
//! instead of closed (PgBouncer closes it, and the pool pays a new login): what is in flight is
//! cancelled and drained, an open transaction is rolled back, and the server is as good as one
//! released between transactions. Bounded in time; anything unexpected and the caller closes it.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use pgmux_protocol::backend::{self, TxStatus};
use pgmux_protocol::flow::{Batch, CopyIn, Flow};
use pgmux_protocol::{build, tags};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ServerConn, ServerError};

/// What the relay knew of the server when its client went.
#[derive(Debug)]
pub struct Abandoned {
    /// Server bytes read but not yet looked at, starting inside or at the start of a message.
    pub unread: BytesMut,
    /// Bytes of the current server message still to skip, counted from the start of `unread`.
    pub skip: usize,
    /// What the server still owes: requests, an open batch, COPY, the transaction status.
    pub flow: Flow,
}

/// Messages whose body matters here; any other is skipped without being buffered (a DataRow can
/// be large).
fn wanted(tag: u8) -> bool {
    matches!(tag, tags::backend::READY_FOR_QUERY | tags::backend::COPY_IN_RESPONSE | tags::backend::PARAMETER_STATUS)
}

struct Drain<'a> {
    conn: &'a mut ServerConn,
    buf: BytesMut,
}

impl Drain<'_> {
    async fn fill(&mut self) -> Result<(), ServerError> {
        if self.conn.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(ServerError::Closed);
        }
        Ok(())
    }

    async fn skip(&mut self, mut n: usize) -> Result<(), ServerError> {
        loop {
            let now = n.min(self.buf.len());
            self.buf.advance(now);
            n -= now;
            if n == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// The next message's type and, for the wanted ones, its body.
    async fn next(&mut self) -> Result<(u8, BytesMut), ServerError> {
        while self.buf.len() < 5 {
            self.fill().await?;
        }
        let tag = self.buf[0];
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let body_len = usize::try_from(len - 4).map_err(|_| ServerError::Closed)?;
        self.buf.advance(5);
        if !wanted(tag) {
            self.skip(body_len).await?;
            return Ok((tag, BytesMut::new()));
        }
        while self.buf.len() < body_len {
            self.fill().await?;
        }
        Ok((tag, self.buf.split_to(body_len)))
    }

    async fn send(&mut self, out: &[u8]) -> Result<(), ServerError> {
        self.conn.stream.write_all(out).await?;
        self.conn.stream.flush().await?;
        Ok(())
    }

    /// Reads until `pending` ReadyForQuery have come; the last one's status.
    async fn until_ready(&mut self, mut pending: u32, mut tx: TxStatus) -> Result<TxStatus, ServerError> {
        while pending > 0 {
            match self.next().await? {
                (tags::backend::READY_FOR_QUERY, body) => {
                    pending -= 1;
                    tx = backend::ready_for_query(&body)?;
                }
                (tags::backend::COPY_IN_RESPONSE, _) => self.send(&copy_fail()).await?,
                // A ROLLBACK undoes a SET of the transaction; the server says so, and the next
                // client's parameters are compared with what it says.
                (tags::backend::PARAMETER_STATUS, body) => {
                    let (k, v) = backend::parameter_status(&body)?;
                    self.conn.params.set(&String::from_utf8_lossy(k), &String::from_utf8_lossy(v));
                }
                _ => {}
            }
        }
        Ok(tx)
    }
}

fn copy_fail() -> BytesMut {
    const WHY: &[u8] = b"client disconnected\0";
    let mut out = BytesMut::with_capacity(5 + WHY.len());
    out.put_u8(b'f');
    out.put_i32(4 + WHY.len() as i32);
    out.put_slice(WHY);
    out
}

/// Brings `conn` back to idle outside a transaction, within `limit`.
///
/// # Errors
/// The server closed, sent something that is not the protocol, or took too long; it must then
/// be closed.
pub async fn recover(conn: &mut ServerConn, state: Abandoned, limit: Duration) -> Result<(), ServerError> {
    tokio::time::timeout(limit, recover_within(conn, state)).await.map_err(|_| ServerError::Timeout)?
}

async fn recover_within(conn: &mut ServerConn, a: Abandoned) -> Result<(), ServerError> {
    let (addr, key) = (conn.addr.clone(), conn.backend_key);
    let mut d = Drain { conn, buf: a.unread };
    d.skip(a.skip).await?;
    let mut pending = a.flow.pending();
    let mut out = BytesMut::new();
    if a.flow.copy() == CopyIn::Receiving {
        out.extend_from_slice(&copy_fail());
    }
    if a.flow.batch() == Batch::Open {
        build::sync(&mut out);
        pending += 1;
    }
    if !out.is_empty() {
        d.send(&out).await?;
    }
    if pending > 0 {
        // The query may run for long. A cancel that arrives after it ended finds the backend
        // waiting for a command, and PostgreSQL ignores it there.
        let _ = crate::cancel::send_to(&addr, key, Duration::from_secs(5)).await;
    }
    // Whatever the vanished client set, the next one's parameters are set afresh.
    d.conn.synced_params = 0;
    let mut tx = d.until_ready(pending, a.flow.tx()).await?;
    // A ROLLBACK the late cancel hit fails; the second one does not.
    for _ in 0..2 {
        if tx == TxStatus::Idle {
            d.conn.leftover = d.buf;
            return Ok(());
        }
        out.clear();
        build::query(&mut out, "ROLLBACK");
        d.send(&out).await?;
        tx = d.until_ready(1, tx).await?;
    }
    Err(ServerError::Protocol(pgmux_protocol::ProtocolError::Invalid("ROLLBACK left the transaction open")))
}
