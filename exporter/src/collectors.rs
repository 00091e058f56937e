//! The collector definitions of pg_exporter's PgBouncer config (branches for 1.24+): which SHOW
//! columns become labels, which become metrics, their type and unit scaling.

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic.
    Counter,
    /// Point in time.
    Gauge,
}

/// One column turned into a metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// SHOW column.
    pub column: &'static str,
    /// Metric name after the collector prefix.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Multiplier (1e-6 for µs -> s).
    pub scale: f64,
    /// HELP text.
    pub help: &'static str,
}

/// One SHOW command's collector.
#[derive(Debug, Clone, Copy)]
pub struct Collector {
    /// Metric prefix (`pgbouncer_pool`).
    pub prefix: &'static str,
    /// (label name, SHOW column) pairs.
    pub labels: &'static [(&'static str, &'static str)],
    /// Metrics.
    pub metrics: &'static [Metric],
}

const fn g(column: &'static str, name: &'static str, help: &'static str) -> Metric {
    Metric { column, name, kind: Kind::Gauge, scale: 1.0, help }
}
const fn c(column: &'static str, name: &'static str, help: &'static str) -> Metric {
    Metric { column, name, kind: Kind::Counter, scale: 1.0, help }
}
const fn cs(column: &'static str, name: &'static str, help: &'static str) -> Metric {
    Metric { column, name, kind: Kind::Counter, scale: 1e-6, help }
}
const fn gs(column: &'static str, name: &'static str, help: &'static str) -> Metric {
    Metric { column, name, kind: Kind::Gauge, scale: 1e-6, help }
}

/// prometheus-community/pgbouncer_exporter: SHOW STATS_TOTALS -> pgbouncer_stats_totals_*{database}.
pub const COMMUNITY_STATS_TOTALS: Collector = Collector {
    prefix: "pgbouncer_stats_totals",
    labels: &[("database", "database")],
    metrics: &[
        c("query_count", "queries_pooled_total", "Total number of SQL queries pooled"),
        cs(
            "query_time",
            "queries_duration_seconds_total",
            "Total number of seconds spent by pgbouncer when actively connected to PostgreSQL, executing queries",
        ),
        c("bytes_received", "received_bytes_total", "Total volume in bytes of network traffic received by pgbouncer"),
        c("bytes_sent", "sent_bytes_total", "Total volume in bytes of network traffic sent by pgbouncer"),
        cs("wait_time", "client_wait_seconds_total", "Time spent by clients waiting for a server in seconds"),
        c("xact_count", "sql_transactions_pooled_total", "Total number of SQL transactions pooled"),
        cs(
            "xact_time",
            "server_in_transaction_seconds_total",
            "Total number of seconds spent by pgbouncer when connected to PostgreSQL in a transaction",
        ),
        c("client_parse_count", "client_parses_total", "Total number of prepared statements created by clients"),
        c(
            "server_parse_count",
            "server_parses_total",
            "Total number of prepared statements created by pgbouncer on a server",
        ),
        c("bind_count", "binds_total", "Total number of prepared statements readied for execution"),
        c(
            "server_assignment_count",
            "server_assignments_total",
            "Total number of times a server was assigned to a client",
        ),
    ],
};

/// prometheus-community/pgbouncer_exporter: SHOW POOLS -> pgbouncer_pools_*{database,user}.
pub const COMMUNITY_POOLS: Collector = Collector {
    prefix: "pgbouncer_pools",
    labels: &[("database", "database"), ("user", "user")],
    metrics: &[
        g(
            "cl_active",
            "client_active_connections",
            "Client connections linked to server connection and able to process queries",
        ),
        g(
            "cl_active_cancel_req",
            "client_active_cancel_connections",
            "Client connections that have forwarded query cancellations to the server",
        ),
        g("cl_waiting", "client_waiting_connections", "Client connections waiting on a server connection"),
        g(
            "cl_waiting_cancel_req",
            "client_waiting_cancel_connections",
            "Client connections that have not forwarded query cancellations to the server yet",
        ),
        g("sv_active", "server_active_connections", "Server connections linked to a client connection"),
        g(
            "sv_active_cancel",
            "server_active_cancel_connections",
            "Server connections that are currently forwarding a cancel request",
        ),
        g(
            "sv_being_canceled",
            "server_being_canceled_connections",
            "Servers waiting for in-flight cancel requests to complete",
        ),
        g("sv_idle", "server_idle_connections", "Server connections idle and ready for a client query"),
        g(
            "sv_used",
            "server_used_connections",
            "Server connections idle more than server_check_delay, needing server_check_query",
        ),
        g(
            "sv_tested",
            "server_testing_connections",
            "Server connections currently running either server_reset_query or server_check_query",
        ),
        g("sv_login", "server_login_connections", "Server connections currently in the process of logging in"),
        g("maxwait", "client_maxwait_seconds", "Age of oldest unserved client connection, in seconds"),
    ],
};

/// prometheus-community/pgbouncer_exporter: SHOW DATABASES -> pgbouncer_databases_*.
pub const COMMUNITY_DATABASES: Collector = Collector {
    prefix: "pgbouncer_databases",
    labels: &[
        ("name", "name"),
        ("host", "host"),
        ("port", "port"),
        ("database", "database"),
        ("force_user", "force_user"),
        ("pool_mode", "pool_mode"),
    ],
    metrics: &[
        g("pool_size", "pool_size", "Maximum number of server connections"),
        g("reserve_pool_size", "reserve_pool", "Maximum number of additional connections for this database"),
        g("max_connections", "max_connections", "Maximum number of allowed connections for this database"),
        g("current_connections", "current_connections", "Current number of connections for this database"),
        g("paused", "paused", "1 if this database is currently paused, else 0"),
        g("disabled", "disabled", "1 if this database is currently disabled, else 0"),
    ],
};

/// prometheus-community/pgbouncer_exporter: SHOW LISTS rows -> one gauge each.
pub const COMMUNITY_LISTS: &[(&str, &str, &str)] = &[
    ("databases", "pgbouncer_databases", "Count of databases"),
    ("users", "pgbouncer_users", "Count of users"),
    ("pools", "pgbouncer_pools", "Count of pools"),
    ("free_clients", "pgbouncer_free_clients", "Count of free clients"),
    ("used_clients", "pgbouncer_used_clients", "Count of used clients"),
    ("login_clients", "pgbouncer_login_clients", "Count of clients in login state"),
    ("free_servers", "pgbouncer_free_servers", "Count of free servers"),
    ("used_servers", "pgbouncer_used_servers", "Count of used servers"),
    ("dns_names", "pgbouncer_cached_dns_names", "Count of DNS names in the cache"),
    ("dns_zones", "pgbouncer_cached_dns_zones", "Count of DNS zones in the cache"),
    ("dns_queries", "pgbouncer_in_flight_dns_queries", "Count of in-flight DNS queries"),
];

/// SHOW LISTS -> pgbouncer_list_items{list}.
pub const LISTS: Collector = Collector {
    prefix: "pgbouncer_list",
    labels: &[("list", "list")],
    metrics: &[g("items", "items", "Number of corresponding pgbouncer object")],
};

/// SHOW DATABASES -> pgbouncer_database_*{datname,host,port,real_datname}.
pub const DATABASES: Collector = Collector {
    prefix: "pgbouncer_database",
    labels: &[("datname", "name"), ("host", "host"), ("port", "port"), ("real_datname", "database")],
    metrics: &[
        g("pool_size", "pool_size", "Maximum number of server connections"),
        g("min_pool_size", "min_pool_size", "Minimum number of server connections"),
        g("reserve_pool_size", "reserve_pool", "Maximum number of additional connections for this database"),
        g("server_lifetime", "server_lifetime", "Maximum lifetime of a server connection in seconds"),
        g("max_connections", "max_connections", "Maximum number of allowed server connections"),
        g("current_connections", "current_connections", "Current number of server connections for this database"),
        g("max_client_connections", "max_client_connections", "Maximum number of allowed client connections"),
        g(
            "current_client_connections",
            "current_client_connections",
            "Current number of client connections for this database",
        ),
        g("paused", "paused", "1 if this database is currently paused, else 0"),
        g("disabled", "disabled", "1 if this database is currently disabled, else 0"),
    ],
};

/// SHOW STATS -> pgbouncer_stat_*{datname}.
pub const STATS: Collector = Collector {
    prefix: "pgbouncer_stat",
    labels: &[("datname", "database")],
    metrics: &[
        c("total_xact_count", "total_xact_count", "Total number of SQL transactions pooled by pgbouncer"),
        c("total_query_count", "total_query_count", "Total number of SQL queries pooled by pgbouncer"),
        c(
            "total_server_assignment_count",
            "total_server_assignment_count",
            "Total times a server was assigned to a client",
        ),
        c("total_received", "total_received", "Total volume in bytes of network traffic received by pgbouncer"),
        c("total_sent", "total_sent", "Total volume in bytes of network traffic sent by pgbouncer"),
        cs("total_xact_time", "total_xact_time", "Total seconds spent in a transaction"),
        cs("total_query_time", "total_query_time", "Total seconds spent actively querying"),
        cs("total_wait_time", "total_wait_time", "Time spent by clients waiting for a server, in seconds"),
        c(
            "total_client_parse_count",
            "total_client_parse_count",
            "Total number of prepared statements created by clients",
        ),
        c(
            "total_server_parse_count",
            "total_server_parse_count",
            "Total number of prepared statements created on servers",
        ),
        c("total_bind_count", "total_bind_count", "Total number of prepared statements readied for execution"),
        g("avg_xact_count", "avg_xact_count", "Average transactions per second in last stat period"),
        g("avg_query_count", "avg_query_count", "Average queries per second in last stat period"),
        g(
            "avg_server_assignment_count",
            "avg_server_assignment_count",
            "Average server assignments per second in last stat period",
        ),
        g("avg_recv", "avg_recv", "Average received (from clients) bytes per second"),
        g("avg_sent", "avg_sent", "Average sent (to clients) bytes per second"),
        gs("avg_xact_time", "avg_xact_time", "Average transaction duration, in seconds"),
        gs("avg_query_time", "avg_query_time", "Average query duration, in seconds"),
        gs(
            "avg_wait_time",
            "avg_wait_time",
            "Time spent by clients waiting for a server, in seconds (average per second)",
        ),
        g("avg_client_parse_count", "avg_client_parse_count", "Average client prepared statements per second"),
        g("avg_server_parse_count", "avg_server_parse_count", "Average server prepared statements per second"),
        g("avg_bind_count", "avg_bind_count", "Average binds per second"),
    ],
};

/// SHOW POOLS -> pgbouncer_pool_*{datname,user,pool_mode,load_balance_hosts}.
pub const POOLS: Collector = Collector {
    prefix: "pgbouncer_pool",
    labels: &[("datname", "database"), ("user", "user"), ("pool_mode", "pool_mode"), ("load_balance_hosts", "load_balance_hosts")],
    metrics: &[
        g("cl_active", "active_clients", "Client connections that are linked to server connection and can process queries"),
        g("cl_waiting", "waiting_clients", "Client connections that have sent queries but have not yet got a server connection"),
        g("cl_active_cancel_req", "active_cancel_clients", "Client connections that have forwarded query cancellations to the server"),
        g("cl_waiting_cancel_req", "cancel_clients", "Client connections that have not forwarded query cancellations to the server yet"),
        g("sv_active", "active_servers", "Server connections that are linked to a client"),
        g("sv_active_cancel", "active_cancel_servers", "Server connections that are currently forwarding a cancel request"),
        g("sv_being_canceled", "cancel_servers", "Servers that normally could become idle but are waiting to do so until all in-flight cancel requests have completed"),
        g("sv_idle", "idle_servers", "Server connections that are unused and immediately usable for client queries"),
        g("sv_used", "used_servers", "Server connections that have been idle for more than server_check_delay"),
        g("sv_tested", "tested_servers", "Server connections that are currently running reset or check query"),
        g("sv_login", "login_servers", "Server connections currently in the process of logging in"),
        g("maxwait", "maxwait", "How long the first (oldest) client in the queue has waited, in seconds"),
        g("maxwait_us", "maxwait_us", "Microsecond part of the maximum waiting time"),
    ],
};
