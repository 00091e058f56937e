//! PgBouncer's TCP settings, applied to every client socket pgmux accepts and every server socket
//! it opens: tcp_keepalive with tcp_keepidle / tcp_keepintvl / tcp_keepcnt (0 keeps the kernel's
//! value) and tcp_user_timeout (ms; 0 keeps the kernel's). Failures to set an option are
//! ignored, as PgBouncer only logs them.
//!
//! tcp_socket_buffer is not applied (docs/CONFIG.md): set after connect, a small receive buffer
//! stalled a WAL stream on zero-window probes; set before, a 4 kB buffer made pg_basebackup
//! through pgmux take over 30 s where PgBouncer takes a few. The kernel's autotuning stays.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

use crate::config::General;

/// The TCP options in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpOptions {
    keepalive: bool,
    keepidle_s: u32,
    keepintvl_s: u32,
    keepcnt: u32,
    user_timeout_ms: u32,
}

impl TcpOptions {
    /// From `[pgbouncer]`.
    pub fn from_general(g: &General) -> Self {
        TcpOptions {
            keepalive: g.tcp_keepalive,
            keepidle_s: g.tcp_keepidle,
            keepintvl_s: g.tcp_keepintvl,
            keepcnt: g.tcp_keepcnt,
            user_timeout_ms: g.tcp_user_timeout,
        }
    }

    /// Sets the options on a connected socket (also TCP_NODELAY, always on).
    pub fn apply(&self, s: &impl std::os::fd::AsFd) {
        let sock = SockRef::from(s);
        let _ = sock.set_nodelay(true);
        if self.keepalive {
            let mut k = TcpKeepalive::new();
            if self.keepidle_s > 0 {
                k = k.with_time(Duration::from_secs(self.keepidle_s.into()));
            }
            if self.keepintvl_s > 0 {
                k = k.with_interval(Duration::from_secs(self.keepintvl_s.into()));
            }
            if self.keepcnt > 0 {
                k = k.with_retries(self.keepcnt);
            }
            // Sets SO_KEEPALIVE too (one setsockopt fewer than setting it on its own first).
            let _ = sock.set_tcp_keepalive(&k);
        }
        if self.user_timeout_ms > 0 {
            let _ = sock.set_tcp_user_timeout(Some(Duration::from_millis(self.user_timeout_ms.into())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn options_reach_the_socket() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let o = TcpOptions { keepalive: true, keepidle_s: 17, keepintvl_s: 3, keepcnt: 4, user_timeout_ms: 2500 };
        o.apply(&s);
        let sock = SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.keepalive_time().unwrap(), Duration::from_secs(17));
        assert_eq!(sock.keepalive_interval().unwrap(), Duration::from_secs(3));
        assert_eq!(sock.keepalive_retries().unwrap(), 4);
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(Duration::from_millis(2500)));
        assert!(sock.nodelay().unwrap());
    }
}
