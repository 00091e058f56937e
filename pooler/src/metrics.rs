//! Feeds the exporter crate: each scrape reads the same rows the admin console's SHOW LISTS,
//! DATABASES, STATS and POOLS return, straight from pgmux's state (no SQL round trip), so the
//! metrics and the console always agree.

use std::sync::Arc;

use pgmux_exporter::{HistogramFamily, HistogramSample, ResultSet, Snapshot, Source};

use crate::pool::histogram::{Histogram, PoolHistograms, BOUNDS_US};

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
        Self { shared, listen_port }
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

impl MetricsSource {
    /// `pgmux_pool_sessions_closed_total{datname, user, side}`: sessions pgmux closed with an
    /// error, by whose fault.
    fn sessions_closed(&self) -> pgmux_exporter::CounterFamily {
        let mut samples = Vec::new();
        for p in self.shared.pools.all() {
            for (i, side) in crate::pool::SESSION_END_SIDES.iter().enumerate() {
                let labels = vec![
                    ("datname".into(), p.db.clone()),
                    ("user".into(), p.user.clone()),
                    ("side".into(), (*side).to_owned()),
                ];
                samples.push((labels, p.counters.sum(|s| &s.sessions_closed[i])));
            }
        }
        pgmux_exporter::CounterFamily {
            name: "pgmux_pool_sessions_closed_total".into(),
            gauge: false,
            help: "Sessions pgmux closed with an error, by whose fault: the client, its server, or pgmux's rules"
                .into(),
            samples,
        }
    }

    /// `pgmux_worker_busy_percent`, `pgmux_worker_clients` and `pgmux_worker_client_moves_total`
    /// by `worker`: how busy each worker thread is and what it runs (only while clients are
    /// placed by load: several threads, worker_busy_percent above 0).
    fn workers() -> Vec<pgmux_exporter::CounterFamily> {
        let figures = crate::workers::figures();
        if figures.is_empty() {
            return Vec::new();
        }
        let family =
            |name: &str, gauge: bool, help: &str, pick: fn(&(u32, u32, u64)) -> u64| pgmux_exporter::CounterFamily {
                name: name.to_owned(),
                gauge,
                help: help.to_owned(),
                samples: figures
                    .iter()
                    .enumerate()
                    .map(|(n, f)| (vec![("worker".into(), n.to_string())], pick(f)))
                    .collect(),
            };
        vec![
            family("pgmux_worker_busy_percent", true, "CPU a worker thread used, per cent of a core, smoothed", |f| {
                u64::from(f.0)
            }),
            family("pgmux_worker_clients", true, "Clients whose session runs on a worker thread", |f| u64::from(f.1)),
            family(
                "pgmux_worker_client_moves_total",
                false,
                "Clients a worker thread handed to another, between transactions",
                |f| f.2,
            ),
        ]
    }

    fn histograms(&self) -> Vec<HistogramFamily> {
        let pools = self.shared.pools.all();
        let family = |name: &str, help: &str, pick: fn(&PoolHistograms) -> &Histogram| HistogramFamily {
            name: name.to_owned(),
            help: help.to_owned(),
            samples: pools
                .iter()
                .map(|p| {
                    let (counts, sum_us) =
                        Histogram::snapshot_sum(p.counters.all().iter().map(|s| pick(&s.histograms)));
                    HistogramSample {
                        labels: vec![("datname".into(), p.db.clone()), ("user".into(), p.user.clone())],
                        bounds: BOUNDS_US.iter().map(|b| *b as f64 * 1e-6).collect(),
                        counts,
                        sum: sum_us as f64 * 1e-6,
                    }
                })
                .collect(),
        };
        vec![
            family(
                "pgmux_pool_query_duration_seconds",
                "Time from a client's request to the server's ReadyForQuery",
                |h| &h.query,
            ),
            family(
                "pgmux_pool_transaction_duration_seconds",
                "Time from the first request of a transaction to its end",
                |h| &h.xact,
            ),
            family("pgmux_pool_wait_duration_seconds", "Time clients waited for a server", |h| &h.wait),
        ]
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
            histograms: self.histograms(),
            counters: std::iter::once(pgmux_exporter::CounterFamily {
                name: "pgmux_pool_servers_rescued_total".into(),
                gauge: false,
                help: "Servers kept after their client vanished mid-query or mid-transaction (cancelled, rolled back)"
                    .into(),
                samples: self
                    .shared
                    .pools
                    .all()
                    .iter()
                    .map(|p| {
                        let labels = vec![("datname".into(), p.db.clone()), ("user".into(), p.user.clone())];
                        (labels, p.counters.sum(|s| &s.servers_rescued))
                    })
                    .collect(),
            })
            .chain(std::iter::once(self.sessions_closed()))
            .chain(Self::workers())
            .chain(crate::leader::metrics(&self.shared))
            .collect(),
            stats_totals: self.set("stats_totals"),
            config_limits: {
                let c = self.shared.config();
                (c.general.max_client_conn as u64, c.general.max_user_connections as u64)
            },
            metric_set: self.shared.config().general.exporter_metrics,
        }
    }

    fn healthy(&self) -> bool {
        self.shared.state() == RunState::Running && !self.shared.pools.all_paused()
    }

    fn role_check(&self, path: &str, query: &str) -> Option<bool> {
        use crate::leader::health;
        let check = health::Check::from_path(path)?;
        Some(health::evaluate(&self.shared, check, health::lag_of_query(query)).http_ok())
    }
}
