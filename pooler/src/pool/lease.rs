//! A checked-out server: [`Lease`]. It goes back to its pool when its holder says the server is
//! clean ([`Lease::release`]), is closed with a reason when it cannot be reused
//! ([`Lease::close`]), and is closed as abandoned when its holder drops it without saying either
//! (a client task that ends half-way, a login given up by client_login_timeout). While a client
//! is attached to it ([`Lease::activate`]) it counts in its pool's `clients_active`; while it
//! is set aside after its client let it go ([`Lease::set_aside`]: a cancel still in flight to
//! it, its reset query running) it counts in `sv_being_canceled` or `sv_tested` instead of
//! `sv_active`, and SHOW SERVERS says so.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::{Pool, PoolSettings};
use crate::server::ServerConn;
use crate::servers::Aside;

/// Why a lease dropped without a verdict closes its server: it may be in any state.
const ABANDONED: &str = "client disconnect while server was not ready";

/// A server taken out of its pool; derefs to the [`ServerConn`].
#[derive(Debug)]
pub struct Lease {
    /// Always `Some` until a verdict or the drop takes it.
    conn: Option<Box<ServerConn>>,
    pool: Arc<Pool>,
    /// Counted in the pool's `clients_active`.
    active: bool,
    /// Counted in the pool's count of servers set aside for this.
    aside: Option<Aside>,
}

impl Lease {
    /// Called by the task that will use the server: its socket moves to this thread's runtime
    /// if it is registered with another's (workers.rs).
    pub(super) fn new(mut conn: Box<ServerConn>, pool: Arc<Pool>) -> Self {
        conn.come_home();
        Self { conn: Some(conn), pool, active: false, aside: None }
    }

    /// A client is attached to the server (SHOW POOLS `cl_active`) until the lease ends.
    pub fn activate(&mut self) {
        debug_assert!(self.aside.is_none(), "a server set aside is activated");
        if !self.active {
            self.active = true;
            self.pool.clients_active.fetch_add(1, Relaxed);
        }
    }

    /// No client holds the server any more, and it is not back in its pool yet (`Some`): it
    /// waits for a cancel, or runs its reset. Counted so until the next call (`None`: in
    /// use again) or the lease's end.
    pub fn set_aside(&mut self, aside: Option<Aside>) {
        if self.aside == aside {
            return;
        }
        // SHOW POOLS takes an active lease set aside out of `sv_active`, one not yet active (a
        // server running server_check_query before its client) out of `sv_login`.
        let besides = (!self.active).then_some(&self.pool.aside_inactive);
        if let Some(old) = self.aside {
            self.pool.aside_count(old).fetch_sub(1, Relaxed);
            if let Some(c) = besides {
                c.fetch_sub(1, Relaxed);
            }
        }
        if let Some(new) = aside {
            self.pool.aside_count(new).fetch_add(1, Relaxed);
            if let Some(c) = besides {
                c.fetch_add(1, Relaxed);
            }
        }
        self.aside = aside;
        if let Some(entry) = self.conn.as_ref().and_then(|c| c.tag.entry.as_ref()) {
            entry.set_aside(aside);
        }
    }

    /// Why a release would close the server rather than give it back (a RECONNECT or a new
    /// target made it stale, or PAUSE lets servers go), if it would: what a release waits for
    /// first (a cancel, a reset) is then not worth waiting for.
    pub fn closes_on_release(&self) -> Option<&'static str> {
        let conn = self.conn.as_ref().expect("a lease holds its server until its verdict");
        if self.pool.stale(conn) {
            Some("database configuration changed")
        } else if self.pool.lets_go() {
            Some("pause mode")
        } else {
            None
        }
    }

    /// The server is clean (idle, nothing in flight): back to the pool, or closed if it is past
    /// its lifetime.
    pub fn release(self) {
        let settings = self.pool.settings();
        self.release_with(&settings);
    }

    /// [`Lease::release`] with settings the caller already holds.
    pub fn release_with(mut self, settings: &PoolSettings) {
        let conn = self.take();
        self.pool.release_with(conn, settings);
    }

    /// The server cannot be reused: closed, logging `reason` (`closing because: ...`).
    pub fn close(mut self, reason: &str) {
        let conn = self.take();
        self.pool.discard(conn, reason);
    }

    /// Takes the server out of the lease and out of `clients_active`; the caller now answers for
    /// it and for its slot.
    fn take(&mut self) -> Box<ServerConn> {
        self.set_aside(None);
        if std::mem::take(&mut self.active) {
            self.pool.clients_active.fetch_sub(1, Relaxed);
        }
        self.conn.take().expect("a lease holds its server until its verdict")
    }
}

impl Deref for Lease {
    type Target = ServerConn;

    fn deref(&self) -> &ServerConn {
        self.conn.as_ref().expect("a lease holds its server until its verdict")
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut ServerConn {
        self.conn.as_mut().expect("a lease holds its server until its verdict")
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.conn.is_some() {
            let conn = self.take();
            self.pool.discard(conn, ABANDONED);
        }
    }
}
