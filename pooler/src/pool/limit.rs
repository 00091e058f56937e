//! A connection count shared by all pools of one database (max_db_connections) or one user
//! (max_user_connections).

use std::sync::atomic::{AtomicU32, Ordering};

/// Servers open against one database or for one user.
#[derive(Debug, Default)]
pub struct ConnLimit {
    count: AtomicU32,
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
}
