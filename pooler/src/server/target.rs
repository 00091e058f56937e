//! Where a pool's servers are: host list, port, database and user, and the address to dial for
//! the next connection (round-robin over a comma list of hosts, as load_balance_hosts says).

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::LoadBalanceHosts;
use crate::net::tcp_options::TcpOptions;

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
    /// TCP options for its sockets (tcp_keepalive and friends).
    pub tcp: TcpOptions,
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
        Self {
            hosts,
            port,
            dbname,
            user,
            default_socket_dir,
            load_balance,
            startup_params,
            tcp: TcpOptions::default(),
            next: AtomicUsize::new(0),
        }
    }

    /// The host for the next connection, with its place in the list (for
    /// [`Target::advance_after_failure`]). With `load_balance_hosts = disable` the same host is
    /// used until a connect to it fails.
    pub fn pick_host(&self) -> (usize, String) {
        if self.hosts.is_empty() {
            return (0, self.default_socket_dir.clone());
        }
        let n = match self.load_balance {
            LoadBalanceHosts::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed),
            LoadBalanceHosts::Disable => self.next.load(Ordering::Relaxed),
        };
        (n, self.hosts[n % self.hosts.len()].clone())
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
            tcp: self.tcp,
            next: AtomicUsize::new(self.next.load(Ordering::Relaxed)),
        }
    }

    /// The same database and user on one other server (the Patroni leader's address).
    pub fn moved_to(&self, host: &str, port: u16) -> Target {
        let mut t = Target::new(
            vec![host.to_owned()],
            port,
            self.dbname.clone(),
            self.user.clone(),
            self.default_socket_dir.clone(),
            self.load_balance,
            self.startup_params.clone(),
        );
        t.tcp = self.tcp;
        t
    }

    /// Moves a `disable` target past host `picked` after a failed connect to it. Several
    /// connects that failed on the same host move it once, so a bad first host is skipped
    /// rather than come back round.
    pub fn advance_after_failure(&self, picked: usize) {
        if self.load_balance == LoadBalanceHosts::Disable {
            let _ = self.next.compare_exchange(picked, picked.wrapping_add(1), Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// True when `host` names a unix socket directory.
    pub fn is_unix(host: &str) -> bool {
        host.starts_with('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(lb: LoadBalanceHosts) -> Target {
        let hosts = vec!["bad".to_owned(), "good".to_owned()];
        Target::new(hosts, 5432, "d".into(), "u".into(), "/tmp".into(), lb, Vec::new())
    }

    #[test]
    fn disable_moves_past_a_bad_host_once_however_many_connects_failed_on_it() {
        let t = target(LoadBalanceHosts::Disable);
        let (a, host_a) = t.pick_host();
        let (b, host_b) = t.pick_host();
        assert_eq!((host_a.as_str(), host_b.as_str()), ("bad", "bad"));
        t.advance_after_failure(a);
        t.advance_after_failure(b);
        assert_eq!(t.pick_host().1, "good");
        assert_eq!(t.pick_host().1, "good");
    }

    #[test]
    fn round_robin_takes_each_host_in_turn() {
        let t = target(LoadBalanceHosts::RoundRobin);
        let picks: Vec<String> = (0..4).map(|_| t.pick_host().1).collect();
        assert_eq!(picks, ["bad", "good", "bad", "good"]);
    }
}
