//! userlist.txt: `"user" "secret"` per line. A secret is clear text, `md5<hex>` or a
//! `SCRAM-SHA-256$...` secret; the same file supplies passwords for logging in to servers.

use foldhash::HashMap;
use std::path::Path;

use pgmux_protocol::{md5, scram};

use super::ConfigError;

/// A stored password in one of PostgreSQL's three forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredSecret {
    /// The password itself: works for every method on both sides.
    Plain(String),
    /// `md5` + hex(md5(password + user)): md5 on both sides.
    Md5(String),
    /// A SCRAM secret: SCRAM from clients, and SCRAM pass-through to servers.
    Scram(scram::Secret),
}

impl StoredSecret {
    /// The secret as auth_file spells it (what [`StoredSecret::parse`] reads back).
    pub fn to_text(&self) -> String {
        match self {
            StoredSecret::Plain(s) | StoredSecret::Md5(s) => s.clone(),
            StoredSecret::Scram(s) => s.to_text(),
        }
    }

    /// Classifies a secret string as PostgreSQL does.
    pub fn parse(s: &str) -> Self {
        if md5::is_secret(s) {
            return StoredSecret::Md5(s.to_owned());
        }
        if s.starts_with("SCRAM-SHA-256$") {
            if let Some(secret) = scram::Secret::parse(s) {
                return StoredSecret::Scram(secret);
            }
        }
        StoredSecret::Plain(s.to_owned())
    }
}

/// Longest password accepted, as PgBouncer master.
pub const MAX_PASSWORD_LEN: usize = 65_535;

/// user name -> secret.
pub type AuthFile = HashMap<String, StoredSecret>;

/// Reads an auth_file.
///
/// # Errors
/// Unreadable file, or a line whose fields are not double-quoted.
pub fn load(path: &Path) -> Result<AuthFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        at: None,
        source,
    })?;
    parse(&text).map_err(|(line, reason)| ConfigError::Invalid { at: format!("{}:{line}", path.display()), reason })
}

/// Parses auth_file text; errors are (line, reason).
///
/// # Errors
/// A non-comment line without two double-quoted fields.
pub fn parse(text: &str) -> Result<AuthFile, (usize, String)> {
    let mut out = HashMap::default();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with(';') || t.starts_with('#') {
            continue;
        }
        let mut rest = t;
        let user = quoted(&mut rest).ok_or((i + 1, "expected \"user\" \"password\"".to_owned()))?;
        rest = rest.trim_start();
        let pass = quoted(&mut rest).ok_or((i + 1, "expected \"user\" \"password\"".to_owned()))?;
        if pass.len() > MAX_PASSWORD_LEN {
            return Err((i + 1, "password too long".to_owned()));
        }
        out.insert(user, StoredSecret::parse(&pass));
    }
    Ok(out)
}

/// Reads one `"..."` field where `""` is a literal quote.
fn quoted(s: &mut &str) -> Option<String> {
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut it = body.char_indices();
    while let Some((i, c)) = it.next() {
        if c == '"' {
            if body[i + 1..].starts_with('"') {
                it.next();
                out.push('"');
                continue;
            }
            *s = &body[i + 1..];
            return Some(out);
        }
        out.push(c);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_three_secret_forms() {
        let scram = scram::Secret::from_password(b"pw", b"salt", 4096).to_text();
        let md5 = md5::secret("bob", b"pw");
        let text = format!(
            "; comment\n\"alice\" \"plain pw\" extra\n\"bob\" \"{md5}\"\n\"carol\" \"{scram}\"\n\"q\"\"uote\" \"x\"\"y\"\n"
        );
        let f = parse(&text).unwrap();
        assert_eq!(f["alice"], StoredSecret::Plain("plain pw".into()));
        assert!(matches!(f["bob"], StoredSecret::Md5(_)));
        assert!(matches!(f["carol"], StoredSecret::Scram(_)));
        assert_eq!(f["q\"uote"], StoredSecret::Plain("x\"y".into()));
    }

    #[test]
    fn bad_lines_name_the_line() {
        assert_eq!(parse("\"a\" \"b\"\nalice pw\n").unwrap_err().0, 2);
        assert_eq!(parse("\"a\" \"unterminated\n").unwrap_err().0, 1);
    }
}
