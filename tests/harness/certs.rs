//! A test certificate authority made fresh for each test run with rcgen: a server certificate
//! for localhost / 127.0.0.1 / ::1 (used by PostgreSQL and by pgmux), a second one for reload
//! tests, and client certificates by common name. Files are PEM in a directory every OS user
//! can read; the copy PostgreSQL uses is owned by the postgres user.

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

impl Certs {
    /// The certificates of this test run.
    pub fn shared() -> &'static Certs {
        static CERTS: OnceLock<Certs> = OnceLock::new();
        CERTS.get_or_init(Certs::make)
    }

    fn make() -> Certs {
        let dir = tempfile::Builder::new().prefix("pgmux-certs").tempdir().unwrap().keep();
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
