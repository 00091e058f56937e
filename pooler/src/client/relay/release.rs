//! Giving a server back: at a transaction's end without an await (`Relay::release_now`), and
//! what cannot be done at once (the end of a cancel in flight, the reset query) in a task of
//! its own (`Relay::release_apart`), the server meanwhile PgBouncer's `being_canceled` or
//! `tested`; and when the client leaves, whether its server is closed, rescued or released
//! (`Relay::let_go`).

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::Relay;
use crate::clients::ClientState;
use crate::config::PoolMode;
use crate::pool::{Lease, PoolSettings, PoolStats};
use crate::server::{self, ServerConn};
use crate::servers::Aside;

/// How long bringing back a server whose client vanished may take before it is closed instead.
const RESCUE_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The part of a release that waits: the server, whether a cancel request to it is still in
/// flight, and the queries to run on it before anyone else gets it.
pub(super) struct ReleaseRest {
    server: Lease,
    cancels: Option<std::sync::Arc<crate::cancel::Pending>>,
    /// server_reset_query is to run.
    reset: bool,
    /// DISCARD ALL is to run after it (a pinned client's server).
    discard: bool,
}

impl ReleaseRest {
    /// Nothing to wait for: the server can go back at once.
    fn is_empty(&self) -> bool {
        self.cancels.is_none() && !self.reset && !self.discard
    }

    /// Waits for the cancels, runs the reset, and gives the server back (or closes it).
    async fn complete(self, cancel_limit: std::time::Duration, settings: &PoolSettings) {
        let ReleaseRest { mut server, cancels, reset: with_reset, discard } = self;
        if let Some(pending) = cancels {
            server.set_aside(Some(Aside::BeingCanceled));
            pending.settle(cancel_limit).await;
            // A PAUSE or RECONNECT meanwhile: no reset for a server about to close.
            if let Some(reason) = server.closes_on_release() {
                return server.close(reason);
            }
        }
        let reset_sql = settings.reset_query.as_str();
        let queries = match (with_reset, discard) {
            (true, true) => &[reset_sql, "DISCARD ALL"][..],
            (true, false) => &[reset_sql][..],
            (false, true) => &["DISCARD ALL"][..],
            (false, false) => &[][..],
        };
        if !queries.is_empty() {
            if let Err(why) = reset(&mut server, queries, settings).await {
                server.close(why);
                return;
            }
        }
        server.release_with(settings);
    }
}

impl Relay {
    /// Gives the server back to the pool at a transaction's end (transaction and statement modes).
    /// The whole of it without an await, unless a cancel request is still in flight to the
    /// server or reset_always has a query to run: the server is then returned for
    /// [`Relay::release_apart`]. The event loop releases at every transaction's end, where an
    /// `async` step cost more than the release.
    pub(super) fn release_now(&mut self) -> Option<ReleaseRest> {
        let server = self.server.take()?;
        self.session.info.set_state(ClientState::Idle);
        self.session.info.server_pid.store(0, Ordering::Relaxed);
        self.session.info.server_id.store(0, Ordering::Relaxed);
        let cancels = self.session.cancel.detach();
        let reset = self.settings.reset_always && !self.settings.reset_query.is_empty();
        if cancels.is_some() || reset {
            return Some(ReleaseRest { server, cancels, reset, discard: false });
        }
        server.release_with(&self.settings);
        None
    }

    /// What [`Relay::release_now`] could not do without waiting, done in a task of its own, as
    /// PgBouncer keeps such a server apart (`being_canceled`, or running its reset) while its
    /// client goes on: the client's next transaction takes another server, or waits for this
    /// one like any client, and a KILL or the client's leaving is seen at once. The server
    /// still counts in its pool meanwhile, and no one gets it before its cancels are done
    /// (at most cancel_wait_timeout): a late second signal of PostgreSQL's cancel would hit
    /// whatever it ran next.
    pub(super) fn release_apart(&self, mut rest: ReleaseRest) {
        let limit = self.shared.config().general.cancel_wait_timeout;
        // The settings in force when the rest is done (a RELOAD may come meanwhile).
        let settings = self.session.pool.settings();
        // Set aside before the task first runs: no SHOW sees the server active without a client.
        rest.server.set_aside(Some(if rest.cancels.is_some() { Aside::BeingCanceled } else { Aside::Tested }));
        tokio::spawn(async move { rest.complete(limit, &settings).await });
    }

    /// Whether a server left in the middle of a query or a transaction may be rescued at all.
    fn rescuable(&self) -> bool {
        // Half a message sent, or whole ones counted but not sent: the books do not match what
        // the server got (and sending them would run a vanished client's statements). A
        // session advisory lock taken in the transaction outlives its ROLLBACK: closed, as
        // PgBouncer closes every server left in a transaction, it goes with the server.
        self.c_skip == 0 && self.c_ready == 0 && !self.carry.sticky_in_transaction()
    }

    /// The client left in the middle of a query or a transaction: cancel, drain and roll back,
    /// so the pool keeps the server (counted in `servers_rescued`). False when that cannot be
    /// done (client bytes not all sent, a timeout, a surprise): the server is then closed.
    async fn rescue(&mut self, server: &mut ServerConn) -> bool {
        if !self.rescuable() {
            return false;
        }
        let state = server::Abandoned { unread: self.sout.split_off(self.s_ready), skip: self.s_skip, flow: self.flow };
        if server::recover(server, state, RESCUE_LIMIT).await.is_err() {
            return false;
        }
        // Statements (or SET/PREPARE texts) in flight may or may not have taken place on the
        // server: start it afresh.
        let statements = self.track_prepared && self.tracker.in_flight();
        let session_sql = self.carry.busy();
        if statements || session_sql {
            let sql = if session_sql { "RESET ALL; RESET ROLE; DEALLOCATE ALL" } else { "DEALLOCATE ALL" };
            if server::run_simple_query(server, sql).await.is_err() {
                return false;
            }
            server.reset_done(sql);
        }
        // What the server holds now, for SHOW SERVERS (a Parse it finished for the client that
        // left is on it).
        server.show_prepared();
        PoolStats::add(&self.stats().servers_rescued, 1);
        true
    }

    /// The client is leaving: its server is closed, brought back (rescued) or handed on with
    /// what it still needs (the end of a cancel in flight, the reset), which runs beside
    /// (`release_apart`, as PgBouncer's `being_canceled` and `tested` lists), so the client's
    /// end does not wait for it. A server that is closed anyway is closed at once, whatever
    /// cancel is in flight to it (a KILL while its client waited for one, `wait_cancel`).
    pub(super) async fn let_go(&mut self, mut server: Lease) {
        let clean = self.server_clean();
        let mut cancels = self.session.cancel.detach();
        if self.dedicated {
            // A replication client's server is its own: never shared, closed with it.
            return server.close("replication client disconnected");
        }
        if let Some(reason) = server.closes_on_release() {
            return server.close(reason);
        }
        if !clean {
            if !self.rescuable() {
                return server.close("client disconnect while server was not ready");
            }
            // The rescue talks to the server: its cancels are done first.
            if let Some(pending) = cancels.take() {
                server.set_aside(Some(Aside::BeingCanceled));
                let limit = self.shared.config().general.cancel_wait_timeout;
                Box::pin(pending.settle(limit)).await;
                server.set_aside(None);
            }
            if !Box::pin(self.rescue(&mut server)).await {
                return server.close("client disconnect while server was not ready");
            }
        }
        let reset_sql = self.settings.reset_query.as_str();
        let reset = (self.mode == PoolMode::Session || self.settings.reset_always || self.carry.pinned)
            && !reset_sql.is_empty();
        // A pinned client's server holds what pinned it (a temporary table, LISTEN, ...): it is
        // discarded whatever server_reset_query does.
        let discard = self.carry.pinned && !discards_all(reset_sql);
        let rest = ReleaseRest { server, cancels, reset, discard };
        if rest.is_empty() {
            rest.server.release();
        } else {
            self.release_apart(rest);
        }
    }
}

/// Runs `queries` (the reset query, and DISCARD ALL after it for a pinned client) on a server
/// its client let go, counted in `sv_tested` meanwhile as PgBouncer's `tested` list. A reset
/// that hangs is given up once server_idle_timeout has passed since it started (PgBouncer's
/// janitor closes a server in that list idle that long, counted from its last answer); the
/// reason to close the server is returned.
async fn reset(server: &mut Lease, queries: &[&str], settings: &PoolSettings) -> Result<(), &'static str> {
    server.set_aside(Some(Aside::Tested));
    let limit = settings.server_idle_timeout;
    let deadline = (!limit.is_zero()).then(|| Instant::now() + limit);
    for sql in queries {
        let run = server::run_simple_query(server, sql);
        let done = match deadline {
            None => run.await,
            Some(at) => tokio::time::timeout_at(at, run).await.map_err(|_| "server idle timeout")?,
        };
        done.map_err(|_| "reset query failed")?;
        server.reset_done(sql);
    }
    Ok(())
}

/// True when `sql` (a reset query) has a DISCARD ALL in it.
fn discards_all(sql: &str) -> bool {
    crate::session_sql::effects(sql.as_bytes()).iter().any(|e| matches!(e, crate::session_sql::Effect::DiscardAll))
}
