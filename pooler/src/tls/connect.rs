//! The server side of TLS: how pgmux opens TLS to PostgreSQL (`server_tls_*`). prefer and
//! require encrypt without checking the certificate, as libpq does; verify-ca checks the chain
//! against server_tls_ca_file; verify-full also checks that it names the host.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{pem, settings, SslMode};
use crate::config::General;

/// TLS towards servers, as configured.
#[derive(Clone)]
pub struct ServerTls {
    /// server_tls_sslmode.
    pub mode: SslMode,
    connector: TlsConnector,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("mode", &self.mode).finish_non_exhaustive()
    }
}

/// Checks the chain (verify-ca) or the chain and the name (verify-full); or only the handshake
/// signatures (prefer, require).
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }))
                if !self.check_name =>
            {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

impl ServerTls {
    /// Builds the connector; `None` when server_tls_sslmode is disable.
    ///
    /// # Errors
    /// Unreadable files and settings rustls cannot honour, naming the parameter.
    pub fn load(g: &General, resolve: impl Fn(&str) -> std::path::PathBuf) -> Result<Option<Self>, String> {
        if g.server_tls_sslmode == SslMode::Disable {
            return Ok(None);
        }
        let versions =
            settings::protocol_versions(&g.server_tls_protocols).map_err(|e| format!("server_tls_protocols: {e}"))?;
        let suites = settings::cipher_suites(&g.server_tls_ciphers, &g.server_tls13_ciphers)
            .map_err(|e| format!("server_tls_ciphers: {e}"))?;
        let provider = settings::provider(suites, rustls::crypto::ring::default_provider().kx_groups);
        let chain = match &g.server_tls_ca_file {
            Some(ca) => {
                let roots = Arc::new(pem::roots(&resolve(ca))?);
                let v = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| format!("server_tls_ca_file: {e}"))?;
                Some(v)
            }
            None if g.server_tls_sslmode >= SslMode::VerifyCa => {
                return Err("server_tls_sslmode verify-ca and verify-full need server_tls_ca_file".into())
            }
            None => None,
        };
        let verifier = Verifier {
            chain: chain.filter(|_| g.server_tls_sslmode >= SslMode::VerifyCa),
            check_name: g.server_tls_sslmode == SslMode::VerifyFull,
            provider: provider.clone(),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| format!("server_tls_protocols: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let config = match (&g.server_tls_key_file, &g.server_tls_cert_file) {
            (Some(key), Some(cert)) => builder
                .with_client_auth_cert(pem::certs(&resolve(cert))?, pem::key(&resolve(key))?)
                .map_err(|e| format!("server_tls_key_file / server_tls_cert_file: {e}"))?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("server_tls_key_file and server_tls_cert_file go together".into()),
        };
        Ok(Some(ServerTls { mode: g.server_tls_sslmode, connector: TlsConnector::from(Arc::new(config)) }))
    }

    /// Runs the handshake with a server that answered `S` to our SSLRequest.
    ///
    /// # Errors
    /// Handshake and verification failures; a host that is not a valid TLS name.
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_owned()).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("TLS server name {host}: {e}"))
        })?;
        self.connector.connect(name, tcp).await
    }
}
