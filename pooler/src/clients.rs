//! Every logged-in client, console clients included, for SHOW CLIENTS, KILL and KILL_CLIENT. A client registers once at
//! login and leaves at disconnect; on the hot path it only stores its state in relaxed atomics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::clock::Micros;
use crate::net::PeerAddr;
use crate::replication::Replication;

/// What a client is doing, as SHOW CLIENTS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ClientState {
    /// Logged in, holding no server.
    Idle = 0,
    /// Holding a server.
    Active = 1,
    /// Waiting for a server.
    Waiting = 2,
}

impl ClientState {
    /// SHOW CLIENTS spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::Waiting => "waiting",
        }
    }
}

/// Why the console closed a client, in PgBouncer's words (the client's FATAL, 08P01).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum KillReason {
    /// KILL_CLIENT.
    AdminForced = 1,
    /// KILL, or its database gone from the config at RELOAD.
    DatabaseRemoved = 2,
}

impl KillReason {
    fn words(code: u8) -> &'static str {
        match code {
            1 => "admin forced disconnect",
            2 => "database removed",
            _ => "client killed by admin",
        }
    }
}

/// What SHOW CLIENTS prints of a client that does not change after its login.
#[derive(Debug, Clone, Copy, Default)]
pub struct Labels<'a> {
    /// application_name at login.
    pub application_name: &'a str,
    /// TLS protocol and suite, empty for plain text.
    pub tls: &'a str,
    /// Its replication kind.
    pub replication: Replication,
}

/// One client.
#[derive(Debug)]
pub struct ClientInfo {
    /// Unique id (SHOW CLIENTS `id`, KILL_CLIENT).
    pub id: u64,
    /// Server-side user of its pool (the forced user, or `user`). This entry's texts are
    /// `Box<str>`, 8 bytes smaller than `String` each, in every client's entry.
    pub pool_user: Box<str>,
    /// Peer address.
    pub addr: PeerAddr,
    /// pgmux's own end of a TCP connection (SHOW CLIENTS `local_addr`, `local_port`).
    pub local_addr: Option<std::net::SocketAddr>,
    /// The peer's process id over a unix socket (SO_PEERCRED), 0 when unknown.
    pub peer_pid: i32,
    /// Login time.
    pub connect_time: SystemTime,
    /// application_name at login.
    pub application_name: Box<str>,
    /// TLS protocol and suite (`TLSv1.3/TLS13_AES_256_GCM_SHA384`), empty for plain text.
    pub tls: Box<str>,
    state: AtomicU8,
    /// Its replication kind (SHOW CLIENTS `replication`).
    pub replication: Replication,
    /// Named prepared statements it has (SHOW CLIENTS `prepared_statements`), as its task last
    /// published the count.
    prepared: AtomicU32,
    /// Backend pid of the server it holds, 0 when none.
    pub server_pid: AtomicI32,
    /// Connection id of the server it holds, 0 when none (SHOW CLIENTS `link`).
    pub server_id: AtomicU64,
    /// When it last began a transaction (sent a request with no server held), in µs on the
    /// registry's monotonic clock; 0 before its first.
    pub request_time_us: AtomicU64,
    /// Monotonic µs (since registry start) when its current request began, its wait for a
    /// server included (PgBouncer's query_start); 0 when none is under way.
    query_start_us: AtomicU64,
    /// A [`KillReason`] once the console asked its task to close it, 0 before.
    killed: AtomicU8,
    /// server_fast_close: the server it holds must close as soon as it is idle.
    close_needed: AtomicBool,
    /// Wakes the client's task when it must look at its flags (killed, close_needed, a
    /// hand-over), with a permit (`nudged`) so that a nudge before the task waits is not lost.
    /// A waker here costs the task no boxed future of its own.
    waker: atomic_waker::AtomicWaker,
    nudged: AtomicBool,
    /// Its log prefix, for lines written about it away from its task (the reserve pool).
    pub tag: crate::logging::ConnTag,
    /// Its place in the per-database and per-user client counts, given back with the last
    /// reference when the client has left.
    _counted: crate::client_counts::Counted,
}

impl ClientInfo {
    /// Login user.
    pub fn user(&self) -> &str {
        &self.tag.user
    }

    /// Database name as the client gave it.
    pub fn db(&self) -> &str {
        &self.tag.db
    }

    /// Current state.
    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            1 => ClientState::Active,
            2 => ClientState::Waiting,
            _ => ClientState::Idle,
        }
    }

    /// Records a state change.
    #[inline]
    pub fn set_state(&self, s: ClientState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// How long it has waited for a server so far, zero when it is not waiting.
    pub fn waiting_for(&self, now_us: u64) -> std::time::Duration {
        if self.state() != ClientState::Waiting {
            return std::time::Duration::ZERO;
        }
        self.query_age(now_us)
    }

    /// How long its current request has been under way, its wait for a server included (SHOW
    /// CLIENTS' `wait`, as PgBouncer's); zero when none is.
    pub fn query_age(&self, now_us: u64) -> std::time::Duration {
        match (self.state(), self.query_start_us.load(Ordering::Relaxed)) {
            // No server held and none waited for: nothing is under way.
            (ClientState::Idle, _) | (_, 0) => std::time::Duration::ZERO,
            (_, start) => std::time::Duration::from_micros(now_us.saturating_sub(start)),
        }
    }

    /// Marks the start of a wait for a server, at `now_us` on the registry's clock: a request
    /// begins.
    #[inline]
    pub fn start_waiting(&self, now_us: u64) {
        self.query_start_us.store(now_us, Ordering::Relaxed);
        self.set_state(ClientState::Waiting);
    }

    /// A request began at `now_us` (`None`: none is under way any more).
    #[inline]
    pub fn set_query_start(&self, now_us: Option<u64>) {
        self.query_start_us.store(now_us.unwrap_or(0), Ordering::Relaxed);
    }

    /// Asks the client's task to close it, telling the client `reason` with 08P01.
    pub fn request_kill(&self, reason: KillReason) {
        // The first reason stays.
        let _ = self.killed.compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
        self.nudge();
    }

    /// Why the client was killed, in PgBouncer's words.
    pub fn kill_reason(&self) -> &'static str {
        KillReason::words(self.killed.load(Ordering::Acquire))
    }

    /// The count of named prepared statements it has now.
    #[inline]
    pub fn show_prepared(&self, count: usize) {
        let n = u32::try_from(count).unwrap_or(u32::MAX);
        if self.prepared.load(Ordering::Relaxed) != n {
            self.prepared.store(n, Ordering::Relaxed);
        }
    }

    /// Named prepared statements it has, as last published.
    pub fn prepared(&self) -> u32 {
        self.prepared.load(Ordering::Relaxed)
    }

    /// server_fast_close after RECONNECT / RELOAD: the client's task closes the session as soon
    /// as its (older) server is between transactions.
    pub fn request_fast_close(&self) {
        self.close_needed.store(true, Ordering::Release);
        self.nudge();
    }

    /// True once a fast close was requested.
    #[inline]
    pub fn close_needed(&self) -> bool {
        self.close_needed.load(Ordering::Relaxed)
    }

    /// Wakes the client's task to look at its flags (a hand-over too).
    pub fn nudge(&self) {
        self.nudged.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once after each [`ClientInfo::nudge`]; the task is woken by the next one.
    pub fn poll_nudged(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.waker.register(cx.waker());
        if self.nudged.swap(false, Ordering::AcqRel) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }

    /// Completes at the next nudge (or at once for one not yet seen).
    pub async fn nudged(&self) {
        std::future::poll_fn(|cx| self.poll_nudged(cx)).await
    }

    /// True once a kill was requested.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire) != 0
    }

    /// True for a client of the admin console (database `pgbouncer`).
    pub fn is_console(&self) -> bool {
        self.db() == crate::config::ADMIN_DB
    }
}

/// A client connection's two ends, as SHOW CLIENTS lists them.
#[derive(Debug, Clone)]
pub struct Ends {
    /// The client's address.
    pub peer: PeerAddr,
    /// pgmux's own address on a TCP connection.
    pub local: Option<std::net::SocketAddr>,
    /// The client's process id on a unix socket, 0 when unknown.
    pub peer_pid: i32,
}

impl Ends {
    /// The ends of the connection `stream` to the client at `peer`.
    pub fn of(peer: &PeerAddr, stream: &crate::net::Stream) -> Self {
        Ends { peer: peer.clone(), local: stream.local_addr(), peer_pid: stream.peer_pid().unwrap_or(0) }
    }
}

/// All logged-in clients.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    map: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
}

impl ClientRegistry {
    /// Microseconds on the registry's monotonic clock ([`Micros`]).
    pub fn now_us(&self) -> u64 {
        Micros::now().as_u64()
    }

    /// Wall-clock time of `us` on the registry's monotonic clock (a time in the past).
    pub fn wall_time(&self, us: u64) -> SystemTime {
        SystemTime::now() - std::time::Duration::from_micros(self.now_us().saturating_sub(us))
    }

    /// How long the longest-waiting client of pool (db, pool_user) has waited.
    pub fn max_wait(&self, db: &str, pool_user: &str) -> std::time::Duration {
        let now = self.now_us();
        self.map
            .lock()
            .values()
            .filter(|c| c.db() == db && *c.pool_user == *pool_user)
            .map(|c| c.waiting_for(now))
            .max()
            .unwrap_or_default()
    }

    /// Registers a client that just logged in, under its connection id and login names.
    pub fn register(
        &self,
        tag: &crate::logging::ConnTag,
        pool_user: &str,
        ends: &Ends,
        labels: Labels<'_>,
        counted: crate::client_counts::Counted,
    ) -> Arc<ClientInfo> {
        let id = tag.id;
        let info = Arc::new(ClientInfo {
            id,
            pool_user: pool_user.into(),
            addr: ends.peer.clone(),
            local_addr: ends.local,
            peer_pid: ends.peer_pid,
            connect_time: SystemTime::now(),
            application_name: labels.application_name.into(),
            tls: labels.tls.into(),
            state: AtomicU8::new(ClientState::Idle as u8),
            replication: labels.replication,
            prepared: AtomicU32::new(0),
            server_pid: AtomicI32::new(0),
            server_id: AtomicU64::new(0),
            request_time_us: AtomicU64::new(0),
            query_start_us: AtomicU64::new(0),
            killed: AtomicU8::new(0),
            close_needed: AtomicBool::new(false),
            waker: atomic_waker::AtomicWaker::new(),
            nudged: AtomicBool::new(false),
            tag: tag.clone(),
            _counted: counted,
        });
        self.map.lock().insert(id, info.clone());
        info
    }

    /// Removes a client that left.
    pub fn unregister(&self, id: u64) {
        self.map.lock().remove(&id);
    }

    /// Every client, by id.
    pub fn all(&self) -> Vec<Arc<ClientInfo>> {
        self.map.lock().values().cloned().collect()
    }

    /// server_fast_close: asks every client holding a server of pool (db, pool_user) to close
    /// once that server is idle (PgBouncer's janitor closes such servers with `database
    /// configuration changed`).
    pub fn fast_close(&self, db: &str, pool_user: &str) {
        for c in self.map.lock().values() {
            if c.state() == ClientState::Active && c.db() == db && *c.pool_user == *pool_user {
                c.request_fast_close();
            }
        }
    }

    /// One client by id.
    pub fn get(&self, id: u64) -> Option<Arc<ClientInfo>> {
        self.map.lock().get(&id).cloned()
    }

    /// Waits (polling, up to `limit`) until none of `ids` is registered: KILL and KILL_CLIENT
    /// answer once the clients are gone, as PgBouncer disconnects them before it replies.
    pub async fn wait_gone(&self, ids: &[u64], limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if !ids.iter().any(|id| self.map.lock().contains_key(id)) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every connected client has an entry for its whole life. With the `Arc`'s two counts it
    /// fits mimalloc's 320-byte size class; 8 bytes more and it takes 384.
    #[test]
    fn an_entry_stays_within_its_size_class() {
        let with_counts = std::mem::size_of::<super::ClientInfo>() + 2 * std::mem::size_of::<usize>();
        assert!(with_counts <= 320, "a client's registry entry grew to {with_counts} bytes");
    }
}
