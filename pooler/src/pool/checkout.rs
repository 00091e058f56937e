//! Checkout: an idle server (probed first when it may have died), a new one within the limits,
//! or a place in the queue until one is released, waiting at most query_wait_timeout; PAUSE
//! and holds at the gate; PgBouncer's fast fail for logins while connects keep failing.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::lease::Lease;
use super::room::Room;
use super::waiter::{Handoff, SlotGuard, WaitTicket, Waiter};
use super::{Caller, CheckoutError, Pool, PoolSettings, FOLLOWER_RETRY};
use crate::clock::Micros;
use crate::logging::ConnTag;
use crate::server::{self, ServerConn};

// Short-lived result of one locked look at the pool; boxing the server would allocate.
#[allow(clippy::large_enum_variant)]
enum Take {
    Server(Box<ServerConn>),
    /// A slot to open a server in; true when it comes from the reserve pool.
    Slot(SlotGuard, bool),
    /// Queued (a new ticket, or None when already queued), what stopped a new server, and
    /// whether waiting needs no re-check (see [`Pool::try_take`]).
    Wait(Option<WaitTicket>, Room, bool),
}

/// Who bounds a wait in the queue by query_wait_timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WaitLimit {
    /// The checkout itself, with a timer.
    Pool,
    /// The caller, whose own timer covers it.
    Caller,
}

/// How often a waiter looks again at limits that can open up without a hand-off reaching it:
/// the reserve pool's timeout, limits shared with other pools, a failed or probing connect.
const RECHECK_EVERY: Duration = Duration::from_millis(100);

impl Pool {
    fn try_take(
        self: &Arc<Self>,
        settings: &PoolSettings,
        start: Instant,
        queued: bool,
        may_fast_fail: bool,
    ) -> Result<Take, CheckoutError> {
        let mut s = self.state.lock();
        let from_front = settings.round_robin;
        if let Some(server) = s.pop_idle(from_front, crate::workers::local()) {
            return Ok(Take::Server(server));
        }
        // PgBouncer's fast fail: a client logging in while logins keep failing and no server is
        // up gets the cached error at once. Clients already waiting keep waiting, and so does a
        // client already logged in (PgBouncer would close it; pgmux lets it wait for the server
        // to come back, bounded by query_wait_timeout).
        if let Some((at, msg, refusal)) = &s.last_failure {
            if may_fast_fail && !queued && s.total == 0 && at.elapsed() < settings.login_retry {
                return Err(CheckoutError::LoginFailing(msg.clone(), refusal.clone()));
            }
        }
        let mut room = Room::PoolFull;
        if queued || s.waiters.iter().all(|w| w.tx.is_closed()) {
            room = self.reserve_locked(&mut s, settings, start.elapsed());
            if room.granted() {
                return Ok(Take::Slot(SlotGuard::new(self.clone()), room == Room::Reserve));
            }
        }
        // Only a release or a freed slot can serve this waiter, and both hand it over through
        // its ticket: the pool is full and healthy (a failed connect later empties the queue,
        // see `open`), and no limit opens up with time (reserve) or elsewhere (shared limits).
        let quiet = room == Room::PoolFull
            && s.proven
            && s.last_failure.is_none()
            && (settings.reserve_pool_size == 0 || settings.reserve_pool_timeout.is_zero())
            && settings.max_db_connections == 0
            && settings.max_user_connections == 0;
        if queued {
            return Ok(Take::Wait(None, room, quiet));
        }
        // Under the lock: shut_down sets `shut` before it empties the queue, so a waiter that
        // would join after that is refused here instead of waiting for nobody.
        if self.shut.load(Relaxed) {
            return Err(CheckoutError::ShuttingDown);
        }
        let (tx, rx) = oneshot::channel();
        s.waiters.push_back(Waiter { since: start, home: crate::workers::here(), tx });
        Ok(Take::Wait(Some(WaitTicket::new(self.clone(), rx)), room, quiet))
    }

    /// Gets a server: an idle one, a new one within the limits, or the next one released,
    /// waiting at most query_wait_timeout. Servers idle longer than server_check_delay are
    /// checked first; dead ones are dropped.
    ///
    /// # Cancel safety
    /// Dropping the future gives back whatever it held: a handed-off server returns to the pool,
    /// a reserved slot is freed, a half-open connection is closed.
    ///
    /// # Errors
    /// Timeout, fast fail after failed logins, or this attempt's connect error.
    pub async fn checkout(self: &Arc<Self>) -> Result<Lease, CheckoutError> {
        let settings = self.settings();
        self.checkout_with(&settings, None, Caller::Login).await
    }

    /// [`Pool::checkout`] with settings the caller already holds (the relay keeps its session's),
    /// for the client `client` (its tag prefixes the log line when the reserve pool is used),
    /// logging in or already logged in (`caller`: only a login gets PgBouncer's fast fail).
    ///
    /// # Cancel safety
    /// As [`Pool::checkout`].
    ///
    /// # Errors
    /// As [`Pool::checkout`].
    pub async fn checkout_with(
        self: &Arc<Self>,
        settings: &PoolSettings,
        client: Option<&ConnTag>,
        caller: Caller,
    ) -> Result<Lease, CheckoutError> {
        self.checkout_timed(settings, client, caller, WaitLimit::Pool).await
    }

    /// [`Pool::checkout_with`] for a caller that bounds the wait by query_wait_timeout itself
    /// (the relay, whose one timer also serves query_timeout and query_wait_notify): the wait
    /// then arms no timer of its own unless limits must be re-checked while it lasts.
    ///
    /// # Cancel safety
    /// As [`Pool::checkout`].
    ///
    /// # Errors
    /// As [`Pool::checkout`], except that query_wait_timeout is the caller's.
    pub async fn checkout_for_caller_timed(
        self: &Arc<Self>,
        settings: &PoolSettings,
        client: Option<&ConnTag>,
        caller: Caller,
    ) -> Result<Lease, CheckoutError> {
        self.checkout_timed(settings, client, caller, WaitLimit::Caller).await
    }

    async fn checkout_timed(
        self: &Arc<Self>,
        settings: &PoolSettings,
        client: Option<&ConnTag>,
        caller: Caller,
        limit: WaitLimit,
    ) -> Result<Lease, CheckoutError> {
        // Fast path, the busy case: a server released moments ago needs no check and no await,
        // and this future stays small (every client task holds one inline).
        if !self.paused.load(Relaxed) {
            let popped = self.state.lock().pop_idle(settings.round_robin, crate::workers::local());
            if let Some(server) = popped {
                if self.usable_at_once(&server, settings, Micros::now()) {
                    return Ok(Lease::new(server, self.clone()));
                }
                return Box::pin(self.checkout_slow(settings, Some(server), client, caller, limit)).await;
            }
        }
        Box::pin(self.checkout_slow(settings, None, client, caller, limit)).await
    }

    /// The busy case without an await: a server released moments ago that needs no check, or
    /// `None` (then [`Pool::checkout_with`]). Callers keep their slow path boxed, so that the
    /// future every client task holds stays small.
    /// `now` is the caller's clock reading (one per transaction, not one per check).
    pub fn take_ready(self: &Arc<Self>, settings: &PoolSettings, now: Micros) -> Option<Lease> {
        if self.paused.load(Relaxed) {
            return None;
        }
        let mut s = self.state.lock();
        let server = s.pop_idle(settings.round_robin, crate::workers::local())?;
        if self.usable_at_once(&server, settings, now) {
            return Some(Lease::new(server, self.clone()));
        }
        if settings.round_robin {
            s.idle.push_front(server);
        } else {
            s.idle.push_back(server);
        }
        None
    }

    /// True when an idle server can be handed out without a dead check or a check query.
    pub(super) fn usable_at_once(&self, s: &ServerConn, settings: &PoolSettings, now: Micros) -> bool {
        let idle = now.since(s.last_used);
        !self.needs_dead_check_after(idle)
            && !settings.due_for_check(idle)
            && !self.expired_at(s, settings, now)
            && !self.stale(s)
    }

    /// Checkout when the fast path could not serve: checks, new connections, waiting.
    pub(super) async fn checkout_slow(
        self: &Arc<Self>,
        settings: &PoolSettings,
        first: Option<Box<ServerConn>>,
        client: Option<&ConnTag>,
        caller: Caller,
        limit: WaitLimit,
    ) -> Result<Lease, CheckoutError> {
        if let Some(s) = first {
            if let Some(s) = self.prepare(s, settings).await {
                return Ok(s);
            }
        }
        if self.paused.load(Relaxed) {
            self.wait_at_gate(settings).await?;
        }
        if self.shut.load(Relaxed) {
            return Err(CheckoutError::ShuttingDown);
        }
        let start = Instant::now();
        let deadline = (!settings.query_wait_timeout.is_zero()).then(|| start + settings.query_wait_timeout);
        let mut ticket: Option<WaitTicket> = None;
        // Fast fail is for a login that finds the server failing, before it has tried once.
        let mut may_fast_fail = caller == Caller::Login && !settings.follows_leader;
        loop {
            if self.is_letting_go() {
                // PAUSE came while this client was queued: it waits at the gate instead.
                drop(ticket.take());
                self.wait_at_gate(settings).await?;
                if self.shut.load(Relaxed) {
                    return Err(CheckoutError::ShuttingDown);
                }
            }
            let quiet;
            match self.try_take(settings, start, ticket.is_some(), may_fast_fail)? {
                Take::Server(s) => {
                    if let Some(s) = self.prepare(s, settings).await {
                        return Ok(s);
                    }
                    continue;
                }
                Take::Slot(guard, reserve) => {
                    drop(ticket.take());
                    if reserve {
                        match client {
                            Some(tag) => crate::conn_log!(warn, tag, "taking connection from reserve_pool"),
                            None => tracing::warn!("{}/{}: taking connection from reserve_pool", self.db, self.user),
                        }
                    }
                    match Box::pin(self.open(guard, settings)).await {
                        Err(CheckoutError::Connect(e)) if !e.is_refusal() => {
                            self.pause_before_retry(settings, deadline).await?;
                            may_fast_fail = false;
                            continue;
                        }
                        other => return other.map(|s| Lease::new(s, self.clone())),
                    }
                }
                Take::Wait(new, room, q) => {
                    if new.is_some() {
                        ticket = new;
                    }
                    quiet = q;
                    // The freed unit goes to the longest waiter under the limit, maybe this one.
                    self.evict_for(room);
                }
            }
            let t = ticket.as_mut().expect("a waiter has a ticket");
            // A timer only when something must happen without a hand-off: a re-check, or the
            // deadline when it is the pool's to keep. The busy case (a full pool, clients
            // queued behind each other, the relay keeping time) arms none.
            let recheck_at = (!quiet).then(|| Instant::now() + RECHECK_EVERY);
            let own_deadline = deadline.filter(|_| limit == WaitLimit::Pool);
            let wake_at = match (recheck_at, own_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let got = match wake_at {
                Some(at) => tokio::time::timeout_at(at, t.recv()).await,
                None => Ok(t.recv().await),
            };
            match got {
                Ok(Some(Handoff::Server(s))) => {
                    drop(ticket.take());
                    // Released a moment ago, as a rule: one clock reading clears it.
                    if self.usable_at_once(&s, settings, Micros::now()) {
                        return Ok(Lease::new(s, self.clone()));
                    }
                    if let Some(s) = self.prepare(s, settings).await {
                        return Ok(s);
                    }
                }
                Ok(Some(Handoff::Slot)) => {
                    drop(ticket.take());
                    match Box::pin(self.open(SlotGuard::new(self.clone()), settings)).await {
                        Err(CheckoutError::Connect(e)) if !e.is_refusal() => {
                            self.pause_before_retry(settings, deadline).await?;
                            may_fast_fail = false;
                        }
                        other => return other.map(|s| Lease::new(s, self.clone())),
                    }
                }
                Ok(Some(Handoff::Refused(r))) => return Err(CheckoutError::Refused(r)),
                // The queue was emptied (a failed connect, see `open`): queue again, still as a
                // client that has waited (no fast fail).
                Ok(None) => {
                    ticket = None;
                    may_fast_fail = false;
                }
                Err(_) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(CheckoutError::QueryWaitTimeout);
                    }
                    if self.shut.load(Relaxed) {
                        // Queued just as shut_down drained the queue.
                        return Err(CheckoutError::ShuttingDown);
                    }
                }
            }
        }
    }

    /// After a failed connect (no answer, refused TCP, TLS failure): the waiting client stays and
    /// the pool tries again once server_login_retry has passed since the failure, as PgBouncer
    /// does; the client gives up at its query_wait_timeout.
    async fn pause_before_retry(
        &self,
        settings: &PoolSettings,
        deadline: Option<Instant>,
    ) -> Result<(), CheckoutError> {
        let failed_at = self.state.lock().last_failure.as_ref().map(|(at, ..)| *at).unwrap_or_else(Instant::now);
        // While the leader changes, the next attempt comes soon: the new leader is up in seconds.
        let pause = if settings.follows_leader { FOLLOWER_RETRY } else { settings.login_retry };
        let mut until = failed_at + pause.max(Duration::from_millis(100));
        if let Some(d) = deadline {
            until = until.min(d);
        }
        tokio::time::sleep_until(until).await;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(CheckoutError::QueryWaitTimeout);
        }
        Ok(())
    }

    /// Makes sure an idle server is still good before use.
    pub(super) async fn prepare(self: &Arc<Self>, s: Box<ServerConn>, settings: &PoolSettings) -> Option<Lease> {
        // A server idle for a while may have been terminated or seen PostgreSQL restart; one
        // non-blocking read tells. Servers reused at once (the busy case) skip the syscall.
        if self.needs_dead_check(&s) && s.is_dead() {
            self.discard(s, "server conn crashed?");
            self.server_lost();
            return None;
        }
        if let Some(reason) = self.unusable(&s, settings, Micros::now()) {
            self.discard(s, reason);
            return None;
        }
        // Dropping this future mid-check drops the lease, which closes the server.
        let mut lease = Lease::new(s, self.clone());
        let check = settings.check_query.as_deref().filter(|_| settings.due_for_check(lease.last_used.elapsed()));
        // Just after a server of the pool was lost, a read that finds nothing is not enough: a
        // backend told to end (PostgreSQL shutting down) may not have said so yet. An empty
        // query makes it read, and so act on the signal first.
        let suspect = check.is_none() && self.suspicion.active();
        if let Some(q) = check.or(suspect.then_some("")) {
            // As PgBouncer's `tested` list while the check runs.
            lease.set_aside(Some(crate::servers::Aside::Tested));
            if Box::pin(server::run_simple_query(&mut lease, q)).await.is_err() {
                if suspect {
                    lease.close("server conn crashed?");
                    self.server_lost();
                } else {
                    lease.close("test query failed");
                }
                return None;
            }
            lease.set_aside(None);
        }
        Some(lease)
    }
}
