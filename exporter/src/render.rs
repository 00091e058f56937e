//! Prometheus text exposition (format 0.0.4) of a snapshot.

use std::fmt::Write;

use crate::collectors::{
    Collector, Kind, COMMUNITY_DATABASES, COMMUNITY_LISTS, COMMUNITY_POOLS, COMMUNITY_STATS_TOTALS, DATABASES, LISTS,
    POOLS, STATS,
};
use crate::MetricSet;
use crate::{process, version_number, HistogramFamily, ResultSet, Snapshot};

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: Kind, help: &str) {
    let t = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {t}");
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn collect(out: &mut String, c: &Collector, rs: &ResultSet) {
    let idx = |col: &str| rs.columns.iter().position(|x| x == col);
    let label_idx: Vec<(&str, Option<usize>)> = c.labels.iter().map(|(l, col)| (*l, idx(col))).collect();
    for m in c.metrics {
        let Some(i) = idx(m.column) else { continue };
        let name = format!("{}_{}", c.prefix, m.name);
        header(out, &name, m.kind, m.help);
        for row in &rs.rows {
            let Some(v) = row.get(i).and_then(|v| v.as_deref()).and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            let labels: Vec<String> = label_idx
                .iter()
                .map(|(l, j)| {
                    let val = j.and_then(|j| row.get(j).cloned().flatten()).unwrap_or_default();
                    format!("{l}=\"{}\"", escape(&val))
                })
                .collect();
            let _ = writeln!(out, "{name}{{{}}} {}", labels.join(","), number(v * m.scale));
        }
    }
}

/// The whole scrape body.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(16 * 1024);
    header(&mut out, "pgbouncer_up", Kind::Gauge, "last scrape was able to connect to the server: 1 for yes, 0 for no");
    out.push_str("pgbouncer_up 1\n");
    header(&mut out, "pgbouncer_version", Kind::Gauge, "server version number");
    let _ = writeln!(out, "pgbouncer_version {}", version_number(&s.version));
    header(&mut out, "pgbouncer_in_recovery", Kind::Gauge, "server is in recovery mode? 1 for yes 0 for no");
    out.push_str("pgbouncer_in_recovery 0\n");
    if s.metric_set != MetricSet::Community {
        collect(&mut out, &LISTS, &s.lists);
        collect(&mut out, &DATABASES, &s.databases);
        collect(&mut out, &STATS, &s.stats);
        collect(&mut out, &POOLS, &s.pools);
    }
    if s.metric_set != MetricSet::Pigsty {
        community(&mut out, s);
    }
    for h in &s.histograms {
        render_histogram(&mut out, h);
    }
    for c in &s.counters {
        header(&mut out, &c.name, if c.gauge { Kind::Gauge } else { Kind::Counter }, &c.help);
        for (labels, value) in &c.samples {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = writeln!(out, "{}{{{}}} {value}", c.name, labels.join(","));
        }
    }
    process::render(&mut out);
    out
}

/// The prometheus-community/pgbouncer_exporter names.
fn community(out: &mut String, s: &Snapshot) {
    header(out, "pgbouncer_version_info", Kind::Gauge, "The pgbouncer version info");
    let _ = writeln!(out, "pgbouncer_version_info{{version=\"{}\"}} 1", escape(&s.version));
    collect(out, &COMMUNITY_STATS_TOTALS, &s.stats_totals);
    collect(out, &COMMUNITY_POOLS, &s.pools);
    collect(out, &COMMUNITY_DATABASES, &s.databases);
    let list = s.lists.columns.iter().position(|c| c == "list");
    let items = s.lists.columns.iter().position(|c| c == "items");
    if let (Some(l), Some(i)) = (list, items) {
        for (key, name, help) in COMMUNITY_LISTS {
            let value = s.lists.rows.iter().find(|r| r.get(l).cloned().flatten().as_deref() == Some(*key));
            if let Some(v) = value.and_then(|r| r.get(i).cloned().flatten()) {
                header(out, name, Kind::Gauge, help);
                let _ = writeln!(out, "{name} {v}");
            }
        }
    }
    header(out, "pgbouncer_config_max_client_connections", Kind::Gauge, "Config maximum number of client connections");
    let _ = writeln!(out, "pgbouncer_config_max_client_connections {}", s.config_limits.0);
    header(
        out,
        "pgbouncer_config_max_user_connections",
        Kind::Gauge,
        "Config maximum number of server connections per user",
    );
    let _ = writeln!(out, "pgbouncer_config_max_user_connections {}", s.config_limits.1);
}

/// One histogram family in the text format: cumulative `_bucket{le}`, `_sum`, `_count`.
pub fn render_histogram(out: &mut String, h: &HistogramFamily) {
    let _ = writeln!(out, "# HELP {} {}\n# TYPE {} histogram", h.name, h.help, h.name);
    for s in &h.samples {
        let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
        let base = labels.join(",");
        let sep = if base.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, c) in s.counts.iter().enumerate() {
            cumulative += c;
            let le = s.bounds.get(i).map(|b| format!("{b}")).unwrap_or_else(|| "+Inf".into());
            let _ = writeln!(out, "{}_bucket{{{base}{sep}le=\"{le}\"}} {cumulative}", h.name);
        }
        let _ = writeln!(out, "{}_sum{{{base}}} {}", h.name, s.sum);
        let _ = writeln!(out, "{}_count{{{base}}} {cumulative}", h.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(cols: &[&str], rows: &[&[Option<&str>]]) -> ResultSet {
        ResultSet {
            columns: cols.iter().map(|c| c.to_string()).collect(),
            rows: rows.iter().map(|r| r.iter().map(|v| v.map(str::to_owned)).collect()).collect(),
        }
    }

    #[test]
    fn names_labels_types_and_units_follow_pg_exporter() {
        let snap = Snapshot {
            version: "PgBouncer 1.25.2 (pgmux 0.1.0)".into(),
            lists: rs(&["list", "items"], &[&[Some("pools"), Some("3")]]),
            databases: rs(
                &["name", "host", "port", "database", "pool_size", "reserve_pool_size", "paused"],
                &[&[Some("app"), None, Some("5432"), Some("real\"db"), Some("20"), Some("5"), Some("0")]],
            ),
            stats: rs(
                &["database", "total_xact_count", "total_xact_time"],
                &[&[Some("app"), Some("10"), Some("2500000")]],
            ),
            pools: rs(
                &["database", "user", "cl_active", "pool_mode", "load_balance_hosts"],
                &[&[Some("app"), Some("u"), Some("4"), Some("transaction"), Some("round-robin")]],
            ),
            histograms: vec![HistogramFamily {
                name: "pgmux_pool_query_duration_seconds".into(),
                help: "Query latency".into(),
                samples: vec![crate::HistogramSample {
                    labels: vec![("datname".into(), "app".into())],
                    bounds: vec![0.001, 0.01],
                    counts: vec![2, 1, 1],
                    sum: 0.5,
                }],
            }],
            metric_set: MetricSet::Both,
            ..Default::default()
        };
        let text = render(&snap);
        for line in [
            "pgbouncer_up 1",
            "pgbouncer_version 12502",
            "# TYPE pgbouncer_list_items gauge",
            "pgbouncer_list_items{list=\"pools\"} 3",
            "pgbouncer_database_pool_size{datname=\"app\",host=\"\",port=\"5432\",real_datname=\"real\\\"db\"} 20",
            "pgbouncer_database_reserve_pool{datname=\"app\",host=\"\",port=\"5432\",real_datname=\"real\\\"db\"} 5",
            "# TYPE pgbouncer_stat_total_xact_count counter",
            "pgbouncer_stat_total_xact_count{datname=\"app\"} 10",
            "pgbouncer_stat_total_xact_time{datname=\"app\"} 2.5",
            "pgbouncer_pool_active_clients{datname=\"app\",user=\"u\",pool_mode=\"transaction\",load_balance_hosts=\"round-robin\"} 4",
            "# TYPE pgmux_pool_query_duration_seconds histogram",
            "pgmux_pool_query_duration_seconds_bucket{datname=\"app\",le=\"0.001\"} 2",
            "pgmux_pool_query_duration_seconds_bucket{datname=\"app\",le=\"0.01\"} 3",
            "pgmux_pool_query_duration_seconds_bucket{datname=\"app\",le=\"+Inf\"} 4",
            "pgmux_pool_query_duration_seconds_count{datname=\"app\"} 4",
            "pgbouncer_pools_client_active_connections{database=\"app\",user=\"u\"} 4",
            "pgbouncer_version_info{version=\"PgBouncer 1.25.2 (pgmux 0.1.0)\"} 1",
            "pgbouncer_pools 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
