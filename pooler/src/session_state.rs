//! Session state made with SQL that transaction pooling carries from server to server: settings
//! (`SET`, `RESET`) and SQL prepared statements (`PREPARE`, `DEALLOCATE`). Each client keeps what
//! it made; each server keeps what was made on it; before a server runs a client's transaction,
//! the difference is replayed (`SET name TO value`, `RESET name`, `DEALLOCATE name`, the
//! client's `PREPARE`), so nothing leaks from one client to the next and nothing is lost on a
//! switch. [`InFlight`] decides when a statement counts: settings when their transaction
//! commits, PREPARE and DEALLOCATE when they succeed.

use std::collections::BTreeMap;

use pgmux_protocol::backend::TxStatus;

use crate::session_sql::Effect;

/// Settings and SQL prepared statements of one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Setting name (as PostgreSQL folds it) to the SQL of its value.
    pub settings: BTreeMap<String, String>,
    /// Statement name to the PREPARE statement that made it.
    pub prepared: BTreeMap<String, String>,
}

/// What makes a server match a client.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// SET, RESET and DEALLOCATE statements, run as one query.
    pub batch: String,
    /// PREPARE statements, run one by one (one that fails is dropped, not the client): name
    /// and statement.
    pub prepares: Vec<(String, String)>,
}

impl SessionState {
    /// Records an effect that took place. Sticky effects are not state that moves.
    pub fn apply(&mut self, e: &Effect) {
        match e {
            Effect::Set { name, value } => {
                self.settings.insert(name.clone(), value.clone());
            }
            Effect::Reset(name) => {
                self.settings.remove(name);
            }
            Effect::ResetAll => self.settings.clear(),
            Effect::Prepare { name, sql } => {
                self.prepared.insert(name.clone(), sql.clone());
            }
            Effect::Deallocate(name) => {
                self.prepared.remove(name);
            }
            Effect::DeallocateAll => self.prepared.clear(),
            Effect::DiscardAll => {
                self.settings.clear();
                self.prepared.clear();
            }
            // A transaction's own setting: not state that outlives it.
            Effect::SetLocal { .. } | Effect::Sticky(_) => {}
        }
    }

    /// True when nothing was made.
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty() && self.prepared.is_empty()
    }

    /// What to run on a server whose state is `server` so that it is this one; `None` when it
    /// already is.
    pub fn replay_on(&self, server: &SessionState) -> Option<Replay> {
        if self == server {
            return None;
        }
        let mut r = Replay::default();
        for (name, value) in &self.settings {
            if server.settings.get(name) != Some(value) {
                r.batch.push_str(&format!("SET {name} TO {value};"));
            }
        }
        for name in server.settings.keys().filter(|n| !self.settings.contains_key(*n)) {
            r.batch.push_str(&format!("RESET {name};"));
        }
        for (name, sql) in &server.prepared {
            if self.prepared.get(name) != Some(sql) {
                r.batch.push_str(&format!("DEALLOCATE {name};"));
            }
        }
        for (name, sql) in &self.prepared {
            if server.prepared.get(name) != Some(sql) {
                r.prepares.push((name.clone(), sql.clone()));
            }
        }
        Some(r)
    }
}

/// Effects of statements sent but not yet known to have taken place.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Each effect with the number of ReadyForQuery still to come up to its request's.
    waiting: Vec<(u32, Effect)>,
    /// Settings made in the open transaction: they count if it commits.
    in_tx: Vec<Effect>,
    /// An ErrorResponse came since the last ReadyForQuery.
    failed: bool,
    /// The last CommandComplete was ROLLBACK (also what COMMIT of a failed transaction says).
    last_rollback: bool,
}

impl InFlight {
    /// The effects sent but not settled, in the order they take place: those of the open
    /// transaction's finished requests, then those still waiting for their ReadyForQuery.
    pub fn pending(&self) -> impl Iterator<Item = &Effect> {
        self.in_tx.iter().chain(self.waiting.iter().map(|(_, e)| e))
    }

    /// True when nothing waits: the relay need not read CommandComplete tags.
    #[inline]
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.in_tx.is_empty()
    }

    /// Effects of a request that `ahead` ReadyForQuery messages (its own included) will answer.
    pub fn sent(&mut self, effects: Vec<Effect>, ahead: u32) {
        self.waiting.extend(effects.into_iter().map(|e| (ahead, e)));
    }

    /// An ErrorResponse: the request it answers did not take place.
    #[inline]
    pub fn on_error(&mut self) {
        self.failed = true;
    }

    /// A CommandComplete's tag (without its terminating zero).
    pub fn on_command_complete(&mut self, tag: &[u8]) {
        self.last_rollback = tag == b"ROLLBACK";
    }

    /// A ReadyForQuery: the effects that have now taken place.
    pub fn on_ready(&mut self, status: TxStatus) -> Vec<Effect> {
        let failed = std::mem::take(&mut self.failed);
        let rolled_back = std::mem::take(&mut self.last_rollback);
        if self.is_idle() {
            return Vec::new();
        }
        let mut done = Vec::new();
        let mut still = Vec::new();
        for (ahead, e) in self.waiting.drain(..) {
            if ahead > 1 {
                still.push((ahead - 1, e));
            } else if failed {
                // Its request failed: in autocommit nothing of it stays; in a transaction the
                // transaction is aborted and rolls back.
            } else if e.transactional() && status != TxStatus::Idle {
                self.in_tx.push(e);
            } else if matches!(e, Effect::SetLocal { .. }) {
                // Outside a transaction block, or its transaction ended with this request.
            } else if e.transactional() && rolled_back {
                // Its own request ended with ROLLBACK (`BEGIN; SET ...; ROLLBACK`, or `SET ...;
                // ROLLBACK`, which rolls back the implicit transaction): undone.
            } else {
                done.push(e);
            }
        }
        self.waiting = still;
        match status {
            TxStatus::Idle if rolled_back || failed => self.in_tx.clear(),
            // A transaction's own settings end with it.
            TxStatus::Idle => done.extend(self.in_tx.drain(..).filter(|e| !matches!(e, Effect::SetLocal { .. }))),
            _ => {}
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session_sql::effects;

    fn run(f: &mut InFlight, sql: &str, pending_before: u32, status: TxStatus, reply: &[&[u8]]) -> Vec<Effect> {
        f.sent(effects(sql.as_bytes()), pending_before + 1);
        for tag in reply {
            if *tag == b"ERROR" {
                f.on_error();
            } else {
                f.on_command_complete(tag);
            }
        }
        f.on_ready(status)
    }

    fn set(name: &str, value: &str) -> Effect {
        Effect::Set { name: name.into(), value: value.into() }
    }

    #[test]
    fn settings_count_when_their_transaction_commits() {
        let mut f = InFlight::default();
        assert_eq!(run(&mut f, "SET work_mem = '8MB'", 0, TxStatus::Idle, &[b"SET"]), [set("work_mem", "'8MB'")]);
        assert!(f.is_idle());
        assert_eq!(run(&mut f, "BEGIN", 0, TxStatus::InTransaction, &[b"BEGIN"]), []);
        assert_eq!(run(&mut f, "SET work_mem = '1MB'", 0, TxStatus::InTransaction, &[b"SET"]), []);
        assert!(!f.is_idle());
        assert_eq!(run(&mut f, "COMMIT", 0, TxStatus::Idle, &[b"COMMIT"]), [set("work_mem", "'1MB'")]);
        // Rolled back, or failed and then ended by COMMIT (which says ROLLBACK): nothing.
        run(&mut f, "BEGIN; SET a.b = 1", 0, TxStatus::InTransaction, &[b"BEGIN", b"SET"]);
        assert_eq!(run(&mut f, "ROLLBACK", 0, TxStatus::Idle, &[b"ROLLBACK"]), []);
        run(&mut f, "BEGIN; SET a.b = 1", 0, TxStatus::InTransaction, &[b"BEGIN", b"SET"]);
        run(&mut f, "SELECT 1/0", 0, TxStatus::Failed, &[b"ERROR"]);
        assert_eq!(run(&mut f, "COMMIT", 0, TxStatus::Idle, &[b"ROLLBACK"]), []);
        assert!(f.is_idle());
        // A failed autocommit request: nothing of it.
        assert_eq!(run(&mut f, "SET a.b = 1; SELECT 1/0", 0, TxStatus::Idle, &[b"SET", b"ERROR"]), []);
        // In one multi-statement query.
        assert_eq!(
            run(&mut f, "BEGIN; SET a.b = 2; COMMIT", 0, TxStatus::Idle, &[b"BEGIN", b"SET", b"COMMIT"]),
            [set("a.b", "2")]
        );
        assert_eq!(
            run(&mut f, "BEGIN; SET a.b = 3; ROLLBACK", 0, TxStatus::Idle, &[b"BEGIN", b"SET", b"ROLLBACK"]),
            []
        );
        // PostgreSQL rolls back the implicit transaction of a multi-statement query too (with
        // a warning that no transaction is in progress).
        assert_eq!(run(&mut f, "SET a.b = 4; ROLLBACK", 0, TxStatus::Idle, &[b"SET", b"ROLLBACK"]), []);
        assert!(f.is_idle());
        // SET LOCAL: pending while its transaction lasts, never settled.
        run(&mut f, "BEGIN; SET LOCAL search_path = t1", 0, TxStatus::InTransaction, &[b"BEGIN", b"SET"]);
        assert_eq!(f.pending().count(), 1);
        assert_eq!(run(&mut f, "COMMIT", 0, TxStatus::Idle, &[b"COMMIT"]), []);
        assert!(f.is_idle());
        assert_eq!(run(&mut f, "SET LOCAL search_path = t1", 0, TxStatus::Idle, &[b"SET"]), []);
        assert!(f.is_idle());
    }

    #[test]
    fn prepare_counts_at_once_and_pipelined_requests_wait_their_turn() {
        let mut f = InFlight::default();
        run(&mut f, "BEGIN", 0, TxStatus::InTransaction, &[b"BEGIN"]);
        let p = run(&mut f, "PREPARE q AS SELECT 1", 0, TxStatus::InTransaction, &[b"PREPARE"]);
        assert!(matches!(p.as_slice(), [Effect::Prepare { .. }]));
        // Two requests in flight; the SET rides on the second.
        f.sent(effects(b"SELECT 1"), 1);
        f.sent(effects(b"SET x.y = 3"), 2);
        assert_eq!(f.on_ready(TxStatus::InTransaction), []);
        f.on_command_complete(b"COMMIT");
        assert_eq!(f.on_ready(TxStatus::Idle), [set("x.y", "3")]);
    }

    #[test]
    fn replay_sets_resets_and_prepares_only_the_difference() {
        let mut client = SessionState::default();
        let mut server = SessionState::default();
        assert_eq!(client.replay_on(&server), None);
        for e in effects(b"SET work_mem = '8MB'; SET a.b = 1; PREPARE q AS SELECT 1; PREPARE r AS SELECT 2") {
            client.apply(&e);
        }
        for e in effects(b"SET a.b = 1; SET lock_timeout = 10; PREPARE q AS SELECT 1; PREPARE r AS SELECT 3") {
            server.apply(&e);
        }
        let r = client.replay_on(&server).unwrap();
        assert_eq!(r.batch, "SET work_mem TO '8MB';RESET lock_timeout;DEALLOCATE r;");
        assert_eq!(r.prepares, [("r".to_owned(), "PREPARE r AS SELECT 2".to_owned())]);
        client.apply(&Effect::DiscardAll);
        assert!(client.is_empty());
        assert_eq!(client.replay_on(&SessionState::default()), None);
    }
}
