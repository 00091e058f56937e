//! The metrics endpoint: renders what a `Source` reports (the same rows the admin console's SHOW
//! commands return) in the Prometheus text format with the metric names, labels and units that
//! Pigsty's pg_exporter produces for PgBouncer 1.24+, and serves it on HTTP with a health check.
//! It knows nothing of the pooler's internals.
#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::all)]

mod collectors;
mod http;
mod process;
mod render;
pub mod request;
mod scrapes;

pub use http::{serve, MAX_CONNECTIONS, MAX_PER_ADDRESS};
pub use render::render;
pub use render::render_histogram;

/// Rows of one SHOW command: column names and text values (None is NULL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    /// Column names in order.
    pub columns: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<Option<String>>>,
}

/// Which metric names to serve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetricSet {
    /// Pigsty's pg_exporter names (`pgbouncer_pool_*`, `pgbouncer_stat_*` ...).
    #[default]
    Pigsty,
    /// prometheus-community/pgbouncer_exporter names (`pgbouncer_pools_*`, `pgbouncer_stats_totals_*` ...).
    Community,
    /// Both; the names do not collide.
    Both,
}

impl MetricSet {
    /// Parses `pigsty`, `community` or `both`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pigsty" | "pg_exporter" => Some(MetricSet::Pigsty),
            "community" | "pgbouncer_exporter" => Some(MetricSet::Community),
            "both" => Some(MetricSet::Both),
            _ => None,
        }
    }
}

/// One labelled histogram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSample {
    /// Label names and values.
    pub labels: Vec<(String, String)>,
    /// Bucket upper bounds in seconds (the +Inf bucket is implied).
    pub bounds: Vec<f64>,
    /// Observations per bucket, not cumulative; one more than `bounds` (+Inf).
    pub counts: Vec<u64>,
    /// Sum of observations in seconds.
    pub sum: f64,
}

/// A counter (or gauge) metric family (pgmux's own, beyond PgBouncer's columns).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CounterFamily {
    /// Metric name.
    pub name: String,
    /// Rendered as a gauge (a value that goes up and down) instead of a counter.
    pub gauge: bool,
    /// HELP text.
    pub help: String,
    /// Label sets and values.
    pub samples: Vec<(Vec<(String, String)>, u64)>,
}

/// A histogram metric family.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramFamily {
    /// Metric name.
    pub name: String,
    /// HELP text.
    pub help: String,
    /// Samples.
    pub samples: Vec<HistogramSample>,
}

/// Everything one scrape reports.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// SHOW VERSION's string, e.g. `PgBouncer 1.25.2 (pgmux 0.1.0)`.
    pub version: String,
    /// SHOW LISTS.
    pub lists: ResultSet,
    /// SHOW DATABASES.
    pub databases: ResultSet,
    /// SHOW STATS.
    pub stats: ResultSet,
    /// SHOW POOLS.
    pub pools: ResultSet,
    /// Latency histograms (pgmux's own, beyond PgBouncer).
    pub histograms: Vec<HistogramFamily>,
    /// Counters and gauges (pgmux's own, beyond PgBouncer).
    pub counters: Vec<CounterFamily>,
    /// SHOW STATS_TOTALS (community set).
    pub stats_totals: ResultSet,
    /// max_client_conn and max_user_connections (community set).
    pub config_limits: (u64, u64),
    /// Which names to render.
    pub metric_set: MetricSet,
}

/// Where the numbers come from.
pub trait Source: Send + Sync + 'static {
    /// A consistent-enough view of the pooler now.
    fn snapshot(&self) -> Snapshot;
    /// True while the pooler accepts clients (not paused, not shutting down).
    fn healthy(&self) -> bool;
    /// A role check HAProxy asks for (`/primary`, `/replica`, `/read-write`, `/read-only`, with
    /// the query string, e.g. `lag=16MB`): Some(answer), or None when `path` is not one.
    fn role_check(&self, _path: &str, _query: &str) -> Option<bool> {
        None
    }
}

/// `major*10000 + minor*100 + patch` of the first `x.y.z` in `version`, as pg_exporter computes it.
pub fn version_number(version: &str) -> u32 {
    for word in version.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
        let parts: Vec<&str> = word.split('.').collect();
        if parts.len() >= 3 {
            if let (Ok(a), Ok(b), Ok(c)) = (parts[0].parse::<u32>(), parts[1].parse::<u32>(), parts[2].parse::<u32>()) {
                return a * 10000 + b * 100 + c;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_number_reads_the_first_triple() {
        assert_eq!(version_number("PgBouncer 1.25.2 (pgmux 0.1.0)"), 12502);
        assert_eq!(version_number("nothing"), 0);
    }
}
