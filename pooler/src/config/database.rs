//! Entries of `[databases]`, `[users]` and `[peers]`, parsed from their connection strings.

use std::time::Duration;

use super::general::PoolMode;
use super::{connstring, value, BadValue};

/// How a comma list of hosts is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadBalanceHosts {
    /// Each new connection takes the next host.
    RoundRobin,
    /// Stay on a host until it fails.
    Disable,
}

impl LoadBalanceHosts {
    /// SHOW POOLS / SHOW DATABASES spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalanceHosts::RoundRobin => "round-robin",
            LoadBalanceHosts::Disable => "disable",
        }
    }
}

/// One `[databases]` entry.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct DatabaseConfig {
    /// Name clients use.
    pub name: String,
    /// True when made from the `*` fallback.
    pub auto: bool,
    pub dbname: Option<String>,
    /// Host names, IPs or unix socket directories (`/...`); empty means unix_socket_dir.
    pub hosts: Vec<String>,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub auth_user: Option<String>,
    pub auth_query: Option<String>,
    pub auth_dbname: Option<String>,
    pub pool_size: Option<u32>,
    pub min_pool_size: Option<u32>,
    pub reserve_pool_size: Option<u32>,
    pub connect_query: Option<String>,
    pub pool_mode: Option<PoolMode>,
    pub query_wait_timeout: Option<Duration>,
    pub load_balance_hosts: LoadBalanceHosts,
    pub max_db_connections: Option<u32>,
    pub max_db_client_connections: Option<u32>,
    pub server_lifetime: Option<Duration>,
    pub client_encoding: Option<String>,
    pub datestyle: Option<String>,
    pub timezone: Option<String>,
    pub application_name: Option<String>,
}

fn num(k: &str, v: &str) -> Result<u32, BadValue> {
    value::decimal(v, 1 << 20).map(|n| n as u32).map_err(|r| BadValue(format!("{k}: {r}")))
}

fn secs(k: &str, v: &str) -> Result<Duration, BadValue> {
    value::seconds(v).map_err(|r| BadValue(format!("{k}: {r}")))
}

impl DatabaseConfig {
    /// Parses `name = key=value ...`.
    ///
    /// # Errors
    /// Unknown keys and bad values.
    pub fn parse(name: &str, s: &str) -> Result<Self, BadValue> {
        let mut db = DatabaseConfig {
            name: name.to_owned(),
            auto: false,
            dbname: None,
            hosts: Vec::new(),
            port: 5432,
            user: None,
            password: None,
            auth_user: None,
            auth_query: None,
            auth_dbname: None,
            pool_size: None,
            min_pool_size: None,
            reserve_pool_size: None,
            connect_query: None,
            pool_mode: None,
            query_wait_timeout: None,
            load_balance_hosts: LoadBalanceHosts::RoundRobin,
            max_db_connections: None,
            max_db_client_connections: None,
            server_lifetime: None,
            client_encoding: None,
            datestyle: None,
            timezone: None,
            application_name: None,
        };
        for (k, v) in connstring::parse(s)? {
            match k.as_str() {
                "dbname" => db.dbname = Some(v),
                "host" => db.hosts = v.split(',').map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect(),
                "port" => {
                    db.port =
                        v.parse().ok().filter(|p| *p > 0).ok_or_else(|| BadValue(format!("invalid port: \"{v}\"")))?
                }
                "user" => db.user = Some(v),
                "password" => db.password = Some(v),
                "auth_user" => db.auth_user = Some(v),
                "auth_query" => db.auth_query = Some(v),
                "auth_dbname" => db.auth_dbname = Some(v),
                "pool_size" => db.pool_size = Some(num(&k, &v)?),
                "min_pool_size" => db.min_pool_size = Some(num(&k, &v)?),
                "reserve_pool" | "reserve_pool_size" => db.reserve_pool_size = Some(num(&k, &v)?),
                "connect_query" => db.connect_query = Some(v),
                "pool_mode" => db.pool_mode = Some(PoolMode::parse(&v)?),
                "query_wait_timeout" => db.query_wait_timeout = Some(secs(&k, &v)?),
                "load_balance_hosts" => {
                    db.load_balance_hosts = match v.as_str() {
                        "round-robin" => LoadBalanceHosts::RoundRobin,
                        "disable" => LoadBalanceHosts::Disable,
                        _ => {
                            return Err(BadValue(format!("invalid load_balance_hosts: \"{v}\" (round-robin, disable)")))
                        }
                    }
                }
                "max_db_connections" => db.max_db_connections = Some(num(&k, &v)?),
                "max_db_client_connections" => db.max_db_client_connections = Some(num(&k, &v)?),
                "server_lifetime" => db.server_lifetime = Some(secs(&k, &v)?),
                "client_encoding" => db.client_encoding = Some(v),
                "datestyle" => db.datestyle = Some(v),
                "timezone" => db.timezone = Some(v),
                "application_name" => db.application_name = Some(v),
                _ => return Err(BadValue(format!("unknown database parameter \"{k}\""))),
            }
        }
        Ok(db)
    }

    /// The database name on the server.
    pub fn target_dbname(&self) -> &str {
        self.dbname.as_deref().unwrap_or(&self.name)
    }

    /// SHOW DATABASES `host` column: the host list as written.
    pub fn host_text(&self) -> String {
        self.hosts.join(",")
    }
}

/// One `[users]` entry.
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)]
pub struct UserConfig {
    pub pool_size: Option<u32>,
    pub reserve_pool_size: Option<u32>,
    pub pool_mode: Option<PoolMode>,
    pub max_user_connections: Option<u32>,
    pub max_user_client_connections: Option<u32>,
    pub query_timeout: Option<Duration>,
    pub query_wait_timeout: Option<Duration>,
    pub idle_transaction_timeout: Option<Duration>,
    pub transaction_timeout: Option<Duration>,
    pub client_idle_timeout: Option<Duration>,
}

impl UserConfig {
    /// Parses `user = key=value ...`.
    ///
    /// # Errors
    /// Unknown keys and bad values.
    pub fn parse(s: &str) -> Result<Self, BadValue> {
        let mut u = UserConfig::default();
        for (k, v) in connstring::parse(s)? {
            match k.as_str() {
                "pool_size" => u.pool_size = Some(num(&k, &v)?),
                "reserve_pool" | "reserve_pool_size" => u.reserve_pool_size = Some(num(&k, &v)?),
                "pool_mode" => u.pool_mode = Some(PoolMode::parse(&v)?),
                "max_user_connections" => u.max_user_connections = Some(num(&k, &v)?),
                "max_user_client_connections" => u.max_user_client_connections = Some(num(&k, &v)?),
                "query_timeout" => u.query_timeout = Some(secs(&k, &v)?),
                "query_wait_timeout" => u.query_wait_timeout = Some(secs(&k, &v)?),
                "idle_transaction_timeout" => u.idle_transaction_timeout = Some(secs(&k, &v)?),
                "transaction_timeout" => u.transaction_timeout = Some(secs(&k, &v)?),
                "client_idle_timeout" => u.client_idle_timeout = Some(secs(&k, &v)?),
                _ => return Err(BadValue(format!("unknown user parameter \"{k}\""))),
            }
        }
        Ok(u)
    }
}

/// One `[peers]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    /// Host name, IP or unix socket directory.
    pub host: String,
    /// Port (6432 by default).
    pub port: u16,
    /// Most cancel requests in flight to this peer.
    pub pool_size: Option<u32>,
}

impl PeerConfig {
    /// Parses `id = host=... port=... pool_size=...`.
    ///
    /// # Errors
    /// Unknown keys, bad values, or no host.
    pub fn parse(s: &str) -> Result<Self, BadValue> {
        let mut p = PeerConfig { host: String::new(), port: 6432, pool_size: None };
        for (k, v) in connstring::parse(s)? {
            match k.as_str() {
                "host" => p.host = v,
                "port" => p.port = v.parse().map_err(|_| BadValue(format!("invalid port: \"{v}\"")))?,
                "pool_size" => p.pool_size = Some(num(&k, &v)?),
                _ => return Err(BadValue(format!("unknown peer parameter \"{k}\""))),
            }
        }
        if p.host.is_empty() {
            return Err(BadValue::from("peer needs host="));
        }
        Ok(p)
    }
}
