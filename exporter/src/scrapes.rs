//! The exporter's account of its own scrapes, under the `pgbouncer_exporter_*` names Pigsty's
//! pg_exporter gives them (its dashboards chart them): up, uptime, build, scrape counts and
//! durations, per server and per query (the four SHOW commands a scrape reads). pgmux's exporter
//! reads the pooler in process: a scrape cannot fail to reach it, so error counts stay 0 and
//! nothing is cached (`cache_ttl` 0, no hits).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::collectors::{Collector, Kind, DATABASES, LISTS, POOLS, STATS};
use crate::{MetricSet, ResultSet, Snapshot};

/// Counts and times of the scrapes served so far.
#[derive(Debug)]
pub struct Scrapes {
    started: Instant,
    count: AtomicU64,
    /// Sum of every scrape's duration, in microseconds.
    total_us: AtomicU64,
    /// The last scrape's duration, in microseconds.
    last_us: AtomicU64,
    /// When the last scrape ended, in microseconds since the Unix epoch.
    last_at_us: AtomicU64,
}

impl Default for Scrapes {
    fn default() -> Self {
        Scrapes {
            started: Instant::now(),
            count: AtomicU64::new(0),
            total_us: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
            last_at_us: AtomicU64::new(0),
        }
    }
}

/// The SHOW commands a scrape reads, by the names pg_exporter's collectors have.
fn queries(s: &Snapshot) -> [(&'static str, &'static Collector, &ResultSet); 4] {
    [
        ("pgbouncer_list", &LISTS, &s.lists),
        ("pgbouncer_database", &DATABASES, &s.databases),
        ("pgbouncer_stat", &STATS, &s.stats),
        ("pgbouncer_pool", &POOLS, &s.pools),
    ]
}

fn seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

impl Scrapes {
    /// Records a scrape that took `took`.
    pub fn record(&self, took: Duration) {
        let us = took.as_micros() as u64;
        self.count.fetch_add(1, Relaxed);
        self.total_us.fetch_add(us, Relaxed);
        self.last_us.store(us, Relaxed);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.last_at_us.store(now.as_micros() as u64, Relaxed);
    }

    /// Appends the `pgbouncer_exporter_*` families (Pigsty's names only: the community
    /// exporter has none of them).
    pub fn render(&self, out: &mut String, s: &Snapshot) {
        if s.metric_set == MetricSet::Community {
            return;
        }
        let count = self.count.load(Relaxed);
        let last = seconds(self.last_us.load(Relaxed));
        let total = seconds(self.total_us.load(Relaxed));
        let mut one = |name: &str, kind: Kind, help: &str, labels: &str, value: String| {
            let t = if kind == Kind::Counter { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {t}\n{name}{labels} {value}");
        };
        let build = format!(
            "{{version=\"{}\",revision=\"\",branch=\"\",builddate=\"\",goversion=\"\",goos=\"{}\",goarch=\"{}\"}}",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH
        );
        one(
            "pgbouncer_exporter_build_info",
            Kind::Gauge,
            "A metric with a constant '1' value labeled with the exporter's build",
            &build,
            "1".into(),
        );
        one("pgbouncer_exporter_up", Kind::Gauge, "always be 1 if the exporter is running", "", "1".into());
        one(
            "pgbouncer_exporter_uptime",
            Kind::Gauge,
            "seconds since the exporter started",
            "",
            format!("{}", self.started.elapsed().as_secs_f64()),
        );
        one(
            "pgbouncer_exporter_scrape_total_count",
            Kind::Counter,
            "times the exporter was scraped for metrics",
            "",
            count.to_string(),
        );
        one(
            "pgbouncer_exporter_scrape_error_count",
            Kind::Counter,
            "times the exporter was scraped for metrics and failed",
            "",
            "0".into(),
        );
        one(
            "pgbouncer_exporter_scrape_duration",
            Kind::Gauge,
            "seconds spent on the last scrape",
            "",
            format!("{last}"),
        );
        let at = seconds(self.last_at_us.load(Relaxed));
        one(
            "pgbouncer_exporter_last_scrape_time",
            Kind::Gauge,
            "when the last scrape ended, seconds since the epoch",
            "",
            format!("{at}"),
        );
        let server = "{datname=\"pgbouncer\"}";
        one(
            "pgbouncer_exporter_server_scrape_duration",
            Kind::Gauge,
            "seconds the last scrape of this server took",
            server,
            format!("{last}"),
        );
        one(
            "pgbouncer_exporter_server_scrape_total_seconds",
            Kind::Gauge,
            "seconds spent scraping this server",
            server,
            format!("{total}"),
        );
        one(
            "pgbouncer_exporter_server_scrape_total_count",
            Kind::Gauge,
            "times this server was scraped",
            server,
            count.to_string(),
        );
        one(
            "pgbouncer_exporter_server_scrape_error_count",
            Kind::Gauge,
            "times a scrape of this server failed",
            server,
            "0".into(),
        );
        let per_query: [(&str, &str); 7] = [
            ("cache_ttl", "seconds a query's result is cached (0: never)"),
            ("scrape_total_count", "times this query was run"),
            ("scrape_error_count", "times this query failed"),
            ("scrape_predicate_skip_count", "times this query was skipped by a predicate"),
            ("scrape_duration", "seconds this query took on the last scrape"),
            ("scrape_metric_count", "samples this query gave on the last scrape"),
            ("scrape_hit_count", "times this query's result came from the cache"),
        ];
        for (suffix, help) in per_query {
            let name = format!("pgbouncer_exporter_query_{suffix}");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (query, collector, rows) in queries(s) {
                let value = match suffix {
                    "scrape_total_count" => count.to_string(),
                    // The four are read in one pass: each is given an equal share.
                    "scrape_duration" => format!("{}", last / 4.0),
                    "scrape_metric_count" => {
                        let present = collector.metrics.iter().filter(|m| rows.columns.iter().any(|c| c == m.column));
                        (present.count() * rows.rows.len()).to_string()
                    }
                    _ => "0".into(),
                };
                let _ = writeln!(out, "{name}{{datname=\"pgbouncer\",query=\"{query}\"}} {value}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_are_counted_and_timed() {
        let scrapes = Scrapes::default();
        let s = Snapshot {
            pools: ResultSet {
                columns: vec!["database".into(), "user".into(), "cl_active".into()],
                rows: vec![vec![Some("app".into()), Some("u".into()), Some("3".into())]],
            },
            ..Snapshot::default()
        };
        scrapes.record(Duration::from_millis(2));
        scrapes.record(Duration::from_millis(4));
        let mut out = String::new();
        scrapes.render(&mut out, &s);
        for line in [
            "pgbouncer_exporter_up 1",
            "pgbouncer_exporter_scrape_total_count 2",
            "pgbouncer_exporter_scrape_duration 0.004",
            "pgbouncer_exporter_server_scrape_total_seconds{datname=\"pgbouncer\"} 0.006",
            "pgbouncer_exporter_query_scrape_metric_count{datname=\"pgbouncer\",query=\"pgbouncer_pool\"} 1",
            "pgbouncer_exporter_query_scrape_total_count{datname=\"pgbouncer\",query=\"pgbouncer_stat\"} 2",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from:\n{out}");
        }
        let mut community = String::new();
        scrapes.render(&mut community, &Snapshot { metric_set: MetricSet::Community, ..s });
        assert!(community.is_empty());
    }
}
