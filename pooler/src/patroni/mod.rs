//! What pgmux knows of the Patroni cluster (docs/HA.md), as types and state: the cluster as
//! Patroni's REST API describes it (`cluster`), the view every task shares (`Patroni`, kept in
//! `Shared::patroni`), the holds while the leader changes, the errors, and the small HTTP
//! client. The tasks that keep it current and act on it (the watcher, the routing of the pools,
//! SWITCHOVER, the health checks) are leader/'s; this module imports nothing above it.

pub mod cluster;
mod error;
pub mod http;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

use parking_lot::RwLock;

pub use cluster::{Cluster, Member, Role};
pub use error::PatroniError;

/// What pgmux knows of the cluster now.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The last `/cluster` read.
    pub cluster: Cluster,
    /// This node's member name, when known.
    pub this_node: Option<String>,
    /// The member the following pools point at (this node when local).
    pub routed_to: Option<String>,
    /// When `/cluster` was last read successfully.
    pub polled_at: Option<SystemTime>,
    /// The last failure to read it, cleared by the next success.
    pub last_error: Option<String>,
    /// A switchover written to the DCS (`failover` key) and not yet seen through:
    /// (leader, candidate).
    pub pending: Option<(String, String)>,
    /// When `pending` was seen.
    pub pending_at: Option<std::time::Instant>,
}

impl View {
    /// This node's member.
    pub fn me(&self) -> Option<&Member> {
        self.this_node.as_deref().and_then(|n| self.cluster.member(n))
    }

    /// True when this node's PostgreSQL is the running leader.
    pub fn is_leader(&self) -> bool {
        self.me().is_some_and(|m| m.role == Role::Leader && m.is_running())
    }
}

/// The Patroni state every task shares (`Shared::patroni`); inert while patroni_url is empty.
#[derive(Debug, Default)]
pub struct Patroni {
    pub(crate) view: RwLock<View>,
    /// A SWITCHOVER of ours is running: the watcher reads but does not route or hold.
    pub(crate) switching: AtomicBool,
    /// The following pools are held for a leader change.
    pub(crate) holding: AtomicBool,
    /// Leader changes seen (planned or not).
    pub(crate) leader_changes: AtomicU64,
    /// SWITCHOVER commands that completed.
    pub(crate) switchovers: AtomicU64,
    /// Holds that ended because their bound passed.
    pub(crate) hold_timeouts: AtomicU64,
    /// Wakes the watcher early (an etcd event, the end of a SWITCHOVER).
    pub(crate) wake: tokio::sync::Notify,
    /// Who holds the following pools.
    pub(crate) holds: parking_lot::Mutex<Holds>,
}

impl Patroni {
    /// A copy of the view.
    pub fn view(&self) -> View {
        self.view.read().clone()
    }

    /// Changes the view under its lock.
    pub(crate) fn update(&self, f: impl FnOnce(&mut View)) {
        f(&mut self.view.write());
    }

    /// True while the following pools are held.
    pub fn is_holding(&self) -> bool {
        self.holding.load(Relaxed)
    }

    /// True while a SWITCHOVER of ours runs.
    pub fn is_switching(&self) -> bool {
        self.switching.load(Relaxed)
    }

    /// (leader changes, switchovers, hold timeouts) since start.
    pub fn counts(&self) -> (u64, u64, u64) {
        (self.leader_changes.load(Relaxed), self.switchovers.load(Relaxed), self.hold_timeouts.load(Relaxed))
    }
}

/// The holds in force and the databases they hold (under one lock, so that two owners taking
/// and letting go at once leave the pools as the owners say).
#[derive(Debug, Default)]
pub struct Holds {
    pub(crate) watcher: bool,
    pub(crate) switchover: bool,
    /// The databases held, as they were when the hold began (a RELOAD may change the list).
    pub(crate) dbs: Vec<String>,
}
