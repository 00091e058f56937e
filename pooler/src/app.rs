//! The running pooler: accept loops for every listener, the maintenance tick, and the shutdown
//! modes. `Pooler::bind` binds (before daemonizing or dropping privileges); `Pooler::run` serves.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener, UnixStream};

use crate::config::Config;
use crate::handoff::ListenerKind;
use crate::net::listener::{self, BindError, Bound};
use crate::net::{PeerAddr, Stream};
use crate::shared::{RunState, Shared};

/// A bound pooler, not yet serving.
#[derive(Debug)]
pub struct Pooler {
    shared: Arc<Shared>,
    bound: Bound,
    exporter: Option<std::net::TcpListener>,
}

impl Pooler {
    /// Binds the listeners `config` asks for.
    ///
    /// # Errors
    /// An address that cannot be bound.
    pub fn bind(config: Config) -> Result<Self, BindError> {
        let bound = listener::bind(&config.general)?;
        let exporter = bind_exporter(&config.general)?;
        Ok(Pooler { shared: Shared::new(config), bound, exporter })
    }

    /// A pooler on the listeners a running process passed (`pgmux -R`).
    pub fn from_taken(config: Config, bound: Bound, exporter: Option<std::net::TcpListener>) -> Self {
        Pooler { shared: Shared::new(config), bound, exporter }
    }

    /// The metrics port bound, if the endpoint is on.
    pub fn exporter_port(&self) -> Option<u16> {
        self.exporter.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.port())
    }

    /// The TCP port bound (useful when the ini says 0).
    pub fn port(&self) -> u16 {
        self.bound.port
    }

    /// The shared state, for signals and tests.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until a shutdown mode completes. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// Converting the listeners to Tokio fails.
    pub async fn run(self) -> std::io::Result<()> {
        let Pooler { shared, bound, exporter } = self;
        let from_systemd = bound.from_systemd;
        let mut accepts = Vec::new();
        // Duplicates of the listeners, passed to a new process on online restart.
        let keep = |kind: ListenerKind, fd: std::io::Result<std::os::fd::OwnedFd>| match fd {
            Ok(fd) => shared.giving.keep_listener(kind, fd),
            Err(e) => tracing::warn!("cannot keep a listener for online restart: {e}"),
        };
        if let Some(l) = &exporter {
            keep(ListenerKind::Exporter, l.try_clone().map(Into::into));
        }
        for l in &bound.tcp {
            keep(ListenerKind::Tcp, l.try_clone().map(Into::into));
        }
        if let Some((l, path)) = &bound.unix {
            keep(ListenerKind::Unix(path.display().to_string()), l.try_clone().map(Into::into));
        }
        if let Some(l) = exporter {
            let l = TcpListener::from_std(l)?;
            let source = Arc::new(crate::metrics::MetricsSource::new(shared.clone(), bound.port));
            accepts.push(tokio::spawn(pgmux_exporter::serve(l, source)));
        }
        for l in bound.tcp {
            let l = crate::net::quiet::register(l, tokio::io::Interest::READABLE)?;
            accepts.push(tokio::spawn(accept_tcp(shared.clone(), l)));
        }
        match crate::leader::agent::bind(&shared.config().general) {
            Ok(Some(l)) => {
                accepts.push(tokio::spawn(crate::leader::agent::serve(shared.clone(), TcpListener::from_std(l)?)))
            }
            Ok(None) => {}
            Err(e) => tracing::error!("health_agent_port: cannot listen: {e}"),
        }
        // Idle until patroni_url is set.
        accepts.push(tokio::spawn(crate::leader::watch::run(shared.clone())));
        let unix = match bound.unix {
            Some((l, path)) => {
                let l = UnixListener::from_std(l)?;
                Some((tokio::spawn(accept_unix(shared.clone(), l)), path))
            }
            None => None,
        };
        let ticker = tokio::spawn(maintenance(shared.clone()));
        crate::systemd::ready(&shared);
        let mut state = shared.watch_state();
        while *state.borrow_and_update() == RunState::Running {
            if state.changed().await.is_err() {
                break;
            }
        }
        crate::systemd::stopping();
        // As PgBouncer's cleanup_tcp_sockets: TCP listeners close at once; the unix socket stays
        // until the process exits, so the console can still be reached (logins to databases
        // are refused with "pooler is shutting down").
        for a in &accepts {
            a.abort();
        }
        shared.giving.drop_listeners();
        if shared.state() == RunState::WaitForServers {
            // Clients waiting for a server are closed now, the others when they ask for one;
            // clients holding a server finish their transaction.
            for p in shared.pools.all() {
                p.shut_down();
            }
        }
        loop {
            // Once a new process serves (online restart), it alone accepts, the console included.
            if shared.giving.given() {
                if let Some((task, _)) = &unix {
                    task.abort();
                }
            }
            let done = match shared.state() {
                RunState::Running | RunState::Immediate => true,
                RunState::TakenOver => shared.giving.finished(),
                RunState::WaitForClients => shared.client_count() == 0,
                // As PgBouncer (no server left; idle ones close as in pause mode): a server that
                // is leased, connecting or being SET up for a client keeps the process up.
                RunState::WaitForServers => shared.pools.all().iter().all(|p| {
                    let c = p.counts();
                    c.total == c.idle
                }),
            };
            if done {
                match shared.state() {
                    RunState::WaitForClients => tracing::info!("client connections dropped, exiting"),
                    RunState::WaitForServers => tracing::info!("server connections dropped, exiting"),
                    _ => {}
                }
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = state.changed() => {}
            }
        }
        if let Some((task, path)) = unix {
            task.abort();
            // After a takeover the socket file is the new process's; with socket activation
            // it is systemd's.
            if !shared.giving.given() && !from_systemd {
                let _ = std::fs::remove_file(path);
            }
        }
        ticker.abort();
        for p in shared.pools.all() {
            p.close_idle("server shutting down");
        }
        Ok(())
    }
}

/// Binds the metrics endpoint when exporter_port is set.
fn bind_exporter(g: &crate::config::General) -> Result<Option<std::net::TcpListener>, BindError> {
    if g.exporter_port == 0 {
        return Ok(None);
    }
    let host = if g.exporter_listen_addr == "*" { "0.0.0.0" } else { g.exporter_listen_addr.as_str() };
    let addr = format!("{host}:{}", g.exporter_port);
    let l = std::net::TcpListener::bind(&addr).map_err(|source| BindError::Io { addr: addr.clone(), source })?;
    l.set_nonblocking(true).map_err(|source| BindError::Io { addr, source })?;
    Ok(Some(l))
}

/// Clients over TCP, as quiet sockets (net/quiet.rs): registered for reading only.
async fn accept_tcp(shared: Arc<Shared>, l: tokio::io::unix::AsyncFd<std::net::TcpListener>) {
    loop {
        shared.wait_resumed().await;
        match crate::net::quiet::accept(&l).await {
            Ok((s, addr)) => {
                crate::net::tcp_options::TcpOptions::from_general(&shared.config().general).apply(&s);
                let shared = shared.clone();
                // Registered and served on the worker it is given to.
                crate::workers::dispatch(Box::new(move || match crate::net::quiet::QuietTcp::from_nonblocking(s) {
                    Ok(s) => {
                        tokio::spawn(crate::client::handle(shared, Stream::QuietTcp(s), PeerAddr::Tcp(addr)));
                    }
                    Err(e) => tracing::error!("cannot register client socket: {e}"),
                }));
            }
            Err(e) => accept_error(e).await,
        }
    }
}

async fn accept_unix(shared: Arc<Shared>, l: UnixListener) {
    loop {
        shared.wait_resumed().await;
        match l.accept().await {
            Ok((s, _)) => {
                // PgBouncer names unix-socket clients by their process id: unix(1234).
                let label = match s.peer_cred().ok().and_then(|c| c.pid()) {
                    Some(pid) => format!("unix({pid})"),
                    None => "unix".to_owned(),
                };
                if !crate::workers::several() {
                    tokio::spawn(crate::client::handle(shared.clone(), Stream::Unix(s), PeerAddr::Unix(label)));
                    continue;
                }
                // Out of this runtime's books, registered and served on the worker it is
                // given to.
                let s = match s.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!("cannot take client socket off the listener's thread: {e}");
                        continue;
                    }
                };
                let shared = shared.clone();
                crate::workers::dispatch(Box::new(move || match UnixStream::from_std(s) {
                    Ok(s) => {
                        tokio::spawn(crate::client::handle(shared, Stream::Unix(s), PeerAddr::Unix(label)));
                    }
                    Err(e) => tracing::error!("cannot register client socket: {e}"),
                }));
            }
            Err(e) => accept_error(e).await,
        }
    }
}

/// Out of file descriptors and similar: log and back off instead of spinning.
async fn accept_error(e: std::io::Error) {
    tracing::error!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// PgBouncer's periodic `stats:` line, averaged over the last stats_period.
fn log_stats(a: &crate::pool::StatsSnapshot) {
    tracing::info!(
        "stats: {} xacts/s, {} queries/s, {} client parses/s, {} server parses/s, {} binds/s, {} client logins/s, \
         in {} B/s, out {} B/s, xact {} us, query {} us, wait {} us",
        a.xact_count,
        a.query_count,
        a.client_parse_count,
        a.server_parse_count,
        a.bind_count,
        a.client_login_count,
        a.bytes_received,
        a.bytes_sent,
        a.xact_time_us,
        a.query_time_us,
        a.wait_time_us
    );
}

/// Once a second: close idle and expired servers, open servers up to min_pool_size; every
/// stats_period: compute the per-database averages SHOW STATS reports.
async fn maintenance(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut period = crate::pool::AveragesPeriod::new();
    let mut beats = 0u32;
    loop {
        tick.tick().await;
        beats = beats.wrapping_add(1);
        if beats.is_multiple_of(5) {
            crate::systemd::report(&shared);
        }
        let stats_period = shared.config().general.stats_period;
        if let Some((_, all)) = period.tick(&shared.pools.all(), stats_period) {
            *shared.averages.lock() = period.clone();
            if shared.config().general.log_stats {
                log_stats(&all);
            }
        }
        // min_pool_size is kept even without clients for databases with a forced user: their
        // one pool is made here if no client made it (PgBouncer's do_full_maint).
        let config = shared.config();
        for db in config.databases.values().filter(|d| d.name != "*") {
            if let Some(user) = &db.user {
                if db.min_pool_size.unwrap_or(config.general.min_pool_size) > 0 {
                    shared.pools.get_or_create(&config, db, user);
                }
            }
        }
        for pool in shared.pools.all() {
            let missing = pool.maintain();
            for _ in 0..missing {
                let p = pool.clone();
                tokio::spawn(async move { p.open_spare().await });
            }
        }
        // After maintain: a pool whose last server was just closed is seen idle at once.
        shared.pools.reap_idle(shared.config().general.pool_idle_timeout);
        let config = shared.config();
        shared.pools.reap_auto_dbs(config.general.autodb_idle_timeout, |db| {
            !config.databases.contains_key(db) && config.databases.contains_key("*")
        });
    }
}
