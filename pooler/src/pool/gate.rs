//! The pool's gate: PAUSE (the operator's), a hold (while the Patroni leader changes, bounded by
//! query_wait_timeout) and SHUTDOWN WAIT_FOR_SERVERS close it; checkouts read one flag on the
//! fast path and wait here while it is closed.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::waiter::Handoff;
use super::{CheckoutError, LoginRefusal, Pool, PoolSettings};

impl Pool {
    /// PAUSE / RESUME (and SUSPEND): while paused, checkouts wait (clients see no error). With
    /// `let_go` (PAUSE, not SUSPEND) servers are closed as they become idle (`pause mode`), as
    /// PgBouncer's janitor closes them, and clients already queued go back to wait at the gate.
    pub fn set_paused(&self, paused: bool, let_go: bool) {
        self.operator_paused.store(paused, Relaxed);
        let letting_go = paused && let_go;
        let was = self.letting_go.swap(letting_go, Relaxed);
        self.update_gate();
        if letting_go && !was {
            // Queued clients first, so that the slots the closes free go to nobody: one that
            // wakes finds the gate closed and waits there.
            drop(std::mem::take(&mut self.state.lock().waiters));
            self.close_idle("pause mode");
        }
    }

    /// True while PAUSE lets go of the pool's servers: a checkout waits at the gate.
    pub(super) fn is_letting_go(&self) -> bool {
        self.letting_go.load(Relaxed)
    }

    /// True while paused by the operator.
    pub fn is_paused(&self) -> bool {
        self.operator_paused.load(Relaxed)
    }

    /// Holds (or lets go of) new checkouts while the server target moves (a Patroni leader
    /// change). Unlike PAUSE, a held client waits at most query_wait_timeout.
    pub fn set_held(&self, held: bool) {
        self.held.store(held, Relaxed);
        self.update_gate();
    }

    /// True while held for a leader change.
    pub fn is_held(&self) -> bool {
        self.held.load(Relaxed)
    }

    fn update_gate(&self) {
        let closed = self.operator_paused.load(Relaxed) || self.held.load(Relaxed) || self.shut.load(Relaxed);
        self.paused.store(closed, Relaxed);
        if !closed {
            self.resumed.notify_waiters();
        }
    }

    /// SHUTDOWN WAIT_FOR_SERVERS (PgBouncer pauses and its janitor closes every waiting client
    /// with `server shutting down`): clients queued or held by PAUSE get that error now, later
    /// checkouts too. Servers in use are released as usual.
    pub fn shut_down(&self) {
        self.shut.store(true, Relaxed);
        self.operator_paused.store(true, Relaxed);
        self.paused.store(true, Relaxed);
        self.resumed.notify_waiters();
        let waiters = std::mem::take(&mut self.state.lock().waiters);
        let refusal = Arc::new(LoginRefusal {
            sqlstate: pgmux_protocol::sqlstate::ADMIN_SHUTDOWN.into(),
            message: "server shutting down".into(),
        });
        for w in waiters {
            let _ = w.tx.send(Handoff::Refused(refusal.clone()));
        }
    }

    /// Waits while the gate is closed: as long as PAUSE lasts, at most query_wait_timeout for
    /// a hold alone.
    pub(super) async fn wait_at_gate(&self, settings: &PoolSettings) -> Result<(), CheckoutError> {
        let held_only = self.held.load(Relaxed) && !self.operator_paused.load(Relaxed);
        match held_only.then_some(settings.query_wait_timeout).filter(|t| !t.is_zero()) {
            Some(limit) => {
                if tokio::time::timeout(limit, self.wait_unpaused()).await.is_err() {
                    return Err(CheckoutError::QueryWaitTimeout);
                }
            }
            None => self.wait_unpaused().await,
        }
        Ok(())
    }

    async fn wait_unpaused(&self) {
        while self.paused.load(Relaxed) && !self.shut.load(Relaxed) {
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if !self.paused.load(Relaxed) || self.shut.load(Relaxed) {
                break;
            }
            resumed.await;
        }
    }
}
