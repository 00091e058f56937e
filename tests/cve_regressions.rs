//! One test per class of PgBouncer's published vulnerabilities, the hostile input spelled out,
//! against pgmux. Covered elsewhere: CVE-2026-6666 (a server ErrorResponse without SQLSTATE) in
//! attacks.rs `server_errors_without_sqlstate_break_nothing`; CVE-2026-6667 (KILL_CLIENT
//! without admin rights) in admin.rs `stats_users_can_look_but_not_touch`; CVE-2025-2291 (an
//! expired role logging in through auth_query) in auth_sources.rs
//! `auth_query_with_md5_and_scram_roles`.

use bytes::{Buf, BytesMut};
use pgmux_protocol::{build, split_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::pgmux::Setup;
use crate::harness::{db_error, Cluster, Pgmux, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER};

async fn serves_others(mux: &Pgmux) {
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.expect("pgmux still serves");
    let row = c.query_one("SELECT 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
}

/// Reads frames until an ErrorResponse; its SQLSTATE.
async fn error_code(s: &mut TcpStream, mut buf: BytesMut) -> Option<String> {
    loop {
        while let Some(f) = split_frame(&mut buf, 1 << 20).unwrap() {
            if f.tag == b'E' {
                let fields = pgmux_protocol::backend::ErrorFields::new(f.body());
                return Some(String::from_utf8_lossy(fields.sqlstate()).into_owned());
            }
        }
        if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            return None;
        }
    }
}

/// CVE-2026-6664: an integer overflow in the length of the SASL data inside a
/// SASLInitialResponse let an unauthenticated client crash PgBouncer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2026_6664_sasl_data_length_that_overflows() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "");
    for inner_len in [i32::MAX, i32::MIN, -2, 1 << 20, 40] {
        let mut s = TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
        let mut out = BytesMut::new();
        build::startup_message(&mut out, &[("user", SCRAM_USER), ("database", "app")]);
        s.write_all(&out).await.unwrap();
        // AuthenticationSASL first.
        let mut buf = BytesMut::new();
        loop {
            if let Some(f) = split_frame(&mut buf, 1 << 20).unwrap() {
                assert_eq!(f.tag, b'R');
                break;
            }
            assert!(s.read_buf(&mut buf).await.unwrap() > 0);
        }
        // 'p', the mechanism, then a data length that does not match the 10 bytes that follow.
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&inner_len.to_be_bytes());
        body.extend_from_slice(b"n,,n=,r=ab");
        let mut msg = vec![b'p'];
        msg.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        msg.extend_from_slice(&body);
        s.write_all(&msg).await.unwrap();
        assert_eq!(error_code(&mut s, buf).await.as_deref(), Some("08P01"), "inner length {inner_len}");
    }
    serves_others(&mux).await;
}

/// A PostgreSQL impostor for CVE-2026-6665: it asks for SCRAM and answers with a nonce (and
/// then a signature) of 100 kB, which overflowed PgBouncer's stack while it built its
/// client-final-message.
async fn long_nonce_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                crate::harness::raw::accept_startup(&mut s).await?;
                let auth = |code: i32, data: &[u8]| {
                    let mut m = vec![b'R'];
                    m.extend_from_slice(&((8 + data.len()) as i32).to_be_bytes());
                    m.extend_from_slice(&code.to_be_bytes());
                    m.extend_from_slice(data);
                    m
                };
                s.write_all(&auth(10, b"SCRAM-SHA-256\0\0")).await?;
                let mut buf = BytesMut::new();
                let first = loop {
                    if let Some(f) = split_frame(&mut buf, 1 << 20).unwrap() {
                        break f.body().to_vec();
                    }
                    if s.read_buf(&mut buf).await? == 0 {
                        return Ok::<(), std::io::Error>(());
                    }
                };
                // mechanism\0, length, "n,,n=,r=<client nonce>"
                let at = first.iter().position(|b| *b == 0).unwrap() + 5;
                let client_first = String::from_utf8_lossy(&first[at..]).into_owned();
                let nonce = client_first.rsplit("r=").next().unwrap().to_owned();
                let salt = "BwcHBwcHBwcHBwcHBwcHBw=="; // 16 bytes of 7, base64
                let server_first = format!("r={nonce}{},s={salt},i=4096", "A".repeat(100_000));
                s.write_all(&auth(11, server_first.as_bytes())).await?;
                // Whatever the client-final is, a 100 kB signature comes back.
                loop {
                    if split_frame(&mut buf, 1 << 20).ok().flatten().is_some() {
                        break;
                    }
                    if s.read_buf(&mut buf).await? == 0 {
                        return Ok(());
                    }
                }
                let v = format!("v={}", "B".repeat(100_000));
                s.write_all(&auth(12, v.as_bytes())).await?;
                buf.advance(buf.len());
                let _ = s.read_buf(&mut buf).await;
                Ok(())
            });
        }
    });
    port
}

/// CVE-2026-6665: a malicious backend's over-long SCRAM nonce and signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2026_6665_server_sends_a_huge_scram_nonce() {
    let pg = Cluster::shared();
    let port = long_nonce_server().await;
    let dbs = format!("app = host=$SOCKET port=$PORT\nimpostor = host=127.0.0.1 port={port} dbname=app");
    // A clear-text password: pgmux logs in to the impostor with SCRAM as a client.
    let userlist = format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n\"{MD5_USER}\" \"{MD5_PASS}\"\n");
    let mux = Pgmux::start_with(
        pg,
        // The first client waits for a retry that fails the same way until client_login_timeout;
        // the next ones get the cached error at once.
        Setup { databases: &dbs, userlist: Some(&userlist), pgbouncer: "auth_type = md5\nclient_login_timeout = 3" },
    );
    for _ in 0..3 {
        let Err(e) = mux.connect(MD5_USER, MD5_PASS, "impostor").await else { panic!("the impostor's login fails") };
        let (code, _) = db_error(&e);
        assert_eq!(code, "08P01", "{e}");
    }
    serves_others(&mux).await;
}

/// CVE-2025-12819: with search_path tracked and auth_user set, a client's startup search_path
/// reached the connection that runs auth_query, so a function of the attacker's schema ran
/// (as the auth_user) before any password was checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cve_2025_12819_startup_search_path_does_not_reach_auth_query() {
    let pg = Cluster::shared();
    pg.psql(
        "app",
        "DROP SCHEMA IF EXISTS cve_evil CASCADE; CREATE SCHEMA cve_evil; \
         CREATE TABLE cve_evil.hits(at timestamptz); GRANT USAGE ON SCHEMA cve_evil TO PUBLIC; \
         GRANT INSERT ON cve_evil.hits TO PUBLIC; \
         CREATE FUNCTION cve_evil.now() RETURNS timestamptz LANGUAGE sql VOLATILE AS \
         $$ INSERT INTO cve_evil.hits VALUES (pg_catalog.now()) RETURNING at $$",
    );
    let userlist = format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n");
    // The default auth_query calls now(), unqualified.
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: &format!("auth_type = md5\nauth_user = {SCRAM_USER}\ntrack_extra_parameters = search_path"),
            databases: "app = host=$SOCKET port=$PORT",
            userlist: Some(&userlist),
        },
    );
    let mut config: tokio_postgres::Config = mux.url(MD5_USER, MD5_PASS, "app").parse().unwrap();
    config.options("-c search_path=cve_evil,pg_catalog");
    for password in ["wrong", MD5_PASS] {
        config.password(password);
        let _ = config.connect(tokio_postgres::NoTls).await;
    }
    assert_eq!(pg.psql("app", "SELECT count(*) FROM cve_evil.hits"), "0", "the attacker's now() never ran");
    serves_others(&mux).await;
}
