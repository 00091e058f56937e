//! What one pool runs by: sizes, mode, timeouts and its server target, derived from the config,
//! the `[databases]` entry and the `[users]` entry with PgBouncer's precedence.

use std::time::Duration;

use crate::config::{Config, DatabaseConfig, PoolMode, StoredSecret};
use crate::server::{Credentials, Target};

/// Effective settings of one (database, user) pool.
#[derive(Debug)]
#[allow(missing_docs)]
pub struct PoolSettings {
    pub mode: PoolMode,
    /// 0 means unlimited (PgBouncer 1.24).
    pub pool_size: u32,
    pub reserve_pool_size: u32,
    pub reserve_pool_timeout: Duration,
    pub min_pool_size: u32,
    pub max_db_connections: u32,
    pub max_user_connections: u32,
    /// 0 means a server is used once.
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub query_wait_timeout: Duration,
    /// query_wait_notify: a waiting client is told once it has waited this long (0: never).
    pub query_wait_notify: Duration,
    /// Client timeouts, a `[users]` value over the global one (PgBouncer 1.25). 0: none.
    pub query_timeout: Duration,
    pub idle_transaction_timeout: Duration,
    pub transaction_timeout: Duration,
    pub client_idle_timeout: Duration,
    /// Any of the four client timeouts above is set: the relay arms no timer otherwise.
    pub client_timeouts: bool,
    pub connect_timeout: Duration,
    pub login_retry: Duration,
    pub check_delay: Duration,
    /// None: no check. Some(""): empty-query ping (PgBouncer 1.25's `<empty>`).
    pub check_query: Option<String>,
    pub reset_query: String,
    pub reset_always: bool,
    pub connect_query: Option<String>,
    pub round_robin: bool,
    pub target: Target,
    /// Static credentials (password, md5 secret); SCRAM keys are added from client logins.
    pub credentials: Credentials,
    /// TLS towards the server (server_tls_sslmode).
    pub tls: Option<crate::tls::ServerTls>,
    /// True when the database entry forces a user (one pool for all clients).
    pub forced_user: bool,
    /// log_connections: `new connection to server` lines.
    pub log_connections: bool,
    /// log_disconnections: `closing because:` lines for servers.
    pub log_disconnections: bool,
    /// The database follows the Patroni leader: connect failures are waited through (no fast
    /// fail, quick retries) until query_wait_timeout.
    pub follows_leader: bool,
}

/// A user's timeout when set above zero, else the global one (PgBouncer's rule).
fn user_or(user: Option<Duration>, global: Duration) -> Duration {
    user.filter(|d| !d.is_zero()).unwrap_or(global)
}

impl PoolSettings {
    /// True when a server idle for `idle` gets the check query before its next client (what
    /// PgBouncer's janitor marks `used`).
    pub fn due_for_check(&self, idle: std::time::Duration) -> bool {
        self.check_query.is_some() && idle >= self.check_delay
    }

    /// Derives the settings for `db` and the server-side user `pool_user`.
    pub fn derive(config: &Config, db: &DatabaseConfig, pool_user: &str) -> Self {
        let g = &config.general;
        let u = config.users.get(pool_user);
        let check_query = match g.server_check_query.as_str() {
            "" => None,
            "<empty>" => Some(String::new()),
            q => Some(q.to_owned()),
        };
        let mut credentials = Credentials::default();
        let forced_user = db.user.is_some();
        match (&db.password, config.auth_file.get(pool_user)) {
            (Some(pw), _) if forced_user => credentials.password = Some(pw.clone()),
            (_, Some(StoredSecret::Plain(pw))) => credentials.password = Some(pw.clone()),
            (_, Some(StoredSecret::Md5(s))) => credentials.md5_secret = Some(s.clone()),
            _ => {}
        }
        let mut startup_params = Vec::new();
        for (k, v) in [
            ("client_encoding", &db.client_encoding),
            ("datestyle", &db.datestyle),
            ("timezone", &db.timezone),
            ("application_name", &db.application_name),
        ] {
            if let Some(v) = v {
                startup_params.push((k.to_owned(), v.clone()));
            }
        }
        let mut target = Target::new(
            db.hosts.clone(),
            db.port,
            db.target_dbname().to_owned(),
            pool_user.to_owned(),
            g.unix_socket_dir.clone(),
            db.load_balance_hosts,
            startup_params,
        );
        target.tcp = crate::net::tcp_options::TcpOptions::from_general(g);
        let query_timeout = user_or(u.and_then(|u| u.query_timeout), g.query_timeout);
        let idle_transaction_timeout = user_or(u.and_then(|u| u.idle_transaction_timeout), g.idle_transaction_timeout);
        let transaction_timeout = user_or(u.and_then(|u| u.transaction_timeout), g.transaction_timeout);
        let client_idle_timeout = user_or(u.and_then(|u| u.client_idle_timeout), g.client_idle_timeout);
        PoolSettings {
            client_timeouts: [query_timeout, idle_transaction_timeout, transaction_timeout, client_idle_timeout]
                .iter()
                .any(|d| !d.is_zero()),
            query_timeout,
            idle_transaction_timeout,
            transaction_timeout,
            client_idle_timeout,
            follows_leader: g.patroni.follows(&db.name),
            mode: u.and_then(|u| u.pool_mode).or(db.pool_mode).unwrap_or(g.pool_mode),
            // The pool user's [users] value, then the database's, then the global one
            // (PgBouncer's pool_pool_size / pool_res_pool_size).
            pool_size: u.and_then(|u| u.pool_size).or(db.pool_size).unwrap_or(g.default_pool_size),
            reserve_pool_size: u
                .and_then(|u| u.reserve_pool_size)
                .or(db.reserve_pool_size)
                .unwrap_or(g.reserve_pool_size),
            reserve_pool_timeout: g.reserve_pool_timeout,
            min_pool_size: db.min_pool_size.unwrap_or(g.min_pool_size),
            // A database or user value of 0 means "not set" (PgBouncer's `<= 0`).
            max_db_connections: db.max_db_connections.filter(|n| *n > 0).unwrap_or(g.max_db_connections),
            max_user_connections: u
                .and_then(|u| u.max_user_connections)
                .filter(|n| *n > 0)
                .unwrap_or(g.max_user_connections),
            server_lifetime: db.server_lifetime.unwrap_or(g.server_lifetime),
            server_idle_timeout: g.server_idle_timeout,
            query_wait_timeout: u
                .and_then(|u| u.query_wait_timeout)
                .or(db.query_wait_timeout)
                .unwrap_or(g.query_wait_timeout),
            query_wait_notify: g.query_wait_notify,
            connect_timeout: g.server_connect_timeout,
            login_retry: g.server_login_retry,
            check_delay: g.server_check_delay,
            check_query,
            reset_query: g.server_reset_query.clone(),
            reset_always: g.server_reset_query_always,
            connect_query: db.connect_query.clone(),
            round_robin: g.server_round_robin,
            target,
            credentials,
            tls: config.server_tls.clone(),
            forced_user,
            log_connections: g.log_connections,
            log_disconnections: g.log_disconnections,
        }
    }
}
