//! RELOAD and SIGHUP: read the ini and auth_file again, and on success swap the config and
//! re-derive every pool's settings. A bad file leaves the old config in force.

use std::sync::Arc;

use crate::config::{self, ConfigError};
use crate::pool::PoolSettings;
use crate::shared::Shared;

/// Reloads from the ini the running config came from.
///
/// # Errors
/// The new files do not load; nothing was changed.
pub fn reload(shared: &Arc<Shared>) -> Result<(), ConfigError> {
    let old = shared.config();
    let new = config::load(&old.path)?;
    for w in &new.warnings {
        tracing::warn!("{w}");
    }
    apply(shared, new);
    Ok(())
}

/// Console `SET key = value`: changes one reloadable parameter in the running config.
///
/// # Errors
/// The parameter is unknown, needs a restart, or the value is bad.
pub fn set(shared: &Arc<Shared>, key: &str, value: &str) -> Result<(), String> {
    let new = shared.config().with_setting(key, value)?;
    apply(shared, new);
    tracing::info!("{key} set to {value}");
    Ok(())
}

/// Installs `new` and re-derives pool settings; a pool whose server target changed closes its
/// old servers as they are released.
fn apply(shared: &Arc<Shared>, new: crate::config::Config) {
    for pool in shared.pools.all() {
        if let Some(db) = new.database(&pool.db) {
            let next = PoolSettings::derive(&new, &db, &pool.user);
            let old = pool.settings();
            let moved = old.target.hosts != next.target.hosts
                || old.target.port != next.target.port
                || old.target.dbname != next.target.dbname;
            pool.set_settings(next);
            if moved {
                pool.reconnect();
                if new.general.server_fast_close {
                    shared.client_registry.fast_close(&pool.db, &pool.user);
                }
            }
        }
    }
    crate::logging::reconfigure(&new.general);
    shared.set_config(new);
}
