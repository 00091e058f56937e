//! State shared by every task: the config snapshot, pools, cancel keys, client counts and the
//! shutdown signal. Passed as `Arc<Shared>`; nothing here is a static.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use std::time::SystemTime;

use crate::cancel::Cancels;
use crate::clients::ClientRegistry;
use crate::config::Config;
use crate::pool::Pools;

/// Run state, as SHOW STATE and the shutdown commands see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Serving.
    Running,
    /// No new clients; exit when every client has gone (SIGTERM, SHUTDOWN WAIT_FOR_CLIENTS).
    WaitForClients,
    /// No new clients; clients are closed as soon as they hold no server (SIGINT).
    WaitForServers,
    /// Close everything now.
    Immediate,
    /// A new process took the listeners over (`pgmux -R`); clients move to it as they become
    /// idle, and the process exits when none is left.
    TakenOver,
}

/// Everything tasks share.
#[derive(Debug)]
pub struct Shared {
    config: RwLock<Arc<Config>>,
    /// Server pools.
    pub pools: Pools,
    /// Cancel keys.
    pub cancels: Cancels,
    /// Client connections open (logging in or logged in).
    pub clients: AtomicUsize,
    /// Per-process key for mock SCRAM salts of unknown users.
    pub mock_key: [u8; 32],
    /// Logged-in clients (SHOW CLIENTS, KILL).
    pub client_registry: ClientRegistry,
    /// Clients per database and per user (max_db_client_connections, max_user_client_connections).
    pub client_counts: crate::client_counts::ClientCounts,
    /// Where the current stats_period and the one before began (SHOW STATS' avg_* columns).
    pub averages: Mutex<crate::pool::AveragesPeriod>,
    /// Process start.
    pub started: SystemTime,
    /// Admin console clients connected now.
    pub admin_clients: std::sync::atomic::AtomicI64,
    /// Counters of the admin database (logins, commands), PgBouncer's admin pool stats.
    pub admin_stats: crate::pool::PoolStats,
    /// max_prepared_statements in force, read by sessions at each server attach so that a
    /// console SET applies to connected clients, as in PgBouncer (no config lock per transaction).
    pub max_prepared_statements: AtomicUsize,
    /// cache_unnamed_statements in force, read as max_prepared_statements is.
    pub cache_unnamed_statements: AtomicBool,
    /// Raised when the result columns of statements prepared on servers may have changed
    /// (client/prepared/invalidation.rs); statements prepared before are prepared again.
    pub statement_epoch: AtomicU64,
    /// Online restart: the listeners kept to pass on, and the hand-over's progress.
    pub giving: crate::handoff::Giving,
    /// What pgmux knows of the Patroni cluster and the leader-following holds.
    pub patroni: crate::patroni::Patroni,
    suspended: AtomicBool,
    resumed: tokio::sync::Notify,
    state_tx: watch::Sender<RunState>,
}

impl Shared {
    /// Shared state for `config`.
    pub fn new(config: Config) -> Arc<Self> {
        let (state_tx, _) = watch::channel(RunState::Running);
        let max_prepared = config.general.max_prepared_statements as usize;
        let cache_unnamed = config.general.cache_unnamed_statements;
        Arc::new(Shared {
            config: RwLock::new(Arc::new(config)),
            pools: Pools::default(),
            cancels: Cancels::default(),
            clients: AtomicUsize::new(0),
            mock_key: rand::random(),
            client_registry: ClientRegistry::default(),
            client_counts: Default::default(),
            averages: Mutex::new(crate::pool::AveragesPeriod::new()),
            started: SystemTime::now(),
            admin_clients: std::sync::atomic::AtomicI64::new(0),
            admin_stats: crate::pool::PoolStats::default(),
            max_prepared_statements: AtomicUsize::new(max_prepared),
            cache_unnamed_statements: AtomicBool::new(cache_unnamed),
            statement_epoch: AtomicU64::new(0),
            giving: Default::default(),
            patroni: Default::default(),
            suspended: AtomicBool::new(false),
            resumed: tokio::sync::Notify::new(),
            state_tx,
        })
    }

    /// Shared state from pgbouncer.ini `[pgbouncer]` lines `general` and one database `app`,
    /// for tests and benches/hot_path.rs (with `Pool::park_fake_server`).
    #[doc(hidden)]
    pub fn fake(general: &str) -> Arc<Self> {
        let text = format!("[databases]\napp = host=/tmp port=5432\n[pgbouncer]\n{general}");
        let path = std::path::Path::new("fake.ini");
        let entries = crate::config::ini::parse_text(&text, path).expect("a valid fake config");
        Shared::new(crate::config::build(path, entries).expect("a valid fake config"))
    }

    /// The pool of database `app` and user `u` of [`Shared::fake`] state.
    #[doc(hidden)]
    pub fn fake_pool(&self) -> Arc<crate::pool::Pool> {
        let config = self.config();
        self.pools.get_or_create(&config, &config.database("app").expect("app is configured"), "u")
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().clone()
    }

    /// Installs a new config.
    pub fn set_config(&self, c: Config) {
        self.max_prepared_statements.store(c.general.max_prepared_statements as usize, Ordering::Relaxed);
        self.cache_unnamed_statements.store(c.general.cache_unnamed_statements, Ordering::Relaxed);
        *self.config.write() = Arc::new(c);
    }

    /// Changes the run state.
    pub fn set_state(&self, s: RunState) {
        self.state_tx.send_replace(s);
    }

    /// The run state now.
    pub fn state(&self) -> RunState {
        *self.state_tx.borrow()
    }

    /// A receiver that sees run-state changes.
    pub fn watch_state(&self) -> watch::Receiver<RunState> {
        self.state_tx.subscribe()
    }

    /// SUSPEND / RESUME: while suspended no new connection is accepted (they wait in the
    /// listen backlog) and no transaction starts.
    pub fn set_suspended(&self, on: bool) {
        self.suspended.store(on, Ordering::Relaxed);
        self.pools.set_suspended(on);
        if !on {
            self.resumed.notify_waiters();
        }
    }

    /// Ends a SUSPEND if one is in force, in one step (nothing can pause between the look and
    /// the change); true when it did.
    pub fn resume_if_suspended(&self) -> bool {
        let was = self.suspended.compare_exchange(true, false, Ordering::Relaxed, Ordering::Relaxed).is_ok();
        if was {
            self.set_suspended(false);
        }
        was
    }

    /// True while suspended.
    pub fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::Relaxed)
    }

    /// Waits until RESUME when suspended.
    pub async fn wait_resumed(&self) {
        while self.is_suspended() {
            let n = self.resumed.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if !self.is_suspended() {
                break;
            }
            n.await;
        }
    }

    /// Clients connected now.
    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }
}
