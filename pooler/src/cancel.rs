//! Cancel keys: every client gets pgmux's own BackendKeyData; a CancelRequest carrying it is
//! forwarded to the server that client holds at that moment, and never to another client's.
//! A server with a cancel in flight is not given to anyone else until the cancel is done
//! (PgBouncer's "being canceled" state).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use pgmux_protocol::build;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::net::PeerAddr;

/// Where to send a cancel for a client's current query.
#[derive(Debug, Clone)]
struct Target {
    addr: Arc<PeerAddr>,
    key: (i32, i32),
}

/// One client's cancel state.
#[derive(Debug, Default)]
pub struct CancelSlot {
    target: Mutex<Option<Target>>,
    in_flight: AtomicUsize,
    done: Notify,
}

impl CancelSlot {
    /// The client now holds the server at `addr` with backend key `key`.
    pub fn attach(&self, addr: &Arc<PeerAddr>, key: (i32, i32)) {
        *self.target.lock() = Some(Target { addr: addr.clone(), key });
    }

    /// The client is about to give its server back: no new cancel may reach it. Returns true
    /// when a cancel already sent is still in flight; the caller must then `wait_cancels` before
    /// the server goes to anyone else.
    pub fn detach(&self) -> bool {
        *self.target.lock() = None;
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Waits (at most `limit`) for cancels in flight to this client's server to finish.
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
        let _ = tokio::time::timeout(limit, wait).await;
    }
}

/// All cancel keys handed out.
#[derive(Debug, Default)]
pub struct Cancels {
    map: Mutex<HashMap<(i32, i32), Arc<CancelSlot>>>,
}

impl Cancels {
    /// A fresh unique key and its slot.
    pub fn register(&self) -> ((i32, i32), Arc<CancelSlot>) {
        let slot = Arc::new(CancelSlot::default());
        let mut map = self.map.lock();
        loop {
            let key = (rand::random::<i32>() & i32::MAX, rand::random::<i32>());
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry(key) {
                e.insert(slot.clone());
                return (key, slot);
            }
        }
    }

    /// Forgets a key when its client leaves.
    pub fn unregister(&self, key: (i32, i32)) {
        self.map.lock().remove(&key);
    }

    /// Handles a CancelRequest: forwards it to the server the key's client holds, if any.
    /// Unknown keys are ignored silently, as PostgreSQL does.
    pub async fn cancel(&self, key: (i32, i32)) {
        let Some(slot) = self.map.lock().get(&key).cloned() else {
            tracing::debug!("cancel request with unknown key");
            return;
        };
        let target = {
            let t = slot.target.lock();
            let Some(t) = t.clone() else { return };
            slot.in_flight.fetch_add(1, Ordering::AcqRel);
            t
        };
        if let Err(e) = send_cancel(&target).await {
            tracing::warn!(server = %target.addr, "could not forward cancel request: {e}");
        }
        slot.in_flight.fetch_sub(1, Ordering::AcqRel);
        slot.done.notify_waiters();
    }
}

async fn send_cancel(t: &Target) -> std::io::Result<()> {
    let mut pkt = BytesMut::with_capacity(16);
    build::cancel_request(&mut pkt, t.key.0, t.key.1);
    let mut sink = [0u8; 64];
    let io = async {
        match t.addr.as_ref() {
            PeerAddr::Tcp(a) => {
                let mut s = tokio::net::TcpStream::connect(a).await?;
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
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "cancel timed out"))?
}
