//! libpq-style `key=value key='quoted value'` strings, as used by `[databases]`, `[users]` and
//! `[peers]` entries. Quoting is PgBouncer's: `''` inside quotes is one quote, and a backslash
//! is an ordinary character.

use super::BadValue;

/// Splits a connection string into pairs, in order.
///
/// # Errors
/// A token without `=`, an unterminated quote, or text right after a closing quote (PgBouncer's
/// `syntax error in connection string`: `'a\'b'` is one).
pub fn parse(s: &str) -> Result<Vec<(String, String)>, BadValue> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(BadValue(format!("missing '=' after \"{key}\"")));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(BadValue(format!(
                            "syntax error in connection string: unterminated quoted value for \"{key}\""
                        )))
                    }
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        value.push('\'');
                    }
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(BadValue(format!(
                    "syntax error in connection string: text after the closing quote of \"{key}\""
                )));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key.to_ascii_lowercase(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_plain_and_quoted_values() {
        let p = parse("host=/tmp  dbname = app connect_query='SELECT ''x'', 1' port=5433").unwrap();
        assert_eq!(p[0], ("host".into(), "/tmp".into()));
        assert_eq!(p[1], ("dbname".into(), "app".into()));
        assert_eq!(p[2], ("connect_query".into(), "SELECT 'x', 1".into()));
        assert_eq!(p[3].1, "5433");
        assert!(parse("").unwrap().is_empty());
        assert!(parse("host").is_err());
        assert!(parse("q='open").is_err());
    }

    #[test]
    fn quotes_double_and_backslash_is_plain_as_in_pgbouncer() {
        assert_eq!(parse("password='a''b'").unwrap(), [("password".into(), "a'b".into())]);
        assert_eq!(parse("dbname='a\\b' port=1").unwrap()[0].1, "a\\b");
        assert_eq!(parse("password='it''s' host=x").unwrap()[1].1, "x");
        let e = parse("password='a\\'b'").unwrap_err().to_string();
        assert!(e.starts_with("syntax error in connection string"), "{e}");
    }
}
