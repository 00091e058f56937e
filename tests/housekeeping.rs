//! Settings that act in the background: autodb_idle_timeout forgets an unused auto database,
//! suspend_timeout bounds SUSPEND by closing clients that still hold a server.

use std::time::{Duration, Instant};

use crate::harness::{db_error, Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_auto_database_is_forgotten_after_autodb_idle_timeout() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "autodb_idle_timeout = 1\nserver_idle_timeout = 1\nserver_lifetime = 1");
    {
        let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        c.simple_query("SELECT 1").await.unwrap();
    }
    assert!(mux.shared.pools.knows_db("app"));
    // Its server closes after server_idle_timeout, then the database has been unused for 1 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    while mux.shared.pools.knows_db("app") {
        assert!(Instant::now() < deadline, "the auto database was never cleaned up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(mux.shared.pools.all().iter().all(|p| p.db != "app"), "its pools went with it");
    // The next login registers it again.
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    c.simple_query("SELECT 1").await.unwrap();
    assert!(mux.shared.pools.knows_db("app"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_closes_clients_still_in_a_transaction_after_suspend_timeout() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, &format!("suspend_timeout = 1\nadmin_users = {SCRAM_USER}"));
    let busy = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    busy.simple_query("BEGIN; SELECT 1").await.unwrap();
    let idle = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    idle.simple_query("SELECT 1").await.unwrap();
    let console = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), console.simple_query("SUSPEND"))
        .await
        .expect("SUSPEND returns after suspend_timeout")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited for the transaction first");
    let err = busy.simple_query("COMMIT").await.unwrap_err();
    assert!(err.to_string().contains("suspend_timeout") || err.is_closed(), "{err}");
    if let Some(db) = err.as_db_error() {
        assert_eq!(db_error(&err).1, "suspend_timeout", "{db:?}");
    }
    console.simple_query("RESUME").await.unwrap();
    idle.simple_query("SELECT 2").await.expect("a client that held no server is kept");
}
