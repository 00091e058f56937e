//! Cancel keys: every client gets pgmux's own BackendKeyData; a CancelRequest carrying it is
//! forwarded to the server that client holds at that moment, and never to another client's.
//! A server with a cancel in flight is not given to anyone else until the cancel is done
//! (PgBouncer's "being canceled" state). Keys another peered process issued are forwarded to it
//! (`peering.rs`).

use foldhash::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use pgmux_protocol::build;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::cancel_rows::{CancelRow, CancelRows, Requester};
use crate::config::Config;
use crate::net::PeerAddr;
use crate::peering::{self, PeerLanes, Route};

/// A cancel request that could not be carried out: the reason PgBouncer logs when it closes
/// the cancel connection, and the database of the client it was for, when known.
#[derive(Debug, Clone)]
pub struct CancelFailed {
    /// The cancelled client's database.
    pub db: Option<String>,
    /// PgBouncer's reason (`cancel_wait_timeout`, ...).
    pub reason: &'static str,
}

impl CancelFailed {
    const fn new(db: Option<String>, reason: &'static str) -> Self {
        Self { db, reason }
    }
}

/// Where to send a cancel for a client's current query.
#[derive(Debug)]
struct Target {
    addr: Arc<PeerAddr>,
    key: (i32, i32),
    /// The cancels in flight to this server, made by the first cancel: a transaction that
    /// nobody cancels (nearly all) allocates nothing here.
    pending: Option<Arc<Pending>>,
}

/// The cancels in flight to one server a client held: the release of that server waits for
/// them and for no other (a cancel of the client's query on its next server is not this
/// server's business).
#[derive(Debug, Default)]
pub struct Pending {
    count: AtomicUsize,
    done: Notify,
}

impl Pending {
    /// Waits (at most `limit`, cancel_wait_timeout; 0: no bound) until the cancels sent to the
    /// server given back ([`CancelSlot::detach`]) are done. The caller sets the server aside
    /// meanwhile (`Lease::set_aside`), for SHOW POOLS' `sv_being_canceled`.
    pub async fn settle(&self, limit: Duration) {
        if limit.is_zero() {
            self.settled().await;
        } else {
            let _ = tokio::time::timeout(limit, self.settled()).await;
        }
    }

    /// Waits until no cancel is in flight here.
    async fn settled(&self) {
        while self.count.load(Ordering::Acquire) > 0 {
            let n = self.done.notified();
            if self.count.load(Ordering::Acquire) == 0 {
                break;
            }
            n.await;
        }
    }
}

/// The cancels of one pool under way, for SHOW POOLS.
#[derive(Debug, Default)]
pub struct CancelCounts {
    /// Cancel requests being sent to the pool's servers: each is a cancel-request client with
    /// its cancel forwarded (`cl_active_cancel_req`) on a connection that carries it
    /// (`sv_active_cancel`).
    pub forwarding: AtomicI64,
    /// Servers given back while a cancel to them is in flight, held until it is done
    /// (`sv_being_canceled`).
    pub being_canceled: AtomicI64,
}

/// Adds one to a count for as long as it lives.
struct Counting<'a>(Option<&'a AtomicI64>);

impl<'a> Counting<'a> {
    fn new(count: Option<&'a AtomicI64>) -> Self {
        if let Some(c) = count {
            c.fetch_add(1, Ordering::Relaxed);
        }
        Counting(count)
    }
}

impl Drop for Counting<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.0 {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One client's cancel state.
#[derive(Debug, Default)]
pub struct CancelSlot {
    target: Mutex<Option<Target>>,
    /// The client's pool (database, server-side user): the log line of a cancel that times
    /// out names the database, SHOW CLIENTS and SHOW SERVERS list the cancel under the pool.
    pool: std::sync::OnceLock<(String, String)>,
    /// Its pool's counts of cancels under way.
    counts: std::sync::OnceLock<Arc<CancelCounts>>,
    in_flight: AtomicUsize,
    done: Notify,
}

impl CancelSlot {
    /// Names the pool (database, server-side user) of the client this slot belongs to, and its
    /// pool's cancel counts (once, at login).
    pub fn belongs_to(&self, pool: (&str, &str), counts: &Arc<CancelCounts>) {
        let _ = self.pool.set((pool.0.to_owned(), pool.1.to_owned()));
        let _ = self.counts.set(counts.clone());
    }

    /// The client now holds the server at `addr` with backend key `key`.
    pub fn attach(&self, addr: &Arc<PeerAddr>, key: (i32, i32)) {
        *self.target.lock() = Some(Target { addr: addr.clone(), key, pending: None });
    }

    /// The client is about to give its server back: no new cancel may reach it. Returns the
    /// cancels already sent to it when one is still in flight; the caller must then wait for
    /// them ([`Pending::settle`]) before the server goes to anyone else.
    pub fn detach(&self) -> Option<Arc<Pending>> {
        let pending = self.target.lock().take()?.pending?;
        (pending.count.load(Ordering::Acquire) > 0).then_some(pending)
    }

    /// True while a cancel of this client's query is under way: PostgreSQL may still signal its
    /// backend (it signals twice, the process and then its group), and a signal that lands late
    /// cancels whatever runs there next.
    #[inline]
    pub fn under_way(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Waits (at most `limit`, cancel_wait_timeout; 0: no bound) for cancels in flight to this
    /// client's server to finish. The client still holds its server: it counts as active, as
    /// in PgBouncer, where a server is `being_canceled` only once its client let it go.
    pub async fn wait_cancels(&self, limit: Duration) {
        let wait = async {
            while self.in_flight.load(Ordering::Acquire) > 0 {
                let n = self.done.notified();
                if self.in_flight.load(Ordering::Acquire) == 0 {
                    break;
                }
                n.await;
            }
        };
        if limit.is_zero() {
            wait.await;
        } else {
            let _ = tokio::time::timeout(limit, wait).await;
        }
    }
}

/// A cancel counted in its slot's `in_flight` and its server's `pending` until dropped; then
/// their waiters are woken.
struct InFlightCancel<'a>(&'a CancelSlot, Arc<Pending>);

impl Drop for InFlightCancel<'_> {
    fn drop(&mut self) {
        self.1.count.fetch_sub(1, Ordering::AcqRel);
        self.1.done.notify_waiters();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.done.notify_waiters();
    }
}

/// All cancel keys handed out.
#[derive(Debug, Default)]
pub struct Cancels {
    map: Mutex<HashMap<(i32, i32), Arc<CancelSlot>>>,
    /// Cancel requests forwarded to peers, per peer.
    pub peers: PeerLanes,
    /// During an online restart, the previous process: keys this process does not know may be
    /// its clients'.
    previous: Mutex<Option<tokio::sync::mpsc::UnboundedSender<(i32, i32)>>>,
    /// The cancels being forwarded, for SHOW CLIENTS and SHOW SERVERS.
    pub rows: Arc<CancelRows>,
}

impl Cancels {
    /// A fresh unique key (carrying `peer_id` when peering is on) and its slot.
    pub fn register(&self, peer_id: u16) -> ((i32, i32), Arc<CancelSlot>) {
        let slot = Arc::new(CancelSlot::default());
        let mut map = self.map.lock();
        loop {
            let key = peering::stamp((rand::random::<i32>(), rand::random::<i32>()), peer_id);
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry(key) {
                e.insert(slot.clone());
                return (key, slot);
            }
        }
    }

    /// Keeps the key a client was given by the previous process (online restart); a fresh one
    /// in the unlikely case that this process already gave it out.
    pub fn adopt(&self, key: (i32, i32), peer_id: u16) -> ((i32, i32), Arc<CancelSlot>) {
        let slot = Arc::new(CancelSlot::default());
        if let std::collections::hash_map::Entry::Vacant(e) = self.map.lock().entry(key) {
            e.insert(slot.clone());
            return (key, slot);
        }
        self.register(peer_id)
    }

    /// True while `key` is registered.
    pub fn is_registered(&self, key: (i32, i32)) -> bool {
        self.map.lock().contains_key(&key)
    }

    /// Forgets a key when its client leaves.
    pub fn unregister(&self, key: (i32, i32)) {
        self.map.lock().remove(&key);
    }

    /// Handles a CancelRequest: forwards it to the server the key's client holds, if any, or
    /// to the peer that issued the key. Unknown keys are ignored silently, as PostgreSQL does.
    ///
    /// # Errors
    /// A key of another peer that cannot be forwarded, or a cancel the server did not take
    /// within cancel_wait_timeout, with PgBouncer's reason.
    /// `from` is the connection that brought the request, listed with the cancel while it is
    /// forwarded.
    pub async fn cancel(&self, key: (i32, i32), config: &Config, from: Requester) -> Result<(), CancelFailed> {
        // A key this process gave out (or adopted on online restart, possibly under another
        // peer_id) is local whatever peer it names.
        if self.map.lock().contains_key(&key) {
            return self.cancel_local(key, config.general.cancel_wait_timeout, Some(from)).await;
        }
        let key = match peering::route(key, config.general.peer_id) {
            Route::Local(key) => key,
            Route::TtlExhausted => {
                return Err(CancelFailed::new(None, "failed to forward cancel request because its TTL was exhausted"))
            }
            Route::Forward { peer_id, key } => return self.forward(peer_id, key, config, from).await,
        };
        self.cancel_local(key, config.general.cancel_wait_timeout, Some(from)).await
    }

    async fn forward(
        &self,
        peer_id: u16,
        key: (i32, i32),
        config: &Config,
        from: Requester,
    ) -> Result<(), CancelFailed> {
        const NO_PEER: CancelFailed = CancelFailed::new(None, "could not find peer to forward request to");
        let (Some(peer), Some(lane)) =
            (config.peers.get(&u32::from(peer_id)), self.peers.lane(u32::from(peer_id), config))
        else {
            return Err(NO_PEER);
        };
        tracing::debug!("forwarding cancellation request to peer {peer_id}");
        let sent = lane
            .run(async {
                let addr = Arc::new(peering::address(peer).await?);
                // As PgBouncer lists a cancel in a peer's pool: no database, no user.
                let listed = self.rows.list(Some(from), None, addr.clone());
                send_cancel(&addr, key, config.general.cancel_wait_timeout, Some(&listed)).await
            })
            .await;
        match sent {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(CancelFailed::new(None, "cancel_wait_timeout")),
            Err(e) => {
                tracing::warn!("could not forward cancel request to peer {peer_id}: {e}");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Sends unknown keys to the previous process (online restart) until `None`.
    pub fn set_previous(&self, to: Option<tokio::sync::mpsc::UnboundedSender<(i32, i32)>>) {
        *self.previous.lock() = to;
    }

    /// Cancels the query of the client with `key`, if it is this process's and holds a server;
    /// an unknown key goes to the previous process while a takeover is under way. `from`, the
    /// connection that brought the request, is listed with the cancel while it is forwarded.
    ///
    /// # Errors
    /// The server did not take the cancel within `limit` (cancel_wait_timeout).
    pub async fn cancel_local(
        &self,
        key: (i32, i32),
        limit: Duration,
        from: Option<Requester>,
    ) -> Result<(), CancelFailed> {
        let Some(slot) = self.map.lock().get(&key).cloned() else {
            match self.previous.lock().as_ref() {
                Some(previous) => {
                    tracing::debug!("cancel request with a key of the previous process");
                    let _ = previous.send(key);
                }
                None => tracing::debug!("cancel request with unknown key"),
            }
            return Ok(());
        };
        let (addr, key, pending) = {
            let mut t = slot.target.lock();
            let Some(t) = t.as_mut() else { return Ok(()) };
            slot.in_flight.fetch_add(1, Ordering::AcqRel);
            let pending = t.pending.get_or_insert_with(Arc::default).clone();
            pending.count.fetch_add(1, Ordering::AcqRel);
            (t.addr.clone(), t.key, pending)
        };
        // Counted out however this ends, a dropped future too (the cancel connection's login
        // deadline): a count left up would hold the client's every request for good.
        let in_flight = InFlightCancel(&slot, pending);
        let forwarding = Counting::new(slot.counts.get().map(|c| &c.forwarding));
        let pool = slot.pool.get().map(|(db, user)| (db.as_str(), user.as_str()));
        let listed = self.rows.list(from, pool, addr.clone());
        let sent = send_cancel(&addr, key, limit, Some(&listed)).await;
        drop(listed);
        drop(forwarding);
        drop(in_flight);
        match sent {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                Err(CancelFailed::new(slot.pool.get().map(|(db, _)| db.clone()), "cancel_wait_timeout"))
            }
            Err(e) => {
                tracing::warn!(server = %addr, "could not forward cancel request: {e}");
                Ok(())
            }
        }
    }
}

/// Sends a CancelRequest for backend `key` to the server at `addr` and waits until it is taken.
///
/// # Errors
/// Connecting or writing failed, or no answer within `limit` (cancel_wait_timeout; 0: none).
pub async fn send_to(addr: &Arc<PeerAddr>, key: (i32, i32), limit: Duration) -> std::io::Result<()> {
    send_cancel(addr, key, limit, None).await
}

/// Sends one CancelRequest, bounded by cancel_wait_timeout (0: no bound, as PgBouncer); `row`
/// learns the connection's own end once it is connected.
async fn send_cancel(
    addr: &PeerAddr,
    key: (i32, i32),
    limit: Duration,
    row: Option<&CancelRow>,
) -> std::io::Result<()> {
    let mut pkt = BytesMut::with_capacity(16);
    build::cancel_request(&mut pkt, key.0, key.1);
    let mut sink = [0u8; 64];
    let io = async {
        match addr {
            PeerAddr::Tcp(a) => {
                let mut s = tokio::net::TcpStream::connect(a).await?;
                if let Some(r) = row {
                    r.connected_from(s.local_addr().ok());
                }
                s.write_all(&pkt).await?;
                while s.read(&mut sink).await? > 0 {}
            }
            PeerAddr::Unix(p) => {
                let mut s = tokio::net::UnixStream::connect(p).await?;
                s.write_all(&pkt).await?;
                while s.read(&mut sink).await? > 0 {}
            }
        }
        Ok(())
    };
    if limit.is_zero() {
        return io.await;
    }
    tokio::time::timeout(limit, io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "cancel_wait_timeout"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cancel whose future is dropped half way (the cancel connection's login deadline) no
    /// longer counts as under way: its client's requests would otherwise wait for it for good.
    #[tokio::test]
    async fn a_cancel_dropped_half_way_is_no_longer_under_way() {
        // A server that takes the cancel's connection and never closes it.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = Arc::new(PeerAddr::Tcp(silent.local_addr().unwrap()));
        let cancels = Arc::new(Cancels::default());
        let (key, slot) = cancels.register(0);
        slot.attach(&addr, (1, 2));
        let running = tokio::spawn({
            let cancels = cancels.clone();
            async move { cancels.cancel_local(key, Duration::ZERO, None).await }
        });
        let _accepted = silent.accept().await.unwrap();
        assert!(slot.under_way());
        running.abort();
        let _ = running.await;
        assert!(!slot.under_way());
        // A wait for it ends at once, and the server is given back with nothing to wait for.
        tokio::time::timeout(Duration::from_secs(1), slot.wait_cancels(Duration::ZERO)).await.unwrap();
        assert!(slot.detach().is_none());
    }
}
