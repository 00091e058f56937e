//! Every pool server connection, for SHOW SERVERS and SHOW SOCKETS: what does not change once it
//! is logged in (id, pool, addresses, pid, connect time). A server registers as pgmux begins to
//! connect to an address, listed as logging in (PgBouncer's `new`) until its pool takes it, and
//! leaves when its connection is dropped; nothing here is touched per transaction (the count of
//! statements prepared on it is written only when it changes). Whether a
//! server is active (and with which client) or idle is read from the client registry and the
//! pools when a SHOW asks; a server set aside by its lease (being canceled, or running its
//! reset) says so itself ([`ServerInfo::aside`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::net::PeerAddr;
use crate::replication::Replication;

/// One server connection as SHOW SERVERS lists it.
#[derive(Debug)]
pub struct ServerInfo {
    /// Connection id (the sequence shared with clients), `ptr` in hex.
    pub id: u64,
    /// Pool database.
    pub db: String,
    /// Pool (server-side) user.
    pub user: String,
    /// PostgreSQL's address.
    pub addr: PeerAddr,
    /// pgmux's end of the connection once connected, when it is TCP.
    local_addr: OnceLock<std::net::SocketAddr>,
    /// When pgmux began to connect it.
    pub connect_time: SystemTime,
    /// Backend pid (BackendKeyData; 0 until the server has sent it).
    pid: AtomicI32,
    /// The TLS session to PostgreSQL, as SHOW's `tls` column prints it (unset without TLS).
    tls: OnceLock<String>,
    /// Set by [`ServerRegistry::register`].
    registry: Weak<ServerRegistry>,
    /// What its lease set it aside for, as an [`Aside`] (0: nothing).
    aside: AtomicU8,
    /// Still logging in (or running connect_query): not its pool's yet.
    logging_in: AtomicBool,
    /// A replication client's own server logs in as one.
    pub replication: Replication,
    /// Statements pgmux prepared on it, as the relay last published the count.
    prepared: AtomicU32,
}

/// Why a checked-out server no client holds is not back in its pool yet, as PgBouncer names
/// the lists such servers are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Aside {
    /// A cancel sent to it is still in flight (`being_canceled`).
    BeingCanceled = 1,
    /// Its reset query runs (`tested`).
    Tested = 2,
}

impl ServerInfo {
    /// What the server is set aside for, if anything.
    pub fn aside(&self) -> Option<Aside> {
        match self.aside.load(Relaxed) {
            1 => Some(Aside::BeingCanceled),
            2 => Some(Aside::Tested),
            _ => None,
        }
    }

    /// The backend's pid, 0 until it is known.
    pub fn pid(&self) -> i32 {
        self.pid.load(Relaxed)
    }

    /// True while the server connects and logs in (PgBouncer's `new`).
    pub fn logging_in(&self) -> bool {
        self.logging_in.load(Relaxed)
    }

    /// pgmux's end of the connection, once connected over TCP.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.local_addr.get().copied()
    }

    /// Statements prepared on it (SHOW SERVERS `prepared_statements`).
    pub fn prepared(&self) -> u32 {
        self.prepared.load(Relaxed)
    }

    /// The TLS session, as SHOW's `tls` column prints it (empty without TLS).
    pub fn tls(&self) -> &str {
        self.tls.get().map_or("", String::as_str)
    }

    /// A row for a server pgmux is about to connect to at `addr`, to be registered: it is
    /// logging in until [`ServerEntry::logged_in`].
    pub fn dialling(id: u64, pool: (&str, &str), addr: PeerAddr, replication: Replication) -> Self {
        let (db, user) = (pool.0.to_owned(), pool.1.to_owned());
        Self {
            id,
            db,
            user,
            addr,
            local_addr: OnceLock::new(),
            connect_time: SystemTime::now(),
            pid: AtomicI32::new(0),
            tls: OnceLock::new(),
            registry: Weak::new(),
            aside: AtomicU8::new(0),
            logging_in: AtomicBool::new(true),
            replication,
            prepared: AtomicU32::new(0),
        }
    }
}

/// A server connection's log prefix and, for pool servers, its registry entry: boxed together in
/// `ServerConn` so that the connection stays small.
#[derive(Debug)]
pub struct ServerIdent {
    /// `S-0x2b: p0/alice@127.0.0.1:5432`.
    pub tag: crate::logging::ConnTag,
    /// Its row in SHOW SERVERS while it lives (pool servers; none for a bare login).
    pub entry: Option<ServerEntry>,
    /// Set when a client first uses it: server_lifetime = 0 closes a server after one use, and
    /// a server that has only logged in is not used yet (PgBouncer exempts SV_LOGIN on release).
    pub served: bool,
    /// Bytes it sent answering pgmux's own queries (SETs, checks, resets), not yet in its
    /// pool's `total_sent`: PgBouncer counts every byte a server sends.
    pub own_reads: u64,
}

impl std::ops::Deref for ServerIdent {
    type Target = crate::logging::ConnTag;

    fn deref(&self) -> &Self::Target {
        &self.tag
    }
}

/// Keeps a server in the registry while its connection lives; dropping it removes the server.
#[derive(Debug)]
pub struct ServerEntry(Arc<ServerInfo>);

impl ServerEntry {
    /// Marks the server set aside (`Some`) or not (`None`) for SHOW SERVERS.
    pub fn set_aside(&self, aside: Option<Aside>) {
        self.0.aside.store(aside.map_or(0, |a| a as u8), Relaxed);
    }

    /// Its socket connected from `local` (TCP).
    pub fn set_local_addr(&self, local: Option<std::net::SocketAddr>) {
        if let Some(l) = local {
            let _ = self.0.local_addr.set(l);
        }
    }

    /// Its TLS session, described.
    pub fn set_tls(&self, tls: String) {
        let _ = self.0.tls.set(tls);
    }

    /// The backend's pid, from its BackendKeyData.
    pub fn set_pid(&self, pid: i32) {
        self.0.pid.store(pid, Relaxed);
    }

    /// The count of statements prepared on it now.
    pub fn set_prepared(&self, n: u32) {
        self.0.prepared.store(n, Relaxed);
    }

    /// Its pool has taken it: no longer `new`.
    pub fn logged_in(&self) {
        self.0.logging_in.store(false, Relaxed);
    }
}

impl Drop for ServerEntry {
    fn drop(&mut self) {
        if let Some(r) = self.0.registry.upgrade() {
            r.map.lock().remove(&self.0.id);
        }
    }
}

/// All pool servers from the moment pgmux begins to connect them, by id.
#[derive(Debug, Default)]
pub struct ServerRegistry {
    map: Mutex<BTreeMap<u64, Arc<ServerInfo>>>,
}

impl ServerRegistry {
    /// Registers a server pgmux is connecting to; keep the entry with the connection.
    pub fn register(self: &Arc<Self>, mut info: ServerInfo) -> ServerEntry {
        info.registry = Arc::downgrade(self);
        let info = Arc::new(info);
        self.map.lock().insert(info.id, info.clone());
        ServerEntry(info)
    }

    /// Every registered server, by id.
    pub fn all(&self) -> Vec<Arc<ServerInfo>> {
        self.map.lock().values().cloned().collect()
    }
}
