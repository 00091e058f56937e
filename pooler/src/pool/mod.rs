//! Server pools per (database, user): an idle list, a count of servers, a FIFO of waiting
//! clients that a released server is handed to directly, and the limits around them.
//! The lock is a short parking_lot critical section; it is never held across an await.

mod averages;
mod checkout;
mod dead;
mod dedicated;
mod fake;
mod gate;
pub mod histogram;
mod lease;
mod limit;
mod open;
mod redirect;
mod registry;
mod room;
mod settings;
mod stats;
#[cfg(test)]
mod tests;
mod waiter;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use pgmux_protocol::scram::PassThroughKeys;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use averages::AveragesPeriod;
pub use lease::Lease;
pub use limit::ConnLimit;
pub use registry::Pools;
pub use settings::PoolSettings;
pub use stats::{PoolStats, StatsSnapshot, SESSION_END_SIDES};
pub use waiter::LoginRefusal;
use waiter::{Handoff, SlotGuard, Waiter};

use crate::clock::Micros;
use crate::config::StoredSecret;
use crate::server::{self, ServerConn, ServerError, ServerParams};

/// Retry pause after a failed connect of a pool that follows the Patroni leader.
const FOLLOWER_RETRY: Duration = Duration::from_millis(250);

/// Who asks for a server: a client logging in (or an auth_query lookup for one), which gets
/// PgBouncer's fast fail while logins keep failing, or a logged-in client starting a
/// transaction, which waits instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A login, or a lookup on behalf of one.
    Login,
    /// A logged-in client's transaction (or session).
    Session,
}

/// Why a client got no server.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// Waited longer than query_wait_timeout.
    #[error("query_wait_timeout")]
    QueryWaitTimeout,
    /// Recent logins failed and no server is up (PgBouncer's fast fail): the reason, and the
    /// server's refusal when it refused the login (a client waiting for a new pool's first
    /// server gets that, as PgBouncer passes it to every client waiting for its welcome).
    #[error("server login has been failing, cached error: {0} (server_login_retry)")]
    LoginFailing(String, Option<Arc<LoginRefusal>>),
    /// This attempt to open a server failed.
    #[error("{0}")]
    Connect(#[from] ServerError),
    /// Another client's attempt to open a server was refused while this one waited.
    #[error("{}", .0.message)]
    Refused(Arc<LoginRefusal>),
    /// SHUTDOWN WAIT_FOR_SERVERS: no server is handed out any more.
    #[error("server shutting down")]
    ShuttingDown,
}

struct State {
    idle: VecDeque<Box<ServerConn>>,
    /// Servers that exist or are being opened (idle + leased + connecting).
    total: u32,
    waiters: VecDeque<Waiter>,
    /// Releases in a row that served a waiter on their own thread ahead of the longest waiter
    /// (see [`waiter::BYPASS_MAX`]).
    bypassed: u32,
    /// Time and text of the last failed login, and the server's refusal if it refused it, for
    /// fast fail.
    last_failure: Option<(Instant, String, Option<Arc<LoginRefusal>>)>,
    /// The last connect succeeded: connects may run in parallel. Until then (a new pool, or
    /// after a failure) one connect at a time probes the server, as PgBouncer always does, so
    /// that a bad host is tried once and not by every waiting client at the same time.
    proven: bool,
    /// A probing connect is under way.
    probing: bool,
}

impl State {
    /// The waiter a released server goes to: the longest waiter, or, when several workers
    /// share the pool (`local` is the releasing thread, [`crate::workers::local`]) and the
    /// longest waits on another thread, the longest waiting on this one, at most
    /// [`waiter::BYPASS_MAX`] times in a row. The server's socket then stays on its thread, and
    /// the hand-off wakes no other thread.
    fn next_waiter(&mut self, local: Option<u16>) -> Option<Waiter> {
        if let Some(here) = local.filter(|_| self.bypassed < waiter::BYPASS_MAX) {
            if self.waiters.front().is_some_and(|w| w.home != here) {
                if let Some(i) = self.waiters.iter().position(|w| w.home == here) {
                    self.bypassed += 1;
                    return self.waiters.remove(i);
                }
            }
        }
        self.bypassed = 0;
        self.waiters.pop_front()
    }

    /// The next idle server: the most recently released (the least recently with
    /// `from_front`, server_round_robin), preferring one at home on the calling thread when
    /// several workers share the pool (`local`, [`crate::workers::local`]), whose socket then
    /// needs no move.
    fn pop_idle(&mut self, from_front: bool, local: Option<u16>) -> Option<Box<ServerConn>> {
        if let Some(here) = local {
            let at = if from_front {
                self.idle.iter().position(|s| s.home == here)
            } else {
                self.idle.iter().rposition(|s| s.home == here)
            };
            if let Some(i) = at {
                return self.idle.remove(i);
            }
        }
        if from_front {
            self.idle.pop_front()
        } else {
            self.idle.pop_back()
        }
    }
}

/// Counts for SHOW POOLS.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolCounts {
    /// Servers idle in the pool.
    pub idle: u32,
    /// All servers, including leased and connecting.
    pub total: u32,
    /// Clients queued for a server.
    pub waiting: u32,
    /// How long the oldest waiter has waited.
    pub max_wait: Duration,
}

/// One pool.
pub struct Pool {
    /// Database name as clients use it.
    pub db: String,
    /// User name on the server side.
    pub user: String,
    settings: RwLock<Arc<PoolSettings>>,
    state: Mutex<State>,
    /// Counters and latency histograms, a copy per worker thread.
    pub counters: stats::CounterShards,
    welcome: Mutex<Option<Arc<ServerParams>>>,
    scram_keys: Mutex<Option<PassThroughKeys>>,
    /// The user's secret from auth_query, for server logins when auth_file has none.
    looked_up: Mutex<Option<StoredSecret>>,
    db_limit: Arc<ConnLimit>,
    user_limit: Arc<ConnLimit>,
    /// Clients logged in to this pool.
    pub clients: AtomicI64,
    /// Clients currently holding a server.
    pub clients_active: AtomicI64,
    /// Clients waiting for a server (queued, or held by PAUSE).
    pub clients_waiting: AtomicI64,
    /// Logins waiting for the pool's first server (SHOW POOLS counts them in `cl_waiting`; the
    /// HAProxy health check, which looks at served clients, does not).
    pub logins_waiting: AtomicI64,
    /// Cancel requests to this pool's servers under way (SHOW POOLS' cancel columns), and
    /// servers set aside until a cancel to them is done (`sv_being_canceled`).
    pub cancels: Arc<crate::cancel::CancelCounts>,
    /// Servers set aside while their reset or check query runs (`sv_tested`).
    pub servers_tested: AtomicI64,
    /// Of the servers set aside, those no client was active on yet (a check query before the
    /// client gets the server): out of `sv_login` rather than `sv_active`.
    pub aside_inactive: AtomicI64,
    /// The gate the checkout paths read: PAUSE, a hold or a shutdown.
    paused: AtomicBool,
    /// PAUSE by the operator (SHOW DATABASES `paused`).
    operator_paused: AtomicBool,
    /// PAUSE (not SUSPEND): servers are closed as they become idle, as PgBouncer closes them,
    /// so that PostgreSQL can be restarted under the pause.
    letting_go: AtomicBool,
    /// Held while the Patroni leader changes (SWITCHOVER, failover): checkouts wait, bounded by
    /// query_wait_timeout, and then open servers at the new target.
    held: AtomicBool,
    /// SHUTDOWN WAIT_FOR_SERVERS: waiting and new checkouts fail.
    shut: AtomicBool,
    resumed: Notify,
    /// Bumped by RECONNECT and target changes: older servers are closed on release.
    generation: AtomicU64,
    /// After a server was lost, checkouts probe every server for a while (dead.rs).
    suspicion: dead::Suspicion,
    /// Where its servers are listed for SHOW SERVERS (the registry's, set by `Pools`).
    servers: Arc<crate::servers::ServerRegistry>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("db", &self.db).field("user", &self.user).finish()
    }
}

impl Pool {
    fn new(
        db: String,
        user: String,
        settings: PoolSettings,
        db_limit: Arc<ConnLimit>,
        user_limit: Arc<ConnLimit>,
    ) -> Self {
        Pool {
            db,
            user,
            settings: RwLock::new(Arc::new(settings)),
            state: Mutex::new(State {
                idle: VecDeque::new(),
                total: 0,
                waiters: VecDeque::new(),
                bypassed: 0,
                last_failure: None,
                proven: false,
                probing: false,
            }),
            counters: stats::CounterShards::new(),
            welcome: Mutex::new(None),
            scram_keys: Mutex::new(None),
            looked_up: Mutex::new(None),
            db_limit,
            user_limit,
            clients: AtomicI64::new(0),
            clients_active: AtomicI64::new(0),
            clients_waiting: AtomicI64::new(0),
            logins_waiting: AtomicI64::new(0),
            cancels: Arc::default(),
            servers_tested: AtomicI64::new(0),
            aside_inactive: AtomicI64::new(0),
            paused: AtomicBool::new(false),
            operator_paused: AtomicBool::new(false),
            letting_go: AtomicBool::new(false),
            held: AtomicBool::new(false),
            shut: AtomicBool::new(false),
            resumed: Notify::new(),
            generation: AtomicU64::new(0),
            suspicion: dead::Suspicion::default(),
            servers: Arc::default(),
        }
    }

    /// RECONNECT: servers made before now are closed when released; idle ones at once.
    pub fn reconnect(&self) {
        self.reconnect_because("database configuration changed");
    }

    /// [`Pool::reconnect`], logging `reason` for the idle servers closed now.
    pub fn reconnect_because(&self, reason: &str) {
        self.generation.fetch_add(1, Relaxed);
        self.close_idle(reason);
    }

    /// Forgets the last failed login, so that the next client tries at once instead of getting
    /// the cached error: the server settings changed (RELOAD or SET of server_tls_*), and the
    /// failure was under the old ones.
    pub fn forget_login_failure(&self) {
        self.state.lock().last_failure = None;
    }

    /// Servers made under an older generation still open.
    pub fn stale(&self, s: &ServerConn) -> bool {
        s.generation != self.generation.load(Relaxed)
    }

    /// Servers a client holds, or that run their reset after it (PgBouncer's active and tested
    /// lists: what PAUSE and a switchover wait for). A server waiting apart for a cancel to it
    /// is not waited for: it is closed when its cancel is done if the pool lets go of it then.
    pub fn servers_in_use(&self) -> i64 {
        self.clients_active.load(Relaxed) - self.cancels.being_canceled.load(Relaxed)
    }

    /// True under PAUSE: servers are closed as they become idle.
    pub fn lets_go(&self) -> bool {
        self.letting_go.load(Relaxed)
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings.read().clone()
    }

    /// Replaces the settings (reload). Servers made under the old target are closed on release
    /// when the target changed.
    pub fn set_settings(&self, s: PoolSettings) {
        let s = Arc::new(s);
        *self.settings.write() = s.clone();
        // A bigger pool (or reserve) has room now: queued clients open servers in it at once,
        // as they would not re-check on their own while the pool was full.
        let mut st = self.state.lock();
        while self.hand_slot_locked(&mut st, &s) {}
    }

    /// ParameterStatus values of the first server, sent to clients at login.
    pub fn welcome(&self) -> Option<Arc<ServerParams>> {
        self.welcome.lock().clone()
    }

    /// The user's secret found by auth_query (md5 or clear text serve server logins).
    pub fn set_looked_up_secret(&self, secret: StoredSecret) {
        let mut s = self.looked_up.lock();
        if s.as_ref() != Some(&secret) {
            *s = Some(secret);
        }
    }

    /// The SCRAM pass-through keys and the auth_query secret this pool logs in with, if any
    /// (handed to a new process on online restart).
    pub fn login_secrets(&self) -> (Option<PassThroughKeys>, Option<StoredSecret>) {
        (self.scram_keys.lock().clone(), self.looked_up.lock().clone())
    }

    /// Keys from a client's SCRAM proof, so servers can be opened with SCRAM pass-through.
    pub fn set_scram_keys(&self, keys: PassThroughKeys) {
        let mut k = self.scram_keys.lock();
        if k.as_ref() != Some(&keys) {
            *k = Some(keys);
        }
    }

    /// The count of this pool's servers set aside for `aside` (lease.rs).
    fn aside_count(&self, aside: crate::servers::Aside) -> &AtomicI64 {
        match aside {
            crate::servers::Aside::BeingCanceled => &self.cancels.being_canceled,
            crate::servers::Aside::Tested => &self.servers_tested,
        }
    }

    /// Counts for SHOW POOLS.
    pub fn counts(&self) -> PoolCounts {
        let s = self.state.lock();
        PoolCounts {
            idle: s.idle.len() as u32,
            total: s.total,
            waiting: s.waiters.iter().filter(|w| !w.tx.is_closed()).count() as u32,
            max_wait: s.waiters.front().map(|w| w.since.elapsed()).unwrap_or_default(),
        }
    }

    /// What a server login of this pool presents: the static secret, else the one auth_query
    /// found, and the SCRAM keys a client login passed through.
    pub(crate) fn credentials(&self, settings: &PoolSettings) -> server::Credentials {
        let mut creds = settings.credentials.clone();
        creds.scram_keys = self.scram_keys.lock().clone();
        if creds.password.is_none() && creds.md5_secret.is_none() {
            match self.looked_up.lock().as_ref() {
                Some(StoredSecret::Plain(p)) => creds.password = Some(p.clone()),
                Some(StoredSecret::Md5(m)) => creds.md5_secret = Some(m.clone()),
                _ => {}
            }
        }
        creds
    }

    /// Past server_lifetime. With 0 a server serves one client and is closed on its release;
    /// one that has only logged in (the welcome of a new pool) is kept for its first client.
    fn expired_at(&self, s: &ServerConn, settings: &PoolSettings, now: Micros) -> bool {
        if settings.server_lifetime.is_zero() {
            s.tag.served
        } else {
            now.since(s.created) >= settings.server_lifetime
        }
    }

    /// Why a server that is otherwise fine may not be reused: past its lifetime, or made before
    /// the last RECONNECT / configuration change.
    fn unusable(&self, s: &ServerConn, settings: &PoolSettings, now: Micros) -> Option<&'static str> {
        if self.stale(s) {
            Some("database configuration changed")
        } else if self.expired_at(s, settings, now) {
            Some("server lifetime over")
        } else if self.lets_go() {
            Some("pause mode")
        } else {
            None
        }
    }

    /// `closing because: <reason> (age=<n>s)` for a server, when log_disconnections is on.
    fn log_close(&self, s: &ServerConn, reason: &str, settings: &PoolSettings) {
        if settings.log_disconnections {
            crate::conn_log!(info, s.tag, "closing because: {reason} (age={}s)", s.created.elapsed().as_secs());
        }
    }

    /// Gives a clean server (idle, nothing in flight) back: to the longest waiter, else to the
    /// idle list. A server past its lifetime is closed instead.
    pub(super) fn release(&self, server: Box<ServerConn>) {
        let settings = self.settings();
        self.release_with(server, &settings);
    }

    /// [`Pool::release`] with settings the caller already holds.
    pub(super) fn release_with(&self, mut server: Box<ServerConn>, settings: &PoolSettings) {
        let now = Micros::now();
        // Counted whether the server is kept or closed.
        let own = std::mem::take(&mut server.tag.own_reads);
        if own > 0 {
            PoolStats::add(&self.counters.here().stats.bytes_sent, own);
        }
        if let Some(reason) = self.unusable(&server, settings, now) {
            self.log_close(&server, reason, settings);
            drop(server);
            self.free_slot();
            return;
        }
        server.last_used = now;
        let mut s = self.state.lock();
        let local = crate::workers::local();
        while let Some(w) = s.next_waiter(local) {
            match w.tx.send(Handoff::Server(server)) {
                Ok(()) => return,
                Err(Handoff::Server(back)) => server = back,
                Err(Handoff::Slot | Handoff::Refused(_)) => unreachable!("send returns what it was given"),
            }
        }
        s.idle.push_back(server);
    }

    /// Closes a server that cannot be reused and frees its slot; `reason` goes to the log
    /// (`closing because: ...`) as PgBouncer words it.
    pub(super) fn discard(&self, server: Box<ServerConn>, reason: &str) {
        self.log_close(&server, reason, &self.settings());
        drop(server);
        self.free_slot();
    }

    /// Frees one slot; a waiting client gets the right to open a server in its place: one of
    /// this pool, else one of another pool of the same database or user (the freed unit of
    /// max_db_connections / max_user_connections is theirs at once).
    fn free_slot(&self) {
        let settings = self.settings();
        let handed = {
            let mut s = self.state.lock();
            s.total = s.total.saturating_sub(1);
            // A probe given up (its client left) lets the next one try.
            s.probing = false;
            self.db_limit.release();
            self.user_limit.release();
            self.hand_slot_locked(&mut s, &settings)
        };
        // Only a bounded limit can be what holds another pool's waiters back.
        if !handed && settings.max_db_connections > 0 {
            self.db_limit.offer(self);
        }
        if !handed && settings.max_user_connections > 0 {
            self.user_limit.offer(self);
        }
    }

    /// Closes idle servers past server_idle_timeout or server_lifetime (keeping min_pool_size),
    /// and returns how many servers to open to reach min_pool_size.
    pub fn maintain(&self) -> u32 {
        let settings = self.settings();
        let now = Micros::now();
        let mut closed = Vec::new();
        let missing;
        {
            let mut s = self.state.lock();
            let mut keep = VecDeque::with_capacity(s.idle.len());
            let mut total = s.total;
            while let Some(server) = s.idle.pop_front() {
                let idle_too_long = !settings.server_idle_timeout.is_zero()
                    && now.since(server.last_used) >= settings.server_idle_timeout
                    && total > settings.min_pool_size;
                let reason = if idle_too_long {
                    Some("server idle timeout")
                } else if server.is_dead() {
                    Some("server conn crashed?")
                } else {
                    self.unusable(&server, &settings, now)
                };
                if let Some(reason) = reason {
                    total -= 1;
                    closed.push((server, reason));
                } else {
                    keep.push_back(server);
                }
            }
            s.idle = keep;
            // PgBouncer's check_pool_size: up to min_pool_size but never past pool_size, for a
            // pool with clients or a forced user, and not while paused.
            let has_clients = self.clients.load(Relaxed) > 0 || settings.forced_user;
            let mut floor = settings.min_pool_size;
            if settings.pool_size > 0 {
                floor = floor.min(settings.pool_size);
            }
            // Not while paused or held (a hold means the target is about to move).
            missing = if has_clients && !self.paused.load(Relaxed) { floor.saturating_sub(total) } else { 0 };
        }
        for (server, reason) in closed {
            self.discard(server, reason);
        }
        missing
    }

    /// Opens one server for min_pool_size and puts it in the pool.
    pub async fn open_spare(self: &Arc<Self>) {
        let settings = self.settings();
        let guard = {
            let mut s = self.state.lock();
            if !self.reserve_locked(&mut s, &settings, Duration::ZERO).granted() {
                return;
            }
            SlotGuard::new(self.clone())
        };
        if let Ok(s) = self.open(guard, &settings).await {
            self.release(s);
        }
    }

    /// How many idle servers get the check query before their next client (SHOW POOLS'
    /// `sv_used`).
    pub fn idle_due_for_check(&self, settings: &PoolSettings, now: Micros) -> u32 {
        if settings.check_query.is_none() {
            return 0;
        }
        let s = self.state.lock();
        s.idle.iter().filter(|c| settings.due_for_check(now.since(c.last_used))).count() as u32
    }

    /// The idle servers, for SHOW SERVERS.
    pub fn idle_servers(&self) -> Vec<IdleServer> {
        self.state
            .lock()
            .idle
            .iter()
            .map(|c| IdleServer {
                id: c.id,
                last_used: c.last_used,
                application_name: c.params.get("application_name").unwrap_or("").to_owned(),
            })
            .collect()
    }

    /// Closes every idle server (RECONNECT, shutdown), logging `reason`.
    pub fn close_idle(&self, reason: &str) {
        let idle: Vec<_> = self.state.lock().idle.drain(..).collect();
        for s in idle {
            self.discard(s, reason);
        }
    }
}

/// An idle server as SHOW SERVERS and SHOW POOLS list it.
#[derive(Debug)]
pub struct IdleServer {
    /// Its connection id.
    pub id: u64,
    /// When it was last given back (its `request_time`; past server_check_delay it is `used`).
    pub last_used: Micros,
    /// The application_name it has, from the last client's sync.
    pub application_name: String,
}
