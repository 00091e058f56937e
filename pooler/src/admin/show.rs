//! SHOW commands with PgBouncer 1.25's column names and order, filled from pgmux's live state.

use std::sync::atomic::Ordering::Relaxed;

use std::collections::BTreeSet;

use super::table::{v, Table, Ty};
use super::{show_sockets, show_stats};
use crate::config::params;
use crate::shared::{RunState, Shared};

pub use crate::config::ADMIN_DB;

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
        "stats" => show_stats::stats(shared),
        "stats_totals" => show_stats::stats_totals(shared),
        "stats_averages" => show_stats::stats_averages(shared),
        "totals" => show_stats::totals(shared),
        "lists" => lists(shared),
        "users" => users(shared),
        "config" => config(shared),
        "clients" => show_sockets::clients(shared),
        "sockets" | "active_sockets" => show_sockets::sockets(shared),
        "servers" => show_sockets::servers(shared),
        "state" => state(shared),
        "patroni" => {
            let mut t = Table::text(crate::leader::SHOW_COLUMNS);
            for r in crate::leader::show_rows(shared) {
                t.row(r);
            }
            t
        }
        // pgmux's own: sessions closed with an error per pool, by whose fault.
        "faults" => {
            let mut cols = vec![("database", Ty::Text), ("user", Ty::Text)];
            cols.extend(crate::pool::SESSION_END_SIDES.iter().map(|s| (*s, Ty::Int8)));
            Table::new(&cols).with_rows(shared.pools.all().into_iter().map(|p| {
                let mut row = vec![v(&p.db), v(&p.user)];
                row.extend(
                    (0..crate::pool::SESSION_END_SIDES.len()).map(|i| v(p.counters.sum(|s| &s.sessions_closed[i]))),
                );
                row
            }))
        }
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
        ])
        .with_rows(shared.config().peers.keys().map(|id| {
            let (active, waiting) = shared.cancels.peers.counts(*id);
            // A forward is one connection that logs in and is active at once: no login phase.
            vec![v(id), v(active), v(waiting), v(active), v(0)]
        })),
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
            ("scram_client_key", Ty::Bytea),
            ("scram_server_key", Ty::Bytea),
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
    let mut rows = Vec::new();
    rows.push(vec![
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
        let waiting = (p.clients_waiting.load(Relaxed) + p.logins_waiting.load(Relaxed)).max(0);
        let clients = p.clients.load(Relaxed).max(0);
        let active = p.clients_active.load(Relaxed).max(0) as u32;
        // A server set aside before any client was active on it (its check query) is not
        // logging in.
        let aside_inactive = p.aside_inactive.load(Relaxed).clamp(0, i64::from(u32::MAX)) as u32;
        let login = c.total.saturating_sub(c.idle + active + aside_inactive);
        // Idle servers past server_check_delay are `used`, as PgBouncer's janitor moves them.
        let now = crate::clock::Micros::now();
        let used = p.idle_due_for_check(&settings, now);
        let used = used.min(c.idle);
        // A cancel is sent on a connection of its own at once: none waits for one
        // (cl_waiting_cancel_req 0); each under way is a cancel client and its connection.
        let forwarding = p.cancels.forwarding.load(Relaxed).max(0);
        let being_canceled = p.cancels.being_canceled.load(Relaxed).max(0);
        // Servers set aside (a cancel in flight, a reset running) are still checked out, but
        // no client is active on them.
        let tested = p.servers_tested.load(Relaxed).max(0);
        let active_servers = (i64::from(active) + i64::from(aside_inactive) - being_canceled - tested).max(0);
        // Clients queued for a server and clients held by PAUSE both count as waiting.
        let max_wait = c.max_wait.max(shared.client_registry.max_wait(&p.db, &p.user));
        rows.push(vec![
            v(&p.db),
            v(&p.user),
            v((clients - waiting).max(0)),
            v(waiting),
            v(forwarding),
            v(0),
            v(active_servers),
            v(forwarding),
            v(being_canceled),
            v(c.idle - used),
            v(used),
            v(tested),
            v(login),
            v(max_wait.as_secs()),
            v(max_wait.subsec_micros()),
            v(settings.mode.as_str()),
            // As PgBouncer, only a list of hosts has a way of choosing among them.
            (settings.target.hosts.len() > 1).then(|| settings.target.load_balance.as_str().to_owned()),
        ]);
    }
    sorted_into(&mut t, rows, 2);
    t
}

/// Appends `rows` ordered by their first `key` columns (name, then user), the console's row
/// (`pgbouncer`) in its place by name as in PgBouncer's lists.
fn sorted_into(t: &mut Table, mut rows: Vec<Vec<Option<String>>>, key: usize) {
    rows.sort_by(|a, b| a[..key].cmp(&b[..key]));
    for r in rows {
        t.row(r);
    }
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
    let mut rows = Vec::new();
    rows.push(vec![
        v(ADMIN_DB),
        None,
        v(listen_port),
        v(ADMIN_DB),
        v(ADMIN_DB),
        v(2),
        v(0),
        v(0),
        v(g.server_lifetime.as_secs()),
        v("statement"),
        None,
        v(0),
        v(0),
        v(config.db_client_max(None)),
        v(shared.client_counts.db(ADMIN_DB)),
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
    for name in names {
        let Some(db) = config.database(&name) else {
            continue;
        };
        rows.push(vec![
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
            (db.hosts.len() > 1).then(|| db.load_balance_hosts.as_str().to_owned()),
            v(db.max_db_connections.filter(|n| *n > 0).unwrap_or(g.max_db_connections)),
            v(shared.pools.db_connections(&name)),
            v(config.db_client_max(db.max_db_client_connections)),
            v(shared.client_counts.db(&name)),
            // The database's own pause (PAUSE db, KILL), as PgBouncer's db_paused.
            v(shared.pools.is_paused_by_name(&name) as i32),
            v(shared.pools.is_disabled(&name) as i32),
        ]);
    }
    sorted_into(&mut t, rows, 1);
    t
}

fn lists(shared: &Shared) -> Table {
    let mut t = Table::new(&[("list", Ty::Text), ("items", Ty::Int4)]);
    let config = shared.config();
    let pools = shared.pools.all();
    // The registry holds console clients too.
    let used_clients = shared.client_registry.all().len();
    let login_clients = shared.client_count().saturating_sub(used_clients);
    let (mut idle, mut total) = (0u32, 0u32);
    for p in &pools {
        let c = p.counts();
        idle += c.idle;
        total += c.total;
    }
    let users = known_users(shared, &config);
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
        // Text, as PgBouncer: "%9d" when the user sets it, empty when it inherits.
        ("pool_size", Ty::Text),
        ("reserve_pool_size", Ty::Text),
        ("pool_mode", Ty::Text),
        ("max_user_connections", Ty::Int4),
        ("current_connections", Ty::Int4),
        ("max_user_client_connections", Ty::Int4),
        ("current_client_connections", Ty::Int4),
    ]);
    let config = shared.config();
    let g = &config.general;
    let padded = |n: Option<u32>| Some(n.map(|n| format!("{n:>9}")).unwrap_or_default());
    for name in known_users(shared, &config) {
        let u = config.users.get(&name).cloned().unwrap_or_default();
        t.row(vec![
            v(&name),
            padded(u.pool_size),
            padded(u.reserve_pool_size),
            u.pool_mode.map(|m| m.as_str().to_owned()),
            v(u.max_user_connections.filter(|n| *n > 0).unwrap_or(g.max_user_connections)),
            v(shared.pools.user_connections(&name)),
            v(config.user_client_max(&name)),
            v(shared.client_counts.user(&name)),
        ]);
    }
    t
}

/// The users PgBouncer would list: the console's own (`pgbouncer`), auth_file, `[users]`,
/// forced users of databases, and users auth_query found.
fn known_users(shared: &Shared, config: &crate::config::Config) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = config.users.keys().cloned().collect();
    names.insert(ADMIN_DB.to_owned());
    names.extend(config.auth_file.keys().cloned());
    names.extend(config.databases.values().filter_map(|d| d.user.clone()));
    names.extend(shared.client_counts.user_names());
    names
}

fn config(shared: &Shared) -> Table {
    let mut t = Table::text(&["key", "value", "default", "changeable"]);
    let c = shared.config();
    let raw = |name: &str| c.raw.get(name).map(String::as_str).unwrap_or_default();
    for p in params::PARAMS {
        let value = match p.name {
            // One setting under two names: the one the file set.
            "job_name" | "service_name" => {
                Some(if raw("service_name").is_empty() { raw("job_name") } else { raw("service_name") }.to_owned())
            }
            // What was parsed (`010` is 8, `90.0` is 90); a string as given, NULL while a
            // setting whose default is NULL is unset.
            _ => match c.shown.get(p.name) {
                Some(shown) => Some(shown.clone()),
                None if p.null_default && raw(p.name).is_empty() => None,
                None => Some(raw(p.name).to_owned()),
            },
        };
        let default = (!p.null_default).then(|| p.default.to_owned());
        t.row(vec![v(p.name), value, default, v(if p.reloadable { "yes" } else { "no" })]);
    }
    t
}

fn state(shared: &Shared) -> Table {
    let mut t = Table::text(&["key", "value"]);
    let yes = |b: bool| v(if b { "yes" } else { "no" });
    // PgBouncer's one pause mode: SUSPEND is not PAUSE, and SHUTDOWN WAIT_FOR_SERVERS pauses.
    let suspended = shared.is_suspended();
    let paused = (shared.pools.all_paused() && !suspended) || shared.state() == RunState::WaitForServers;
    t.row(vec![v("active"), yes(!paused && !suspended)]);
    t.row(vec![v("paused"), yes(paused)]);
    t.row(vec![v("suspended"), yes(suspended)]);
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
