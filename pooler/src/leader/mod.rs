//! Following the Patroni leader (docs/HA.md): the watcher (`watch`, with `etcd` for change
//! events) keeps `Shared::patroni` current from this node's Patroni REST API; `route` points the
//! following pools at the leader and holds them while it changes; SWITCHOVER (`switchover`)
//! runs a planned switchover itself; `health` and `agent` answer HAProxy; `report` is SHOW
//! PATRONI and the metrics. The state and types they share are patroni/'s.

pub mod agent;
pub mod etcd;
pub mod health;
mod report;
mod route;
pub mod switchover;
pub mod watch;

pub use report::{metrics, rows as show_rows, COLUMNS as SHOW_COLUMNS};
