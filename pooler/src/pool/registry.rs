//! All pools, keyed by (database, server user), created on first login and re-derived on reload;
//! plus the connection counts shared per database and per user.

use foldhash::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{ConnLimit, Pool, PoolSettings};

/// Operator switches per database.
#[derive(Debug, Default, Clone, Copy)]
struct DbFlags {
    paused: bool,
    disabled: bool,
}
use crate::config::{Config, DatabaseConfig};

/// The pool registry.
#[derive(Debug, Default)]
pub struct Pools {
    /// PAUSE or SUSPEND without a database.
    all_paused: AtomicBool,
    /// The global pause is a SUSPEND, which keeps the servers.
    suspended: AtomicBool,
    flags: Mutex<HashMap<String, DbFlags>>,
    pools: Mutex<HashMap<(String, String), Arc<Pool>>>,
    db_limits: Mutex<HashMap<String, Arc<ConnLimit>>>,
    user_limits: Mutex<HashMap<String, Arc<ConnLimit>>>,
    /// When each pool was last seen with a client or a server (pool_idle_timeout).
    idle_since: Mutex<HashMap<(String, String), tokio::time::Instant>>,
    /// When each auto database was last seen in use (autodb_idle_timeout).
    db_idle_since: Mutex<HashMap<String, tokio::time::Instant>>,
    /// Logged-in servers of every pool (SHOW SERVERS, SOCKETS).
    pub servers: Arc<crate::servers::ServerRegistry>,
    /// Databases whose servers are elsewhere for now, and which are held (see redirect.rs).
    pub(super) moves: Mutex<super::redirect::Moves>,
    /// Taken by whatever derives and installs pool settings (a new pool, RELOAD, a redirect),
    /// so that none of them installs settings derived before another's change.
    retarget: Mutex<()>,
    /// Taken by PAUSE / RESUME / SUSPEND and by a pool taking the pause flags, so that each pool
    /// ends with the flags in force.
    pausing: Mutex<()>,
}

impl Pools {
    /// The pool for `db` and the server-side user, made if new.
    pub fn get_or_create(&self, config: &Config, db: &DatabaseConfig, pool_user: &str) -> Arc<Pool> {
        let pool = self.get_or_create_inner(config, db, pool_user);
        {
            // Under the pause lock: a PAUSE between reading the flags and applying them would
            // otherwise be undone for this pool.
            let _pausing = self.pausing.lock();
            pool.set_paused(self.is_paused(&db.name), self.lets_go(&db.name));
        }
        self.inherit_hold(&db.name, &pool);
        pool
    }

    fn get_or_create_inner(&self, config: &Config, db: &DatabaseConfig, pool_user: &str) -> Arc<Pool> {
        let key = (db.name.clone(), pool_user.to_owned());
        if let Some(p) = self.pools.lock().get(&key) {
            return p.clone();
        }
        let _retarget = self.retarget.lock();
        let db_limit = self.db_limits.lock().entry(db.name.clone()).or_default().clone();
        let user_limit = self.user_limits.lock().entry(pool_user.to_owned()).or_default().clone();
        let mut settings = PoolSettings::derive(config, db, pool_user);
        self.apply_redirect(&db.name, &mut settings);
        let mut pool = Pool::new(db.name.clone(), pool_user.to_owned(), settings, db_limit.clone(), user_limit.clone());
        pool.servers = self.servers.clone();
        let pool = Arc::new(pool);
        let kept = self.pools.lock().entry(key).or_insert_with(|| pool.clone()).clone();
        if Arc::ptr_eq(&kept, &pool) {
            db_limit.join(&pool);
            user_limit.join(&pool);
        }
        kept
    }

    /// pool_idle_timeout: drops pools that have had no client and no server for longer than
    /// `timeout`, logging each as PgBouncer does. A forced-user pool that keeps min_pool_size
    /// is never dropped. A pool someone still holds (a login in progress) is kept.
    pub fn reap_idle(&self, timeout: std::time::Duration) {
        let now = tokio::time::Instant::now();
        let mut pools = self.pools.lock();
        let mut since = self.idle_since.lock();
        if timeout.is_zero() {
            since.clear();
            return;
        }
        let mut reaped = Vec::new();
        for (key, pool) in pools.iter() {
            let settings = pool.settings();
            let unused = pool.clients.load(Ordering::Relaxed) <= 0 && pool.counts().total == 0;
            let kept = settings.forced_user && settings.min_pool_size > 0;
            // As PgBouncer's last_active_time: refreshed at every look while in use, so the age
            // counts from the last moment the pool had a client or a server.
            let last_active = since.entry(key.clone()).or_insert(now);
            if !unused || kept || Arc::strong_count(pool) > 1 {
                *last_active = now;
                continue;
            }
            let idle = now.duration_since(*last_active);
            if idle >= timeout {
                tracing::info!(
                    "cleaning up idle pool for user {} on db {} because: pool idle timeout (age= {}s)",
                    key.1,
                    key.0,
                    idle.as_secs()
                );
                reaped.push(key.clone());
            }
        }
        for key in reaped {
            pools.remove(&key);
            since.remove(&key);
        }
    }

    /// KILL: the pools of `db` (or of every database) that no client and no server use any more
    /// are forgotten, as PgBouncer frees a killed pool (SHOW POOLS and STATS no longer list
    /// them); the next login makes a new one. One still held (a server closing) stays: false
    /// when some did.
    pub fn forget_unused(&self, db: Option<&str>) -> bool {
        let mut pools = self.pools.lock();
        let mut since = self.idle_since.lock();
        let mut kept = false;
        pools.retain(|key, pool| {
            let unused =
                pool.clients.load(Ordering::Relaxed) <= 0 && pool.counts().total == 0 && Arc::strong_count(pool) == 1;
            let ours = db.is_none_or(|d| key.0 == d);
            if ours && unused {
                since.remove(key);
            }
            kept |= ours && !unused;
            !(ours && unused)
        });
        !kept
    }

    /// autodb_idle_timeout: an auto database (one made from `*`, for which `is_auto` is true)
    /// whose pools have had no client and no server for `timeout` is forgotten, as PgBouncer's
    /// janitor kills it: its pools go, and the next login registers it anew. Paused ones stay.
    pub fn reap_auto_dbs(&self, timeout: std::time::Duration, is_auto: impl Fn(&str) -> bool) {
        if timeout.is_zero() {
            return;
        }
        let now = tokio::time::Instant::now();
        let paused: Vec<String> = self.flags.lock().iter().filter(|(_, f)| f.paused).map(|(d, _)| d.clone()).collect();
        let mut pools = self.pools.lock();
        let mut since = self.db_idle_since.lock();
        let mut limits = self.db_limits.lock();
        let autos: Vec<String> = limits.keys().filter(|d| is_auto(d)).cloned().collect();
        for db in autos {
            let busy = pools.iter().any(|((d, _), p)| {
                *d == db && (p.clients.load(Ordering::Relaxed) > 0 || p.counts().total > 0 || Arc::strong_count(p) > 1)
            });
            let last = since.entry(db.clone()).or_insert(now);
            if busy || paused.contains(&db) {
                *last = now;
                continue;
            }
            let idle = now.duration_since(*last);
            if idle >= timeout {
                tracing::info!("cleaning up auto-database {db} because: autodb_idle_timeout (age={}s)", idle.as_secs());
                pools.retain(|(d, _), _| *d != db);
                limits.remove(&db);
                since.remove(&db);
            }
        }
    }

    /// Held while deriving and installing settings of existing pools (RELOAD, redirects).
    pub fn retarget_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.retarget.lock()
    }

    /// Every pool, sorted by database then user (SHOW POOLS order).
    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut v: Vec<_> = self.pools.lock().values().cloned().collect();
        v.sort_by(|a, b| (&a.db, &a.user).cmp(&(&b.db, &b.user)));
        v
    }

    /// PAUSE (db = None: all) or RESUME; applied to existing pools and inherited by new ones.
    /// As PgBouncer's, the global pause and each database's are apart: a global RESUME leaves a
    /// database paused by name (PAUSE db, KILL) paused.
    pub fn set_paused(&self, db: Option<&str>, paused: bool) {
        let _pausing = self.pausing.lock();
        match db {
            None => self.all_paused.store(paused, Ordering::Relaxed),
            Some(d) => self.flags.lock().entry(d.to_owned()).or_default().paused = paused,
        }
        for p in self.all() {
            p.set_paused(self.is_paused(&p.db), self.lets_go(&p.db));
        }
    }

    /// SUSPEND / RESUME: a global pause that keeps the servers (PAUSE lets go of them).
    pub fn set_suspended(&self, on: bool) {
        self.suspended.store(on, Ordering::Relaxed);
        self.set_paused(None, on);
    }

    /// True when `db`'s pools let go of their servers: PAUSE, global or by name (not SUSPEND).
    fn lets_go(&self, db: &str) -> bool {
        self.is_paused_by_name(db)
            || (self.all_paused.load(Ordering::Relaxed) && !self.suspended.load(Ordering::Relaxed))
    }

    /// True when `db` (or everything) is paused.
    pub fn is_paused(&self, db: &str) -> bool {
        self.all_paused.load(Ordering::Relaxed) || self.flags.lock().get(db).is_some_and(|f| f.paused)
    }

    /// True when `db` was paused by name (PAUSE db or KILL), whatever the global pause.
    pub fn is_paused_by_name(&self, db: &str) -> bool {
        self.flags.lock().get(db).is_some_and(|f| f.paused)
    }

    /// True when some database is paused by name.
    pub fn any_paused_by_name(&self) -> bool {
        self.flags.lock().values().any(|f| f.paused)
    }

    /// DISABLE / ENABLE: new logins to `db` are refused while disabled.
    pub fn set_disabled(&self, db: &str, disabled: bool) {
        self.flags.lock().entry(db.to_owned()).or_default().disabled = disabled;
    }

    /// True when `db` is disabled.
    pub fn is_disabled(&self, db: &str) -> bool {
        self.flags.lock().get(db).is_some_and(|f| f.disabled)
    }

    /// True when everything is paused (SHOW STATE).
    pub fn all_paused(&self) -> bool {
        self.all_paused.load(Ordering::Relaxed)
    }

    /// True when a pool for `db` has been made since start-up (an auto database is registered).
    pub fn knows_db(&self, db: &str) -> bool {
        self.db_limits.lock().contains_key(db)
    }

    /// Servers open (or being opened) for server-side user `user` now.
    pub fn user_connections(&self, user: &str) -> u32 {
        self.user_limits.lock().get(user).map(|l| l.current()).unwrap_or(0)
    }

    /// Servers open against database `db` now.
    pub fn db_connections(&self, db: &str) -> u32 {
        self.db_limits.lock().get(db).map(|l| l.current()).unwrap_or(0)
    }
}
