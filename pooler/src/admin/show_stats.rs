//! SHOW STATS, STATS_TOTALS, STATS_AVERAGES and TOTALS: counters summed per database, with the
//! admin database's row first (its logins and commands), as PgBouncer prints them.

use std::collections::BTreeMap;

use super::show::ADMIN_DB;
use super::table::{v, Table, Ty};
use crate::pool::StatsSnapshot;
use crate::shared::Shared;

/// Totals per database (pools only; the admin row is added by `rows_with_admin`).
fn per_db_totals(shared: &Shared) -> BTreeMap<String, StatsSnapshot> {
    let mut out = BTreeMap::new();
    for p in shared.pools.all() {
        *out.entry(p.db.clone()).or_insert_with(StatsSnapshot::default) += p.counters.snapshot();
    }
    out
}

fn rows_with_admin(shared: &Shared) -> Vec<(String, StatsSnapshot, StatsSnapshot)> {
    let period = shared.averages.lock().clone();
    // The admin database counts its logins and commands, as PgBouncer's admin pool does.
    let mut rows = vec![(ADMIN_DB.to_owned(), shared.admin_stats.snapshot(), StatsSnapshot::default())];
    for (db, s) in per_db_totals(shared) {
        let a = period.so_far(&db, &s);
        rows.push((db, s, a));
    }
    // By name, the console's row among the others, as PgBouncer lists its pools.
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

pub(super) fn stats(shared: &Shared) -> Table {
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
        "total_client_login_count",
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
        "avg_client_login_count",
    ];
    let mut cols = vec![("database", Ty::Text)];
    cols.extend(names.iter().map(|n| (*n, Ty::Numeric)));
    let mut t = Table::new(&cols);
    for (db, s, a) in rows_with_admin(shared) {
        let mut r = vec![v(db)];
        r.extend(counters(&s).into_iter().map(v));
        r.extend(counters(&a).into_iter().map(v));
        t.row(r);
    }
    t
}

/// The twelve counters in SHOW STATS order.
fn counters(s: &StatsSnapshot) -> [u64; 12] {
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
        s.client_login_count,
    ]
}

/// The columns STATS_TOTALS and STATS_AVERAGES share, before their prepared-statement columns.
const TOTALS_COMMON: [&str; 8] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
];

pub(super) fn stats_totals(shared: &Shared) -> Table {
    let ps = ["client_parse_count", "server_parse_count", "bind_count", "client_login_count"];
    stats_table(shared, &[&TOTALS_COMMON[..], &ps[..]].concat(), false)
}

pub(super) fn stats_averages(shared: &Shared) -> Table {
    let ps = ["avg_client_parse_count", "avg_server_parse_count", "avg_bind_count", "avg_client_login_count"];
    stats_table(shared, &[&TOTALS_COMMON[..], &ps[..]].concat(), true)
}

fn stats_table(shared: &Shared, names: &[&'static str], averages: bool) -> Table {
    let mut cols = vec![("database", Ty::Text)];
    cols.extend(names.iter().map(|n| (*n, Ty::Numeric)));
    let mut t = Table::new(&cols);
    for (db, s, a) in rows_with_admin(shared) {
        let mut r = vec![v(db)];
        r.extend(counters(if averages { &a } else { &s }).into_iter().map(v));
        t.row(r);
    }
    t
}

pub(super) fn totals(shared: &Shared) -> Table {
    let mut t = Table::new(&[("name", Ty::Text), ("value", Ty::Numeric)]);
    let per_db = per_db_totals(shared);
    // Times are per transaction (query, assignment) of all the databases together, not the
    // databases' averages added up; the console's row has no averages.
    let avg = shared.averages.lock().so_far_all(&per_db);
    let mut sum = shared.admin_stats.snapshot();
    for s in per_db.values() {
        sum += *s;
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
        "client_login_count",
    ];
    for (prefix, s) in [("total", &sum), ("avg", &avg)] {
        for (n, x) in names.iter().zip(counters(s)) {
            t.row(vec![v(format!("{prefix}_{n}")), v(x)]);
        }
    }
    t
}
