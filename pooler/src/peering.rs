//! Peering: poolers that share one port (so_reuseport, or a TCP load balancer in front) forward
//! cancel requests to the process that issued the key. The key carries the issuer's `peer_id`
//! and a hop count, laid out as PgBouncer 1.21+ lays it out so that pgmux and PgBouncer
//! processes can be peered with each other:
//!
//! - bytes 1 and 2 of the 8 key bytes (pid then secret, big-endian on the wire): `peer_id`,
//!   low byte first;
//! - the two low bits of byte 7: hops left (3 when issued), one spent per forward;
//! - the sign bit of byte 0 cleared, so that the "pid" half is positive (pg_basebackup cares).
//!
//! This module owns the key layout, the routing decision and the in-flight limit per peer
//! (`pool_size` in `[peers]`, SHOW PEER_POOLS); `cancel.rs` owns local keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::config::{Config, PeerConfig};
use crate::net::PeerAddr;

/// Hop bits in the last key byte.
const TTL_MASK: u8 = 0x03;

/// A cancel key as the 8 bytes a client sees.
fn to_bytes(key: (i32, i32)) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&key.0.to_be_bytes());
    b[4..].copy_from_slice(&key.1.to_be_bytes());
    b
}

fn from_bytes(b: [u8; 8]) -> (i32, i32) {
    (i32::from_be_bytes([b[0], b[1], b[2], b[3]]), i32::from_be_bytes([b[4], b[5], b[6], b[7]]))
}

/// Writes `peer_id` and a full hop count into a random key (unchanged when peering is off,
/// but for the sign bit).
pub fn stamp(key: (i32, i32), peer_id: u16) -> (i32, i32) {
    let mut b = to_bytes(key);
    if peer_id > 0 {
        let [lo, hi] = peer_id.to_le_bytes();
        b[1] = lo;
        b[2] = hi;
        b[7] |= TTL_MASK;
    }
    b[0] &= 0x7F;
    from_bytes(b)
}

/// Where a CancelRequest goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// One of ours: look it up with this key (hop bits restored as issued).
    Local((i32, i32)),
    /// Another peer's: forward with one hop spent.
    Forward {
        /// The issuer's id.
        peer_id: u16,
        /// The key to send on.
        key: (i32, i32),
    },
    /// Another peer's, but it has been forwarded too often already.
    TtlExhausted,
}

/// Decides where a cancel with `key` goes, for a process with `own` as its peer_id.
pub fn route(key: (i32, i32), own: u16) -> Route {
    if own == 0 {
        return Route::Local(key);
    }
    let mut b = to_bytes(key);
    let issuer = u16::from_le_bytes([b[1], b[2]]);
    if issuer == own {
        b[7] |= TTL_MASK;
        return Route::Local(from_bytes(b));
    }
    if b[7] & TTL_MASK == 0 {
        return Route::TtlExhausted;
    }
    b[7] -= 1;
    Route::Forward { peer_id: issuer, key: from_bytes(b) }
}

/// Where a peer listens: a unix socket when its host is a directory, else TCP.
pub async fn address(peer: &PeerConfig) -> std::io::Result<PeerAddr> {
    if peer.host.starts_with('/') {
        return Ok(PeerAddr::Unix(format!("{}/.s.PGSQL.{}", peer.host.trim_end_matches('/'), peer.port)));
    }
    tokio::net::lookup_host((peer.host.as_str(), peer.port))
        .await?
        .next()
        .map(PeerAddr::Tcp)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("no address for {}", peer.host)))
}

/// Cancel requests to one peer: at most `pool_size` in flight, the rest wait.
#[derive(Debug)]
pub struct PeerLane {
    size: usize,
    permits: Semaphore,
    /// Forwarded and not yet answered (cl_active_cancel_req, sv_active_cancel).
    pub active: AtomicUsize,
    /// Waiting for a free slot (cl_waiting_cancel_req).
    pub waiting: AtomicUsize,
}

impl PeerLane {
    fn new(size: usize) -> Self {
        PeerLane { size, permits: Semaphore::new(size), active: AtomicUsize::new(0), waiting: AtomicUsize::new(0) }
    }

    /// Runs `send` once a slot is free, counting it as waiting, then active.
    pub async fn run<F: std::future::Future<Output = T>, T>(&self, send: F) -> T {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = self.permits.acquire().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        let out = send.await;
        self.active.fetch_sub(1, Ordering::Relaxed);
        drop(permit);
        out
    }
}

/// The lanes of the configured peers, made on first use and remade when a RELOAD changes a
/// peer's pool_size (forwards already under way finish in the old lane).
#[derive(Debug, Default)]
pub struct PeerLanes {
    lanes: Mutex<HashMap<u32, Arc<PeerLane>>>,
}

impl PeerLanes {
    /// The lane for peer `id`, sized from `config`.
    pub fn lane(&self, id: u32, config: &Config) -> Option<Arc<PeerLane>> {
        let peer = config.peers.get(&id)?;
        let size = peer.pool_size.unwrap_or(config.general.default_pool_size).max(1) as usize;
        let mut lanes = self.lanes.lock();
        let lane = lanes.entry(id).or_insert_with(|| Arc::new(PeerLane::new(size)));
        if lane.size != size {
            *lane = Arc::new(PeerLane::new(size));
        }
        Some(lane.clone())
    }

    /// (active, waiting) cancel requests to peer `id`.
    pub fn counts(&self, id: u32) -> (usize, usize) {
        self.lanes
            .lock()
            .get(&id)
            .map_or((0, 0), |l| (l.active.load(Ordering::Relaxed), l.waiting.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_key_routes_home_and_elsewhere_with_hops_spent() {
        let raw = (-0x1234_5678, 0x0102_0300);
        let key = stamp(raw, 0x0203);
        assert!(key.0 > 0, "pid half positive");
        let b = to_bytes(key);
        assert_eq!((b[1], b[2], b[7] & TTL_MASK), (0x03, 0x02, 3));
        assert_eq!(route(key, 0x0203), Route::Local(key));
        // Three forwards, then refused.
        let mut k = key;
        for left in (0..3).rev() {
            match route(k, 7) {
                Route::Forward { peer_id, key } => {
                    assert_eq!(peer_id, 0x0203);
                    assert_eq!(to_bytes(key)[7] & TTL_MASK, left);
                    // At home, whatever hops were spent, the key is the one issued.
                    assert_eq!(route(key, 0x0203), Route::Local(stamp(raw, 0x0203)));
                    k = key;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(route(k, 7), Route::TtlExhausted);
    }

    #[test]
    fn without_peering_keys_are_random_but_positive() {
        let key = stamp((-5, 77), 0);
        assert_eq!(key, (-5 & i32::MAX, 77));
        assert_eq!(route(key, 0), Route::Local(key));
    }

    #[test]
    fn peer_id_matches_pgbouncer_layout() {
        // PgBouncer writes key[1] = id & 0xff, key[2] = id >> 8.
        let key = stamp((0, 0), 258);
        assert_eq!(to_bytes(key), [0, 2, 1, 0, 0, 0, 0, 3]);
    }
}
