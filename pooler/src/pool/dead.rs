//! Servers that died while idle in the pool. A server reused within [`DEAD_CHECK_AFTER`] of its
//! release is handed out without a syscall (the busy case); one idle longer gets a
//! non-blocking read first. When PostgreSQL shuts down or restarts, every backend dies at
//! once, including the ones released a moment ago: so once a server of the pool is lost, the
//! idle ones are swept and, for [`SUSPECT_FOR`], every checkout gets the read and then an empty
//! query (a backend that has been told to end but not yet said so acts on it before it reads
//! the query), and a client whose server was idle never gets a dead one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use super::Pool;
use crate::server::ServerConn;

/// Idle time after which a server is probed for a close before it is handed out.
pub(super) const DEAD_CHECK_AFTER: Duration = Duration::from_millis(20);
/// How long after a lost server every checkout probes.
const SUSPECT_FOR: Duration = Duration::from_secs(1);

/// Until when checkouts probe every server (after one was lost).
#[derive(Debug)]
pub(super) struct Suspicion {
    since: Instant,
    /// Milliseconds after `since`; 0: not suspicious.
    until_ms: AtomicU64,
}

impl Default for Suspicion {
    fn default() -> Self {
        Suspicion { since: Instant::now(), until_ms: AtomicU64::new(0) }
    }
}

impl Suspicion {
    fn now_ms(&self) -> u64 {
        self.since.elapsed().as_millis() as u64 + 1
    }

    /// True while checkouts must probe every server.
    pub(super) fn active(&self) -> bool {
        let until = self.until_ms.load(Relaxed);
        until != 0 && self.now_ms() < until
    }

    fn raise(&self) {
        self.until_ms.store(self.now_ms() + SUSPECT_FOR.as_millis() as u64, Relaxed);
    }
}

impl Pool {
    /// True when `s` must be probed before it is handed out.
    pub(super) fn needs_dead_check(&self, s: &ServerConn) -> bool {
        self.needs_dead_check_after(s.last_used.elapsed())
    }

    /// [`Pool::needs_dead_check`] for a server idle for `idle`.
    pub(super) fn needs_dead_check_after(&self, idle: Duration) -> bool {
        idle >= DEAD_CHECK_AFTER || self.suspicion.active()
    }

    /// A server of this pool was lost (closed or failed under its client, or found dead in the
    /// pool): the others may be dying too. Closes the idle ones that are, and makes checkouts
    /// probe for a while.
    pub fn server_lost(&self) {
        self.sweep(|s| s.is_dead());
    }

    /// A server of this pool died with PostgreSQL itself (killed without a word, or told that
    /// another backend crashed): every backend is going down, including the idle ones that do
    /// not show it yet. All idle servers are closed, and checkouts probe for a while.
    pub fn cluster_lost(&self) {
        self.sweep(|_| true);
    }

    /// Closes the idle servers `doomed` picks, and makes checkouts probe for a while.
    fn sweep(&self, doomed: impl Fn(&ServerConn) -> bool) {
        self.suspicion.raise();
        let dead: Vec<Box<ServerConn>> = {
            let mut st = self.state.lock();
            let (dead, alive): (Vec<_>, Vec<_>) = st.idle.drain(..).partition(|s| doomed(s));
            st.idle.extend(alive);
            dead
        };
        for s in dead {
            self.discard(s, "server conn crashed?");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_lasts_its_window() {
        let s = Suspicion::default();
        assert!(!s.active());
        s.raise();
        assert!(s.active());
        s.until_ms.store(1, Relaxed);
        assert!(!s.active());
    }
}
