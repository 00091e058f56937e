//! What a logged-in client holds in pgmux's books (its cancel key, its place in the client
//! registry, its count in its pool), given back when the guard is dropped: whatever way the
//! client leaves (a normal end, an error, a client_login_timeout firing halfway through the
//! welcome, a hand-over to a new process), nothing stays behind.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::pool::Pool;
use crate::shared::Shared;

/// The guard. Made when the cancel key is registered; the rest is added as login goes on.
#[derive(Debug)]
pub struct Registration {
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    /// The cancel key, until given back.
    cancel_key: Option<(i32, i32)>,
    /// Counted in `pool.clients`.
    in_pool: bool,
    /// Its id in the client registry.
    client_id: Option<u64>,
}

impl Registration {
    /// Holds `cancel_key`, registered in `shared.cancels` for a client of `pool`.
    pub fn new(shared: &Arc<Shared>, pool: &Arc<Pool>, cancel_key: (i32, i32)) -> Self {
        Registration {
            shared: shared.clone(),
            pool: pool.clone(),
            cancel_key: Some(cancel_key),
            in_pool: false,
            client_id: None,
        }
    }

    /// The cancel key, until given back.
    pub fn cancel_key(&self) -> Option<(i32, i32)> {
        self.cancel_key
    }

    /// Counts the client in its pool (SHOW POOLS, limits).
    pub fn count_in_pool(&mut self) {
        if !self.in_pool {
            self.pool.clients.fetch_add(1, Ordering::Relaxed);
            self.in_pool = true;
        }
    }

    /// Records the client's id in the client registry.
    pub fn registered_as(&mut self, id: u64) {
        self.client_id = Some(id);
    }

    /// Gives everything back now (a hand-over to a new process, which registers the client
    /// anew); dropping the guard later does nothing more.
    pub fn release(&mut self) {
        if let Some(key) = self.cancel_key.take() {
            self.shared.cancels.unregister(key);
        }
        if let Some(id) = self.client_id.take() {
            self.shared.client_registry.unregister(id);
        }
        if std::mem::take(&mut self.in_pool) {
            self.pool.clients.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_and_pool() -> (Arc<Shared>, Arc<Pool>) {
        let text = "[databases]\napp = host=/nonexistent\n[pgbouncer]\n";
        let entries = crate::config::ini::parse_text(text, std::path::Path::new("t.ini")).unwrap();
        let config = crate::config::build(std::path::Path::new("t.ini"), entries).unwrap();
        let shared = Shared::new(config);
        let config = shared.config();
        let pool = shared.pools.get_or_create(&config, &config.databases["app"], "u");
        (shared, pool)
    }

    #[test]
    fn dropping_the_guard_halfway_through_a_login_gives_back_what_was_taken() {
        let (shared, pool) = shared_and_pool();
        let (key, _slot) = shared.cancels.register(0);
        let guard = Registration::new(&shared, &pool, key);
        // The login is abandoned here (client_login_timeout while the welcome is flushed).
        drop(guard);
        assert!(!shared.cancels.is_registered(key));
        assert_eq!(pool.clients.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_whole_session_is_given_back_once() {
        let (shared, pool) = shared_and_pool();
        let (key, _slot) = shared.cancels.register(0);
        let mut guard = Registration::new(&shared, &pool, key);
        guard.count_in_pool();
        guard.count_in_pool();
        assert_eq!(pool.clients.load(Ordering::Relaxed), 1);
        guard.release();
        assert!(!shared.cancels.is_registered(key));
        assert_eq!(pool.clients.load(Ordering::Relaxed), 0);
        drop(guard);
        assert_eq!(pool.clients.load(Ordering::Relaxed), 0, "released once only");
    }
}
