//! Reading PEM files (certificate chains, private keys, CA bundles) and the two facts pgmux
//! needs from a certificate: its subject's common name (cert auth) and the hash for
//! tls-server-end-point channel binding (RFC 5929).

use std::path::Path;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::verify::CertError;

/// Every certificate in a PEM file (the certificate first, then its chain).
///
/// # Errors
/// PgBouncer's words: `failed to load certificate file "PATH": REASON`.
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let fail = |why: String| CertError(format!("failed to load certificate file \"{}\": {why}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| fail(io_reason(&e)))?;
    let certs: Vec<_> =
        CertificateDer::pem_slice_iter(&bytes).collect::<Result<_, _>>().map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no certificate found".into()));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// PgBouncer's words: `failed to load private key file "PATH": REASON`.
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let fail = |why: String| CertError(format!("failed to load private key file \"{}\": {why}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| fail(io_reason(&e)))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| fail(e.to_string()))
}

/// The OS's words for an I/O error, as strerror gives them (`No such file or directory`).
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Appends to `chain` the certificates of `pool` that issued its last one, up to a self-signed
/// root, as OpenSSL builds the chain PgBouncer sends from its CA file: a certificate file that
/// holds only the leaf still gives the peer the intermediates it needs.
fn complete_chain(chain: &mut Vec<CertificateDer<'static>>, pool: &[CertificateDer<'static>]) {
    let names = |c: &CertificateDer<'_>| {
        x509_parser::parse_x509_certificate(c.as_ref())
            .ok()
            .map(|(_, x)| (x.subject().as_raw().to_vec(), x.issuer().as_raw().to_vec()))
    };
    // OpenSSL's default verify depth bounds the walk (and a loop of cross-signed CAs).
    for _ in 0..6 {
        let Some((subject, issuer)) = chain.last().and_then(names) else { return };
        if subject == issuer {
            return;
        }
        let next = pool.iter().find(|c| names(c).is_some_and(|(s, _)| s == issuer));
        match next {
            Some(c) if !chain.contains(c) => chain.push(c.clone()),
            _ => return,
        }
    }
}

/// The certificate and key of one side, ready for rustls. The pair is checked with OpenSSL
/// (as SSL_CTX_check_private_key does for PgBouncer), not with webpki, which cannot read an
/// X.509 v1 certificate.
///
/// # Errors
/// Unreadable files, a key the provider cannot use, or a key that is not the certificate's.
pub fn certified_key(
    cert: &Path,
    key_file: &Path,
    issuers: Option<&Path>,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<CertifiedKey>, CertError> {
    let mut chain = certs(cert)?;
    // Unreadable, the CA file fails its own load with its reason.
    if let Some(more) = issuers.and_then(|p| certs(p).ok()) {
        complete_chain(&mut chain, &more);
    }
    let private = key(key_file)?;
    let x509 = openssl::x509::X509::from_der(chain[0].as_ref())
        .map_err(|e| CertError(format!("failed to load certificate file \"{}\": {e}", cert.display())))?;
    let public = x509
        .public_key()
        .map_err(|e| CertError(format!("failed to load certificate file \"{}\": {e}", cert.display())))?;
    let own = openssl::pkey::PKey::private_key_from_der(private.secret_der())
        .map_err(|e| CertError(format!("failed to load private key file \"{}\": {e}", key_file.display())))?;
    if !public.public_eq(&own) {
        return Err(CertError("private/public key mismatch".into()));
    }
    let signer = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| CertError(format!("failed to load private key file \"{}\": {e}", key_file.display())))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// The subject's common name, if the certificate has one.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    Some(cn)
}

/// The names a certificate is for, as PgBouncer matches a `cert` login's user against them: its
/// subjectAltName DNS names, then its subject's common name.
pub fn subject_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    names.extend(common_name(cert));
    names
}

/// tls-server-end-point data: the certificate hashed with its signature's hash, where MD5 and
/// SHA-1 become SHA-256 (RFC 5929 §4.1). `None` when the algorithm has no single hash
/// (Ed25519, RSA-PSS), as PostgreSQL also offers no channel binding then.
pub fn end_point_hash(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let oid = parsed.signature_algorithm.algorithm.to_id_string();
    let data = cert.as_ref();
    match oid.as_str() {
        // md5, sha1, sha256 with RSA; ecdsa with sha1 / sha256.
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2" => Some(Sha256::digest(data).to_vec()),
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => Some(Sha384::digest(data).to_vec()),
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => Some(Sha512::digest(data).to_vec()),
        _ => None,
    }
}
