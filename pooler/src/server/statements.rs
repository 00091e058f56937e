//! Prepared statements that exist on one server connection, by pgmux's server-side name (a hash
//! of query text and parameter types), kept as an LRU for max_prepared_statements as PgBouncer's
//! per-server cache: a Bind or Describe marks its statement used, a Parse that makes the cache
//! exceed the limit closes the least recently used ones.
//!
//! Statements parsed by clients in another statement epoch have other hashes
//! (`client::prepared`), so an entry here is never prepared again behind its clients' backs: a
//! client that prepared a statement before DDL that changed its result columns gets PostgreSQL's
//! `cached plan must not change result type`, as on a direct connection, not rows of another shape.

use std::collections::HashMap;

use foldhash::fast::RandomState;

/// The statements prepared on a server, each with the tick of its last use.
#[derive(Debug, Default)]
pub struct ServerStatements {
    entries: HashMap<u64, u64, RandomState>,
    tick: u64,
    /// Statements here the server refused since they were prepared (stale after DDL made
    /// behind pgmux's back): refused again, they tell nothing new (`refused_first`).
    refused: Vec<u64>,
    /// The count SHOW SERVERS was last given ([`ServerStatements::count_changed`]).
    shown: u32,
}

impl ServerStatements {
    /// The count of statements here, when it is not the one last returned (SHOW SERVERS'
    /// `prepared_statements` is given it only then: the server's row is not touched per
    /// transaction).
    pub fn count_changed(&mut self) -> Option<u32> {
        let n = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        (n != self.shown).then(|| {
            self.shown = n;
            n
        })
    }

    /// True when the statement `hash` is prepared here.
    pub fn contains(&self, hash: u64) -> bool {
        self.entries.contains_key(&hash)
    }

    /// True when `hash` is prepared here, marking it as just used.
    pub fn lookup(&mut self, hash: u64) -> bool {
        self.tick += 1;
        match self.entries.get_mut(&hash) {
            Some(used) => {
                *used = self.tick;
                true
            }
            None => false,
        }
    }

    /// Records `hash` as prepared here (and just used).
    pub fn insert(&mut self, hash: u64) {
        self.tick += 1;
        self.entries.insert(hash, self.tick);
        self.unrefuse(hash);
    }

    /// Forgets `hash` (closed, or its Parse failed).
    pub fn remove(&mut self, hash: u64) {
        self.entries.remove(&hash);
        self.unrefuse(hash);
    }

    /// The server refused the statement here whose hash's low 32 bits are `low` (what a
    /// tracker item keeps of it): true when that is its first refusal since it was prepared
    /// here, or it is not known here. Refusals are rare; the scan is linear.
    pub fn refused_first(&mut self, low: u32) -> bool {
        let Some(&hash) = self.entries.keys().find(|h| **h as u32 == low) else { return true };
        if self.refused.contains(&hash) {
            return false;
        }
        self.refused.push(hash);
        true
    }

    /// `hash` is prepared afresh or gone: a refusal of it would be news again.
    fn unrefuse(&mut self, hash: u64) {
        if !self.refused.is_empty() {
            self.refused.retain(|h| *h != hash);
        }
    }

    /// The least recently used statement when more than `max` are prepared, forgotten here; the
    /// caller closes it on the server. Called until `None`, so lowering the limit at run time
    /// shrinks the cache at the next Parse, as PgBouncer does. The scan is linear, but it runs
    /// only when a statement is added to a full cache.
    pub fn evict_over(&mut self, max: usize) -> Option<u64> {
        if self.entries.len() <= max {
            return None;
        }
        let (&victim, _) = self.entries.iter().min_by_key(|(_, &used)| used)?;
        self.remove(victim);
        Some(victim)
    }

    /// Forgets everything (DISCARD ALL or DEALLOCATE ALL ran).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.refused.clear();
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
            s.insert(h);
        }
        assert!(s.lookup(1));
        assert!(!s.lookup(9));
        assert_eq!(s.evict_over(3), None);
        assert_eq!(s.evict_over(1), Some(2));
        assert_eq!(s.evict_over(1), Some(3));
        assert_eq!(s.evict_over(1), None);
        assert!(s.contains(1));
    }
}
