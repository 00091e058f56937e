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

pub use http::serve;
pub use render::render;

/// Rows of one SHOW command: column names and text values (None is NULL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    /// Column names in order.
    pub columns: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<Option<String>>>,
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
}

/// Where the numbers come from.
pub trait Source: Send + Sync + 'static {
    /// A consistent-enough view of the pooler now.
    fn snapshot(&self) -> Snapshot;
    /// True while the pooler accepts clients (not paused, not shutting down).
    fn healthy(&self) -> bool;
}

/// `major*10000 + minor*100 + patch` of the first `x.y.z` in `version`, as pg_exporter computes it.
pub fn version_number(version: &str) -> u32 {
    for word in version.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
        let parts: Vec<&str> = word.split('.').collect();
        if parts.len() >= 3 {
            if let (Ok(a), Ok(b), Ok(c)) = (
                parts[0].parse::<u32>(),
                parts[1].parse::<u32>(),
                parts[2].parse::<u32>(),
            ) {
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
