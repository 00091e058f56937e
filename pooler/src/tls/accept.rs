//! The client side of TLS: the acceptor built from `client_tls_*`, the handshake (after an
//! SSLRequest or, for PostgreSQL 17 clients, directly), and what it learned.

use std::sync::Arc;

use openssl::x509::X509PurposeId;
use rustls::sign::SingleCertAndKey;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::verify::{ClientVerifier, Trust};
use super::{pem, settings, SslMode, TlsError};
use super::{BadSetting, SideSettings};

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
    /// Why every handshake is refused (the settings leave no protocol rustls speaks).
    refuse: Option<Arc<str>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("mode", &self.mode).finish_non_exhaustive()
    }
}

/// What a finished handshake tells the login.
#[derive(Debug, Clone)]
pub struct AcceptedTls {
    /// The names the verified client certificate is for (subjectAltName DNS names, then the
    /// common name); empty when none was sent.
    pub peer_names: Vec<String>,
    /// Channel-binding data for SCRAM-SHA-256-PLUS.
    pub end_point: Option<Arc<[u8]>>,
    /// Protocol and suite, as SHOW CLIENTS prints them.
    pub description: String,
}

impl ClientTls {
    /// Builds the acceptor; `None` when client_tls_sslmode is disable. What PgBouncer accepts
    /// with a warning, or what rustls cannot do, goes to `warnings`.
    ///
    /// # Errors
    /// What PgBouncer refuses (its words: `invalid client_tls_protocols: ...`, `failed to set
    /// the TLSv1.3 cipher suites`, `failed to load certificate file "..."`): the caller logs
    /// `TLS setup failed: REASON` and keeps the TLS in force.
    pub fn load(
        s: &SideSettings,
        resolve: impl Fn(&str) -> std::path::PathBuf,
        warnings: &mut Vec<String>,
    ) -> Result<Option<Self>, TlsError> {
        if s.sslmode == SslMode::Disable {
            return Ok(None);
        }
        let (Some(key), Some(cert)) = (&s.key_file, &s.cert_file) else {
            return Err(TlsError::Setting(
                "To allow TLS connections from clients, client_tls_key_file and client_tls_cert_file must be set."
                    .into(),
            ));
        };
        if s.sslmode == SslMode::VerifyFull && s.ca_file.is_none() {
            return Err(TlsError::Setting("client_tls_sslmode requires client_tls_ca_file".into()));
        }
        let (versions, w) = settings::protocol_versions(&s.protocols)
            .map_err(|e| BadSetting(format!("invalid client_tls_protocols: {} ({e})", s.protocols)))?;
        warnings.extend(w.into_iter().map(|w| format!("client_tls_protocols: {w}")));
        let (mut suites, w) = settings::tls12_suites(&s.ciphers)
            .map_err(|e| BadSetting(format!("invalid client_tls_ciphers: {} ({e})", s.ciphers)))?;
        warnings.extend(w.map(|w| format!("client_tls_ciphers: {w}")));
        // PgBouncer sets the TLS 1.3 suites only when TLS 1.3 is on.
        if versions.contains(&&rustls::version::TLS13) {
            let (s13, w) = settings::tls13_suites(&s.tls13_ciphers)?;
            warnings.extend(w.map(|w| format!("client_tls13_ciphers: {w}")));
            suites.extend(s13);
        }
        let (groups, w) =
            settings::kx_groups(&s.ecdhcurve).map_err(|e| BadSetting(format!("invalid client_tls_ecdhecurve: {e}")))?;
        warnings.extend(w.map(|w| format!("client_tls_ecdhcurve: {w}")));
        settings::check_dheparams(&s.dheparams)
            .map_err(|e| BadSetting(format!("invalid client_tls_dheparams: {e}")))?;
        let provider = settings::provider(suites, groups);
        let own = pem::certified_key(
            &resolve(cert),
            &resolve(key),
            s.ca_file.as_deref().map(&resolve).as_deref(),
            &provider,
        )?;
        let end_point = pem::end_point_hash(&own.cert[0]).map(Arc::from);
        let verifier = match &s.ca_file {
            Some(ca) => Some(Trust::from_file(&resolve(ca), X509PurposeId::SSL_CLIENT)?),
            // verify-ca without a CA file: the system's trust store.
            None if s.sslmode >= SslMode::VerifyCa => Some(Trust::system(X509PurposeId::SSL_CLIENT)?),
            None => None,
        }
        .map(|trust| {
            Arc::new(ClientVerifier {
                subjects: trust.subjects(),
                trust,
                // verify-ca and verify-full demand a certificate; below that one is checked
                // when sent (cert auth needs it).
                mandatory: s.sslmode >= SslMode::VerifyCa,
                algs: provider.signature_verification_algorithms,
            })
        });
        let usable: Vec<_> =
            versions.iter().copied().filter(|v| provider.cipher_suites.iter().any(|s| s.version() == *v)).collect();
        let refuse = usable.is_empty().then(|| {
            let why: Arc<str> =
                Arc::from("no TLS version and cipher suite left by client_tls_protocols and client_tls_ciphers");
            warnings.push(format!("client_tls_sslmode: {why}: TLS handshakes with clients will fail"));
            why
        });
        let versions = if usable.is_empty() { vec![&rustls::version::TLS13] } else { usable };
        let provider = if refuse.is_some() {
            settings::provider(rustls::crypto::ring::ALL_CIPHER_SUITES.to_vec(), provider.kx_groups.clone())
        } else {
            provider
        };
        let builder = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| BadSetting(format!("client_tls_protocols: {e}")))?;
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(own)));
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(Some(ClientTls { mode: s.sslmode, acceptor: TlsAcceptor::from(Arc::new(config)), end_point, refuse }))
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
        if let Some(why) = &self.refuse {
            return Err(std::io::Error::other(why.to_string()));
        }
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
        let peer_names = conn.peer_certificates().and_then(|c| c.first()).map(pem::subject_names).unwrap_or_default();
        let description = describe_accepted(conn);
        Ok((stream, AcceptedTls { peer_names, end_point: self.end_point.clone(), description }))
    }
}

/// A client's session as PgBouncer shows it: [`describe_session`], and for TLS 1.2 (whose
/// suites name ECDHE) the curve, in OpenSSL's short name: `.../ECDH=X25519`.
fn describe_accepted(conn: &rustls::ServerConnection) -> String {
    let mut text = describe_session(conn);
    if conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_2) {
        let curve = conn.negotiated_key_exchange_group().map(|g| match g.name() {
            rustls::NamedGroup::X25519 => "X25519",
            rustls::NamedGroup::secp256r1 => "prime256v1",
            rustls::NamedGroup::secp384r1 => "secp384r1",
            rustls::NamedGroup::secp521r1 => "secp521r1",
            _ => "?",
        });
        if let Some(curve) = curve {
            text.push_str("/ECDH=");
            text.push_str(curve);
        }
    }
    text
}

/// Protocol and suite in OpenSSL's names, as PgBouncer logs and shows them:
/// `TLSv1.3/TLS_AES_256_GCM_SHA384`, `TLSv1.2/ECDHE-RSA-AES256-GCM-SHA384`.
pub fn describe_session<D>(conn: &rustls::ConnectionCommon<D>) -> String {
    let version = conn.protocol_version().and_then(|v| v.as_str()).unwrap_or("TLS").replace("TLSv1_", "TLSv1.");
    let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
    let suite = suite.map(|s| {
        let iana = s.as_str().unwrap_or("");
        let openssl = openssl::ssl::cipher_name(&iana.replace("TLS13_", "TLS_"));
        if openssl == "(NONE)" {
            iana.replace("TLS13_", "TLS_")
        } else {
            openssl.to_owned()
        }
    });
    format!("{version}/{}", suite.unwrap_or_default())
}

/// Why a client's TLS handshake failed, in plain words for the log (OpenSSL's, as PgBouncer's
/// log has them, where there is one): rustls prints some of its reasons as Rust values.
pub fn handshake_failure(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error, PeerIncompatible};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
        return e.to_string();
    };
    match tls {
        Error::InvalidCertificate(CertificateError::Other(reason)) => reason.to_string(),
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => "certificate verify failed".to_owned(),
        Error::InvalidCertificate(other) => format!("certificate verify failed: {other}"),
        Error::NoCertificatesPresented => "peer did not return a certificate".to_owned(),
        Error::PeerIncompatible(
            PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::SupportedVersionsExtensionRequired,
        ) => "unsupported protocol".to_owned(),
        Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon) => "no shared cipher".to_owned(),
        Error::PeerIncompatible(
            PeerIncompatible::NoKxGroupsInCommon | PeerIncompatible::NamedGroupsExtensionRequired,
        ) => "no suitable key share".to_owned(),
        Error::PeerIncompatible(PeerIncompatible::NoSignatureSchemesInCommon) => {
            "no suitable signature algorithm".to_owned()
        }
        Error::InvalidMessage(_) => "wrong version number".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod handshake_failure_tests {
    use super::handshake_failure;

    fn io(e: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn reasons_are_words_not_rust_values() {
        let refused =
            crate::tls::verify::refused_for_test("certificate verify failed: unable to get local issuer certificate");
        assert_eq!(
            handshake_failure(&io(refused)),
            "certificate verify failed: unable to get local issuer certificate"
        );
        assert_eq!(handshake_failure(&io(rustls::Error::NoCertificatesPresented)), "peer did not return a certificate");
        let old = rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOfferedOrEnabled);
        assert_eq!(handshake_failure(&io(old)), "unsupported protocol");
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert_eq!(handshake_failure(&eof), "tls handshake eof");
    }
}
