//! pgbouncer.ini as typed values: `[pgbouncer]` settings, `[databases]`, `[users]`, `[peers]`,
//! and the auth_file. Loading is a pure function of the files; the running pooler swaps whole
//! `Config` snapshots.

pub mod auth_file;
pub mod connstring;
mod database;
mod error;
mod general;
pub mod hba;
pub mod ident;
pub mod ini;
pub mod params;
pub mod value;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use auth_file::{AuthFile, StoredSecret};

/// The console's virtual database (PgBouncer's admin database).
pub const ADMIN_DB: &str = "pgbouncer";
pub use database::{DatabaseConfig, LoadBalanceHosts, PeerConfig, UserConfig};
pub use error::{BadValue, ConfigError};
pub use general::{AuthType, General, PatroniSettings, PoolMode};

/// A whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The ini file it came from.
    pub path: PathBuf,
    /// `[pgbouncer]`.
    pub general: General,
    /// `[databases]` by name (`*` is the fallback).
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// `[users]` by name.
    pub users: BTreeMap<String, UserConfig>,
    /// `[peers]` by peer id.
    pub peers: BTreeMap<u32, PeerConfig>,
    /// auth_file contents (empty when none is set).
    pub auth_file: AuthFile,
    /// auth_hba_file, parsed (when set).
    pub hba: Option<std::sync::Arc<hba::Hba>>,
    /// auth_ident_file, parsed (empty when not set).
    pub ident: std::sync::Arc<ident::IdentMap>,
    /// TLS towards clients (client_tls_sslmode above disable).
    pub client_tls: Option<crate::tls::ClientTls>,
    /// TLS towards servers (server_tls_sslmode above disable).
    pub server_tls: Option<crate::tls::ServerTls>,
    /// Effective text value of every known `[pgbouncer]` parameter, as given.
    pub raw: BTreeMap<&'static str, String>,
    /// The typed parameters' values as SHOW CONFIG prints them (what was parsed, not what was
    /// written); the others print as in `raw`.
    pub shown: general::Shown,
    /// Warnings to log after loading (TLS settings rustls cannot honour, skipped HBA lines).
    pub warnings: Vec<String>,
    /// Errors PgBouncer logs and starts (or reloads) anyway, to log at ERROR after loading: an
    /// unreadable auth_file or auth_hba_file, a broken auth_file line.
    pub errors: Vec<String>,
    /// The auth_file could not be read: `auth_file` is empty, and RELOAD keeps the users in
    /// force instead, as PgBouncer does.
    pub auth_file_unread: bool,
    /// Why the TLS settings could not be applied (PgBouncer's `TLS setup failed: REASON`).
    /// `client_tls` and `server_tls` are then `None`: RELOAD and SET keep the TLS in force, as
    /// PgBouncer does, and start-up refuses ([`load`] returns the error).
    pub tls_error: Option<String>,
}

/// Loads and validates the ini at `path` and the files it names, for start-up.
///
/// # Errors
/// Unreadable files, syntax errors, and bad values, each with file, line and reason; TLS
/// settings that cannot be applied (`TLS setup failed: REASON`).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let c = load_for_reload(path)?;
    match &c.tls_error {
        Some(e) => {
            Err(ConfigError::Invalid { at: path.display().to_string(), reason: format!("TLS setup failed: {e}") })
        }
        None => Ok(c),
    }
}

/// As [`load`], but TLS settings that cannot be applied leave `tls_error` set instead of
/// failing: RELOAD applies the rest and keeps the TLS in force, as PgBouncer does.
///
/// # Errors
/// Unreadable files, syntax errors, and bad values, each with file, line and reason.
pub fn load_for_reload(path: &Path) -> Result<Config, ConfigError> {
    let entries = ini::read(path)?;
    build(path, entries)
}

/// A config read again for RELOAD, and what of the file it did not take.
#[derive(Debug)]
pub struct Reloaded {
    /// The new config; restart-only settings keep the values in force.
    pub config: Config,
    /// Restart-only settings whose value in the file differs from the one in force:
    /// (name, value in the file, value kept).
    pub needs_restart: Vec<(&'static str, String, String)>,
}

/// Reads `old`'s ini again for RELOAD, as PgBouncer does: restart-only settings (PgBouncer's
/// CF_NO_RELOAD, `reloadable: false` in [`params::PARAMS`]) keep the values of `old`, so a
/// changed or even a bad value there neither applies nor fails the reload; an auth_file that
/// cannot be read keeps `old`'s users. TLS settings that cannot be applied leave `tls_error`
/// set, as [`load_for_reload`].
///
/// # Errors
/// Unreadable ini, syntax errors, and bad values of reloadable settings.
pub fn reload(old: &Config) -> Result<Reloaded, ConfigError> {
    let entries = ini::read(&old.path)?;
    let mut needs_restart = Vec::new();
    let mut config = build_keeping(&old.path, entries, Some((&old.raw, &mut needs_restart)))?;
    if config.auth_file_unread {
        config.auth_file = old.auth_file.clone();
    }
    Ok(Reloaded { config, needs_restart })
}

/// Validates already-read entries into a `Config` and loads the auth_file it names.
///
/// # Errors
/// Bad values with their location.
pub fn build(path: &Path, entries: Vec<ini::Entry>) -> Result<Config, ConfigError> {
    build_keeping(path, entries, None)
}

/// The values in force and where to list restart-only settings the file changes.
type Keep<'a> = (&'a BTreeMap<&'static str, String>, &'a mut Vec<(&'static str, String, String)>);

/// As [`build`]; with `keep`, restart-only settings take the values in force (RELOAD).
fn build_keeping(path: &Path, entries: Vec<ini::Entry>, keep: Option<Keep<'_>>) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    let mut settings: BTreeMap<&'static str, (String, Option<ini::Location>)> =
        params::PARAMS.iter().map(|p| (p.name, (p.default.to_owned(), None))).collect();
    settings.insert("conffile", (path.display().to_string(), None));
    let mut databases = BTreeMap::new();
    let mut users = BTreeMap::new();
    let mut peers = BTreeMap::new();
    for e in entries {
        match e.section.as_str() {
            "pgbouncer" => match params::find(&e.key) {
                Some(p) => {
                    settings.insert(p.name, (e.value, Some(e.at)));
                }
                // As PgBouncer: a key it does not know (a typo, most often) fails the load.
                None => return Err(ConfigError::at(&e.at, format!("unknown parameter: pgbouncer/{}", e.key))),
            },
            "databases" => {
                if e.key == "pgbouncer" {
                    return Err(ConfigError::at(
                        &e.at,
                        "database name \"pgbouncer\" is reserved for the admin console",
                    ));
                }
                let db = DatabaseConfig::parse(&e.key, &e.value).map_err(|r| ConfigError::at(&e.at, r.0))?;
                databases.insert(e.key, db);
            }
            "users" => {
                let u = UserConfig::parse(&e.value).map_err(|r| ConfigError::at(&e.at, r.0))?;
                users.insert(e.key, u);
            }
            "peers" => {
                let id: u32 = e
                    .key
                    .parse()
                    .ok()
                    .filter(|id| (1..=16383).contains(id))
                    .ok_or_else(|| ConfigError::at(&e.at, "peer id must be 1..16383"))?;
                let peer = PeerConfig::parse(&e.value).map_err(|r| ConfigError::at(&e.at, r.0))?;
                peers.insert(id, peer);
            }
            other => return Err(ConfigError::at(&e.at, format!("unknown section: {other}"))),
        }
    }
    if let Some((in_force, changed)) = keep {
        for p in params::PARAMS.iter().filter(|p| !p.reloadable) {
            let Some(old) = in_force.get(p.name) else { continue };
            let (new, _) = settings.insert(p.name, (old.clone(), None)).unwrap_or_default();
            if new != *old {
                changed.push((p.name, new, old.clone()));
            }
        }
    }
    let (general, shown) = General::from_settings(&settings)?;
    let (auth_file, auth_file_unread) = match &general.auth_file {
        Some(f) => read_auth_file(&resolve(path, f), &mut errors),
        None => (AuthFile::default(), false),
    };
    let files = Files::load(path, &general, &settings)?;
    warnings.extend(files.notes);
    errors.extend(files.errors);
    let raw = settings.into_iter().map(|(k, (v, _))| (k, v)).collect();
    Ok(Config {
        path: path.to_path_buf(),
        general,
        databases,
        users,
        peers,
        auth_file,
        hba: files.hba,
        ident: files.ident,
        client_tls: files.client_tls,
        server_tls: files.server_tls,
        raw,
        shown,
        warnings,
        errors,
        auth_file_unread,
        tls_error: files.tls_error,
    })
}

/// Reads the auth_file as PgBouncer does: a file that cannot be read is an error logged with
/// no users (true: RELOAD keeps the users in force); a broken line is an error logged, and
/// the users above it are kept.
fn read_auth_file(path: &Path, errors: &mut Vec<String>) -> (AuthFile, bool) {
    // Bytes, not UTF-8: a file with another encoding loads (its odd bytes replaced), as
    // PgBouncer reads it, rather than counting as unreadable and keeping the old users.
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            errors.push(format!("could not open auth_file {}: {e}", path.display()));
            return (AuthFile::default(), true);
        }
    };
    match auth_file::parse(&text) {
        Ok(users) => (users, false),
        Err((line, reason)) => {
            errors.push(format!("broken auth file {}:{line}: {reason}", path.display()));
            let above: Vec<&str> = text.lines().take(line.saturating_sub(1)).collect();
            (auth_file::parse(&above.join("\n")).unwrap_or_default(), false)
        }
    }
}

/// What the settings name besides the auth_file: HBA and ident files, keys and certificates.
struct Files {
    hba: Option<std::sync::Arc<hba::Hba>>,
    ident: std::sync::Arc<ident::IdentMap>,
    client_tls: Option<crate::tls::ClientTls>,
    server_tls: Option<crate::tls::ServerTls>,
    /// TLS warnings and skipped HBA lines.
    notes: Vec<String>,
    /// An HBA file that cannot be read.
    errors: Vec<String>,
    tls_error: Option<String>,
}

impl Files {
    /// Loads them; an error names the parameter's line and the reason.
    fn load(path: &Path, g: &General, settings: &Settings) -> Result<Self, ConfigError> {
        let fail = |key: &str, reason: String| {
            let at = match settings.get(key).and_then(|(_, at)| at.as_ref()) {
                Some(l) => l.to_string(),
                None => path.display().to_string(),
            };
            ConfigError::Invalid { at, reason }
        };
        let mut notes = Vec::new();
        let mut errors = Vec::new();
        // As PgBouncer: lines it cannot use are skipped, and a file it cannot read leaves no
        // rules, so every login is rejected (fail closed) while the pooler starts or reloads.
        let hba = match (&g.auth_hba_file, g.auth_type) {
            (Some(f), _) => {
                Some(std::sync::Arc::new(hba::Hba::load(&resolve(path, f), &mut notes).unwrap_or_else(|e| {
                    errors.push(e.0);
                    hba::Hba::default()
                })))
            }
            (None, AuthType::Hba) => return Err(fail("auth_type", "auth_type = hba needs auth_hba_file".into())),
            (None, _) => None,
        };
        let ident = match &g.auth_ident_file {
            // As PgBouncer, a file that cannot be read or used is an error logged, not a stop:
            // with no map, every login a `map=` line matches is refused (fail closed).
            Some(f) => ident::IdentMap::load(&resolve(path, f)).unwrap_or_else(|e| {
                errors.push(e.0);
                ident::IdentMap::default()
            }),
            None => ident::IdentMap::default(),
        };
        // As PgBouncer (sbuf_tls_setup): every client must send a certificate the CA signed.
        if g.auth_type == AuthType::Cert && g.client_tls_sslmode != crate::tls::SslMode::VerifyFull {
            return Err(fail("auth_type", "auth_type=cert requires client_tls_sslmode=verify-full".into()));
        }
        let file = |f: &str| resolve(path, Path::new(f));
        // Both sides or neither, as PgBouncer's sbuf_tls_setup.
        let tls = crate::tls::ServerTls::load(&g.server_tls_settings(), file, &mut notes).and_then(|server| {
            crate::tls::ClientTls::load(&g.client_tls_settings(), file, &mut notes).map(|client| (client, server))
        });
        let (client_tls, server_tls, tls_error) = match tls {
            Ok((c, s)) => (c, s, None),
            Err(e) => (None, None, Some(e.to_string())),
        };
        Ok(Files { hba, ident: std::sync::Arc::new(ident), client_tls, server_tls, notes, errors, tls_error })
    }
}

type Settings = BTreeMap<&'static str, (String, Option<ini::Location>)>;

/// Relative file names in the ini are taken from the working directory, as PgBouncer does, or
/// beside the ini when they are not found there.
fn resolve(ini: &Path, f: &Path) -> PathBuf {
    if f.is_absolute() || f.exists() {
        return f.to_path_buf();
    }
    ini.parent().map(|d| d.join(f)).unwrap_or_else(|| f.to_path_buf())
}

impl Config {
    /// The max_db_client_connections in force for a database whose entry says `own` (SHOW
    /// DATABASES `max_client_connections`): a positive value of its own, else the global one
    /// (PgBouncer's `<= 0`: unset).
    pub fn db_client_max(&self, own: Option<u32>) -> u32 {
        own.filter(|n| *n > 0).unwrap_or(self.general.max_db_client_connections)
    }

    /// The max_user_client_connections in force for `user` (SHOW USERS), as above.
    pub fn user_client_max(&self, user: &str) -> u32 {
        let own = self.users.get(user).and_then(|u| u.max_user_client_connections);
        own.filter(|n| *n > 0).unwrap_or(self.general.max_user_client_connections)
    }

    /// This config with one `[pgbouncer]` parameter changed (console SET).
    ///
    /// # Errors
    /// Unknown parameter, one that needs a restart, or a bad value.
    pub fn with_setting(&self, key: &str, value: &str) -> Result<Config, BadValue> {
        let p = params::find(key).ok_or_else(|| BadValue(format!("unknown parameter: {key}")))?;
        if !p.reloadable {
            return Err(BadValue(format!("{} cannot be changed while running", p.name)));
        }
        let mut settings: BTreeMap<&'static str, (String, Option<ini::Location>)> =
            self.raw.iter().map(|(k, v)| (*k, (v.clone(), None))).collect();
        settings.insert(p.name, (value.to_owned(), None));
        let (general, shown) = General::from_settings(&settings).map_err(|e| match e {
            ConfigError::Invalid { reason, .. } => BadValue(reason),
            other => BadValue(other.to_string()),
        })?;
        // TLS and HBA follow the settings: SET client_tls_sslmode = require must take effect.
        let files = Files::load(&self.path, &general, &settings).map_err(|e| BadValue(e.to_string()))?;
        let mut next = self.clone();
        next.general = general;
        next.shown = shown;
        next.hba = files.hba;
        next.ident = files.ident;
        next.client_tls = files.client_tls;
        next.server_tls = files.server_tls;
        next.warnings = files.notes;
        next.errors = files.errors;
        next.tls_error = files.tls_error;
        next.raw.insert(p.name, value.to_owned());
        Ok(next)
    }

    /// The database entry for a client's database name: its own, else the `*` fallback with
    /// `dbname` defaulting to the requested name.
    pub fn database(&self, name: &str) -> Option<DatabaseConfig> {
        if let Some(db) = self.databases.get(name) {
            return Some(db.clone());
        }
        // PgBouncer keeps a database's name in 64 bytes with its NUL: a longer one cannot be
        // made from `*` (PostgreSQL would cut it and connect to another database).
        if name.len() >= 64 {
            return None;
        }
        let mut db = self.databases.get("*")?.clone();
        db.name = name.to_owned();
        db.auto = true;
        Some(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        build(Path::new("test.ini"), ini::parse_text(text, Path::new("test.ini"))?)
    }

    #[test]
    fn defaults_match_pgbouncer() {
        let c = load_text("[pgbouncer]\n").unwrap();
        assert_eq!(c.general.listen_port, 6432);
        assert_eq!(c.general.pool_mode, PoolMode::Session);
        assert_eq!(c.general.default_pool_size, 20);
        assert_eq!(c.general.max_client_conn, 100);
        assert_eq!(c.general.auth_type, AuthType::Md5);
        assert_eq!(c.general.server_reset_query, "DISCARD ALL");
        assert_eq!(c.general.query_wait_timeout.as_secs(), 120);
        assert_eq!(c.raw["server_lifetime"], "3600");
        assert_eq!(c.raw.len(), params::PARAMS.len());
        assert_eq!(c.general.unix_socket_mode, 0o777);
    }

    #[test]
    fn integers_switches_and_whole_second_times_read_as_pgbouncer_reads_them() {
        let c = load_text(
            "[pgbouncer]\nunix_socket_mode = 0700\nlog_stats = 2\nlog_connections = off\nstats_period = 010\n",
        )
        .unwrap();
        assert_eq!(c.general.unix_socket_mode, 0o700);
        assert!(c.general.log_stats && !c.general.log_connections);
        assert_eq!(c.general.stats_period.as_secs(), 8, "an integer, read as strtol reads it");
        assert_eq!((c.shown["log_stats"].as_str(), c.shown["log_connections"].as_str()), ("2", "0"));
        assert_eq!(c.shown["unix_socket_mode"], "448");
        assert!(load_text("[pgbouncer]\nstats_period = 1.5\n").is_err(), "an integer in PgBouncer");
    }

    #[test]
    fn bad_values_name_file_line_and_reason() {
        let err = load_text("[pgbouncer]\nlisten_port = 6432\npool_mode = sometimes\n").unwrap_err();
        assert_eq!(err.to_string(), "test.ini:3: invalid pool_mode: \"sometimes\" (session, transaction, statement)");
        let err = load_text("[pgbouncer]\ndefault_pool_size = lots\n").unwrap_err();
        assert!(err.to_string().starts_with("test.ini:2: default_pool_size: invalid integer"), "{err}");
        // Read though unused, as PgBouncer reads them.
        let err = load_text("[pgbouncer]\nsbuf_loopcnt = abc\n").unwrap_err();
        assert!(err.to_string().starts_with("test.ini:2: sbuf_loopcnt: invalid integer"), "{err}");
        let err = load_text("[pgbouncer]\ndns_max_ttl = soon\n").unwrap_err();
        assert!(err.to_string().starts_with("test.ini:2: dns_max_ttl: invalid time"), "{err}");
        let err = load_text("[databases]\napp = host=/tmp bogus=1\n").unwrap_err();
        assert!(err.to_string().contains("test.ini:2: unknown database parameter \"bogus\""), "{err}");
    }

    #[test]
    fn unknown_keys_and_sections_fail_the_load_as_in_pgbouncer() {
        let err = load_text("[pgbouncer]\nno_such_thing = 1\n").unwrap_err();
        assert_eq!(err.to_string(), "test.ini:2: unknown parameter: pgbouncer/no_such_thing");
        let err = load_text("[pgbouncer]\nlisten_port = 6432\n[extras]\nx = 1\n").unwrap_err();
        assert_eq!(err.to_string(), "test.ini:4: unknown section: extras");
    }

    #[test]
    fn a_name_too_long_for_pgbouncer_is_no_database_even_with_a_star() {
        let c = load_text("[databases]\n* = host=/tmp\n").unwrap();
        assert!(c.database(&"d".repeat(63)).is_some());
        assert!(c.database(&"d".repeat(64)).is_none());
    }

    #[test]
    fn star_database_falls_back() {
        let c = load_text("[databases]\napp = dbname=real host=127.0.0.1 port=5433 pool_size=5\n* = host=/run/pg\n")
            .unwrap();
        let app = c.database("app").unwrap();
        assert_eq!((app.target_dbname(), app.port, app.pool_size), ("real", 5433, Some(5)));
        let other = c.database("other").unwrap();
        assert_eq!((other.target_dbname(), other.hosts.as_slice()), ("other", &["/run/pg".to_owned()][..]));
        assert!(load_text("[databases]\napp=\n").unwrap().database("nope").is_none());
    }

    #[test]
    fn set_of_a_tls_setting_rebuilds_tls() {
        let c = load_text("[pgbouncer]\n").unwrap();
        assert!(c.client_tls.is_none() && c.server_tls.is_some() && c.tls_error.is_none());
        // Accepted as PgBouncer's SET accepts it; the TLS error says why it is not applied.
        let bad = c.with_setting("client_tls_sslmode", "require").unwrap();
        assert!(bad.tls_error.as_deref().unwrap().contains("client_tls_key_file"), "{:?}", bad.tls_error);
        let off = c.with_setting("server_tls_sslmode", "disable").unwrap();
        assert!(off.server_tls.is_none() && off.tls_error.is_none());
        // A protocol rustls cannot speak is a warning; no TLS version left is one more.
        let old = c.with_setting("server_tls_protocols", "tlsv1.0").unwrap();
        assert!(old.tls_error.is_none() && old.server_tls.is_some());
        assert!(old.warnings.iter().any(|w| w.contains("tlsv1.0")), "{:?}", old.warnings);
        // PgBouncer refuses unknown protocol words.
        let e = c.with_setting("server_tls_protocols", "sslv3").unwrap().tls_error.unwrap();
        assert!(e.starts_with("invalid server_tls_protocols: sslv3"), "{e}");
        // verify-full towards servers without a CA file uses the system trust store.
        assert!(c.with_setting("server_tls_sslmode", "verify-full").unwrap().tls_error.is_none());
    }

    #[test]
    fn hba_needs_its_file_and_cert_needs_tls() {
        let e = load_text("[pgbouncer]\nauth_type = hba\n").unwrap_err().to_string();
        assert_eq!(e, "test.ini:2: auth_type = hba needs auth_hba_file");
        let e = load_text("[pgbouncer]\nauth_type = cert\n").unwrap_err().to_string();
        assert!(e.contains("client_tls_sslmode=verify-full"), "{e}");
        let e = load_text("[pgbouncer]\nauth_type = cert\nclient_tls_sslmode = verify-ca\n").unwrap_err().to_string();
        assert!(e.contains("client_tls_sslmode=verify-full"), "{e}");
    }

    #[test]
    fn unusable_hba_lines_are_skipped_and_a_missing_hba_file_rejects_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let hba = dir.path().join("hba.conf");
        std::fs::write(&hba, "host all all samenet trust\nlocal all all trust\n").unwrap();
        let ini = format!("[pgbouncer]\nauth_type = hba\nauth_hba_file = {}\n", hba.display());
        let c = load_text(&ini).unwrap();
        let want = format!("{}:1: could not parse hba config line 1: ", hba.display());
        assert!(c.warnings.iter().any(|w| w.starts_with(&want)), "{:?}", c.warnings);
        let rules = c.hba.as_ref().unwrap();
        assert!(rules.find(hba::ConnKind::Local, "d", "u", false).is_some());
        std::fs::remove_file(&hba).unwrap();
        let c = load_text(&ini).unwrap();
        assert!(c.errors.iter().any(|e| e.starts_with("could not open hba config file")), "{:?}", c.errors);
        assert!(c.hba.as_ref().unwrap().find(hba::ConnKind::Local, "d", "u", false).is_none());
    }

    #[test]
    fn auth_file_problems_are_logged_and_the_users_above_kept() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("userlist.txt");
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(&ini, format!("[pgbouncer]\nauth_file = {}\n", users.display())).unwrap();
        let c = load(&ini).unwrap();
        assert!(c.auth_file.is_empty() && c.auth_file_unread);
        assert!(c.errors[0].starts_with(&format!("could not open auth_file {}: ", users.display())), "{:?}", c.errors);
        std::fs::write(&users, "\"alice\" \"a\"\ngarbage\n\"bob\" \"b\"\n").unwrap();
        let c = load(&ini).unwrap();
        assert_eq!(c.errors, [format!("broken auth file {}:2: expected \"user\" \"password\"", users.display())]);
        assert!(c.auth_file.contains_key("alice") && !c.auth_file.contains_key("bob"));
        // Not UTF-8 (a Latin-1 name): it loads, odd bytes replaced, as PgBouncer reads bytes.
        std::fs::write(&users, b"\"alice\" \"a\"\n\"caf\xe9\" \"c\"\n").unwrap();
        let latin = load(&ini).unwrap();
        assert!(latin.errors.is_empty() && latin.auth_file.contains_key("alice"), "{:?}", latin.errors);
        // RELOAD: an auth_file that went missing keeps the users in force, as PgBouncer.
        std::fs::remove_file(&users).unwrap();
        let r = reload(&c).unwrap().config;
        assert!(r.auth_file.contains_key("alice") && r.errors[0].starts_with("could not open auth_file"));
    }

    #[test]
    fn a_missing_ident_file_is_an_error_logged_and_maps_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let ident = dir.path().join("ident.conf");
        let c = load_text(&format!("[pgbouncer]\nauth_ident_file = {}\n", ident.display())).unwrap();
        let want = format!("could not open ident config file {}: ", ident.display());
        assert!(c.errors.iter().any(|e| e.starts_with(&want)), "{:?}", c.errors);
        assert!(!c.ident.allows("ops", "root", "app"), "no map: nobody is mapped");
    }

    #[test]
    fn reload_keeps_restart_only_settings_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let ini = dir.path().join("pgbouncer.ini");
        std::fs::write(&ini, "[pgbouncer]\nlisten_port = 6432\nunix_socket_dir = /tmp\n").unwrap();
        let c = load(&ini).unwrap();
        std::fs::write(
            &ini,
            "[pgbouncer]\nlisten_port = abc\nunix_socket_dir = /run\ndisable_pqexec = 1\npool_mode = transaction\n",
        )
        .unwrap();
        let Reloaded { config: r, needs_restart } = reload(&c).unwrap();
        assert_eq!((r.raw["listen_port"].as_str(), r.general.listen_port), ("6432", 6432));
        assert_eq!(r.general.unix_socket_dir, "/tmp");
        assert!(!r.general.disable_pqexec && r.raw["disable_pqexec"] == "0");
        assert_eq!(r.general.pool_mode, PoolMode::Transaction);
        let names: Vec<_> = needs_restart.iter().map(|(n, new, old)| (*n, new.as_str(), old.as_str())).collect();
        assert_eq!(
            names,
            [("disable_pqexec", "1", "0"), ("listen_port", "abc", "6432"), ("unix_socket_dir", "/run", "/tmp")]
        );
        // A bad value of a reloadable setting still fails the reload.
        std::fs::write(&ini, "[pgbouncer]\npool_mode = bogus\n").unwrap();
        assert!(reload(&c).is_err());
    }
}
