//! Settings that act in the background: autodb_idle_timeout forgets an unused auto database.

use std::time::{Duration, Instant};

use crate::harness::{Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

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
