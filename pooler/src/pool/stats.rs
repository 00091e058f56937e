//! Per-pool counters for SHOW STATS and the metrics endpoint: relaxed atomics bumped on the hot
//! path, read as snapshots. Each worker thread bumps its own copy ([`CounterShards`]), so that
//! two threads serving one pool do not pass the counters' cache lines back and forth at every
//! transaction; readers add the copies up.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Cumulative counters of one pool (PgBouncer's `stats` per database, kept per pool here and
/// summed per database when shown).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Transactions finished (ReadyForQuery 'I' after work).
    pub xact_count: AtomicU64,
    /// Queries finished (each ReadyForQuery).
    pub query_count: AtomicU64,
    /// Bytes received from clients.
    pub bytes_received: AtomicU64,
    /// Bytes sent to clients.
    pub bytes_sent: AtomicU64,
    /// µs spent in transactions.
    pub xact_time_us: AtomicU64,
    /// µs spent in queries.
    pub query_time_us: AtomicU64,
    /// µs clients waited for a server.
    pub wait_time_us: AtomicU64,
    /// Times a server was assigned to a client.
    pub server_assignment_count: AtomicU64,
    /// Parse messages from clients.
    pub client_parse_count: AtomicU64,
    /// Parse messages sent to servers (client ones and injected ones).
    pub server_parse_count: AtomicU64,
    /// Bind messages from clients.
    pub bind_count: AtomicU64,
    /// Successful client logins.
    pub client_login_count: AtomicU64,
    /// Servers kept after their client vanished mid-query or mid-transaction (cancelled and
    /// rolled back instead of closed); /metrics only, SHOW STATS keeps PgBouncer's columns.
    pub servers_rescued: AtomicU64,
    /// Sessions pgmux closed with an error, by whose fault: the client (it broke the protocol),
    /// its server (it failed under the client) or pgmux's rules (timeouts, KILL, a pool that
    /// cannot serve), in [`SESSION_END_SIDES`] order; /metrics only.
    pub sessions_closed: [AtomicU64; 3],
}

/// A pool's counters and histograms, one copy per worker thread (workers.rs), each on cache
/// lines of its own.
#[derive(Debug)]
pub struct CounterShards(Box<[Shard]>);

/// One worker's copy.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Shard {
    /// Counters.
    pub stats: PoolStats,
    /// Latency histograms.
    pub histograms: super::histogram::PoolHistograms,
}

impl CounterShards {
    /// One copy per worker thread the process runs.
    pub fn new() -> Self {
        CounterShards((0..crate::workers::count()).map(|_| Shard::default()).collect())
    }

    /// The calling thread's copy (the first for a thread that is not a worker).
    #[inline]
    pub fn here(&self) -> &Shard {
        self.0.get(usize::from(crate::workers::here())).unwrap_or(&self.0[0])
    }

    /// Every copy, to add up.
    pub fn all(&self) -> &[Shard] {
        &self.0
    }

    /// The counters of all threads added up.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut sum = StatsSnapshot::default();
        for s in self.all() {
            sum += s.stats.snapshot();
        }
        sum
    }

    /// One counter (picked by `pick`) of all threads added up.
    pub fn sum(&self, pick: impl Fn(&PoolStats) -> &AtomicU64) -> u64 {
        self.all().iter().fold(0u64, |sum, s| sum.wrapping_add(pick(&s.stats).load(Relaxed)))
    }
}

impl Default for CounterShards {
    fn default() -> Self {
        Self::new()
    }
}

/// The `side` label of each `sessions_closed` counter.
pub const SESSION_END_SIDES: [&str; 3] = ["client", "server", "pgmux"];

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct StatsSnapshot {
    pub xact_count: u64,
    pub query_count: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub xact_time_us: u64,
    pub query_time_us: u64,
    pub wait_time_us: u64,
    pub server_assignment_count: u64,
    pub client_parse_count: u64,
    pub server_parse_count: u64,
    pub bind_count: u64,
    pub client_login_count: u64,
}

impl PoolStats {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Takes back `n` added to a counter (a request counted when it began that turned out
    /// owed no answer). The shard may be another thread's than the one that added: it wraps
    /// then, and the sum over the shards (wrapping too) is right.
    #[inline]
    pub fn take_back(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            xact_count: self.xact_count.load(Relaxed),
            query_count: self.query_count.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            xact_time_us: self.xact_time_us.load(Relaxed),
            query_time_us: self.query_time_us.load(Relaxed),
            wait_time_us: self.wait_time_us.load(Relaxed),
            server_assignment_count: self.server_assignment_count.load(Relaxed),
            client_parse_count: self.client_parse_count.load(Relaxed),
            server_parse_count: self.server_parse_count.load(Relaxed),
            bind_count: self.bind_count.load(Relaxed),
            client_login_count: self.client_login_count.load(Relaxed),
        }
    }
}

impl StatsSnapshot {
    /// What was counted since `before`, field by field; none below 0 (a database whose pools
    /// were dropped counts less than before: its part is then 0, not a debt on the others).
    pub fn since(&self, before: &Self) -> Self {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        Self {
            xact_count: d(self.xact_count, before.xact_count),
            query_count: d(self.query_count, before.query_count),
            bytes_received: d(self.bytes_received, before.bytes_received),
            bytes_sent: d(self.bytes_sent, before.bytes_sent),
            xact_time_us: d(self.xact_time_us, before.xact_time_us),
            query_time_us: d(self.query_time_us, before.query_time_us),
            wait_time_us: d(self.wait_time_us, before.wait_time_us),
            server_assignment_count: d(self.server_assignment_count, before.server_assignment_count),
            client_parse_count: d(self.client_parse_count, before.client_parse_count),
            server_parse_count: d(self.server_parse_count, before.server_parse_count),
            bind_count: d(self.bind_count, before.bind_count),
            client_login_count: d(self.client_login_count, before.client_login_count),
        }
    }
}

impl std::ops::AddAssign for StatsSnapshot {
    fn add_assign(&mut self, o: Self) {
        self.xact_count = self.xact_count.wrapping_add(o.xact_count);
        self.query_count = self.query_count.wrapping_add(o.query_count);
        self.bytes_received = self.bytes_received.wrapping_add(o.bytes_received);
        self.bytes_sent = self.bytes_sent.wrapping_add(o.bytes_sent);
        self.xact_time_us = self.xact_time_us.wrapping_add(o.xact_time_us);
        self.query_time_us = self.query_time_us.wrapping_add(o.query_time_us);
        self.wait_time_us = self.wait_time_us.wrapping_add(o.wait_time_us);
        self.server_assignment_count = self.server_assignment_count.wrapping_add(o.server_assignment_count);
        self.client_parse_count = self.client_parse_count.wrapping_add(o.client_parse_count);
        self.server_parse_count = self.server_parse_count.wrapping_add(o.server_parse_count);
        self.bind_count = self.bind_count.wrapping_add(o.bind_count);
        self.client_login_count = self.client_login_count.wrapping_add(o.client_login_count);
    }
}
