//! auth_ident_file: `map-name system-user database-user` lines that let an OS user (peer) or a
//! certificate name (cert) log in as a database user. As in PgBouncer, names are literal: no
//! regular expressions and no includes.

use std::path::Path;

use super::BadValue;

/// The parsed ident file.
#[derive(Debug, Clone, Default)]
pub struct IdentMap {
    /// (map, system user, database user); a database user of `None` is PgBouncer's unquoted
    /// `all`: any database user.
    entries: Vec<(String, String, Option<String>)>,
}

impl IdentMap {
    /// Reads `path`.
    ///
    /// # Errors
    /// Unreadable file, or a line without exactly three fields (`file:line: reason`).
    pub fn load(path: &Path) -> Result<Self, BadValue> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BadValue(format!("could not open ident config file {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses ident file text; `name` is used in error messages.
    ///
    /// # Errors
    /// A line without exactly three fields, or a regular expression.
    pub fn parse(text: &str, name: &str) -> Result<Self, BadValue> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("");
            let fields = super::hba::tokens(line);
            if fields.is_empty() {
                continue;
            }
            let at = format!("{name}:{}", i + 1);
            if fields.len() != 3 {
                return Err(BadValue(format!("{at}: expected \"map-name system-user database-user\"")));
            }
            if fields[1].text.starts_with('/') && !fields[1].quoted {
                return Err(BadValue(format!("{at}: regular expressions are not supported in ident maps")));
            }
            let [m, s, d] = [&fields[0], &fields[1], &fields[2]].map(|t| t.text.clone());
            let any = d == "all" && !fields[2].quoted;
            entries.push((m, s, (!any).then_some(d)));
        }
        Ok(Self { entries })
    }

    /// Whether map `map` lets `system_user` log in as `db_user`.
    pub fn allows(&self, map: &str, system_user: &str, db_user: &str) -> bool {
        self.entries.iter().any(|(m, s, d)| m == map && s == system_user && d.as_deref().is_none_or(|d| d == db_user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_literal_and_per_map() {
        let m = IdentMap::parse("# comment\nops root postgres\nops alice app # trailing\ncerts \"CN x\" app\n", "f")
            .unwrap();
        assert!(m.allows("ops", "root", "postgres"));
        assert!(!m.allows("ops", "root", "app"));
        assert!(m.allows("certs", "CN x", "app"));
        assert!(!m.allows("other", "root", "postgres"));
        let all = IdentMap::parse("m bouncer all\nm x \"all\"\n", "f").unwrap();
        assert!(all.allows("m", "bouncer", "anyone"), "unquoted all: any database user");
        assert!(!all.allows("m", "x", "anyone") && all.allows("m", "x", "all"), "quoted \"all\" is a name");
        assert_eq!(
            IdentMap::parse("ops root\n", "f").unwrap_err().to_string(),
            "f:1: expected \"map-name system-user database-user\""
        );
        assert!(IdentMap::parse("ops /^(.*)$ \\1\n", "f").is_err());
    }
}
