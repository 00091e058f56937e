//! Where the following pools point and whether they are held: the only place that changes
//! either, for the watcher and SWITCHOVER alike.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::config::ADMIN_DB;
use crate::patroni::{Member, PatroniError};
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

/// Who holds the following pools: each lets go of its own hold only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Owner {
    /// The watcher, while the leader changes.
    Watcher,
    /// A SWITCHOVER of ours.
    Switchover,
}

/// Holds (or lets go of) new transactions on the following pools for `owner`. The pools are
/// held while any owner holds them, and let go of all at once (whatever RELOAD did since).
pub(super) fn hold(shared: &Shared, owner: Owner, on: bool) {
    let mut h = shared.patroni.holds.lock();
    let was = h.watcher || h.switchover;
    match owner {
        Owner::Watcher => h.watcher = on,
        Owner::Switchover => h.switchover = on,
    }
    let now = h.watcher || h.switchover;
    if now && !was {
        h.dbs = following(shared);
        shared.pools.set_held(&h.dbs, true);
    } else if !now && was {
        let dbs = std::mem::take(&mut h.dbs);
        shared.pools.set_held(&dbs, false);
        shared.pools.release_all_held();
    }
    shared.patroni.holding.store(now, Relaxed);
}

/// Lets go of every hold and every redirect: patroni_url was emptied.
pub(super) fn forget_all(shared: &Shared) {
    hold(shared, Owner::Watcher, false);
    hold(shared, Owner::Switchover, false);
    let moved = shared.pools.redirect(|| shared.config(), &shared.pools.redirected(), None);
    if moved > 0 {
        tracing::info!("patroni: off, {moved} pools back on their own targets");
    }
    shared.patroni.update(|v| *v = crate::patroni::View::default());
}

/// Points the following pools at `leader`: local (their configured target) when it is this
/// node, else its address over TCP. Logs a change.
pub(super) fn point_at(shared: &Shared, leader: &Member, local: bool) {
    let to = (!local).then(|| (leader.host.clone(), leader.port));
    let dbs = following(shared);
    let mut moved = shared.pools.redirect(|| shared.config(), &dbs, to);
    // Databases a RELOAD took out of patroni_databases go back to their own targets.
    let stale: Vec<String> = shared.pools.redirected().into_iter().filter(|d| !dbs.contains(d)).collect();
    if !stale.is_empty() {
        moved += shared.pools.redirect(|| shared.config(), &stale, None);
    }
    let before = shared.patroni.view.read().routed_to.clone();
    if before.as_deref() == Some(leader.name.as_str()) {
        if moved > 0 {
            tracing::info!("patroni: {moved} pools moved to leader {}", leader.name);
        }
    } else {
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
pub(super) async fn writable(shared: &Arc<Shared>, member: &Member) -> Result<(), PatroniError> {
    let dbs = following(shared);
    let Some(pool) = shared.pools.all().into_iter().find(|p| dbs.contains(&p.db)) else {
        return Ok(());
    };
    pool.probe_at(&member.host, member.port, WRITABLE_SQL).await.map_err(|e| PatroniError::NotWritable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patroni::Cluster;

    fn shared(extra: &str) -> Arc<Shared> {
        let text = format!(
            "[databases]\napp = host=/tmp port=5432\nother = host=/tmp port=5432\n[pgbouncer]\n\
             patroni_url = http://127.0.0.1:1\npatroni_databases = app\n{extra}"
        );
        let entries = crate::config::ini::parse_text(&text, std::path::Path::new("t.ini")).unwrap();
        let config = crate::config::build(std::path::Path::new("t.ini"), entries).unwrap();
        Shared::new(config)
    }

    fn pool(s: &Shared, db: &str) -> Arc<crate::pool::Pool> {
        let config = s.config();
        let d = config.database(db).unwrap();
        s.pools.get_or_create(&config, &d, "u")
    }

    #[test]
    fn each_owner_lets_go_of_its_own_hold_only() {
        let s = shared("");
        let app = pool(&s, "app");
        let other = pool(&s, "other");
        hold(&s, Owner::Watcher, true);
        hold(&s, Owner::Switchover, true);
        assert!(app.is_held() && !other.is_held(), "only following databases are held");
        hold(&s, Owner::Watcher, false);
        assert!(app.is_held(), "the switchover still holds");
        // A pool made while held is held too.
        let late = s.pools.get_or_create(&s.config(), &s.config().database("app").unwrap(), "late");
        assert!(late.is_held());
        hold(&s, Owner::Switchover, false);
        assert!(!app.is_held() && !late.is_held() && !s.patroni.is_holding());
        assert!(!app.is_paused(), "a hold is not the operator's PAUSE");
    }

    #[test]
    fn the_pools_follow_the_leader_and_come_back() {
        let s = shared("");
        let app = pool(&s, "app");
        let other = pool(&s, "other");
        let c = Cluster::parse(
            br#"{"members": [{"name": "a", "role": "leader", "state": "running", "host": "10.0.0.2", "port": 6000}]}"#,
        )
        .unwrap();
        let leader = c.leader().unwrap();
        point_at(&s, leader, false);
        let t = &app.settings().target;
        assert_eq!((t.hosts.clone(), t.port), (vec!["10.0.0.2".to_owned()], 6000));
        assert_eq!(other.settings().target.hosts, vec!["/tmp".to_owned()], "not following: stays");
        assert_eq!(s.patroni.view().routed_to.as_deref(), Some("a"));
        // Kept across a re-derivation (what RELOAD does), and a new pool gets it too.
        let late = s.pools.get_or_create(&s.config(), &s.config().database("app").unwrap(), "late");
        assert_eq!(late.settings().target.port, 6000);
        point_at(&s, leader, true);
        assert_eq!(app.settings().target.hosts, vec!["/tmp".to_owned()]);
        assert!(s.pools.redirected().is_empty());
    }
}
