//! Unit tests of the statement reader: how texts split into statements, their numbers, and
//! what each statement does to a session.

use super::*;

fn set(name: &str, value: &str) -> Effect {
    Effect::Set { name: name.into(), value: value.into() }
}

#[test]
fn session_settings_are_read_and_transaction_ones_are_not() {
    assert_eq!(effects(b"SET work_mem = '64MB'"), [set("work_mem", "'64MB'")]);
    assert_eq!(effects(b"set SESSION statement_timeout TO 5000;"), [set("statement_timeout", "5000")]);
    assert_eq!(effects(b"SET search_path TO app, \"$user\", public"), [set("search_path", "app, \"$user\", public")]);
    assert_eq!(effects(b"SET myapp.user_id = 42"), [set("myapp.user_id", "42")]);
    assert_eq!(effects(b"SET \"MyApp\".x = 1"), [set("\"MyApp\".x", "1")]);
    assert_eq!(effects(b"SET lock_timeout TO DEFAULT"), [Effect::Reset("lock_timeout".into())]);
    assert_eq!(effects(b"SET ROLE app_reader"), [set("role", "app_reader")]);
    assert_eq!(effects(b"RESET ROLE"), [Effect::Reset("role".into())]);
    assert_eq!(effects(b"SET SCHEMA 'app'"), [set("search_path", "'app'")]);
    assert_eq!(effects(b"reset work_mem"), [Effect::Reset("work_mem".into())]);
    assert_eq!(effects(b"RESET ALL"), [Effect::ResetAll]);
    let local = |name: &str, value: &str| Effect::SetLocal { name: name.into(), value: value.into() };
    assert_eq!(effects(b"SET LOCAL work_mem = '1MB'"), [local("work_mem", "'1MB'")]);
    assert_eq!(effects(b"set local search_path to tenant_7, public"), [local("search_path", "tenant_7, public")]);
    assert_eq!(effects(b"SET LOCAL ROLE app_reader"), [local("role", "app_reader")]);
    assert_eq!(effects(b"SET LOCAL search_path TO DEFAULT"), [local("search_path", "DEFAULT")]);
    for none in [
        &b"SET LOCAL TIME ZONE 'UTC'"[..],
        b"SET LOCAL SESSION AUTHORIZATION bob",
        b"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        b"SET CONSTRAINTS ALL DEFERRED",
        b"SET TIME ZONE 'UTC'",
        b"SET NAMES 'UTF8'",
        b"SELECT 'SET work_mem = 1'",
        b"SELECT 1 -- SET work_mem = 1",
        b"SELECT /* SET x = 1; /* nested */ still */ 1",
        b"SELECT $$; SET work_mem = 1$$",
        b"SELECT $f$ ; SET x=1 $f$",
        b"UPDATE settings SET value = 1",
    ] {
        assert_eq!(effects(none), [], "{}", String::from_utf8_lossy(none));
    }
}

#[test]
fn statements_are_split_at_top_level_semicolons() {
    assert_eq!(
        effects(b"BEGIN; SET work_mem='1MB'; SELECT ';'; SET x.y = E'a\\';b'; COMMIT"),
        [set("work_mem", "'1MB'"), set("x.y", "E'a\\';b'")]
    );
    assert_eq!(effects(b"SET a.b = 'it''s; here'"), [set("a.b", "'it''s; here'")]);
}

#[test]
fn transaction_control_is_read_with_each_statement_number() {
    let st = |at: u32, effect: Effect| Statement { at, effect };
    assert_eq!(
        statements(b"BEGIN; SET a.b = 1;; ROLLBACK; SELECT 1; SET c.d = 2; COMMIT", false),
        [
            st(1, set("a.b", "1")),
            st(2, Effect::Control(Control::Rollback)),
            st(4, set("c.d", "2")),
            st(5, Effect::Control(Control::Commit))
        ]
    );
    // Without a word that changes a session, only when asked for every statement.
    assert_eq!(statements(b"SAVEPOINT a", false), []);
    let one = |sql: &[u8]| statements(sql, true).into_iter().map(|s| s.effect).collect::<Vec<_>>();
    let control = |c: Control| [Effect::Control(c)];
    assert_eq!(one(b"SAVEPOINT a"), control(Control::Savepoint("a".into())));
    assert_eq!(one(b"savepoint \"A\"\"b\""), control(Control::Savepoint("A\"b".into())));
    assert_eq!(one(b"ROLLBACK TO a"), control(Control::RollbackTo("a".into())));
    assert_eq!(one(b"rollback work to savepoint \"a\""), control(Control::RollbackTo("a".into())));
    assert_eq!(one(b"ABORT TRANSACTION"), control(Control::Rollback));
    assert_eq!(one(b"ROLLBACK AND CHAIN"), control(Control::Rollback));
    assert_eq!(one(b"RELEASE SAVEPOINT a"), control(Control::Release("a".into())));
    assert_eq!(one(b"release a"), control(Control::Release("a".into())));
    assert_eq!(one(b"END"), control(Control::Commit));
    assert_eq!(one(b"COMMIT AND CHAIN"), control(Control::Commit));
    assert_eq!(one(b"COMMIT PREPARED 'x'"), []);
    assert_eq!(one(b"ROLLBACK PREPARED 'x'"), []);
    // The open transaction leaves the session, its settings kept (checked against PG 15).
    assert_eq!(one(b"PREPARE TRANSACTION 'x'"), control(Control::Commit));
    assert!(
        matches!(one(b"PREPARE transaction AS SELECT 1").as_slice(), [Effect::Prepare { name, .. }] if name == "transaction")
    );
    assert_eq!(one(b"SAVEPOINT prepared"), control(Control::Savepoint("prepared".into())));
    assert_eq!(one(b"RELEASE prepared"), control(Control::Release("prepared".into())));
    assert_eq!(one(b"ROLLBACK TO prepared"), control(Control::RollbackTo("prepared".into())));
    assert_eq!(one(b"BEGIN; SELECT 1"), []);
    for (text, control) in [
        (&b"  /* c */ ROLLBACK TO a"[..], true),
        (b"commit", true),
        (b"End;", true),
        (b"savepoint x", true),
        (b"select 1", false),
        (b"ending", false),
        (b"commit_log", false),
        (b"", false),
    ] {
        assert_eq!(starts_with_control(text), control, "{}", String::from_utf8_lossy(text));
    }
    // A rule's actions in parentheses are part of its CREATE (checked against PG 15).
    assert_eq!(
        statements(b"CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2); SET a.b = 3", false),
        [st(1, set("a.b", "3"))]
    );
    // A carriage return ends a `--` comment (checked against PostgreSQL 15).
    assert_eq!(statements(b"SELECT 1 -- x\r; SET a.b = 2", false), [st(1, set("a.b", "2"))]);
    // A Parse prepares one statement, or none.
    let parsed = |text: &[u8]| parsed(text, false, Strings::default);
    assert_eq!(parsed(b"SET a.b = 1;"), [st(0, set("a.b", "1"))]);
    assert_eq!(parsed(b" ; SET a.b = 1"), [st(0, set("a.b", "1"))]);
    assert_eq!(parsed(b"SET a.b = 1; SELECT 1"), []);
    assert_eq!(parsed(&b"SET a.b = 1;".repeat(1000)), []);
    // With standard_conforming_strings off a backslash escapes a quote (checked against
    // PostgreSQL 15); on, the same text is one string from its second quote on.
    let text = br"SELECT 'it\'s'; SET a.b = 1";
    assert_eq!(statements_in(text, false, || Strings::Backslash), [st(1, set("a.b", "1"))]);
    assert_eq!(statements(text, false), []);
    // `effects` leaves transaction control out.
    assert_eq!(effects(b"SET a.b = 1; ROLLBACK"), [set("a.b", "1")]);
    // A routine's BEGIN ATOMIC body is one statement with its CREATE: its semicolons split
    // nothing and its END is no COMMIT.
    assert_eq!(
        statements(b"BEGIN; CREATE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; END; SET a.b = 1; ROLLBACK", false),
        [st(2, set("a.b", "1")), st(3, Effect::Control(Control::Rollback))]
    );
}

#[test]
fn prepared_statements_and_discard() {
    assert_eq!(
        effects(b"PREPARE q1 (int) AS SELECT $1 + 1"),
        [Effect::Prepare { name: "q1".into(), sql: "PREPARE q1 (int) AS SELECT $1 + 1".into() }]
    );
    assert_eq!(effects(b"PREPARE TRANSACTION 'x'"), []);
    assert_eq!(effects(b"DEALLOCATE q1"), [Effect::Deallocate("q1".into())]);
    assert_eq!(effects(b"deallocate prepare \"Q2\""), [Effect::Deallocate("\"Q2\"".into())]);
    assert_eq!(effects(b"DEALLOCATE ALL"), [Effect::DeallocateAll]);
    assert_eq!(effects(b"DISCARD ALL"), [Effect::DiscardAll]);
}

#[test]
fn state_that_cannot_move_is_named() {
    assert_eq!(effects(b"LISTEN jobs"), [Effect::Sticky("LISTEN")]);
    assert_eq!(effects(b"CREATE TEMP TABLE t (x int)"), [Effect::Sticky("a temporary table")]);
    assert_eq!(effects(b"create local temporary table t (x int)"), [Effect::Sticky("a temporary table")]);
    assert_eq!(effects(b"CREATE TABLE temp_data (x int)"), []);
    assert_eq!(effects(b"SELECT pg_advisory_lock(42)"), [Effect::Sticky("a session advisory lock")]);
    assert_eq!(effects(b"SELECT pg_advisory_xact_lock(42)"), []);
    assert_eq!(effects(b"DECLARE c CURSOR WITH HOLD FOR SELECT 1"), [Effect::Sticky("a WITH HOLD cursor")]);
    assert_eq!(effects(b"DECLARE c CURSOR FOR SELECT 1"), []);
    assert_eq!(effects(b"SET SESSION AUTHORIZATION bob"), [Effect::Sticky("SET SESSION AUTHORIZATION")]);
}

#[test]
fn odd_input_is_harmless() {
    for text in
        [&b"SET"[..], b"SET x", b"SET x =", b"'unterminated", b"$", b"$a", b"/* open", b"\"", b"E'\\", b"SET ;;;"]
            .into_iter()
            .chain([
                &b"SET x.y = E'\\"[..],
                b"SET x.y = E'a\\",
                b"SET x.y = $$",
                b"SET x.y = $q$ a",
                b"PREPARE p AS SELECT '",
                b"SET x.y = \"",
                b"SET x.y = 1 /* open",
            ])
    {
        let _ = effects(text);
    }
    assert_eq!(effects(&[0xff, 0xfe, b's', b'e', b't']), []);
    // Found by the fuzzer: a vertical tab is white space to Rust's trim, not to PostgreSQL.
    assert_eq!(effects(b"SET x.y = \x0b"), [set("x.y", "\x0b")]);
}

/// Random texts made of the pieces the lexer cares about: it never panics, and every
/// setting it reads has a name and a value.
#[test]
fn random_texts_never_panic() {
    const PIECES: [&[u8]; 38] = [
        b"pg_temp.",
        b"(",
        b"1",
        b"offset",
        "é".as_bytes(),
        b"SET ",
        b"set",
        b"RESET",
        b" ALL",
        b"PREPARE ",
        b"DEALLOCATE",
        b"LISTEN",
        b"ROLLBACK",
        b"SAVEPOINT ",
        b"RELEASE ",
        b"CREATE TEMP TABLE",
        b"DECLARE",
        b" WITH HOLD",
        b"pg_advisory_lock(",
        b";",
        b"'",
        b"\"",
        b"$",
        b"$q$",
        b"E'",
        b"\\",
        b"/*",
        b"*/",
        b"--",
        b"\n",
        b"=",
        b" TO ",
        b".",
        b"x",
        b"work_mem",
        b" ",
        b"DEFAULT",
        b"\xff",
    ];
    let mut texts = random_texts(&PIECES, 24, 0x2545_f491_4f6c_dd1d);
    for _ in 0..50_000 {
        let text = texts();
        let found = effects(&text);
        let lexed: Vec<Effect> = lexed(&text, Strings::Standard)
            .0
            .into_iter()
            .map(|s| s.effect)
            .filter(|e| !matches!(e, Effect::Control(_)))
            .collect();
        assert_eq!(found, lexed, "the cheap test hid an effect in {}", String::from_utf8_lossy(&text));
        for e in found {
            if let Effect::Set { name, value } = e {
                assert!(!name.is_empty() && !value.is_empty(), "{}", String::from_utf8_lossy(&text));
            }
        }
    }
}
