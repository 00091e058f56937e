//! The TLS settings PgBouncer takes, mapped onto what rustls can do: sslmode, protocol
//! versions, cipher suites (OpenSSL or IANA names) and key-exchange groups. Values rustls
//! cannot honour are refused with a message naming the values that are accepted.

use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider, SupportedKxGroup};
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

use super::BadSetting;

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
    pub fn parse(v: &str) -> Result<Self, BadSetting> {
        match v.trim().to_ascii_lowercase().as_str() {
            "disable" => Ok(SslMode::Disable),
            "allow" => Ok(SslMode::Allow),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            _ => Err(BadSetting(format!(
                "invalid sslmode: \"{v}\" (disable, allow, prefer, require, verify-ca, verify-full)"
            ))),
        }
    }
}

/// `*_tls_protocols` in PgBouncer's syntax: words separated by `,` or `:`, each `all`,
/// `default`, `secure`, `tlsv1` (1.0 to 1.3), `tlsv1.0` .. `tlsv1.3`, or one of those after `!`
/// to take it away (a list that starts with `!` starts from `all`). `legacy` is taken as `all`.
/// rustls speaks TLS 1.2 and 1.3: naming 1.0 or 1.1 is a warning, not an error (OpenSSL 3
/// refuses them at its default security level anyway). The result may be empty; the caller
/// then refuses handshakes on that side.
///
/// # Errors
/// A word PgBouncer does not know (PgBouncer's message: `invalid *_protocols: VALUE`).
pub fn protocol_versions(v: &str) -> Result<(Vec<&'static SupportedProtocolVersion>, Vec<String>), BadSetting> {
    const V10: u8 = 1;
    const V11: u8 = 2;
    const V12: u8 = 4;
    const V13: u8 = 8;
    const ALL: u8 = V10 | V11 | V12 | V13;
    let mut bits = 0u8;
    let mut warnings = Vec::new();
    for word in v.split([',', ':']).map(|w| w.trim_matches([' ', '\t'])).filter(|w| !w.is_empty()) {
        let (negate, name) = match word.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, word),
        };
        if negate && bits == 0 {
            bits = ALL;
        }
        let proto = match name.to_ascii_lowercase().as_str() {
            "all" | "legacy" | "tlsv1" => ALL,
            "default" | "secure" => V12 | V13,
            "tlsv1.0" => V10,
            "tlsv1.1" => V11,
            "tlsv1.2" => V12,
            "tlsv1.3" => V13,
            _ => return Err(BadSetting(format!("invalid protocol \"{name}\""))),
        };
        if !negate && matches!(proto, V10 | V11) {
            warnings.push(format!("{name} is not available: rustls speaks TLS 1.2 and 1.3 only"));
        }
        if negate {
            bits &= !proto;
        } else {
            bits |= proto;
        }
    }
    if v.trim().is_empty() {
        bits = V12 | V13;
    }
    let mut out = Vec::new();
    if bits & V12 != 0 {
        out.push(&rustls::version::TLS12);
    }
    if bits & V13 != 0 {
        out.push(&rustls::version::TLS13);
    }
    if out.is_empty() {
        warnings.push(format!(
            "\"{v}\" leaves no TLS version pgmux can speak (tlsv1.2, tlsv1.3): TLS handshakes will fail"
        ));
    }
    Ok((out, warnings))
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

/// A suite by its OpenSSL or IANA name.
fn suite_named(name: &str) -> Option<SupportedCipherSuite> {
    let iana = OPENSSL_NAMES.iter().find(|(o, _)| o.eq_ignore_ascii_case(name)).map(|(_, i)| *i).unwrap_or(name);
    ring::ALL_CIPHER_SUITES.iter().copied().find(|s| s.suite().as_str().is_some_and(|n| n.eq_ignore_ascii_case(iana)))
}

/// OpenSSL keywords PgBouncer passes over to take OpenSSL's default list; pgmux also takes the
/// old PgBouncer keywords `compat`, `legacy`, `all` (every suite, as OpenSSL's default).
const DEFAULT_KEYWORDS: &[&str] = &["", "default", "secure", "normal", "fast", "compat", "legacy", "all", "insecure"];

/// `*_tls_ciphers` (TLS 1.2 suites) in PgBouncer's syntax, which is OpenSSL's cipher-list
/// syntax (`HIGH:!aNULL`, `ECDHE+AESGCM`, suite names) plus PgBouncer's keywords. OpenSSL
/// itself expands the string; pgmux keeps the suites rustls has, in OpenSSL's order. The
/// second value is a warning when none is left (TLS 1.2 is then off on that side).
///
/// # Errors
/// A string OpenSSL refuses (PgBouncer: `invalid *_ciphers: VALUE`).
pub fn tls12_suites(v: &str) -> Result<(Vec<SupportedCipherSuite>, Option<String>), BadSetting> {
    let all12 = || ring::ALL_CIPHER_SUITES.iter().copied().filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)));
    if DEFAULT_KEYWORDS.contains(&v.trim().to_ascii_lowercase().as_str()) {
        return Ok((all12().collect(), None));
    }
    let codes = openssl_tls12_codes(v.trim())?;
    let picked: Vec<_> = codes.iter().filter_map(|c| all12().find(|s| u16::from(s.suite()) == *c)).collect();
    let warning = picked.is_empty().then(|| {
        let names: Vec<&str> = OPENSSL_NAMES.iter().filter(|(o, _)| !o.starts_with("TLS_")).map(|(o, _)| *o).collect();
        format!("\"{v}\" selects no TLS 1.2 suite rustls has ({}): TLS 1.2 is off", names.join(", "))
    });
    Ok((picked, warning))
}

/// The TLS 1.2 suites an OpenSSL cipher string selects, as their IANA codes in OpenSSL's
/// order. OpenSSL offers no safe way to list a context's ciphers, so this has OpenSSL write
/// a ClientHello into memory and reads the cipher_suites field back.
fn openssl_tls12_codes(v: &str) -> Result<Vec<u16>, BadSetting> {
    use openssl::ssl::{HandshakeError, Ssl, SslContext, SslMethod, SslVersion};
    let err = |e: &dyn std::fmt::Display| BadSetting(format!("OpenSSL: {e}"));
    let mut b = SslContext::builder(SslMethod::tls_client()).map_err(|e| err(&e))?;
    b.set_max_proto_version(Some(SslVersion::TLS1_2)).map_err(|e| err(&e))?;
    b.set_cipher_list(v).map_err(|_| BadSetting(format!("no ciphers for '{v}'")))?;
    let ctx = b.build();
    let ssl = Ssl::new(&ctx).map_err(|e| err(&e))?;
    let hello = match ssl.connect(Capture(Vec::new())) {
        Err(HandshakeError::WouldBlock(mid)) => mid.get_ref().0.clone(),
        Err(e) => return Err(err(&e)),
        Ok(_) => return Err("OpenSSL finished a handshake with nobody".into()),
    };
    client_hello_suites(&hello).ok_or_else(|| "OpenSSL wrote no ClientHello".into())
}

/// An in-memory peer that never answers: the handshake stops after the ClientHello.
#[derive(Debug)]
struct Capture(Vec<u8>);

impl std::io::Read for Capture {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// cipher_suites of a ClientHello record (RFC 5246 §7.4.1.2), without the signalling values.
fn client_hello_suites(rec: &[u8]) -> Option<Vec<u16>> {
    // record header (5), handshake header (4), client_version (2), random (32)
    if rec.first() != Some(&0x16) || rec.get(5) != Some(&0x01) {
        return None;
    }
    let sid_len = *rec.get(43)? as usize;
    let at = 44 + sid_len;
    let len = u16::from_be_bytes([*rec.get(at)?, *rec.get(at + 1)?]) as usize;
    let list = rec.get(at + 2..at + 2 + len)?;
    Some(list.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).filter(|c| *c != 0x00ff).collect())
}

/// `*_tls13_ciphers`: empty means every TLS 1.3 suite (OpenSSL's default, as PgBouncer);
/// otherwise a `:` list of TLS 1.3 suite names that OpenSSL must accept. Names OpenSSL knows
/// and rustls lacks (the CCM suites) are dropped; the warning says so when none is left.
///
/// # Errors
/// A list OpenSSL refuses, in PgBouncer's words: `failed to set the TLSv1.3 cipher suites`.
pub fn tls13_suites(v: &str) -> Result<(Vec<SupportedCipherSuite>, Option<String>), BadSetting> {
    let all13 = || ring::ALL_CIPHER_SUITES.iter().copied().filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)));
    if v.trim().is_empty() {
        return Ok((all13().collect(), None));
    }
    let mut b = openssl::ssl::SslContext::builder(openssl::ssl::SslMethod::tls())
        .map_err(|e| BadSetting(format!("OpenSSL: {e}")))?;
    b.set_ciphersuites(v.trim()).map_err(|_| BadSetting::from("failed to set the TLSv1.3 cipher suites"))?;
    let mut picked: Vec<SupportedCipherSuite> = Vec::new();
    for name in v.split(':').map(str::trim).filter(|w| !w.is_empty()) {
        if let Some(s) = suite_named(name).filter(|s| matches!(s, SupportedCipherSuite::Tls13(_))) {
            if !picked.iter().any(|p| p.suite() == s.suite()) {
                picked.push(s);
            }
        }
    }
    let warning = picked.is_empty().then(|| {
        format!(
            "\"{v}\" names no TLS 1.3 suite rustls has (TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256, \
             TLS_CHACHA20_POLY1305_SHA256): TLS 1.3 is off"
        )
    });
    Ok((picked, warning))
}

/// `client_tls_ecdhcurve`: `auto` (rustls' defaults) or a list of x25519, P-256, P-384. Two
/// values PgBouncer takes that rustls cannot honour, `none` (no ECDHE: TLS 1.3 needs it) and
/// `secp521r1` (not in ring), load with the defaults and a warning, so that such an ini still
/// starts.
pub fn kx_groups(v: &str) -> Result<(Vec<&'static dyn SupportedKxGroup>, Option<String>), BadSetting> {
    let mut out: Vec<&'static dyn SupportedKxGroup> = Vec::new();
    for word in v.split([':', ',', ' ']).map(str::trim).filter(|w| !w.is_empty()) {
        match word.to_ascii_lowercase().as_str() {
            "auto" | "secure" | "default" => return Ok((ring::DEFAULT_KX_GROUPS.to_vec(), None)),
            "none" | "secp521r1" => {
                let warning = format!("\"{word}\" is not available with rustls: using auto (x25519, P-256, P-384)");
                return Ok((ring::DEFAULT_KX_GROUPS.to_vec(), Some(warning)));
            }
            "x25519" => out.push(ring::kx_group::X25519),
            "p-256" | "secp256r1" | "prime256v1" => out.push(ring::kx_group::SECP256R1),
            "p-384" | "secp384r1" => out.push(ring::kx_group::SECP384R1),
            _ => return Err(BadSetting(format!("invalid ecdh curve \"{word}\" (auto, x25519, P-256, P-384)"))),
        }
    }
    if out.is_empty() {
        return Ok((ring::DEFAULT_KX_GROUPS.to_vec(), None));
    }
    Ok((out, None))
}

/// `client_tls_dheparams`: rustls has no finite-field DHE, so only the values that change
/// nothing are accepted.
pub fn check_dheparams(v: &str) -> Result<(), BadSetting> {
    match v.trim().to_ascii_lowercase().as_str() {
        "none" | "auto" | "legacy" | "" => Ok(()),
        _ => Err(BadSetting(format!("invalid dheparams \"{v}\" (none, auto, legacy; rustls uses ECDHE only)"))),
    }
}

/// A ring provider restricted to the chosen suites and groups.
pub fn provider(suites: Vec<SupportedCipherSuite>, groups: Vec<&'static dyn SupportedKxGroup>) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider { cipher_suites: suites, kx_groups: groups, ..ring_provider() })
}

/// rustls' ring provider with its default suites and groups. rustls 0.23.48 deprecates it
/// because ring has no post-quantum key exchange; pgmux keeps ring for a lean build with no C
/// toolchain beyond what ring needs (the groups PgBouncer's `tls_ecdhcurve` names are all here),
/// and the deprecation is silenced in this one place.
#[allow(deprecated)]
pub fn ring_provider() -> CryptoProvider {
    ring::default_provider()
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
    fn protocols_take_pgbouncer_syntax_and_warn_for_what_rustls_lacks() {
        assert_eq!(protocol_versions("secure").unwrap().0.len(), 2);
        assert_eq!(protocol_versions("tlsv1.3").unwrap().0.len(), 1);
        assert_eq!(protocol_versions("all:!tlsv1.2").unwrap().0, vec![&rustls::version::TLS13]);
        assert_eq!(protocol_versions("!tlsv1.3").unwrap().0, vec![&rustls::version::TLS12]);
        let (v, w) = protocol_versions("tlsv1.0,tlsv1.2").unwrap();
        assert_eq!((v.len(), w.len()), (1, 1));
        assert!(w[0].contains("tlsv1.0"), "{w:?}");
        let (v, w) = protocol_versions("tlsv1.0").unwrap();
        assert!(v.is_empty() && w.len() == 2, "{w:?}");
        assert!(protocol_versions("sslv3").is_err());
    }

    #[test]
    fn tls12_ciphers_are_expanded_by_openssl() {
        let (s, w) = tls12_suites("ECDHE-ECDSA-AES128-GCM-SHA256").unwrap();
        assert_eq!((s.len(), w), (1, None));
        let (s, _) = tls12_suites("HIGH:!aNULL:!CHACHA20").unwrap();
        assert!(!s.is_empty() && s.iter().all(|s| !format!("{:?}", s.suite()).contains("CHACHA")), "{s:?}");
        let (s, _) = tls12_suites("ECDHE+AESGCM").unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(tls12_suites("default").unwrap().0.len(), 6);
        let (s, w) = tls12_suites("AES128-SHA").unwrap();
        assert!(s.is_empty() && w.unwrap().contains("TLS 1.2 is off"));
        assert!(tls12_suites("NO-SUCH-CIPHER").is_err());
    }

    #[test]
    fn tls13_ciphers_are_checked_by_openssl() {
        assert_eq!(tls13_suites("").unwrap().0.len(), 3);
        let (s, w) = tls13_suites("TLS_CHACHA20_POLY1305_SHA256").unwrap();
        assert_eq!((s.len(), w), (1, None));
        assert_eq!(tls13_suites("unknown").unwrap_err().to_string(), "failed to set the TLSv1.3 cipher suites");
        let (s, w) = tls13_suites("TLS_AES_128_CCM_SHA256").unwrap();
        assert!(s.is_empty() && w.is_some());
    }

    #[test]
    fn curves() {
        assert_eq!(kx_groups("x25519:P-256").unwrap().0.len(), 2);
        assert!(kx_groups("brainpool").is_err());
        // What PgBouncer takes and rustls cannot do loads with the defaults, and says so.
        for v in ["none", "secp521r1"] {
            let (groups, warning) = kx_groups(v).unwrap();
            assert_eq!(groups.len(), ring::DEFAULT_KX_GROUPS.len());
            assert!(warning.unwrap().contains("not available"));
        }
        assert!(check_dheparams("auto").is_ok() && check_dheparams("ffdhe4096").is_err());
    }
}
