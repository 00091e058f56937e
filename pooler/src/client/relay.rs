//! The hot path: bytes between one client and the server it holds. One task, one event loop
//! (`poll_event`) over four operations — write to server, write to client, read from server,
//! read from client — so neither side can block the other. Frames are forwarded from the read
//! buffers without copying; only the messages that decide pooling are looked at: Query, Sync,
//! FunctionCall, Terminate from the client; ReadyForQuery and ParameterStatus from the server.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use pgmux_protocol::backend::{self, TxStatus};
use pgmux_protocol::build::{self, Severity};
use pgmux_protocol::frame::peek_header;
use pgmux_protocol::{sqlstate, tags, ProtocolError};
use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};
use tokio_util::io::poll_read_buf;

use super::io::ClientIo;
use super::login::{checkout_error_message, Session};
use super::prepared::{ClientStatements, Response, Rewrite, Tracker};
use crate::clients::ClientState;
use crate::config::PoolMode;
use crate::net::Stream;
use crate::pool::{PoolSettings, PoolStats};
use crate::server::{self, ServerConn};
use crate::shared::{RunState, Shared};

/// Unsent bytes allowed per direction before reading from that side pauses (backpressure).
const HIGH_WATER: usize = 256 * 1024;
/// Read granularity.
const READ_CHUNK: usize = 16 * 1024;
/// How long a release waits for a cancel in flight to its server (cancel_wait_timeout).
const CANCEL_WAIT: Duration = Duration::from_secs(10);

enum Event {
    ServerWrote(usize),
    ClientWrote(usize),
    ServerRead(usize),
    ClientRead(usize),
    ServerFailed(std::io::Error),
    ClientFailed,
    Timer,
    Killed,
}

/// Why the loop stops.
enum End {
    /// Client said Terminate or closed.
    ClientGone,
    /// pgmux closes the client with this error.
    Fatal(&'static str, String),
}

struct Relay {
    shared: Arc<Shared>,
    session: Session,
    settings: Arc<PoolSettings>,
    client: Stream,
    max_packet: usize,
    /// Client -> server bytes; `c_ready` of them are scanned and may be sent.
    cin: BytesMut,
    c_ready: usize,
    c_skip: usize,
    /// Server -> client bytes; `s_ready` of them are scanned and may be sent.
    sout: BytesMut,
    s_ready: usize,
    s_skip: usize,
    server: Option<ServerConn>,
    /// Queries and Syncs sent whose ReadyForQuery has not come back.
    pending: u32,
    /// Extended-protocol messages sent since the last Sync.
    unsynced: bool,
    tx: TxStatus,
    terminate: bool,
    client_eof: bool,
    /// A ReadyForQuery arrived during the last scan.
    saw_ready: bool,
    fatal: Option<(&'static str, String)>,
    query_start: Option<Instant>,
    xact_start: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    timer_reason: &'static str,
    /// Complete client messages wait in `cin` and no server is attached.
    need_server: bool,
    /// Size of a client message that must be whole in `cin` before it can be rewritten.
    c_whole: usize,
    /// The server is in COPY FROM STDIN: Syncs the client sends are ignored by it.
    copy_in: bool,
    /// The last request counted was a Sync (not a Query).
    last_request_sync: bool,
    /// Named prepared statements are mapped across servers (transaction/statement modes).
    track_prepared: bool,
    max_prepared: usize,
    statements: ClientStatements,
    tracker: Tracker,
    /// Completes when the console asks to close this client (KILL, KILL_CLIENT).
    kill: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Runs a logged-in session until the client leaves or is closed.
pub async fn run(shared: Arc<Shared>, io: ClientIo, session: Session) {
    let config = shared.config();
    let settings = session.pool.settings();
    let mut r = Relay {
        shared: shared.clone(),
        settings,
        client: io.stream,
        max_packet: config.general.max_packet_size as usize,
        cin: io.rbuf,
        c_ready: 0,
        c_skip: 0,
        sout: BytesMut::new(),
        s_ready: 0,
        s_skip: 0,
        server: None,
        pending: 0,
        unsynced: false,
        tx: TxStatus::Idle,
        terminate: false,
        client_eof: false,
        saw_ready: false,
        fatal: None,
        query_start: None,
        xact_start: None,
        timer: None,
        timer_reason: "",
        need_server: false,
        c_whole: 0,
        copy_in: false,
        last_request_sync: false,
        track_prepared: false,
        max_prepared: config.general.max_prepared_statements as usize,
        statements: ClientStatements::default(),
        tracker: Tracker::default(),
        kill: {
            let info = session.info.clone();
            Box::pin(async move { info.kill.notified().await })
        },
        session,
    };
    r.track_prepared = r.settings.mode != PoolMode::Session && r.max_prepared > 0;
    let end = r.serve(&config.general).await;
    r.finish(end, config.general.log_disconnections).await;
}

impl Relay {
    fn stats(&self) -> &PoolStats {
        &self.session.pool.stats
    }

    async fn serve(&mut self, g: &crate::config::General) -> End {
        if let Err(e) = self.scan_client() {
            return End::Fatal(sqlstate::PROTOCOL_VIOLATION, e);
        }
        loop {
            if let Some((code, msg)) = self.fatal.take() {
                return End::Fatal(code, msg);
            }
            if self.session.info.is_killed() {
                return End::Fatal(sqlstate::ADMIN_SHUTDOWN, "client killed by admin".into());
            }
            if self.server.is_none() {
                if self.terminate || self.client_eof {
                    return End::ClientGone;
                }
                if self.shared.state() == RunState::WaitForServers && self.s_ready == 0 {
                    return End::Fatal(sqlstate::ADMIN_SHUTDOWN, "server shutting down".into());
                }
                if self.need_server {
                    if let Err(end) = self.attach().await {
                        return end;
                    }
                    if let Err(e) = self.scan_client() {
                        return End::Fatal(sqlstate::PROTOCOL_VIOLATION, e);
                    }
                }
            } else if self.client_eof || self.terminate {
                return End::ClientGone;
            }
            self.arm_timer(g);
            let ev = poll_fn(|cx| self.poll_event(cx)).await;
            match ev {
                Event::ServerWrote(n) => {
                    self.cin.advance(n);
                    self.c_ready -= n;
                }
                Event::ClientWrote(n) => {
                    self.sout.advance(n);
                    self.s_ready -= n;
                    PoolStats::add(&self.stats().bytes_sent, n as u64);
                }
                Event::ClientRead(0) | Event::ClientFailed => self.client_eof = true,
                Event::ClientRead(n) => {
                    PoolStats::add(&self.stats().bytes_received, n as u64);
                    if let Err(e) = self.scan_client() {
                        return End::Fatal(sqlstate::PROTOCOL_VIOLATION, e);
                    }
                }
                Event::ServerRead(0) => return self.server_lost("server closed the connection"),
                Event::ServerFailed(e) => return self.server_lost(&e.to_string()),
                Event::ServerRead(_) => {
                    if let Err(e) = self.scan_server() {
                        return self.server_lost(&e.to_string());
                    }
                    if self.saw_ready && self.releasable() && self.settings.mode != PoolMode::Session {
                        self.release().await;
                    }
                }
                Event::Killed => return End::Fatal(sqlstate::ADMIN_SHUTDOWN, "client killed by admin".into()),
                Event::Timer => {
                    self.timer = None;
                    return End::Fatal(sqlstate::PROTOCOL_VIOLATION, self.timer_reason.to_owned());
                }
            }
        }
    }

    /// How many client bytes may sit in `cin`: the high-water mark, or a whole message that is
    /// waited for (bounded by max_packet_size).
    fn client_read_limit(&self) -> usize {
        HIGH_WATER.max(self.c_ready + self.c_whole)
    }

    /// True when the server holds no state of this client: nothing in flight, no transaction.
    fn releasable(&self) -> bool {
        self.pending == 0 && self.tx == TxStatus::Idle && !self.unsynced && self.c_skip == 0 && self.c_ready == 0
    }

    fn server_lost(&mut self, why: &str) -> End {
        tracing::warn!(client = %self.session.peer, db = %self.session.pool.db, "server connection lost: {why}");
        if let Some(s) = self.server.take() {
            self.session.pool.clients_active.fetch_sub(1, Ordering::Relaxed);
            self.session.pool.discard(s);
        }
        End::Fatal(sqlstate::PROTOCOL_VIOLATION, "server conn crashed?".into())
    }

    fn arm_timer(&mut self, g: &crate::config::General) {
        let (limit, reason) = if self.server.is_none() {
            (g.client_idle_timeout, "client_idle_timeout")
        } else if self.pending > 0 {
            (g.query_timeout, "query_timeout")
        } else if self.tx != TxStatus::Idle {
            (g.idle_transaction_timeout, "idle transaction timeout")
        } else {
            (Duration::ZERO, "")
        };
        if limit.is_zero() {
            self.timer = None;
            return;
        }
        let start = match reason {
            "query_timeout" => self.query_start.unwrap_or_else(Instant::now),
            _ => Instant::now(),
        };
        if self.timer_reason != reason || self.timer.is_none() || reason != "query_timeout" {
            self.timer = Some(Box::pin(tokio::time::sleep_until(start + limit)));
            self.timer_reason = reason;
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if let Some(s) = self.server.as_mut() {
            if self.c_ready > 0 {
                match Pin::new(&mut s.stream).poll_write(cx, &self.cin[..self.c_ready]) {
                    Poll::Ready(Ok(n)) => return Poll::Ready(Event::ServerWrote(n)),
                    Poll::Ready(Err(e)) => return Poll::Ready(Event::ServerFailed(e)),
                    Poll::Pending => {}
                }
            }
        }
        if self.s_ready > 0 {
            match Pin::new(&mut self.client).poll_write(cx, &self.sout[..self.s_ready]) {
                Poll::Ready(Ok(n)) if n > 0 => return Poll::Ready(Event::ClientWrote(n)),
                Poll::Ready(_) => return Poll::Ready(Event::ClientFailed),
                Poll::Pending => {}
            }
        }
        if let Some(s) = self.server.as_mut() {
            if self.sout.len() < HIGH_WATER {
                if self.sout.capacity() - self.sout.len() < READ_CHUNK / 2 {
                    self.sout.reserve(READ_CHUNK);
                }
                match poll_read_buf(Pin::new(&mut s.stream), cx, &mut self.sout) {
                    Poll::Ready(Ok(n)) => return Poll::Ready(Event::ServerRead(n)),
                    Poll::Ready(Err(e)) => return Poll::Ready(Event::ServerFailed(e)),
                    Poll::Pending => {}
                }
            }
        }
        if !self.client_eof && !self.terminate && self.cin.len() < self.client_read_limit() {
            if self.cin.capacity() - self.cin.len() < READ_CHUNK / 2 {
                self.cin.reserve(READ_CHUNK);
            }
            match poll_read_buf(Pin::new(&mut self.client), cx, &mut self.cin) {
                Poll::Ready(Ok(n)) => return Poll::Ready(Event::ClientRead(n)),
                Poll::Ready(Err(_)) => return Poll::Ready(Event::ClientFailed),
                Poll::Pending => {}
            }
        }
        if let Some(t) = self.timer.as_mut() {
            if t.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Timer);
            }
        }
        if self.kill.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Event::Killed);
        }
        Poll::Pending
    }

    /// Marks whole or partial client messages as sendable, counting requests. Without a server
    /// it only notes that one is needed: what is sent depends on the server (prepared statements).
    fn scan_client(&mut self) -> Result<(), String> {
        loop {
            if self.c_skip > 0 {
                let n = self.c_skip.min(self.cin.len() - self.c_ready);
                self.c_ready += n;
                self.c_skip -= n;
                if self.c_skip > 0 {
                    return Ok(());
                }
                continue;
            }
            let avail = &self.cin[self.c_ready..];
            let Some((tag, total)) = peek_header(avail, self.max_packet).map_err(|e| protocol_text(&e))? else {
                return Ok(());
            };
            if tag == tags::frontend::TERMINATE {
                self.terminate = true;
                self.cin.truncate(self.c_ready);
                return Ok(());
            }
            let Some(server) = self.server.as_mut() else {
                self.need_server = true;
                return Ok(());
            };
            self.c_whole = 0;
            match tag {
                tags::frontend::SYNC if self.copy_in => {
                    // PostgreSQL ignores Sync during COPY FROM STDIN: no ReadyForQuery will answer it.
                }
                tags::frontend::QUERY | tags::frontend::FUNCTION_CALL | tags::frontend::SYNC => {
                    self.last_request_sync = tag == tags::frontend::SYNC;
                    if self.track_prepared {
                        if tag == tags::frontend::SYNC {
                            self.tracker.on_sync();
                        } else {
                            self.tracker.on_query();
                        }
                    }
                    self.begin_request();
                    self.unsynced = false;
                }
                tags::frontend::PARSE | tags::frontend::BIND | tags::frontend::DESCRIBE | tags::frontend::CLOSE => {
                    self.unsynced = true;
                    match tag {
                        tags::frontend::PARSE => PoolStats::add(&self.session.pool.stats.client_parse_count, 1),
                        tags::frontend::BIND => PoolStats::add(&self.session.pool.stats.bind_count, 1),
                        _ => {}
                    }
                    if self.track_prepared {
                        if avail.len() < total {
                            self.c_whole = total;
                            return Ok(());
                        }
                        let mut rw = Rewrite {
                            client: &mut self.statements,
                            server: &mut server.statements,
                            tracker: &mut self.tracker,
                            max: self.max_prepared,
                            server_parses: 0,
                        };
                        let out = rw.message(tag, &avail[5..total]).map_err(|e| protocol_text(&e))?;
                        PoolStats::add(&self.session.pool.stats.server_parse_count, rw.server_parses);
                        if let Some(new) = out {
                            let mut tail = self.cin.split_off(self.c_ready);
                            tail.advance(total);
                            self.cin.extend_from_slice(&new);
                            self.cin.extend_from_slice(&tail);
                            self.c_ready += new.len();
                            continue;
                        }
                    } else if tag == tags::frontend::PARSE {
                        PoolStats::add(&self.session.pool.stats.server_parse_count, 1);
                    }
                }
                tags::frontend::EXECUTE => self.unsynced = true,
                tags::frontend::COPY_DONE | tags::frontend::COPY_FAIL => self.copy_in = false,
                tags::frontend::FLUSH | tags::frontend::COPY_DATA | tags::frontend::PASSWORD => {}
                _ => return Err(format!("invalid client message type {:?}", tag as char)),
            }
            self.c_skip = total;
        }
    }

    fn begin_request(&mut self) {
        let now = Instant::now();
        if self.pending == 0 {
            self.query_start = Some(now);
        }
        if self.xact_start.is_none() {
            self.xact_start = Some(now);
        }
        self.pending += 1;
    }

    /// Marks server bytes as sendable; reads ReadyForQuery and ParameterStatus on the way.
    fn scan_server(&mut self) -> Result<(), ProtocolError> {
        self.saw_ready = false;
        loop {
            if self.s_skip > 0 {
                let n = self.s_skip.min(self.sout.len() - self.s_ready);
                self.s_ready += n;
                self.s_skip -= n;
                if self.s_skip > 0 {
                    return Ok(());
                }
                continue;
            }
            let avail = &self.sout[self.s_ready..];
            let Some((tag, total)) = peek_header(avail, usize::MAX)? else {
                return Ok(());
            };
            if self.track_prepared {
                match tag {
                    b'1' | b'3' => {
                        if avail.len() < total {
                            return Ok(());
                        }
                        let r = if tag == b'1' {
                            self.tracker.on_parse_complete()
                        } else {
                            self.tracker.on_close_complete()
                        };
                        if r == Response::Swallow {
                            let mut tail = self.sout.split_off(self.s_ready);
                            tail.advance(total);
                            self.sout.unsplit(tail);
                        } else {
                            self.s_ready += total;
                        }
                        continue;
                    }
                    tags::backend::ERROR_RESPONSE => {
                        if let Some(s) = self.server.as_mut() {
                            self.tracker.on_error(&mut s.statements);
                        }
                    }
                    tags::backend::READY_FOR_QUERY if avail.len() >= total => {
                        if let Some(s) = self.server.as_mut() {
                            self.tracker.on_ready(&mut s.statements);
                        }
                    }
                    _ => {}
                }
            }
            match tag {
                tags::backend::COPY_IN_RESPONSE => {
                    self.copy_in = true;
                    if self.last_request_sync && self.pending > 0 {
                        // The Sync sent after the Execute that started COPY is ignored by the
                        // server; the client's Sync after CopyDone will be answered instead.
                        self.pending -= 1;
                        self.unsynced = true;
                        if self.track_prepared {
                            self.tracker.reopen();
                        }
                    }
                    self.s_skip = total;
                }
                tags::backend::ERROR_RESPONSE => {
                    self.copy_in = false;
                    self.s_skip = total;
                }
                tags::backend::READY_FOR_QUERY | tags::backend::PARAMETER_STATUS => {
                    if avail.len() < total {
                        return Ok(());
                    }
                    let body = &avail[5..total];
                    if tag == tags::backend::PARAMETER_STATUS {
                        let (k, v) = backend::parameter_status(body)?;
                        let (k, v) = (String::from_utf8_lossy(k), String::from_utf8_lossy(v));
                        self.session.params.set(&k, &v);
                        if let Some(s) = self.server.as_mut() {
                            s.params.set(&k, &v);
                            s.synced_params = self.session.params.fingerprint();
                        }
                    } else {
                        let status = backend::ready_for_query(body)?;
                        self.on_ready(status);
                        if self.fatal.is_some() {
                            // The ReadyForQuery is replaced by the error; drop it and what follows.
                            self.sout.truncate(self.s_ready);
                            return Ok(());
                        }
                    }
                    self.s_ready += total;
                }
                _ => self.s_skip = total,
            }
        }
    }

    fn on_ready(&mut self, status: TxStatus) {
        self.saw_ready = true;
        self.pending = self.pending.saturating_sub(1);
        self.tx = status;
        let now = Instant::now();
        let stats = &self.session.pool.stats;
        PoolStats::add(&stats.query_count, 1);
        let hist = &self.session.pool.histograms;
        if let Some(t) = self.query_start.take() {
            let us = now.duration_since(t).as_micros() as u64;
            PoolStats::add(&stats.query_time_us, us);
            hist.query.observe(us);
        }
        if self.pending > 0 {
            self.query_start = Some(now);
        }
        if status == TxStatus::Idle {
            PoolStats::add(&stats.xact_count, 1);
            if let Some(t) = self.xact_start.take() {
                let us = now.duration_since(t).as_micros() as u64;
                PoolStats::add(&stats.xact_time_us, us);
                hist.xact.observe(us);
            }
        } else if self.settings.mode == PoolMode::Statement {
            self.fatal = Some((
                sqlstate::FEATURE_NOT_SUPPORTED,
                "transaction blocks not allowed in statement pooling mode".into(),
            ));
        }
    }

    /// Gets a server for the bytes waiting in `cin`, watching the client while it waits.
    async fn attach(&mut self) -> Result<(), End> {
        let pool = self.session.pool.clone();
        let start = Instant::now();
        let settings = self.settings.clone();
        let info = self.session.info.clone();
        info.set_state(ClientState::Waiting);
        pool.clients_waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = WaitingGuard(&pool.clients_waiting);
        let checkout = pool.checkout_with(&settings);
        tokio::pin!(checkout);
        let result = loop {
            tokio::select! {
                r = &mut checkout => break r,
                n = tokio::io::AsyncReadExt::read_buf(&mut self.client, &mut self.cin), if !self.client_eof && self.cin.len() < self.client_read_limit() => {
                    match n {
                        Ok(0) | Err(_) => return Err(End::ClientGone),
                        Ok(n) => {
                            PoolStats::add(&self.stats().bytes_received, n as u64);
                            self.scan_client().map_err(|e| End::Fatal(sqlstate::PROTOCOL_VIOLATION, e))?;
                        }
                    }
                }
            }
        };
        let mut server = match result {
            Ok(s) => s,
            Err(e) => {
                let (code, msg) = checkout_error_message(&e);
                return Err(End::Fatal(code, msg));
            }
        };
        let waited = start.elapsed().as_micros() as u64;
        PoolStats::add(&pool.stats.wait_time_us, waited);
        pool.histograms.wait.observe(waited);
        PoolStats::add(&pool.stats.server_assignment_count, 1);
        if !server.leftover.is_empty() {
            let left = std::mem::take(&mut server.leftover);
            self.sout.extend_from_slice(&left);
        }
        let wanted = self.session.params.fingerprint();
        let sql = if server.synced_params == wanted { None } else { self.session.params.sync_sql(&server.params) };
        server.synced_params = wanted;
        if let Some(sql) = sql {
            if let Err(e) = server::run_simple_query(&mut server, &sql).await {
                match e {
                    server::ServerError::Rejected { sqlstate: _, message, .. } => {
                        pool.release(server);
                        return Err(End::Fatal(
                            sqlstate::PROTOCOL_VIOLATION,
                            format!("could not set parameters: {message}"),
                        ));
                    }
                    other => {
                        pool.discard(server);
                        return Err(End::Fatal(sqlstate::PROTOCOL_VIOLATION, format!("server conn crashed? {other}")));
                    }
                }
            }
        }
        self.session.cancel.attach(&server.addr, server.backend_key);
        pool.clients_active.fetch_add(1, Ordering::Relaxed);
        info.set_state(ClientState::Active);
        info.server_pid.store(server.backend_key.0, Ordering::Relaxed);
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        info.request_time_us.store(now_us, Ordering::Relaxed);
        self.tracker.reset();
        self.need_server = false;
        self.server = Some(server);
        Ok(())
    }

    /// Gives the server back to the pool (transaction and statement modes, and at the end).
    async fn release(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        self.session.info.set_state(ClientState::Idle);
        self.session.info.server_pid.store(0, Ordering::Relaxed);
        let pool = self.session.pool.clone();
        pool.clients_active.fetch_sub(1, Ordering::Relaxed);
        self.session.cancel.detach(CANCEL_WAIT).await;
        if self.settings.reset_always && !self.settings.reset_query.is_empty() {
            if server::run_simple_query(&mut server, &self.settings.reset_query).await.is_err() {
                pool.discard(server);
                return;
            }
            server.statements.clear();
        }
        pool.release_with(server, &self.settings);
        if self.sout.is_empty() && self.sout.capacity() > 4 * READ_CHUNK {
            self.sout = BytesMut::new();
        }
    }

    async fn finish(&mut self, end: End, log: bool) {
        let pool = self.session.pool.clone();
        if let Some(mut server) = self.server.take() {
            pool.clients_active.fetch_sub(1, Ordering::Relaxed);
            self.session.cancel.detach(CANCEL_WAIT).await;
            let clean = self.pending == 0
                && self.tx == TxStatus::Idle
                && !self.unsynced
                && self.c_skip == 0
                && self.s_skip == 0
                && self.sout.len() == self.s_ready;
            let reset = &self.settings.reset_query;
            let needs_reset =
                (self.settings.mode == PoolMode::Session || self.settings.reset_always) && !reset.is_empty();
            if clean && (!needs_reset || server::run_simple_query(&mut server, reset).await.is_ok()) {
                pool.release(server);
            } else {
                pool.discard(server);
            }
        }
        let reason = match end {
            End::ClientGone => "client close request".to_owned(),
            End::Fatal(code, msg) => {
                let mut out = BytesMut::new();
                build::error_response(&mut out, Severity::Fatal, code, &msg);
                let pending = self.sout.split_to(self.s_ready);
                let _ = write_all(&mut self.client, &pending).await;
                let _ = write_all(&mut self.client, &out).await;
                msg
            }
        };
        if log {
            tracing::info!(client = %self.session.peer, db = %pool.db, user = %self.session.user, "closing because: {reason}");
        }
        self.shared.cancels.unregister(self.session.cancel_key);
        self.shared.client_registry.unregister(self.session.info.id);
        pool.clients.fetch_sub(1, Ordering::Relaxed);
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
    tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncWriteExt::write_all(s, b))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "client write timed out"))?
}

fn protocol_text(e: &ProtocolError) -> String {
    match e {
        ProtocolError::Oversized(_) => "max_packet_size exceeded".into(),
        other => format!("bad packet header: {other}"),
    }
}
