//! Reads pgbouncer.ini syntax into located entries: `[section]`, `key = value`, `;`/`#` comment
//! lines, quoted values, and `%include FILE` (nested, depth-limited). No meaning is given here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ConfigError;

/// Where a line came from, for error messages: `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file (the included one for included lines).
    pub file: Arc<PathBuf>,
    /// 1-based line number.
    pub line: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One `key = value` line with its section.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Section name, lower-cased (`pgbouncer`, `databases`, `users`, `peers`).
    pub section: String,
    /// Key as written.
    pub key: String,
    /// Value with quotes removed.
    pub value: String,
    /// Where it was written.
    pub at: Location,
}

const MAX_INCLUDE_DEPTH: usize = 10;

/// Reads `path` and everything it includes.
///
/// # Errors
/// Unreadable files, include loops or depth, and lines that are not a section, a comment, an
/// include or `key = value`.
pub fn read(path: &Path) -> Result<Vec<Entry>, ConfigError> {
    let mut out = Vec::new();
    let mut section = String::new();
    read_into(path, None, 0, &mut section, &mut out)?;
    Ok(out)
}

/// Parses ini text already in memory (tests, and `-` for stdin some day).
///
/// # Errors
/// As [`read`].
pub fn parse_text(text: &str, file: &Path) -> Result<Vec<Entry>, ConfigError> {
    let mut out = Vec::new();
    let mut section = String::new();
    parse_lines(text, &Arc::new(file.to_path_buf()), 0, &mut section, &mut out)?;
    Ok(out)
}

fn read_into(
    path: &Path,
    from: Option<&Location>,
    depth: usize,
    section: &mut String,
    out: &mut Vec<Entry>,
) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        at: from.cloned(),
        source,
    })?;
    parse_lines(&text, &Arc::new(path.to_path_buf()), depth, section, out)
}

fn parse_lines(
    text: &str,
    file: &Arc<PathBuf>,
    depth: usize,
    section: &mut String,
    out: &mut Vec<Entry>,
) -> Result<(), ConfigError> {
    for (i, raw) in text.lines().enumerate() {
        let at = Location { file: file.clone(), line: i + 1 };
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("%include") {
            let target = unquote(rest.trim(), &at)?;
            if target.is_empty() || !rest.starts_with(char::is_whitespace) {
                return Err(ConfigError::at(&at, "%include needs a file name"));
            }
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(ConfigError::at(&at, "%include nested too deeply (loop?)"));
            }
            let path = resolve_include(&target, file);
            read_into(&path, Some(&at), depth + 1, section, out)?;
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name =
                name.strip_suffix(']').ok_or_else(|| ConfigError::at(&at, "section header without closing ']'"))?;
            *section = name.trim().to_ascii_lowercase();
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| ConfigError::at(&at, "expected 'key = value'"))?;
        let key = unquote(key.trim(), &at)?;
        if key.is_empty() {
            return Err(ConfigError::at(&at, "empty key"));
        }
        if section.is_empty() {
            return Err(ConfigError::at(&at, "key outside of any section"));
        }
        let value = unquote(value.trim(), &at)?;
        out.push(Entry { section: section.clone(), key, value, at });
    }
    Ok(())
}

/// PgBouncer resolves includes from the working directory; a relative path that is not there is
/// also tried beside the including file, which is what people mean when they move configs.
fn resolve_include(target: &str, from: &Path) -> PathBuf {
    let p = PathBuf::from(target);
    if p.is_absolute() || p.exists() {
        return p;
    }
    match from.parent() {
        Some(dir) => dir.join(p),
        None => p,
    }
}

/// Removes one level of '...' or "..." quoting, where a doubled quote stands for itself.
fn unquote(s: &str, at: &Location) -> Result<String, ConfigError> {
    let Some(q) = s.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return Ok(s.to_owned());
    };
    let mut out = String::new();
    let mut chars = s[1..].chars().peekable();
    while let Some(c) = chars.next() {
        if c == q {
            if chars.peek() == Some(&q) {
                chars.next();
                out.push(q);
                continue;
            }
            if chars.next().is_some() {
                return Err(ConfigError::at(at, "text after closing quote"));
            }
            return Ok(out);
        }
        out.push(c);
    }
    Err(ConfigError::at(at, "unterminated quoted value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sections_comments_and_quotes() {
        let text = "; comment\n[PgBouncer]\n# other\nlisten_port = 6433\nauth_query = 'SELECT ''x'''\n\n[databases]\n* = host=/tmp\n";
        let e = parse_text(text, Path::new("t.ini")).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].section.as_str(), e[0].key.as_str(), e[0].value.as_str()),
            ("pgbouncer", "listen_port", "6433")
        );
        assert_eq!(e[1].value, "SELECT 'x'");
        assert_eq!(e[2].at.line, 8);
        assert_eq!(e[2].value, "host=/tmp");
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = parse_text("[pgbouncer]\nnonsense\n", Path::new("a.ini")).unwrap_err();
        assert_eq!(err.to_string(), "a.ini:2: expected 'key = value'");
        let err = parse_text("x = 1\n", Path::new("a.ini")).unwrap_err();
        assert!(err.to_string().contains("outside of any section"));
        let err = parse_text("[a]\nk = 'open\n", Path::new("a.ini")).unwrap_err();
        assert!(err.to_string().contains("a.ini:2"));
    }

    #[test]
    fn includes_files_and_stops_loops() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("main.ini");
        let inc = dir.path().join("db.txt");
        std::fs::write(&main, format!("[databases]\n%include {}\n", inc.display())).unwrap();
        std::fs::write(&inc, "app = host=/tmp\n").unwrap();
        let e = read(&main).unwrap();
        assert_eq!(e[0].section, "databases");
        assert_eq!(e[0].at.file.as_path(), inc.as_path());
        std::fs::write(&inc, format!("%include {}\n", main.display())).unwrap();
        assert!(read(&main).unwrap_err().to_string().contains("nested too deeply"));
    }
}
