//! A server lost under a client in transaction or statement mode (PostgreSQL restarted or was
//! killed, the backend was terminated, the Patroni leader changed): when the books are simple
//! (requests in flight that each end at a Sync or Query, or a COPY FROM STDIN outside a
//! transaction block; whole messages; no session-state change in flight), the client gets an
//! ERROR and a ReadyForQuery for each
//! and its session goes on: outside a transaction block the next transaction gets another
//! server; inside one the block is answered as aborted until the client ends it (aborted.rs);
//! the rest of a lost COPY stream is dropped (lost_copy.rs). Prepared statements whose Parse or
//! Close was in flight are undone on the client's side. A FATAL the dying server sent is held
//! back and its text put in that ERROR (some drivers end the session on a FATAL). Otherwise the
//! client is closed, as PgBouncer closes it (`server conn crashed?`).

use bytes::BytesMut;
use pgmux_protocol::backend::{ErrorFields, TxStatus};
use pgmux_protocol::build::{self, Severity};
use pgmux_protocol::flow::{Batch, CopyIn};
use pgmux_protocol::sqlstate;

use super::lost_copy::LostCopy;
use super::Relay;
use crate::config::PoolMode;

impl Relay {
    /// Takes a FATAL ErrorResponse of `total` bytes at the scan point out of the stream to the
    /// client: the server is about to close, and a client that may stay should get an ERROR
    /// and a ReadyForQuery instead (a FATAL ends the session for some drivers). True when held.
    pub(super) fn hold_back_fatal(&mut self, total: usize) -> bool {
        let msg = &self.sout[self.s_ready..self.s_ready + total];
        let severity = ErrorFields::new(&msg[5..]).field(b'V');
        if !matches!(severity, Some(b"FATAL") | Some(b"PANIC")) {
            return false;
        }
        // Boxed twice: a thin pointer in every client's task, for a rare message.
        self.server_fatal = Some(Box::new(msg.into()));
        crate::client::splice::replace(&mut self.sout, self.s_ready, total, b"");
        true
    }

    /// The server is closed with the client: a FATAL held back goes to the client after all.
    pub(super) fn release_held_fatal(&mut self) {
        if let Some(f) = self.server_fatal.take() {
            self.sout.truncate(self.s_ready);
            self.sout.extend_from_slice(&f);
            self.s_ready = self.sout.len();
        }
    }

    /// True when a FATAL from the server is held back until the server closes, so that the
    /// client may stay (transaction and statement modes: the session's state is not the
    /// server's).
    pub(super) fn holds_back_fatals(&self) -> bool {
        self.mode != PoolMode::Session
    }

    /// True when the lost server's backend went down with the whole of PostgreSQL: it said
    /// another backend crashed (57P02), or it closed without a word (killed: the postmaster
    /// then ends every backend). A backend ended alone says why (57P01 and others).
    pub(super) fn lost_with_its_cluster(&self) -> bool {
        match &self.server_fatal {
            Some(f) => ErrorFields::new(&f[5..]).sqlstate() == sqlstate::CRASH_SHUTDOWN.as_bytes(),
            None => self.holds_back_fatals(),
        }
    }

    /// True when the session can go on without the server it lost.
    pub(super) fn may_survive_server_loss(&self) -> bool {
        let simple_books =
            self.holds_back_fatals() && !self.dedicated && !self.carry.pinned && !self.carry.busy() && self.s_skip == 0;
        if !simple_books {
            return false;
        }
        let (pending, open) = (self.flow.pending(), self.flow.batch() == Batch::Open);
        if self.flow.copy() == CopyIn::Receiving {
            // COPY FROM STDIN outside a transaction block: started by a Query (its ReadyForQuery
            // pending), or by Execute (its Sync still to come); the rest of the stream is dropped
            // (lost_copy.rs).
            return !self.flow.in_block() && ((pending == 1 && !open) || (pending == 0 && open));
        }
        // Every request in flight ends at its Sync or Query, and none has its ReadyForQuery yet:
        // each gets an ERROR and one (a pipeline too: drivers such as tokio-postgres send a
        // Close and the next Query behind a COPY's Sync). None in flight only inside a
        // transaction block, which is then answered as aborted.
        !open && self.c_skip == 0 && (pending >= 1 || self.flow.in_block())
    }

    /// Answers the requests in flight with an error each, as if the server had rolled the
    /// transaction back, and leaves the session without a server.
    pub(super) fn answer_lost_requests(&mut self) {
        // Whole messages already scanned still go out; a partial one is dropped. Requests not
        // yet written to the server (the write found it dead) are answered with the others.
        self.sout.truncate(self.s_ready);
        bytes::Buf::advance(&mut self.cin, self.c_ready);
        self.c_ready = 0;
        // Requests the client is owed an answer for (not a Sync pgmux sent for itself).
        let left = self.flow.forget();
        let pending = left.pending;
        if left.copy == CopyIn::Receiving {
            // The rest of the COPY stream (and of a CopyData cut short) is dropped.
            self.lost_copy = Some(Box::new(LostCopy::new(left.batch == Batch::Open, self.c_skip)));
            self.c_skip = 0;
        }
        let why = match self.server_fatal.take() {
            Some(f) => ErrorFields::new(&f[5..]).message(),
            None => "the server closed the connection".to_owned(),
        };
        // Inside a transaction block the block is aborted, as PostgreSQL leaves it after an
        // error: the client must end it (aborted.rs) before it can go on.
        let in_block = left.tx != TxStatus::Idle;
        let text = if in_block {
            format!("server connection lost ({why}); the transaction is aborted")
        } else {
            format!("server connection lost ({why}); the statement may not have completed")
        };
        let mut out = BytesMut::new();
        for _ in 0..pending {
            build::error_response(&mut out, Severity::Error, sqlstate::CONNECTION_FAILURE, &text);
            build::ready_for_query(&mut out, if in_block { b'E' } else { b'I' });
        }
        if pending == 0 && self.lost_copy.is_some() {
            // COPY started by Execute: the error now, the ReadyForQuery at the client's Sync.
            build::error_response(&mut out, Severity::Error, sqlstate::CONNECTION_FAILURE, &text);
        }
        if in_block {
            let mut block = super::aborted::AbortedBlock::new(text);
            if pending > 0 {
                // The request in flight got the reason already.
                block.reason_sent();
            }
            self.aborted = Some(Box::new(block));
        }
        self.sout.extend_from_slice(&out);
        self.s_ready = self.sout.len();
        self.query_start = None;
        self.session.info.set_query_start(None);
        self.xact_start = None;
        self.need_server = false;
        self.timer = None;
        // The statements in flight never reached a server that lives on.
        self.tracker.abandon(&mut self.statements);
        self.session.info.show_prepared(self.statements.named_count());
        self.carry.server_lost();
        let info = &self.session.info;
        info.set_state(crate::clients::ClientState::Idle);
        info.server_pid.store(0, std::sync::atomic::Ordering::Relaxed);
        info.server_id.store(0, std::sync::atomic::Ordering::Relaxed);
    }
}
