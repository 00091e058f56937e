//! A raw-protocol client session (trust auth, database `app`) for the exact message sequences
//! drivers do not send on purpose, and a readable summary of what comes back.

use std::time::Duration;

use bytes::BytesMut;
use pgmux_protocol::backend::ErrorFields;
use pgmux_protocol::{build, split_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Pgmux, SCRAM_USER};

/// A StartupMessage for `user` on database `app` (pgmux with trust auth), to send raw; the
/// test may append the messages that follow it in the same write.
pub fn startup(user: &str) -> BytesMut {
    let mut out = BytesMut::new();
    build::startup_message(&mut out, &[("user", user), ("database", "app")]);
    out
}

/// A TCP connection to pgmux on `port` with [`startup`] sent; nothing is read.
pub async fn send_startup(port: u16, user: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&startup(user)).await.unwrap();
    s
}

/// pgmux on the shared cluster with trust auth, as [`Raw::connect`] logs in, and `extra` lines
/// for its `[pgbouncer]` section.
pub fn trusting_pgmux(extra: &str) -> Pgmux {
    Pgmux::start_with(
        super::Cluster::shared(),
        super::pgmux::Setup {
            pgbouncer: &format!("auth_type = trust\n{extra}"),
            userlist: Some(&format!("\"{SCRAM_USER}\" \"{}\"\n", super::SCRAM_PASS)),
            ..Default::default()
        },
    )
}

/// A raw-protocol session (trust auth) for what drivers do not send on purpose.
pub struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

impl Raw {
    pub async fn connect(mux: &Pgmux) -> Raw {
        let mut s = TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
        let mut out = BytesMut::new();
        build::startup_message(&mut out, &[("user", SCRAM_USER), ("database", "app")]);
        s.write_all(&out).await.unwrap();
        let mut r = Raw { s, buf: BytesMut::new() };
        r.until_ready().await;
        r
    }

    pub async fn send(&mut self, f: impl FnOnce(&mut BytesMut)) {
        let mut out = BytesMut::new();
        f(&mut out);
        self.s.write_all(&out).await.unwrap();
    }

    /// Message types up to and including ReadyForQuery; DataRow values (comma-separated) and
    /// errors as text.
    pub async fn until_ready(&mut self) -> Vec<String> {
        self.until(b'Z').await
    }

    /// As [`Raw::until_ready`], up to and including the first message of type `last` (what a
    /// Flush makes the server send before the batch's Sync).
    pub async fn until(&mut self, last: u8) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            if let Some(f) = split_frame(&mut self.buf, 1 << 20).unwrap() {
                match f.tag {
                    b'D' => {
                        let row = pgmux_protocol::backend::data_row(f.body()).unwrap();
                        let values: Vec<_> =
                            row.iter().map(|v| v.map_or("NULL".into(), String::from_utf8_lossy)).collect();
                        seen.push(format!("D:{}", values.join(",")));
                    }
                    b'E' => {
                        let e = ErrorFields::new(f.body());
                        seen.push(format!("E:{}:{}", String::from_utf8_lossy(e.sqlstate()), e.message()));
                    }
                    t => seen.push((t as char).to_string()),
                }
                if f.tag == last {
                    return seen;
                }
                continue;
            }
            let n =
                tokio::time::timeout(Duration::from_secs(5), self.s.read_buf(&mut self.buf)).await.unwrap().unwrap();
            if n == 0 {
                seen.push("EOF".into());
                return seen;
            }
        }
    }
}

/// For a fake PostgreSQL: reads what a client opens with, declining an SSLRequest (`N`), up to
/// the end of its startup packet (or CancelRequest). Returns the packet's first 8 bytes: length
/// and protocol code.
pub async fn accept_startup(s: &mut TcpStream) -> std::io::Result<[u8; 8]> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head).await?;
    if head[4..] == [0x04, 0xd2, 0x16, 0x2f] {
        s.write_all(b"N").await?;
        s.read_exact(&mut head).await?;
    }
    let len = i32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
    let mut rest = vec![0u8; len.saturating_sub(8)];
    s.read_exact(&mut rest).await?;
    Ok(head)
}

/// True when the packet [`accept_startup`] read was a CancelRequest.
pub fn is_cancel(head: &[u8; 8]) -> bool {
    head[4..] == [0x04, 0xd2, 0x16, 0x2e]
}

/// For a fake PostgreSQL: logs the client in with no password (AuthenticationOk, a
/// server_version, the backend key `key`, ReadyForQuery idle), in one write.
pub async fn welcome(s: &mut TcpStream, key: (i32, i32)) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    build::auth_ok(&mut out);
    build::parameter_status(&mut out, b"server_version", b"15.0");
    build::backend_key_data(&mut out, key.0, key.1);
    build::ready_for_query(&mut out, b'I');
    s.write_all(&out).await
}

/// For a fake PostgreSQL that has logged its peer in: answers pgmux's SETs (the client's
/// parameters) and holds anything else (a query, a cancel) unanswered until the peer goes.
pub async fn answer_sets_hold_the_rest(s: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    while s.read_buf(&mut buf).await? > 0 {
        while let Ok(Some(f)) = split_frame(&mut buf, 1 << 20) {
            if f.tag == b'Q' && f.body().starts_with(b"SET") {
                let mut out = BytesMut::new();
                build::command_complete(&mut out, "SET");
                build::ready_for_query(&mut out, b'I');
                s.write_all(&out).await?;
            }
        }
    }
    Ok(())
}
