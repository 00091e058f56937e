//! A test certificate authority made fresh for each test run with rcgen: a server certificate
//! for localhost / 127.0.0.1 / ::1 (used by PostgreSQL and by pgmux), a second one for reload
//! tests, and client certificates by common name. Files are PEM in a directory every OS user
//! can read; the copy PostgreSQL uses is owned by the postgres user.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// The CA and the certificates it signed, as files.
#[derive(Debug)]
pub struct Certs {
    /// Directory holding the files.
    pub dir: PathBuf,
}

/// Common names of the client certificates made.
pub const CLIENT_NAMES: &[&str] = &["scram_user", "cert_user", "md5_user", "intruder"];

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    // libpq refuses client keys readable by others.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// Removes `dir` once this test process has exited (the certificates live in a static, which is
/// never dropped).
// The remover must outlive this process, so it is deliberately never waited for.
#[allow(clippy::zombie_processes)]
fn remove_after_exit(dir: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn certificate dir remover");
}

impl Certs {
    /// The certificates of this test run.
    pub fn shared() -> &'static Certs {
        static CERTS: OnceLock<Certs> = OnceLock::new();
        CERTS.get_or_init(Certs::make)
    }

    fn make() -> Certs {
        let dir = tempfile::Builder::new().prefix("pgmux-certs").tempdir().unwrap().keep();
        remove_after_exit(&dir);
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "pgmux test CA");
        ca_params.distinguished_name = dn;
        let ca = ca_params.clone().self_signed(&ca_key).unwrap();
        write(&dir, "ca.crt", &ca.pem());
        for (stem, cn) in [("server", "localhost"), ("server2", "pgmux reloaded")] {
            let key = KeyPair::generate().unwrap();
            let mut p =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()]).unwrap();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, cn);
            p.distinguished_name = dn;
            let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
            write(&dir, &format!("{stem}.crt"), &cert.pem());
            write(&dir, &format!("{stem}.key"), &key.serialize_pem());
        }
        for cn in CLIENT_NAMES {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, *cn);
            p.distinguished_name = dn;
            let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
            write(&dir, &format!("client-{cn}.crt"), &cert.pem());
            write(&dir, &format!("client-{cn}.key"), &key.serialize_pem());
        }
        // An intermediate CA, a server certificate it signed (the file holds the leaf alone) and
        // a CA bundle with the intermediate and the root: the pooler must send the intermediate.
        let ica_key = KeyPair::generate().unwrap();
        let mut ica_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ica_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ica_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "pgmux test intermediate CA");
        ica_params.distinguished_name = dn;
        let ica = ica_params.signed_by(&ica_key, &ca, &ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        p.distinguished_name = dn;
        let cert = p.signed_by(&key, &ica, &ica_key).unwrap();
        write(&dir, "chained.crt", &cert.pem());
        write(&dir, "chained.key", &key.serialize_pem());
        write(&dir, "ca-bundle.crt", &format!("{}{}", ica.pem(), ca.pem()));
        // A certificate for md5_user by its subjectAltName alone: its common name is no user's.
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["md5_user".to_owned()]).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "not a user");
        p.distinguished_name = dn;
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        write(&dir, "client-san.crt", &cert.pem());
        write(&dir, "client-san.key", &key.serialize_pem());
        // A CA that signed nothing here: verification against it must fail.
        let other_key = KeyPair::generate().unwrap();
        let other = ca_params.self_signed(&other_key).unwrap();
        write(&dir, "other-ca.crt", &other.pem());
        Certs { dir }
    }

    /// Path of a file in the directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// X.509 v1 certificates, as `openssl x509 -req` and `openssl ca` issue them without an
/// extensions section (PgBouncer's test/ssl scripts, PostgreSQL's documentation): no
/// extensions, so no subjectAltName, and the host name only in the subject CN. The CA is v1
/// too. Files, in [`Certs::dir`]: `v1-ca.crt`, `v1-other-ca.crt`, and a `.crt`/`.key` pair
/// `v1-NAME` for each of [`V1_NAMES`].
pub struct V1Certs;

/// Common names of the v1 leaf certificates: two hosts and a client.
pub const V1_NAMES: &[&str] = &["localhost", "127.0.0.1", "scram_user"];

fn v1_cert(
    cn: &str,
    key: &openssl::pkey::PKeyRef<openssl::pkey::Private>,
    issuer: Option<(&openssl::x509::X509, &openssl::pkey::PKeyRef<openssl::pkey::Private>)>,
    serial: u32,
) -> openssl::x509::X509 {
    use openssl::asn1::{Asn1Integer, Asn1Time};
    use openssl::bn::BigNum;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("O", "pgmux tests").unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(0).unwrap(); // v1: the field holds version - 1
    b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_u32(serial).unwrap()).unwrap()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(365).unwrap()).unwrap();
    let (issuer_name, signer) = match issuer {
        Some((ca, ca_key)) => (ca.subject_name().to_owned().unwrap(), ca_key),
        None => (name, key),
    };
    b.set_issuer_name(&issuer_name).unwrap();
    b.sign(signer, openssl::hash::MessageDigest::sha256()).unwrap();
    b.build()
}

fn ec_key() -> openssl::pkey::PKey<openssl::pkey::Private> {
    let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap();
    openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap()
}

impl V1Certs {
    /// Makes the v1 files (once per test run) and returns the directory's [`Certs`].
    pub fn shared() -> &'static Certs {
        static MADE: OnceLock<()> = OnceLock::new();
        let certs = Certs::shared();
        MADE.get_or_init(|| {
            let pem = |c: &openssl::x509::X509| String::from_utf8(c.to_pem().unwrap()).unwrap();
            let ca_key = ec_key();
            let ca = v1_cert("pgmux v1 test CA", &ca_key, None, 1);
            write(&certs.dir, "v1-ca.crt", &pem(&ca));
            for (i, cn) in V1_NAMES.iter().enumerate() {
                let key = ec_key();
                let cert = v1_cert(cn, &key, Some((&ca, &ca_key)), 10 + i as u32);
                assert_eq!(cert.version(), 0, "a v1 certificate");
                write(&certs.dir, &format!("v1-{cn}.crt"), &pem(&cert));
                // SEC1 ("EC PRIVATE KEY"), as `openssl ecparam -genkey` writes it.
                let sec1 = key.ec_key().unwrap().private_key_to_pem().unwrap();
                write(&certs.dir, &format!("v1-{cn}.key"), &String::from_utf8(sec1).unwrap());
            }
            let other_key = ec_key();
            write(&certs.dir, "v1-other-ca.crt", &pem(&v1_cert("pgmux v1 other CA", &other_key, None, 2)));
        });
        certs
    }
}
