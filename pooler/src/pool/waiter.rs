//! The hand-off between a releasing client and the longest waiter, and the guards that give a
//! server or a slot back when a waiting or connecting client goes away.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Pool;
use crate::server::ServerConn;

/// A client in a pool's queue.
pub(super) struct Waiter {
    /// When it began waiting (SHOW POOLS `maxwait`).
    pub(super) since: Instant,
    /// Its worker thread (workers.rs): a release hands a server to a waiter on its own thread
    /// first, within [`BYPASS_MAX`].
    pub(super) home: u16,
    /// Where its server (or slot, or refusal) goes.
    pub(super) tx: oneshot::Sender<Handoff>,
}

/// How many releases in a row may serve a waiter of their own thread ahead of the longest
/// waiter, whose thread is another: bounds the unfairness that saves moving a server's socket.
pub(super) const BYPASS_MAX: u32 = 4;

/// What a waiter is handed.
// Boxing the server would cost an allocation per hand-off; the move is a plain memcpy.
#[allow(clippy::large_enum_variant)]
pub(super) enum Handoff {
    /// A released, clean server.
    Server(Box<ServerConn>),
    /// The right to open a new server (a slot was freed and reserved for this waiter).
    Slot,
    /// The server refused a login of this pool: every waiter gets its error (PgBouncer's
    /// kill_pool_logins), instead of each trying again.
    Refused(Arc<LoginRefusal>),
}

/// A server's refusal of a login, as passed on to the pool's waiting clients.
#[derive(Debug)]
pub struct LoginRefusal {
    /// The server's SQLSTATE (or 08P01 for pgmux's own reasons).
    pub sqlstate: String,
    /// The message for the client.
    pub message: String,
}

/// A waiter's place in the queue. Dropped without being served, it closes its channel and
/// returns anything that was sent in the meantime.
pub(super) struct WaitTicket {
    pool: Arc<Pool>,
    rx: Option<oneshot::Receiver<Handoff>>,
}

impl WaitTicket {
    pub(super) fn new(pool: Arc<Pool>, rx: oneshot::Receiver<Handoff>) -> Self {
        Self { pool, rx: Some(rx) }
    }

    /// Waits for a hand-off; `None` if the pool dropped the sender.
    ///
    /// # Cancel safety
    /// Cancel-safe: a value sent after cancellation stays in the channel for the next call or
    /// for `Drop`.
    pub(super) async fn recv(&mut self) -> Option<Handoff> {
        let rx = self.rx.as_mut()?;
        let r = rx.await.ok();
        self.rx = None;
        r
    }
}

impl Drop for WaitTicket {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        rx.close();
        match rx.try_recv() {
            Ok(Handoff::Server(s)) => self.pool.release(s),
            Ok(Handoff::Slot) => self.pool.free_slot(),
            Ok(Handoff::Refused(_)) | Err(_) => {}
        }
    }
}

/// A reserved server slot; freed on drop unless a server now fills it.
pub(super) struct SlotGuard {
    pool: Option<Arc<Pool>>,
}

impl SlotGuard {
    pub(super) fn new(pool: Arc<Pool>) -> Self {
        Self { pool: Some(pool) }
    }

    /// The slot is now held by a live server.
    pub(super) fn disarm(mut self) {
        self.pool = None;
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Some(p) = self.pool.take() {
            p.free_slot();
        }
    }
}
