//! Prepared statements that exist on one server connection, by pgmux's server-side name (a hash
//! of query text and parameter types), kept as an LRU for max_prepared_statements as PgBouncer's
//! per-server cache: a Bind or Describe marks its statement used, a Parse that makes the cache
//! exceed the limit closes the least recently used ones.

use std::collections::HashMap;

/// The statements prepared on a server.
#[derive(Debug, Default)]
pub struct ServerStatements {
    /// Statement hash -> tick of its last use.
    used: HashMap<u64, u64>,
    tick: u64,
}

impl ServerStatements {
    /// True when the statement `hash` is prepared here.
    pub fn contains(&self, hash: u64) -> bool {
        self.used.contains_key(&hash)
    }

    /// Marks `hash` as just used; true when it is prepared here.
    pub fn touch(&mut self, hash: u64) -> bool {
        self.tick += 1;
        match self.used.get_mut(&hash) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    /// Records `hash` as prepared (and just used).
    pub fn insert(&mut self, hash: u64) {
        self.tick += 1;
        self.used.insert(hash, self.tick);
    }

    /// Forgets `hash` (closed, or its Parse failed).
    pub fn remove(&mut self, hash: u64) {
        self.used.remove(&hash);
    }

    /// The least recently used statement when more than `max` are prepared, forgotten here; the
    /// caller closes it on the server. Called until `None`, so lowering the limit at run time
    /// shrinks the cache at the next Parse, as PgBouncer does. The scan is linear, but it runs
    /// only when a statement is added to a full cache.
    pub fn evict_over(&mut self, max: usize) -> Option<u64> {
        if self.used.len() <= max {
            return None;
        }
        let (&victim, _) = self.used.iter().min_by_key(|(_, &t)| t)?;
        self.used.remove(&victim);
        Some(victim)
    }

    /// Forgets everything (DISCARD ALL or DEALLOCATE ALL ran).
    pub fn clear(&mut self) {
        self.used.clear();
    }

    /// How many are prepared.
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// True when none are.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
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
        assert!(s.touch(1));
        assert!(!s.touch(9));
        assert_eq!(s.evict_over(3), None);
        assert_eq!(s.evict_over(1), Some(2));
        assert_eq!(s.evict_over(1), Some(3));
        assert_eq!(s.evict_over(1), None);
        assert!(s.contains(1));
    }
}
