//! Client timeouts as PgBouncer applies them, global and per `[users]` entry: query_timeout
//! (running queries and clients waiting for a server), idle_transaction_timeout,
//! transaction_timeout, and pool_idle_timeout dropping unused pools. Each closes the client
//! with PgBouncer's words and SQLSTATE 08P01.

use std::time::Duration;

use crate::harness::{db_error, Cluster, Pgmux, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER};

/// A client whose connection task is kept: an error pgmux sends while the client is idle (a
/// timeout) ends that task, and its result says why.
async fn watched(mux: &Pgmux) -> (tokio_postgres::Client, tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) {
    let (c, conn) =
        tokio_postgres::connect(&mux.url(SCRAM_USER, SCRAM_PASS, "app"), tokio_postgres::NoTls).await.unwrap();
    (c, tokio::spawn(conn))
}

fn closed_with(e: &tokio_postgres::Error) -> String {
    let (code, msg) = db_error(e);
    assert_eq!(code, "08P01", "{msg}");
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_query_timeout_overrides_the_global_one() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(
        pg,
        &format!(
            "auth_type = md5\nquery_timeout = 30\nadmin_users = {MD5_USER}\n[users]\n{SCRAM_USER} = query_timeout=1"
        ),
    );
    let slow = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let e = slow.simple_query("SELECT pg_sleep(3)").await.unwrap_err();
    assert_eq!(closed_with(&e), "query timeout");
    // Counted as closed by pgmux's rule (pgmux_pool_sessions_closed_total{side="pgmux"}).
    let pool = mux.shared.pools.all().into_iter().find(|p| p.db == "app" && p.user == SCRAM_USER).unwrap();
    let closed = || [0, 1, 2].map(|i| pool.counters.sum(|s| &s.sessions_closed[i]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while closed() != [0, 0, 1] && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(closed(), [0, 0, 1], "client, server, pgmux");
    // And in the console's SHOW FAULTS.
    let console = mux.connect(MD5_USER, MD5_PASS, "pgbouncer").await.unwrap();
    let rows: Vec<Vec<String>> = console
        .simple_query("SHOW FAULTS")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..5).map(|i| r.get(i).unwrap_or("").to_owned()).collect())
            }
            _ => None,
        })
        .collect();
    assert!(rows.contains(&vec!["app".into(), SCRAM_USER.into(), "0".into(), "0".into(), "1".into()]), "{rows:?}");
    // Another user keeps the global 30 s.
    let other = mux.connect(MD5_USER, MD5_PASS, "app").await.unwrap();
    other.simple_query("SELECT pg_sleep(1.2)").await.expect("within the global query_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_counts_the_whole_transaction() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "transaction_timeout = 3\nquery_timeout = 1");
    let (c, conn) = watched(&mux).await;
    c.batch_execute("BEGIN").await.unwrap();
    c.simple_query("SELECT 1").await.unwrap();
    // Idle in a transaction past query_timeout, no query running: query_timeout does not apply ...
    tokio::time::sleep(Duration::from_millis(1300)).await;
    c.simple_query("SELECT 2").await.expect("query_timeout applies only to running queries");
    // ... but the transaction as a whole is over its limit soon.
    let e = tokio::time::timeout(Duration::from_secs(10), conn).await.expect("closed").unwrap().unwrap_err();
    assert_eq!(closed_with(&e), "transaction timeout");
    assert!(c.simple_query("SELECT 3").await.is_err());
    // Outside a transaction nothing is counted.
    let d = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    for _ in 0..4 {
        d.simple_query("SELECT 1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_idle_transaction_timeout_closes_an_idle_transaction() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, &format!("[users]\n{SCRAM_USER} = idle_transaction_timeout=1"));
    let (c, conn) = watched(&mux).await;
    c.batch_execute("BEGIN").await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), conn).await.expect("closed").unwrap().unwrap_err();
    assert_eq!(closed_with(&e), "idle transaction timeout");
    assert!(c.simple_query("SELECT 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_bounds_the_wait_for_a_server() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "query_timeout = 1\ndefault_pool_size = 1\nquery_wait_timeout = 30");
    let holder = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    holder.batch_execute("BEGIN").await.unwrap();
    let waiter = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let started = std::time::Instant::now();
    let e = waiter.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(closed_with(&e), "query_timeout");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    holder.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_idle_timeout_drops_unused_pools() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "pool_idle_timeout = 1\nserver_idle_timeout = 1");
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    c.simple_query("SELECT 1").await.unwrap();
    drop(c);
    let has_pool = || mux.shared.pools.all().iter().any(|p| p.db == "app");
    assert!(has_pool());
    for _ in 0..60 {
        if !has_pool() {
            // A new login makes it again.
            let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
            c.simple_query("SELECT 1").await.unwrap();
            assert!(has_pool());
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the unused pool was not dropped");
}

/// A batch closed by a Flush instead of a Sync (what drivers send to read a statement's
/// description before they bind it) is a request too: query_timeout counts from its first
/// message, as PgBouncer's query_start, in a transaction block or out of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_bounds_a_batch_closed_by_a_flush() {
    use pgmux_protocol::build;

    use crate::harness::raw::{trusting_pgmux, Raw};
    let mux = trusting_pgmux("query_timeout = 1");
    // Alone, in a transaction block, and pipelined behind a request closed by a Sync (whose
    // ReadyForQuery comes while the batch runs).
    for (begin, behind_sync) in [(false, false), (true, false), (true, true)] {
        let mut raw = Raw::connect(&mux).await;
        if begin {
            raw.send(|o| build::query(o, "BEGIN")).await;
            assert_eq!(raw.until_ready().await, ["C", "Z"]);
        }
        let started = std::time::Instant::now();
        raw.send(|o| {
            if behind_sync {
                build::query(o, "SELECT 1");
            }
            build::parse(o, "", "SELECT pg_sleep(2.5)");
            build::bind(o, "", "", &[]);
            build::execute(o, "");
            build::flush(o);
        })
        .await;
        // PostgreSQL reads the Flush after the Execute: nothing comes before the sleep ends,
        // then ParseComplete, BindComplete, the row and CommandComplete, unless the timeout
        // ends the client first (PgBouncer's words for a running query's).
        if behind_sync {
            assert_eq!(raw.until_ready().await, ["T", "D:1", "C", "Z"]);
        }
        let seen = raw.until(b'C').await;
        assert_eq!(seen, ["E:08P01:query timeout", "EOF"], "in a block: {begin}, behind a Sync: {behind_sync}");
        assert!(started.elapsed() < Duration::from_millis(2400), "{:?}", started.elapsed());
    }
}

/// A Close that pgmux answers itself (the client's named statement, with statements tracked)
/// starts no request, as in PgBouncer: a client that waits in its transaction after one is not
/// taken for a running query. A Close of a portal goes to PostgreSQL and starts one, as in
/// PgBouncer: query_timeout then ends the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_close_the_server_answers_starts_a_request() {
    use pgmux_protocol::build;
    use pgmux_protocol::extended::target_message;

    use crate::harness::raw::{trusting_pgmux, Raw};
    let mux = trusting_pgmux("query_timeout = 1");
    let mut raw = Raw::connect(&mux).await;
    raw.send(|o| {
        build::query(o, "BEGIN");
        build::parse(o, "s1", "SELECT 1");
        build::sync(o);
    })
    .await;
    assert_eq!(raw.until_ready().await, ["C", "Z"]);
    assert_eq!(raw.until_ready().await, ["1", "Z"]);
    // The Close alone: the client's Sync comes later (a Flush would start a request, as in
    // PgBouncer).
    raw.send(|o| target_message(o, b'C', b'S', b"s1")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    raw.send(build::sync).await;
    assert_eq!(raw.until_ready().await, ["3", "Z"], "idle in its block, not timed out");
    raw.send(|o| build::query(o, "SELECT 2")).await;
    assert_eq!(raw.until_ready().await, ["T", "D:2", "C", "Z"]);
    raw.send(|o| {
        target_message(o, b'C', b'P', b"");
        build::flush(o);
    })
    .await;
    assert_eq!(raw.until(b'3').await, ["3"]);
    assert_eq!(raw.until(b'E').await, ["E:08P01:query timeout"], "a portal's Close is a request");
}
