//! What a query's text does to its session, as far as transaction pooling cares: settings made
//! with `SET`/`RESET`, statements made with SQL `PREPARE`/`DEALLOCATE`, `DISCARD ALL`, and state
//! that cannot move to another server (LISTEN, temporary tables, session advisory locks, WITH
//! HOLD cursors, SET SESSION AUTHORIZATION). A small lexer that knows PostgreSQL's quoting
//! (strings, E'' strings, quoted identifiers, dollar quotes, nested comments) splits the text
//! into statements and reads each one's first words; nothing else is parsed.

mod lexer;
mod precheck;
mod routine_body;

pub use lexer::Strings;
use lexer::{Kind, Lexer, Token};
use routine_body::RoutineBody;

/// One statement's effect on the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `SET [SESSION] name {TO | =} value`: replayed as `SET name TO value`.
    Set {
        /// The setting, as PostgreSQL folds it.
        name: String,
        /// The SQL of its value, as written.
        value: String,
    },
    /// `RESET name`, or `SET name TO DEFAULT`.
    Reset(String),
    /// `SET LOCAL name {TO | =} value`: until its transaction ends. Never part of the session
    /// state, nor replayed; while its transaction lasts it counts for what the client's names
    /// mean (a `SET LOCAL search_path` per transaction, the way to choose a schema under
    /// transaction pooling).
    SetLocal {
        /// The setting, as PostgreSQL folds it.
        name: String,
        /// The SQL of its value, as written.
        value: String,
    },
    /// `RESET ALL`.
    ResetAll,
    /// `PREPARE name ... AS ...`: the whole statement, replayed as it was written.
    Prepare {
        /// The statement's name, as PostgreSQL folds it.
        name: String,
        /// The PREPARE statement.
        sql: String,
    },
    /// `DEALLOCATE [PREPARE] name`.
    Deallocate(String),
    /// `DEALLOCATE [PREPARE] ALL`.
    DeallocateAll,
    /// `DISCARD ALL`: RESET ALL and DEALLOCATE ALL (and more) at once.
    DiscardAll,
    /// Session state that stays on the server: what it is, for the log.
    Sticky(&'static str),
    /// A statement that ends a transaction or marks a point in it: what decides whether the
    /// settings made before it count.
    Control(Control),
}

/// Transaction control, as far as it decides which settings count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `COMMIT` or `END` (a failed transaction's COMMIT answers ROLLBACK: the tag decides).
    Commit,
    /// `ROLLBACK` or `ABORT`.
    Rollback,
    /// `SAVEPOINT name`.
    Savepoint(String),
    /// `RELEASE [SAVEPOINT] name`.
    Release(String),
    /// `ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name`.
    RollbackTo(String),
}

impl Effect {
    /// True when a ROLLBACK undoes it (settings); PREPARE, DEALLOCATE and the sticky kinds
    /// here take effect at once.
    pub fn transactional(&self) -> bool {
        matches!(self, Effect::Set { .. } | Effect::Reset(_) | Effect::ResetAll | Effect::SetLocal { .. })
    }
}

/// The sticky state a ROLLBACK leaves in place: a session-level advisory lock taken inside a
/// transaction is held until unlocked or the session ends.
pub const ADVISORY_LOCK: &str = "a session advisory lock";

impl Effect {
    /// True for state that outlives the transaction it was made in even when that rolls back.
    pub fn survives_rollback(&self) -> bool {
        matches!(self, Effect::Sticky(what) if *what == ADVISORY_LOCK)
    }
}

/// Texts longer than this are not looked at (a bulk INSERT is not a SET).
pub const MAX_TEXT: usize = 64 * 1024;

/// The effect of the statement numbered `at` (from 0, empty statements not counted) in its
/// text: the `at`-th CommandComplete of a Query answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Its number in the text.
    pub at: u32,
    /// What it does.
    pub effect: Effect,
}

/// The effects of every statement in `text`, in order, without transaction control.
pub fn effects(text: &[u8]) -> Vec<Effect> {
    statements(text, false).into_iter().map(|s| s.effect).filter(|e| !matches!(e, Effect::Control(_))).collect()
}

/// The statements of `text` that do something to its session, with their numbers. Transaction
/// control counts only beside other effects (one query that sets and rolls back), or when
/// `every` says that settings already wait on it: only then is a text without any of the
/// words that change a session lexed too. Strings read as with standard_conforming_strings on.
pub fn statements(text: &[u8], every: bool) -> Vec<Statement> {
    statements_in(text, every, || Strings::Standard)
}

/// [`statements`], with the client's `strings` (asked only when the text is lexed).
pub fn statements_in(text: &[u8], every: bool, strings: impl FnOnce() -> Strings) -> Vec<Statement> {
    if text.len() > MAX_TEXT || (!every && !precheck::worth_a_look(text)) {
        return Vec::new();
    }
    lexed(text, strings()).0
}

/// The statements of a Parse's `text` that do something to its session (as [`statements_in`]):
/// none when the text holds more than one statement, which PostgreSQL refuses to prepare.
pub fn parsed(text: &[u8], every: bool, strings: impl FnOnce() -> Strings) -> Vec<Statement> {
    if text.len() > MAX_TEXT || (!every && !precheck::worth_a_look(text)) {
        return Vec::new();
    }
    match lexed(text, strings()) {
        (statements, 0 | 1) => statements,
        _ => Vec::new(),
    }
}

/// True when `text` starts with transaction control (COMMIT, ROLLBACK, SAVEPOINT, ...): a
/// statement prepared with such a text matters when it is executed later, whatever the
/// cheap test says of it.
/// Runs on every Parse: a comparison of the first bytes (the lexer only skips blanks).
pub fn starts_with_control(text: &[u8]) -> bool {
    const WORDS: [&[u8]; 6] = [b"commit", b"end", b"rollback", b"abort", b"savepoint", b"release"];
    let mut lexer = Lexer::new(text, Strings::Standard);
    let rest = &text[lexer.skip_blanks()..];
    let ends_word =
        |n: usize| !rest.get(n).is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80);
    WORDS.iter().any(|w| rest.get(..w.len()).is_some_and(|head| head.eq_ignore_ascii_case(w)) && ends_word(w.len()))
}

/// `statements` without the cheap test first, and how many statements the text holds (empty
/// ones not counted).
fn lexed(text: &[u8], strings: Strings) -> (Vec<Statement>, u32) {
    let mut out = Vec::new();
    let mut lexer = Lexer::new(text, strings);
    let mut at = 0;
    loop {
        let mut words: Vec<Token> = Vec::new();
        let mut end = lexer.skip_blanks();
        let mut advisory = false;
        let mut body = RoutineBody::default();
        while let Some(tok) = lexer.next_token() {
            if tok.kind == Kind::Semicolon && !body.inside() {
                break;
            }
            body.see(text, &tok);
            if tok.kind == Kind::Word && is_advisory_lock(&text[tok.start..tok.end]) {
                advisory = true;
            }
            end = tok.end;
            if words.len() < 12 {
                words.push(tok);
            }
        }
        if !words.is_empty() {
            if let Some(effect) = statement(text, &words, end) {
                out.push(Statement { at, effect });
            } else if advisory {
                out.push(Statement { at, effect: Effect::Sticky(ADVISORY_LOCK) });
            }
            at += 1;
        }
        if lexer.at >= text.len() {
            return (out, at);
        }
    }
}

/// `pg_advisory_lock`, `pg_advisory_lock_shared`, `pg_try_advisory_lock[_shared]`: the session
/// kinds (the `_xact_` ones end with the transaction).
fn is_advisory_lock(word: &[u8]) -> bool {
    let w = word.to_ascii_lowercase();
    matches!(
        w.as_slice(),
        b"pg_advisory_lock" | b"pg_advisory_lock_shared" | b"pg_try_advisory_lock" | b"pg_try_advisory_lock_shared"
    )
}

/// The effect of one statement, from its first words; `end` is where its text ends.
fn statement(text: &[u8], words: &[Token], end: usize) -> Option<Effect> {
    let word = |i: usize| words.get(i).map(|t| t.keyword(text)).unwrap_or_default();
    match word(0).as_str() {
        "set" => set(text, words, end),
        "reset" => match word(1).as_str() {
            "all" if words.len() == 2 => Some(Effect::ResetAll),
            "session" if word(2) == "authorization" => Some(Effect::Sticky("SET SESSION AUTHORIZATION")),
            "role" if words.len() == 2 => Some(Effect::Reset("role".into())),
            _ => single_name(text, &words[1..]).map(Effect::Reset),
        },
        // The transaction leaves the session; its settings stay, as at COMMIT (and as at
        // COMMIT, a failed one answers ROLLBACK).
        // (`PREPARE TRANSACTION 'id'`: a statement may be called `transaction` too.)
        "prepare" if word(1) == "transaction" && words.get(2).is_some_and(|t| t.kind == Kind::Literal) => {
            Some(Effect::Control(Control::Commit))
        }
        "prepare" => {
            let name = words.get(1).filter(|t| t.is_name()).map(|t| t.name(text))?;
            Some(Effect::Prepare { name, sql: String::from_utf8_lossy(&text[words[0].start..end]).into_owned() })
        }
        "deallocate" => {
            let rest = if word(1) == "prepare" { &words[2..] } else { &words[1..] };
            match rest {
                [t] if t.keyword(text) == "all" => Some(Effect::DeallocateAll),
                [t] if t.is_name() => Some(Effect::Deallocate(t.name(text))),
                _ => None,
            }
        }
        "discard" if word(1) == "all" => Some(Effect::DiscardAll),
        "discard" if word(1) == "temp" || word(1) == "temporary" => None,
        "listen" => Some(Effect::Sticky("LISTEN")),
        "commit" | "end" | "rollback" | "abort" | "savepoint" | "release" => control(text, words).map(Effect::Control),
        "create" => {
            let temp = (1..4)
                .map(word)
                .take_while(|w| w != "table" && w != "view" && w != "sequence")
                .any(|w| w == "temp" || w == "temporary");
            temp.then_some(Effect::Sticky("a temporary table"))
        }
        "declare" => {
            let hold = words.windows(2).any(|w| w[0].keyword(text) == "with" && w[1].keyword(text) == "hold");
            hold.then_some(Effect::Sticky("a WITH HOLD cursor"))
        }
        _ => None,
    }
}

/// Transaction control: the statements that end a transaction or mark a savepoint in it.
fn control(text: &[u8], words: &[Token]) -> Option<Control> {
    let word = |i: usize| words.get(i).map(|t| t.keyword(text)).unwrap_or_default();
    // The savepoint named from word `i` on (after an optional SAVEPOINT).
    let savepoint = |i: usize| {
        let i = if word(i) == "savepoint" { i + 1 } else { i };
        words.get(i).filter(|t| t.is_name()).map(|t| t.ident(text))
    };
    match word(0).as_str() {
        // Two-phase commit acts on a prepared transaction, not the open one (it runs outside
        // any); a savepoint may be called `prepared`.
        "commit" | "rollback" if word(1) == "prepared" => None,
        "commit" | "end" => Some(Control::Commit),
        "rollback" | "abort" => {
            let to = if matches!(word(1).as_str(), "work" | "transaction") { 2 } else { 1 };
            if word(to) == "to" {
                savepoint(to + 1).map(Control::RollbackTo)
            } else {
                Some(Control::Rollback)
            }
        }
        "savepoint" => savepoint(0).map(Control::Savepoint),
        "release" => savepoint(1).map(Control::Release),
        _ => None,
    }
}

/// `SET ...`: a session setting, a transaction's (`SET LOCAL`), or nothing for the other
/// transaction-scoped forms.
fn set(text: &[u8], words: &[Token], end: usize) -> Option<Effect> {
    let mut i = 1;
    let kw = |i: usize| words.get(i).map(|t| t.keyword(text)).unwrap_or_default();
    match kw(1).as_str() {
        "local" => {
            let (name, value) = match set(text, &words[1..], end)? {
                Effect::Set { name, value } => (name, value),
                Effect::Reset(name) => (name, "DEFAULT".to_owned()),
                _ => return None,
            };
            return Some(Effect::SetLocal { name, value });
        }
        // Transaction-scoped: gone at COMMIT.
        "transaction" | "constraints" => return None,
        "session" => match kw(2).as_str() {
            "authorization" => return Some(Effect::Sticky("SET SESSION AUTHORIZATION")),
            "characteristics" => return Some(Effect::Sticky("SET SESSION CHARACTERISTICS")),
            _ => i = 2,
        },
        _ => {}
    }
    let name_tok = words.get(i)?;
    let name_kw = name_tok.keyword(text);
    // Forms with their own syntax. TIME ZONE and NAMES change reported parameters, which are
    // tracked from the server's ParameterStatus.
    let (name, value_from) = match name_kw.as_str() {
        "time" | "names" => return None,
        "role" if name_tok.kind == Kind::Word => ("role".to_owned(), words.get(i + 1)?.start),
        "schema" if name_tok.kind == Kind::Word => ("search_path".to_owned(), words.get(i + 1)?.start),
        _ => {
            // name, possibly dotted (custom settings), then = or TO.
            let mut j = i;
            let mut name = name_tok.name(text);
            while words.get(j + 1).is_some_and(|t| t.kind == Kind::Dot) {
                let part = words.get(j + 2).filter(|t| t.is_name())?;
                name.push('.');
                name.push_str(&part.name(text));
                j += 2;
            }
            let op = words.get(j + 1)?;
            if !(op.kind == Kind::Equals || op.keyword(text) == "to") {
                return None;
            }
            (name, words.get(j + 2)?.start)
        }
    };
    // From a token's start to a token's end: nothing to trim (and PostgreSQL's white space is
    // not Rust's: a vertical tab is a token to it).
    let value = String::from_utf8_lossy(&text[value_from..end]).into_owned();
    if value.eq_ignore_ascii_case("default") {
        return Some(Effect::Reset(name));
    }
    Some(Effect::Set { name, value })
}

/// A lone name (`RESET work_mem`, `RESET app.user_id`).
fn single_name(text: &[u8], words: &[Token]) -> Option<String> {
    let mut name = words.first().filter(|t| t.is_name())?.name(text);
    let mut rest = &words[1..];
    while let [dot, part, tail @ ..] = rest {
        if dot.kind != Kind::Dot || !part.is_name() {
            return None;
        }
        name.push('.');
        name.push_str(&part.name(text));
        rest = tail;
    }
    rest.is_empty().then_some(name)
}

/// Texts of up to `most - 1` pieces drawn from `pieces`, the same sequence for a `seed`
/// (xorshift): for the randomized tests of the lexer and its pre-check.
#[cfg(test)]
fn random_texts<'a>(pieces: &'a [&'a [u8]], most: u64, mut seed: u64) -> impl FnMut() -> Vec<u8> + 'a {
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    move || {
        let mut text = Vec::new();
        for _ in 0..next() % most {
            text.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
        }
        text
    }
}

#[cfg(test)]
mod tests;
