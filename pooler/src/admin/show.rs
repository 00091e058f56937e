//! SHOW commands with PgBouncer 1.25's column names and order, filled from pgmux's live state.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use super::table::{v, Table, Ty};
use crate::config::params;
use crate::net::PeerAddr;
use crate::pool::StatsSnapshot;
use crate::shared::{RunState, Shared};

/// The admin pseudo-database.
pub const ADMIN_DB: &str = "pgbouncer";

/// What `SHOW <what>` produces, or None for an unknown subject.
pub fn show(shared: &Shared, what: &str, listen_port: u16) -> Option<Table> {
    Some(match what {
        "version" => {
            let mut t = Table::text(&["version"]);
            t.row(vec![v(crate::version_string())]);
            t
        }
        "pools" => pools(shared),
        "databases" => databases(shared, listen_port),
        "stats" => stats(shared),
        "stats_totals" => stats_totals(shared),
        "stats_averages" => stats_averages(shared),
        "totals" => totals(shared),
        "lists" => lists(shared),
        "users" => users(shared),
        "config" => config(shared),
        "clients" => clients(shared, false),
        "sockets" | "active_sockets" => clients(shared, true),
        "servers" => servers(shared),
        "state" => state(shared),
        "peers" => {
            Table::new(&[("peer_id", Ty::Int4), ("host", Ty::Text), ("port", Ty::Int4), ("pool_size", Ty::Int4)])
                .with_rows(shared.config().peers.iter().map(|(id, p)| {
                    vec![
                        v(id),
                        v(&p.host),
                        v(p.port),
                        v(p.pool_size.unwrap_or(shared.config().general.default_pool_size)),
                    ]
                }))
        }
        "peer_pools" => Table::new(&[
            ("peer_id", Ty::Int4),
            ("cl_active_cancel_req", Ty::Int4),
            ("cl_waiting_cancel_req", Ty::Int4),
            ("sv_active_cancel", Ty::Int4),
            ("sv_login", Ty::Int4),
        ]),
        "mem" => Table::new(&[
            ("name", Ty::Text),
            ("size", Ty::Int4),
            ("used", Ty::Int4),
            ("free", Ty::Int4),
            ("memtotal", Ty::Int4),
        ]),
        "fds" => Table::new(&[
            ("fd", Ty::Int4),
            ("task", Ty::Text),
            ("user", Ty::Text),
            ("database", Ty::Text),
            ("addr", Ty::Text),
            ("port", Ty::Int4),
            ("cancel", Ty::Int8),
            ("link", Ty::Int4),
            ("client_encoding", Ty::Text),
            ("std_strings", Ty::Text),
            ("datestyle", Ty::Text),
            ("timezone", Ty::Text),
            ("password", Ty::Text),
            ("scram_client_key", Ty::Text),
            ("scram_server_key", Ty::Text),
        ]),
        "dns_hosts" => Table::new(&[("hostname", Ty::Text), ("ttl", Ty::Int8), ("addrs", Ty::Text)]),
        "dns_zones" => Table::new(&[("zonename", Ty::Text), ("serial", Ty::Int8), ("count", Ty::Int4)]),
        _ => return None,
    })
}

impl Table {
    fn with_rows(mut self, rows: impl Iterator<Item = Vec<Option<String>>>) -> Self {
        for r in rows {
            self.row(r);
        }
        self
    }
}

fn pools(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("database", Ty::Text),
        ("user", Ty::Text),
        ("cl_active", Ty::Int4),
        ("cl_waiting", Ty::Int4),
        ("cl_active_cancel_req", Ty::Int4),
        ("cl_waiting_cancel_req", Ty::Int4),
        ("sv_active", Ty::Int4),
        ("sv_active_cancel", Ty::Int4),
        ("sv_being_canceled", Ty::Int4),
        ("sv_idle", Ty::Int4),
        ("sv_used", Ty::Int4),
        ("sv_tested", Ty::Int4),
        ("sv_login", Ty::Int4),
        ("maxwait", Ty::Int4),
        ("maxwait_us", Ty::Int4),
        ("pool_mode", Ty::Text),
        ("load_balance_hosts", Ty::Text),
    ]);
    let admin_clients = shared.admin_clients.load(Relaxed);
    t.row(vec![
        v(ADMIN_DB),
        v(ADMIN_DB),
        v(admin_clients),
        v(0),
        v(0),
        v(0),
        v(0),
        v(0),
        v(0),
        v(0),
        v(0),
        v(0),
        v(0),
        v(0),
        v(0),
        v("statement"),
        None,
    ]);
    for p in shared.pools.all() {
        let c = p.counts();
        let settings = p.settings();
        let waiting = p.clients_waiting.load(Relaxed).max(0);
        let clients = p.clients.load(Relaxed).max(0);
        let active = p.clients_active.load(Relaxed).max(0) as u32;
        let login = c.total.saturating_sub(c.idle + active);
        t.row(vec![
            v(&p.db),
            v(&p.user),
            v((clients - waiting).max(0)),
            v(waiting),
            v(0),
            v(0),
            v(active),
            v(0),
            v(0),
            v(c.idle),
            v(0),
            v(0),
            v(login),
            v(c.max_wait.as_secs()),
            v(c.max_wait.subsec_micros()),
            v(settings.mode.as_str()),
            v(settings.target.load_balance.as_str()),
        ]);
    }
    t
}

fn databases(shared: &Shared, listen_port: u16) -> Table {
    let mut t = Table::new(&[
        ("name", Ty::Text),
        ("host", Ty::Text),
        ("port", Ty::Int4),
        ("database", Ty::Text),
        ("force_user", Ty::Text),
        ("pool_size", Ty::Int4),
        ("min_pool_size", Ty::Int4),
        ("reserve_pool_size", Ty::Int4),
        ("server_lifetime", Ty::Int4),
        ("pool_mode", Ty::Text),
        ("load_balance_hosts", Ty::Text),
        ("max_connections", Ty::Int4),
        ("current_connections", Ty::Int4),
        ("max_client_connections", Ty::Int4),
        ("current_client_connections", Ty::Int4),
        ("paused", Ty::Int4),
        ("disabled", Ty::Int4),
    ]);
    let config = shared.config();
    let g = &config.general;
    t.row(vec![
        v(ADMIN_DB),
        None,
        v(listen_port),
        v(ADMIN_DB),
        v(ADMIN_DB),
        v(2),
        v(0),
        v(0),
        v(0),
        v("statement"),
        None,
        v(0),
        v(0),
        v(0),
        v(shared.admin_clients.load(Relaxed)),
        v(0),
        v(0),
    ]);
    let mut names: Vec<String> = config.databases.keys().filter(|n| *n != "*").cloned().collect();
    for p in shared.pools.all() {
        if !names.contains(&p.db) {
            names.push(p.db.clone());
        }
    }
    names.sort();
    let pools = shared.pools.all();
    for name in names {
        let Some(db) = config.database(&name) else {
            continue;
        };
        let clients: i64 = pools.iter().filter(|p| p.db == name).map(|p| p.clients.load(Relaxed).max(0)).sum();
        t.row(vec![
            v(&name),
            Some(db.host_text()).filter(|h| !h.is_empty()),
            v(db.port),
            v(db.target_dbname()),
            db.user.clone(),
            v(db.pool_size.unwrap_or(g.default_pool_size)),
            v(db.min_pool_size.unwrap_or(g.min_pool_size)),
            v(db.reserve_pool_size.unwrap_or(g.reserve_pool_size)),
            v(db.server_lifetime.unwrap_or(g.server_lifetime).as_secs()),
            db.pool_mode.map(|m| m.as_str().to_owned()),
            v(db.load_balance_hosts.as_str()),
            v(db.max_db_connections.unwrap_or(g.max_db_connections)),
            v(shared.pools.db_connections(&name)),
            v(db.max_db_client_connections.unwrap_or(0)),
            v(clients),
            v(shared.pools.is_paused(&name) as i32),
            v(shared.pools.is_disabled(&name) as i32),
        ]);
    }
    t
}

/// Totals per database, the admin database first (all zero), then by name.
fn per_db_totals(shared: &Shared) -> BTreeMap<String, StatsSnapshot> {
    let mut out = BTreeMap::new();
    for p in shared.pools.all() {
        *out.entry(p.db.clone()).or_insert_with(StatsSnapshot::default) += p.stats.snapshot();
    }
    out
}

fn rows_with_admin(shared: &Shared) -> Vec<(String, StatsSnapshot, StatsSnapshot)> {
    let averages = shared.averages.lock().clone();
    let mut rows = vec![(ADMIN_DB.to_owned(), StatsSnapshot::default(), StatsSnapshot::default())];
    for (db, s) in per_db_totals(shared) {
        let a = averages.get(&db).copied().unwrap_or_default();
        rows.push((db, s, a));
    }
    rows
}

fn stats(shared: &Shared) -> Table {
    let names = [
        "total_server_assignment_count",
        "total_xact_count",
        "total_query_count",
        "total_received",
        "total_sent",
        "total_xact_time",
        "total_query_time",
        "total_wait_time",
        "total_client_parse_count",
        "total_server_parse_count",
        "total_bind_count",
        "avg_server_assignment_count",
        "avg_xact_count",
        "avg_query_count",
        "avg_recv",
        "avg_sent",
        "avg_xact_time",
        "avg_query_time",
        "avg_wait_time",
        "avg_client_parse_count",
        "avg_server_parse_count",
        "avg_bind_count",
    ];
    let mut cols = vec![("database", Ty::Text)];
    cols.extend(names.iter().map(|n| (*n, Ty::Int8)));
    let mut t = Table::new(&cols);
    for (db, s, a) in rows_with_admin(shared) {
        let mut r = vec![v(db)];
        r.extend(counters(&s).into_iter().map(v));
        r.extend(counters(&a).into_iter().map(v));
        t.row(r);
    }
    t
}

/// The eleven counters in SHOW STATS order.
fn counters(s: &StatsSnapshot) -> [u64; 11] {
    [
        s.server_assignment_count,
        s.xact_count,
        s.query_count,
        s.bytes_received,
        s.bytes_sent,
        s.xact_time_us,
        s.query_time_us,
        s.wait_time_us,
        s.client_parse_count,
        s.server_parse_count,
        s.bind_count,
    ]
}

fn stats_totals(shared: &Shared) -> Table {
    stats_table(
        shared,
        &[
            "server_assignment_count",
            "xact_count",
            "query_count",
            "bytes_received",
            "bytes_sent",
            "xact_time",
            "query_time",
            "wait_time",
            "client_parse_count",
            "server_parse_count",
            "bind_count",
        ],
        false,
    )
}

fn stats_averages(shared: &Shared) -> Table {
    stats_table(
        shared,
        &[
            "server_assignment_count",
            "xact_count",
            "query_count",
            "bytes_received",
            "bytes_sent",
            "xact_time",
            "query_time",
            "wait_time",
            "avg_client_parse_count",
            "avg_server_parse_count",
            "avg_bind_count",
        ],
        true,
    )
}

fn stats_table(shared: &Shared, names: &[&'static str], averages: bool) -> Table {
    let mut cols = vec![("database", Ty::Text)];
    cols.extend(names.iter().map(|n| (*n, Ty::Int8)));
    let mut t = Table::new(&cols);
    for (db, s, a) in rows_with_admin(shared) {
        let mut r = vec![v(db)];
        r.extend(counters(if averages { &a } else { &s }).into_iter().map(v));
        t.row(r);
    }
    t
}

fn totals(shared: &Shared) -> Table {
    let mut t = Table::new(&[("name", Ty::Text), ("value", Ty::Int8)]);
    let mut sum = StatsSnapshot::default();
    let mut avg = StatsSnapshot::default();
    for (_, s, a) in rows_with_admin(shared) {
        sum += s;
        avg += a;
    }
    let names = [
        "server_assignment_count",
        "xact_count",
        "query_count",
        "client_bytes",
        "server_bytes",
        "xact_time",
        "query_time",
        "wait_time",
        "ps_client_parse_count",
        "ps_server_parse_count",
        "ps_bind_count",
    ];
    for (prefix, s) in [("total", &sum), ("avg", &avg)] {
        for (n, x) in names.iter().zip(counters(s)) {
            t.row(vec![v(format!("{prefix}_{n}")), v(x)]);
        }
    }
    t
}

fn lists(shared: &Shared) -> Table {
    let mut t = Table::new(&[("list", Ty::Text), ("items", Ty::Int4)]);
    let config = shared.config();
    let pools = shared.pools.all();
    let used_clients = shared.client_registry.all().len() + shared.admin_clients.load(Relaxed) as usize;
    let login_clients = shared.client_count().saturating_sub(used_clients);
    let (mut idle, mut total) = (0u32, 0u32);
    for p in &pools {
        let c = p.counts();
        idle += c.idle;
        total += c.total;
    }
    let users: std::collections::BTreeSet<&String> = config.users.keys().chain(config.auth_file.keys()).collect();
    let dbs = config.databases.keys().filter(|n| *n != "*").count() + 1;
    for (name, n) in [
        ("databases", dbs),
        ("users", users.len()),
        ("peers", config.peers.len()),
        ("pools", pools.len() + 1),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", used_clients),
        ("login_clients", login_clients),
        ("free_servers", 0),
        ("used_servers", total as usize),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ] {
        t.row(vec![v(name), v(n)]);
    }
    let _ = idle;
    t
}

fn users(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("name", Ty::Text),
        ("pool_size", Ty::Int4),
        ("reserve_pool_size", Ty::Int4),
        ("pool_mode", Ty::Text),
        ("max_user_connections", Ty::Int4),
        ("current_connections", Ty::Int4),
        ("max_user_client_connections", Ty::Int4),
        ("current_client_connections", Ty::Int4),
    ]);
    let config = shared.config();
    let g = &config.general;
    let mut names: std::collections::BTreeSet<String> = config.users.keys().cloned().collect();
    names.extend(config.auth_file.keys().cloned());
    let pools = shared.pools.all();
    for name in names {
        let u = config.users.get(&name).cloned().unwrap_or_default();
        let servers: u32 = pools.iter().filter(|p| p.user == name).map(|p| p.counts().total).sum();
        let clients: i64 = pools.iter().filter(|p| p.user == name).map(|p| p.clients.load(Relaxed).max(0)).sum();
        t.row(vec![
            v(&name),
            u.pool_size.map(|x| x.to_string()),
            u.reserve_pool_size.map(|x| x.to_string()),
            u.pool_mode.map(|m| m.as_str().to_owned()),
            v(u.max_user_connections.unwrap_or(g.max_user_connections)),
            v(servers),
            v(u.max_user_client_connections.unwrap_or(0)),
            v(clients),
        ]);
    }
    t
}

fn config(shared: &Shared) -> Table {
    let mut t = Table::text(&["key", "value", "default", "changeable"]);
    let c = shared.config();
    for p in params::PARAMS {
        let value = c.raw.get(p.name).cloned().unwrap_or_default();
        t.row(vec![v(p.name), v(value), v(p.default), v(if p.reloadable { "yes" } else { "no" })]);
    }
    t
}

fn state(shared: &Shared) -> Table {
    let mut t = Table::text(&["key", "value"]);
    let yes = |b: bool| v(if b { "yes" } else { "no" });
    t.row(vec![v("active"), yes(shared.state() == RunState::Running && !shared.pools.all_paused())]);
    t.row(vec![v("paused"), yes(shared.pools.all_paused())]);
    t.row(vec![v("suspended"), yes(false)]);
    t
}

fn socket_cols(sockets: bool) -> Vec<(&'static str, Ty)> {
    let mut cols = vec![
        ("type", Ty::Text),
        ("user", Ty::Text),
        ("database", Ty::Text),
        ("replication", Ty::Text),
        ("state", Ty::Text),
        ("addr", Ty::Text),
        ("port", Ty::Int4),
        ("local_addr", Ty::Text),
        ("local_port", Ty::Int4),
        ("connect_time", Ty::Text),
        ("request_time", Ty::Text),
        ("wait", Ty::Int4),
        ("wait_us", Ty::Int4),
        ("close_needed", Ty::Int4),
        ("ptr", Ty::Text),
        ("link", Ty::Text),
        ("remote_pid", Ty::Int4),
        ("tls", Ty::Text),
        ("application_name", Ty::Text),
        ("prepared_statements", Ty::Int4),
        ("id", Ty::Int8),
    ];
    if sockets {
        for c in ["recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain", "pkt_avail", "send_avail"] {
            cols.push((c, Ty::Int4));
        }
    }
    cols
}

fn time_text(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // Civil date from days since the epoch (Howard Hinnant's algorithm), UTC.
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}

fn addr_port(a: &PeerAddr) -> (Option<String>, Option<String>) {
    match a {
        PeerAddr::Tcp(s) => (v(s.ip()), v(s.port())),
        PeerAddr::Unix(_) => (v("unix"), v(0)),
    }
}

fn clients(shared: &Shared, sockets: bool) -> Table {
    let mut t = Table::new(&socket_cols(sockets));
    for c in shared.client_registry.all() {
        let (addr, port) = addr_port(&c.addr);
        let pid = c.server_pid.load(Relaxed);
        let req_us = c.request_time_us.load(Relaxed);
        let req = if req_us == 0 { c.connect_time } else { UNIX_EPOCH + std::time::Duration::from_micros(req_us) };
        let mut r = vec![
            v("C"),
            v(&c.user),
            v(&c.db),
            v("none"),
            v(c.state().as_str()),
            addr,
            port,
            None,
            None,
            v(time_text(c.connect_time)),
            v(time_text(req)),
            v(0),
            v(0),
            v(0),
            v(format!("0x{:x}", c.id)),
            None,
            v(pid),
            None,
            v(&c.application_name),
            v(0),
            v(c.id),
        ];
        if sockets {
            r.extend(std::iter::repeat_n(v(0), 7));
        }
        t.row(r);
    }
    t
}

fn servers(shared: &Shared) -> Table {
    let mut t = Table::new(&socket_cols(false));
    for c in shared.client_registry.all() {
        let pid = c.server_pid.load(Relaxed);
        if pid == 0 {
            continue;
        }
        t.row(vec![
            v("S"),
            v(&c.user),
            v(&c.db),
            v("none"),
            v("active"),
            None,
            None,
            None,
            None,
            None,
            None,
            v(0),
            v(0),
            v(0),
            None,
            v(format!("0x{:x}", c.id)),
            v(pid),
            None,
            v(&c.application_name),
            v(0),
            None,
        ]);
    }
    for p in shared.pools.all() {
        for (pid, created, addr) in p.idle_servers() {
            let (a, port) = addr_port(&addr);
            t.row(vec![
                v("S"),
                v(&p.user),
                v(&p.db),
                v("none"),
                v("idle"),
                a,
                port,
                None,
                None,
                v(time_text(created)),
                None,
                v(0),
                v(0),
                v(0),
                None,
                None,
                v(pid),
                None,
                None,
                v(0),
                None,
            ]);
        }
    }
    t
}

/// Users that may use the console, and whether they may change things.
pub fn console_role(shared: &Shared, user: &str) -> Option<bool> {
    let c = shared.config();
    let g = &c.general;
    if g.admin_users.iter().any(|u| u == user) {
        Some(true)
    } else if g.stats_users.iter().any(|u| u == user) {
        Some(false)
    } else {
        None
    }
}
