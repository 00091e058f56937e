//! pgmux: a PgBouncer-compatible PostgreSQL connection pooler. This crate owns the sockets,
//! tasks, pools and policy; the wire format lives in `pgmux-protocol`.
#![warn(missing_docs, clippy::all)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod cancel;
pub mod cancel_rows;
pub mod cli;
pub mod client;
pub mod client_counts;
pub mod clients;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod handoff;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod patroni;
pub mod peering;
pub mod pool;
pub mod reload;
pub mod replication;
pub mod server;
pub mod servers;
pub mod session_sql;
pub mod session_state;
pub mod shared;
pub mod systemd;
pub mod takeover;
pub mod tls;
pub mod tools;
pub mod workers;

/// The PgBouncer version whose behaviour and admin interface pgmux implements.
pub const PGBOUNCER_COMPAT_VERSION: &str = "1.25.2";

/// `PgBouncer 1.25.2 (pgmux 0.1.0)`: tools parse the first x.y.z to choose column sets.
pub fn version_string() -> String {
    format!("PgBouncer {PGBOUNCER_COMPAT_VERSION} (pgmux {})", env!("CARGO_PKG_VERSION"))
}

/// The TLS library, as `--version`'s `tls:` line and the `process up` log line name it.
pub const TLS_LIBRARY: &str = "rustls 0.23 (ring), certificates verified by OpenSSL";

/// What `--version` prints: PgBouncer's lines, so that tools probing for TLS support (a `tls:`
/// line) find it.
pub fn version_lines() -> String {
    format!("{}\ntls: {TLS_LIBRARY}", version_string())
}
