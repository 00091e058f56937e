//! What a server still owes its client, kept from the messages that pass between them: the
//! requests whose ReadyForQuery has not come, an extended-protocol batch not yet closed by a
//! Sync, COPY FROM STDIN, and the transaction status. No bytes and no sockets: the relay reports
//! each whole message it passes on, and asks [`Flow::idle`] before it gives a server back.

use crate::backend::TxStatus;

/// An extended-protocol batch (Parse, Bind, Describe, Execute, Close) and its Sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Batch {
    /// Nothing sent since the last Sync (or none sent at all).
    #[default]
    Closed,
    /// Messages sent that no Sync has closed yet: the server may hold an unnamed statement or
    /// portal, and an error would make it skip to the next Sync.
    Open,
}

/// COPY FROM STDIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CopyIn {
    /// No COPY FROM STDIN under way.
    #[default]
    Off,
    /// The server said CopyInResponse and reads the client's CopyData until CopyDone or
    /// CopyFail; it ignores a Sync meanwhile.
    Receiving,
}

/// The kind of the last request counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum LastRequest {
    #[default]
    Query,
    Sync,
}

/// The books of one client-server pairing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pending: u32,
    /// Of `pending`, the ReadyForQuery messages the relay swallows (a refused batch sent
    /// again): a rescue waits for them, the client is owed none.
    own: u8,
    batch: Batch,
    copy: CopyIn,
    tx: TxStatus,
    last: LastRequest,
}

impl Default for Flow {
    fn default() -> Self {
        Self {
            pending: 0,
            own: 0,
            batch: Batch::Closed,
            copy: CopyIn::Off,
            tx: TxStatus::Idle,
            last: LastRequest::Query,
        }
    }
}

/// What a lost server left unanswered ([`Flow::forget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unanswered {
    /// Requests of the client's that will get no ReadyForQuery (not a Sync the relay sent for
    /// itself).
    pub pending: u32,
    /// The batch was open.
    pub batch: Batch,
    /// COPY FROM STDIN was under way.
    pub copy: CopyIn,
    /// The transaction status at the last ReadyForQuery.
    pub tx: TxStatus,
}

impl Flow {
    /// True when the server holds nothing of the client's: no request unanswered, no batch
    /// open, no transaction block. The one rule for giving a server back to the pool (the
    /// caller adds its own: no half-passed message either way).
    pub fn idle(&self) -> bool {
        self.pending == 0 && self.batch == Batch::Closed && self.tx == TxStatus::Idle
    }

    /// Inside a transaction block, with nothing sent since the last ReadyForQuery: no request
    /// unanswered, no batch open.
    pub fn fresh_block(&self) -> bool {
        self.pending == 0 && self.batch == Batch::Closed && self.tx == TxStatus::InTransaction
    }

    /// Requests (Query, FunctionCall, Sync) sent whose ReadyForQuery has not come.
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// Of [`Flow::pending`], those whose ReadyForQuery goes to the client.
    #[inline]
    pub fn client_pending(&self) -> u32 {
        self.pending - u32::from(self.own)
    }

    /// The extended-protocol batch.
    pub fn batch(&self) -> Batch {
        self.batch
    }

    /// COPY FROM STDIN.
    pub fn copy(&self) -> CopyIn {
        self.copy
    }

    /// The transaction status at the last ReadyForQuery.
    pub fn tx(&self) -> TxStatus {
        self.tx
    }

    /// True inside a transaction block (open or failed).
    pub fn in_block(&self) -> bool {
        self.tx != TxStatus::Idle
    }

    // The client's side.

    /// True when the server ignores a Sync sent now (it is in COPY FROM STDIN): it is passed on
    /// but not counted.
    pub fn ignores_sync(&self) -> bool {
        self.copy == CopyIn::Receiving
    }

    /// A Query, FunctionCall or Sync was sent: one more ReadyForQuery to come; a Sync (or a
    /// simple query) closes the batch.
    pub fn request(&mut self, sync: bool) {
        self.pending += 1;
        self.batch = Batch::Closed;
        self.last = if sync { LastRequest::Sync } else { LastRequest::Query };
    }

    /// Parse, Bind, Describe, Close or Execute was sent.
    pub fn extended(&mut self) {
        self.batch = Batch::Open;
    }

    /// CopyDone or CopyFail was sent.
    pub fn copy_end(&mut self) {
        self.copy = CopyIn::Off;
    }

    // The server's side.

    /// CopyInResponse came. When the last request was a Sync (COPY started by an Execute), the
    /// server ignores that Sync: it is no longer owed an answer, and the batch is open again
    /// until the client's Sync after CopyDone.
    /// True when that Sync was taken back.
    pub fn copy_in_response(&mut self) -> bool {
        self.copy = CopyIn::Receiving;
        if self.last == LastRequest::Sync && self.pending > 0 {
            self.pending -= 1;
            self.batch = Batch::Open;
            return true;
        }
        false
    }

    /// An ErrorResponse came: a COPY FROM STDIN ends with it.
    pub fn error(&mut self) {
        self.copy = CopyIn::Off;
    }

    /// A ReadyForQuery came with `status`.
    pub fn ready(&mut self, status: TxStatus) {
        self.pending = self.pending.saturating_sub(1);
        self.tx = status;
    }

    /// The relay sent a Sync again (a refused batch sent again, or a Sync of its own ahead of a
    /// batch still open): one more ReadyForQuery to come, and one the relay swallows.
    pub fn request_swallowed(&mut self) {
        self.request(true);
        self.own = self.own.saturating_add(1);
    }

    /// A ReadyForQuery the relay swallows came.
    pub fn swallowed(&mut self) {
        self.pending = self.pending.saturating_sub(1);
        self.own = self.own.saturating_sub(1);
    }

    /// The server skipped a Query (sent inside an extended batch after an error there, before
    /// the batch's Sync): no ReadyForQuery will answer it.
    pub fn skipped(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// The server is gone: what it left unanswered, and the books start afresh.
    pub fn forget(&mut self) -> Unanswered {
        let pending = self.client_pending();
        let left = Unanswered { pending, batch: self.batch, copy: self.copy, tx: self.tx };
        *self = Self::default();
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(f: &mut Flow, msgs: &str) {
        for m in msgs.chars() {
            match m {
                'Q' | 'F' => f.request(false),
                'S' if f.ignores_sync() => {}
                'S' => f.request(true),
                'P' | 'B' | 'D' | 'E' | 'C' => f.extended(),
                'c' | 'f' => f.copy_end(),
                'H' | 'd' | ' ' => {}
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn a_simple_query_is_owed_one_ready() {
        let mut f = Flow::default();
        assert!(f.idle());
        sent(&mut f, "Q");
        assert!(!f.idle());
        f.ready(TxStatus::Idle);
        assert!(f.idle());
    }

    #[test]
    fn a_query_skipped_in_a_failed_batch_is_owed_nothing() {
        let mut f = Flow::default();
        sent(&mut f, "PBE Q BES");
        assert_eq!(f.pending(), 2);
        f.error();
        f.skipped();
        f.ready(TxStatus::Idle);
        assert!(f.idle());
    }

    #[test]
    fn a_pipeline_is_idle_only_after_its_last_ready() {
        let mut f = Flow::default();
        sent(&mut f, "PBDES PBES BES");
        assert_eq!(f.pending(), 3);
        f.ready(TxStatus::Idle);
        f.ready(TxStatus::Idle);
        assert!(!f.idle());
        f.ready(TxStatus::Idle);
        assert!(f.idle());
    }

    #[test]
    fn an_error_mid_pipeline_still_answers_each_sync() {
        let mut f = Flow::default();
        sent(&mut f, "PBES BES");
        f.error();
        f.ready(TxStatus::Idle);
        assert!(!f.idle(), "the second Sync is still owed");
        f.ready(TxStatus::Idle);
        assert!(f.idle());
    }

    #[test]
    fn flush_without_sync_keeps_the_batch_open() {
        let mut f = Flow::default();
        sent(&mut f, "PBEH");
        assert_eq!((f.pending(), f.batch()), (0, Batch::Open));
        assert!(!f.idle(), "an unnamed portal may be open on the server");
        sent(&mut f, "S");
        f.ready(TxStatus::Idle);
        assert!(f.idle());
    }

    #[test]
    fn a_transaction_block_holds_the_server_until_it_ends() {
        let mut f = Flow::default();
        sent(&mut f, "Q");
        f.ready(TxStatus::InTransaction);
        assert!(!f.idle() && f.in_block());
        sent(&mut f, "Q");
        f.error();
        f.ready(TxStatus::Failed);
        assert!(!f.idle() && f.tx() == TxStatus::Failed, "an aborted block is still a block");
        sent(&mut f, "Q");
        f.ready(TxStatus::Idle);
        assert!(f.idle());
    }

    #[test]
    fn copy_from_stdin_by_simple_query() {
        let mut f = Flow::default();
        sent(&mut f, "Q");
        f.copy_in_response();
        assert_eq!(f.copy(), CopyIn::Receiving);
        sent(&mut f, "dddc");
        assert_eq!((f.copy(), f.pending()), (CopyIn::Off, 1));
        f.ready(TxStatus::Idle);
        assert!(f.idle());
    }

    #[test]
    fn copy_from_stdin_by_execute_owes_the_sync_after_copy_done() {
        let mut f = Flow::default();
        // The driver sends Parse/Bind/Execute/Sync at once; the server starts COPY at Execute
        // and will ignore that Sync.
        sent(&mut f, "PBES");
        f.copy_in_response();
        assert_eq!((f.pending(), f.batch()), (0, Batch::Open));
        sent(&mut f, "ddS");
        assert_eq!(f.pending(), 0, "a Sync during COPY is not answered");
        sent(&mut f, "cS");
        assert_eq!(f.pending(), 1);
        f.ready(TxStatus::Idle);
        assert!(f.idle());
    }

    #[test]
    fn a_copy_ended_by_the_server_error() {
        let mut f = Flow::default();
        sent(&mut f, "Q");
        f.copy_in_response();
        f.error();
        assert_eq!(f.copy(), CopyIn::Off);
        f.ready(TxStatus::Idle);
        assert!(f.idle());
    }

    #[test]
    fn forget_reports_what_a_lost_server_left_and_starts_afresh() {
        let mut f = Flow::default();
        sent(&mut f, "Q");
        f.ready(TxStatus::InTransaction);
        sent(&mut f, "PBE");
        let left = f.forget();
        assert_eq!(left, Unanswered { pending: 0, batch: Batch::Open, copy: CopyIn::Off, tx: TxStatus::InTransaction });
        assert!(f.idle());
        assert_eq!(f, Flow::default());
    }
}
