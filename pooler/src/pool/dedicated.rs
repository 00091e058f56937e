//! Replication connections (PgBouncer 1.23+): each gets a server of its own, logged in with the
//! client's startup parameters (`replication`, `options`, `application_name`, ...), counted in
//! the pool's size and limits, never shared and closed when the client leaves. A full pool
//! makes room by closing an idle server (`evicted`); otherwise the client waits, at most
//! query_wait_timeout.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::waiter::SlotGuard;
use super::{CheckoutError, Pool, PoolSettings};
use crate::server::ServerConn;

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
    ) -> Result<ServerConn, CheckoutError> {
        let start = Instant::now();
        let deadline = (!settings.query_wait_timeout.is_zero()).then(|| start + settings.query_wait_timeout);
        let target = settings.target.with_params(params);
        loop {
            let evict = {
                let mut s = self.state.lock();
                let room = self.reserve_locked(&mut s, settings, start.elapsed());
                if room.granted() {
                    None
                } else {
                    Some((s.idle.pop_front(), room))
                }
            };
            match evict {
                None => break,
                Some((Some(idle), _)) => {
                    self.discard(idle, "evicted");
                    continue;
                }
                // The database or user limit stops it: another pool's idle server makes room.
                Some((None, room)) => {
                    if self.evict_for(room) {
                        continue;
                    }
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(CheckoutError::QueryWaitTimeout);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.open_to(SlotGuard::new(self.clone()), settings, &target, true).await
    }
}
