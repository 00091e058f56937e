//! Clients counted per database and per login user, for max_db_client_connections,
//! max_user_client_connections and the `current_client_connections` columns of SHOW DATABASES
//! and SHOW USERS. As PgBouncer, a client counts from the moment its database and user are
//! known (before authentication) until it leaves, whether it logged in or not. Only the login
//! path takes the lock; a client holds its counters in a [`Counted`] that gives them back on drop.

use foldhash::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

/// Counters by database name and by user name.
#[derive(Debug, Default)]
pub struct ClientCounts {
    dbs: Mutex<HashMap<String, Arc<AtomicU32>>>,
    users: Mutex<HashMap<String, Arc<AtomicU32>>>,
}

/// What one client is counted in; dropping it uncounts the client.
#[derive(Debug, Default)]
pub struct Counted {
    db: Option<Arc<AtomicU32>>,
    user: Option<Arc<AtomicU32>>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        for c in [self.db.take(), self.user.take()].into_iter().flatten() {
            c.fetch_sub(1, Relaxed);
        }
    }
}

fn counter(map: &Mutex<HashMap<String, Arc<AtomicU32>>>, name: &str) -> Arc<AtomicU32> {
    let mut m = map.lock();
    if let Some(c) = m.get(name) {
        return c.clone();
    }
    m.entry(name.to_owned()).or_default().clone()
}

/// Counts the client in `slot` unless it already is; returns the count that includes it (the
/// value of its own increment, so two clients racing for the last place never both get it).
fn count_in(slot: &mut Option<Arc<AtomicU32>>, map: &Mutex<HashMap<String, Arc<AtomicU32>>>, name: &str) -> u32 {
    if let Some(held) = slot {
        return held.load(Relaxed);
    }
    let c = counter(map, name);
    let n = c.fetch_add(1, Relaxed) + 1;
    *slot = Some(c);
    n
}

impl ClientCounts {
    /// Counts the client in database `db` (once); returns the database's count with it.
    pub fn count_db(&self, counted: &mut Counted, db: &str) -> u32 {
        count_in(&mut counted.db, &self.dbs, db)
    }

    /// Counts the client under user `user` (once); returns the user's count with it.
    pub fn count_user(&self, counted: &mut Counted, user: &str) -> u32 {
        count_in(&mut counted.user, &self.users, user)
    }

    /// Clients of database `db` now.
    pub fn db(&self, db: &str) -> u32 {
        self.dbs.lock().get(db).map_or(0, |c| c.load(Relaxed))
    }

    /// Clients of user `user` now.
    pub fn user(&self, user: &str) -> u32 {
        self.users.lock().get(user).map_or(0, |c| c.load(Relaxed))
    }

    /// True when `user` has been counted before (a user auth_query found stays known, as
    /// PgBouncer keeps its dynamic users).
    pub fn knows_user(&self, user: &str) -> bool {
        self.users.lock().contains_key(user)
    }

    /// Every user ever counted.
    pub fn user_names(&self) -> Vec<String> {
        self.users.lock().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_once_and_uncounts_on_drop() {
        let counts = ClientCounts::default();
        let mut a = Counted::default();
        assert_eq!(counts.count_db(&mut a, "p0"), 1);
        assert_eq!(counts.count_db(&mut a, "p0"), 1, "a client counts once");
        assert_eq!(counts.count_user(&mut a, "alice"), 1);
        let mut b = Counted::default();
        assert_eq!(counts.count_db(&mut b, "p0"), 2);
        assert_eq!(counts.count_user(&mut b, "alice"), 2);
        drop(a);
        assert_eq!((counts.db("p0"), counts.user("alice")), (1, 1));
        drop(b);
        assert_eq!((counts.db("p0"), counts.user("alice")), (0, 0));
        assert!(counts.knows_user("alice"));
        assert!(!counts.knows_user("bob"));
    }
}
