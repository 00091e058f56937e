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
    for pool in shared.pools.all() {
        if let Some(db) = new.database(&pool.db) {
            pool.set_settings(PoolSettings::derive(&new, &db, &pool.user));
        }
    }
    shared.set_config(new);
    tracing::info!("configuration reloaded");
    Ok(())
}
