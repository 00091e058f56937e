//! Replication connections (PgBouncer 1.23+): each gets a server of its own, logged in with the
//! client's startup parameters (`replication`, `options`, `application_name`, ...), counted in
//! the pool's size and limits, never shared and closed when the client leaves. A full pool
//! makes room by closing an idle server (`evicted`); otherwise the client waits, at most
//! query_wait_timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::room::Room;
use super::waiter::SlotGuard;
use super::{CheckoutError, Lease, Pool, PoolSettings};

impl Pool {
    /// Opens a server for one replication client.
    ///
    /// # Cancel safety
    /// Dropping the future frees the slot it reserved and closes a half-open connection.
    ///
    /// # Errors
    /// query_wait_timeout, or the server's refusal (`login failed`).
    pub async fn open_dedicated(
        self: &Arc<Self>,
        settings: &PoolSettings,
        params: &[(String, String)],
    ) -> Result<Lease, CheckoutError> {
        let start = Instant::now();
        let deadline = (!settings.query_wait_timeout.is_zero()).then(|| start + settings.query_wait_timeout);
        let target = settings.target.with_params(params);
        loop {
            let evict = {
                let mut s = self.state.lock();
                match self.reserve_locked(&mut s, settings, start.elapsed()) {
                    room if room.granted() => break,
                    // The pool's own size stops it: one of its idle servers makes room.
                    Room::PoolFull => s.idle.pop_front().map(Ok),
                    // Another client's connect is proving the server works: wait for it.
                    Room::Probing => None,
                    room => Some(Err(room)),
                }
            };
            match evict {
                Some(Ok(idle)) => {
                    self.discard(idle, "evicted");
                    continue;
                }
                // The database or user limit stops it: another pool's idle server makes room.
                Some(Err(room)) if self.evict_for(room) => continue,
                _ => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(CheckoutError::QueryWaitTimeout);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let conn = self.open_to(SlotGuard::new(self.clone()), settings, &target, true).await?;
        Ok(Lease::new(conn, self.clone()))
    }
}
