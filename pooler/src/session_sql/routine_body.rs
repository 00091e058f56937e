//! Where a semicolon does not end a statement: inside the `BEGIN ATOMIC ... END` body of a
//! `CREATE [OR REPLACE] FUNCTION | PROCEDURE` (PostgreSQL 14 and later), whose statements the
//! server's grammar reads as part of the one CREATE. Without this, the body's semicolons would
//! split it into statements the server never answers, shift the numbers of the statements after
//! it, and read its closing `END` as a COMMIT. The same holds for semicolons inside parentheses
//! (the actions of `CREATE RULE ... DO (...; ...)`).
//!
//! The server parses the body with its grammar; here a count of the words that open and close a
//! block is enough: `BEGIN ATOMIC` opens the body, CASE opens a block inside it (a CASE also
//! closes with END), END closes one; only outside parentheses, and only in a statement that
//! starts by creating a function or a procedure.

use super::lexer::{Kind, Token};

/// Follows one statement's tokens; says whether a semicolon met now ends the statement.
#[derive(Default)]
pub(super) struct RoutineBody {
    /// Words seen in this statement so far (only the first four decide).
    words: u8,
    /// The statement creates a function or a procedure: BEGIN/CASE/END are counted.
    routine: bool,
    /// Parentheses open (a BEGIN in an argument list or a default is not a body).
    parens: u32,
    /// Blocks open (BEGIN ATOMIC ... END, and CASE ... END inside it).
    depth: u32,
    /// The last word was BEGIN (the body opens at the ATOMIC after it).
    after_begin: bool,
}

impl RoutineBody {
    /// Takes the statement's next token (semicolons included).
    pub(super) fn see(&mut self, text: &[u8], tok: &Token) {
        match tok.kind {
            Kind::Word => self.word(&text[tok.start..tok.end]),
            Kind::Other => match text[tok.start] {
                b'(' => self.parens = self.parens.saturating_add(1),
                b')' => self.parens = self.parens.saturating_sub(1),
                _ => {}
            },
            _ => {}
        }
    }

    /// True while a semicolon is part of the statement rather than its end: in a routine's
    /// body, or inside parentheses (a rule's `DO (INSERT ...; UPDATE ...)` actions; anywhere
    /// else the server refuses the whole text, and runs none of it).
    pub(super) fn inside(&self) -> bool {
        self.depth > 0 || self.parens > 0
    }

    fn word(&mut self, word: &[u8]) {
        let is = |w: &[u8]| word.eq_ignore_ascii_case(w);
        let n = self.words;
        self.words = self.words.saturating_add(1);
        if n < 4 {
            // CREATE FUNCTION | PROCEDURE, or CREATE OR REPLACE FUNCTION | PROCEDURE.
            let routine = is(b"function") || is(b"procedure");
            match n {
                0 if !is(b"create") => self.words = u8::MAX,
                1 if routine => self.routine = true,
                1 if !is(b"or") => self.words = u8::MAX,
                2 if !is(b"replace") => self.words = u8::MAX,
                3 if routine => self.routine = true,
                _ => {}
            }
            return;
        }
        if !self.routine || self.parens > 0 {
            return;
        }
        if (is(b"atomic") && self.after_begin) || (is(b"case") && self.depth > 0) {
            self.depth = self.depth.saturating_add(1);
        } else if is(b"end") {
            self.depth = self.depth.saturating_sub(1);
        }
        self.after_begin = is(b"begin");
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::{Lexer, Strings};
    use super::*;

    /// Whether each semicolon of `text` ends a statement.
    fn ends(text: &str) -> Vec<bool> {
        let mut lexer = Lexer::new(text.as_bytes(), Strings::Standard);
        let mut body = RoutineBody::default();
        let mut out = Vec::new();
        while let Some(tok) = lexer.next_token() {
            if tok.kind == Kind::Semicolon {
                let end = !body.inside();
                out.push(end);
                if end {
                    body = RoutineBody::default();
                }
            } else {
                body.see(text.as_bytes(), &tok);
            }
        }
        out
    }

    #[test]
    fn semicolons_in_an_atomic_body_do_not_end_the_create() {
        assert_eq!(
            ends("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SET a = 1;"),
            [false, false, true, true]
        );
        assert_eq!(
            ends("create or replace procedure p(x int) begin atomic insert into t values (x); end;"),
            [false, true]
        );
        // CASE ... END inside the body closes with END too.
        assert_eq!(
            ends(
                "CREATE FUNCTION f(x int) RETURNS int BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END; END; END;"
            ),
            [false, true, true]
        );
    }

    #[test]
    fn other_statements_end_at_every_semicolon() {
        assert_eq!(ends("BEGIN; SELECT 1; END;"), [true, true, true]);
        assert_eq!(ends("CREATE TABLE t (begin int); SELECT CASE WHEN true THEN 1 END;"), [true, true]);
        // A function with a quoted body: its semicolons are inside the literal.
        assert_eq!(ends("CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END $$ LANGUAGE plpgsql;"), [true]);
        // A stray END never goes below zero; a function named begin opens nothing.
        assert_eq!(ends("CREATE FUNCTION f() END END; SELECT 1;"), [true, true]);
        assert_eq!(ends("CREATE OR REPLACE FUNCTION begin() RETURNS int RETURN 1; SELECT 1;"), [true, true]);
    }
}
