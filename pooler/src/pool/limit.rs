//! A connection count shared by all pools of one database (max_db_connections) or one user
//! (max_user_connections), and the pools that share it: when the count is at its maximum, a
//! pool may close the longest-idle server of another (PgBouncer's eviction), and a server
//! closed in one pool lets a client waiting in another open one at once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::Pool;

/// Servers open against one database or for one user.
#[derive(Debug, Default)]
pub struct ConnLimit {
    count: AtomicU32,
    /// The pools counted here (login path and server closes only; never the hot path).
    members: Mutex<Vec<Weak<Pool>>>,
}

impl ConnLimit {
    /// Takes one unit if fewer than `max` are taken; `max == 0` means no limit.
    pub fn try_acquire(&self, max: u32) -> bool {
        if max == 0 {
            self.count.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| (c < max).then_some(c + 1)).is_ok()
    }

    /// Gives one unit back.
    pub fn release(&self) {
        let _ = self.count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
    }

    /// Units taken now.
    pub fn current(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Adds a pool to the ones counted here.
    pub(super) fn join(&self, pool: &Arc<Pool>) {
        let mut m = self.members.lock();
        m.retain(|w| w.strong_count() > 0);
        m.push(Arc::downgrade(pool));
    }

    /// The pools counted here other than `except`.
    fn others(&self, except: &Pool) -> Vec<Arc<Pool>> {
        let m = self.members.lock();
        m.iter().filter_map(Weak::upgrade).filter(|p| !std::ptr::eq(p.as_ref(), except)).collect()
    }

    /// Closes the server idle the longest in another pool, logging `evicted`; false when no
    /// other pool has an idle server.
    pub(super) fn evict_idle(&self, except: &Pool) -> bool {
        let others = self.others(except);
        let oldest = others.iter().filter_map(|p| p.idle_age().map(|age| (age, p))).max_by_key(|(age, _)| *age);
        oldest.is_some_and(|(_, p)| p.evict_idle())
    }

    /// A unit was given back: the first other pool with a waiting client that can use it opens
    /// a server for that client.
    pub(super) fn offer(&self, except: &Pool) {
        for p in self.others(except) {
            if p.grant_slot() {
                return;
            }
        }
    }
}
