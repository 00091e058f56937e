//! Latency histograms per pool (query, transaction, wait for a server): fixed log-scale buckets
//! of relaxed atomic counters, so observing costs one comparison search and two atomic adds and
//! no lock. Neither PgBouncer nor its exporters have these.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of the buckets in microseconds (the last bucket is +Inf).
pub const BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// One histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    #[inline]
    pub fn observe(&self, us: u64) {
        let i = BOUNDS_US.partition_point(|b| *b < us);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Per-bucket counts (not cumulative) and the sum in µs.
    pub fn snapshot(&self) -> (Vec<u64>, u64) {
        (self.buckets.iter().map(|b| b.load(Relaxed)).collect(), self.sum_us.load(Relaxed))
    }

    /// [`Histogram::snapshot`] of several copies of one histogram (one per worker thread),
    /// added up.
    pub fn snapshot_sum<'a>(copies: impl Iterator<Item = &'a Histogram>) -> (Vec<u64>, u64) {
        let mut counts = vec![0; BOUNDS_US.len() + 1];
        let mut sum = 0;
        for h in copies {
            for (c, b) in counts.iter_mut().zip(&h.buckets) {
                *c += b.load(Relaxed);
            }
            sum += h.sum_us.load(Relaxed);
        }
        (counts, sum)
    }
}

/// The three histograms of a pool.
#[derive(Debug, Default)]
pub struct PoolHistograms {
    /// Query (request to ReadyForQuery) durations.
    pub query: Histogram,
    /// Transaction durations.
    pub xact: Histogram,
    /// Time clients waited for a server.
    pub wait: Histogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.observe(50);
        h.observe(100);
        h.observe(101);
        h.observe(20_000_000);
        let (b, sum) = h.snapshot();
        assert_eq!(b[0], 2, "<= 100 µs");
        assert_eq!(b[1], 1, "<= 250 µs");
        assert_eq!(b[BOUNDS_US.len()], 1, "+Inf");
        assert_eq!(sum, 20_000_251);
    }
}
