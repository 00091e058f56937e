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
        let mut line = raw.trim();
        // As PgBouncer's parser, what follows a section header's `]` is read as a line of its
        // own: `[pgbouncer] ; comment` is a header and a comment.
        while let Some(rest) = line.strip_prefix('[') {
            let (name, after) =
                rest.split_once(']').ok_or_else(|| ConfigError::at(&at, "section header without closing ']'"))?;
            *section = name.trim().to_ascii_lowercase();
            line = after.trim();
        }
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

/// The `logfile` a `[pgbouncer]` section names, read leniently from ini text that may not load
/// (so that a start-up error can still go to the log, as PgBouncer's does). Last one wins;
/// `%include`d files are not read.
pub fn find_logfile(text: &str) -> Option<String> {
    let mut section = String::new();
    let mut found = None;
    for raw in text.lines() {
        let mut line = raw.trim();
        while let Some((name, after)) = line.strip_prefix('[').and_then(|r| r.split_once(']')) {
            section = name.trim().to_ascii_lowercase();
            line = after.trim();
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        if section == "pgbouncer" && key.trim().eq_ignore_ascii_case("logfile") {
            let value = value.trim();
            let unquoted = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(value);
            found = Some(unquoted.to_owned()).filter(|v| !v.is_empty());
        }
    }
    found
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
    fn text_after_a_section_header_is_a_line_of_its_own() {
        let text = "[pgbouncer] ; comment\nlisten_port = 1\n[databases]   # other\n[users] alice = pool_mode=session\n";
        let e = parse_text(text, Path::new("t.ini")).unwrap();
        assert_eq!((e[0].section.as_str(), e[0].key.as_str()), ("pgbouncer", "listen_port"));
        assert_eq!((e[1].section.as_str(), e[1].key.as_str(), e[1].at.line), ("users", "alice", 4));
        let err = parse_text("[pgbouncer] junk\n", Path::new("t.ini")).unwrap_err();
        assert_eq!(err.to_string(), "t.ini:1: expected 'key = value'");
        assert!(parse_text("[pgbouncer ; x\n", Path::new("t.ini")).is_err());
    }

    #[test]
    fn finds_the_logfile_of_an_ini_that_does_not_load() {
        let text = "[databases]\nlogfile = no\n[pgbouncer]\npool_mode = bogus\n LogFile = '/var/log/p.log'\n[users]\n";
        assert_eq!(find_logfile(text).as_deref(), Some("/var/log/p.log"));
        assert_eq!(find_logfile("[pgbouncer]\nlogfile =\n"), None);
        assert_eq!(find_logfile("[pgbouncer] ; c\nlogfile = x.log\n").as_deref(), Some("x.log"));
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
