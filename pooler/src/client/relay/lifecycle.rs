//! Attaching a server to the relay, waiting for a cancel of its query, and closing the session
//! (what happens to the server then is release.rs).

use std::sync::atomic::Ordering;

use bytes::BytesMut;
use pgmux_protocol::build::{self, Severity};
use pgmux_protocol::sqlstate;
use tokio::time::Instant;

use super::end::{End, Fault, Side};
use super::{write_all, Event, Relay, WaitingGuard};
use crate::client::buffers;
use crate::client::login::checkout_error_message;
use crate::clients::ClientState;
use crate::clock::Micros;
use crate::config::PoolMode;
use crate::pool::{Caller, CheckoutError, Lease, PoolStats};
use crate::server;

/// How far [`Relay::attach_now`] got.
pub(super) enum Attaching {
    /// A server is installed.
    Done,
    /// None was idle: wait in the queue, from this moment.
    Wait(Micros),
    /// This server needs SETs or a replay of session state first.
    Prepare(Lease, Micros),
}

/// Why [`Relay::prepare_server`] did not install its server.
enum Unprepared {
    /// The server failed under the SETs or the replay (its socket, not PostgreSQL's refusal):
    /// nothing of the client's was sent to it, so another server may serve the client.
    Lost(server::ServerError),
    /// The session ends (PostgreSQL refused the client's settings).
    End(End),
}

/// How many servers found dead while being made ready for one client are replaced before the
/// client gets the error: enough for every idle server of a pool whose PostgreSQL just died.
const MAX_LOST_IN_PREPARE: u32 = 16;

impl Relay {
    /// Gets a server for the bytes waiting in `cin` without an await, the busy case: an idle
    /// server that needs no check, no SET and no replay of session state. Otherwise says what
    /// is left for [`Relay::attach_rest`]. (An `async` step here, at every transaction, cost
    /// more than the rest of the attach.)
    pub(super) fn attach_now(&mut self) -> Attaching {
        // One clock reading serves the wait's start, the checkout's checks and SHOW CLIENTS'
        // request_time; a second is taken only when the client had to wait.
        let start = Micros::now();
        // Nothing is under way without a server: the next request is timed from here.
        self.query_start = Some(start);
        self.session.info.start_waiting(start.as_u64());
        if self.cin.capacity() == 0 {
            self.cin = buffers::take();
        }
        match self.session.pool.take_ready(&self.settings, start) {
            Some(server) => {
                self.count_assignment(0);
                self.ready_now(server, start)
            }
            None => Attaching::Wait(start),
        }
    }

    /// The rest of an attach that [`Relay::attach_now`] could not finish: the wait for a server
    /// (watching the client), the SETs that make a server match the client's parameters, the
    /// replay of its session state.
    pub(super) async fn attach_rest(&mut self, mut attaching: Attaching) -> Result<(), End> {
        let pool = self.session.pool.clone();
        pool.clients_waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = WaitingGuard(&pool.clients_waiting);
        let mut lost = 0;
        loop {
            let (server, start) = match attaching {
                Attaching::Done => return Ok(()),
                Attaching::Prepare(server, start) => (server, start),
                Attaching::Wait(start) => {
                    let server = Box::pin(self.wait_for_server(start)).await?;
                    // One assignment, however many servers were found dead on the way.
                    if lost == 0 {
                        self.count_assignment(Micros::now().micros_since(start));
                    }
                    match self.ready_now(server, start) {
                        Attaching::Prepare(server, start) => (server, start),
                        _ => return Ok(()),
                    }
                }
            };
            match self.prepare_server(server, start).await {
                Ok(()) => return Ok(()),
                // Nothing of the client's went to that server: another one serves it, as if the
                // dead one had never been in the pool. Bounded, though only a server that served
                // before is retried (one that dies at its first SET may be killed by it).
                Err(Unprepared::Lost(e)) if lost < MAX_LOST_IN_PREPARE => {
                    lost += 1;
                    crate::conn_log!(
                        info,
                        self.session.tag(),
                        "server lost before the client's query ({e}); trying another"
                    );
                    // The checkout takes an idle server at once when one is there (probed: the
                    // pool suspects its servers now), else waits.
                    attaching = Attaching::Wait(start);
                }
                Err(Unprepared::Lost(e)) => return Err(Fault::server(format!("server conn crashed? {e}")).into()),
                Err(Unprepared::End(end)) => return Err(end),
            }
        }
    }

    /// The statistics of one server assignment, after `waited` microseconds in the queue.
    fn count_assignment(&self, waited: u64) {
        let pool = &self.session.pool;
        let counters = pool.counters.here();
        PoolStats::add(&counters.stats.wait_time_us, waited);
        counters.histograms.wait.observe(waited);
        PoolStats::add(&counters.stats.server_assignment_count, 1);
    }

    /// Installs `server` when it needs no SET and no replay (`Done`); else `Prepare`.
    fn ready_now(&mut self, server: Lease, start: Micros) -> Attaching {
        if server.synced_params != self.session.params.fingerprint() || self.carry.may_differ(&server.session_state) {
            return Attaching::Prepare(server, start);
        }
        self.install(server, start.as_u64());
        Attaching::Done
    }

    /// Makes `server` match the client (its tracked parameters, its session state), then
    /// installs it.
    async fn prepare_server(&mut self, mut server: Lease, start: Micros) -> Result<(), Unprepared> {
        let wanted = self.session.params.fingerprint();
        let sql = if server.synced_params == wanted { None } else { self.session.params.sync_sql(&server.params) };
        server.synced_params = wanted;
        if let Some(sql) = sql {
            crate::conn_log!(debug, server.tag, "varcache_apply: {sql}");
            match Box::pin(server::run_simple_query(&mut server, &sql)).await {
                Ok(()) => self.session.params.synced(&mut server.params),
                Err(server::ServerError::Rejected { message, .. }) => {
                    // PgBouncer's words to the client (a value the client gave at login that
                    // the server refuses); the server's reason goes to the log.
                    crate::conn_log!(warn, server.tag, "varcache_apply failed: {message}");
                    // The SETs were undone with their transaction: the server is as before.
                    server.synced_params = 0;
                    server.release();
                    return Err(Unprepared::End(Fault::server("invalid server parameter".to_owned()).into()));
                }
                Err(other) => return Err(self.lost_in_prepare(server, "var change failed", other)),
            }
            for (k, old, new) in self.session.params.set_canonical(&server.params) {
                crate::conn_log!(
                    debug,
                    self.session.tag(),
                    "varcache_set_canonical: setting {k} to its canonical version {old} -> {new}"
                );
            }
            server.synced_params = self.session.params.fingerprint();
        }
        if self.carry.may_differ(&server.session_state) {
            if let Err(e) = Box::pin(self.replay_session(&mut server)).await {
                return Err(match e {
                    server::ServerError::Rejected { message, .. } => {
                        server.close("session state replay failed");
                        Unprepared::End(Fault::server(format!("could not set parameters: {message}")).into())
                    }
                    other => self.lost_in_prepare(server, "session state replay failed", other),
                });
            }
        }
        self.install(server, start.as_u64());
        Ok(())
    }

    /// `server` failed under a query pgmux ran to make it match the client: closed. Another
    /// may serve the client when this one had served clients before (it died in the pool);
    /// a fresh one that fails at once fails the client.
    fn lost_in_prepare(&self, server: Lease, reason: &str, e: server::ServerError) -> Unprepared {
        let served = server.tag.served;
        server.close(reason);
        self.session.pool.server_lost();
        if served {
            Unprepared::Lost(e)
        } else {
            Unprepared::End(Fault::server(format!("server conn crashed? {e}")).into())
        }
    }

    /// The slow part of [`Relay::attach_rest`]: queue for a server while watching the client, a
    /// KILL, query_timeout and query_wait_notify.
    async fn wait_for_server(&mut self, start: Micros) -> Result<Lease, End> {
        let pool = self.session.pool.clone();
        let settings = self.settings.clone();
        let info = self.session.info.clone();
        let caller = if self.had_server { Caller::Session } else { Caller::Login };
        let checkout = pool.checkout_for_caller_timed(&settings, Some(&info.tag), caller);
        tokio::pin!(checkout);
        // query_timeout also bounds the wait for a server (PgBouncer's janitor: `query_timeout`),
        // and so does query_wait_timeout, kept here rather than by the checkout: one timer per
        // wait serves all three deadlines.
        let query_timeout = (!settings.query_timeout.is_zero()).then(|| start.after(settings.query_timeout));
        let wait_timeout = (!settings.query_wait_timeout.is_zero()).then(|| start.after(settings.query_wait_timeout));
        // query_wait_notify: one NOTICE per wait once the client has been queued that long. One
        // timer serves both deadlines (the per-client future stays small).
        let mut notify_at = (!settings.query_wait_notify.is_zero()).then(|| start.after(settings.query_wait_notify));
        let result = loop {
            let next = [query_timeout, wait_timeout, notify_at].into_iter().flatten().min();
            // The relay's own timer (boxed) serves the wait: a Sleep in this future would make
            // every client's task bigger. A timer still armed for an earlier moment (the last
            // wait's, left armed by arm_timer) is kept: it wakes this loop early, once, and
            // the loop arms it again. Under load a client waits at every transaction, and
            // moving the timer in tokio's wheel each time cost more than the rest of the wait.
            if let Some(at) = next {
                if self.timer.is_none() || self.timer_due.is_none_or(|due| due > at) {
                    self.timer_due = Some(at);
                    let when = at.deadline((Micros::now(), Instant::now()));
                    match self.timer.as_mut() {
                        Some(t) => t.as_mut().reset(when),
                        None => self.timer = Some(Box::pin(tokio::time::sleep_until(when))),
                    }
                }
            }
            // The NOTICE is written after the select (an await inside a branch would keep the
            // branch futures in this future's layout).
            let notify_now = tokio::select! {
                // Checkout first: when an idle server is there, nothing else is polled.
                biased;
                r = &mut checkout => break r,
                () = expiry(&mut self.timer), if next.is_some() => {
                    // Fired: the next turn arms it again for what is left.
                    self.timer_due = None;
                    let now = Micros::now();
                    if query_timeout.is_some_and(|t| now >= t) {
                        return Err(Fault::pooler(sqlstate::PROTOCOL_VIOLATION, "query_timeout").into());
                    }
                    if wait_timeout.is_some_and(|t| now >= t) {
                        break Err(CheckoutError::QueryWaitTimeout);
                    }
                    notify_at.is_some_and(|t| now >= t)
                }
                // KILL / KILL_CLIENT reach a client waiting for a server (a paused one too). A
                // fast-close request means nothing to a client that holds no server.
                () = info.nudged() => {
                    if info.is_killed() {
                        return Err(Fault::pooler(sqlstate::PROTOCOL_VIOLATION, info.kill_reason()).into());
                    }
                    false
                }
                n = tokio::io::AsyncReadExt::read_buf(&mut self.client, &mut self.cin), if !self.client_eof && self.cin.len() < self.client_read_limit() => {
                    match n {
                        Ok(0) | Err(_) => return Err(End::ClientGone),
                        Ok(n) => {
                            PoolStats::add(&self.stats().bytes_received, n as u64);
                            self.scan_client()?;
                            false
                        }
                    }
                }
            };
            if notify_now {
                notify_at = None;
                if Box::pin(self.notify_queued()).await.is_err() {
                    return Err(End::ClientGone);
                }
            }
        };
        result.map_err(|e| {
            let (code, msg) = checkout_error_message(&e);
            let side = match e {
                CheckoutError::QueryWaitTimeout | CheckoutError::ShuttingDown => Side::Pooler,
                CheckoutError::LoginFailing(..) | CheckoutError::Connect(_) | CheckoutError::Refused(_) => Side::Server,
            };
            Fault { side, code, message: msg }.into()
        })
    }

    /// Makes `server` the session's: cancel requests, SHOW CLIENTS state, prepared-statement
    /// tracking. `request_us` is when the client asked for it (registry clock).
    pub(super) fn install(&mut self, mut server: Lease, request_us: u64) {
        // What the server sent after its last ReadyForQuery (read with the answer to a check,
        // SET or replay query) is the client's now.
        if !server.leftover.is_empty() {
            let left = std::mem::take(&mut server.leftover);
            self.sout.extend_from_slice(&left);
        }
        let info = &self.session.info;
        self.session.cancel.attach(&server.addr, server.backend_key);
        server.tag.served = true;
        self.had_server = true;
        self.saw_ready = false;
        server.activate();
        info.set_state(ClientState::Active);
        info.server_pid.store(server.backend_key.0, Ordering::Relaxed);
        info.server_id.store(server.id, Ordering::Relaxed);
        info.request_time_us.store(request_us.max(1), Ordering::Relaxed);
        self.tracker.reset();
        self.server_fatal = None;
        let max_prepared = self.shared.max_prepared_statements.load(Ordering::Relaxed);
        self.max_prepared = u32::try_from(max_prepared).unwrap_or(u32::MAX);
        self.track_prepared = self.mode != PoolMode::Session && self.max_prepared > 0;
        self.cache_unnamed = self.shared.cache_unnamed_statements.load(Ordering::Relaxed);
        self.need_server = false;
        self.server = Some(server);
    }

    /// Tells a queued client that it waits for a server, in PgBouncer's words (janitor.c). The
    /// NOTICE goes out now unless earlier output is still unsent; then it queues behind it.
    async fn notify_queued(&mut self) -> std::io::Result<()> {
        const QUEUED: &str = "No server connection available in postgres backend, client being queued";
        let mut out = BytesMut::new();
        build::error_response(&mut out, Severity::Notice, sqlstate::SUCCESSFUL_COMPLETION, QUEUED);
        if self.s_ready == 0 && self.sout.is_empty() {
            return write_all(&mut self.client, &out).await;
        }
        let at = self.s_ready;
        let rest = self.sout.split_off(at);
        self.sout.extend_from_slice(&out);
        self.sout.unsplit(rest);
        self.s_ready += out.len();
        Ok(())
    }

    /// The client has more for its server (a next query, a pipelined one) while a cancel of its
    /// query is under way. PostgreSQL signals a cancelled backend twice (the process, then its
    /// group), and a second signal that lands after the next query was read cancels that one.
    /// Nothing more goes to the server until the cancel's connection to PostgreSQL is closed
    /// (within cancel_wait_timeout), as no other client gets a server with a cancel in flight
    /// ([`Relay::release_apart`]). The client's answers, if any were read meanwhile, go on
    /// with the loop after it; the wait is as long as PostgreSQL takes to close the cancel's
    /// connection, the time to signal one process.
    /// A KILL or the client's leaving ends the wait at once: the server, with the client's
    /// requests not sent, is then closed without waiting for the cancel ([`Relay::finish`]).
    /// What the client sends meanwhile is read (so that its leaving is seen) and scanned after.
    pub(super) async fn wait_cancel(&mut self) -> Option<End> {
        use std::future::Future;
        use std::task::Poll;
        let info = self.session.info.clone();
        let cancel = self.session.cancel.clone();
        let mut wait = std::pin::pin!(cancel.wait_cancels(self.shared.config().general.cancel_wait_timeout));
        let mut read = 0;
        std::future::poll_fn(|cx| {
            if wait.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            // Other nudges (a fast close, a hand-over) wait: the loop sees them after.
            while info.poll_nudged(cx).is_ready() {
                if info.is_killed() {
                    return Poll::Ready(());
                }
            }
            loop {
                match self.poll_read_client(cx) {
                    Some(Event::ClientRead(n)) if n > 0 => read += n,
                    Some(_) => {
                        self.client_eof = true;
                        return Poll::Ready(());
                    }
                    None => return Poll::Pending,
                }
            }
        })
        .await;
        if read > 0 {
            PoolStats::add(&self.stats().bytes_received, read as u64);
            if !self.client_eof {
                if let Err(e) = self.scan_client() {
                    return Some(e.into());
                }
            }
        }
        None
    }

    /// `closing because: ...` (log_disconnections) and `pooler error: ...` (log_pooler_errors),
    /// as PgBouncer logs a client's end. Not async, so nothing here grows the client's future.
    fn log_end(&self, end: &End) {
        let g = &self.shared.config().general;
        let age = self.session.info.connect_time.elapsed().map(|d| d.as_secs()).unwrap_or(0);
        let tag = self.session.tag();
        match end {
            End::ClientGone if g.log_disconnections => {
                let reason = if self.terminate { "client close request" } else { "client unexpected eof" };
                crate::conn_log!(info, tag, "closing because: {reason} (age={age}s)");
            }
            End::ClientGone | End::HandOver | End::Move(_) => {}
            End::Fatal(fault) => {
                PoolStats::add(&self.stats().sessions_closed[fault.side.index()], 1);
                let msg = &fault.message;
                // PgBouncer's lines stay word for word (log tools parse them); whose fault it
                // was goes on a line of its own.
                if g.log_disconnections {
                    crate::conn_log!(info, tag, "closing because: {msg} (age={age}s)");
                }
                if g.log_pooler_errors {
                    crate::conn_log!(warn, tag, "pooler error: {msg}");
                }
                crate::conn_log!(debug, tag, sqlstate = fault.code, "session ended by {}: {msg}", fault.side);
            }
        }
    }

    pub(super) async fn finish(&mut self, end: End) {
        if let Some(server) = self.server.take() {
            Box::pin(self.let_go(server)).await;
        }
        self.end_with(end).await;
    }

    /// The client's end: logged, and a FATAL (with what the server sent before it) written.
    async fn end_with(&mut self, end: End) {
        self.log_end(&end);
        match end {
            End::ClientGone | End::HandOver | End::Move(_) => {}
            End::Fatal(fault) => {
                let mut out = BytesMut::new();
                build::error_response(&mut out, Severity::Fatal, fault.code, &fault.message);
                let pending = self.sout.split_to(self.s_ready);
                let _ = write_all(&mut self.client, &pending).await;
                let _ = write_all(&mut self.client, &out).await;
            }
        }
        // The session's registrations go when the relay (and its session) is dropped.
    }
}

/// Completes when `timer` fires; never without one.
async fn expiry(timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}
