//! Integration tests: pgmux in front of a real PostgreSQL cluster that the harness starts, driven
//! by real clients (tokio-postgres, psql, pgbench) and, for hostile input, raw sockets.

mod harness;

mod admin;
mod attacks;
mod auth;
mod auth_sources;
mod cancels;
mod config_dropin;
mod console_commands;
mod console_wire;
mod cve_regressions;
mod drivers;
mod faults;
mod garbage;
mod host_lists;
mod hostile_clients;
mod housekeeping;
mod idle_clients;
mod limits;
mod logs;
mod metrics;
mod network_faults;
mod params;
mod patroni;
mod peering;
mod pgbench;
mod pool_lifecycle;
mod pool_modes;
mod prepared;
mod protocol_flows;
mod replication;
mod session_state;
mod session_state_batches;
mod sessions;
mod show_over_time;
mod shutdown;
mod soak;
mod systemd;
mod takeover;
mod timeouts;
mod tls;
mod tls_certs;
mod unnamed_cache;
mod unnamed_cache_timing;
mod workers;
