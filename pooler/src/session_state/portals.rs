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
    /// What Closes and Parses took from names that did something, in batches not answered
    /// yet: PostgreSQL skips the rest of a batch after an error (and refuses a Parse of a name
    /// in use), so such a change in a batch that fails may not have taken place.
    undo: Vec<Undo>,
    /// Parses and Closes the client sent since its last Sync or Query: the number of the next.
    sent_in_batch: u32,
    /// ParseComplete and CloseComplete the client got since the last ReadyForQuery: in a batch
    /// that failed, the Parses and Closes numbered below this took place, the rest were
    /// skipped.
    answered_in_batch: u32,
}

/// A name's meaning changed in a batch still waiting for its ReadyForQuery.
#[derive(Debug)]
struct Undo {
    /// Which ReadyForQuery answers the batch (1: the next one).
    ahead: u32,
    /// The message's number among its batch's Parses and Closes.
    number: u32,
    portal: bool,
    name: Box<[u8]>,
    /// None: the name did nothing (it was closed earlier in a batch still unanswered).
    before: Option<Vec<Effect>>,
    /// None: closed, or prepared again with a text that does nothing.
    after: Option<Vec<Effect>>,
}

impl Portals {
    /// True when no statement or portal does anything: Bind and Execute need no look.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty() && self.portals.is_empty()
    }

    /// A Parse of statement `name` whose text does `effects` (none: it replaces one that did),
    /// in the batch the `ahead`-th ReadyForQuery from now answers.
    pub fn parsed(&mut self, name: &[u8], effects: Vec<Effect>, ahead: u32) {
        let number = self.name_message();
        let replaced = if effects.is_empty() {
            self.statements.remove(name).map(|before| (Some(before), None))
        } else if let Some(slot) = self.statements.get_mut(name) {
            let after = effects.clone();
            Some((Some(std::mem::replace(slot, effects)), Some(after)))
        } else {
            if self.statements.len() >= MOST {
                forget_one(&mut self.statements);
            }
            // A name closed in a batch still unanswered: taking that Close back must take this
            // back first.
            let reopened = self.undo.iter().any(|u| !u.portal && *u.name == *name);
            let after = reopened.then(|| effects.clone());
            self.statements.insert(name.into(), effects);
            after.map(|after| (None, Some(after)))
        };
        if let Some((before, after)) = replaced.filter(|(before, after)| before != after) {
            self.remember(Undo { ahead, number, portal: false, name: name.into(), before, after });
        }
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
    /// prepared again under its name may do something else).
    pub fn closed(&mut self, portal: bool, name: &[u8], ahead: u32) {
        let number = self.name_message();
        let known = if portal { &mut self.portals } else { &mut self.statements };
        if let Some((name, before)) = known.remove_entry(name) {
            self.remember(Undo { ahead, number, portal, name, before: Some(before), after: None });
        }
    }

    /// Counts a Parse or Close the client sent (one that names nothing known too, so that the
    /// numbers match the answers): its number in its batch.
    pub fn name_message(&mut self) -> u32 {
        let number = self.sent_in_batch;
        self.sent_in_batch = number.saturating_add(1);
        number
    }

    /// The client sent a Sync, Query or FunctionCall: its next Parse or Close is a new
    /// batch's first.
    pub fn request_sent(&mut self) {
        self.sent_in_batch = 0;
    }

    /// A ParseComplete or CloseComplete reached the client (the server's, or pgmux's own).
    pub fn name_answered(&mut self) {
        self.answered_in_batch = self.answered_in_batch.saturating_add(1);
    }

    /// COPY FROM STDIN started by an Execute: the server ignores the Sync behind it and the
    /// batch goes on after CopyDone; its Parses and Closes before the COPY are all answered.
    pub fn copy_went_on(&mut self) {
        self.sent_in_batch = self.answered_in_batch;
    }

    /// Keeps `undo` until its batch is answered, as far as the bound goes (beyond it, the
    /// change counts as made).
    fn remember(&mut self, undo: Undo) {
        if self.undo.len() < MOST {
            self.undo.push(undo);
        }
    }

    /// A ReadyForQuery: the Parses and Closes of the batch it answers took place, unless the
    /// batch `failed`. Then those the server did not answer were skipped (or refused: a Parse
    /// of a name in use), and a name whose meaning they changed, and nothing changed since,
    /// gets back what it did.
    pub fn settle(&mut self, failed: bool) {
        let answered = std::mem::take(&mut self.answered_in_batch);
        if self.undo.is_empty() {
            return;
        }
        // Sent in order, so the batch's come first.
        let settled = self.undo.iter().take_while(|u| u.ahead <= 1).count();
        let mut batch: Vec<Undo> = self.undo.drain(..settled).collect();
        for u in &mut self.undo {
            u.ahead = u.ahead.saturating_sub(1);
        }
        if failed {
            batch.retain(|u| u.number >= answered);
            self.take_back(batch);
        }
    }

    /// The server was lost: the batches in flight get no more answers from it. The Parses and
    /// Closes it did not answer are taken back (as the prepared-statement tracker gives the
    /// client its names back): a name kept that is gone only makes its Bind fail.
    pub fn server_lost(&mut self) {
        let answered = std::mem::take(&mut self.answered_in_batch);
        self.sent_in_batch = 0;
        let mut all = std::mem::take(&mut self.undo);
        all.retain(|u| u.ahead > 1 || u.number >= answered);
        self.take_back(all);
    }

    /// Gives the names changed by `changes` their old meaning, latest change first, where
    /// nothing changed them since.
    fn take_back(&mut self, changes: Vec<Undo>) {
        for u in changes.into_iter().rev() {
            let known = if u.portal { &mut self.portals } else { &mut self.statements };
            if known.get(&u.name) == u.after.as_ref() {
                match u.before {
                    Some(before) => known.insert(u.name, before),
                    None => known.remove(&u.name),
                };
            }
        }
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
        p.parsed(b"s1", set("1"), 1);
        p.parsed(b"", set("2"), 1);
        p.bound(b"", b"s1");
        assert_eq!(p.executed(b""), Some(&set("1")[..]));
        p.bound(b"", b"");
        assert_eq!(p.executed(b""), Some(&set("2")[..]));
        // The unnamed statement parsed again with a text that does nothing.
        p.parsed(b"", Vec::new(), 1);
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
            p.parsed(name.as_bytes(), set("1"), 1);
            p.bound(name.as_bytes(), name.as_bytes());
        }
        assert!(p.statements.len() <= MOST && p.portals.len() <= MOST);
        // One more name makes room for itself only: the others are still known.
        assert_eq!((p.statements.len(), p.portals.len()), (MOST, MOST));
    }

    #[test]
    fn a_closed_name_runs_nothing() {
        let mut p = Portals::default();
        p.parsed(b"s1", set("1"), 1);
        p.bound(b"c1", b"s1");
        p.closed(true, b"c1", 1);
        assert_eq!(p.executed(b"c1"), None);
        p.closed(false, b"s1", 1);
        p.bound(b"c2", b"s1");
        assert_eq!(p.executed(b"c2"), None);
        p.parsed(b"s2", set("2"), 1);
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
        p.parsed(b"s1", set("1"), 1);
        p.parsed(b"s2", set("2"), 1);
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
        // A Parse of a name in use is refused: the name keeps its meaning.
        p.parsed(b"s1", set("4"), 1);
        p.settle(true);
        p.bound(b"c1", b"s1");
        assert_eq!(p.executed(b"c1"), Some(&set("1")[..]));
        p.parsed(b"", set("5"), 1);
        p.parsed(b"", Vec::new(), 1);
        p.settle(true);
        p.bound(b"c1", b"");
        assert_eq!(p.executed(b"c1"), Some(&set("5")[..]), "the Parse that replaced it may not have run");
        // Closed and prepared again in one failed batch: both may have been skipped.
        p.closed(false, b"s1", 1);
        p.parsed(b"s1", set("3"), 1);
        p.settle(true);
        p.bound(b"c1", b"s1");
        assert_eq!(p.executed(b"c1"), Some(&set("1")[..]));
        // The same in a batch that went through.
        p.closed(false, b"s1", 1);
        p.parsed(b"s1", set("3"), 1);
        p.settle(false);
        p.bound(b"c1", b"s1");
        assert_eq!(p.executed(b"c1"), Some(&set("3")[..]));
        // A name prepared for the first time keeps its meaning whatever its batch did.
        p.parsed(b"s9", set("9"), 1);
        p.settle(true);
        p.bound(b"c9", b"s9");
        assert_eq!(p.executed(b"c9"), Some(&set("9")[..]));
        // The server lost with a Close in flight: the Close is taken back too.
        p.closed(false, b"s1", 1);
        p.server_lost();
        p.bound(b"c1", b"s1");
        assert_eq!(p.executed(b"c1"), Some(&set("3")[..]));
    }

    #[test]
    fn what_the_server_answered_in_a_failed_batch_took_place() {
        let mut p = Portals::default();
        p.parsed(b"s1", set("1"), 1);
        p.settle(false);
        // Close s1, Parse s1 again, Parse s2: all three answered, then an Execute fails.
        p.request_sent();
        p.closed(false, b"s1", 1);
        p.parsed(b"s1", set("3"), 1);
        p.parsed(b"s2", set("2"), 1);
        for _ in 0..3 {
            p.name_answered();
        }
        p.settle(true);
        p.bound(b"c1", b"s1");
        assert_eq!(p.executed(b"c1"), Some(&set("3")[..]));
        // Close s1 answered, the Parse after it skipped: s1 is gone.
        p.request_sent();
        p.closed(false, b"s1", 1);
        p.parsed(b"s1", set("4"), 1);
        p.name_answered();
        p.settle(true);
        p.bound(b"c1", b"s1");
        assert_eq!(p.executed(b"c1"), None);
        // The server lost after answering the first of two Closes.
        p.parsed(b"s1", set("5"), 1);
        p.parsed(b"s2", set("6"), 1);
        p.settle(false);
        p.request_sent();
        p.closed(false, b"s1", 1);
        p.closed(false, b"s2", 1);
        p.name_answered();
        p.server_lost();
        p.bound(b"c1", b"s1");
        assert_eq!(p.executed(b"c1"), None);
        p.bound(b"c2", b"s2");
        assert_eq!(p.executed(b"c2"), Some(&set("6")[..]));
    }
}
