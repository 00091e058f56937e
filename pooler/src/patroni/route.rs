//! Where the following pools point and whether they are held: the only place that changes
//! either, for the watcher and SWITCHOVER alike.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::Member;
use crate::config::ADMIN_DB;
use crate::shared::Shared;

/// Errors when the server is still in recovery, so a successful run means it takes writes.
const WRITABLE_SQL: &str =
    "DO $pgmux$ BEGIN IF pg_is_in_recovery() THEN RAISE EXCEPTION 'in recovery'; END IF; END $pgmux$";

/// The databases whose pools follow the leader: configured entries and pools of auto
/// databases named by patroni_databases.
pub(super) fn following(shared: &Shared) -> Vec<String> {
    let config = shared.config();
    let p = &config.general.patroni;
    let mut dbs: Vec<String> = config.databases.keys().filter(|d| *d != "*" && p.follows(d)).cloned().collect();
    for pool in shared.pools.all() {
        if p.follows(&pool.db) && pool.db != ADMIN_DB && !dbs.contains(&pool.db) {
            dbs.push(pool.db.clone());
        }
    }
    dbs
}

/// Holds (or lets go of) new transactions on the following pools.
pub(super) fn hold(shared: &Shared, on: bool) {
    let was = shared.patroni.holding.swap(on, Relaxed);
    if was != on {
        shared.pools.set_held(&following(shared), on);
    }
}

/// Points the following pools at `leader`: local (their configured target) when it is this
/// node, else its address over TCP. Logs a change.
pub(super) fn point_at(shared: &Shared, leader: &Member, local: bool) {
    let config = shared.config();
    let to = (!local).then(|| (leader.host.clone(), leader.port));
    let moved = shared.pools.redirect(&config, &following(shared), to);
    let before = shared.patroni.view.read().routed_to.clone();
    if before.as_deref() != Some(leader.name.as_str()) {
        shared.patroni.update(|v| v.routed_to = Some(leader.name.clone()));
        if before.is_some() {
            shared.patroni.leader_changes.fetch_add(1, Relaxed);
        }
        if local {
            tracing::info!("patroni: following leader {} (this node, local servers), {moved} pools moved", leader.name);
        } else {
            tracing::info!(
                "patroni: following leader {} at {}:{}, {moved} pools moved",
                leader.name,
                leader.host,
                leader.port
            );
        }
    }
}

/// Ok when `member` takes writes, tried through one of the following pools (a real login and a
/// query); Ok too when no such pool exists yet (nothing to move).
pub(super) async fn writable(shared: &Arc<Shared>, member: &Member) -> Result<(), String> {
    let dbs = following(shared);
    let Some(pool) = shared.pools.all().into_iter().find(|p| dbs.contains(&p.db)) else {
        return Ok(());
    };
    pool.probe_at(&member.host, member.port, WRITABLE_SQL).await
}
