//! Certificate verification as PgBouncer and libpq do it, through OpenSSL: the chain and its
//! signatures are checked by OpenSSL's X509_STORE (so X.509 v1 certificates, which `openssl ca`
//! and `openssl x509 -req` issue without an extensions section, verify), and the host name is
//! matched by OpenSSL against the subjectAltName, else the subject CN (libpq's rule). rustls
//! keeps the handshake; the verifiers below plug into it. Handshake signatures are checked with
//! the certificate's public key alone (webpki's raw-key path), because webpki refuses to parse
//! a v1 certificate. Nothing here checks a chain or a signature by hand.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::{X509CheckFlags, X509VerifyParam};
use openssl::x509::{X509PurposeId, X509StoreContext, X509};
use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, PeerMisbehaved, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};

/// OpenSSL's X509_V_ERR_IP_ADDRESS_MISMATCH.
const IP_ADDRESS_MISMATCH: i32 = 64;

/// Why a peer's certificate was refused, in OpenSSL's words (PgBouncer logs
/// `certificate verify failed`, libpq adds the reason).
#[derive(Debug)]
pub struct VerifyError(pub String);

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VerifyError {}

/// A certificate, key or CA file that could not be loaded, or a certificate store OpenSSL could
/// not build, in PgBouncer's words (`failed to load CA file "PATH": REASON`). Not a bad value:
/// the setting may be right and the file missing or unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CertError(pub String);

fn refused(reason: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(VerifyError(reason)))))
}

/// A refusal as the verifier makes it, for tests elsewhere.
#[cfg(test)]
pub(crate) fn refused_for_test(reason: &str) -> Error {
    refused(reason.to_owned())
}

/// The certificates a side trusts: a CA file's, or the system's trust store (OpenSSL's default
/// paths) when no file is set, as libpq and PgBouncer do for verify-ca / verify-full.
pub struct Trust {
    cas: Vec<X509>,
    system: bool,
    purpose: X509PurposeId,
    /// One store per host name checked (the name is a store parameter in OpenSSL); `None` is
    /// the chain-only store. Few entries: one per database host.
    stores: Mutex<HashMap<Option<String>, Arc<X509Store>>>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust").field("cas", &self.cas.len()).field("system", &self.system).finish()
    }
}

impl Trust {
    /// Trusts the certificates of a PEM CA file.
    ///
    /// # Errors
    /// The file cannot be read or holds no certificate (the reason is OpenSSL's or the OS's).
    pub fn from_file(path: &std::path::Path, purpose: X509PurposeId) -> Result<Self, CertError> {
        let pem = std::fs::read(path)
            .map_err(|e| CertError(format!("failed to load CA file \"{}\": {e}", path.display())))?;
        let cas = X509::stack_from_pem(&pem)
            .map_err(|e| CertError(format!("failed to load CA file \"{}\": {e}", path.display())))?;
        if cas.is_empty() {
            return Err(CertError(format!("failed to load CA file \"{}\": no certificate found", path.display())));
        }
        let t = Trust { cas, system: false, purpose, stores: Mutex::new(HashMap::new()) };
        t.store(None)?;
        Ok(t)
    }

    /// Trusts the system's certificate store.
    ///
    /// # Errors
    /// OpenSSL cannot set up its default paths.
    pub fn system(purpose: X509PurposeId) -> Result<Self, CertError> {
        let t = Trust { cas: Vec::new(), system: true, purpose, stores: Mutex::new(HashMap::new()) };
        t.store(None)?;
        Ok(t)
    }

    /// Subjects of the CA file's certificates, sent to clients as acceptable issuers.
    pub fn subjects(&self) -> Vec<DistinguishedName> {
        self.cas.iter().filter_map(|c| c.subject_name().to_der().ok()).map(DistinguishedName::from).collect()
    }

    fn store(&self, name: Option<&str>) -> Result<Arc<X509Store>, CertError> {
        let key = name.map(str::to_owned);
        if let Some(s) = self.stores.lock().get(&key) {
            return Ok(s.clone());
        }
        // Built outside the lock: reading the system store may touch the disk.
        let built = self.build_store(name).map_err(|e| CertError(format!("certificate store: {e}")))?;
        let built = Arc::new(built);
        self.stores.lock().insert(key, built.clone());
        Ok(built)
    }

    fn build_store(&self, name: Option<&str>) -> Result<X509Store, openssl::error::ErrorStack> {
        let mut b = X509StoreBuilder::new()?;
        if self.system {
            b.set_default_paths()?;
        }
        for c in &self.cas {
            b.add_cert(c.clone())?;
        }
        let mut p = X509VerifyParam::new()?;
        p.set_purpose(self.purpose)?;
        match name.map(|n| (n, n.parse::<IpAddr>())) {
            Some((_, Ok(ip))) => p.set_ip(ip)?,
            Some((host, Err(_))) => {
                // libpq matches `*` only as a whole left-most label.
                p.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
                p.set_host(host)?;
            }
            None => {}
        }
        b.set_param(&p)?;
        Ok(b.build())
    }

    /// Verifies `end_entity` (DER) and the `intermediates` the peer sent against this trust,
    /// and, with `name`, that the certificate names that host: the subjectAltName dNSName or
    /// iPAddress entries when it has any of the kind, else the subject CN (libpq's rule).
    ///
    /// # Errors
    /// `certificate verify failed: <OpenSSL's reason>`.
    pub fn verify(
        &self,
        end_entity: &[u8],
        intermediates: &[CertificateDer<'_>],
        name: Option<&str>,
    ) -> Result<(), VerifyError> {
        let failed = |why: &str| VerifyError(format!("certificate verify failed: {why}"));
        let cert = X509::from_der(end_entity).map_err(|e| failed(&format!("bad certificate: {e}")))?;
        let mut chain = Stack::new().map_err(|e| failed(&e.to_string()))?;
        for c in intermediates {
            let c = X509::from_der(c.as_ref()).map_err(|e| failed(&format!("bad certificate: {e}")))?;
            chain.push(c).map_err(|e| failed(&e.to_string()))?;
        }
        let run = |name: Option<&str>| -> Result<Option<(i32, &'static str)>, VerifyError> {
            let store = self.store(name).map_err(|e| failed(&e.0))?;
            let mut ctx = X509StoreContext::new().map_err(|e| failed(&e.to_string()))?;
            ctx.init(&store, &cert, &chain, |c| {
                Ok(if c.verify_cert()? { None } else { Some((c.error().as_raw(), c.error().error_string())) })
            })
            .map_err(|e| failed(&e.to_string()))
        };
        match run(name)? {
            None => Ok(()),
            // An IP address the certificate does not list: libpq then compares the CN with the
            // address as text, when the certificate lists no address at all.
            Some((IP_ADDRESS_MISMATCH, why)) => {
                let host = name.unwrap_or_default();
                if !has_ip_alt_name(&cert) && common_name(&cert).as_deref() == Some(host) {
                    match run(None)? {
                        None => Ok(()),
                        Some((_, why)) => Err(failed(why)),
                    }
                } else {
                    Err(failed(why))
                }
            }
            Some((_, why)) => Err(failed(why)),
        }
    }
}

fn has_ip_alt_name(cert: &X509) -> bool {
    cert.subject_alt_names().is_some_and(|names| names.iter().any(|n| n.ipaddress().is_some()))
}

fn common_name(cert: &X509) -> Option<String> {
    let entry = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next()?;
    // A CN with a NUL byte is refused, as libpq and PgBouncer refuse it.
    let bytes = entry.data().as_slice();
    std::str::from_utf8(bytes).ok().filter(|s| !s.contains('\0')).map(str::to_owned)
}

/// The certificate's SubjectPublicKeyInfo (DER), read without webpki.
fn spki(cert: &CertificateDer<'_>) -> Result<SubjectPublicKeyInfoDer<'static>, Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    Ok(SubjectPublicKeyInfoDer::from(parsed.tbs_certificate.subject_pki.raw.to_vec()))
}

/// A TLS 1.2 handshake signature, checked with the certificate's key by webpki (ring), trying
/// each algorithm the scheme may mean, as rustls' own `verify_tls12_signature` does.
fn verify_tls12(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, Error> {
    let candidates = algs
        .mapping
        .iter()
        .find(|(s, _)| *s == dss.scheme)
        .map(|(_, a)| *a)
        .ok_or(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)?;
    let spki = spki(cert)?;
    let key = webpki::RawPublicKeyEntity::try_from(&spki)
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    for alg in candidates {
        match key.verify_signature(*alg, message, dss.signature()) {
            Ok(()) => return Ok(HandshakeSignatureValid::assertion()),
            Err(webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)) => continue,
            #[allow(deprecated)]
            Err(webpki::Error::UnsupportedSignatureAlgorithmForPublicKey) => continue,
            Err(_) => return Err(Error::InvalidCertificate(CertificateError::BadSignature)),
        }
    }
    Err(Error::InvalidCertificate(CertificateError::BadSignature))
}

/// A TLS 1.3 handshake signature, checked with the certificate's key (rustls' raw-key path).
fn verify_tls13(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, Error> {
    rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki(cert)?, dss, algs)
}

/// Checks PostgreSQL's certificate: the chain at verify-ca, the chain and the host name at
/// verify-full, nothing below (libpq's prefer and require encrypt without checking).
#[derive(Debug)]
pub struct ServerVerifier {
    /// The trust for verify-ca and verify-full; `None` below.
    pub trust: Option<Trust>,
    /// verify-full.
    pub check_name: bool,
    /// Signature algorithms of the crypto provider.
    pub algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(trust) = &self.trust else { return Ok(ServerCertVerified::assertion()) };
        let name = match server_name {
            ServerName::DnsName(d) => d.as_ref().to_owned(),
            ServerName::IpAddress(ip) => IpAddr::from(*ip).to_string(),
            other => format!("{other:?}"),
        };
        let name = self.check_name.then_some(name.as_str());
        trust.verify(end_entity.as_ref(), intermediates, name).map_err(|e| refused(e.0))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Checks client certificates against client_tls_ca_file (or the system store): demanded at
/// verify-ca and verify-full, checked when sent below (cert auth needs one).
#[derive(Debug)]
pub struct ClientVerifier {
    /// What the chain must lead to.
    pub trust: Trust,
    /// verify-ca and verify-full: a client without a certificate is refused.
    pub mandatory: bool,
    /// Acceptable issuers, sent in the CertificateRequest.
    pub subjects: Vec<DistinguishedName>,
    /// Signature algorithms of the crypto provider.
    pub algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.trust.verify(end_entity.as_ref(), intermediates, None).map_err(|e| refused(e.0))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The reason inside a handshake error, without rustls' wrapping: `certificate verify failed:
/// unable to get local issuer certificate` rather than `invalid peer certificate: Other(..)`.
pub fn describe(e: &std::io::Error) -> String {
    if let Some(Error::InvalidCertificate(CertificateError::Other(o))) =
        e.get_ref().and_then(|inner| inner.downcast_ref::<Error>())
    {
        return o.0.to_string();
    }
    e.to_string()
}
