//! `[pgbouncer]` as typed values. Names keep their pgbouncer.ini spelling; times become
//! `Duration`, choices become enums.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::ini::Location;
use super::{value, BadValue, ConfigError};
use crate::tls::SslMode;

/// When a server goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// When the client disconnects.
    Session,
    /// When a transaction ends.
    Transaction,
    /// After every statement; multi-statement transactions are refused.
    Statement,
}

impl PoolMode {
    /// Parses `session` / `transaction` / `statement`.
    pub fn parse(v: &str) -> Result<Self, BadValue> {
        match v.trim().to_ascii_lowercase().as_str() {
            "session" => Ok(PoolMode::Session),
            "transaction" => Ok(PoolMode::Transaction),
            "statement" => Ok(PoolMode::Statement),
            _ => Err(BadValue(format!("invalid pool_mode: \"{v}\" (session, transaction, statement)"))),
        }
    }

    /// The ini spelling (SHOW POOLS).
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// No check; the user must still be in auth_file.
    Trust,
    /// No check and the user name is ignored (databases need a forced user).
    Any,
    /// Clear-text password.
    Plain,
    /// md5, upgraded to SCRAM when the stored secret is SCRAM.
    Md5,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// Decided per connection by auth_hba_file.
    Hba,
    /// TLS client certificate whose common name is the user name.
    Cert,
    /// The OS user at the other end of the unix socket (HBA files only).
    Peer,
    /// Always refused (HBA files only).
    Reject,
}

impl AuthType {
    /// Parses auth_type (and, with `hba_only`, the methods only an HBA line may name).
    pub fn parse_method(v: &str, hba_only: bool) -> Result<Self, BadValue> {
        match v.trim().to_ascii_lowercase().as_str() {
            "peer" if hba_only => Ok(AuthType::Peer),
            "reject" if hba_only => Ok(AuthType::Reject),
            "password" if hba_only => Ok(AuthType::Plain),
            "hba" if hba_only => Err("method hba cannot be used inside an HBA file".into()),
            "any" if hba_only => Err("method any cannot be used inside an HBA file".into()),
            _ => Self::parse(v),
        }
    }

    fn parse(v: &str) -> Result<Self, BadValue> {
        match v.trim().to_ascii_lowercase().as_str() {
            "trust" => Ok(AuthType::Trust),
            "any" => Ok(AuthType::Any),
            "plain" => Ok(AuthType::Plain),
            "md5" => Ok(AuthType::Md5),
            "scram-sha-256" => Ok(AuthType::ScramSha256),
            "hba" => Ok(AuthType::Hba),
            "cert" => Ok(AuthType::Cert),
            "pam" | "ldap" => Err(BadValue(format!("auth_type {v} is not supported by this build"))),
            _ => Err(BadValue(format!("invalid auth_type: \"{v}\""))),
        }
    }
}

/// Typed `[pgbouncer]` settings that pgmux acts on.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct General {
    pub listen_addr: Vec<String>,
    pub listen_port: u16,
    pub listen_backlog: u32,
    pub so_reuseport: bool,
    /// This process's id among peered poolers (0: peering off); goes into every cancel key.
    pub peer_id: u16,
    pub unix_socket_dir: String,
    pub unix_socket_mode: u32,
    pub unix_socket_group: Option<String>,
    pub pidfile: Option<PathBuf>,
    pub logfile: Option<PathBuf>,
    pub user: Option<String>,
    pub pool_mode: PoolMode,
    pub max_client_conn: u32,
    pub default_pool_size: u32,
    pub min_pool_size: u32,
    pub reserve_pool_size: u32,
    pub reserve_pool_timeout: Duration,
    pub max_db_connections: u32,
    pub max_user_connections: u32,
    /// Clients per database; 0 = no limit (PgBouncer 1.24).
    pub max_db_client_connections: u32,
    /// Clients per login user; 0 = no limit (PgBouncer 1.24).
    pub max_user_client_connections: u32,
    pub server_round_robin: bool,
    pub auth_type: AuthType,
    pub auth_file: Option<PathBuf>,
    pub auth_hba_file: Option<PathBuf>,
    pub auth_ident_file: Option<PathBuf>,
    pub auth_user: Option<String>,
    pub auth_query: String,
    pub auth_dbname: Option<String>,
    pub client_tls_sslmode: SslMode,
    pub client_tls_key_file: Option<String>,
    pub client_tls_cert_file: Option<String>,
    pub client_tls_ca_file: Option<String>,
    pub client_tls_protocols: String,
    pub client_tls_ciphers: String,
    pub client_tls13_ciphers: String,
    pub client_tls_ecdhcurve: String,
    pub client_tls_dheparams: String,
    pub server_tls_sslmode: SslMode,
    pub server_tls_key_file: Option<String>,
    pub server_tls_cert_file: Option<String>,
    pub server_tls_ca_file: Option<String>,
    pub server_tls_protocols: String,
    pub server_tls_ciphers: String,
    pub server_tls13_ciphers: String,
    pub admin_users: Vec<String>,
    pub stats_users: Vec<String>,
    pub server_reset_query: String,
    pub server_reset_query_always: bool,
    pub server_check_delay: Duration,
    pub server_check_query: String,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub server_connect_timeout: Duration,
    pub server_login_retry: Duration,
    pub client_login_timeout: Duration,
    pub query_wait_timeout: Duration,
    pub query_timeout: Duration,
    pub client_idle_timeout: Duration,
    pub idle_transaction_timeout: Duration,
    pub transaction_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub autodb_idle_timeout: Duration,
    pub cancel_wait_timeout: Duration,
    pub suspend_timeout: Duration,
    pub ignore_startup_parameters: Vec<String>,
    pub track_extra_parameters: Vec<String>,
    pub application_name_add_host: bool,
    /// NOTICE sent with every client's welcome (empty: none).
    pub login_notify_message: String,
    /// A client queued longer than this gets one NOTICE per wait (0: never).
    pub query_wait_notify: Duration,
    /// RECONNECT / RELOAD close session-mode servers at once between queries.
    pub server_fast_close: bool,
    pub log_connections: bool,
    pub log_disconnections: bool,
    pub log_pooler_errors: bool,
    pub log_stats: bool,
    /// pgmux extension: `text` (PgBouncer's lines) or `json` (one object per line).
    pub log_json: bool,
    pub syslog: bool,
    pub syslog_ident: String,
    pub syslog_facility: String,
    pub verbose: u32,
    pub max_packet_size: u32,
    pub pkt_buf: u32,
    pub tcp_keepalive: bool,
    pub tcp_keepidle: u32,
    pub tcp_keepintvl: u32,
    pub tcp_keepcnt: u32,
    pub tcp_user_timeout: u32,
    pub scram_iterations: u32,
    pub disable_pqexec: bool,
    pub stats_period: Duration,
    pub max_prepared_statements: u32,
    /// pgmux extension: with max_prepared_statements above 0, the unnamed statement is served
    /// from the servers' caches of named statements (docs/CONFIG.md).
    pub cache_unnamed_statements: bool,
    /// pgmux extension: runtime threads (0 = automatic).
    pub worker_threads: u32,
    /// pgmux extension: busy mark of a worker thread, per cent of a core (0 = clients dealt to
    /// the threads in turn and never moved).
    pub worker_busy_percent: u32,
    /// pgmux extension: SET/RESET settings and SQL PREPARE statements follow a transaction-mode
    /// client from server to server.
    pub track_session_state: bool,
    /// pgmux extension: a transaction-mode client that makes state that cannot move keeps its
    /// server until it leaves.
    pub pin_session_state: bool,
    /// Metrics endpoint address (`*` for all).
    pub exporter_listen_addr: String,
    /// Metrics endpoint port; 0 disables it.
    pub exporter_port: u16,
    /// Which metric names /metrics serves.
    pub exporter_metrics: pgmux_exporter::MetricSet,
    /// HAProxy agent-check port (answers `up`, `drain`, `down`); 0 disables it.
    pub health_agent_port: u16,
    /// Role checks and the agent report a pool whose oldest waiting client has waited this
    /// long as exhausted (0: never).
    pub health_max_wait: Duration,
    /// Patroni integration (docs/HA.md); an empty url turns it off.
    pub patroni: PatroniSettings,
}

/// The `patroni_*` keys.
#[derive(Debug, Clone, Default)]
pub struct PatroniSettings {
    /// This node's Patroni REST API, `http://host:port`.
    pub url: String,
    /// Databases whose pools follow the leader (`*`: all).
    pub databases: Vec<String>,
    /// This node's member name; learned from the REST address when empty.
    pub member: Option<String>,
    /// How often `/cluster` is read.
    pub poll_interval: Duration,
    /// Bound on a switchover and on a hold for a leader change.
    pub switchover_timeout: Duration,
    /// How long SWITCHOVER waits for transactions in flight before it gives up.
    pub drain_timeout: Duration,
    /// etcd v3 endpoint (`http://host:port`) whose keys are watched; empty: poll only.
    pub etcd_url: String,
    /// Patroni's `namespace` (the DCS key prefix).
    pub namespace: String,
}

impl PatroniSettings {
    /// True when pools of `db` follow the leader.
    pub fn follows(&self, db: &str) -> bool {
        !self.url.is_empty() && self.databases.iter().any(|d| d == "*" || d == db)
    }
}

type Settings = BTreeMap<&'static str, (String, Option<Location>)>;

/// Typed settings' values as SHOW CONFIG prints them (PgBouncer prints what it parsed: `010`
/// as 8, `90.0` as 90, `on` as 1, `Session` as session); string settings are printed as given.
pub type Shown = BTreeMap<&'static str, String>;

struct Reader<'a> {
    settings: &'a Settings,
    shown: std::cell::RefCell<Shown>,
}

impl Reader<'_> {
    fn show(&self, k: &'static str, text: String) {
        self.shown.borrow_mut().insert(k, text);
    }

    fn raw(&self, k: &'static str) -> &str {
        &self.settings.get(k).expect("every parameter has a default").0
    }

    fn fail(&self, k: &'static str, reason: String) -> ConfigError {
        let at = match &self.settings[k].1 {
            Some(l) => l.to_string(),
            None => format!("default of {k}"),
        };
        ConfigError::Invalid { at, reason }
    }

    fn get<T>(&self, k: &'static str, f: impl FnOnce(&str) -> Result<T, BadValue>) -> Result<T, ConfigError> {
        f(self.raw(k)).map_err(|r| self.fail(k, r.0))
    }

    /// One of a fixed set of words, printed in lower case.
    fn choice<T>(&self, k: &'static str, f: impl FnOnce(&str) -> Result<T, BadValue>) -> Result<T, ConfigError> {
        let v = self.get(k, f)?;
        self.show(k, self.raw(k).trim().to_ascii_lowercase());
        Ok(v)
    }

    fn int(&self, k: &'static str, max: u64) -> Result<u32, ConfigError> {
        let n = self.get(k, |v| value::integer(v, max).map(|n| n as u32).map_err(|r| BadValue(format!("{k}: {r}"))))?;
        self.show(k, n.to_string());
        Ok(n)
    }

    fn secs(&self, k: &'static str) -> Result<Duration, ConfigError> {
        let d = self.get(k, |v| value::seconds(v).map_err(|r| BadValue(format!("{k}: {r}"))))?;
        self.show(k, value::seconds_shown(d));
        Ok(d)
    }

    /// A switch. PgBouncer's are integers (any but 0 is on, printed as given: `2`); the
    /// words (`on`, `yes`, `true`, ...) are pgmux's too, printed as 1 or 0.
    fn flag(&self, k: &'static str) -> Result<bool, ConfigError> {
        if let Ok(n) = value::integer(self.raw(k), u64::from(i32::MAX as u32)) {
            self.show(k, n.to_string());
            return Ok(n != 0);
        }
        let b = self.get(k, |v| value::boolean(v).map_err(|r| BadValue(format!("{k}: {r}"))))?;
        self.show(k, u8::from(b).to_string());
        Ok(b)
    }

    /// Whole seconds, as PgBouncer reads the few times it keeps in an integer.
    fn whole_secs(&self, k: &'static str) -> Result<Duration, ConfigError> {
        self.int(k, u64::from(u32::MAX)).map(|n| Duration::from_secs(n.into()))
    }

    /// An `http://host:port` base URL (no trailing slash), or empty.
    fn http_url(&self, k: &'static str) -> Result<String, ConfigError> {
        self.get(k, |v| {
            let v = v.trim().trim_end_matches('/');
            if v.is_empty() || v.starts_with("http://") {
                Ok(v.to_owned())
            } else {
                Err(BadValue(format!("invalid {k}: \"{v}\" (http://host:port)")))
            }
        })
    }

    fn opt(&self, k: &'static str) -> Option<String> {
        Some(self.raw(k).to_owned()).filter(|s| !s.is_empty())
    }
}

impl General {
    /// client_login_timeout, with 0 meaning no limit.
    pub fn login_timeout(&self) -> Duration {
        if self.client_login_timeout.is_zero() {
            Duration::from_secs(365 * 86400)
        } else {
            self.client_login_timeout
        }
    }

    /// The `client_tls_*` settings, for tls/.
    pub fn client_tls_settings(&self) -> crate::tls::SideSettings {
        crate::tls::SideSettings {
            sslmode: self.client_tls_sslmode,
            key_file: self.client_tls_key_file.clone(),
            cert_file: self.client_tls_cert_file.clone(),
            ca_file: self.client_tls_ca_file.clone(),
            protocols: self.client_tls_protocols.clone(),
            ciphers: self.client_tls_ciphers.clone(),
            tls13_ciphers: self.client_tls13_ciphers.clone(),
            ecdhcurve: self.client_tls_ecdhcurve.clone(),
            dheparams: self.client_tls_dheparams.clone(),
        }
    }

    /// The `server_tls_*` settings, for tls/.
    pub fn server_tls_settings(&self) -> crate::tls::SideSettings {
        crate::tls::SideSettings {
            sslmode: self.server_tls_sslmode,
            key_file: self.server_tls_key_file.clone(),
            cert_file: self.server_tls_cert_file.clone(),
            ca_file: self.server_tls_ca_file.clone(),
            protocols: self.server_tls_protocols.clone(),
            ciphers: self.server_tls_ciphers.clone(),
            tls13_ciphers: self.server_tls13_ciphers.clone(),
            ecdhcurve: String::new(),
            dheparams: String::new(),
        }
    }

    /// Runtime threads to use: `worker_threads`, or half the cores (the other half is left to
    /// PostgreSQL on the same node), at least one.
    pub fn threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads as usize;
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        (cores / 2).max(1)
    }

    /// Builds typed settings from the merged key table.
    ///
    /// # Errors
    /// The first bad value, with the line that set it.
    pub(super) fn from_settings(s: &Settings) -> Result<(Self, Shown), ConfigError> {
        let r = Reader { settings: s, shown: Default::default() };
        // Settings pgmux has no use for (it keeps no DNS cache, and its socket buffers and
        // loops are its own) are still read, as PgBouncer reads them: a bad value fails the
        // load, and SHOW CONFIG prints what was parsed.
        for k in ["dns_max_ttl", "dns_nxdomain_ttl", "dns_zone_check_period"] {
            r.secs(k)?;
        }
        for k in ["sbuf_loopcnt", "tcp_socket_buffer", "tcp_defer_accept"] {
            r.int(k, i32::MAX as u64)?;
        }
        let g = General {
            listen_addr: value::list(r.raw("listen_addr")),
            listen_port: r.int("listen_port", 65535)? as u16,
            listen_backlog: r.int("listen_backlog", 65535)?,
            so_reuseport: r.flag("so_reuseport")?,
            peer_id: r.int("peer_id", 16383)? as u16,
            unix_socket_dir: r.raw("unix_socket_dir").to_owned(),
            // An integer as any (`0777` octal, as written in most inis; `511` the same).
            unix_socket_mode: r.int("unix_socket_mode", 0o7777)?,
            unix_socket_group: r.opt("unix_socket_group"),
            pidfile: r.opt("pidfile").map(PathBuf::from),
            logfile: r.opt("logfile").map(PathBuf::from),
            user: r.opt("user"),
            pool_mode: r.choice("pool_mode", PoolMode::parse)?,
            max_client_conn: r.int("max_client_conn", 1 << 24)?,
            default_pool_size: r.int("default_pool_size", 1 << 20)?,
            min_pool_size: r.int("min_pool_size", 1 << 20)?,
            reserve_pool_size: r.int("reserve_pool_size", 1 << 20)?,
            reserve_pool_timeout: r.secs("reserve_pool_timeout")?,
            max_db_connections: r.int("max_db_connections", 1 << 20)?,
            max_user_connections: r.int("max_user_connections", 1 << 20)?,
            max_db_client_connections: r.int("max_db_client_connections", 1 << 24)?,
            max_user_client_connections: r.int("max_user_client_connections", 1 << 24)?,
            server_round_robin: r.flag("server_round_robin")?,
            auth_type: r.choice("auth_type", AuthType::parse)?,
            auth_file: r.opt("auth_file").map(PathBuf::from),
            auth_hba_file: r.opt("auth_hba_file").map(PathBuf::from),
            auth_ident_file: r.opt("auth_ident_file").map(PathBuf::from),
            auth_user: r.opt("auth_user"),
            auth_query: r.raw("auth_query").to_owned(),
            auth_dbname: r.opt("auth_dbname"),
            client_tls_sslmode: r.choice("client_tls_sslmode", |v| SslMode::parse(v).map_err(BadValue::from))?,
            client_tls_key_file: r.opt("client_tls_key_file"),
            client_tls_cert_file: r.opt("client_tls_cert_file"),
            client_tls_ca_file: r.opt("client_tls_ca_file"),
            client_tls_protocols: r.raw("client_tls_protocols").to_owned(),
            client_tls_ciphers: r.raw("client_tls_ciphers").to_owned(),
            client_tls13_ciphers: r.raw("client_tls13_ciphers").to_owned(),
            client_tls_ecdhcurve: r.raw("client_tls_ecdhcurve").to_owned(),
            client_tls_dheparams: r.raw("client_tls_dheparams").to_owned(),
            server_tls_sslmode: r.choice("server_tls_sslmode", |v| SslMode::parse(v).map_err(BadValue::from))?,
            server_tls_key_file: r.opt("server_tls_key_file"),
            server_tls_cert_file: r.opt("server_tls_cert_file"),
            server_tls_ca_file: r.opt("server_tls_ca_file"),
            server_tls_protocols: r.raw("server_tls_protocols").to_owned(),
            server_tls_ciphers: r.raw("server_tls_ciphers").to_owned(),
            server_tls13_ciphers: r.raw("server_tls13_ciphers").to_owned(),
            admin_users: value::list(r.raw("admin_users")),
            stats_users: value::list(r.raw("stats_users")),
            server_reset_query: r.raw("server_reset_query").to_owned(),
            server_reset_query_always: r.flag("server_reset_query_always")?,
            server_check_delay: r.secs("server_check_delay")?,
            server_check_query: r.raw("server_check_query").to_owned(),
            server_lifetime: r.secs("server_lifetime")?,
            server_idle_timeout: r.secs("server_idle_timeout")?,
            server_connect_timeout: r.secs("server_connect_timeout")?,
            server_login_retry: r.secs("server_login_retry")?,
            client_login_timeout: r.secs("client_login_timeout")?,
            query_wait_timeout: r.secs("query_wait_timeout")?,
            query_timeout: r.secs("query_timeout")?,
            client_idle_timeout: r.secs("client_idle_timeout")?,
            idle_transaction_timeout: r.secs("idle_transaction_timeout")?,
            transaction_timeout: r.secs("transaction_timeout")?,
            pool_idle_timeout: r.secs("pool_idle_timeout")?,
            autodb_idle_timeout: r.secs("autodb_idle_timeout")?,
            cancel_wait_timeout: r.secs("cancel_wait_timeout")?,
            suspend_timeout: r.secs("suspend_timeout")?,
            ignore_startup_parameters: value::list(r.raw("ignore_startup_parameters")),
            track_extra_parameters: value::list(r.raw("track_extra_parameters")),
            application_name_add_host: r.flag("application_name_add_host")?,
            login_notify_message: r.raw("login_notify_message").to_owned(),
            query_wait_notify: r.whole_secs("query_wait_notify")?,
            server_fast_close: r.flag("server_fast_close")?,
            log_connections: r.flag("log_connections")?,
            log_disconnections: r.flag("log_disconnections")?,
            log_pooler_errors: r.flag("log_pooler_errors")?,
            log_stats: r.flag("log_stats")?,
            log_json: r.choice("log_format", |v| match v.to_ascii_lowercase().as_str() {
                "text" => Ok(false),
                "json" => Ok(true),
                _ => Err(BadValue(format!("invalid log_format: \"{v}\" (text, json)"))),
            })?,
            syslog: r.flag("syslog")?,
            syslog_ident: r.raw("syslog_ident").to_owned(),
            syslog_facility: r.raw("syslog_facility").to_owned(),
            verbose: r.int("verbose", 3)?,
            max_packet_size: r.int("max_packet_size", i32::MAX as u64)?,
            pkt_buf: r.int("pkt_buf", 1 << 20)?,
            tcp_keepalive: r.flag("tcp_keepalive")?,
            tcp_keepidle: r.int("tcp_keepidle", u64::from(u32::MAX))?,
            tcp_keepintvl: r.int("tcp_keepintvl", u64::from(u32::MAX))?,
            tcp_keepcnt: r.int("tcp_keepcnt", u64::from(u32::MAX))?,
            tcp_user_timeout: r.int("tcp_user_timeout", u64::from(u32::MAX))?,
            scram_iterations: r.int("scram_iterations", 1 << 24)?.max(1),
            disable_pqexec: r.flag("disable_pqexec")?,
            stats_period: r.whole_secs("stats_period")?,
            max_prepared_statements: r.int("max_prepared_statements", 1 << 20)?,
            cache_unnamed_statements: r.flag("cache_unnamed_statements")?,
            worker_threads: r.int("worker_threads", 1024)?,
            worker_busy_percent: r.int("worker_busy_percent", 100)?,
            track_session_state: r.flag("track_session_state")?,
            pin_session_state: r.flag("pin_session_state")?,
            exporter_listen_addr: r.raw("exporter_listen_addr").to_owned(),
            exporter_port: r.int("exporter_port", 65535)? as u16,
            exporter_metrics: r.choice("exporter_metrics", |v| {
                pgmux_exporter::MetricSet::parse(v)
                    .ok_or_else(|| BadValue(format!("invalid exporter_metrics: \"{v}\" (pigsty, community, both)")))
            })?,
            health_agent_port: r.int("health_agent_port", 65535)? as u16,
            health_max_wait: r.secs("health_max_wait")?,
            patroni: PatroniSettings {
                url: r.http_url("patroni_url")?,
                databases: value::list(r.raw("patroni_databases")),
                member: r.opt("patroni_member"),
                poll_interval: r.secs("patroni_poll_interval")?.max(Duration::from_millis(50)),
                switchover_timeout: r.secs("patroni_switchover_timeout")?,
                drain_timeout: r.secs("patroni_drain_timeout")?,
                etcd_url: r.http_url("patroni_etcd_url")?,
                namespace: r.raw("patroni_namespace").trim_end_matches('/').to_owned(),
            },
        };
        if g.auth_dbname.as_deref() == Some(super::ADMIN_DB) {
            let reason = format!("cannot use the reserved \"{}\" database as an auth_dbname", super::ADMIN_DB);
            return Err(r.fail("auth_dbname", reason));
        }
        Ok((g, r.shown.into_inner()))
    }
}
