//! Per-database averages, as SHOW STATS reports them: counts and bytes per second, transaction
//! and query times per transaction / query, wait time per assignment (µs). As PgBouncer's, they
//! run from the start of the last whole stats_period to the moment of the SHOW (one to two
//! periods, so they move smoothly); the periodic `stats:` log line gives each whole period's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Pool, StatsSnapshot};

/// The totals per database at the start of the current period and of the one before, and when
/// they started (PgBouncer's newer_stats / new_stamp and older_stats / old_stamp).
#[derive(Debug, Clone)]
pub struct AveragesPeriod {
    start: Instant,
    totals: HashMap<String, StatsSnapshot>,
    before_start: Instant,
    before_totals: HashMap<String, StatsSnapshot>,
}

impl Default for AveragesPeriod {
    fn default() -> Self {
        Self::new()
    }
}

fn per_db(pools: &[Arc<Pool>]) -> HashMap<String, StatsSnapshot> {
    let mut out: HashMap<String, StatsSnapshot> = HashMap::new();
    for p in pools {
        *out.entry(p.db.clone()).or_default() += p.counters.snapshot();
    }
    out
}

/// Averages of `now - before` over `secs`.
pub fn averages(before: &StatsSnapshot, now: &StatsSnapshot, secs: f64) -> StatsSnapshot {
    let d = |a: u64, b: u64| a.saturating_sub(b);
    let rate = |a: u64, b: u64| (d(a, b) as f64 / secs.max(1e-9)).round() as u64;
    let per = |t: u64, tb: u64, n: u64, nb: u64| d(t, tb).checked_div(d(n, nb)).unwrap_or(0);
    StatsSnapshot {
        server_assignment_count: rate(now.server_assignment_count, before.server_assignment_count),
        xact_count: rate(now.xact_count, before.xact_count),
        query_count: rate(now.query_count, before.query_count),
        bytes_received: rate(now.bytes_received, before.bytes_received),
        bytes_sent: rate(now.bytes_sent, before.bytes_sent),
        xact_time_us: per(now.xact_time_us, before.xact_time_us, now.xact_count, before.xact_count),
        query_time_us: per(now.query_time_us, before.query_time_us, now.query_count, before.query_count),
        wait_time_us: per(
            now.wait_time_us,
            before.wait_time_us,
            now.server_assignment_count,
            before.server_assignment_count,
        ),
        client_parse_count: rate(now.client_parse_count, before.client_parse_count),
        server_parse_count: rate(now.server_parse_count, before.server_parse_count),
        bind_count: rate(now.bind_count, before.bind_count),
        client_login_count: rate(now.client_login_count, before.client_login_count),
    }
}

impl AveragesPeriod {
    /// A period starting now with zero totals (the one before it a second earlier, as
    /// PgBouncer's stats_setup).
    pub fn new() -> Self {
        let start = Instant::now();
        let before_start = start.checked_sub(Duration::from_secs(1)).unwrap_or(start);
        Self { start, totals: HashMap::new(), before_start, before_totals: HashMap::new() }
    }

    /// The averages of database `db`, whose totals are `now`, from the start of the period
    /// before the current one to now (PgBouncer's calc_average at a SHOW).
    pub fn so_far(&self, db: &str, now: &StatsSnapshot) -> StatsSnapshot {
        let before = self.before_totals.get(db).copied().unwrap_or_default();
        averages(&before, now, self.before_start.elapsed().as_secs_f64())
    }

    /// The averages over all the databases in `now` (each with its totals), as one: times per
    /// transaction, query and assignment of them all, counts and bytes per second of them all
    /// (SHOW TOTALS, PgBouncer's calc_average over the summed pools).
    pub fn so_far_all<'a>(&self, now: impl IntoIterator<Item = (&'a String, &'a StatsSnapshot)>) -> StatsSnapshot {
        // Each database's part first: one whose pools were dropped must not take from the others.
        let mut counted = StatsSnapshot::default();
        for (db, s) in now {
            counted += s.since(&self.before_totals.get(db).copied().unwrap_or_default());
        }
        averages(&StatsSnapshot::default(), &counted, self.before_start.elapsed().as_secs_f64())
    }

    /// When `period` has passed, the averages of the period just ended per database, and over
    /// all databases (the periodic `stats:` log line).
    pub fn tick(
        &mut self,
        pools: &[Arc<Pool>],
        period: Duration,
    ) -> Option<(HashMap<String, StatsSnapshot>, StatsSnapshot)> {
        let elapsed = self.start.elapsed();
        if period.is_zero() || elapsed < period {
            return None;
        }
        let now = per_db(pools);
        let secs = elapsed.as_secs_f64();
        let mut counted = StatsSnapshot::default();
        let out = now
            .iter()
            .map(|(db, s)| {
                let before = self.totals.get(db).copied().unwrap_or_default();
                counted += s.since(&before);
                (db.clone(), averages(&before, s, secs))
            })
            .collect();
        self.before_totals = std::mem::replace(&mut self.totals, now);
        self.before_start = std::mem::replace(&mut self.start, Instant::now());
        Some((out, averages(&StatsSnapshot::default(), &counted, secs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_per_second_and_times_per_item() {
        let before = StatsSnapshot { xact_count: 100, xact_time_us: 1000, ..Default::default() };
        let now = StatsSnapshot {
            xact_count: 700,
            xact_time_us: 7000,
            query_count: 1200,
            query_time_us: 2400,
            bytes_sent: 6000,
            ..Default::default()
        };
        let a = averages(&before, &now, 60.0);
        assert_eq!(a.xact_count, 10);
        assert_eq!(a.xact_time_us, 10);
        assert_eq!(a.query_count, 20);
        assert_eq!(a.query_time_us, 2);
        assert_eq!(a.bytes_sent, 100);
        assert_eq!(a.wait_time_us, 0, "no assignments: no division by zero");
    }

    #[tokio::test(start_paused = true)]
    async fn averages_so_far_run_from_the_start_of_the_last_whole_period() {
        let mut period = AveragesPeriod::new();
        // Before any period ends: from a second before the start.
        tokio::time::advance(Duration::from_secs(9)).await;
        let now = StatsSnapshot { query_count: 100, query_time_us: 500, ..Default::default() };
        let a = period.so_far("db", &now);
        assert_eq!((a.query_count, a.query_time_us), (10, 5));
        // The first period ends: the window still starts at the process's start.
        assert!(period.tick(&[], Duration::from_secs(5)).is_some());
        period.totals.insert("db".into(), now);
        tokio::time::advance(Duration::from_secs(1)).await;
        let later = StatsSnapshot { query_count: 120, query_time_us: 700, ..Default::default() };
        let a = period.so_far("db", &later);
        assert_eq!((a.query_count, a.query_time_us), (12, 5));
        // The second ends: from the first's end (the totals of 100 queries), a moment ago not.
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(period.tick(&[], Duration::from_secs(5)).is_some());
        period.totals.insert("db".into(), later);
        let a = period.so_far("db", &later);
        assert_eq!((a.query_count, a.query_time_us), (4, 10), "20 queries over the 5 s since the first period ended");
    }

    #[tokio::test(start_paused = true)]
    async fn the_average_over_all_databases_divides_their_summed_times_by_their_summed_counts() {
        let period = AveragesPeriod::new();
        tokio::time::advance(Duration::from_secs(9)).await;
        let one = StatsSnapshot { xact_count: 10, xact_time_us: 1_000, ..Default::default() };
        let two = StatsSnapshot { xact_count: 30, xact_time_us: 9_000, ..Default::default() };
        let (a, b) = ("a".to_owned(), "b".to_owned());
        assert_eq!(period.so_far("a", &one).xact_time_us, 100);
        assert_eq!(period.so_far("b", &two).xact_time_us, 300);
        let all = period.so_far_all([(&a, &one), (&b, &two)]);
        assert_eq!(all.xact_time_us, 250, "10,000 us over 40 transactions, not 100 + 300");
        assert_eq!(all.xact_count, 4, "40 transactions over 10 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_database_that_lost_pools_takes_nothing_from_the_others_average() {
        let mut period = AveragesPeriod::new();
        let (a, b) = ("a".to_owned(), "b".to_owned());
        period
            .before_totals
            .insert(a.clone(), StatsSnapshot { xact_count: 1_000, xact_time_us: 100_000, ..Default::default() });
        tokio::time::advance(Duration::from_secs(9)).await;
        // `a`'s pools were dropped (fewer counted now than at the start); `b` ran 500.
        let shrunk = StatsSnapshot { xact_count: 150, xact_time_us: 15_000, ..Default::default() };
        let ran = StatsSnapshot { xact_count: 500, xact_time_us: 50_000, ..Default::default() };
        let all = period.so_far_all([(&a, &shrunk), (&b, &ran)]);
        assert_eq!((all.xact_count, all.xact_time_us), (50, 100), "b's 500 over 10 s, 100 us each");
    }
}
