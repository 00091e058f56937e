//! Idle clients hold nothing: a lone Sync or Flush from a client outside a transaction is
//! answered without a server, and a client that vanishes in the middle of a query or a
//! transaction leaves its server to the pool (cancelled, rolled back, counted) instead of
//! closing it, as does one that sends its query and Terminate in one write.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::harness::raw::send_startup;
use crate::harness::{eventually, Cluster, Pgmux, MD5_USER, SCRAM_PASS, SCRAM_USER};

async fn value(c: &tokio_postgres::Client, sql: &str) -> String {
    let rows = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
            _ => None,
        })
        .expect("a row")
}

/// Reads backend messages until one of type `tag`; returns the types seen.
async fn read_until(s: &mut tokio::net::TcpStream, tag: u8) -> Vec<u8> {
    let mut seen = Vec::new();
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).await.unwrap();
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).await.unwrap();
        seen.push(head[0]);
        if head[0] == tag {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_sync_or_flush_takes_no_server() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "auth_type = trust\ndefault_pool_size = 1\nquery_wait_timeout = 10");
    // The pool's only server is held by a transaction.
    // trust: the md5 user, whose stored md5 secret logs pgmux in to PostgreSQL.
    let holder = mux.connect(MD5_USER, "", "app").await.unwrap();
    holder.simple_query("BEGIN").await.unwrap();
    value(&holder, "SELECT 1").await;

    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
    let mut startup = bytes::BytesMut::new();
    pgmux_protocol::build::startup_message(&mut startup, &[("user", MD5_USER), ("database", "app")]);
    raw.write_all(&startup).await.unwrap();
    read_until(&mut raw, b'Z').await;
    // Flush then Sync: the Flush gets nothing, the Sync a ReadyForQuery 'I', at once.
    raw.write_all(&[b'H', 0, 0, 0, 4, b'S', 0, 0, 0, 4]).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(2), read_until(&mut raw, b'Z'))
        .await
        .expect("answered without waiting for the busy server");
    assert_eq!(seen, [b'Z'], "only ReadyForQuery");
    // A real query does wait for the server, and gets it when the holder commits.
    raw.write_all(b"Q\0\0\0\x0dSELECT 1\0").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.simple_query("COMMIT").await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), read_until(&mut raw, b'Z')).await.unwrap();
    assert_eq!(seen, [b'T', b'D', b'C', b'Z']);
    assert_eq!(value(&holder, "SELECT 2").await, "2", "the holder got its server back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_leaves_its_server_to_the_pool() {
    let pg = Cluster::shared();
    pg.psql("postgres", &format!("CREATE DATABASE idle_rescue OWNER {SCRAM_USER}"));
    pg.psql("idle_rescue", "CREATE TABLE rescued(x int)");
    let exporter = crate::metrics::free_port();
    let mux = Pgmux::start(
        pg,
        &format!("default_pool_size = 1\nquery_wait_timeout = 20\nexporter_port = {exporter}\nexporter_listen_addr = 127.0.0.1"),
    );
    let url = mux.url(SCRAM_USER, SCRAM_PASS, "idle_rescue");
    let vanish_during = |sql: &'static str| {
        let url = url.clone();
        async move {
            let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
            let conn = tokio::spawn(conn);
            let pid = value(&c, "BEGIN; SELECT pg_backend_pid()").await;
            value(&c, "INSERT INTO rescued VALUES (1) RETURNING x").await;
            let running = tokio::spawn(async move {
                let _ = c.simple_query(sql).await;
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            // The socket closes without a Terminate, in the middle of a transaction (and of
            // `sql`, if it is still running).
            conn.abort();
            running.abort();
            pid
        }
    };
    let b = mux.connect(SCRAM_USER, SCRAM_PASS, "idle_rescue").await.unwrap();
    for (round, sql) in ["SELECT 1", "SELECT pg_sleep(60)"].into_iter().enumerate() {
        let pid = vanish_during(sql).await;
        let started = std::time::Instant::now();
        assert_eq!(value(&b, "SELECT pg_backend_pid()").await, pid, "round {round}: the same server, kept");
        assert!(started.elapsed() < Duration::from_secs(5), "round {round}: a running query is cancelled");
        assert_eq!(value(&b, "SELECT count(*) FROM rescued").await, "0", "round {round}: rolled back");
        assert_eq!(value(&b, "SELECT now() = statement_timestamp()").await, "t", "round {round}: no open transaction");
    }
    let pool = mux.shared.pools.all().into_iter().find(|p| p.db == "idle_rescue").unwrap();
    assert_eq!(pool.counters.sum(|s| &s.servers_rescued), 2);
    let m = crate::metrics::scrape(exporter).await;
    let key = format!("pgmux_pool_servers_rescued_total{{datname=\"idle_rescue\",user=\"{SCRAM_USER}\"}}");
    assert_eq!(m.get(&key), Some(&2.0), "{key} in /metrics");
    // Vanishing is not an error pgmux closed a session with.
    for side in ["client", "server", "pgmux"] {
        let key = format!(
            "pgmux_pool_sessions_closed_total{{datname=\"idle_rescue\",user=\"{SCRAM_USER}\",side=\"{side}\"}}"
        );
        assert_eq!(m.get(&key), Some(&0.0), "{key} in /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescued_server_reports_the_parameters_its_rollback_restored() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "default_pool_size = 1\nquery_wait_timeout = 20\npool_mode = transaction");
    let url = |app: &str| format!("{} application_name={app}", mux.url(SCRAM_USER, SCRAM_PASS, "app"));
    let (w, conn) = tokio_postgres::connect(&url("w_app"), NoTls).await.unwrap();
    tokio::spawn(conn);
    assert_eq!(value(&w, "SHOW application_name").await, "w_app");
    // Another client takes the one server, sets w's value inside a transaction and vanishes
    // during a query: the rescue's ROLLBACK puts its own value back on the server.
    let (v, conn) = tokio_postgres::connect(&url("v_app"), NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    v.simple_query("BEGIN").await.unwrap();
    v.simple_query("SET application_name = 'w_app'").await.unwrap();
    let running = tokio::spawn(async move {
        let _ = v.simple_query("SELECT pg_sleep(60)").await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.abort();
    running.abort();
    // pgmux must know the server says v_app again, and set w's value.
    assert_eq!(value(&w, "SHOW application_name").await, "w_app");
    let pool = mux.shared.pools.all().into_iter().find(|p| p.db == "app").unwrap();
    assert_eq!(pool.counters.sum(|s| &s.servers_rescued), 1, "the same server, rescued");
}

/// A query and a Terminate in one write, then the socket closed: the query is sent (as
/// PostgreSQL would run it), then cancelled, and the pool has its server back at once, not when
/// the query would have ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_and_its_terminate_in_one_write_leave_the_server_at_once() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "default_pool_size = 1\nquery_wait_timeout = 60\nauth_type = trust");
    let other = mux.connect(MD5_USER, "", "app").await.unwrap();
    let pid = value(&other, "SELECT pg_backend_pid()").await;
    let mut raw = send_startup(mux.port, MD5_USER).await;
    read_until(&mut raw, b'Z').await;
    let mut out = bytes::BytesMut::new();
    pgmux_protocol::build::query(&mut out, "SELECT pg_sleep(60)");
    pgmux_protocol::build::terminate(&mut out);
    raw.write_all(&out).await.unwrap();
    drop(raw);
    let pool = mux.shared.pools.all().into_iter().find(|p| p.db == "app").unwrap();
    eventually(Duration::from_secs(20), "the server was not rescued long before the sleep would end", || {
        pool.counters.sum(|s| &s.servers_rescued) > 0
    })
    .await;
    let next = tokio::time::timeout(Duration::from_secs(5), value(&other, "SELECT pg_backend_pid()")).await.unwrap();
    assert_eq!(next, pid, "the same server: the query was sent, then cancelled, and the server kept");
}

/// A Close of one of its named statements from a client between transactions is answered
/// without a server (the name is the client's; the servers keep the statement), and the name
/// is free again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_named_statement_between_transactions_takes_no_server() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "auth_type = trust\ndefault_pool_size = 1\nquery_wait_timeout = 10");
    let mut raw = send_startup(mux.port, MD5_USER).await;
    read_until(&mut raw, b'Z').await;
    let mut out = bytes::BytesMut::new();
    pgmux_protocol::build::parse(&mut out, "s1", "SELECT 1");
    pgmux_protocol::build::sync(&mut out);
    raw.write_all(&out).await.unwrap();
    assert_eq!(read_until(&mut raw, b'Z').await, [b'1', b'Z']);

    // The pool's only server is held by a transaction meanwhile.
    let holder = mux.connect(MD5_USER, "", "app").await.unwrap();
    holder.simple_query("BEGIN").await.unwrap();
    value(&holder, "SELECT 1").await;
    raw.write_all(&[b'C', 0, 0, 0, 8, b'S', b's', b'1', 0, b'S', 0, 0, 0, 4]).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(2), read_until(&mut raw, b'Z'))
        .await
        .expect("answered without waiting for the busy server");
    assert_eq!(seen, [b'3', b'Z'], "CloseComplete, ReadyForQuery");
    holder.simple_query("COMMIT").await.unwrap();
    // The name can be used again: its Parse goes to the server and succeeds.
    out.clear();
    pgmux_protocol::build::parse(&mut out, "s1", "SELECT 2");
    pgmux_protocol::build::sync(&mut out);
    raw.write_all(&out).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), read_until(&mut raw, b'Z')).await.unwrap();
    assert_eq!(seen, [b'1', b'Z']);
}
