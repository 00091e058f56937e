//! Sockets: the stream type shared by clients and servers, and the listeners.

pub mod activation;
pub mod client_io;
pub mod listener;
pub mod quiet;
pub mod stream;
pub mod tcp_options;

pub use stream::{PeerAddr, Stream};

use std::sync::atomic::{AtomicU64, Ordering};

/// One sequence for every connection, client or server, as PgBouncer numbers its sockets: the
/// `id` column of SHOW CLIENTS / SERVERS / SOCKETS and the hex number in log lines.
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// The next connection id.
pub fn next_conn_id() -> u64 {
    NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed)
}
