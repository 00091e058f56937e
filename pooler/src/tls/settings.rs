//! The TLS settings PgBouncer takes, mapped onto what rustls can do: sslmode, protocol
//! versions, cipher suites (OpenSSL or IANA names) and key-exchange groups. Values rustls
//! cannot honour are refused with a message naming the values that are accepted.

use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider, SupportedKxGroup};
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

/// How much TLS a side asks for, in libpq's order (each mode asks more than the one before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the other side wants it.
    Allow,
    /// TLS when possible.
    Prefer,
    /// TLS always, no certificate check.
    Require,
    /// TLS with a certificate signed by the CA file.
    VerifyCa,
    /// As verify-ca, and the certificate names the host.
    VerifyFull,
}

impl SslMode {
    /// Parses the pgbouncer.ini spelling.
    ///
    /// # Errors
    /// Any other value.
    pub fn parse(v: &str) -> Result<Self, String> {
        match v.trim().to_ascii_lowercase().as_str() {
            "disable" => Ok(SslMode::Disable),
            "allow" => Ok(SslMode::Allow),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            _ => Err(format!("invalid sslmode: \"{v}\" (disable, allow, prefer, require, verify-ca, verify-full)")),
        }
    }
}

/// `*_tls_protocols`: `secure`, `default`, `all`, `legacy` or a list of `tlsv1.2` / `tlsv1.3`.
/// rustls speaks only TLS 1.2 and 1.3, so `all` and `legacy` mean those two and naming
/// TLS 1.0 or 1.1 is an error.
pub fn protocol_versions(v: &str) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let mut out = Vec::new();
    for word in v.split([',', ':', ' ']).map(str::trim).filter(|w| !w.is_empty()) {
        match word.to_ascii_lowercase().as_str() {
            "secure" | "default" | "all" | "legacy" => {
                out.push(&rustls::version::TLS12);
                out.push(&rustls::version::TLS13);
            }
            "tlsv1.2" => out.push(&rustls::version::TLS12),
            "tlsv1.3" => out.push(&rustls::version::TLS13),
            "tlsv1.0" | "tlsv1.1" | "tlsv1" => {
                return Err(format!(
                    "{word} is not supported: pgmux speaks TLS 1.2 and 1.3 only (tlsv1.2, tlsv1.3, secure, all)"
                ))
            }
            _ => {
                return Err(format!("invalid TLS protocol \"{word}\" (tlsv1.2, tlsv1.3, secure, default, all, legacy)"))
            }
        }
    }
    if out.is_empty() {
        return Err("no TLS protocol version given".into());
    }
    out.dedup_by_key(|p| p.version);
    Ok(out)
}

/// OpenSSL spellings of the suites rustls offers, beside rustls' own (IANA) names.
const OPENSSL_NAMES: &[(&str, &str)] = &[
    ("TLS_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256"),
    ("TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384"),
    ("TLS_CHACHA20_POLY1305_SHA256", "TLS13_CHACHA20_POLY1305_SHA256"),
    ("ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    ("ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    ("ECDHE-RSA-AES256-GCM-SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    ("ECDHE-RSA-CHACHA20-POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
];

fn suite_named(name: &str) -> Option<SupportedCipherSuite> {
    let iana = OPENSSL_NAMES.iter().find(|(o, _)| o.eq_ignore_ascii_case(name)).map(|(_, i)| *i).unwrap_or(name);
    ring::ALL_CIPHER_SUITES.iter().copied().find(|s| s.suite().as_str().is_some_and(|n| n.eq_ignore_ascii_case(iana)))
}

/// `*_tls_ciphers` (TLS 1.2) and `*_tls13_ciphers` (TLS 1.3, empty means the first applies).
/// Keywords `default`, `secure`, `fast`, `normal`, `all`, `compat`, `legacy` and `HIGH` mean
/// every suite rustls offers (all are AEAD with forward secrecy); otherwise a `:` or `,`
/// separated list of suite names in OpenSSL or IANA spelling.
pub fn cipher_suites(tls12: &str, tls13: &str) -> Result<Vec<SupportedCipherSuite>, String> {
    let mut out: Vec<SupportedCipherSuite> = Vec::new();
    for (list, version13) in [(tls12, false), (if tls13.trim().is_empty() { tls12 } else { tls13 }, true)] {
        for word in list.split([':', ',', ' ']).map(str::trim).filter(|w| !w.is_empty()) {
            let keyword = ["default", "secure", "fast", "normal", "all", "compat", "legacy", "high"];
            let picked: Vec<SupportedCipherSuite> = if keyword.contains(&word.to_ascii_lowercase().as_str()) {
                ring::ALL_CIPHER_SUITES.to_vec()
            } else {
                let s = suite_named(word).ok_or_else(|| {
                    let names: Vec<&str> = OPENSSL_NAMES.iter().map(|(o, _)| *o).collect();
                    format!(
                        "cipher \"{word}\" is not available (keywords: default, secure, all; suites: {})",
                        names.join(", ")
                    )
                })?;
                vec![s]
            };
            for s in picked {
                let is13 = matches!(s, SupportedCipherSuite::Tls13(_));
                if is13 == version13 && !out.iter().any(|o| o.suite() == s.suite()) {
                    out.push(s);
                }
            }
        }
    }
    if out.is_empty() {
        return Err("no usable TLS cipher suite".into());
    }
    Ok(out)
}

/// `client_tls_ecdhcurve`: `auto` (rustls' defaults) or a list of x25519, P-256, P-384.
pub fn kx_groups(v: &str) -> Result<Vec<&'static dyn SupportedKxGroup>, String> {
    let mut out: Vec<&'static dyn SupportedKxGroup> = Vec::new();
    for word in v.split([':', ',', ' ']).map(str::trim).filter(|w| !w.is_empty()) {
        match word.to_ascii_lowercase().as_str() {
            "auto" | "secure" | "default" => return Ok(ring::default_provider().kx_groups),
            "x25519" => out.push(ring::kx_group::X25519),
            "p-256" | "secp256r1" | "prime256v1" => out.push(ring::kx_group::SECP256R1),
            "p-384" | "secp384r1" => out.push(ring::kx_group::SECP384R1),
            _ => return Err(format!("invalid ecdh curve \"{word}\" (auto, x25519, P-256, P-384)")),
        }
    }
    if out.is_empty() {
        return Ok(ring::default_provider().kx_groups);
    }
    Ok(out)
}

/// `client_tls_dheparams`: rustls has no finite-field DHE, so only the values that change
/// nothing are accepted.
pub fn check_dheparams(v: &str) -> Result<(), String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "none" | "auto" | "legacy" | "" => Ok(()),
        _ => Err(format!("invalid dheparams \"{v}\" (none, auto, legacy; rustls uses ECDHE only)")),
    }
}

/// A ring provider restricted to the chosen suites and groups.
pub fn provider(suites: Vec<SupportedCipherSuite>, groups: Vec<&'static dyn SupportedKxGroup>) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider { cipher_suites: suites, kx_groups: groups, ..ring::default_provider() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_ordered_and_parsed() {
        assert!(SslMode::parse("verify-full").unwrap() > SslMode::parse("Require").unwrap());
        assert!(SslMode::parse("sometimes").is_err());
    }

    #[test]
    fn protocols_name_what_rustls_speaks() {
        assert_eq!(protocol_versions("secure").unwrap().len(), 2);
        assert_eq!(protocol_versions("tlsv1.3").unwrap().len(), 1);
        let e = protocol_versions("tlsv1.0,tlsv1.2").unwrap_err();
        assert!(e.contains("TLS 1.2 and 1.3 only"), "{e}");
        assert!(protocol_versions("sslv3").is_err());
    }

    #[test]
    fn ciphers_take_openssl_and_iana_names() {
        let s = cipher_suites("ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_AES_256_GCM_SHA384").unwrap();
        assert_eq!(s.len(), 2);
        let s = cipher_suites("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "").unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(cipher_suites("default", "").unwrap().len(), ring::ALL_CIPHER_SUITES.len());
        let e = cipher_suites("RC4-SHA", "").unwrap_err();
        assert!(e.contains("RC4-SHA") && e.contains("ECDHE-RSA-AES128-GCM-SHA256"), "{e}");
    }

    #[test]
    fn curves() {
        assert_eq!(kx_groups("x25519:P-256").unwrap().len(), 2);
        assert!(kx_groups("brainpool").is_err());
        assert!(check_dheparams("auto").is_ok() && check_dheparams("ffdhe4096").is_err());
    }
}
