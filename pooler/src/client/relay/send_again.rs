//! Sending a refused batch again, as the relay drives it (the rules and the rewriting are in
//! client/prepared/replay.rs): a ParameterDescription held to see whether a refusal follows it,
//! the batch inserted behind a fresh Parse and counted in the flow and SHOW STATS, and a
//! client's lone BEGIN kept for a block that may have to begin again. All out of the scans' hot
//! loops.

use std::sync::atomic::Ordering;

use pgmux_protocol::frame::peek_header;
use pgmux_protocol::{tags, ProtocolError};

use super::scan::HELD_FATAL_MAX;
use super::Relay;
use crate::client::prepared::{can_send_again, invalidation, is_lone_begin, Rewrite};
use crate::client::splice;
use crate::pool::PoolStats;

/// The largest ParameterDescription held to see whether a refusal follows it (replay.rs): 4
/// bytes a parameter, so 4,000 parameters.
const HELD_PARAMETERS_MAX: usize = 16 * 1024;

/// What becomes of a ParameterDescription answering a kept batch (`parameters_before_refusal`).
pub(super) enum Held {
    /// What follows it is not all here yet.
    Wait,
    /// A refusal follows, and the batch goes again: the client never sees it.
    Drop,
    /// Anything else: it goes to the client, and the batch can no longer be sent again.
    Forward,
}
impl Relay {
    /// A ParameterDescription, `total` bytes at `s_ready`, answers the Describe of a statement
    /// in a kept batch (replay.rs): PostgreSQL sends it before it analyses the statement again,
    /// so a refusal follows it in the same answer (postgres.js describes the statement in the
    /// batch it runs it in). Looked at with what follows: dropped when that is a refusal the
    /// batch will be sent again for (the batch sent again describes the statement anew).
    #[cold]
    #[inline(never)]
    pub(super) fn parameters_before_refusal(&self, total: usize) -> Result<Held, ProtocolError> {
        if total > HELD_PARAMETERS_MAX {
            // Waiting for what follows could fill the read buffer (a statement with thousands
            // of parameters): passed on, and the batch is not sent again.
            return Ok(Held::Forward);
        }
        let Some(rest) = self.sout.get(self.s_ready + total..) else { return Ok(Held::Wait) };
        // PostgreSQL writes the Describe's next answer right behind it: never a long wait.
        let Some((next, next_total)) = peek_header(rest, usize::MAX)? else { return Ok(Held::Wait) };
        if next != tags::backend::ERROR_RESPONSE || !self.holds_back_fatals() || next_total > HELD_FATAL_MAX {
            return Ok(Held::Forward);
        }
        let Some(error) = rest.get(5..next_total) else { return Ok(Held::Wait) };
        let Some(server) = self.server.as_ref() else { return Ok(Held::Forward) };
        let refused = invalidation::is_stale_plan_error(error, self.tracker.error_answers_statement());
        let (kept, begin) = (&server.kept_batch, &server.kept_begin);
        Ok(if refused && self.c_skip == 0 && can_send_again(&self.tracker, &self.statements, kept, begin) {
            Held::Drop
        } else {
            Held::Forward
        })
    }

    /// Sends the kept batch again behind a fresh Parse (replay.rs) and drops the refusal, `total`
    /// bytes at `s_ready`; false (nothing changed) when the batch cannot be. Out of the scan's
    /// hot loop.
    #[cold]
    #[inline(never)]
    pub(super) fn send_again_refused(&mut self, total: usize) -> bool {
        let Some(server) = self.server.as_mut() else { return false };
        let server: &mut crate::server::ServerConn = server;
        let kept = std::mem::take(&mut server.kept_batch);
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
        if rw.unnamed_prepared_in_epoch() {
            // The refusal did not raise the epoch (this server refused the same statement
            // before) and the text's name in this one is the refused statement, or one
            // prepared before the change: a newer name.
            rw.epoch = self.shared.statement_epoch.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        }
        let sent_again = rw.replay_refused(&mut self.cin, self.c_ready, &kept, &server.kept_begin);
        let parses = rw.server_parses;
        server.kept_batch = kept;
        let Some(again) = sent_again else { return false };
        self.c_ready += again.bytes;
        // The server owes a ReadyForQuery for the refused batch's Sync, or for the Sync pgmux
        // sent ahead of a batch still open (swallowed), and one for the batch sent again: until
        // the first comes, a rescue must wait for both.
        self.flow.request_swallowed();
        if again.open {
            // The client's batch goes on: its Sync is still to come.
            self.flow.extended();
        }
        PoolStats::add(&self.stats().server_parse_count, parses);
        crate::conn_log!(debug, self.session.tag(), "cached statement refused: batch sent again");
        splice::replace(&mut self.sout, self.s_ready, total, b"");
        true
    }

    /// The simple Query at `c_ready` may be a BEGIN (its first two letters; leading blanks are
    /// left to [`Relay::keep_lone_begin`]): every Query scanned asks, so this is kept short.
    #[inline]
    pub(super) fn may_begin(&self) -> bool {
        match self.cin.get(self.c_ready + 5..self.c_ready + 7) {
            Some(&[a, b]) => matches!((a | 0x20, b | 0x20), (b'b', b'e') | (b's', b't')) || a.is_ascii_whitespace(),
            _ => false,
        }
    }

    /// A simple Query of `total` bytes that may be a BEGIN: when it is one alone, sent with
    /// nothing of the client's open on the server, it is kept, for a batch refused as the
    /// block's first statement (replay.rs).
    #[cold]
    #[inline(never)]
    pub(super) fn keep_lone_begin(&mut self, total: usize) {
        if !self.flow.idle() || self.tracker.in_flight() {
            return;
        }
        let Some(server) = self.server.as_mut() else { return };
        let Some(text) = self.cin.get(self.c_ready + 5..self.c_ready + total) else { return };
        let text = text.strip_suffix(&[0]).unwrap_or(text);
        if is_lone_begin(text) {
            server.kept_begin.clear();
            server.kept_begin.extend_from_slice(text);
            self.tracker.block_begin_sent();
        }
    }
}
