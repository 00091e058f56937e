//! The HAProxy agent-check port (health_agent_port): HAProxy connects, may send a word naming
//! the role it routes (`agent-send "primary\n"`, or `replica`, `read-only`), and reads one line:
//! `ready up 100%`, `drain` or `down`. `drain` stops new sessions to this node and keeps the
//! ones it has, which a failing HTTP check with `on-marked-down shutdown-sessions` would cut.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::health::{self, Check, Verdict};
use crate::shared::Shared;

/// Connections answered at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send its word (HAProxy sends at once, or nothing).
const READ_LIMIT: Duration = Duration::from_millis(200);

/// Binds the agent port on exporter_listen_addr when health_agent_port is set. SO_REUSEPORT
/// lets a process started with `-R` bind it while the old one still answers.
///
/// # Errors
/// The address is bad or taken.
pub fn bind(g: &crate::config::General) -> std::io::Result<Option<std::net::TcpListener>> {
    if g.health_agent_port == 0 {
        return Ok(None);
    }
    let host = if g.exporter_listen_addr == "*" { "0.0.0.0" } else { g.exporter_listen_addr.as_str() };
    let addr: std::net::SocketAddr = format!("{host}:{}", g.health_agent_port)
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("health_agent_port: {e}")))?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(Some(socket.into()))
}

/// Answers agent checks on `listener` until the task is dropped.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), answer(&shared, s)).await;
            drop(slot);
        });
    }
}

async fn answer(shared: &Shared, mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 64];
    let n = match tokio::time::timeout(READ_LIMIT, s.read(&mut buf)).await {
        Ok(r) => r?,
        Err(_) => 0,
    };
    let word = String::from_utf8_lossy(&buf[..n]);
    let verdict = match Check::from_word(word.lines().next().unwrap_or("")) {
        Some(check) => health::evaluate(shared, check, None),
        None => Verdict::Down,
    };
    s.write_all(verdict.agent_line().as_bytes()).await?;
    s.shutdown().await
}
