//! auth_query: a user missing from auth_file is looked up in PostgreSQL, over a pooled
//! connection of auth_user to auth_dbname (or the client's database), with the user name sent
//! as a Bind parameter. Answers are cached for a few seconds so a login storm costs one query
//! per user; a failed login drops the cached secret so a changed password is seen at once.
//! A missing row and a NULL secret (an expired role under the default query) both come back as
//! `None`, and the caller runs a mock exchange: the client cannot tell them from a wrong
//! password.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::{Config, DatabaseConfig, StoredSecret};
use crate::shared::Shared;

/// How long an answer is reused.
const CACHE_TTL: Duration = Duration::from_secs(10);
/// Entries kept at most (random user names must not grow memory without bound).
const CACHE_MAX: usize = 10_000;

/// Why a lookup gave no answer. The client is told only that the lookup failed; the reason is
/// logged.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// auth_dbname names no database, or the admin console.
    #[error("{0}")]
    Config(String),
    /// The query failed or returned the wrong shape.
    #[error("{0}")]
    Failed(String),
    /// No answer within the time allowed.
    #[error("auth_query timed out")]
    Timeout,
}

/// One cached answer: when it was fetched, and the secret (`None`: no usable secret).
type Answer = (Instant, Option<StoredSecret>);

/// Recent auth_query answers by (auth database, user).
#[derive(Debug, Default)]
pub struct AuthCache {
    entries: Mutex<HashMap<(String, String), Answer>>,
}

impl AuthCache {
    fn get(&self, db: &str, user: &str) -> Option<Option<StoredSecret>> {
        let map = self.entries.lock();
        let (at, secret) = map.get(&(db.to_owned(), user.to_owned()))?;
        (at.elapsed() < CACHE_TTL).then(|| secret.clone())
    }

    fn put(&self, db: &str, user: &str, secret: Option<StoredSecret>) {
        let mut map = self.entries.lock();
        if map.len() >= CACHE_MAX {
            map.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if map.len() >= CACHE_MAX {
                map.clear();
            }
        }
        map.insert((db.to_owned(), user.to_owned()), (Instant::now(), secret));
    }

    /// Drops a cached secret after a failed login with it.
    pub fn forget(&self, db: &str, user: &str) {
        self.entries.lock().remove(&(db.to_owned(), user.to_owned()));
    }
}

/// Where and how a database's users are looked up.
#[derive(Debug, Clone)]
pub struct LookupPlan {
    /// The database entry the query runs in.
    pub auth_db: DatabaseConfig,
    /// The user it runs as.
    pub auth_user: String,
    /// The query.
    pub query: String,
}

impl LookupPlan {
    /// The plan for clients of `db`, or `None` when no auth_user applies.
    ///
    /// # Errors
    /// auth_dbname names no configured database, or the admin console.
    pub fn for_database(config: &Config, db: &DatabaseConfig) -> Result<Option<Self>, LookupError> {
        let g = &config.general;
        let Some(auth_user) = db.auth_user.clone().or_else(|| g.auth_user.clone()) else { return Ok(None) };
        let auth_db = match db.auth_dbname.as_ref().or(g.auth_dbname.as_ref()) {
            None => db.clone(),
            Some(name) if name == crate::admin::ADMIN_DB => {
                return Err(LookupError::Config(format!(
                    "cannot use the reserved \"{name}\" database as an auth_dbname"
                )))
            }
            Some(name) => config
                .database(name)
                .ok_or_else(|| LookupError::Config(format!("authentication database \"{name}\" is not configured")))?,
        };
        let query = db.auth_query.clone().unwrap_or_else(|| g.auth_query.clone());
        Ok(Some(LookupPlan { auth_db, auth_user, query }))
    }
}

/// Looks `user` up as `plan` says, through the cache.
///
/// # Errors
/// The query failing, a wrong result shape, or no answer within server_connect_timeout.
pub async fn lookup(
    shared: &Arc<Shared>,
    config: &Config,
    plan: &LookupPlan,
    user: &str,
) -> Result<Option<StoredSecret>, LookupError> {
    if let Some(hit) = shared.auth_cache.get(&plan.auth_db.name, user) {
        return Ok(hit);
    }
    let limit = config.general.server_connect_timeout.max(Duration::from_secs(1));
    let pool = shared.pools.get_or_create(config, &plan.auth_db, &plan.auth_user);
    let (query, user_owned) = (plan.query.clone(), user.to_owned());
    // Its own task: a login abandoned half-way must not drop a leased server (and its slot).
    let task = tokio::spawn(async move {
        let mut server = match tokio::time::timeout(limit, pool.checkout()).await {
            Err(_) => return Err(LookupError::Timeout),
            Ok(Err(e)) => return Err(LookupError::Failed(format!("no server for auth_query: {e}"))),
            Ok(Ok(s)) => s,
        };
        match tokio::time::timeout(limit, crate::server::run_lookup(&mut server, &query, &user_owned)).await {
            Err(_) => {
                pool.discard(server, "auth_query timed out");
                Err(LookupError::Timeout)
            }
            Ok(Ok(rows)) => {
                pool.release(server);
                Ok(rows)
            }
            Ok(Err(e @ crate::server::ServerError::Rejected { .. })) => {
                pool.release(server);
                Err(LookupError::Failed(format!("error response from auth_query: {e}")))
            }
            Ok(Err(e)) => {
                pool.discard(server, "unexpected response from auth_query");
                Err(LookupError::Failed(format!("auth_query: {e}")))
            }
        }
    });
    let rows = task.await.map_err(|e| LookupError::Failed(format!("auth_query task: {e}")))??;
    let secret = match rows.as_slice() {
        [] => None,
        [row] if row.len() == 2 => row[1].as_deref().filter(|s| !s.is_empty()).map(StoredSecret::parse),
        [row] => return Err(LookupError::Failed(format!("expected 2 columns from auth_query, not {}", row.len()))),
        _ => return Err(LookupError::Failed("auth_query returned more than one row".into())),
    };
    shared.auth_cache.put(&plan.auth_db.name, user, secret.clone());
    Ok(secret)
}
