//! Every `[pgbouncer]` parameter PgBouncer 1.25 documents, with its default as SHOW CONFIG prints
//! it and whether RELOAD may change it. Unknown keys are warned about, as PgBouncer does.

/// One known parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Name as in pgbouncer.ini (lower case).
    pub name: &'static str,
    /// Default value as text.
    pub default: &'static str,
    /// True where PgBouncer's default is NULL (a setting with no default: SHOW CONFIG prints
    /// NULL for it, and for a string value while it is unset).
    pub null_default: bool,
    /// False for PgBouncer's CF_NO_RELOAD parameters (need a restart).
    pub reloadable: bool,
}

const fn p(name: &'static str, default: &'static str, reloadable: bool) -> Param {
    Param { name, default, null_default: false, reloadable }
}

/// A parameter whose default PgBouncer prints as NULL; `default` is the value in force.
const fn null(name: &'static str, default: &'static str, reloadable: bool) -> Param {
    Param { name, default, null_default: true, reloadable }
}

const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin";

/// The table, alphabetical but for PgBouncer's one exception (SHOW CONFIG order).
pub const PARAMS: &[Param] = &[
    p("admin_users", "", true),
    p("application_name_add_host", "0", true),
    null("auth_dbname", "", true),
    null("auth_file", "", true),
    p("auth_hba_file", "", true),
    null("auth_ident_file", "", true),
    null("auth_ldap_options", "", true),
    p("auth_query", DEFAULT_AUTH_QUERY, true),
    p("auth_type", "md5", true),
    null("auth_user", "", true),
    p("autodb_idle_timeout", "3600", true),
    // pgmux extension: serve the unnamed statement from the servers' statement caches.
    p("cache_unnamed_statements", "1", true),
    p("cancel_wait_timeout", "10", true),
    p("client_idle_timeout", "0", true),
    p("client_login_timeout", "60", true),
    null("client_tls13_ciphers", "", true),
    p("client_tls_ca_file", "", true),
    p("client_tls_cert_file", "", true),
    p("client_tls_ciphers", "default", true),
    p("client_tls_dheparams", "auto", true),
    p("client_tls_ecdhcurve", "auto", true),
    p("client_tls_key_file", "", true),
    p("client_tls_protocols", "secure", true),
    p("client_tls_sslmode", "disable", true),
    null("conffile", "", true),
    p("default_pool_size", "20", true),
    p("disable_pqexec", "0", false),
    p("dns_max_ttl", "15", true),
    p("dns_nxdomain_ttl", "15", true),
    p("dns_zone_check_period", "0", true),
    p("exporter_listen_addr", "127.0.0.1", false),
    // pgmux extension: metric names on /metrics: pigsty, community or both.
    p("exporter_metrics", "pigsty", true),
    p("exporter_port", "0", false),
    // pgmux extension: HAProxy agent-check port and the exhaustion threshold of the role checks.
    p("health_agent_port", "0", false),
    p("health_max_wait", "10", true),
    p("idle_transaction_timeout", "0", true),
    p("ignore_startup_parameters", "", true),
    p("job_name", "pgbouncer", false),
    p("listen_addr", "", false),
    p("listen_backlog", "128", false),
    p("listen_port", "6432", false),
    p("log_connections", "1", true),
    p("log_disconnections", "1", true),
    p("log_format", "text", true),
    p("log_pooler_errors", "1", true),
    p("log_stats", "1", true),
    p("logfile", "", true),
    p("login_notify_message", "", true),
    p("max_client_conn", "100", true),
    p("max_db_client_connections", "0", true),
    p("max_db_connections", "0", true),
    p("max_packet_size", "2147483647", true),
    p("max_prepared_statements", "200", true),
    p("max_user_client_connections", "0", true),
    p("max_user_connections", "0", true),
    p("min_pool_size", "0", true),
    // pgmux extension: follow the Patroni leader (docs/HA.md).
    p("patroni_databases", "", true),
    p("patroni_drain_timeout", "10", true),
    p("patroni_etcd_url", "", true),
    p("patroni_member", "", true),
    p("patroni_namespace", "/service", true),
    p("patroni_poll_interval", "0.5", true),
    p("patroni_switchover_timeout", "30", true),
    p("patroni_url", "", true),
    p("peer_id", "0", true),
    p("pidfile", "", false),
    // pgmux extension: keep a transaction-mode client on its server once it makes state that
    // cannot move (LISTEN, temporary tables, session advisory locks, WITH HOLD cursors).
    p("pin_session_state", "0", true),
    p("pkt_buf", "4096", false),
    // PgBouncer's table has these two the other way round, and SHOW CONFIG prints its order.
    p("pool_mode", "session", true),
    p("pool_idle_timeout", "0", true),
    p("query_timeout", "0", true),
    p("query_wait_notify", "5", true),
    p("query_wait_timeout", "120", true),
    p("reserve_pool_size", "0", true),
    p("reserve_pool_timeout", "5", true),
    p("resolv_conf", "", false),
    p("sbuf_loopcnt", "5", true),
    p("scram_iterations", "4096", true),
    p("server_check_delay", "30", true),
    p("server_check_query", "<empty>", true),
    p("server_connect_timeout", "15", true),
    p("server_fast_close", "0", true),
    p("server_idle_timeout", "600", true),
    p("server_lifetime", "3600", true),
    p("server_login_retry", "15", true),
    p("server_reset_query", "DISCARD ALL", true),
    p("server_reset_query_always", "0", true),
    p("server_round_robin", "0", true),
    null("server_tls13_ciphers", "", true),
    p("server_tls_ca_file", "", true),
    p("server_tls_cert_file", "", true),
    p("server_tls_ciphers", "default", true),
    p("server_tls_key_file", "", true),
    p("server_tls_protocols", "secure", true),
    p("server_tls_sslmode", "prefer", true),
    // An alias of job_name (PgBouncer prints the one value for both).
    null("service_name", "", false),
    p("so_reuseport", "0", false),
    p("stats_period", "60", true),
    p("stats_users", "", true),
    p("suspend_timeout", "10", true),
    p("syslog", "0", true),
    p("syslog_facility", "daemon", true),
    p("syslog_ident", "pgbouncer", true),
    p("tcp_defer_accept", "1", true),
    p("tcp_keepalive", "1", true),
    p("tcp_keepcnt", "0", true),
    p("tcp_keepidle", "0", true),
    p("tcp_keepintvl", "0", true),
    p("tcp_socket_buffer", "0", true),
    p("tcp_user_timeout", "0", true),
    p("track_extra_parameters", "IntervalStyle", false),
    // pgmux extension: carry SET/RESET settings and SQL PREPARE statements across servers in
    // transaction mode.
    p("track_session_state", "1", true),
    p("transaction_timeout", "0", true),
    p("unix_socket_dir", "/tmp", false),
    p("unix_socket_group", "", false),
    p("unix_socket_mode", "0777", false),
    null("user", "", false),
    null("verbose", "0", true),
    // pgmux extension: per cent of a core a worker thread may be busy before new clients go to
    // the next one and its clients spread; 0 = dealt in turn, never moved.
    p("worker_busy_percent", "70", false),
    // pgmux extension: runtime worker threads; 0 = half the cores (at least one).
    p("worker_threads", "0", false),
];

/// The table entry for `name` (case-insensitive).
pub fn find(name: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for w in PARAMS.windows(2) {
            let pgbouncers_one_exception = (w[0].name, w[1].name) == ("pool_mode", "pool_idle_timeout");
            assert!(w[0].name < w[1].name || pgbouncers_one_exception, "{} before {}", w[0].name, w[1].name);
        }
        assert_eq!(find("Listen_Port").unwrap().default, "6432");
        assert!(find("auth_user").unwrap().null_default);
    }
}
