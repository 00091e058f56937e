//! The hot path: bytes between one client and the server it holds. One task, one event loop
//! (`poll_event`) over four operations — write to server, write to client, read from server,
//! read from client — so neither side can block the other. Frames are forwarded from the read
//! buffers without copying; only the messages that decide pooling are looked at: Query, Sync,
//! FunctionCall, Terminate from the client; ReadyForQuery and ParameterStatus from the server.

mod aborted;
mod carry;
mod end;
mod handover;
mod lifecycle;
mod lost_copy;
mod notes;
mod poll;
mod release;
mod requests;
mod scan;
mod send_again;
mod server_loss;
mod timers;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use pgmux_protocol::flow::Flow;
use pgmux_protocol::{sqlstate, ProtocolError};
use tokio::time::Sleep;

use super::login::Session;
use super::prepared::{ClientStatements, Tracker};
use super::{buffers, ClientCount};
use crate::clock::Micros;
use crate::config::PoolMode;
use crate::net::client_io::ClientIo;
use crate::net::Stream;
use crate::pool::{Lease, PoolSettings, PoolStats};
use crate::session_state::SessionState;
use crate::shared::RunState;
use end::{End, Fault};

/// Unsent bytes allowed per direction before reading from that side pauses (backpressure).
const HIGH_WATER: usize = 256 * 1024;

/// What a turn of the event loop left: the session ended, or the client is idle and waits
/// outside it ([`Relay::run_parking`]).
enum Served {
    Ended(End),
    Parked,
}

/// What an event left to do ([`Relay::on_event`]).
enum Next {
    Loop,
    End(End),
    /// The client has more for its server while a cancel of its query is under way: it goes
    /// once the cancel is done.
    WaitCancel,
}

impl From<Option<End>> for Next {
    fn from(end: Option<End>) -> Self {
        end.map_or(Next::Loop, Next::End)
    }
}

enum Event {
    /// Bytes reached the client of a session that holds no server (writes with a server are
    /// booked inside `poll_event`).
    ClientWrote(usize),
    ServerRead(usize),
    ClientRead(usize),
    ServerFailed(std::io::Error),
    ClientFailed,
    Timer,
    Killed,
    /// The requests a Terminate followed have all reached the server: the session can end.
    Sent,
}

struct Relay {
    /// The shared state, through the guard that counts this client in `Shared::clients` until
    /// the relay ends.
    shared: ClientCount,
    session: Session,
    settings: Arc<PoolSettings>,
    client: Stream,
    /// max_packet_size.
    max_packet: u32,
    /// disable_pqexec: simple Query messages are refused.
    disable_pqexec: bool,
    /// Client -> server bytes; `c_ready` of them are scanned and may be sent.
    cin: BytesMut,
    c_ready: usize,
    c_skip: usize,
    /// Server -> client bytes; `s_ready` of them are scanned and may be sent.
    sout: BytesMut,
    s_ready: usize,
    s_skip: usize,
    server: Option<Lease>,
    /// What the server owes the client: requests, the batch, COPY, the transaction.
    flow: Flow,
    terminate: bool,
    client_eof: bool,
    /// A ReadyForQuery arrived since the last request was sent.
    saw_ready: bool,
    fatal: Option<Box<Fault>>,
    /// When the request under way started; with none under way, when the client's bytes that
    /// needed a server arrived (set at attach), so that the first query and transaction on that
    /// server are timed from there, wait included, as PgBouncer's.
    query_start: Option<Micros>,
    xact_start: Option<Micros>,
    timer: Option<Pin<Box<Sleep>>>,
    /// When `timer` fires (None once it has fired in the wait for a server).
    timer_due: Option<Micros>,
    /// The timeout `timer` is armed for (timers.rs); None when it is armed for nothing any
    /// more (left from the wait for a server) and only drops itself when it fires.
    timer_for: Option<timers::Timeout>,
    /// Complete client messages wait in `cin` and no server is attached.
    need_server: bool,
    /// Size of a client message that must be whole in `cin` before it can be rewritten.
    c_whole: usize,
    /// Named prepared statements are mapped across servers (transaction/statement modes with
    /// max_prepared_statements above 0); both are read at each attach.
    track_prepared: bool,
    max_prepared: u32,
    /// cache_unnamed_statements, read at each attach.
    cache_unnamed: bool,
    /// The pool mode this session runs in (session for a replication client).
    mode: PoolMode,
    /// A replication client: its server is its own for the whole session.
    dedicated: bool,
    statements: ClientStatements,
    tracker: Tracker,
    /// Which side's read is tried first next time both could be read (they alternate).
    client_reads_first: bool,
    /// Settings and SQL prepared statements carried across servers (transaction mode).
    carry: carry::Carry,
    /// A FATAL ErrorResponse from the server, held back until the server closes
    /// (server_loss.rs).
    server_fatal: Option<Box<Box<[u8]>>>,
    /// A transaction block whose server was lost, answered without a server until it ends.
    aborted: Option<Box<aborted::AbortedBlock>>,
    /// A COPY FROM STDIN whose server was lost: the rest of its stream is dropped.
    lost_copy: Option<Box<lost_copy::LostCopy>>,
    /// A server has been attached before: later checkouts wait for a failing server instead of
    /// getting PgBouncer's fast fail, which only the session's first one gets.
    had_server: bool,
}

/// Runs a logged-in session (and a replication client's own server) until the client leaves or
/// is closed.
pub fn run(
    count: ClientCount,
    io: ClientIo,
    session: (Session, Option<Box<Lease>>),
) -> impl Future<Output = ()> + Send {
    resume(count, io, session, ClientStatements::default(), None)
}

/// Runs a session that already has prepared statements (handed over on online restart). The
/// relay is built here, outside the future, so that the future holds it once and not its parts
/// as well: every connected client holds that future for its whole life.
pub(crate) fn resume(
    count: ClientCount,
    io: ClientIo,
    (session, dedicated): (Session, Option<Box<Lease>>),
    statements: ClientStatements,
    session_state: Option<Box<SessionState>>,
) -> impl Future<Output = ()> + Send {
    let config = count.config();
    let settings = session.pool.settings();
    let mode = if dedicated.is_some() { PoolMode::Session } else { settings.mode };
    // The login write buffer is not needed any more: free it now, not at the end of the session.
    let ClientIo { stream, rbuf, wbuf, tls: _ } = io;
    drop(wbuf);
    let mut r = Relay {
        shared: count,
        settings,
        client: stream,
        max_packet: config.general.max_packet_size,
        disable_pqexec: config.general.disable_pqexec,
        cin: rbuf,
        c_ready: 0,
        c_skip: 0,
        sout: BytesMut::new(),
        s_ready: 0,
        s_skip: 0,
        server: None,
        flow: Flow::default(),
        terminate: false,
        client_eof: false,
        saw_ready: false,
        fatal: None,
        query_start: None,
        xact_start: None,
        timer: None,
        timer_due: None,
        timer_for: None,
        need_server: false,
        c_whole: 0,
        track_prepared: false,
        max_prepared: 0,
        cache_unnamed: false,
        mode,
        dedicated: dedicated.is_some(),
        statements,
        tracker: Tracker::default(),
        client_reads_first: false,
        carry: carry::Carry::new(
            config.general.track_session_state && mode != PoolMode::Session,
            config.general.pin_session_state,
            session_state,
        ),
        server_fatal: None,
        aborted: None,
        lost_copy: None,
        had_server: false,
        session,
    };
    r.refresh_name_context();
    if let Some(server) = dedicated {
        let now_us = r.shared.client_registry.now_us();
        r.install(*server, now_us);
    }
    r.run_to_end()
}

impl Relay {
    /// The session from its first event to its end (or its hand-over to a new process). Not an
    /// `async fn`: that would move `self` from its argument slot into a local one, and the
    /// future would keep both (the client-task size test in client/mod.rs sees the difference).
    #[allow(clippy::manual_async_fn)]
    fn run_to_end(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let hosted = crate::workers::Hosted::here();
            let end = self.run_parking().await;
            drop(hosted);
            match end {
                End::HandOver => self.hand_over(),
                End::Move(to) => self.move_to(to),
                end => Box::pin(self.finish(end)).await,
            }
        }
    }

    fn stats(&self) -> &PoolStats {
        &self.session.pool.counters.here().stats
    }

    /// Runs the session to its end. While the client is idle between transactions (no server,
    /// nothing buffered either way) it waits here, outside the event loop's future: that future
    /// (most of a client task's size) is boxed while the client is busy and freed while it is
    /// idle, so an idle client costs little more than its `Relay`.
    async fn run_parking(&mut self) -> End {
        let mut woke = None;
        loop {
            match Box::pin(self.serve(woke.take())).await {
                Served::Parked => {
                    if let Some(to) = crate::workers::leaving() {
                        if self.can_hand_over() {
                            return End::Move(to);
                        }
                    }
                    self.arm_timer();
                    woke = Some(poll_fn(|cx| self.poll_event(cx)).await);
                }
                Served::Ended(end) => return end,
            }
        }
    }

    /// The event loop, from the event that woke a parked client (`woke`) or from the start,
    /// until the session ends or the client is idle and parks.
    async fn serve(&mut self, woke: Option<Event>) -> Served {
        match woke {
            Some(ev) => match self.on_event(ev) {
                Next::Loop => {}
                Next::End(end) => return Served::Ended(end),
                Next::WaitCancel => {
                    if let Some(end) = Box::pin(self.wait_cancel()).await {
                        return Served::Ended(end);
                    }
                }
            },
            None => {
                if let Err(e) = self.scan_client() {
                    return Served::Ended(e.into());
                }
            }
        }
        match self.turns().await {
            Some(end) => Served::Ended(end),
            None => Served::Parked,
        }
    }

    /// Turns of the event loop; None when the client parks.
    async fn turns(&mut self) -> Option<End> {
        loop {
            if let Some(fault) = self.fatal.take() {
                return Some(End::Fatal(fault));
            }
            if self.session.info.is_killed() {
                return Some(Fault::pooler(sqlstate::PROTOCOL_VIOLATION, self.session.info.kill_reason()).into());
            }
            if self.session.info.close_needed() {
                if let Some(end) = self.fast_close() {
                    return Some(end);
                }
            }
            if self.shared.giving.requested() && self.can_hand_over() {
                return Some(End::HandOver);
            }
            if self.server.is_none() {
                // Idle: give the buffers back; the next read or transaction takes them again.
                if self.cin.is_empty() && self.cin.capacity() > 0 {
                    buffers::give(std::mem::take(&mut self.cin));
                }
                if self.sout.is_empty() && self.sout.capacity() > 0 {
                    buffers::give(std::mem::take(&mut self.sout));
                }
            }
            if self.server.is_none() {
                if self.terminate || self.client_eof {
                    return Some(End::ClientGone);
                }
                // As PgBouncer's pause_client: a client that asks for a server after SHUTDOWN
                // WAIT_FOR_SERVERS is closed; idle ones are left alone until they ask.
                if self.need_server && self.shared.state() == RunState::WaitForServers {
                    return Some(Fault::pooler(sqlstate::ADMIN_SHUTDOWN, "server shutting down").into());
                }
                if self.need_server {
                    // Without an await in the busy case; the rest is inline (this future is
                    // boxed already, see `run_parking`).
                    match self.attach_now() {
                        lifecycle::Attaching::Done => {}
                        rest => {
                            if let Err(end) = self.attach_rest(rest).await {
                                return Some(end);
                            }
                        }
                    }
                    if let Err(e) = self.scan_client() {
                        return Some(e.into());
                    }
                }
            }
            // Also after an attach: a Terminate that came in one write with the requests it
            // follows ends the session as soon as they are sent, as one that comes later does
            // (what still runs is cancelled and the server rescued), rather than when they are
            // answered. A client gone without a Terminate ends at once: what it left unsent
            // is not run.
            if self.client_eof || (self.terminate && self.c_ready == 0) {
                return Some(End::ClientGone);
            }
            if self.parks() {
                self.tracker.shed();
                return None;
            }
            self.arm_timer();
            let ev = poll_fn(|cx| self.poll_event(cx)).await;
            // Handled without an await; a release that has to wait is boxed (rare).
            match self.on_event(ev) {
                Next::Loop => {}
                Next::End(end) => return Some(end),
                Next::WaitCancel => {
                    if let Some(end) = Box::pin(self.wait_cancel()).await {
                        return Some(end);
                    }
                }
            }
        }
    }

    /// Idle between transactions: no server, and nothing buffered from or for the client.
    fn parks(&self) -> bool {
        self.server.is_none() && !self.need_server && self.cin.is_empty() && self.sout.is_empty()
    }

    /// One event of the loop, handled without an await (this runs for every event): what it
    /// leaves to do.
    fn on_event(&mut self, ev: Event) -> Next {
        match ev {
            Event::ClientWrote(n) => self.client_wrote(n),
            Event::ClientRead(0) | Event::ClientFailed => self.client_eof = true,
            Event::ClientRead(n) => {
                PoolStats::add(&self.stats().bytes_received, n as u64);
                if let Err(e) = self.scan_client() {
                    return Next::End(e.into());
                }
                if self.c_ready > 0 && self.server.is_some() && self.session.cancel.under_way() {
                    return Next::WaitCancel;
                }
            }
            Event::ServerRead(0) => return self.server_lost("server closed the connection").into(),
            Event::ServerFailed(e) => return self.server_lost(&e.to_string()).into(),
            Event::ServerRead(_) => {
                if let Err(e) = self.scan_server() {
                    return Next::End(self.server_failed(&e.to_string()));
                }
                if self.saw_ready && self.releasable() && self.mode != PoolMode::Session && !self.carry.pinned {
                    if let Some(rest) = self.release_now() {
                        self.release_apart(rest);
                    }
                }
            }
            Event::Killed if self.session.info.is_killed() => {
                return Next::End(Fault::pooler(sqlstate::PROTOCOL_VIOLATION, self.session.info.kill_reason()).into())
            }
            // A fast-close request or a hand-over: the top of the loop looks at them; so at
            // the end of the requests a Terminate followed.
            Event::Killed | Event::Sent => {}
            Event::Timer => {
                self.timer = None;
                self.timer_due = None;
                // Polled only while armed by arm_timer for the timeout that applies.
                let reason = self.timer_for.unwrap_or(timers::Timeout::Query).reason();
                // A server in the middle of a query or transaction cannot be reused: it is
                // closed with the same reason, as PgBouncer does.
                self.close_server(reason);
                return Next::End(Fault::pooler(sqlstate::PROTOCOL_VIOLATION, reason).into());
            }
        }
        Next::Loop
    }

    /// `n` bytes of `sout` reached the client.
    fn client_wrote(&mut self, n: usize) {
        self.sout.advance(n);
        self.s_ready -= n;
        PoolStats::add(&self.stats().bytes_sent, n as u64);
    }

    /// How many client bytes may sit in `cin`: the high-water mark, or a whole message that is
    /// waited for (bounded by max_packet_size).
    fn client_read_limit(&self) -> usize {
        HIGH_WATER.max(self.c_ready + self.c_whole)
    }

    /// True when the server may go back to the pool as it is: it holds nothing of the client's
    /// ([`Flow::idle`]) and no message is half passed either way. The one rule, for the release
    /// between transactions and for the one at the end of the session.
    fn server_clean(&self) -> bool {
        self.flow.idle() && self.c_skip == 0 && self.s_skip == 0 && self.sout.len() == self.s_ready
    }

    /// Between transactions: the server is clean and the client has nothing scanned for it
    /// that is not sent yet.
    fn releasable(&self) -> bool {
        self.server_clean() && self.c_ready == 0
    }

    /// server_fast_close: a server made before RECONNECT / RELOAD is closed, and its client with
    /// it, as soon as it is between transactions (PgBouncer's janitor: `database configuration
    /// changed`). Until then the session goes on.
    fn fast_close(&mut self) -> Option<End> {
        const REASON: &str = "database configuration changed";
        let stale = self.server.as_ref().is_some_and(|s| self.session.pool.stale(s));
        if !stale || !self.releasable() {
            return None;
        }
        self.close_server(REASON);
        Some(Fault::pooler(sqlstate::ADMIN_SHUTDOWN, REASON).into())
    }

    /// The server's socket closed or failed: None when the session goes on without it
    /// (server_loss.rs), else how it ends.
    fn server_lost(&mut self, why: &str) -> Option<End> {
        // Its idle siblings may be dying with it (a PostgreSQL shutdown or restart); after a
        // crash they all are, whether or not it shows yet.
        if self.lost_with_its_cluster() {
            self.session.pool.cluster_lost();
        } else {
            self.session.pool.server_lost();
        }
        if !self.may_survive_server_loss() {
            tracing::info!(
                client = %self.session.peer(),
                flow = ?self.flow,
                c_skip = self.c_skip,
                s_skip = self.s_skip,
                carried = self.carry.busy(),
                "the session cannot go on without its server"
            );
            return Some(self.server_failed(why));
        }
        tracing::warn!(client = %self.session.peer(), db = %self.session.pool.db, "server connection lost: {why}; the client stays");
        self.close_server("server conn crashed?");
        self.answer_lost_requests();
        None
    }

    /// Closes the session's server (if it has one) with `reason`: it cannot be reused.
    fn close_server(&mut self, reason: &str) {
        if let Some(s) = self.server.take() {
            self.session.cancel.detach();
            s.close(reason);
        }
    }

    /// The server failed under this client: it is closed, and so is the client.
    fn server_failed(&mut self, why: &str) -> End {
        self.release_held_fatal();
        tracing::warn!(client = %self.session.peer(), db = %self.session.pool.db, "server connection lost: {why}");
        self.close_server("server conn crashed?");
        Fault::server("server conn crashed?").into()
    }
}

/// Keeps `clients_waiting` right however the wait for a server ends.
struct WaitingGuard<'a>(&'a std::sync::atomic::AtomicI64);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn write_all(s: &mut Stream, b: &[u8]) -> std::io::Result<()> {
    if b.is_empty() {
        return Ok(());
    }
    let write = async {
        tokio::io::AsyncWriteExt::write_all(s, b).await?;
        tokio::io::AsyncWriteExt::flush(s).await
    };
    tokio::time::timeout(Duration::from_secs(5), write)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "client write timed out"))?
}

/// Moves `ready` over bytes of a message whose header was already read (`skip` of them are
/// still to come); true when the buffer ends before the message does.
fn pass_through(len: usize, ready: &mut usize, skip: &mut usize) -> bool {
    let n = (*skip).min(len - *ready);
    *ready += n;
    *skip -= n;
    *skip > 0
}

/// A message header the relay refuses, in PgBouncer's words: the header's bytes (up to 8 of
/// those read) in hex.
fn protocol_fault(e: &ProtocolError, bytes: &[u8]) -> Fault {
    match e {
        ProtocolError::Oversized(_) => Fault::client("max_packet_size exceeded"),
        _ => {
            let hex: String = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            Fault::client(format!("bad packet header: '{hex}'"))
        }
    }
}
