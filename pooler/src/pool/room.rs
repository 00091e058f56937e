//! Whether a pool may open one more server: its pool_size and reserve, then one unit of each
//! limit shared with other pools (max_db_connections, max_user_connections); eviction of another
//! pool's idle server when a shared limit is what stops it, and hand-over of a freed unit.

use std::time::Duration;

use super::{Handoff, Pool, PoolSettings, State};

/// Whether a pool may open one more server, and if not, which limit stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Room {
    /// Within pool_size.
    Pool,
    /// Beyond pool_size, within reserve_pool_size.
    Reserve,
    /// pool_size (and reserve) reached.
    PoolFull,
    /// max_db_connections reached.
    DbFull,
    /// max_user_connections reached.
    UserFull,
    /// Another client's connect is probing a server not yet known to work.
    Probing,
}

impl Room {
    pub(super) fn granted(self) -> bool {
        matches!(self, Room::Pool | Room::Reserve)
    }
}

impl Pool {
    /// Room for one more server within the pool's own size: pool_size, then reserve_pool_size
    /// for a client that has waited reserve_pool_timeout (PgBouncer: a zero timeout or size
    /// means no reserve).
    pub(super) fn pool_room(&self, s: &State, settings: &PoolSettings, waited: Duration) -> Room {
        let size = settings.pool_size;
        if size == 0 || s.total < size {
            return Room::Pool;
        }
        let reserve = settings.reserve_pool_size;
        let timeout = settings.reserve_pool_timeout;
        if reserve > 0 && !timeout.is_zero() && waited >= timeout && s.total < size + reserve {
            return Room::Reserve;
        }
        Room::PoolFull
    }

    /// Reserves one server slot within the pool and the database/user limits; the caller holds
    /// the lock.
    pub(super) fn reserve_locked(&self, s: &mut State, settings: &PoolSettings, waited: Duration) -> Room {
        if !s.proven && s.probing {
            return Room::Probing;
        }
        // After a failed connect nobody connects again before server_login_retry (PgBouncer's
        // "don't retry too fast"); the client that failed sleeps exactly that long.
        if s.last_failure.as_ref().is_some_and(|(at, ..)| at.elapsed() < settings.login_retry) {
            return Room::Probing;
        }
        let room = self.pool_room(s, settings, waited);
        if !room.granted() {
            return room;
        }
        if !self.db_limit.try_acquire(settings.max_db_connections) {
            return Room::DbFull;
        }
        if !self.user_limit.try_acquire(settings.max_user_connections) {
            self.db_limit.release();
            return Room::UserFull;
        }
        s.total += 1;
        s.probing = !s.proven;
        room
    }

    /// The database or user limit is what stops this pool: close the longest-idle server of
    /// another pool under that limit (PgBouncer's eviction). True when one was closed.
    pub(super) fn evict_for(&self, room: Room) -> bool {
        match room {
            Room::DbFull => self.db_limit.evict_idle(self),
            Room::UserFull => self.user_limit.evict_idle(self),
            _ => false,
        }
    }

    /// Reserves a slot for the longest live waiter and hands it over; false when there is no
    /// waiter or no room. The caller holds the lock.
    pub(super) fn hand_slot_locked(&self, s: &mut State, settings: &PoolSettings) -> bool {
        // PAUSE: no server opens while it lasts.
        if self.is_letting_go() {
            return false;
        }
        if s.waiters.iter().all(|w| w.tx.is_closed()) || !self.reserve_locked(s, settings, Duration::ZERO).granted() {
            return false;
        }
        while let Some(w) = s.waiters.pop_front() {
            if w.tx.send(Handoff::Slot).is_ok() {
                return true;
            }
        }
        // Every waiter had gone: give the reserved slot back.
        s.total -= 1;
        self.db_limit.release();
        self.user_limit.release();
        false
    }

    /// A unit of a shared limit was freed elsewhere: give a waiter of this pool the right to
    /// open a server, if the pool has room. True when one got it.
    pub(super) fn grant_slot(&self) -> bool {
        let settings = self.settings();
        let mut s = self.state.lock();
        self.hand_slot_locked(&mut s, &settings)
    }

    /// How long the longest-idle server has been idle, if any.
    pub(super) fn idle_age(&self) -> Option<Duration> {
        self.state.lock().idle.iter().map(|c| c.last_used.elapsed()).max()
    }

    /// Closes the longest-idle server to make room under a shared limit (`evicted`).
    pub(super) fn evict_idle(&self) -> bool {
        let server = {
            let mut s = self.state.lock();
            let oldest = s.idle.iter().enumerate().max_by_key(|(_, c)| c.last_used.elapsed()).map(|(i, _)| i);
            oldest.and_then(|i| s.idle.remove(i))
        };
        match server {
            Some(server) => {
                self.discard(server, "evicted");
                true
            }
            None => false,
        }
    }
}
