//! What a client's extended-protocol statements do to its session, kept from Parse to the
//! Executes that run them: a Parse only names a statement (a driver such as tokio-postgres
//! parses in one batch and binds and executes in the next, pgJDBC executes a named statement
//! many times), so its effect counts at each Execute of a portal bound to it.

use std::collections::HashMap;

use crate::session_sql::Effect;

/// More statements (or portals) with effects than this, and one is forgotten for each new one
/// (a client that prepares hundreds of distinct SET statements and keeps them gets them
/// tracked as far as this goes).
const MOST: usize = 256;

/// The effects of the client's prepared statements and of its portals, by name.
#[derive(Debug, Default)]
pub struct Portals {
    statements: HashMap<Box<[u8]>, Vec<Effect>>,
    portals: HashMap<Box<[u8]>, Vec<Effect>>,
    /// Closes whose batch has not been answered yet, with what the name did: PostgreSQL skips
    /// the rest of a batch after an error, so a Close in a batch that fails may not have run.
    closing: Vec<Closing>,
}

/// A name closed in a batch still waiting for its ReadyForQuery.
#[derive(Debug)]
struct Closing {
    /// Which ReadyForQuery answers the batch (1: the next one).
    ahead: u32,
    portal: bool,
    name: Box<[u8]>,
    effects: Vec<Effect>,
}

impl Portals {
    /// True when no statement or portal does anything: Bind and Execute need no look.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty() && self.portals.is_empty()
    }

    /// A Parse of statement `name` whose text does `effects` (none: it replaces one that did).
    pub fn parsed(&mut self, name: &[u8], effects: Vec<Effect>) {
        if effects.is_empty() {
            self.statements.remove(name);
            return;
        }
        if self.statements.len() >= MOST && !self.statements.contains_key(name) {
            forget_one(&mut self.statements);
        }
        self.statements.insert(name.into(), effects);
    }

    /// A Bind of `statement` to `portal`.
    pub fn bound(&mut self, portal: &[u8], statement: &[u8]) {
        match self.statements.get(statement) {
            Some(effects) => {
                if self.portals.len() >= MOST && !self.portals.contains_key(portal) {
                    forget_one(&mut self.portals);
                }
                self.portals.insert(portal.into(), effects.clone());
            }
            None => {
                self.portals.remove(portal);
            }
        }
    }

    /// An Execute of `portal`: what it does when it runs.
    pub fn executed(&self, portal: &[u8]) -> Option<&[Effect]> {
        self.portals.get(portal).map(Vec::as_slice)
    }

    /// A Close of a portal (`portal`) or a statement, in the batch the `ahead`-th
    /// ReadyForQuery from now answers: it runs nothing any more (a statement closed and
    /// prepared again under its name may do something else), unless the batch fails.
    pub fn closed(&mut self, portal: bool, name: &[u8], ahead: u32) {
        let known = if portal { &mut self.portals } else { &mut self.statements };
        if let Some((name, effects)) = known.remove_entry(name) {
            if self.closing.len() < MOST {
                self.closing.push(Closing { ahead, portal, name, effects });
            }
        }
    }

    /// A ReadyForQuery: the Closes of the batch it answers ran, unless the batch `failed`.
    /// Then the name keeps what it did, as long as nothing took it since: a Close skipped
    /// after the error leaves the statement on the server, and one that ran makes a Bind of
    /// the name fail, which runs nothing.
    pub fn settle(&mut self, failed: bool) {
        if self.closing.is_empty() {
            return;
        }
        for c in std::mem::take(&mut self.closing) {
            if c.ahead > 1 {
                self.closing.push(Closing { ahead: c.ahead - 1, ..c });
                continue;
            }
            let known = if c.portal { &mut self.portals } else { &mut self.statements };
            if failed && !known.contains_key(&c.name) {
                known.insert(c.name, c.effects);
            }
        }
    }

    /// The server was lost: the batches in flight get no ReadyForQuery from it; their Closes
    /// count as done.
    pub fn server_lost(&mut self) {
        self.closing.clear();
    }

    /// No statement can be told from another: none is known to do anything. Portals already
    /// bound keep what their statement did.
    pub fn forget_statements(&mut self) {
        self.statements.clear();
    }

    /// A simple Query: the unnamed statement and portal are gone.
    pub fn query(&mut self) {
        self.statements.remove(&b""[..]);
        self.portals.remove(&b""[..]);
    }
}

/// Makes room for one more name.
fn forget_one(known: &mut HashMap<Box<[u8]>, Vec<Effect>>) {
    if let Some(name) = known.keys().next().cloned() {
        known.remove(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &str) -> Vec<Effect> {
        vec![Effect::Set { name: "a.b".into(), value: v.into() }]
    }

    #[test]
    fn an_execute_runs_what_its_portal_was_bound_to() {
        let mut p = Portals::default();
        assert!(p.is_empty());
        p.parsed(b"s1", set("1"));
        p.parsed(b"", set("2"));
        p.bound(b"", b"s1");
        assert_eq!(p.executed(b""), Some(&set("1")[..]));
        p.bound(b"", b"");
        assert_eq!(p.executed(b""), Some(&set("2")[..]));
        // The unnamed statement parsed again with a text that does nothing.
        p.parsed(b"", Vec::new());
        p.bound(b"", b"");
        assert_eq!(p.executed(b""), None);
        p.bound(b"c1", b"s1");
        p.query();
        assert_eq!(p.executed(b"c1"), Some(&set("1")[..]), "a named portal outlives a Query");
    }

    #[test]
    fn it_stays_bounded() {
        let mut p = Portals::default();
        for i in 0..(3 * MOST) {
            let name = format!("s{i}");
            p.parsed(name.as_bytes(), set("1"));
            p.bound(name.as_bytes(), name.as_bytes());
        }
        assert!(p.statements.len() <= MOST && p.portals.len() <= MOST);
        // One more name makes room for itself only: the others are still known.
        assert_eq!((p.statements.len(), p.portals.len()), (MOST, MOST));
    }

    #[test]
    fn a_closed_name_runs_nothing() {
        let mut p = Portals::default();
        p.parsed(b"s1", set("1"));
        p.bound(b"c1", b"s1");
        p.closed(true, b"c1", 1);
        assert_eq!(p.executed(b"c1"), None);
        p.closed(false, b"s1", 1);
        p.bound(b"c2", b"s1");
        assert_eq!(p.executed(b"c2"), None);
        p.parsed(b"s2", set("2"));
        p.forget_statements();
        p.bound(b"c3", b"s2");
        assert_eq!(p.executed(b"c3"), None);
        p.settle(false);
        p.bound(b"c2", b"s1");
        assert_eq!(p.executed(b"c2"), None, "its batch went through");
    }

    #[test]
    fn a_close_in_a_batch_that_failed_may_not_have_run() {
        let mut p = Portals::default();
        p.parsed(b"s1", set("1"));
        p.parsed(b"s2", set("2"));
        // Two batches in flight: the first closes s1 and fails, the second closes s2.
        p.closed(false, b"s1", 1);
        p.closed(false, b"s2", 2);
        p.settle(true);
        p.bound(b"c1", b"s1");
        assert_eq!(p.executed(b"c1"), Some(&set("1")[..]));
        p.bound(b"c2", b"s2");
        assert_eq!(p.executed(b"c2"), None, "not answered yet");
        p.settle(false);
        p.bound(b"c2", b"s2");
        assert_eq!(p.executed(b"c2"), None);
        // A name prepared again after its Close keeps its new meaning.
        p.closed(false, b"s1", 1);
        p.parsed(b"s1", set("3"));
        p.settle(true);
        p.bound(b"c1", b"s1");
        assert_eq!(p.executed(b"c1"), Some(&set("3")[..]));
        p.closed(false, b"s1", 1);
        p.server_lost();
        p.settle(true);
        p.bound(b"c1", b"s1");
        assert_eq!(p.executed(b"c1"), None);
    }
}
