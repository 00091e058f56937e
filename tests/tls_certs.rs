//! TLS the way PgBouncer's users configure it: X.509 v1 certificates with the host name only
//! in the CN (as `openssl x509 -req` and PgBouncer's test scripts make them) on both sides,
//! the system trust store, PgBouncer's protocol and cipher syntax, TLS errors that keep the old
//! TLS on RELOAD and SET, server connections reopened when the server TLS settings change,
//! and clients that wait through failed handshakes until the settings are fixed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::certs::V1Certs;
use crate::harness::pgmux::Setup;
use crate::harness::{db_error, Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

fn v1_client_tls(mode: &str) -> String {
    let c = V1Certs::shared();
    format!(
        "client_tls_sslmode = {mode}\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\nclient_tls_ca_file = {}\n",
        c.path("v1-localhost.crt"),
        c.path("v1-localhost.key"),
        c.path("v1-ca.crt")
    )
}

fn psql(port: u16, conninfo: &str) -> std::process::Output {
    std::process::Command::new("psql")
        .args(["-X", "-At", "-c", "SELECT current_user", "-d"])
        .arg(format!("host=localhost hostaddr=127.0.0.1 port={port} dbname=app {conninfo}"))
        .env("PGPASSWORD", SCRAM_PASS)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap()
}

#[test]
fn psql_verify_full_accepts_a_v1_certificate_named_by_its_cn() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, &v1_client_tls("require"));
    let ca = V1Certs::shared().path("v1-ca.crt");
    let out = psql(mux.port, &format!("user={SCRAM_USER} sslmode=verify-full sslrootcert={ca}"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), SCRAM_USER);
    // The other v1 CA did not sign it.
    let other = V1Certs::shared().path("v1-other-ca.crt");
    let out = psql(mux.port, &format!("user={SCRAM_USER} sslmode=verify-full sslrootcert={other}"));
    assert!(!out.status.success());
}

#[test]
fn cert_auth_with_a_v1_client_certificate() {
    let pg = Cluster::shared();
    let c = V1Certs::shared();
    let ini = format!("auth_type = cert\n{}", v1_client_tls("verify-full"));
    let userlist = format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n");
    let mux = Pgmux::start_with(pg, Setup { pgbouncer: &ini, userlist: Some(&userlist), ..Setup::default() });
    let out = psql(
        mux.port,
        &format!(
            "user={SCRAM_USER} sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
            c.path("v1-ca.crt"),
            c.path("v1-scram_user.crt"),
            c.path("v1-scram_user.key")
        ),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), SCRAM_USER);
    // verify-full demands a certificate that chains to the CA file.
    let out = psql(mux.port, &format!("user={SCRAM_USER} sslmode=require"));
    assert!(!out.status.success());
}

/// A fake PostgreSQL on 127.0.0.1 that answers SSLRequest with `S`, does the TLS handshake
/// with the v1 certificate `v1-NAME` and refuses the login that follows with FATAL `fake
/// server: TLS ok`, so that a client seeing that text knows the handshake passed pgmux's
/// checks. Returns its port.
async fn fake_tls_server(name: &str) -> u16 {
    fake_tls_server_counting(name).await.0
}

/// [`fake_tls_server`], and the number of connections it has accepted so far.
async fn fake_tls_server_counting(name: &str) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let c = V1Certs::shared();
    let chain: Vec<_> =
        CertificateDer::pem_file_iter(c.path(&format!("v1-{name}.crt"))).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(c.path(&format!("v1-{name}.key"))).unwrap();
    let provider = Arc::new(pgmux::tls::ring_provider());
    // CertifiedKey::new, not with_single_cert: the latter parses the certificate with webpki,
    // which refuses v1.
    let signer = provider.key_provider.load_private_key(key).unwrap();
    let own = SingleCertAndKey::from(CertifiedKey::new(chain, signer));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(own));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut req = [0u8; 8];
                if tcp.read_exact(&mut req).await.is_err() || tcp.write_all(b"S").await.is_err() {
                    return;
                }
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut startup = [0u8; 512];
                let _ = tls.read(&mut startup).await;
                let mut body = Vec::new();
                for (t, v) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', "28000"), (b'M', "fake server: TLS ok")] {
                    body.push(t);
                    body.extend_from_slice(v.as_bytes());
                    body.push(0);
                }
                body.push(0);
                let mut msg = vec![b'E'];
                msg.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
                msg.extend_from_slice(&body);
                let _ = tls.write_all(&msg).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, accepted)
}

/// pgmux with `server` TLS lines in front of the fake server at `host`.
fn mux_for_fake(port: u16, host: &str, server: &str) -> Pgmux {
    let userlist = format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n");
    let ini = format!("query_wait_timeout = 2\n{server}");
    let databases = format!("fake = host={host} port={port} dbname=app");
    Pgmux::start_with(Cluster::shared(), Setup { pgbouncer: &ini, databases: &databases, userlist: Some(&userlist) })
}

/// What a client logging in through pgmux to the fake server gets.
async fn login_error(mux: &Pgmux) -> String {
    match mux.connect(SCRAM_USER, SCRAM_PASS, "fake").await {
        Ok(c) => db_error(&c.simple_query("SELECT 1").await.map(|_| ()).unwrap_err()).1,
        Err(e) => db_error(&e).1,
    }
}

const HANDSHAKE_OK: &str = "fake server: TLS ok";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_verify_full_accepts_v1_certificates_by_cn_as_libpq() {
    let ca = V1Certs::shared().path("v1-ca.crt");
    let full = format!("server_tls_sslmode = verify-full\nserver_tls_ca_file = {ca}\n");
    // A host name in the CN of a v1 certificate (no subjectAltName).
    let mux = mux_for_fake(fake_tls_server("localhost").await, "localhost", &full);
    assert!(login_error(&mux).await.contains(HANDSHAKE_OK));
    // An address in the CN: libpq compares it as text when the certificate lists no address.
    let mux = mux_for_fake(fake_tls_server("127.0.0.1").await, "127.0.0.1", &full);
    assert!(login_error(&mux).await.contains(HANDSHAKE_OK));
    // The name does not match: the client waits, as with PgBouncer, until query_wait_timeout.
    let mux = mux_for_fake(fake_tls_server("localhost").await, "127.0.0.1", &full);
    assert_eq!(login_error(&mux).await, "query_wait_timeout");
    // verify-ca does not look at the name.
    let ca_only = format!("server_tls_sslmode = verify-ca\nserver_tls_ca_file = {ca}\n");
    let mux = mux_for_fake(fake_tls_server("localhost").await, "127.0.0.1", &ca_only);
    assert!(login_error(&mux).await.contains(HANDSHAKE_OK));
    // require checks nothing.
    let mux = mux_for_fake(fake_tls_server("localhost").await, "127.0.0.1", "server_tls_sslmode = require\n");
    assert!(login_error(&mux).await.contains(HANDSHAKE_OK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_verify_full_without_a_ca_file_uses_the_system_store() {
    // The system store does not know the test CA: refused, but the settings load.
    let port = fake_tls_server("localhost").await;
    let mux = mux_for_fake(port, "localhost", "server_tls_sslmode = verify-full\n");
    assert_eq!(login_error(&mux).await, "query_wait_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waits_through_failed_handshakes_until_set_fixes_the_ca() {
    let c = V1Certs::shared();
    let (port, accepted) = fake_tls_server_counting("localhost").await;
    // The client waits through retries one server_login_retry (1 s) apart, bounded by
    // query_wait_timeout: 5 s leaves room for a slow machine.
    let wrong = format!(
        "server_tls_sslmode = verify-full\nserver_tls_ca_file = {}\nquery_wait_timeout = 5\n",
        c.path("v1-other-ca.crt")
    );
    let mux = mux_for_fake(port, "localhost", &wrong);
    let shared = mux.shared.clone();
    let ca = c.path("v1-ca.crt");
    // The CA is fixed once the first handshake has failed (the fake server accepted it).
    let fix = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while accepted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "pgmux never connected to the server");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let at = Instant::now();
        (pgmux::reload::set(&shared, "server_tls_ca_file", &ca).unwrap(), at)
    });
    let msg = login_error(&mux).await;
    let answered = Instant::now();
    let (outcome, fixed_at) = fix.await.unwrap();
    assert_eq!(outcome, pgmux::reload::SetOutcome::Applied);
    // Not the cached TLS error at once: the retry after server_login_retry used the new CA.
    assert!(msg.contains(HANDSHAKE_OK), "{msg}");
    assert!(answered > fixed_at, "answered before the CA was fixed");
}

async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_are_reopened_when_server_tls_settings_change() {
    let pg = Cluster::shared();
    let userlist = format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n");
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: "server_tls_sslmode = prefer\ndefault_pool_size = 1\n",
            databases: "tlsdb = host=127.0.0.1 port=$PORT dbname=app",
            userlist: Some(&userlist),
        },
    );
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "tlsdb").await.unwrap();
    let first = backend_pid(&c).await;
    // RELOAD that changes nothing keeps the server.
    pgmux::reload::reload(&mux.shared).unwrap();
    assert_eq!(backend_pid(&c).await, first);
    // A protocol rustls cannot speak is a warning; the server connection is replaced.
    pgmux::reload::set(&mux.shared, "server_tls_protocols", "tlsv1.0,tlsv1.2").unwrap();
    assert!(mux.shared.config().warnings.iter().any(|w| w.contains("tlsv1.0")));
    let second = backend_pid(&c).await;
    assert_ne!(second, first);
    // A SET that does not touch server TLS keeps it.
    pgmux::reload::set(&mux.shared, "client_tls_protocols", "tlsv1.3").unwrap();
    assert_eq!(backend_pid(&c).await, second);
    let ssl: bool = c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0);
    assert!(ssl);
}

#[test]
fn tls_settings_pgbouncer_accepts_load_and_what_it_refuses_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.ini");
    let base = format!("[pgbouncer]\n{}", v1_client_tls("require"));
    let load = |extra: &str| {
        std::fs::write(&path, format!("{base}{extra}\n")).unwrap();
        pgmux::config::load(&path)
    };
    // Loads, with a warning for what rustls cannot speak.
    for (extra, warning) in [
        ("client_tls_protocols = tlsv1.0", Some("tlsv1.0")),
        ("server_tls_protocols = tlsv1.0", Some("tlsv1.0")),
        ("client_tls_protocols = all:!tlsv1.2", None),
        ("client_tls_ciphers = HIGH:!aNULL", None),
        ("client_tls13_ciphers = TLS_CHACHA20_POLY1305_SHA256", None),
        ("client_tls_ecdhcurve = secp521r1", Some("secp521r1")),
        ("client_tls_ecdhcurve = none", Some("\"none\" is not available")),
        ("server_tls_sslmode = verify-full", None),
        ("server_tls_sslmode = verify-ca\nserver_tls_ca_file = /nonexistent/ca.crt", Some("failed to load CA file")),
    ] {
        let c = load(extra).unwrap_or_else(|e| panic!("{extra}: {e}"));
        if let Some(w) = warning {
            assert!(c.warnings.iter().any(|x| x.contains(w)), "{extra}: {:?}", c.warnings);
        }
    }
    // Refused with PgBouncer's words.
    for (extra, expect) in [
        ("client_tls13_ciphers = unknown", "TLS setup failed: failed to set the TLSv1.3 cipher suites"),
        ("client_tls_protocols = sslv3", "invalid client_tls_protocols: sslv3"),
        ("client_tls_ciphers = NO-SUCH-CIPHER", "invalid client_tls_ciphers: NO-SUCH-CIPHER"),
        (
            "client_tls_cert_file = /nonexistent/x.crt",
            "failed to load certificate file \"/nonexistent/x.crt\": No such file or directory",
        ),
        ("client_tls_key_file = /dev/null", "failed to load private key file \"/dev/null\""),
    ] {
        let e = load(extra).unwrap_err().to_string();
        assert!(e.contains(expect) && e.contains("p.ini:"), "{extra}: {e}");
    }
    // A key that is not the certificate's.
    let other_key = V1Certs::shared().path("v1-127.0.0.1.key");
    let e = load(&format!("client_tls_key_file = {other_key}")).unwrap_err().to_string();
    assert!(e.contains("private/public key mismatch"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_errors_keep_the_tls_in_force_on_reload_and_set() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, &v1_client_tls("require"));
    let ini = mux.dir.path().join("pgmux.ini");
    let ca = V1Certs::shared().path("v1-ca.crt");
    let works = || {
        let out = psql(mux.port, &format!("user={SCRAM_USER} sslmode=verify-full sslrootcert={ca}"));
        out.status.success()
    };
    assert!(works());
    // SET of a value TLS setup refuses: stored, PgBouncer's notice, old TLS kept.
    let outcome = pgmux::reload::set(&mux.shared, "client_tls13_ciphers", "unknown").unwrap();
    assert_eq!(outcome, pgmux::reload::SetOutcome::TlsNotApplied);
    assert_eq!(mux.shared.config().raw["client_tls13_ciphers"], "unknown");
    assert!(works());
    // RELOAD with a missing certificate file: the rest applies, TLS stays.
    let text = std::fs::read_to_string(&ini).unwrap();
    let broken =
        text.replace(&V1Certs::shared().path("v1-localhost.crt"), "/nonexistent/dummy.crt") + "max_client_conn = 77\n";
    std::fs::write(&ini, broken).unwrap();
    let e = pgmux::reload::reload(&mux.shared).unwrap_err();
    assert!(matches!(e, pgmux::reload::ReloadError::Tls(_)), "{e}");
    assert!(e.to_string().contains("No such file or directory"), "{e}");
    assert_eq!(mux.shared.config().general.max_client_conn, 77);
    assert!(works());
}
