//! The relay's timeouts, as PgBouncer applies them (janitor.c): client_idle_timeout while no
//! server is held, query_timeout while a query runs, idle_transaction_timeout while a
//! transaction waits for the client, transaction_timeout over a whole transaction. Each comes
//! from the pool's settings (a `[users]` value over the global one). One timer is armed for the
//! earliest; when it fires the client is closed with PgBouncer's reason, and a server it held is
//! closed with the same reason.

use std::time::Duration;

use tokio::time::Instant;

use super::Relay;
use crate::clock::Micros;

/// Which timeout the relay's timer is armed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timeout {
    /// client_idle_timeout: no server held, nothing sent.
    ClientIdle,
    /// query_timeout: a request has waited that long for its ReadyForQuery.
    Query,
    /// idle_transaction_timeout: a transaction waits for the client.
    IdleTransaction,
    /// transaction_timeout: a transaction has lasted that long.
    Transaction,
}

impl Timeout {
    /// PgBouncer's reason, for the client's error, the log and the server's close.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Timeout::ClientIdle => "client_idle_timeout",
            Timeout::Query => "query timeout",
            Timeout::IdleTransaction => "idle transaction timeout",
            Timeout::Transaction => "transaction timeout",
        }
    }
}

/// The earliest of several deadlines.
#[derive(Default)]
struct Earliest(Option<(Micros, Timeout)>);

impl Earliest {
    fn consider(&mut self, limit: Duration, from: Option<Micros>, reason: Timeout) {
        let (false, Some(from)) = (limit.is_zero(), from) else { return };
        let at = from.after(limit);
        if self.0.is_none_or(|(best, _)| at < best) {
            self.0 = Some((at, reason));
        }
    }
}

impl Relay {
    /// The timeout that applies now: when it fires and the reason it gives. The clock is read
    /// only when a timeout counted from now applies (this runs at every relay wake-up).
    fn next_timeout(&self) -> Option<(Micros, Timeout)> {
        let s = &self.settings;
        let mut t = Earliest::default();
        if self.server.is_none() {
            if !s.client_idle_timeout.is_zero() {
                t.consider(s.client_idle_timeout, Some(Micros::now()), Timeout::ClientIdle);
            }
            return t.0;
        }
        let in_transaction = self.flow.in_block();
        // A request is under way from its first message (query_start) to its ReadyForQuery.
        if self.flow.pending() > 0 || self.query_start.is_some() {
            t.consider(s.query_timeout, self.query_start, Timeout::Query);
        } else if in_transaction && !s.idle_transaction_timeout.is_zero() {
            t.consider(s.idle_transaction_timeout, Some(Micros::now()), Timeout::IdleTransaction);
        }
        if in_transaction || self.flow.pending() > 0 {
            t.consider(s.transaction_timeout, self.xact_start, Timeout::Transaction);
        }
        t.0
    }

    /// Arms (or moves) the timer for the timeout that applies now. With none, a timer armed
    /// for the wait for a server is left as it is: it fires once for nothing (the loop then
    /// drops it), and the next wait, likely before then, finds it armed already.
    pub(super) fn arm_timer(&mut self) {
        // Runs at every turn of the loop: without client timeouts there is nothing to work out.
        if !self.settings.client_timeouts && self.timer_for.is_none() {
            return;
        }
        match self.next_timeout() {
            None => self.timer_for = None,
            Some((at, reason)) => {
                self.timer_for = Some(reason);
                if self.timer.is_some() && self.timer_due == Some(at) {
                    return;
                }
                self.timer_due = Some(at);
                let when = at.deadline((Micros::now(), Instant::now()));
                match self.timer.as_mut() {
                    Some(t) => t.as_mut().reset(when),
                    None => self.timer = Some(Box::pin(tokio::time::sleep_until(when))),
                }
            }
        }
    }
}
