//! When the statements prepared on servers may no longer match the schema: PostgreSQL plans a
//! prepared statement again by itself after DDL, but refuses one whose result columns changed
//! (`cached plan must not change result type`, SQLSTATE 0A000). pgmux raises the statement epoch
//! (`Shared::statement_epoch`) when it sees DDL pass or a server refuse a statement; texts parsed
//! after that get statements of their own (`statement_hash`).
//! Pure functions of message bodies; the relay calls them.

use std::sync::atomic::{AtomicU64, Ordering};

use pgmux_protocol::backend::ErrorFields;

use crate::server::ServerStatements;

/// Command tags of DDL that can change the result columns of a statement prepared before it (a
/// table's or view's columns, a type's shape). `CREATE TABLE` and `DROP ...` are left out:
/// temporary tables made and dropped per transaction would otherwise empty every server's
/// cache each time; a table dropped and made again with other columns costs one refused
/// statement per server, as DDL made behind pgmux's back does.
const SHAPE_CHANGING: &[&[u8]] = &[
    b"ALTER TABLE",
    b"ALTER VIEW",
    b"ALTER MATERIALIZED VIEW",
    b"ALTER TYPE",
    b"ALTER DOMAIN",
    b"ALTER FOREIGN TABLE",
    b"ALTER EXTENSION",
    b"CREATE VIEW",
    b"CREATE MATERIALIZED VIEW",
];

/// The longest CommandComplete body worth reading for a DDL tag (the tag and its NUL).
pub const MAX_DDL_TAG: usize = 32;

/// True when a command with this CommandComplete tag may have changed the result columns of
/// statements prepared before it.
pub fn changes_result_shapes(tag: &[u8]) -> bool {
    SHAPE_CHANGING.iter().any(|p| tag.starts_with(p))
}

/// True when an ErrorResponse body is PostgreSQL refusing a prepared statement the schema
/// changed under: its result columns changed since it was prepared (0A000; the routine name is
/// checked first, as the message may be translated by lc_messages), or, when the error answers
/// a Bind or Describe of it (`answers_statement`), analysing it again failed (class 42: a
/// column's type changed under a parameter's, `operator does not exist: text = integer`; a
/// column or table gone). A text parsed again may succeed where the old statement cannot.
pub fn is_stale_plan_error(body: &[u8], answers_statement: bool) -> bool {
    let fields = ErrorFields::new(body);
    // A FATAL ends the server (server_loss.rs), whatever it says.
    if fields.field(b'V').is_some_and(|v| v != b"ERROR") {
        return false;
    }
    // Class 42 errors that answer a Bind without the statement being stale: a permission
    // checked when the portal starts, a portal name in use.
    const NOT_STALE: [&[u8]; 2] = [b"42501", b"42P03"];
    // Analysing the statement's text again reports where in it (a position): a parameter's
    // value that fails its type's input (`'nosuch'::regclass`, 42P01 too) does not.
    if answers_statement
        && fields.sqlstate().starts_with(b"42")
        && !NOT_STALE.contains(&fields.sqlstate())
        && fields.field(b'P').is_some()
    {
        return true;
    }
    if fields.sqlstate() != b"0A000" {
        return false;
    }
    match fields.field(b'R') {
        Some(routine) => routine == b"RevalidateCachedQuery",
        None => fields.field(b'M') == Some(b"cached plan must not change result type"),
    }
}

/// Raises the statement epoch for a server's refusal of the statement pgmux named from a hash
/// whose low 32 bits are `refused` (None: a statement pgmux did not name), unless that server
/// (its `statements`) refused the same statement before, since it was prepared there. A
/// statement refused for the first time raises it, however long ago it was named: its refusal
/// may be the first sign of a change made behind pgmux's back. Refused again it says nothing
/// new: clients running statements that can no longer work (refused at every call, as on a
/// direct connection) would otherwise raise it at every call, and every client would prepare
/// every text again. Returns the epoch now.
pub fn raise_for_refusal(epoch: &AtomicU64, refused: Option<u32>, statements: &mut ServerStatements) -> u64 {
    if refused.is_some_and(|low| !statements.refused_first(low)) {
        return epoch.load(Ordering::Relaxed);
    }
    epoch.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (code, value) in fields {
            body.push(*code);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        body
    }

    #[test]
    fn ddl_that_reshapes_results_is_recognised() {
        assert!(changes_result_shapes(b"ALTER TABLE"));
        assert!(!changes_result_shapes(b"DROP TABLE"));
        assert!(changes_result_shapes(b"CREATE VIEW"));
        assert!(!changes_result_shapes(b"CREATE TABLE"));
        assert!(!changes_result_shapes(b"SELECT 1"));
        assert!(!changes_result_shapes(b"ALTER ROLE"));
        assert!(!changes_result_shapes(b"INSERT 0 1"));
    }

    #[test]
    fn the_stale_plan_error_is_known_by_routine_or_english_text() {
        let translated = error(&[
            (b'S', "ERROR"),
            (b'C', "0A000"),
            (b'M', "le plan en cache ne doit pas modifier le type en résultat"),
            (b'R', "RevalidateCachedQuery"),
        ]);
        assert!(is_stale_plan_error(&translated, false));
        let no_routine = error(&[(b'C', "0A000"), (b'M', "cached plan must not change result type")]);
        assert!(is_stale_plan_error(&no_routine, false));
        let other = error(&[(b'C', "0A000"), (b'M', "cannot do that"), (b'R', "transformStmt")]);
        assert!(!is_stale_plan_error(&other, true));
        let other_state = error(&[(b'C', "22P02"), (b'R', "RevalidateCachedQuery")]);
        assert!(!is_stale_plan_error(&other_state, true), "a parameter's bad value is the client's");
    }

    #[test]
    fn a_failed_analysis_of_a_prepared_statement_counts_when_it_answers_a_bind() {
        let retyped = error(&[(b'C', "42883"), (b'M', "operator does not exist: text = integer"), (b'P', "27")]);
        assert!(is_stale_plan_error(&retyped, true));
        assert!(!is_stale_plan_error(&retyped, false), "a Parse's own error says nothing of the cache");
        let denied = error(&[(b'C', "42501"), (b'M', "permission denied for table t"), (b'P', "15")]);
        assert!(!is_stale_plan_error(&denied, true), "a permission is checked at Bind, stale or not");
        let bad_value = error(&[(b'C', "42P01"), (b'M', "relation \"nosuch\" does not exist")]);
        assert!(!is_stale_plan_error(&bad_value, true), "a parameter's value, not the statement's text");
        let fatal = error(&[(b'V', "FATAL"), (b'C', "0A000"), (b'R', "RevalidateCachedQuery")]);
        assert!(!is_stale_plan_error(&fatal, true));
    }

    #[test]
    fn a_refusal_raises_the_epoch_unless_the_server_refused_the_same_statement_before() {
        let epoch = AtomicU64::new(7);
        let mut here = ServerStatements::default();
        let (q1, q2) = (0xaaaa_0000_0000_0003_u64, 0xbbbb_0000_0000_0004_u64);
        here.insert(q1);
        here.insert(q2);
        assert_eq!(raise_for_refusal(&epoch, Some(3), &mut here), 8, "refused for the first time");
        assert_eq!(raise_for_refusal(&epoch, Some(3), &mut here), 8, "a retry of the same statement raises nothing");
        assert_eq!(raise_for_refusal(&epoch, Some(4), &mut here), 9, "another statement: perhaps a new change");
        assert_eq!(raise_for_refusal(&epoch, Some(3), &mut here), 9, "two broken statements in turn: nothing");
        assert_eq!(raise_for_refusal(&epoch, Some(4), &mut here), 9);
        // Prepared afresh (closed and parsed again): a refusal of it is news again.
        here.remove(q1);
        here.insert(q1);
        assert_eq!(raise_for_refusal(&epoch, Some(3), &mut here), 10);
        assert_eq!(raise_for_refusal(&epoch, Some(5), &mut here), 11, "a statement not known here raises it");
        assert_eq!(raise_for_refusal(&epoch, None, &mut here), 12, "a statement pgmux did not name raises it");
        assert_eq!(raise_for_refusal(&epoch, None, &mut here), 13, "every time: nothing tells them apart");
    }
}
