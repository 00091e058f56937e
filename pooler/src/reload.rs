//! RELOAD and SIGHUP: read the ini and auth_file again, and on success swap the config and
//! re-derive every pool's settings. A bad file leaves the old config in force; restart-only
//! settings keep their values in force whatever the file says, as in PgBouncer.

use std::sync::Arc;

use crate::config::{self, BadValue, ConfigError};
use crate::pool::PoolSettings;
use crate::shared::Shared;

/// Why RELOAD failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The files do not load; nothing was changed.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The rest was applied, but the TLS settings were not: the TLS in force stays, as in
    /// PgBouncer. The reason was logged as `TLS setup failed: REASON`.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// Reloads from the ini the running config came from.
///
/// # Errors
/// The new files do not load (nothing was changed), or the TLS settings could not be applied
/// (everything else was).
pub fn reload(shared: &Arc<Shared>) -> Result<(), ReloadError> {
    crate::systemd::reloading();
    let result = reload_files(shared);
    crate::systemd::ready(shared);
    result
}

fn reload_files(shared: &Arc<Shared>) -> Result<(), ReloadError> {
    let old = shared.config();
    let config::Reloaded { config: mut new, needs_restart } = config::reload(&old)?;
    // PgBouncer ignores these silently; saying so spares the operator a puzzle.
    for (name, wanted, kept) in needs_restart {
        tracing::info!("{name} = \"{wanted}\" in the config needs a restart; \"{kept}\" stays in force");
    }
    log_problems(&new);
    let tls_error = keep_tls_on_error(&old, &mut new);
    if tls_error.is_some() {
        tracing::error!("TLS configuration could not be reloaded, keeping old configuration");
    }
    apply(shared, new);
    tls_error.map_or(Ok(()), |e| Err(ReloadError::Tls(e)))
}

/// Logs what a loaded config carries: warnings, and the errors PgBouncer logs and goes on with
/// (an unreadable auth_file or HBA file, a broken auth_file line).
pub fn log_problems(config: &crate::config::Config) {
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    for e in &config.errors {
        tracing::error!("{e}");
    }
}

/// When `new`'s TLS settings could not be applied, logs why (PgBouncer's words) and gives it
/// the TLS objects of `old`; returns the reason.
fn keep_tls_on_error(old: &crate::config::Config, new: &mut crate::config::Config) -> Option<String> {
    let e = new.tls_error.take()?;
    tracing::error!("TLS setup failed: {e}");
    new.client_tls = old.client_tls.clone();
    new.server_tls = old.server_tls.clone();
    Some(e)
}

/// What console `SET` did.
#[derive(Debug, PartialEq, Eq)]
pub enum SetOutcome {
    /// The value is in force.
    Applied,
    /// The value is stored, but the TLS settings it makes could not be applied: the TLS in
    /// force stays (PgBouncer's notice `TLS settings could not be applied, still using old
    /// configuration`).
    TlsNotApplied,
}

/// Why console `SET` changed nothing: the parameter is unknown, needs a restart, or the value
/// is bad. Its text is the console's error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct SetError(#[from] pub BadValue);

/// Console `SET key = value`: changes one reloadable parameter in the running config.
///
/// # Errors
/// The parameter is unknown, needs a restart, or the value is bad.
pub fn set(shared: &Arc<Shared>, key: &str, value: &str) -> Result<SetOutcome, SetError> {
    let old = shared.config();
    let mut new = old.with_setting(key, value)?;
    log_problems(&new);
    let outcome = match keep_tls_on_error(&old, &mut new) {
        Some(_) => SetOutcome::TlsNotApplied,
        None => SetOutcome::Applied,
    };
    apply(shared, new);
    tracing::info!("{key} set to {value}");
    Ok(outcome)
}

/// Installs `new` and re-derives pool settings; a pool whose server target changed closes its
/// old servers as they are released, and so do all pools when the server TLS settings changed
/// (PgBouncer marks every pool dirty then, so no connection keeps older, maybe weaker, TLS).
fn apply(shared: &Arc<Shared>, new: crate::config::Config) {
    let tls_changed = {
        let old = shared.config();
        crate::tls::ServerTls::differs(old.server_tls.as_ref(), new.server_tls.as_ref())
    };
    let mut stale = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    let retarget = shared.pools.retarget_lock();
    for pool in shared.pools.all() {
        if new.database(&pool.db).is_none() && pool.db != crate::config::ADMIN_DB && !removed.contains(&pool.db) {
            removed.push(pool.db.clone());
        }
        if let Some(db) = new.database(&pool.db) {
            let mut next = PoolSettings::derive(&new, &db, &pool.user);
            // A database following the Patroni leader keeps pointing at it.
            shared.pools.apply_redirect(&pool.db, &mut next);
            let old = pool.settings();
            let moved = old.target.hosts != next.target.hosts
                || old.target.port != next.target.port
                || old.target.dbname != next.target.dbname;
            pool.set_settings(next);
            if moved || tls_changed {
                stale.push((pool, moved));
            }
        }
    }
    let fast_close = new.general.server_fast_close;
    crate::logging::reconfigure(&new.general);
    shared.set_config(new);
    // Only now: a redirect waiting for the lock derives from the new config.
    drop(retarget);
    // After the swap, so that a server opened from now on uses the new TLS settings.
    for (pool, moved) in stale {
        pool.reconnect();
        if tls_changed {
            pool.forget_login_failure();
        }
        if moved && fast_close {
            shared.client_registry.fast_close(&pool.db, &pool.user);
        }
    }
    for db in removed {
        drop_database(shared, &db);
    }
}

/// A database gone from the config, as PgBouncer's `kill_database`: its clients are closed with
/// `database removed`, its servers closed, and its pools forgotten once unused.
fn drop_database(shared: &Arc<Shared>, db: &str) {
    tracing::warn!("dropping database '{db}' as it does not exist anymore or inactive auto-database");
    for c in shared.client_registry.all() {
        if c.db() == db {
            c.request_kill(crate::clients::KillReason::DatabaseRemoved);
        }
    }
    for p in shared.pools.all().into_iter().filter(|p| p.db == db) {
        p.reconnect_because("database removed");
    }
    // The clients' tasks let go of the pools a moment after they leave.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let (shared, db) = (shared.clone(), db.to_owned());
        rt.spawn(async move {
            for _ in 0..100 {
                if shared.pools.forget_unused(Some(&db)) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        });
    }
}
