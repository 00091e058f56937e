//! PostgreSQL's tokens as far as session_sql needs them: words, quoted names, literals (strings,
//! E'' strings, dollar quotes) and the punctuation that splits statements and settings, with
//! comments (nested ones too) and white space skipped.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Word,
    QuotedName,
    Literal,
    Semicolon,
    Equals,
    Dot,
    Other,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Token {
    pub(super) kind: Kind,
    pub(super) start: usize,
    pub(super) end: usize,
}

impl Token {
    /// An unquoted word in lower case (keywords), else empty.
    pub(super) fn keyword(&self, text: &[u8]) -> String {
        if self.kind != Kind::Word {
            return String::new();
        }
        String::from_utf8_lossy(&text[self.start..self.end]).to_ascii_lowercase()
    }

    pub(super) fn is_name(&self) -> bool {
        matches!(self.kind, Kind::Word | Kind::QuotedName)
    }

    /// An identifier as PostgreSQL compares it: unquoted in lower case, quoted without its
    /// quotes (`"a"` and `a` are one savepoint).
    pub(super) fn ident(&self, text: &[u8]) -> String {
        let raw = String::from_utf8_lossy(&text[self.start..self.end]);
        match self.kind {
            Kind::QuotedName => {
                let inner = raw.strip_prefix('"').unwrap_or(&raw);
                inner.strip_suffix('"').unwrap_or(inner).replace("\"\"", "\"")
            }
            _ => raw.to_ascii_lowercase(),
        }
    }

    /// An identifier as PostgreSQL folds it: unquoted in lower case, quoted as written (with
    /// its quotes, so that replaying it means the same name).
    pub(super) fn name(&self, text: &[u8]) -> String {
        let raw = String::from_utf8_lossy(&text[self.start..self.end]);
        match self.kind {
            Kind::Word => raw.to_ascii_lowercase(),
            _ => raw.into_owned(),
        }
    }
}

/// What a backslash does in a `'...'` string: nothing with standard_conforming_strings on (the
/// default since PostgreSQL 9.1), it escapes the next byte with it off (as in every `E'...'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strings {
    /// standard_conforming_strings on.
    #[default]
    Standard,
    /// standard_conforming_strings off.
    Backslash,
}

pub(super) struct Lexer<'a> {
    pub(super) text: &'a [u8],
    pub(super) at: usize,
    backslash: bool,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(text: &'a [u8], strings: Strings) -> Self {
        Lexer { text, at: 0, backslash: strings == Strings::Backslash }
    }
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> u8 {
        self.text.get(self.at + ahead).copied().unwrap_or(0)
    }

    /// Skips white space and comments; returns where the next token starts.
    pub(super) fn skip_blanks(&mut self) -> usize {
        loop {
            match self.peek(0) {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => self.at += 1,
                // To the end of the line, which a carriage return ends too (as PostgreSQL's lexer).
                b'-' if self.peek(1) == b'-' => {
                    while self.at < self.text.len() && !matches!(self.text[self.at], b'\n' | b'\r') {
                        self.at += 1;
                    }
                }
                b'/' if self.peek(1) == b'*' => {
                    self.at += 2;
                    let mut depth = 1;
                    while self.at < self.text.len() && depth > 0 {
                        if self.peek(0) == b'/' && self.peek(1) == b'*' {
                            depth += 1;
                            self.at += 2;
                        } else if self.peek(0) == b'*' && self.peek(1) == b'/' {
                            depth -= 1;
                            self.at += 2;
                        } else {
                            self.at += 1;
                        }
                    }
                }
                _ => return self.at,
            }
        }
    }

    /// Moves past a quoted run that started at `self.at` with `quote`; `backslash` for E''.
    fn quoted(&mut self, quote: u8, backslash: bool) {
        self.at += 1;
        while self.at < self.text.len() {
            let c = self.text[self.at];
            if backslash && c == b'\\' {
                // A backslash as the last byte escapes nothing: stop at the end.
                self.at = (self.at + 2).min(self.text.len());
                continue;
            }
            self.at += 1;
            if c == quote {
                if self.peek(0) == quote {
                    self.at += 1;
                    continue;
                }
                return;
            }
        }
    }

    /// `$tag$ ... $tag$` starting at `self.at`; false when this `$` does not open one.
    fn dollar_quoted(&mut self) -> bool {
        let rest = &self.text[self.at + 1..];
        let Some(close) = rest.iter().position(|&c| c == b'$') else { return false };
        let tag = &rest[..close];
        if !tag.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c >= 0x80)
            || tag.first().is_some_and(u8::is_ascii_digit)
        {
            return false;
        }
        let delim_len = tag.len() + 2;
        let delim = &self.text[self.at..self.at + delim_len];
        let body_start = self.at + delim_len;
        match self.text[body_start..].windows(delim_len).position(|w| w == delim) {
            Some(p) => self.at = body_start + p + delim_len,
            None => self.at = self.text.len(),
        }
        true
    }

    pub(super) fn next_token(&mut self) -> Option<Token> {
        let start = self.skip_blanks();
        let c = *self.text.get(self.at)?;
        let kind = match c {
            b';' => {
                self.at += 1;
                Kind::Semicolon
            }
            b'=' => {
                self.at += 1;
                Kind::Equals
            }
            b'.' => {
                self.at += 1;
                Kind::Dot
            }
            b'\'' => {
                self.quoted(b'\'', self.backslash);
                Kind::Literal
            }
            b'"' => {
                self.quoted(b'"', false);
                Kind::QuotedName
            }
            b'e' | b'E' if self.peek(1) == b'\'' => {
                self.at += 1;
                self.quoted(b'\'', true);
                Kind::Literal
            }
            b'$' if self.dollar_quoted() => Kind::Literal,
            c if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                while self.at < self.text.len() {
                    let c = self.text[self.at];
                    if !(c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80) {
                        break;
                    }
                    self.at += 1;
                }
                Kind::Word
            }
            _ => {
                self.at += 1;
                Kind::Other
            }
        };
        Some(Token { kind, start, end: self.at })
    }
}
