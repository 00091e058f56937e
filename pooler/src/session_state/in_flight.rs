//! When a statement a client sent counts: [`InFlight`] follows the server's answers
//! (CommandComplete, ErrorResponse, ReadyForQuery) statement by statement, and keeps the open
//! transaction's settings and savepoints, so that a setting counts only if its transaction
//! commits, whatever COMMIT, ROLLBACK, ROLLBACK TO SAVEPOINT or error ends or trims it, in the
//! same query or a later one.

use std::collections::VecDeque;

use pgmux_protocol::backend::TxStatus;

use crate::session_sql::{Control, Effect, Statement};

/// One effect sent and not yet run.
#[derive(Debug)]
struct Sent {
    /// The number of ReadyForQuery still to come up to its request's (its own included).
    ahead: u32,
    /// The CommandComplete of its request that says it ran: its statement's number in a
    /// Query, the number of Executes before it in an extended-protocol batch.
    at: u32,
    effect: Effect,
}

/// Effects of statements sent but not yet known to have taken place.
#[derive(Debug, Default)]
pub struct InFlight {
    /// In the order sent.
    waiting: VecDeque<Sent>,
    /// Settings made in the open transaction (an explicit block, or a query's implicit one),
    /// in the order they ran: they count if it commits. Since the latest savepoint, a name has
    /// one entry of each kind (the last), so a transaction that sets the same names over and
    /// over keeps as many entries as it has names.
    in_tx: Vec<Effect>,
    /// The open transaction's savepoints: the name, and how many of `in_tx` came before it.
    savepoints: Vec<(String, usize)>,
    /// What took place since the last ReadyForQuery: a committed transaction's settings, and
    /// what counts at once (PREPARE, DEALLOCATE, sticky state).
    done: Vec<Effect>,
}

impl InFlight {
    /// The effects sent but not settled, in the order they take place.
    pub fn pending(&self) -> impl Iterator<Item = &Effect> {
        self.in_tx.iter().chain(&self.done).chain(self.waiting.iter().map(|s| &s.effect))
    }

    /// True when nothing waits: the relay need not read CommandComplete tags, and need not
    /// look for transaction control in what the client sends.
    #[inline]
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.in_tx.is_empty() && self.done.is_empty()
    }

    /// The statements of a request that `ahead` ReadyForQuery messages (its own included)
    /// will answer.
    pub fn sent(&mut self, statements: Vec<Statement>, ahead: u32) {
        self.waiting.extend(statements.into_iter().map(|s| Sent { ahead, at: s.at, effect: s.effect }));
    }

    /// The CommandComplete numbered `at` (from 0) since the last ReadyForQuery, with its tag
    /// (without its terminating zero): the request's statement of that number ran. Every
    /// answer to an Execute counts in the numbering (EmptyQueryResponse and PortalSuspended
    /// too, with an empty tag), whether or not anything waited when it came.
    pub fn on_command_complete(&mut self, at: u32, tag: &[u8]) {
        while self.waiting.front().is_some_and(|s| s.ahead == 1 && s.at <= at) {
            let Some(s) = self.waiting.pop_front() else { break };
            // COMMIT of a failed transaction rolls it back, and says so.
            let effect = match s.effect {
                Effect::Control(Control::Commit) if tag == b"ROLLBACK" => Effect::Control(Control::Rollback),
                e => e,
            };
            self.run(effect);
        }
    }

    /// The request the next ReadyForQuery would have answered was skipped by the server (a
    /// Query sent after an error in an extended batch, before its Sync): its statements, and
    /// the batch's before it, did not run, and that ReadyForQuery will not come.
    pub fn skipped(&mut self) {
        let own = self.waiting.iter().take_while(|s| s.ahead == 1).count();
        self.waiting.drain(..own);
        for s in &mut self.waiting {
            s.ahead = s.ahead.saturating_sub(1);
        }
    }

    /// A ReadyForQuery, `failed` when an ErrorResponse came since the last one (the statement
    /// it answers did not run, nor did the rest of its request): the effects that have now
    /// taken place.
    pub fn on_ready(&mut self, status: TxStatus, failed: bool) -> Vec<Effect> {
        if status == TxStatus::Idle {
            // Whatever savepoints were made, no transaction is open now.
            self.savepoints.clear();
        }
        if self.is_idle() {
            return Vec::new();
        }
        // The request's statements that no CommandComplete answered: a failed request's did not
        // run. A finished one's did (an Execute that stopped at its row limit, a Parse executed
        // in a later batch, a text split in a way the lexer does not know): they count in order.
        let own = self.waiting.iter().take_while(|s| s.ahead == 1).count();
        let unanswered: Vec<Sent> = self.waiting.drain(..own).collect();
        if !failed {
            for s in unanswered {
                self.run(s.effect);
            }
        }
        for s in &mut self.waiting {
            s.ahead = s.ahead.saturating_sub(1);
        }
        match status {
            // An error ended the query's implicit transaction: it rolled back.
            TxStatus::Idle if failed => self.in_tx.clear(),
            // Its implicit transaction committed.
            TxStatus::Idle => self.commit(),
            // Open, or failed and waiting for ROLLBACK (a ROLLBACK TO SAVEPOINT can revive it).
            TxStatus::InTransaction | TxStatus::Failed => {}
        }
        std::mem::take(&mut self.done)
    }

    /// A statement ran.
    fn run(&mut self, effect: Effect) {
        match effect {
            Effect::Control(Control::Commit) => self.commit(),
            Effect::Control(Control::Rollback) => {
                self.in_tx.clear();
                self.savepoints.clear();
            }
            Effect::Control(Control::Savepoint(name)) => self.savepoints.push((name, self.in_tx.len())),
            // A savepoint not seen was made before any setting that is waiting here (nothing
            // was waiting, so its statement was not looked at): all of them came after it.
            Effect::Control(Control::RollbackTo(name)) => match self.savepoint(&name) {
                Some(i) => {
                    self.in_tx.truncate(self.savepoints[i].1);
                    // The savepoint stays; those made after it are gone.
                    self.savepoints.truncate(i + 1);
                }
                None => {
                    self.in_tx.clear();
                    self.savepoints.clear();
                }
            },
            // Releasing a savepoint releases those made after it; its settings stay.
            Effect::Control(Control::Release(name)) => {
                let keep = self.savepoint(&name).unwrap_or(0);
                self.savepoints.truncate(keep);
            }
            e if e.transactional() => self.set_in_tx(e),
            e => self.done.push(e),
        }
    }

    /// A setting ran in the open transaction: what it supersedes since the latest savepoint
    /// (a ROLLBACK TO that savepoint can only undo them all together) is dropped.
    fn set_in_tx(&mut self, effect: Effect) {
        let from = self.savepoints.last().map_or(0, |&(_, count)| count);
        let superseded = |e: &Effect| match (&effect, e) {
            // Except the role, which RESET ALL leaves alone.
            (Effect::ResetAll, e) => {
                !matches!(e, Effect::Set { name, .. } | Effect::Reset(name) | Effect::SetLocal { name, .. } if name == "role")
            }
            // A session-level value replaces the transaction's own (SET LOCAL) too; SET LOCAL
            // replaces only an earlier SET LOCAL (the session value returns at COMMIT).
            (Effect::Set { name, .. } | Effect::Reset(name), Effect::Set { name: n, .. })
            | (Effect::Set { name, .. } | Effect::Reset(name), Effect::Reset(n))
            | (Effect::Set { name, .. } | Effect::Reset(name), Effect::SetLocal { name: n, .. })
            | (Effect::SetLocal { name, .. }, Effect::SetLocal { name: n, .. }) => name == n,
            _ => false,
        };
        let mut i = from;
        while i < self.in_tx.len() {
            if superseded(&self.in_tx[i]) {
                self.in_tx.remove(i);
            } else {
                i += 1;
            }
        }
        self.in_tx.push(effect);
    }

    /// The open transaction committed: its settings count, its own (`SET LOCAL`) end.
    fn commit(&mut self) {
        self.done.extend(self.in_tx.drain(..).filter(|e| !matches!(e, Effect::SetLocal { .. })));
        self.savepoints.clear();
    }

    /// The latest savepoint called `name`.
    fn savepoint(&self, name: &str) -> Option<usize> {
        self.savepoints.iter().rposition(|(n, _)| n == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session_sql::statements;

    /// An [`InFlight`] with the server's answers counted as the relay counts them.
    #[derive(Default)]
    struct Tracked {
        f: InFlight,
        completed: u32,
        failed: bool,
    }

    impl Tracked {
        fn sent(&mut self, statements: Vec<Statement>, ahead: u32) {
            self.f.sent(statements, ahead);
        }
        fn is_idle(&self) -> bool {
            self.f.is_idle()
        }
        fn pending(&self) -> impl Iterator<Item = &Effect> {
            self.f.pending()
        }
        fn on_error(&mut self) {
            self.failed = true;
        }
        fn on_command_complete(&mut self, tag: &[u8]) {
            self.f.on_command_complete(self.completed, tag);
            self.completed += 1;
        }
        fn on_ready(&mut self, status: TxStatus) -> Vec<Effect> {
            self.completed = 0;
            self.f.on_ready(status, std::mem::take(&mut self.failed))
        }
    }

    /// Sends `sql` as a Query behind `pending_before` requests, answers each statement with
    /// `reply`'s tags (ERROR for an ErrorResponse) and ReadyForQuery `status`.
    fn run(f: &mut Tracked, sql: &str, pending_before: u32, status: TxStatus, reply: &[&[u8]]) -> Vec<Effect> {
        f.sent(statements(sql.as_bytes(), !f.is_idle()), pending_before + 1);
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
    fn a_skipped_request_is_owed_no_ready() {
        let mut f = InFlight::default();
        // A Query skipped after an error in its batch, and the next request's SET behind it.
        f.sent(statements(b"SET a.b = 1", false), 1);
        f.sent(statements(b"SET a.c = 2", false), 2);
        f.skipped();
        f.on_command_complete(0, b"SET");
        assert_eq!(f.on_ready(TxStatus::Idle, false), [set("a.c", "2")]);
        assert!(f.is_idle());
    }

    #[test]
    fn settings_count_when_their_transaction_commits() {
        let mut f = Tracked::default();
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
        // SET LOCAL: pending while its transaction lasts, never settled.
        run(&mut f, "BEGIN; SET LOCAL search_path = t1", 0, TxStatus::InTransaction, &[b"BEGIN", b"SET"]);
        assert_eq!(f.pending().count(), 1);
        assert_eq!(run(&mut f, "COMMIT", 0, TxStatus::Idle, &[b"COMMIT"]), []);
        assert!(f.is_idle());
        assert_eq!(run(&mut f, "SET LOCAL search_path = t1", 0, TxStatus::Idle, &[b"SET"]), []);
        assert!(f.is_idle());
    }

    /// One Query with several transactions in it, each checked against PostgreSQL 15: a
    /// COMMIT or ROLLBACK ends the transaction the statements before it ran in (an explicit
    /// one, or the query's implicit one), and those after it run in a new one.
    #[test]
    fn each_statement_counts_in_its_own_transaction_within_one_query() {
        let mut f = Tracked::default();
        let tags = |sql: &str| -> Vec<&'static [u8]> {
            sql.split(';')
                .map(|s| match s.split_whitespace().next().unwrap_or_default() {
                    "BEGIN" => &b"BEGIN"[..],
                    "SET" => b"SET",
                    "COMMIT" => b"COMMIT",
                    "ROLLBACK" => b"ROLLBACK",
                    _ => b"SELECT 1",
                })
                .collect()
        };
        let mut one = |sql: &str| run(&mut f, sql, 0, TxStatus::Idle, &tags(sql));
        assert_eq!(one("BEGIN; SET a.b = 2; COMMIT"), [set("a.b", "2")]);
        assert_eq!(one("BEGIN; SET a.b = 3; ROLLBACK"), []);
        // The implicit transaction rolls back too (PostgreSQL warns that none is in progress).
        assert_eq!(one("SET a.b = 4; ROLLBACK"), []);
        assert_eq!(one("BEGIN; SET a.b = 5; ROLLBACK; SELECT 1"), []);
        assert_eq!(one("SET a.b = 6; ROLLBACK; SET c.d = 1"), [set("c.d", "1")]);
        assert_eq!(one("SET a.b = 7; COMMIT; SET c.d = 2; ROLLBACK"), [set("a.b", "7")]);
        assert!(f.is_idle());
        // An error rolls back only the transaction it happens in.
        assert_eq!(
            run(
                &mut f,
                "SET a.b = 8; COMMIT; SET c.d = 3; SELECT 1/0",
                0,
                TxStatus::Idle,
                &[b"SET", b"COMMIT", b"SET", b"ERROR"]
            ),
            [set("a.b", "8")]
        );
        assert!(f.is_idle());
    }

    #[test]
    fn a_rollback_to_a_savepoint_undoes_what_came_after_it() {
        let mut f = Tracked::default();
        let t = TxStatus::InTransaction;
        run(&mut f, "BEGIN", 0, t, &[b"BEGIN"]);
        // Made before any setting: not looked at, and still the point everything comes after.
        assert_eq!(statements(b"SAVEPOINT s0", !f.is_idle()), []);
        run(&mut f, "SET a.b = 1", 0, t, &[b"SET"]);
        run(&mut f, "SAVEPOINT s1", 0, t, &[b"SAVEPOINT"]);
        run(&mut f, "SET c.d = 1", 0, t, &[b"SET"]);
        run(&mut f, "ROLLBACK TO SAVEPOINT s1", 0, t, &[b"ROLLBACK"]);
        assert_eq!(run(&mut f, "COMMIT", 0, TxStatus::Idle, &[b"COMMIT"]), [set("a.b", "1")]);

        run(&mut f, "BEGIN; SET a.b = 2; SAVEPOINT s1; SET c.d = 2", 0, t, &[b"BEGIN", b"SET", b"SAVEPOINT", b"SET"]);
        // An error after the savepoint: the transaction is aborted, ROLLBACK TO revives it.
        run(&mut f, "SELECT 1/0", 0, TxStatus::Failed, &[b"ERROR"]);
        run(&mut f, "ROLLBACK TO s1", 0, t, &[b"ROLLBACK"]);
        assert_eq!(run(&mut f, "COMMIT", 0, TxStatus::Idle, &[b"COMMIT"]), [set("a.b", "2")]);

        // The same name twice: the latest one counts; RELEASE keeps the settings.
        let sql = "BEGIN; SAVEPOINT a; SET a.b = 3; SAVEPOINT a; SET c.d = 3; ROLLBACK TO a; RELEASE a; COMMIT";
        let tags: [&[u8]; 8] =
            [b"BEGIN", b"SAVEPOINT", b"SET", b"SAVEPOINT", b"SET", b"ROLLBACK", b"RELEASE", b"COMMIT"];
        assert_eq!(run(&mut f, sql, 0, TxStatus::Idle, &tags), [set("a.b", "3")]);

        // A savepoint made before anything here was waiting: everything waiting came after it.
        run(&mut f, "BEGIN; SAVEPOINT early", 0, t, &[b"BEGIN", b"SAVEPOINT"]);
        run(&mut f, "SET a.b = 4", 0, t, &[b"SET"]);
        run(&mut f, "ROLLBACK TO early", 0, t, &[b"ROLLBACK"]);
        assert_eq!(run(&mut f, "COMMIT", 0, TxStatus::Idle, &[b"COMMIT"]), []);
        assert!(f.is_idle());
    }

    #[test]
    fn an_extended_batch_counts_each_statement_at_its_commandcomplete() {
        let mut f = Tracked::default();
        let t = TxStatus::InTransaction;
        let parsed = |sql: &[u8], executes_before: u32| {
            statements(sql, true).into_iter().map(|s| Statement { at: executes_before, ..s }).collect::<Vec<_>>()
        };
        run(&mut f, "BEGIN; SET a.b = 1", 0, t, &[b"BEGIN", b"SET"]);
        // pgJDBC's autosave: a savepoint before each statement, in the statement's batch.
        f.sent(parsed(b"SAVEPOINT pgjdbc_autosave", 0), 1);
        f.sent(parsed(b"SET c.d = 1", 1), 1);
        f.on_command_complete(b"SAVEPOINT");
        f.on_command_complete(b"SET");
        assert_eq!(f.on_ready(t), []);
        // The next batch makes the savepoint again, and its statement fails.
        f.sent(parsed(b"SAVEPOINT pgjdbc_autosave", 0), 1);
        f.on_command_complete(b"SAVEPOINT");
        f.on_error();
        assert_eq!(f.on_ready(TxStatus::Failed), []);
        // Back to the latest savepoint: the SET made before it stays.
        f.sent(parsed(b"ROLLBACK TO SAVEPOINT pgjdbc_autosave", 0), 1);
        f.on_command_complete(b"ROLLBACK");
        assert_eq!(f.on_ready(t), []);
        assert_eq!(run(&mut f, "COMMIT", 0, TxStatus::Idle, &[b"COMMIT"]), [set("a.b", "1"), set("c.d", "1")]);
        // A statement no CommandComplete answered (an Execute stopped at its row limit) counts
        // at its batch's end.
        f.sent(parsed(b"SET e.f = 1", 0), 1);
        assert_eq!(f.on_ready(TxStatus::Idle), [set("e.f", "1")]);
    }

    #[test]
    fn prepare_counts_at_once_and_pipelined_requests_wait_their_turn() {
        let mut f = Tracked::default();
        run(&mut f, "BEGIN", 0, TxStatus::InTransaction, &[b"BEGIN"]);
        let p = run(&mut f, "PREPARE q AS SELECT 1", 0, TxStatus::InTransaction, &[b"PREPARE"]);
        assert!(matches!(p.as_slice(), [Effect::Prepare { .. }]));
        // PREPARE is not undone by a rollback (checked against PostgreSQL 15).
        let p = run(&mut f, "PREPARE r AS SELECT 1; ROLLBACK", 0, TxStatus::Idle, &[b"PREPARE", b"ROLLBACK"]);
        assert!(matches!(p.as_slice(), [Effect::Prepare { .. }]));
        run(&mut f, "BEGIN", 0, TxStatus::InTransaction, &[b"BEGIN"]);
        // Two requests in flight; the SET rides on the second.
        f.sent(statements(b"SELECT 1", false), 1);
        f.sent(statements(b"SET x.y = 3", false), 2);
        f.on_command_complete(b"SELECT 1");
        assert_eq!(f.on_ready(TxStatus::InTransaction), []);
        f.on_command_complete(b"SET");
        assert_eq!(f.on_ready(TxStatus::InTransaction), []);
        f.sent(statements(b"COMMIT", true), 1);
        f.on_command_complete(b"COMMIT");
        assert_eq!(f.on_ready(TxStatus::Idle), [set("x.y", "3")]);
    }

    /// A long transaction that sets the same names over and over (a loop, an ORM that sets
    /// search_path before each statement) keeps one entry per name, and still counts exactly
    /// what PostgreSQL 15 keeps.
    #[test]
    fn a_transaction_keeps_only_the_last_setting_of_each_name() {
        let mut f = Tracked::default();
        let t = TxStatus::InTransaction;
        run(&mut f, "BEGIN; SET a.b = 0", 0, t, &[b"BEGIN", b"SET"]);
        for i in 1..=1000 {
            run(&mut f, &format!("SET a.b = {i}; SET LOCAL c.d = {i}"), 0, t, &[b"SET", b"SET"]);
        }
        assert_eq!(f.f.in_tx.len(), 2, "one SET and one SET LOCAL: {:?}", &f.f.in_tx[..4.min(f.f.in_tx.len())]);
        // A savepoint keeps what came before it for a ROLLBACK TO.
        run(&mut f, "SAVEPOINT s; SET a.b = 2000; SET a.b = 2001", 0, t, &[b"SAVEPOINT", b"SET", b"SET"]);
        assert_eq!(f.f.in_tx.len(), 3);
        run(&mut f, "ROLLBACK TO s", 0, t, &[b"ROLLBACK"]);
        assert_eq!(run(&mut f, "COMMIT", 0, TxStatus::Idle, &[b"COMMIT"]), [set("a.b", "1000")]);

        // SET LOCAL after SET: the session value comes back at COMMIT; SET after SET LOCAL
        // replaces both; RESET ALL replaces everything before it.
        run(&mut f, "BEGIN; SET a.b = 1; SET LOCAL a.b = 2", 0, t, &[b"BEGIN", b"SET", b"SET"]);
        assert_eq!(run(&mut f, "COMMIT", 0, TxStatus::Idle, &[b"COMMIT"]), [set("a.b", "1")]);
        run(&mut f, "BEGIN; SET LOCAL a.b = 2; SET a.b = 3", 0, t, &[b"BEGIN", b"SET", b"SET"]);
        assert_eq!(run(&mut f, "COMMIT", 0, TxStatus::Idle, &[b"COMMIT"]), [set("a.b", "3")]);
        run(
            &mut f,
            "BEGIN; SET a.b = 1; SET c.d = 1; RESET ALL; SET e.f = 1",
            0,
            t,
            &[b"BEGIN", b"SET", b"SET", b"RESET", b"SET"],
        );
        assert_eq!(run(&mut f, "COMMIT", 0, TxStatus::Idle, &[b"COMMIT"]), [Effect::ResetAll, set("e.f", "1")]);
        run(&mut f, "BEGIN; SET ROLE r1; RESET ALL", 0, t, &[b"BEGIN", b"SET", b"RESET"]);
        assert_eq!(run(&mut f, "COMMIT", 0, TxStatus::Idle, &[b"COMMIT"]), [set("role", "r1"), Effect::ResetAll]);
        assert!(f.is_idle());
    }
}
