//! Prepared statements that exist on one server connection, by pgmux's server-side name
//! (a hash of query text and parameter types), with insertion order for eviction when
//! max_prepared_statements is reached.

use std::collections::{HashSet, VecDeque};

/// The statements prepared on a server.
#[derive(Debug, Default)]
pub struct ServerStatements {
    names: HashSet<u64>,
    order: VecDeque<u64>,
}

impl ServerStatements {
    /// True when the statement `hash` is prepared here.
    pub fn contains(&self, hash: u64) -> bool {
        self.names.contains(&hash)
    }

    /// Records `hash` as prepared.
    pub fn insert(&mut self, hash: u64) {
        if self.names.insert(hash) {
            self.order.push_back(hash);
        }
    }

    /// Forgets `hash` (closed, or its Parse failed).
    pub fn remove(&mut self, hash: u64) {
        if self.names.remove(&hash) {
            self.order.retain(|h| *h != hash);
        }
    }

    /// The oldest statement, when there are `max` or more, to be closed before adding one.
    pub fn evict_candidate(&mut self, max: usize) -> Option<u64> {
        if max == 0 || self.names.len() < max {
            return None;
        }
        let victim = self.order.pop_front()?;
        self.names.remove(&victim);
        Some(victim)
    }

    /// Forgets everything (DISCARD ALL ran).
    pub fn clear(&mut self) {
        self.names.clear();
        self.order.clear();
    }

    /// How many are prepared.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when none are.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}
