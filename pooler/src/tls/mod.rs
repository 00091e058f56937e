//! TLS on both sides with rustls (ring provider): the acceptor clients meet
//! (`client_tls_*`), the connector pgmux uses towards PostgreSQL (`server_tls_*`), and what a
//! handshake tells the login (the client certificate's name, channel-binding data).
//! Certificates are verified by OpenSSL (`verify.rs`), as in PgBouncer and libpq, and OpenSSL
//! reads PgBouncer's cipher strings. Everything here is built when the configuration loads, so
//! RELOAD picks up new certificates; what PgBouncer refuses fails the load with its reason.

mod accept;
mod connect;
mod pem;
mod settings;
mod verify;

pub use accept::{describe_session, AcceptedTls, ClientTls};
pub use connect::ServerTls;
pub use settings::SslMode;
pub use verify::CertError;

use crate::config::BadValue;

/// Why the TLS settings of one side could not be applied (PgBouncer logs `TLS setup failed:
/// REASON`): a setting it refuses, or a file it could not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A `*_tls_*` value PgBouncer refuses, or one that needs another setting
    /// (`invalid client_tls_protocols: ...`, `client_tls_sslmode requires client_tls_ca_file`).
    #[error(transparent)]
    Setting(#[from] BadValue),
    /// A certificate, key or CA file could not be loaded.
    #[error(transparent)]
    Cert(#[from] CertError),
}
