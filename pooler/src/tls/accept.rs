//! The client side of TLS: the acceptor built from `client_tls_*`, the handshake (after an
//! SSLRequest or, for PostgreSQL 17 clients, directly), and what it learned.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{pem, settings, SslMode};
use crate::config::General;

/// ALPN name PostgreSQL 17 uses; required for direct TLS.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// TLS towards clients, as configured.
#[derive(Clone)]
pub struct ClientTls {
    /// client_tls_sslmode.
    pub mode: SslMode,
    /// The acceptor (its rustls config holds key, certificate and client verifier).
    pub acceptor: TlsAcceptor,
    /// tls-server-end-point data of our certificate, when channel binding is possible.
    pub end_point: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("mode", &self.mode).finish_non_exhaustive()
    }
}

/// What a finished handshake tells the login.
#[derive(Debug, Clone)]
pub struct AcceptedTls {
    /// Common name of the verified client certificate, if one was sent.
    pub peer_cn: Option<String>,
    /// Channel-binding data for SCRAM-SHA-256-PLUS.
    pub end_point: Option<Arc<[u8]>>,
    /// Protocol and suite, as SHOW CLIENTS prints them.
    pub description: String,
}

impl ClientTls {
    /// Builds the acceptor; `None` when client_tls_sslmode is disable.
    ///
    /// # Errors
    /// Missing or unreadable files, and settings rustls cannot honour (the reason names the
    /// parameter).
    pub fn load(g: &General, resolve: impl Fn(&str) -> std::path::PathBuf) -> Result<Option<Self>, String> {
        if g.client_tls_sslmode == SslMode::Disable {
            return Ok(None);
        }
        let (Some(key), Some(cert)) = (&g.client_tls_key_file, &g.client_tls_cert_file) else {
            return Err("client_tls_sslmode needs client_tls_key_file and client_tls_cert_file".into());
        };
        let versions =
            settings::protocol_versions(&g.client_tls_protocols).map_err(|e| format!("client_tls_protocols: {e}"))?;
        let suites = settings::cipher_suites(&g.client_tls_ciphers, &g.client_tls13_ciphers)
            .map_err(|e| format!("client_tls_ciphers: {e}"))?;
        let groups = settings::kx_groups(&g.client_tls_ecdhcurve).map_err(|e| format!("client_tls_ecdhcurve: {e}"))?;
        settings::check_dheparams(&g.client_tls_dheparams).map_err(|e| format!("client_tls_dheparams: {e}"))?;
        let provider = settings::provider(suites, groups);
        let chain = pem::certs(&resolve(cert))?;
        let private = pem::key(&resolve(key))?;
        let end_point = pem::end_point_hash(&chain[0]).map(Arc::from);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("client_tls_protocols: {e}"))?;
        let builder = match &g.client_tls_ca_file {
            Some(ca) => {
                let roots = Arc::new(pem::roots(&resolve(ca))?);
                let v = WebPkiClientVerifier::builder_with_provider(roots, provider);
                // verify-ca and verify-full demand a certificate; below that one is checked
                // when sent (cert auth needs it), and not asked for otherwise.
                let v = if g.client_tls_sslmode >= SslMode::VerifyCa { v } else { v.allow_unauthenticated() };
                builder.with_client_cert_verifier(v.build().map_err(|e| format!("client_tls_ca_file: {e}"))?)
            }
            None if g.client_tls_sslmode >= SslMode::VerifyCa => {
                return Err("client_tls_sslmode verify-ca and verify-full need client_tls_ca_file".into())
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, private)
            .map_err(|e| format!("client_tls_key_file / client_tls_cert_file: {e}"))?;
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(Some(ClientTls { mode: g.client_tls_sslmode, acceptor: TlsAcceptor::from(Arc::new(config)), end_point }))
    }

    /// Runs the handshake on `tcp`, starting with `already_read` (the start of a ClientHello
    /// read before it was recognised; empty after an SSLRequest). With `direct`, the client must
    /// have asked for the `postgresql` ALPN protocol, as PostgreSQL 17 requires.
    ///
    /// # Errors
    /// Handshake failures, or a direct connection without the ALPN protocol.
    pub async fn accept(
        &self,
        tcp: TcpStream,
        already_read: &[u8],
        direct: bool,
    ) -> std::io::Result<(TlsStream<TcpStream>, AcceptedTls)> {
        let stream = self
            .acceptor
            .accept_with(tcp, |conn| {
                let mut rest = already_read;
                while !rest.is_empty() {
                    if !matches!(conn.read_tls(&mut rest), Ok(n) if n > 0) {
                        break;
                    }
                }
                // A whole ClientHello gets its answer queued now; errors surface in the
                // handshake, which reports them from then on.
                let _ = conn.process_new_packets();
            })
            .await?;
        let (_, conn) = stream.get_ref();
        if direct && conn.alpn_protocol() != Some(ALPN_POSTGRESQL) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "direct TLS connection without the postgresql ALPN protocol",
            ));
        }
        let peer_cn = conn.peer_certificates().and_then(|c| c.first()).and_then(pem::common_name);
        let version = conn.protocol_version().and_then(|v| v.as_str()).unwrap_or("TLS");
        let suite = conn.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).unwrap_or("");
        // OpenSSL's names, as PgBouncer logs and shows them: TLS_AES_256_GCM_SHA384.
        let description = format!("{}/{}", version.replace("TLSv1_", "TLSv1."), suite.replace("TLS13_", "TLS_"));
        Ok((stream, AcceptedTls { peer_cn, end_point: self.end_point.clone(), description }))
    }
}
