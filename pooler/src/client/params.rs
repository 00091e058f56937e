//! Tracked run-time parameters (PgBouncer's varcache): client_encoding, DateStyle, TimeZone,
//! standard_conforming_strings, application_name and track_extra_parameters. Each client keeps
//! its own values; before a server is used for it, the server is SET to match. Most clients
//! of a pool want the same values, so a logged-in client's set is shared with every other
//! client that wants the same ([`ParamSets`]) and copied only when one of them changes a value.

use foldhash::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use crate::server::is_reported;

use crate::server::ServerParams;

/// Always tracked, as PgBouncer.
pub const ALWAYS_TRACKED: [&str; 5] =
    ["client_encoding", "DateStyle", "TimeZone", "standard_conforming_strings", "application_name"];

/// One client's wanted values.
#[derive(Debug, Clone, Default)]
pub struct ClientParams {
    set: Arc<ParamSet>,
}

/// The tracked names and the wanted values; shared between clients that want the same.
#[derive(Debug, Default)]
pub struct ParamSet {
    values: Vec<(String, String)>,
    extra: Vec<String>,
    /// The set's number, given the first time it is asked for (0 until then): no other set
    /// ever gets it, and a change of value makes the set a new one. A server synced to a
    /// number therefore has exactly these values.
    id: AtomicU64,
}

/// The last number given to a [`ParamSet`].
static LAST_SET_ID: AtomicU64 = AtomicU64::new(0);

impl ParamSet {
    /// Its number, given now if it has none yet.
    fn id(&self) -> u64 {
        match self.id.load(Ordering::Relaxed) {
            0 => {
                let new = LAST_SET_ID.fetch_add(1, Ordering::Relaxed) + 1;
                // Two clients sharing the set may ask at once: the first number given stays.
                match self.id.compare_exchange(0, new, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => new,
                    Err(given) => given,
                }
            }
            id => id,
        }
    }
}

/// A copy is another set (it is copied to be changed): it gets a number of its own.
impl Clone for ParamSet {
    fn clone(&self) -> Self {
        ParamSet { values: self.values.clone(), extra: self.extra.clone(), id: AtomicU64::new(0) }
    }
}

/// Sets are the same when they want the same values (their numbers aside): what sharing looks at.
impl PartialEq for ParamSet {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values && self.extra == other.extra
    }
}

impl Eq for ParamSet {}

impl Hash for ParamSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.values.hash(state);
        self.extra.hash(state);
    }
}

impl ClientParams {
    /// Tracks the standard set plus `extra` (track_extra_parameters).
    pub fn new(extra: &[String]) -> Self {
        let set = ParamSet { values: Vec::new(), extra: extra.to_vec(), id: AtomicU64::new(0) };
        Self { set: Arc::new(set) }
    }

    /// Every tracked name and its wanted value (for an online restart).
    pub fn values(&self) -> &[(String, String)] {
        &self.set.values
    }

    /// The canonical spelling of `name` if it is tracked.
    pub fn tracked_name(&self, name: &str) -> Option<&str> {
        ALWAYS_TRACKED
            .iter()
            .copied()
            .chain(self.set.extra.iter().map(String::as_str))
            .find(|t| t.eq_ignore_ascii_case(name))
    }

    /// Sets a wanted value (from the startup packet, the welcome, or a ParameterStatus the
    /// server sent while this client held it). Returns false for untracked names. A set shared
    /// with other clients is copied first.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        let Some(canon) = self.tracked_name(name) else {
            return false;
        };
        match self.set.values.iter().position(|(k, _)| k == canon) {
            Some(i) => {
                if self.set.values[i].1 == value {
                    return true;
                }
                self.changed().values[i].1 = value.to_owned();
            }
            None => {
                let canon = canon.to_owned();
                self.changed().values.push((canon, value.to_owned()));
            }
        }
        true
    }

    /// The set, to be changed: copied first if it is shared, and numbered again.
    fn changed(&mut self) -> &mut ParamSet {
        let set = Arc::make_mut(&mut self.set);
        *set.id.get_mut() = 0;
        set
    }

    /// The wanted values' number (never 0): a server synced to it needs no SET. Equal numbers
    /// mean equal values; clients that want the same values usually share a number (sharing),
    /// and when they do not the server's values are compared one by one.
    pub fn fingerprint(&self) -> u64 {
        self.set.id()
    }

    /// The wanted value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.set.values.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Shares the set of a logged-in client that wants the same values, if there is one
    /// (the process's [`ParamSets`]); called once the login has set every value.
    pub fn share(&mut self) {
        static SETS: std::sync::LazyLock<ParamSets> = std::sync::LazyLock::new(ParamSets::default);
        SETS.share(self);
    }

    /// Whether `other` tracks the same names and wants the same values.
    pub fn same_as(&self, other: &ClientParams) -> bool {
        Arc::ptr_eq(&self.set, &other.set) || *self.set == *other.set
    }

    /// Whether this client's set is the same allocation as `other`'s (sharing, for tests).
    #[cfg(test)]
    pub(super) fn shares_with(&self, other: &ClientParams) -> bool {
        Arc::ptr_eq(&self.set, &other.set)
    }

    /// Fills values the client did not choose from the server's defaults.
    pub fn fill_defaults(&mut self, welcome: &ServerParams) {
        for (k, v) in &welcome.0 {
            if self.get(k).is_none() {
                self.set(k, v);
            }
        }
    }

    /// SET statements that make `server` match, or None when it already does. As PgBouncer's
    /// `varcache_apply`: values differing only in case are equal, each value is quoted with
    /// `pg_quote_literal` except search_path (reported already quoted, GUC_LIST_QUOTE).
    pub fn sync_sql(&self, server: &ServerParams) -> Option<String> {
        let mut sql = String::new();
        for (k, v) in &self.set.values {
            // Reported values differing only in case are equal (PgBouncer's varcache); a value
            // pgmux records itself is compared exactly (`"Tenant_A"` is not `"tenant_a"`).
            let same = |s: &str| if is_reported(k) { s.eq_ignore_ascii_case(v) } else { s == v };
            if server.get(k).is_some_and(same) {
                continue;
            }
            sql.push_str("SET ");
            sql.push_str(k);
            sql.push('=');
            push_value(&mut sql, k, v);
            sql.push(';');
        }
        // A value another client gave at login of a name the server does not report: this
        // client has none, and gets the server's default back.
        for (k, _) in server.0.iter().filter(|(k, _)| self.unreported_unset(k)) {
            sql.push_str("RESET ");
            sql.push_str(k);
            sql.push(';');
        }
        (!sql.is_empty()).then_some(sql)
    }

    /// True for a tracked name this client has no value of: one the server does not report
    /// (the others are filled from the server's at login).
    fn unreported_unset(&self, name: &str) -> bool {
        self.tracked_name(name).is_some() && self.get(name).is_none()
    }

    /// After [`ClientParams::sync_sql`] ran on `server`: the values it was SET to that it does
    /// not report are recorded, and those it RESET forgotten, so that the next client's sync
    /// sees them.
    pub fn synced(&self, server: &mut ServerParams) {
        server.0.retain(|(k, _)| !self.unreported_unset(k));
        for (k, v) in self.set.values.iter().filter(|(k, _)| !is_reported(k)) {
            server.set(k, v);
        }
    }

    /// The wanted value of `name` as SQL, as [`ClientParams::sync_sql`] writes it; `None` when
    /// the client has none.
    pub fn sql_value(&self, name: &str) -> Option<String> {
        let (k, v) = self.set.values.iter().find(|(k, _)| k.eq_ignore_ascii_case(name))?;
        let mut sql = String::new();
        push_value(&mut sql, k, v);
        Some(sql)
    }

    /// After a SET, takes the server's spelling of each value that differs (PostgreSQL reports
    /// `ISO, MDY` for `ISO` without a ParameterStatus when the value does not change), so the
    /// next server is not SET again: PgBouncer's `varcache_set_canonical`. Returns the changes
    /// as (name, old, new) for the log.
    pub fn set_canonical(&mut self, server: &ServerParams) -> Vec<(String, String, String)> {
        let differs = |(k, v): &(String, String)| server.get(k).is_some_and(|s| s != v);
        if !self.set.values.iter().any(differs) {
            return Vec::new();
        }
        let mut changed = Vec::new();
        for (k, v) in &mut self.changed().values {
            if let Some(s) = server.get(k) {
                if s != v {
                    changed.push((k.clone(), std::mem::replace(v, s.to_owned()), s.to_owned()));
                }
            }
        }
        changed
    }
}

/// Sets in use, so that a client logging in shares the set of a client that wants the same
/// values instead of holding a copy (10,000 clients of one application want one set). Bounded:
/// when it is full it is emptied, and the clients holding sets keep them.
#[derive(Debug, Default)]
struct ParamSets(parking_lot::Mutex<HashSet<Arc<ParamSet>>>);

/// Distinct sets remembered at most.
const MAX_SHARED_SETS: usize = 1024;

impl ParamSets {
    /// Makes `params` share an equal set if one is remembered, else remembers its set.
    fn share(&self, params: &mut ClientParams) {
        let mut sets = self.0.lock();
        if let Some(same) = sets.get(&*params.set) {
            params.set = same.clone();
            return;
        }
        if sets.len() >= MAX_SHARED_SETS {
            sets.clear();
        }
        sets.insert(params.set.clone());
    }

    /// Distinct sets remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().len()
    }
}

/// Appends the value `v` of `name`: quoted, except search_path (reported already quoted,
/// GUC_LIST_QUOTE).
fn push_value(sql: &mut String, name: &str, v: &str) {
    if name.eq_ignore_ascii_case("search_path") && v == "\"\"" {
        sql.push_str("''");
    } else if name.eq_ignore_ascii_case("search_path") && is_name_list(v) {
        sql.push_str(v);
    } else {
        // Anything else is quoted, a search_path too when it is not a plain list of names: a
        // client's login value then cannot smuggle a statement (`x; SET ROLE r`) into pgmux's
        // SET, where it would stay on the server unseen.
        quote_literal(sql, v);
    }
}

/// True for a list of names as PostgreSQL prints search_path: words of letters, digits, `_`
/// and `$`, or double-quoted names (`""` for a quote), separated by commas and spaces.
fn is_name_list(v: &str) -> bool {
    let mut chars = v.chars().peekable();
    loop {
        while chars.next_if_eq(&' ').is_some() {}
        match chars.next() {
            Some('"') => loop {
                match chars.next() {
                    Some('"') if chars.next_if_eq(&'"').is_none() => break,
                    Some('\0') | None => return false,
                    Some(_) => {}
                }
            },
            Some(c) if c.is_alphanumeric() || c == '_' || c == '$' => {
                while chars.next_if(|c| c.is_alphanumeric() || *c == '_' || *c == '$').is_some() {}
            }
            _ => return false,
        }
        while chars.next_if_eq(&' ').is_some() {}
        match chars.next() {
            None => return true,
            Some(',') => {}
            Some(_) => return false,
        }
    }
}

/// Appends `v` as a SQL literal: `'...'` with quotes doubled, `E'...'` with backslashes doubled
/// when it has any (libusual's `pg_quote_literal`, which PgBouncer uses).
fn quote_literal(out: &mut String, v: &str) {
    if v.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_only_what_differs_and_quotes_values() {
        let mut c = ClientParams::new(&["IntervalStyle".into()]);
        assert!(c.set("timezone", "UTC"));
        assert!(c.set("application_name", "it's"));
        assert!(c.set("intervalstyle", "iso_8601"));
        assert!(!c.set("search_path", "x"));
        let mut server = ServerParams::default();
        server.set("TimeZone", "UTC");
        let sql = c.sync_sql(&server).unwrap();
        assert_eq!(sql, "SET application_name='it''s';SET IntervalStyle='iso_8601';");
        server.set("application_name", "it's");
        server.set("IntervalStyle", "iso_8601");
        assert_eq!(c.sync_sql(&server), None);
        // Case differences are no change; backslashes make an E'' literal.
        assert!(c.set("timezone", "utc"));
        assert!(c.set("application_name", "a\\b"));
        assert_eq!(c.sync_sql(&server).unwrap(), "SET application_name=E'a\\\\b';");
    }

    #[test]
    fn clients_wanting_the_same_values_share_one_set_until_one_changes() {
        let sets = ParamSets::default();
        let login = |app: &str| {
            let mut c = ClientParams::new(&["IntervalStyle".into()]);
            c.set("TimeZone", "UTC");
            c.set("application_name", app);
            sets.share(&mut c);
            c
        };
        let (a, mut b, other) = (login("web"), login("web"), login("batch"));
        assert!(a.shares_with(&b));
        assert!(!a.shares_with(&other));
        assert_eq!(sets.len(), 2);
        let before = a.fingerprint();
        assert_eq!(b.fingerprint(), before);
        // A change is the client's own: the other client still wants what it wanted.
        assert!(b.set("timezone", "Europe/Paris"));
        assert!(!a.shares_with(&b));
        assert_eq!(a.get("TimeZone"), Some("UTC"));
        assert_eq!(b.get("TimeZone"), Some("Europe/Paris"));
        assert_eq!(a.fingerprint(), before);
        assert_ne!(b.fingerprint(), before);
        // A change back is still another set: equal values, another number (the server's values
        // are then compared one by one).
        assert!(b.set("timezone", "UTC"));
        assert_ne!(b.fingerprint(), before);
        assert_eq!(b.sync_sql(&ServerParams::default()), a.sync_sql(&ServerParams::default()));
        // An unchanged value copies nothing.
        let mut c = login("web");
        assert!(c.set("application_name", "web"));
        assert!(c.shares_with(&a));
        // Bounded: a full memory starts over; held sets stay valid.
        for i in 0..MAX_SHARED_SETS + 5 {
            login(&format!("app{i}"));
        }
        assert!(sets.len() <= MAX_SHARED_SETS);
        assert_eq!(a.get("application_name"), Some("web"));
    }

    #[test]
    fn canonical_server_values_replace_equivalent_client_values() {
        let mut c = ClientParams::new(&["search_path".into()]);
        c.set("DateStyle", "ISO");
        c.set("search_path", "\"$user\", public");
        let mut server = ServerParams::default();
        server.set("DateStyle", "ISO");
        assert_eq!(c.sync_sql(&server), Some("SET search_path=\"$user\", public;".into()));
        server.set("DateStyle", "ISO, MDY");
        server.set("search_path", "\"$user\", public");
        let before = c.fingerprint();
        assert_eq!(c.set_canonical(&server), vec![("DateStyle".into(), "ISO".into(), "ISO, MDY".into())]);
        assert_ne!(c.fingerprint(), before);
        assert_eq!(c.sync_sql(&server), None);
    }

    #[test]
    fn an_unreported_login_value_is_remembered_on_the_server_and_reset_for_clients_without_one() {
        let mut with = ClientParams::new(&["search_path".into()]);
        with.set("search_path", "app");
        let without = ClientParams::new(&["search_path".into()]);
        let mut server = ServerParams::default();
        assert_eq!(without.sync_sql(&server), None);
        assert_eq!(with.sync_sql(&server), Some("SET search_path=app;".into()));
        with.synced(&mut server);
        assert_eq!(server.get("search_path"), Some("app"));
        assert_eq!(with.sync_sql(&server), None);
        assert_eq!(without.sync_sql(&server), Some("RESET search_path;".into()));
        without.synced(&mut server);
        assert_eq!(server.get("search_path"), None);
        assert_eq!(with.sql_value("SEARCH_PATH"), Some("app".into()));
        assert_eq!(without.sql_value("search_path"), None);
    }

    #[test]
    fn a_search_path_that_is_not_a_list_of_names_is_quoted_whole() {
        let mut c = ClientParams::new(&["search_path".into()]);
        for (v, sql) in [
            ("\"$user\", public", "SET search_path=\"$user\", public;"),
            ("a,\"b;\"\"c\" , d_1$", "SET search_path=a,\"b;\"\"c\" , d_1$;"),
            ("x; SET ROLE r", "SET search_path='x; SET ROLE r';"),
            ("x -- y", "SET search_path='x -- y';"),
            ("\"open", "SET search_path='\"open';"),
            ("a,", "SET search_path='a,';"),
        ] {
            c.set("search_path", v);
            assert_eq!(c.sync_sql(&ServerParams::default()).unwrap(), sql, "{v}");
        }
    }
}
