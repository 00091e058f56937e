//! Databases whose servers are somewhere else for now, and databases held while that changes:
//! the pools of a database that follows the Patroni leader point at the leader's address while
//! this node is a replica, and hold new checkouts while the leader changes. Set by
//! `crate::patroni`; applied to every pool of the database, existing and future, and kept
//! across RELOAD.

use std::collections::{HashMap, HashSet};

use super::{PoolSettings, Pools};
use crate::config::Config;

/// The registry's record of moved and held databases.
#[derive(Debug, Default)]
pub struct Moves {
    /// Database -> (host, port) its servers are opened at instead of its configured target.
    redirects: HashMap<String, (String, u16)>,
    held: HashSet<String>,
}

impl Pools {
    /// Points `settings` (of a pool of `db`) at the redirect in force, if any.
    pub fn apply_redirect(&self, db: &str, settings: &mut PoolSettings) {
        if let Some((host, port)) = self.moves.lock().redirects.get(db) {
            settings.target = settings.target.moved_to(host, *port);
        }
    }

    /// Where `db`'s servers are opened instead of its configured target, if anywhere.
    pub fn redirect_of(&self, db: &str) -> Option<(String, u16)> {
        self.moves.lock().redirects.get(db).cloned()
    }

    /// Sets (Some) or clears (None) the redirect of each database in `dbs`. The pools whose
    /// target changes get the new settings and close their servers at the old one as they are
    /// released (idle ones now). Returns how many pools moved.
    /// `config` is read once the settings lock is taken (a RELOAD installs its config before
    /// letting go of it).
    pub fn redirect(
        &self,
        config: impl FnOnce() -> std::sync::Arc<Config>,
        dbs: &[String],
        to: Option<(String, u16)>,
    ) -> usize {
        let _retarget = self.retarget_lock();
        let config = config();
        {
            let mut m = self.moves.lock();
            for db in dbs {
                match &to {
                    Some(addr) => m.redirects.insert(db.clone(), addr.clone()),
                    None => m.redirects.remove(db),
                };
            }
        }
        let mut moved = 0;
        for pool in self.all() {
            if !dbs.contains(&pool.db) {
                continue;
            }
            let Some(db) = config.database(&pool.db) else { continue };
            let mut next = PoolSettings::derive(&config, &db, &pool.user);
            self.apply_redirect(&pool.db, &mut next);
            let old = pool.settings();
            if old.target.hosts == next.target.hosts && old.target.port == next.target.port {
                continue;
            }
            pool.set_settings(next);
            pool.reconnect();
            pool.forget_login_failure();
            moved += 1;
        }
        moved
    }

    /// Holds or lets go of new checkouts on every pool of each database in `dbs`.
    pub fn set_held(&self, dbs: &[String], held: bool) {
        // Under the lock a new pool reads its flag with (registry.rs), so that a login racing
        // with a release cannot hold its pool again.
        let mut m = self.moves.lock();
        for db in dbs {
            if held {
                m.held.insert(db.clone());
            } else {
                m.held.remove(db);
            }
        }
        for p in self.all() {
            if dbs.contains(&p.db) {
                p.set_held(held);
            }
        }
    }

    /// Gives a new pool of `db` the hold in force.
    pub(super) fn inherit_hold(&self, db: &str, pool: &super::Pool) {
        let m = self.moves.lock();
        pool.set_held(m.held.contains(db));
    }

    /// True while `db` is held.
    pub fn is_held(&self, db: &str) -> bool {
        self.moves.lock().held.contains(db)
    }

    /// Lets go of every held database, whichever list held it.
    pub fn release_all_held(&self) {
        let dbs: Vec<String> = self.moves.lock().held.drain().collect();
        if !dbs.is_empty() {
            self.set_held(&dbs, false);
        }
    }

    /// The databases redirected now.
    pub fn redirected(&self) -> Vec<String> {
        self.moves.lock().redirects.keys().cloned().collect()
    }
}

impl super::Pool {
    /// Logs in to `host:port` as this pool's servers do and runs `sql` there, then closes the
    /// connection: is the new leader taking writes yet? Nothing is added to the pool.
    ///
    /// # Errors
    /// The connect, the login or the query failed (the server's message).
    pub async fn probe_at(&self, host: &str, port: u16, sql: &str) -> Result<(), crate::server::ServerError> {
        let settings = self.settings();
        let target = settings.target.moved_to(host, port);
        let creds = self.credentials(&settings);
        let mut tag = crate::logging::ConnTag::server_to(crate::net::next_conn_id(), &self.db, &self.user, host, port);
        let tls = settings.tls.clone();
        let mut conn = crate::server::connect(
            &target,
            (0, host),
            &creds,
            tls.as_ref(),
            settings.connect_timeout.min(std::time::Duration::from_secs(5)),
            crate::server::Opening { tag: &mut tag, log_connections: false, listed_in: None },
        )
        .await?;
        crate::server::run_simple_query(&mut conn, sql).await
    }
}
