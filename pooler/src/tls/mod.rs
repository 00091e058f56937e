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

pub use accept::{describe_session, handshake_failure, AcceptedTls, ClientTls};
pub use connect::ServerTls;
pub use settings::{ring_provider, SslMode};
pub use verify::CertError;

/// A `*_tls_*` value pgmux cannot take, and why (config turns it into its `BadValue`, adding the
/// file and line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadSetting(pub String);

impl From<String> for BadSetting {
    fn from(reason: String) -> Self {
        BadSetting(reason)
    }
}

impl From<&str> for BadSetting {
    fn from(reason: &str) -> Self {
        BadSetting(reason.to_owned())
    }
}

/// One side's `*_tls_*` settings as the configuration gives them: `client_tls_*` (with the
/// curve and DH settings) or `server_tls_*`. tls/ builds from these, not from the whole
/// configuration, so that it stays below config/.
#[derive(Debug, Clone)]
pub struct SideSettings {
    /// `*_tls_sslmode`.
    pub sslmode: SslMode,
    /// `*_tls_key_file`.
    pub key_file: Option<String>,
    /// `*_tls_cert_file`.
    pub cert_file: Option<String>,
    /// `*_tls_ca_file`.
    pub ca_file: Option<String>,
    /// `*_tls_protocols`.
    pub protocols: String,
    /// `*_tls_ciphers`.
    pub ciphers: String,
    /// `*_tls13_ciphers`.
    pub tls13_ciphers: String,
    /// `client_tls_ecdhcurve` (empty for the server side).
    pub ecdhcurve: String,
    /// `client_tls_dheparams` (empty for the server side).
    pub dheparams: String,
}

/// Why the TLS settings of one side could not be applied (PgBouncer logs `TLS setup failed:
/// REASON`): a setting it refuses, or a file it could not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A `*_tls_*` value PgBouncer refuses, or one that needs another setting
    /// (`invalid client_tls_protocols: ...`, `client_tls_sslmode requires client_tls_ca_file`).
    #[error(transparent)]
    Setting(#[from] BadSetting),
    /// A certificate, key or CA file could not be loaded.
    #[error(transparent)]
    Cert(#[from] CertError),
}
