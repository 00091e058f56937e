//! A request's life as SHOW STATS, SHOW CLIENTS and the timeouts see it: its start (its first
//! message, or the attach that brought its bytes) and its ReadyForQuery. Here are the query and
//! transaction counts and times, the request clock that query_timeout and SHOW CLIENTS' `wait`
//! follow (PgBouncer's query_start and xact_start), and the prepared-statement counts SHOW
//! lists, as they stand after each request.

use pgmux_protocol::backend::TxStatus;
use pgmux_protocol::flow::Batch;

use super::end::Fault;
use super::Relay;
use crate::clock::Micros;
use crate::config::PoolMode;
use crate::pool::PoolStats;

impl Relay {
    /// A Query, FunctionCall or Sync goes to the server: counted when it starts (now, or when
    /// the request before it is answered), and timed from then; the first one on a server
    /// from when the client's bytes arrived, its wait for the server included (PgBouncer's
    /// query_start and xact_start, which SHOW STATS' times and counts follow).
    pub(super) fn begin_request(&mut self, sync: bool) {
        let first = self.flow.client_pending() == 0;
        // Set with nothing under way by the attach (the client's bytes arrived then) or by the
        // request's first message: the clock is read only when neither did.
        let now = match (first, self.query_start) {
            (true, Some(start)) => start,
            (true, None) => self.start_request_clock(Micros::now()),
            (false, _) => Micros::now(),
        };
        let stats = &self.session.pool.counters.here().stats;
        if first {
            PoolStats::add(&stats.query_count, 1);
        }
        if self.xact_start.is_none() {
            self.xact_start = Some(now);
            PoolStats::add(&stats.xact_count, 1);
        }
        self.flow.request(sync);
        self.saw_ready = false;
        self.carry.executes = 0;
        if let Some(m) = self.carry.made.as_mut() {
            m.portals.request_sent();
        }
    }

    /// A request starts at `now`: query_timeout counts from here, and SHOW CLIENTS shows its age.
    pub(super) fn start_request_clock(&mut self, now: Micros) -> Micros {
        self.query_start = Some(now);
        self.session.info.set_query_start(Some(now.as_u64()));
        now
    }

    pub(super) fn on_ready(&mut self, status: TxStatus) {
        // SHOW CLIENTS and SHOW SERVERS count the statements as they stand after a request (a
        // compare each, a store when a count changed).
        self.session.info.show_prepared(self.statements.named_count());
        if let Some(server) = self.server.as_mut() {
            server.show_prepared();
        }
        self.tracker.replay_off();
        self.tracker.block_ready(status == TxStatus::InTransaction);
        self.saw_ready = true;
        self.flow.ready(status);
        self.session_sql_ready(status);
        let now = Micros::now();
        let counters = self.session.pool.counters.here();
        let stats = &counters.stats;
        let hist = &counters.histograms;
        if let Some(t) = self.query_start.take() {
            let us = now.micros_since(t);
            PoolStats::add(&stats.query_time_us, us);
            hist.query.observe(us);
        }
        // A request sent behind this one starts now: one closed by a Sync (counted now), or
        // a batch still open (counted when its Sync comes).
        let next = self.flow.pending() > 0;
        let running = next || self.flow.batch() == Batch::Open;
        self.query_start = running.then_some(now);
        if next {
            PoolStats::add(&stats.query_count, 1);
        }
        self.session.info.set_query_start(running.then(|| now.as_u64()));
        if status == TxStatus::Idle {
            if let Some(t) = self.xact_start.take() {
                let us = now.micros_since(t);
                PoolStats::add(&stats.xact_time_us, us);
                hist.xact.observe(us);
            }
            if next {
                self.xact_start = Some(now);
                PoolStats::add(&stats.xact_count, 1);
            }
        } else if self.mode == PoolMode::Statement {
            self.fatal = Some(Box::new(Fault::client("transaction blocks not allowed in statement pooling mode")));
        }
    }
}
