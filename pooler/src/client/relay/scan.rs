//! The relay's scanners: which client bytes may be sent (counting requests, rewriting prepared
//! statements) and what the server's bytes say (ReadyForQuery, ParameterStatus, COPY).

use std::sync::atomic::Ordering;

use crate::clock::Micros;
use bytes::{Buf, BytesMut};
use pgmux_protocol::backend;
use pgmux_protocol::extended;
use pgmux_protocol::frame::peek_header;
use pgmux_protocol::{tags, ProtocolError};

use super::end::Fault;
use super::lost_copy;
use super::send_again::Held;
use super::{pass_through, protocol_fault, Relay};
use crate::client::prepared::{can_send_again, invalidation, Response, Rewrite, RewriteError, Rewritten};
use crate::client::{buffers, splice};
use crate::pool::PoolStats;

/// The largest server ErrorResponse held back to see whether it is a FATAL (server_loss.rs).
pub(super) const HELD_FATAL_MAX: usize = 8 * 1024;

/// ReadyForQuery 'I', as PostgreSQL answers a Sync outside a transaction.
const IDLE_READY: [u8; 6] = [tags::backend::READY_FOR_QUERY, 0, 0, 0, 5, b'I'];
/// CloseComplete.
const CLOSE_COMPLETE: [u8; 5] = [tags::backend::CLOSE_COMPLETE, 0, 0, 0, 4];

impl Relay {
    /// Marks whole or partial client messages as sendable, counting requests. Without a server
    /// it only notes that one is needed: what is sent depends on the server (prepared statements).
    pub(super) fn scan_client(&mut self) -> Result<(), Fault> {
        let result = self.scan_client_messages();
        if self.track_prepared && self.server.is_some() && self.tracker.only_own_answers() {
            // A Parse or Close answered by pgmux with nothing from the server to wait for is
            // answered now. Otherwise it goes out with the server's next answer (scan_server):
            // one write to the client, not two, as PostgreSQL answers a batch.
            self.emit_fakes();
        }
        result
    }

    fn scan_client_messages(&mut self) -> Result<(), Fault> {
        loop {
            if self.c_skip > 0 {
                if pass_through(self.cin.len(), &mut self.c_ready, &mut self.c_skip) {
                    return Ok(());
                }
                continue;
            }
            if let Some(lost) = self.lost_copy.as_mut().filter(|l| l.partial > 0) {
                // Without a server nothing is scanned ahead: the dropped bytes lead `cin`.
                let n = lost.partial.min(self.cin.len());
                self.cin.advance(n);
                lost.partial -= n;
                if lost.partial > 0 {
                    return Ok(());
                }
                continue;
            }
            let avail = &self.cin[self.c_ready..];
            let Some((tag, total)) =
                peek_header(avail, self.max_packet as usize).map_err(|e| protocol_fault(&e, avail))?
            else {
                return Ok(());
            };
            // A message its backend would drop the connection over, silently: refused here, so
            // that it costs no server (and a backend gone without a word is not taken for a
            // crash of the whole PostgreSQL, which closes every idle server of the pool).
            if total > pgmux_protocol::frame::POSTGRES_SMALL_MESSAGE + 1 && !self.postgres_would_read(tag, total)? {
                return Ok(());
            }
            if tag == tags::frontend::TERMINATE {
                self.terminate = true;
                self.cin.truncate(self.c_ready);
                return Ok(());
            }
            if let Some(lost) = self.lost_copy.as_mut() {
                match lost.next(tag) {
                    lost_copy::Next::Drop => {
                        lost.partial = total;
                        continue;
                    }
                    lost_copy::Next::DropAndAnswer => {
                        if avail.len() < total {
                            return Ok(());
                        }
                        self.cin.advance(total);
                        self.lost_copy = None;
                        self.answer_now(&IDLE_READY);
                        continue;
                    }
                    lost_copy::Next::Leave => self.lost_copy = None,
                }
            }
            if self.server.is_none() && self.aborted.is_some() {
                if !self.answer_aborted(tag, total)? {
                    return Ok(());
                }
                continue;
            }
            if self.server.is_none() {
                if self.answer_idle(tag, total) {
                    continue;
                }
                self.need_server = true;
                return Ok(());
            }
            self.c_whole = 0;
            // Whatever the client sends behind a kept batch would go before it if it were sent
            // again (replay.rs).
            self.tracker.replay_sent_behind(tag);
            // Any message for the server starts a request, as PgBouncer's query_start: a batch
            // closed by a Flush instead of a Sync is under query_timeout and in SHOW CLIENTS'
            // wait too (it is counted when its Sync comes). A Close of a named statement is
            // answered here when statements are tracked, as PgBouncer answers it.
            if self.query_start.is_none() && !(tag == tags::frontend::CLOSE && self.closes_own_statement(total)) {
                self.start_request_clock(Micros::now());
            }
            match tag {
                tags::frontend::SYNC if self.flow.ignores_sync() => {
                    // PostgreSQL ignores Sync during COPY FROM STDIN: no ReadyForQuery will answer it.
                }
                tags::frontend::QUERY if self.disable_pqexec => {
                    // As PgBouncer's disable_pqexec: only the extended protocol is allowed.
                    return Err(Fault::client("PQexec disallowed"));
                }
                tags::frontend::QUERY | tags::frontend::FUNCTION_CALL | tags::frontend::SYNC => {
                    if tag == tags::frontend::QUERY && !self.note_session_sql(tag, total) {
                        return Ok(());
                    }
                    if self.server.is_none() {
                        return Ok(());
                    }
                    if self.track_prepared {
                        if tag == tags::frontend::QUERY && self.cache_unnamed && self.may_begin() {
                            self.keep_lone_begin(total);
                        }
                        let Some(server) = self.server.as_mut() else { return Ok(()) };
                        let (st, cl) = (&mut server.statements, &mut self.statements);
                        if tag == tags::frontend::SYNC {
                            self.tracker.on_sync(st, cl);
                            if self.tracker.replay_keeping() {
                                match self.cin.get(..self.c_ready + total) {
                                    Some(batch) => self.tracker.replay_keep(&mut server.kept_batch, batch),
                                    // A Sync with a body not all here: not worth keeping.
                                    None => self.tracker.replay_off(),
                                }
                            }
                        } else {
                            self.tracker.on_query(tag == tags::frontend::QUERY, st, cl);
                        }
                    }
                    self.begin_request(tag == tags::frontend::SYNC);
                    if tag != tags::frontend::SYNC {
                        self.queries_skipped();
                    }
                }
                tags::frontend::PARSE | tags::frontend::BIND | tags::frontend::DESCRIBE | tags::frontend::CLOSE
                    if self.track_prepared =>
                {
                    if !self.note_extended(tag, total) {
                        return Ok(());
                    }
                    let Some(server) = self.server.as_mut() else { return Ok(()) };
                    // Nothing of the client's is open on the server: a refusal of a statement
                    // served from the cache rolls back nothing (replay.rs).
                    let (replayable, fresh_block) = if tag == tags::frontend::PARSE {
                        let fresh = self.tracker.block_begun() && self.flow.fresh_block();
                        (fresh || self.flow.idle(), fresh)
                    } else {
                        (false, false)
                    };
                    self.flow.extended();
                    let at = self.c_ready;
                    let epoch = self.shared.statement_epoch.load(Ordering::Relaxed);
                    let (client, tracker) = (&mut self.statements, &mut self.tracker);
                    let mut rw = Rewrite::new(
                        client,
                        &mut server.statements,
                        tracker,
                        self.max_prepared as usize,
                        self.cache_unnamed,
                        epoch,
                    );
                    rw.replayable = replayable;
                    rw.in_fresh_block = fresh_block;
                    let result = rw.message(&mut self.cin, at, tag, total);
                    let (cp, sp, b) = (rw.client_parses, rw.server_parses, rw.binds);
                    let stats = self.stats();
                    PoolStats::add(&stats.client_parse_count, cp);
                    PoolStats::add(&stats.server_parse_count, sp);
                    PoolStats::add(&stats.bind_count, b);
                    match result {
                        Ok(Rewritten::NeedMore) => {
                            self.c_whole = total;
                            return Ok(());
                        }
                        Ok(Rewritten::Done { ready, skip }) => {
                            self.c_ready += ready;
                            self.c_skip = skip;
                            continue;
                        }
                        Err(e) => return Err(self.refuse(e)),
                    }
                }
                tags::frontend::PARSE | tags::frontend::BIND | tags::frontend::DESCRIBE | tags::frontend::CLOSE => {
                    if !self.note_extended(tag, total) {
                        return Ok(());
                    }
                    self.flow.extended();
                }
                tags::frontend::EXECUTE => {
                    if self.carry.watches_portals() && !self.note_execute(total) {
                        return Ok(());
                    }
                    self.flow.extended();
                    self.carry.executes = self.carry.executes.saturating_add(1);
                    if self.track_prepared {
                        if let Some(server) = self.server.as_mut() {
                            self.tracker.on_execute(&mut server.statements, &mut self.statements);
                        }
                    }
                }
                tags::frontend::COPY_DONE | tags::frontend::COPY_FAIL => self.flow.copy_end(),
                tags::frontend::FLUSH | tags::frontend::COPY_DATA => {}
                _ => {
                    // PgBouncer's words (the client sees them), and its log line.
                    crate::conn_log!(error, self.session.tag(), "unknown pkt from client: {tag}/0x{tag:x}");
                    return Err(Fault::client("unknown pkt"));
                }
            }
            self.c_skip = total;
        }
    }

    /// A Flush or Sync from a client that holds no server (so it is outside a transaction and
    /// has no extended-protocol batch open) is answered here, without taking a server: Flush has
    /// nothing to push, Sync gets ReadyForQuery 'I' as PostgreSQL would answer it. Drivers send
    /// these alone (psycopg's pipeline exit, keep-alive Syncs).
    fn answer_idle(&mut self, tag: u8, total: usize) -> bool {
        let first_whole = self.c_ready == 0 && self.c_skip == 0 && self.cin.len() >= total;
        if tag == tags::frontend::CLOSE && first_whole && self.track_prepared && self.carry.made.is_none() {
            // A Close of one of its named statements, as PgBouncer answers it: the name is the
            // client's own (the servers keep the statement), so no server is needed. (A client
            // whose session state is followed has its Closes numbered among the server's
            // answers: those go to a server.)
            let forgot = extended::target(&self.cin[5..total])
                .is_ok_and(|t| t.is_named_statement() && self.statements.forget(t.name));
            if forgot {
                self.cin.advance(total);
                self.answer_now(&CLOSE_COMPLETE);
                self.session.info.show_prepared(self.statements.named_count());
            }
            return forgot;
        }
        let lone = first_whole && total == 5;
        if !lone || !matches!(tag, tags::frontend::FLUSH | tags::frontend::SYNC) {
            return false;
        }
        self.cin.advance(total);
        if tag == tags::frontend::SYNC {
            self.answer_now(&IDLE_READY);
        }
        true
    }

    /// Whether the Close at `c_ready` (`total` bytes, whole or not) is of a named statement
    /// with statements tracked: pgmux answers it itself, as PgBouncer does.
    #[cold]
    fn closes_own_statement(&self, total: usize) -> bool {
        let at = self.c_ready;
        self.track_prepared
            && self
                .cin
                .get(at + 5..at + total)
                .is_some_and(|body| extended::target(body).is_ok_and(|t| t.is_named_statement()))
    }

    /// A message over PostgreSQL's small-message limit at `c_ready`: true when it may go on,
    /// false when more of it must be read first.
    ///
    /// # Errors
    /// Longer than PostgreSQL reads of its type.
    #[cold]
    fn postgres_would_read(&self, tag: u8, total: usize) -> Result<bool, Fault> {
        if pgmux_protocol::frame::postgres_reads(tag, total) {
            return Ok(true);
        }
        // A Close or Describe of a named statement reaches the server under pgmux's short
        // name when statements are tracked (or is refused as unknown).
        let renamed = self.track_prepared && matches!(tag, tags::frontend::CLOSE | tags::frontend::DESCRIBE);
        match self.cin.get(self.c_ready + 5) {
            None if renamed => Ok(false),
            Some(&extended::STATEMENT) if renamed => Ok(true),
            _ => Err(Fault::client("invalid message length")),
        }
    }

    /// Puts `msg`, pgmux's own answer, at the current message boundary of `sout`.
    fn answer_now(&mut self, msg: &[u8]) {
        if self.sout.capacity() == 0 {
            self.sout = buffers::take();
        }
        splice::replace(&mut self.sout, self.s_ready, 0, msg);
        self.s_ready += msg.len();
    }

    /// A transaction block whose server was lost: answers the next whole client message
    /// without a server (aborted.rs). False when more bytes are needed.
    fn answer_aborted(&mut self, tag: u8, total: usize) -> Result<bool, Fault> {
        if self.c_ready != 0 || self.cin.len() < total {
            self.c_whole = total;
            return Ok(false);
        }
        let Some(block) = self.aborted.as_mut() else { return Ok(false) };
        let mut msg = BytesMut::new();
        let answered = block.answer(tag, &self.cin[5..total], &mut msg)?;
        self.cin.advance(total);
        self.c_whole = 0;
        if answered == super::aborted::Answered::Ended {
            self.aborted = None;
        }
        if !msg.is_empty() {
            self.answer_now(&msg);
        }
        Ok(true)
    }

    /// Sends, at the current message boundary of `sout`, the ParseComplete / CloseComplete that
    /// pgmux owes the client when the requests ahead of them have been answered.
    fn emit_fakes(&mut self) {
        if self.s_skip > 0 {
            return;
        }
        // Runs before every server message: nothing is built unless an answer is owed.
        while let Some(tag) = self.tracker.next_fake() {
            self.answer_now(&[tag, 0, 0, 0, 4]);
            self.carry.name_answered();
        }
    }

    /// Logs why a client's Parse, Bind, Describe or Close cannot be relayed, as PgBouncer, and
    /// returns the reason the client is closed with.
    fn refuse(&self, e: RewriteError) -> Fault {
        let tag = self.session.tag();
        match e {
            RewriteError::Protocol(e) => {
                crate::conn_log!(error, tag, "failed to parse prepared statement packet: {e}");
                Fault::client("failed to parse packet")
            }
            RewriteError::NameInUse(name) => {
                let name = String::from_utf8_lossy(&name);
                crate::conn_log!(error, tag, "prepared statement '{name}' was already prepared");
                Fault::client("prepared statement name is already in use")
            }
            RewriteError::Unknown(name) => {
                let name = String::from_utf8_lossy(&name);
                crate::conn_log!(error, tag, "prepared statement '{name}' not found");
                Fault::client("prepared statement did not exist")
            }
        }
    }

    /// Marks server bytes as sendable; reads ReadyForQuery and ParameterStatus on the way.
    pub(super) fn scan_server(&mut self) -> Result<(), ProtocolError> {
        loop {
            if self.s_skip > 0 {
                if pass_through(self.sout.len(), &mut self.s_ready, &mut self.s_skip) {
                    return Ok(());
                }
                continue;
            }
            // Checked here, inline: this runs before every server message.
            if self.track_prepared && self.tracker.fake_due() {
                self.emit_fakes();
            }
            let avail = &self.sout[self.s_ready..];
            let Some((tag, total)) = peek_header(avail, usize::MAX)? else {
                return Ok(());
            };
            // Rows are most of what a server sends, and nothing below looks at them.
            if tag == tags::backend::DATA_ROW {
                self.s_skip = total;
                continue;
            }
            if self.track_prepared {
                let whole = avail.len() >= total;
                // CommandComplete of exactly `DEALLOCATE ALL` or `DISCARD ALL` (PgBouncer checks
                // the length first too): read its tag.
                let reset_tag = tag == tags::backend::COMMAND_COMPLETE && (total == 5 + 15 || total == 5 + 12);
                // An ErrorResponse that may be held back (below) is waited for whole first, so
                // that the tracker sees it once.
                let held_error =
                    tag == tags::backend::ERROR_RESPONSE && self.holds_back_fatals() && total <= HELD_FATAL_MAX;
                let ddl_tag = tag == tags::backend::COMMAND_COMPLETE && total <= 5 + invalidation::MAX_DDL_TAG;
                let needs_body = reset_tag
                    || ddl_tag
                    || held_error
                    || tag == tags::backend::PARSE_COMPLETE
                    || tag == tags::backend::CLOSE_COMPLETE
                    || tag == tags::backend::READY_FOR_QUERY;
                if needs_body && !whole {
                    return Ok(());
                }
                if let Some(s) = self.server.as_mut() {
                    if reset_tag
                        && matches!(extended::command_tag(&avail[5..total])?, b"DEALLOCATE ALL" | b"DISCARD ALL")
                    {
                        self.tracker.forget_all(&mut s.statements, &mut self.statements);
                    }
                    // Statements prepared on servers until now may return other columns: after
                    // DDL, once its transaction ends (other servers see it only then); at once
                    // when a server refused one. The bodies read here are whole (needs_body).
                    if ddl_tag && invalidation::changes_result_shapes(extended::command_tag(&avail[5..total])?) {
                        self.tracker.ddl_seen = true;
                    }
                    // A refused statement says the schema changed, perhaps behind pgmux's back:
                    // texts parsed from now on get statements of their own.
                    let refused = held_error
                        && invalidation::is_stale_plan_error(&avail[5..total], self.tracker.error_answers_statement());
                    let mut send_again = false;
                    if refused {
                        let refused = self.tracker.refused_statement();
                        invalidation::raise_for_refusal(&self.shared.statement_epoch, refused, &mut s.statements);
                        send_again = self.c_skip == 0
                            && can_send_again(&self.tracker, &self.statements, &s.kept_batch, &s.kept_begin);
                    }
                    if self.tracker.ddl_seen && tag == tags::backend::READY_FOR_QUERY && avail[5..total] == [b'I'] {
                        self.tracker.ddl_seen = false;
                        self.shared.statement_epoch.fetch_add(1, Ordering::Relaxed);
                    }
                    let response = self.tracker.on_response(tag, &mut s.statements, &mut self.statements);
                    // The server refused the statement a batch was served from the cache (DDL
                    // made straight on PostgreSQL), as the batch's first answer: the kept batch
                    // goes again behind a fresh Parse of the text (replay.rs).
                    if tag == tags::backend::ERROR_RESPONSE {
                        if send_again && self.send_again_refused(total) {
                            continue;
                        }
                        self.tracker.replay_off();
                    }
                    if response != Response::Forward {
                        if response == Response::Hold {
                            match self.parameters_before_refusal(total)? {
                                Held::Wait => return Ok(()),
                                Held::Forward => self.tracker.replay_off(),
                                Held::Drop => {
                                    splice::replace(&mut self.sout, self.s_ready, total, b"");
                                    continue;
                                }
                            }
                        } else {
                            if tag == tags::backend::READY_FOR_QUERY {
                                // The refused batch's, whose batch was sent again (replay.rs):
                                // the flow counted both Syncs.
                                self.flow.swallowed();
                            }
                            splice::replace(&mut self.sout, self.s_ready, total, b"");
                            continue;
                        }
                    }
                }
            }
            let avail = &self.sout[self.s_ready..];
            match tag {
                tags::backend::COPY_IN_RESPONSE => {
                    // A Sync sent after the Execute that started COPY is ignored by the server;
                    // the client's Sync after CopyDone will be answered instead.
                    if self.flow.copy_in_response() {
                        // The batch goes on after CopyDone: its Executes are numbered after the
                        // one that started COPY, not from that ignored Sync.
                        self.carry.copy_went_on();
                        // That Sync was counted as a query when it began; the Sync after
                        // CopyDone is this query's, and counts it again.
                        PoolStats::take_back(&self.session.pool.counters.here().stats.query_count, 1);
                    }
                    self.s_skip = total;
                }
                tags::backend::ERROR_RESPONSE => {
                    // A FATAL is small; a large error is streamed as always (waiting for it
                    // whole could stall behind the read limit).
                    if self.holds_back_fatals() && total <= HELD_FATAL_MAX {
                        if avail.len() < total {
                            return Ok(());
                        }
                        if self.hold_back_fatal(total) {
                            // What the tracker saw it skip counts before the server is lost.
                            self.queries_skipped();
                            continue;
                        }
                    }
                    self.flow.error();
                    self.carry.on_error();
                    self.s_skip = total;
                    // The tracker (above) saw which Queries the error makes the server skip.
                    self.queries_skipped();
                }
                tags::backend::COMMAND_COMPLETE if self.carry.busy() => {
                    if avail.len() < total {
                        return Ok(());
                    }
                    self.carry.on_command_complete(extended::command_tag(&avail[5..total])?);
                    self.s_ready += total;
                }
                // Nothing waits on its tag; or the other answers to an Execute (its statement
                // was empty, or stopped at its row limit). Counted, so that the next
                // CommandComplete is matched to its own.
                tags::backend::COMMAND_COMPLETE | tags::backend::EMPTY_QUERY | tags::backend::PORTAL_SUSPENDED => {
                    self.carry.on_command_complete(b"");
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
                        self.refresh_name_context();
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
                _ => {
                    // Counted only for a client whose statements pgmux follows (`made`).
                    if self.carry.made.is_some()
                        && (tag == tags::backend::PARSE_COMPLETE || tag == tags::backend::CLOSE_COMPLETE)
                    {
                        self.carry.name_answered();
                    }
                    self.s_skip = total;
                }
            }
        }
    }
}
