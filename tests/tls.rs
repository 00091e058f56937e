//! TLS towards clients and servers against the harness's ssl=on cluster and test CA: sslmode
//! require and verify-full from psql and tokio-postgres, SCRAM-SHA-256-PLUS with
//! channel_binding=require, PostgreSQL 17 direct TLS, cancel requests over TLS, certificates
//! reloaded on RELOAD, and server TLS as pg_stat_ssl shows it (with pgmux's client certificate).

use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;

use crate::harness::pgmux::Setup;
use crate::harness::tls_client::{client_config, Tls};
use crate::harness::{Certs, Cluster, Pgmux, CERT_USER, SCRAM_PASS, SCRAM_USER};

/// `[pgbouncer]` lines for client TLS with the test certificates.
pub fn client_tls(mode: &str) -> String {
    let c = Certs::shared();
    format!(
        "client_tls_sslmode = {mode}\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\nclient_tls_ca_file = {}\n",
        c.path("server.crt"),
        c.path("server.key"),
        c.path("ca.crt")
    )
}

/// Connects over TLS (verify-full against the test CA) with tokio-postgres.
pub async fn connect_tls(mux: &Pgmux, extra: &str, client_cert: Option<&str>) -> Result<Client, tokio_postgres::Error> {
    let url = format!("host=localhost hostaddr=127.0.0.1 port={} sslmode=require {extra}", mux.port);
    let (client, conn) = tokio_postgres::connect(&url, Tls::new(client_cert)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn psql(mux: &Pgmux, conninfo: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([
            "-X",
            "-At",
            "-d",
            &format!("host=localhost hostaddr=127.0.0.1 port={} {conninfo}", mux.port),
            "-c",
            sql,
        ])
        .env("PGPASSWORD", SCRAM_PASS)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap()
}

fn plain_userlist() -> String {
    format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n\"{CERT_USER}\" \"\"\n")
}

#[test]
fn psql_verify_full_and_channel_binding() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, &client_tls("require"));
    let ca = Certs::shared().path("ca.crt");
    let out = psql(
        &mux,
        &format!("user={SCRAM_USER} dbname=app sslmode=verify-full sslrootcert={ca} channel_binding=require"),
        "SELECT current_user",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), SCRAM_USER);
    // sslmode=require without a root certificate works too.
    let out = psql(&mux, &format!("user={SCRAM_USER} dbname=app sslmode=require"), "SELECT 1");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A plain-text client is refused with PgBouncer's message.
    let out = psql(&mux, &format!("user={SCRAM_USER} dbname=app sslmode=disable"), "SELECT 1");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SSL required"), "{}", String::from_utf8_lossy(&out.stderr));
    // The wrong CA makes verify-full fail on the client side.
    let other = Certs::shared().path("other-ca.crt");
    let out = psql(&mux, &format!("user={SCRAM_USER} dbname=app sslmode=verify-full sslrootcert={other}"), "SELECT 1");
    assert!(!out.status.success());
}

/// SHOW CLIENTS' `tls` of a TLS 1.2 client names the curve of its ECDHE exchange, as
/// PgBouncer's (`TLSv1.2/ECDHE-...-GCM-SHA384/ECDH=X25519`).
#[test]
fn a_tls_1_2_client_shows_its_curve() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, &client_tls("require"));
    std::thread::scope(|s| {
        let session = s.spawn(|| {
            psql(
                &mux,
                &format!("user={SCRAM_USER} dbname=app sslmode=require ssl_max_protocol_version=TLSv1.2"),
                "SELECT pg_sleep(3)",
            )
        });
        // Looked for while the session lasts (psql may be slow to log in on a busy machine).
        let mut seen = Vec::new();
        while seen.is_empty() && !session.is_finished() {
            seen = mux.shared.client_registry.all().iter().map(|c| c.tls.clone()).filter(|t| !t.is_empty()).collect();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let out = session.join().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].starts_with("TLSv1.2/ECDHE-") && seen[0].ends_with("/ECDH=X25519"), "{seen:?}");
    });
}

/// A certificate file with the leaf alone and the intermediate in client_tls_ca_file: the
/// chain the client needs is sent, as PgBouncer's OpenSSL builds it from the CA file.
#[test]
fn the_chain_to_the_root_is_completed_from_the_ca_file() {
    let c = Certs::shared();
    let ini = format!(
        "client_tls_sslmode = require\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\nclient_tls_ca_file = {}\n",
        c.path("chained.crt"),
        c.path("chained.key"),
        c.path("ca-bundle.crt")
    );
    let mux = Pgmux::start(Cluster::shared(), &ini);
    let ca = c.path("ca.crt");
    let out = psql(&mux, &format!("user={SCRAM_USER} dbname=app sslmode=verify-full sslrootcert={ca}"), "SELECT 1");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn channel_binding_is_not_offered_without_tls() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, &client_tls("prefer"));
    let out = psql(&mux, &format!("user={SCRAM_USER} dbname=app sslmode=disable channel_binding=require"), "SELECT 1");
    assert!(!out.status.success(), "channel binding cannot happen without TLS");
    let out = psql(&mux, &format!("user={SCRAM_USER} dbname=app sslmode=prefer channel_binding=require"), "SELECT 1");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_over_tls_with_scram_plus_and_cancel() {
    let pg = Cluster::shared();
    let mux = Pgmux::start_with(
        pg,
        Setup { pgbouncer: &format!("{}\npool_mode = session", client_tls("require")), ..Setup::default() },
    );
    let c =
        connect_tls(&mux, &format!("user={SCRAM_USER} password={SCRAM_PASS} dbname=app channel_binding=require"), None)
            .await
            .unwrap();
    let rows = c.query("SELECT generate_series(1, 20000)::int", &[]).await.unwrap();
    assert_eq!(rows.len(), 20000);
    // Checked while the client is connected: once it is gone, so is its row.
    let shown = mux.shared.client_registry.all();
    assert!(shown.iter().any(|c| c.tls.starts_with("TLSv1.3/")), "SHOW CLIENTS tls column");
    // A cancel request over TLS reaches the query.
    let token = c.cancel_token();
    let sleeper = tokio::spawn(async move { c.simple_query("/* tls cancel */ SELECT pg_sleep(20)").await });
    pg.wait_until_running("/* tls cancel */ SELECT pg_sleep(20)").await;
    token.cancel_query(Tls::new(None)).await.unwrap();
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), sleeper).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("57014"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_needs_alpn_and_then_speaks_the_protocol() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, &client_tls("require"));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    // With ALPN "postgresql": a whole session over a TLS connection opened directly.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(None, &[b"postgresql"]));
    let stream = tls.connect(name.clone(), tcp).await.unwrap();
    let mut cfg: tokio_postgres::Config =
        format!("user={SCRAM_USER} password={SCRAM_PASS} dbname=app sslmode=disable").parse().unwrap();
    cfg.channel_binding(tokio_postgres::config::ChannelBinding::Disable);
    let (c, conn) = cfg.connect_raw(stream, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let v: i32 = c.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
    // Without ALPN the handshake is refused, as PostgreSQL 17 does.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(None, &[]));
    let refused = async {
        let mut s = tls.connect(name, tcp).await?;
        s.write_all(b"\0\0\0\x08\x04\xd2\x16\x2f").await?;
        let mut b = [0u8; 1];
        let n = s.read(&mut b).await?;
        Ok::<usize, std::io::Error>(n)
    };
    assert!(!matches!(refused.await, Ok(n) if n > 0), "direct TLS without ALPN must not be served");
}

fn server_cert_cn(mux: &Pgmux) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(client_config(None, &[b"postgresql"]));
        let s = tls.connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
        let der = s.get_ref().1.peer_certificates().unwrap()[0].clone();
        let text = String::from_utf8_lossy(der.as_ref()).into_owned();
        ["pgmux reloaded", "localhost"].iter().find(|n| text.contains(**n)).unwrap().to_string()
    })
}

#[test]
fn certificates_are_reloaded_on_reload() {
    let pg = Cluster::shared();
    let certs = Certs::shared();
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    std::fs::copy(certs.path("server.crt"), &crt).unwrap();
    std::fs::copy(certs.path("server.key"), &key).unwrap();
    let ini = format!(
        "client_tls_sslmode = require\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\n",
        crt.display(),
        key.display()
    );
    let mux = Pgmux::start(pg, &ini);
    assert_eq!(server_cert_cn(&mux), "localhost");
    std::fs::copy(certs.path("server2.crt"), &crt).unwrap();
    std::fs::copy(certs.path("server2.key"), &key).unwrap();
    pgmux::reload::reload(&mux.shared).unwrap();
    assert_eq!(server_cert_cn(&mux), "pgmux reloaded");
    // A broken key file fails the reload and keeps the working certificate.
    std::fs::write(&key, "not a key").unwrap();
    let err = pgmux::reload::reload(&mux.shared).unwrap_err().to_string();
    assert!(err.contains("live.key"), "{err}");
    assert_eq!(server_cert_cn(&mux), "pgmux reloaded");
}

async fn ssl_row(mux: &Pgmux, user: &str, pass: &str) -> (bool, String, String) {
    let c = mux.connect(user, pass, "tlsdb").await.unwrap();
    let row = c
        .query_one(
            "SELECT ssl, coalesce(version, ''), coalesce(client_dn, '') FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_verify_full_shows_in_pg_stat_ssl() {
    let pg = Cluster::shared();
    let c = Certs::shared();
    let ini = format!(
        "server_tls_sslmode = verify-full\nserver_tls_ca_file = {}\nserver_tls_cert_file = {}\nserver_tls_key_file = {}\n",
        c.path("ca.crt"),
        c.path("client-cert_user.crt"),
        c.path("client-cert_user.key")
    );
    let userlist = plain_userlist();
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: &ini,
            databases: "tlsdb = host=127.0.0.1 port=$PORT dbname=app\ncertdb = host=127.0.0.1 port=$PORT dbname=app user=cert_user",
            userlist: Some(&userlist),
        },
    );
    let (ssl, version, _) = ssl_row(&mux, SCRAM_USER, SCRAM_PASS).await;
    assert!(ssl && version.starts_with("TLSv1."), "{ssl} {version}");
    // SHOW SERVERS' tls column describes the session, as PgBouncer's.
    let shown: Vec<String> = mux.shared.pools.servers.all().iter().map(|s| s.tls().to_owned()).collect();
    assert!(!shown.is_empty() && shown.iter().all(|t| t.starts_with(&format!("{version}/"))), "{shown:?} {version}");
    // The server's pg_hba has `hostssl all cert_user ... cert`: only pgmux's client
    // certificate gets this login in.
    let cc = mux.connect(SCRAM_USER, SCRAM_PASS, "certdb").await.unwrap();
    let row = cc
        .query_one(
            "SELECT current_user::text, client_dn FROM pg_stat_ssl, current_user WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), CERT_USER);
    assert_eq!(row.get::<_, String>(1), "/CN=cert_user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tls_refuses_an_unverifiable_server() {
    let pg = Cluster::shared();
    // A failed handshake is a failed connect, as in PgBouncer: the waiting client stays until
    // query_wait_timeout, and clients arriving meanwhile get the cached error at once.
    let ini = format!(
        "server_tls_sslmode = verify-ca\nserver_tls_ca_file = {}\nquery_wait_timeout = 2\nserver_login_retry = 10\n",
        Certs::shared().path("other-ca.crt")
    );
    let userlist = plain_userlist();
    let mux = Pgmux::start_with(
        pg,
        Setup { pgbouncer: &ini, databases: "tlsdb = host=127.0.0.1 port=$PORT dbname=app", userlist: Some(&userlist) },
    );
    let err = match mux.connect(SCRAM_USER, SCRAM_PASS, "tlsdb").await {
        Ok(c) => c.simple_query("SELECT 1").await.map(|_| ()).unwrap_err(),
        Err(e) => e,
    };
    let msg = err.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
    assert_eq!(msg, "query_wait_timeout", "{err:?}");
    let Err(err) = mux.connect(SCRAM_USER, SCRAM_PASS, "tlsdb").await else { panic!("still failing") };
    let msg = err.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
    assert!(msg.starts_with("server login has been failing, cached error: "), "newcomers fail fast: {err:?}");
    // server_tls_sslmode = disable stays in plain text.
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: "server_tls_sslmode = disable",
            databases: "tlsdb = host=127.0.0.1 port=$PORT dbname=app",
            userlist: Some(&userlist),
        },
    );
    assert!(!ssl_row(&mux, SCRAM_USER, SCRAM_PASS).await.0);
}

#[test]
fn tls_settings_pgbouncer_refuses_are_refused_at_start() {
    let base = format!("[pgbouncer]\n{}", client_tls("require"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.ini");
    for (extra, expect) in [
        ("client_tls_ciphers = RC4-SHA", "RC4-SHA"),
        ("client_tls_ecdhcurve = brainpoolP512r1", "ecdh curve"),
        ("client_tls_sslmode = verify-full\nclient_tls_ca_file =", "client_tls_ca_file"),
    ] {
        std::fs::write(&path, format!("{base}{extra}\n")).unwrap();
        let err = pgmux::config::load(&path).unwrap_err().to_string();
        assert!(err.contains(expect) && err.contains("p.ini:"), "{extra}: {err}");
    }
    std::fs::write(&path, format!("{base}client_tls_ciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n")).unwrap();
    assert!(pgmux::config::load(&path).is_ok());
}
