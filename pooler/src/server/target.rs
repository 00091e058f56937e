//! Where a pool's servers are: host list, port, database and user, and the address to dial for
//! the next connection (round-robin over a comma list of hosts, as load_balance_hosts says).

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::LoadBalanceHosts;

/// A pool's server side.
#[derive(Debug)]
pub struct Target {
    /// Host names, IPs or unix socket directories; empty means `default_socket_dir`.
    pub hosts: Vec<String>,
    /// Port.
    pub port: u16,
    /// Database name on the server.
    pub dbname: String,
    /// User name on the server.
    pub user: String,
    /// unix_socket_dir, used when no host is given.
    pub default_socket_dir: String,
    /// Round-robin or stick to one host.
    pub load_balance: LoadBalanceHosts,
    /// Startup parameters sent with each login (client_encoding, datestyle, ... from the db entry).
    pub startup_params: Vec<(String, String)>,
    next: AtomicUsize,
}

impl Target {
    /// A target.
    pub fn new(
        hosts: Vec<String>,
        port: u16,
        dbname: String,
        user: String,
        default_socket_dir: String,
        load_balance: LoadBalanceHosts,
        startup_params: Vec<(String, String)>,
    ) -> Self {
        Self { hosts, port, dbname, user, default_socket_dir, load_balance, startup_params, next: AtomicUsize::new(0) }
    }

    /// The host for the next connection. With `load_balance_hosts = disable` the same host is used
    /// until `advance_after_failure` moves on.
    pub fn pick_host(&self) -> String {
        if self.hosts.is_empty() {
            return self.default_socket_dir.clone();
        }
        let n = match self.load_balance {
            LoadBalanceHosts::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed),
            LoadBalanceHosts::Disable => self.next.load(Ordering::Relaxed),
        };
        self.hosts[n % self.hosts.len()].clone()
    }

    /// The same target with `extra` startup parameters (a replication client's own).
    pub fn with_params(&self, extra: &[(String, String)]) -> Target {
        let mut startup_params = self.startup_params.clone();
        startup_params.extend(extra.iter().cloned());
        Target {
            hosts: self.hosts.clone(),
            port: self.port,
            dbname: self.dbname.clone(),
            user: self.user.clone(),
            default_socket_dir: self.default_socket_dir.clone(),
            load_balance: self.load_balance,
            startup_params,
            next: AtomicUsize::new(self.next.load(Ordering::Relaxed)),
        }
    }

    /// Moves a `disable` target to its next host after a failed connect.
    pub fn advance_after_failure(&self) {
        if self.load_balance == LoadBalanceHosts::Disable {
            self.next.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// True when `host` names a unix socket directory.
    pub fn is_unix(host: &str) -> bool {
        host.starts_with('/')
    }
}
