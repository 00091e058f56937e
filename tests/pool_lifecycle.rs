//! Pool sizing and lifetimes over time: min_pool_size, server_idle_timeout, server_lifetime,
//! max_client_conn, max_db_connections, and the per-pool counters SHOW STATS will read.
//! Each test uses its own database so that server counts in pg_stat_activity are its own.

use std::time::Duration;

use futures_util::future::join_all;

use crate::harness::{Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

fn own_db(pg: &Cluster, name: &str) {
    pg.psql("postgres", &format!("CREATE DATABASE {name} OWNER {SCRAM_USER}"));
}

fn servers(pg: &Cluster, db: &str) -> i64 {
    pg.psql(
        "postgres",
        &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND backend_type = 'client backend'"),
    )
    .parse()
    .unwrap()
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_opens_spares_and_idle_timeout_closes_extras() {
    let pg = Cluster::shared();
    own_db(pg, "lc_min");
    let mux = Pgmux::start(pg, "min_pool_size = 3\ndefault_pool_size = 5\nserver_idle_timeout = 1");
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "lc_min").await.unwrap();
    eventually("3 spare servers", || servers(pg, "lc_min") == 3).await;
    // Five at once: the pool grows to five ...
    let tasks = (0..5).map(|_| c.query_one("SELECT pg_sleep(0.3)", &[]));
    let _ = join_all(tasks).await;
    // Five clients logged in first (SCRAM is slow in debug builds), then their queries at once.
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(mux.connect(SCRAM_USER, SCRAM_PASS, "lc_min").await.unwrap());
    }
    let extra = clients.iter().map(|c| async move {
        c.query_one("SELECT pg_sleep(1)", &[]).await.unwrap();
    });
    // The most servers seen while the extras run: under load the first extras may idle past
    // server_idle_timeout (and be closed) before the last one finishes.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(servers(pg, "lc_min"));
                std::thread::sleep(Duration::from_millis(20));
            }
            most
        })
    };
    join_all(extra).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let most: i64 = sampler.await.unwrap();
    assert!(most >= 4, "the pool grew past min_pool_size: {most} servers at most");
    // ... and shrinks back to min_pool_size once the extras have idled past server_idle_timeout.
    eventually("back to min_pool_size", || servers(pg, "lc_min") == 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lifetime_replaces_old_servers() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "server_lifetime = 2\ndefault_pool_size = 1");
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let first: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let again: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    assert_eq!(first, again, "a young server is reused");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    assert_ne!(first, later, "a server past server_lifetime is closed, not reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_with_pgbouncers_08p01() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "max_client_conn = 2");
    let _a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let _b = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let err = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap_err();
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!((db.code().code(), db.message()), ("08P01", "no more connections allowed (max_client_conn)"));
    drop(_a);
    eventually("the first client's slot given back", || mux.shared.client_registry.all().len() <= 1).await;
    mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.expect("a slot is free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_caps_servers_across_users() {
    let pg = Cluster::shared();
    own_db(pg, "lc_maxdb");
    let mux = Pgmux::start(pg, "max_db_connections = 1\ndefault_pool_size = 5");
    let url = mux.url(SCRAM_USER, SCRAM_PASS, "lc_maxdb");
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let tasks = (0..4).map(|_| {
        let url = url.clone();
        async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            c.query_one("SELECT pg_sleep(0.2)", &[]).await.unwrap();
        }
    });
    let watch = {
        let seen = seen.clone();
        async move {
            for _ in 0..8 {
                let n = servers(pg, "lc_maxdb");
                seen.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    tokio::join!(join_all(tasks), watch);
    assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 1, "never more than max_db_connections servers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_the_workload() {
    let pg = Cluster::shared();
    own_db(pg, "lc_stats");
    let mux = Pgmux::start(pg, "pool_mode = transaction");
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "lc_stats").await.unwrap();
    for _ in 0..50 {
        c.simple_query("SELECT 1").await.unwrap();
    }
    c.batch_execute("BEGIN; SELECT 1; SELECT 2; COMMIT").await.unwrap();
    // COPY through the extended protocol: the Sync behind its Execute is ignored by the server
    // (the one after CopyDone is answered), so it is one query. tokio-postgres prepares the
    // COPY first (Parse, Describe, Sync) and closes the statement after (Close, Sync): 4 in all
    // with the CREATE.
    c.batch_execute("CREATE TEMP TABLE IF NOT EXISTS t(x int)").await.unwrap();
    let sink = c.copy_in::<_, bytes::Bytes>("COPY t FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    futures_util::SinkExt::send(&mut sink, bytes::Bytes::from_static(b"1\n")).await.unwrap();
    sink.finish().await.unwrap();
    let pool = mux.shared.pools.all().into_iter().find(|p| p.db == "lc_stats").expect("pool exists");
    let s = pool.counters.snapshot();
    assert_eq!(s.query_count, 55, "each Query message, or Sync, is one request");
    assert_eq!(s.xact_count, 55);
    // The Close may follow the COPY's Sync before its answer, on the same server.
    assert!((54..=55).contains(&s.server_assignment_count), "{s:?}");
    assert!(s.bytes_received > 50 * 14 && s.bytes_sent > 50 * 30, "{s:?}");
    assert!(s.query_time_us > 0 && s.xact_time_us >= s.query_time_us, "{s:?}");
    assert_eq!(s.client_login_count, 1);
}

/// As PgBouncer's SHOW STATS: a query and its transaction are counted when they start and timed
/// from when the client's bytes arrived, so a client queued for a server has its wait in
/// query_time and xact_time, a query still running is counted, and so is a transaction its
/// client abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_times_include_the_wait_and_counts_start_with_the_query() {
    let pg = Cluster::shared();
    own_db(pg, "lc_wait_stats");
    let mux = Pgmux::start(pg, "pool_mode = transaction\ndefault_pool_size = 1");
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "lc_wait_stats").await.unwrap();
    let b = mux.connect(SCRAM_USER, SCRAM_PASS, "lc_wait_stats").await.unwrap();
    let pool = mux.shared.pools.all().into_iter().find(|p| p.db == "lc_wait_stats").expect("pool exists");
    let before = pool.counters.snapshot();
    let slow = tokio::spawn(async move {
        a.simple_query("SELECT pg_sleep(1.2)").await.unwrap();
        a
    });
    eventually("the sleep to be counted while it runs", || {
        pool.counters.snapshot().query_count == before.query_count + 1
    })
    .await;
    assert_eq!(pool.counters.snapshot().xact_count, before.xact_count + 1);
    // b queues behind a's sleep for the one server.
    b.simple_query("SELECT 1").await.unwrap();
    let a = slow.await.unwrap();
    let s = pool.counters.snapshot();
    assert_eq!(s.query_count - before.query_count, 2);
    assert_eq!(s.xact_count - before.xact_count, 2);
    let waited = s.wait_time_us - before.wait_time_us;
    let query_time = s.query_time_us - before.query_time_us;
    assert!(waited >= 500_000, "b waited for a's sleep: {waited} us");
    assert!(query_time >= 1_200_000 + waited, "the wait is in query_time: {query_time} us, waited {waited} us");
    assert!(s.xact_time_us - before.xact_time_us >= 1_200_000 + waited, "{s:?}");
    // A transaction whose client leaves in the middle was started, so it is counted.
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    drop(a);
    let s2 = pool.counters.snapshot();
    assert_eq!(s2.xact_count - s.xact_count, 1, "{s2:?}");
    assert_eq!(s2.query_count - s.query_count, 1, "{s2:?}");
}

/// As PgBouncer's total_sent, every byte a server sends counts, its answers to pgmux's own
/// queries too: the same session with server_reset_query on counts DISCARD ALL's answer
/// (CommandComplete `DISCARD ALL` and ReadyForQuery, 23 bytes) more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_sent_counts_the_answers_to_pgmux_s_own_queries() {
    let pg = Cluster::shared();
    own_db(pg, "lc_sent");
    let mut sent = Vec::new();
    // The third closes its server after the reset (server_lifetime = 0: one use): counted too.
    for settings in [
        "server_reset_query =",
        "server_reset_query = DISCARD ALL",
        "server_reset_query = DISCARD ALL\nserver_lifetime = 0",
    ] {
        let mux = Pgmux::start(pg, &format!("pool_mode = session\n{settings}"));
        let c = mux.connect(SCRAM_USER, SCRAM_PASS, "lc_sent").await.unwrap();
        c.simple_query("SELECT 1").await.unwrap();
        let pool = mux.shared.pools.all().into_iter().find(|p| p.db == "lc_sent").expect("pool exists");
        let served = pool.counters.snapshot().server_assignment_count;
        drop(c);
        let kept = !settings.contains("lifetime");
        eventually(
            "the server released",
            || {
                if kept {
                    pool.idle_servers().len() == 1
                } else {
                    pool.counts().total == 0
                }
            },
        )
        .await;
        assert_eq!(served, 1);
        sent.push(pool.counters.snapshot().bytes_sent);
    }
    assert_eq!(sent[1], sent[0] + 23, "{sent:?}");
    assert_eq!(sent[2], sent[1], "{sent:?}");
}
