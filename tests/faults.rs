//! Faults: cancels, backends killed mid-transaction, clients vanishing mid-transaction, and a
//! PostgreSQL restart. The pool must recover and never hand out a dirty or dead server.

use std::time::Duration;

use tokio_postgres::NoTls;

use crate::harness::{Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_right_query() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "default_pool_size = 2");
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let b = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let token = a.cancel_token();
    let b_work =
        tokio::spawn(async move { b.query_one("SELECT 7 FROM pg_sleep(1.5)", &[]).await.map(|r| r.get::<_, i32>(0)) });
    let a_work = tokio::spawn(async move { a.query_one("SELECT pg_sleep(30)", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), a_work)
        .await
        .expect("cancel must stop pg_sleep")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "57014", "{err:?}");
    assert_eq!(b_work.await.unwrap().unwrap(), 7, "the other client's query must not be cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_cancel_does_not_hit_the_next_client() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "default_pool_size = 1");
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let b = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    a.query_one("SELECT 1", &[]).await.unwrap();
    // b now runs on the only server, the one a used a moment ago. a's cancel must be ignored.
    let b_work =
        tokio::spawn(async move { b.query_one("SELECT 9 FROM pg_sleep(0.8)", &[]).await.map(|r| r.get::<_, i32>(0)) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.cancel_token().cancel_query(NoTls).await.unwrap();
    assert_eq!(b_work.await.unwrap().unwrap(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_terminated_mid_transaction() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "default_pool_size = 1");
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    a.batch_execute("BEGIN").await.unwrap();
    let pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    pg.psql("postgres", &format!("SELECT pg_terminate_backend({pid})"));
    let err = a.query_one("SELECT 1", &[]).await.unwrap_err();
    assert!(err.as_db_error().is_some() || err.is_closed(), "{err:?}");
    // The pool recovers: a new client gets a new, working server.
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let pid2: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    assert_ne!(pid, pid2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_killed_in_pool_is_not_handed_out() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "default_pool_size = 1");
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let pid: i32 = a.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    pg.psql("postgres", &format!("SELECT pg_terminate_backend({pid})"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The server died while idle in the pool; the next query gets a fresh one without error.
    let pid2: i32 = a.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    assert_ne!(pid, pid2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_transaction_never_leaks_its_transaction() {
    let pg = Cluster::shared();
    pg.psql("postgres", &format!("CREATE DATABASE fa_vanish OWNER {SCRAM_USER}"));
    pg.psql("fa_vanish", "CREATE TABLE vanish(x int)");
    let mux = Pgmux::start(pg, "default_pool_size = 1");
    {
        let a = mux.connect(SCRAM_USER, SCRAM_PASS, "fa_vanish").await.unwrap();
        a.batch_execute("BEGIN; INSERT INTO vanish VALUES (1); LOCK TABLE vanish").await.unwrap();
        // a disappears without COMMIT or Terminate.
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let b = mux.connect(SCRAM_USER, SCRAM_PASS, "fa_vanish").await.unwrap();
    let rows = b.simple_query("SELECT now() = statement_timestamp()").await.unwrap();
    let fresh = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(fresh.as_deref(), Some("t"), "b must not inherit a's open transaction");
    let idle_in_tx = pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'fa_vanish' AND state LIKE 'idle in transaction%'",
    );
    assert_eq!(idle_in_tx, "0");
    let n: i64 = b.query_one("SELECT count(*) FROM vanish", &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "a's uncommitted insert must be rolled back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restart_is_survived() {
    let pg = Cluster::start();
    let mux = Pgmux::start(&pg, "default_pool_size = 4\nserver_login_retry = 0.2");
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    // Simple protocol: tokio-postgres sends no Close for a dropped statement afterwards, so no
    // request of `a` is in flight while PostgreSQL restarts.
    a.simple_query("SELECT 1").await.unwrap();
    pg.restart();
    // A client connected before the restart gets a fresh server on its next transaction
    // (its idle server died with the old postmaster).
    let v: i32 = match a.query_one("SELECT 5", &[]).await {
        Ok(r) => r.get(0),
        Err(e) => panic!("first query after the restart failed: {e:?}"),
    };
    assert_eq!(v, 5);
    let b = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(b.query_one("SELECT 6", &[]).await.unwrap().get::<_, i32>(0), 6);
}
