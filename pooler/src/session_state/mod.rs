//! Session state made with SQL that transaction pooling carries from server to server: settings
//! (`SET`, `RESET`) and SQL prepared statements (`PREPARE`, `DEALLOCATE`). Each client keeps what
//! it made; each server keeps what was made on it; before a server runs a client's transaction,
//! the difference is replayed (`SET name TO value`, `RESET name`, `DEALLOCATE name`, the
//! client's `PREPARE`), so nothing leaks from one client to the next and nothing is lost on a
//! switch. [`InFlight`] decides when a statement counts: settings when their transaction
//! commits, PREPARE and DEALLOCATE when they succeed.

mod in_flight;
mod portals;

use std::collections::BTreeMap;

pub use in_flight::InFlight;
pub use portals::Portals;

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
            // RESET ALL leaves the role alone (PostgreSQL 15: `SET ROLE r; RESET ALL` keeps r).
            Effect::ResetAll => self.settings.retain(|name, _| name == "role"),
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
            // A transaction's own setting, and what is not state that moves.
            Effect::SetLocal { .. } | Effect::Sticky(_) | Effect::Control(_) => {}
        }
    }

    /// True when nothing was made.
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty() && self.prepared.is_empty()
    }

    /// What to run on a server whose state is `server` so that it is this one; `None` when it
    /// already is. A setting the server has and this state has not goes back to
    /// `login_value(name)` (SQL) when there is one: the value a client asked for at login of a
    /// tracked parameter PostgreSQL does not report; else it is RESET.
    pub fn replay_on(&self, server: &SessionState, login_value: impl Fn(&str) -> Option<String>) -> Option<Replay> {
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
            match login_value(name) {
                Some(value) => r.batch.push_str(&format!("SET {name} TO {value};")),
                None => r.batch.push_str(&format!("RESET {name};")),
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session_sql::effects;

    #[test]
    fn replay_sets_resets_and_prepares_only_the_difference() {
        let mut client = SessionState::default();
        let mut server = SessionState::default();
        assert_eq!(client.replay_on(&server, |_| None), None);
        for e in effects(b"SET work_mem = '8MB'; SET a.b = 1; PREPARE q AS SELECT 1; PREPARE r AS SELECT 2") {
            client.apply(&e);
        }
        for e in effects(b"SET a.b = 1; SET lock_timeout = 10; PREPARE q AS SELECT 1; PREPARE r AS SELECT 3") {
            server.apply(&e);
        }
        let r = client.replay_on(&server, |_| None).unwrap();
        assert_eq!(r.batch, "SET work_mem TO '8MB';RESET lock_timeout;DEALLOCATE r;");
        assert_eq!(r.prepares, [("r".to_owned(), "PREPARE r AS SELECT 2".to_owned())]);
        // A setting with a login value goes back to it.
        let login = |name: &str| (name == "lock_timeout").then(|| "'5s'".to_owned());
        assert_eq!(
            client.replay_on(&server, login).unwrap().batch,
            "SET work_mem TO '8MB';SET lock_timeout TO '5s';DEALLOCATE r;"
        );
        // RESET ALL leaves the role (checked against PostgreSQL 15); DISCARD ALL does not.
        for e in effects(b"SET ROLE r1; RESET ALL") {
            client.apply(&e);
        }
        assert_eq!(client.settings.keys().collect::<Vec<_>>(), ["role"]);
        client.apply(&Effect::DiscardAll);
        assert!(client.is_empty());
        assert_eq!(client.replay_on(&SessionState::default(), |_| None), None);
    }
}
