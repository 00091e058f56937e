//! All pools, keyed by (database, server user), created on first login and re-derived on reload;
//! plus the connection counts shared per database and per user.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{ConnLimit, Pool, PoolSettings};
use crate::config::{Config, DatabaseConfig};

/// The pool registry.
#[derive(Debug, Default)]
pub struct Pools {
    pools: Mutex<HashMap<(String, String), Arc<Pool>>>,
    db_limits: Mutex<HashMap<String, Arc<ConnLimit>>>,
    user_limits: Mutex<HashMap<String, Arc<ConnLimit>>>,
}

impl Pools {
    /// The pool for `db` and the server-side user, made if new.
    pub fn get_or_create(
        &self,
        config: &Config,
        db: &DatabaseConfig,
        pool_user: &str,
    ) -> Arc<Pool> {
        let key = (db.name.clone(), pool_user.to_owned());
        if let Some(p) = self.pools.lock().get(&key) {
            return p.clone();
        }
        let db_limit = self
            .db_limits
            .lock()
            .entry(db.name.clone())
            .or_default()
            .clone();
        let user_limit = self
            .user_limits
            .lock()
            .entry(pool_user.to_owned())
            .or_default()
            .clone();
        let settings = PoolSettings::derive(config, db, pool_user);
        let pool = Arc::new(Pool::new(
            db.name.clone(),
            pool_user.to_owned(),
            settings,
            db_limit,
            user_limit,
        ));
        self.pools.lock().entry(key).or_insert(pool).clone()
    }

    /// Every pool, sorted by database then user (SHOW POOLS order).
    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut v: Vec<_> = self.pools.lock().values().cloned().collect();
        v.sort_by(|a, b| (&a.db, &a.user).cmp(&(&b.db, &b.user)));
        v
    }

    /// Servers open against database `db` now.
    pub fn db_connections(&self, db: &str) -> u32 {
        self.db_limits
            .lock()
            .get(db)
            .map(|l| l.current())
            .unwrap_or(0)
    }
}
