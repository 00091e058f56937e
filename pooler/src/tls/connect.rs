//! The server side of TLS: how pgmux opens TLS to PostgreSQL (`server_tls_*`). prefer and
//! require encrypt without checking the certificate, as libpq does; verify-ca checks the chain
//! against server_tls_ca_file (or the system's trust store); verify-full also checks that it
//! names the host. The checks are OpenSSL's (`verify.rs`).

use std::sync::Arc;

use openssl::x509::X509PurposeId;
use rustls::sign::SingleCertAndKey;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::verify::{ServerVerifier, Trust};
use super::{pem, settings, SslMode, TlsError};
use super::{BadSetting, SideSettings};

/// TLS towards servers, as configured.
#[derive(Clone)]
pub struct ServerTls {
    /// server_tls_sslmode.
    pub mode: SslMode,
    /// The connector, or why the settings could not be applied.
    connector: Result<TlsConnector, Arc<str>>,
    /// What the settings and their files were (see [`ServerTls::differs`]).
    fingerprint: u64,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Builds the connector; `None` when server_tls_sslmode is disable. As in PgBouncer, which
    /// reads files only when it connects, an unreadable CA, key or certificate file and a TLS
    /// 1.3 suite list OpenSSL refuses do not fail the configuration: they are warnings, and
    /// each server connection then fails with the reason.
    ///
    /// # Errors
    /// Values PgBouncer refuses when it loads them (`invalid server_tls_protocols: ...`,
    /// `invalid server_tls_ciphers: ...`).
    pub fn load(
        s: &SideSettings,
        resolve: impl Fn(&str) -> std::path::PathBuf,
        warnings: &mut Vec<String>,
    ) -> Result<Option<Self>, TlsError> {
        if s.sslmode == SslMode::Disable {
            return Ok(None);
        }
        let (versions, w) = settings::protocol_versions(&s.protocols)
            .map_err(|e| BadSetting(format!("invalid server_tls_protocols: {} ({e})", s.protocols)))?;
        warnings.extend(w.into_iter().map(|w| format!("server_tls_protocols: {w}")));
        let (mut suites, w) = settings::tls12_suites(&s.ciphers)
            .map_err(|e| BadSetting(format!("invalid server_tls_ciphers: {} ({e})", s.ciphers)))?;
        warnings.extend(w.map(|w| format!("server_tls_ciphers: {w}")));
        let fingerprint = fingerprint(s, &resolve);
        let mode = s.sslmode;
        let unusable = |why: String, warnings: &mut Vec<String>| {
            warnings.push(format!("server TLS: {why}: server connections over TLS will fail"));
            Ok(Some(ServerTls { mode, connector: Err(Arc::from(why)), fingerprint }))
        };
        if versions.contains(&&rustls::version::TLS13) {
            match settings::tls13_suites(&s.tls13_ciphers) {
                Ok((s13, w)) => {
                    warnings.extend(w.map(|w| format!("server_tls13_ciphers: {w}")));
                    suites.extend(s13);
                }
                Err(e) => return unusable(e.to_string(), warnings),
            }
        }
        let provider = settings::provider(suites, rustls::crypto::ring::DEFAULT_KX_GROUPS.to_vec());
        let versions: Vec<_> =
            versions.into_iter().filter(|v| provider.cipher_suites.iter().any(|s| s.version() == *v)).collect();
        if versions.is_empty() {
            return unusable(
                "no TLS version and cipher suite left by server_tls_protocols and server_tls_ciphers".into(),
                warnings,
            );
        }
        // verify-ca and verify-full check the chain: against the CA file, else the system's
        // trust store, as libpq does with sslrootcert=system.
        let trust = match (&s.ca_file, mode >= SslMode::VerifyCa) {
            (_, false) => None,
            (Some(ca), true) => match Trust::from_file(&resolve(ca), X509PurposeId::SSL_SERVER) {
                Ok(t) => Some(t),
                Err(e) => return unusable(e.to_string(), warnings),
            },
            (None, true) => match Trust::system(X509PurposeId::SSL_SERVER) {
                Ok(t) => Some(t),
                Err(e) => return unusable(e.to_string(), warnings),
            },
        };
        let verifier = ServerVerifier {
            trust,
            check_name: mode == SslMode::VerifyFull,
            algs: provider.signature_verification_algorithms,
        };
        let own = match (&s.key_file, &s.cert_file) {
            (Some(key), Some(cert)) => match pem::certified_key(
                &resolve(cert),
                &resolve(key),
                s.ca_file.as_deref().map(resolve).as_deref(),
                &provider,
            ) {
                Ok(k) => Some(k),
                Err(e) => return unusable(e.to_string(), warnings),
            },
            (None, None) => None,
            (Some(_), None) => {
                return unusable("server_tls_key_file is set without server_tls_cert_file".into(), warnings)
            }
            (None, Some(_)) => {
                return unusable("server_tls_cert_file is set without server_tls_key_file".into(), warnings)
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| BadSetting(format!("server_tls_protocols: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let config = match own {
            Some(k) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(k))),
            None => builder.with_no_client_auth(),
        };
        Ok(Some(ServerTls { mode, connector: Ok(TlsConnector::from(Arc::new(config))), fingerprint }))
    }

    /// Runs the handshake with a server that answered `S` to our SSLRequest.
    ///
    /// # Errors
    /// Handshake and verification failures (a refused certificate reads `certificate verify
    /// failed: REASON`, as OpenSSL says it); settings that could not be applied; a host that is
    /// not a valid TLS name.
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let connector =
            self.connector.as_ref().map_err(|why| std::io::Error::other(format!("tls client config failed: {why}")))?;
        let name = ServerName::try_from(host.to_owned()).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("TLS server name {host}: {e}"))
        })?;
        connector.connect(name, tcp).await.map_err(|e| std::io::Error::new(e.kind(), super::verify::describe(&e)))
    }

    /// True when server connections made under `other` were made with other TLS settings, so
    /// that RELOAD and SET must close them (PgBouncer's tls_change_requires_reconnect).
    pub fn differs(this: Option<&Self>, other: Option<&Self>) -> bool {
        match (this, other) {
            (None, None) => false,
            (Some(a), Some(b)) => a.mode != b.mode || a.fingerprint != b.fingerprint,
            _ => true,
        }
    }
}

/// A digest of every server_tls_* setting and the bytes of the files they name.
fn fingerprint(s: &SideSettings, resolve: &impl Fn(&str) -> std::path::PathBuf) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&s.protocols, &s.ciphers, &s.tls13_ciphers).hash(&mut h);
    for f in [&s.ca_file, &s.key_file, &s.cert_file] {
        f.hash(&mut h);
        if let Some(f) = f {
            std::fs::read(resolve(f)).ok().hash(&mut h);
        }
    }
    h.finish()
}
