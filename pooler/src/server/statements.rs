//! Prepared statements that exist on one server connection, by pgmux's server-side name (a hash
//! of query text and parameter types), kept as an LRU for max_prepared_statements as PgBouncer's
//! per-server cache: a Bind or Describe marks its statement used, a Parse that makes the cache
//! exceed the limit closes the least recently used ones.
//!
//! Each entry remembers the statement epoch it was prepared in (`Shared::statement_epoch`,
//! raised when DDL passes through pgmux or a server reports `cached plan must not change result
//! type`): an entry from an older epoch is stale, and is closed and prepared again before its next
//! use, so that PostgreSQL plans it afresh instead of failing on a changed result shape.

use std::collections::HashMap;

use foldhash::fast::RandomState;

/// What a server holds for a statement hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Prepared in the current epoch: usable as it is.
    Fresh,
    /// Prepared before the current epoch: close it and prepare it again.
    Stale,
    /// Not prepared here.
    Absent,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Tick of its last use.
    used: u64,
    /// Statement epoch it was prepared in.
    epoch: u64,
}

/// The statements prepared on a server.
#[derive(Debug, Default)]
pub struct ServerStatements {
    entries: HashMap<u64, Entry, RandomState>,
    tick: u64,
}

impl ServerStatements {
    /// True when the statement `hash` is prepared here.
    pub fn contains(&self, hash: u64) -> bool {
        self.entries.contains_key(&hash)
    }

    /// Whether `hash` is prepared here and still good in `epoch`; a fresh one is marked as just
    /// used.
    pub fn lookup(&mut self, hash: u64, epoch: u64) -> Held {
        self.tick += 1;
        match self.entries.get_mut(&hash) {
            Some(e) if e.epoch >= epoch => {
                e.used = self.tick;
                Held::Fresh
            }
            Some(_) => Held::Stale,
            None => Held::Absent,
        }
    }

    /// Records `hash` as prepared in `epoch` (and just used).
    pub fn insert(&mut self, hash: u64, epoch: u64) {
        self.tick += 1;
        self.entries.insert(hash, Entry { used: self.tick, epoch });
    }

    /// Forgets `hash` (closed, or its Parse failed).
    pub fn remove(&mut self, hash: u64) {
        self.entries.remove(&hash);
    }

    /// The least recently used statement when more than `max` are prepared, forgotten here; the
    /// caller closes it on the server. Called until `None`, so lowering the limit at run time
    /// shrinks the cache at the next Parse, as PgBouncer does. The scan is linear, but it runs
    /// only when a statement is added to a full cache.
    pub fn evict_over(&mut self, max: usize) -> Option<u64> {
        if self.entries.len() <= max {
            return None;
        }
        let (&victim, _) = self.entries.iter().min_by_key(|(_, e)| e.used)?;
        self.entries.remove(&victim);
        Some(victim)
    }

    /// Forgets everything (DISCARD ALL or DEALLOCATE ALL ran).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many are prepared.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when none are.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_follows_use_not_insertion() {
        let mut s = ServerStatements::default();
        for h in 1..=3 {
            s.insert(h, 0);
        }
        assert_eq!(s.lookup(1, 0), Held::Fresh);
        assert_eq!(s.lookup(9, 0), Held::Absent);
        assert_eq!(s.evict_over(3), None);
        assert_eq!(s.evict_over(1), Some(2));
        assert_eq!(s.evict_over(1), Some(3));
        assert_eq!(s.evict_over(1), None);
        assert!(s.contains(1));
    }

    #[test]
    fn an_older_epoch_is_stale_until_prepared_again() {
        let mut s = ServerStatements::default();
        s.insert(7, 1);
        assert_eq!(s.lookup(7, 1), Held::Fresh);
        assert_eq!(s.lookup(7, 2), Held::Stale);
        s.insert(7, 2);
        assert_eq!(s.lookup(7, 2), Held::Fresh);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_stale_entry_is_not_marked_used() {
        let mut s = ServerStatements::default();
        s.insert(1, 1);
        s.insert(2, 2);
        assert_eq!(s.lookup(1, 2), Held::Stale);
        // 1 was not touched by the stale lookup: it is still the least recently used.
        assert_eq!(s.evict_over(1), Some(1));
    }
}
