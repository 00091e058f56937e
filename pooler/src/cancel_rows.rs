//! The cancels being forwarded, as SHOW CLIENTS and SHOW SERVERS list them: the connection that
//! brought a CancelRequest (PgBouncer's `active_cancel_req` client) and pgmux's own connection
//! carrying it to the server or to the peer that issued the key (an `active_cancel` server),
//! each the other's `link`. A cancel relayed from the next process during an online restart
//! has no connection of this process behind it: only its carrier is listed. A row lives as long as its forward: until the server closes the
//! cancel's connection, or cancel_wait_timeout passes. Nothing here is touched per transaction.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::clients::Ends;
use crate::net::PeerAddr;

/// The connection that brought a CancelRequest.
#[derive(Debug)]
pub struct Requester {
    /// Its connection id (`C-0x..`).
    pub id: u64,
    /// Its two ends and, over a unix socket, its process.
    pub ends: Ends,
    /// When it connected.
    pub connect_time: SystemTime,
    /// Its TLS session, as SHOW's `tls` column prints it (empty without TLS).
    pub tls: String,
}

/// One cancel being forwarded.
#[derive(Debug)]
pub struct CancelRow {
    /// Who asked for it (none for a cancel relayed by the next process).
    pub requester: Option<Requester>,
    /// The pool of the client it cancels (database, server-side user); none for a cancel
    /// forwarded to a peer (PgBouncer's `(nodb)` / `(nouser)`, listed after the pools).
    pub pool: Option<(String, String)>,
    /// pgmux's connection carrying it: its id (`S-0x..`).
    pub carrier_id: u64,
    /// Where that connection goes: the server of the cancelled query, or the peer.
    pub carrier_addr: Arc<PeerAddr>,
    /// When the forward began.
    pub started: SystemTime,
    /// The carrier's own end once connected (TCP).
    carrier_local: OnceLock<SocketAddr>,
}

impl CancelRow {
    /// The carrier's own end, once its socket is connected (TCP only).
    pub fn carrier_local(&self) -> Option<SocketAddr> {
        self.carrier_local.get().copied()
    }

    /// The carrier's socket is connected, from `local`.
    pub fn connected_from(&self, local: Option<SocketAddr>) {
        if let Some(l) = local {
            let _ = self.carrier_local.set(l);
        }
    }
}

/// Every cancel being forwarded, by its carrier's id.
#[derive(Debug, Default)]
pub struct CancelRows {
    map: Mutex<BTreeMap<u64, Arc<CancelRow>>>,
}

impl CancelRows {
    /// Lists a cancel from `requester` to the pool `pool` (none: a peer) at `addr` for as long
    /// as the returned guard lives.
    pub fn list(
        self: &Arc<Self>,
        requester: Option<Requester>,
        pool: Option<(&str, &str)>,
        addr: Arc<PeerAddr>,
    ) -> Listed {
        let row = Arc::new(CancelRow {
            requester,
            pool: pool.map(|(db, user)| (db.to_owned(), user.to_owned())),
            carrier_id: crate::net::next_conn_id(),
            carrier_addr: addr,
            started: SystemTime::now(),
            carrier_local: OnceLock::new(),
        });
        self.map.lock().insert(row.carrier_id, row.clone());
        Listed { rows: self.clone(), row }
    }

    /// Every cancel being forwarded, oldest first.
    pub fn all(&self) -> Vec<Arc<CancelRow>> {
        self.map.lock().values().cloned().collect()
    }
}

/// A cancel's rows while it is forwarded; dropping it takes them out.
#[derive(Debug)]
pub struct Listed {
    rows: Arc<CancelRows>,
    row: Arc<CancelRow>,
}

impl std::ops::Deref for Listed {
    type Target = CancelRow;

    fn deref(&self) -> &CancelRow {
        &self.row
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.rows.map.lock().remove(&self.row.carrier_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requester(id: u64) -> Requester {
        let peer = PeerAddr::Unix("/tmp/.s.PGSQL.6432".into());
        let ends = Ends { peer, local: None, peer_pid: 0 };
        Requester { id, ends, connect_time: SystemTime::now(), tls: String::new() }
    }

    #[test]
    fn a_cancel_is_listed_while_its_guard_lives() {
        let rows = Arc::new(CancelRows::default());
        let addr = Arc::new(PeerAddr::Tcp("127.0.0.1:5432".parse().unwrap()));
        let first = rows.list(Some(requester(1)), Some(("app", "alice")), addr.clone());
        let second = rows.list(Some(requester(2)), None, addr);
        assert_ne!(first.carrier_id, second.carrier_id, "each carrier has its own id");
        let ids = |rows: &CancelRows| -> Vec<u64> {
            rows.all().iter().filter_map(|r| Some(r.requester.as_ref()?.id)).collect()
        };
        assert_eq!(ids(&rows), [1, 2]);
        assert_eq!(rows.all()[0].pool, Some(("app".to_owned(), "alice".to_owned())));
        first.connected_from(Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!(rows.all()[0].carrier_local(), Some("127.0.0.1:40000".parse().unwrap()));
        drop(first);
        assert_eq!(ids(&rows), [2], "a finished cancel leaves the list");
    }
}
