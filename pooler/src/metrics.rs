//! Feeds the exporter crate: each scrape reads the same rows the admin console's SHOW LISTS,
//! DATABASES, STATS and POOLS return, straight from pgmux's state (no SQL round trip), so the
//! metrics and the console always agree.

use std::sync::Arc;

use pgmux_exporter::{ResultSet, Snapshot, Source};

use crate::admin;
use crate::shared::{RunState, Shared};

/// The pooler as a metrics source.
pub struct MetricsSource {
    shared: Arc<Shared>,
    listen_port: u16,
}

impl MetricsSource {
    /// A source reading `shared`.
    pub fn new(shared: Arc<Shared>, listen_port: u16) -> Self {
        Self {
            shared,
            listen_port,
        }
    }

    fn set(&self, what: &str) -> ResultSet {
        match admin::show(&self.shared, what, self.listen_port) {
            Some(t) => {
                let (columns, rows) = t.into_parts();
                ResultSet { columns, rows }
            }
            None => ResultSet::default(),
        }
    }
}

impl Source for MetricsSource {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: crate::version_string(),
            lists: self.set("lists"),
            databases: self.set("databases"),
            stats: self.set("stats"),
            pools: self.set("pools"),
        }
    }

    fn healthy(&self) -> bool {
        self.shared.state() == RunState::Running && !self.shared.pools.all_paused()
    }
}
