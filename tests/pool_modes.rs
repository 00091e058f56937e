//! Session, transaction and statement pooling against real PostgreSQL.

use futures_util::future::join_all;

use crate::harness::{Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_one_server_per_client() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "pool_mode = session\ndefault_pool_size = 2");
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    a.batch_execute("CREATE TEMP TABLE t(x int); INSERT INTO t VALUES (1)").await.unwrap();
    let pid = backend_pid(&a).await;
    let b = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    for _ in 0..5 {
        assert_eq!(backend_pid(&a).await, pid);
        let _ = backend_pid(&b).await;
    }
    let n: i64 = a.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "session state survives between statements");
    drop(a);
    // The server goes back after DISCARD ALL: the next client must not see the temp table.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let seen = c.query("SELECT 1 FROM pg_class WHERE relname = 't' AND relpersistence = 't'", &[]).await.unwrap();
    assert!(seen.is_empty(), "server_reset_query must clean session state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_shares_servers_between_transactions() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "pool_mode = transaction\ndefault_pool_size = 1");
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let b = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    // With one server, both clients must be served by the same backend, one transaction at a time.
    assert_eq!(backend_pid(&a).await, backend_pid(&b).await);
    a.batch_execute("BEGIN; CREATE TEMP TABLE tx_only(x int) ON COMMIT DROP").await.unwrap();
    // b waits while a holds the server inside its transaction, then proceeds after COMMIT.
    let b_task = tokio::spawn(async move { backend_pid(&b).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!b_task.is_finished(), "b must wait while a is inside a transaction");
    a.batch_execute("INSERT INTO tx_only VALUES (1); COMMIT").await.unwrap();
    b_task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_mode_refuses_transaction_blocks() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "pool_mode = statement\ndefault_pool_size = 2");
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let v: i32 = a.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
    let err = a.batch_execute("BEGIN").await.unwrap_err();
    let db = err.as_db_error().expect("a server-style error");
    assert_eq!(db.code().code(), "08P01", "PgBouncer's SQLSTATE");
    assert_eq!(db.message(), "transaction blocks not allowed in statement pooling mode");
    // Other clients are not affected.
    let b = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(b.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_clients_than_servers_all_succeed() {
    let pg = Cluster::shared();
    // Its own database, so that pg_stat_activity counts only this test's servers.
    pg.psql("postgres", &format!("CREATE DATABASE pm_many OWNER {SCRAM_USER}"));
    let mux = Pgmux::start(pg, "pool_mode = transaction\ndefault_pool_size = 3\nmax_client_conn = 100");
    let tasks = (0..30).map(|i| {
        let url = mux.url(SCRAM_USER, SCRAM_PASS, "pm_many");
        async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            for _ in 0..5 {
                let v: i32 = c.query_one("SELECT $1::int FROM pg_sleep(0.01)", &[&i]).await.unwrap().get(0);
                assert_eq!(v, i);
            }
        }
    });
    join_all(tasks).await;
    let servers: i64 = pg
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{SCRAM_USER}' AND datname = 'pm_many'"),
        )
        .parse()
        .unwrap();
    assert!(servers <= 3, "pool_size 3 must bound server connections, saw {servers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_pool_opens_extra_servers_after_timeout() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(
        pg,
        "pool_mode = transaction\ndefault_pool_size = 1\nreserve_pool_size = 1\nreserve_pool_timeout = 0.1",
    );
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let b = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let (x, y) = tokio::join!(a.query_one("SELECT pg_backend_pid() FROM pg_sleep(3)", &[]), async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        b.query_one("SELECT pg_backend_pid()", &[]).await
    });
    let (x, y): (i32, i32) = (x.unwrap().get(0), y.unwrap().get(0));
    assert_ne!(x, y, "the second client must get a reserve server, not wait for the first's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_gives_pgbouncer_error() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "pool_mode = transaction\ndefault_pool_size = 1\nquery_wait_timeout = 1");
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let b = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    a.batch_execute("BEGIN").await.unwrap();
    let err = b.query_one("SELECT 1", &[]).await.unwrap_err();
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!((db.code().code(), db.message()), ("08P01", "query_wait_timeout"));
    a.batch_execute("COMMIT").await.unwrap();
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    c.query_one("SELECT 1", &[]).await.unwrap();
}

/// server_reset_query_always: in transaction mode the reset query runs on the server after
/// every transaction, before anyone gets the server again (a client of a pool of one waits
/// for it), and the client goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_query_always_runs_after_every_transaction() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(
        pg,
        "default_pool_size = 1\nserver_reset_query_always = 1\nserver_reset_query = SELECT 'reset ran'",
    );
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let direct = pg.connect_direct().await;
    let last_query = |pid: i32| {
        let direct = &direct;
        async move {
            let row = direct.query_one("SELECT query FROM pg_stat_activity WHERE pid = $1", &[&pid]).await.unwrap();
            row.get::<_, String>(0)
        }
    };
    for n in 0..3 {
        let pid = backend_pid(&c).await;
        let mut seen = String::new();
        for _ in 0..100 {
            seen = last_query(pid).await;
            if seen == "SELECT 'reset ran'" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(seen, "SELECT 'reset ran'", "transaction {n}");
    }
    // Inside a block the server is the client's until the block ends: no reset in between.
    c.batch_execute("BEGIN").await.unwrap();
    let pid = backend_pid(&c).await;
    assert_eq!(last_query(pid).await, "SELECT pg_backend_pid()");
    c.batch_execute("COMMIT").await.unwrap();
}

/// A server running its reset query after its client let it go is PgBouncer's `tested`: SHOW
/// POOLS counts it in `sv_tested` (not `sv_active`), SHOW SERVERS lists it so. A reset that
/// hangs is given up after server_idle_timeout, as PgBouncer's janitor closes a server left in
/// that list, and the pool's slot comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_running_its_reset_is_tested_and_a_hung_reset_is_closed() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(
        pg,
        "default_pool_size = 1\nadmin_users = scram_user\nserver_idle_timeout = 4\n\
         server_reset_query_always = 1\nserver_reset_query = SELECT pg_sleep(30)",
    );
    let console = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let pid = backend_pid(&c).await;
    let app_pool = |rows: Vec<std::collections::HashMap<String, String>>| {
        rows.into_iter().find(|r| r["database"] == "app").expect("the app pool")
    };
    // The server is set aside before the client has its answer; the reset runs 4 s.
    let pool = app_pool(crate::harness::show_rows(&console, "POOLS").await);
    let counts = ["sv_active", "sv_tested", "sv_idle"].map(|c| pool[c].as_str());
    assert_eq!(counts, ["0", "1", "0"], "{pool:?}");
    let server = app_pool(crate::harness::show_rows(&console, "SERVERS").await);
    assert_eq!((server["state"].as_str(), server["remote_pid"].as_str()), ("tested", pid.to_string().as_str()));
    assert_eq!(server["link"], "", "no client holds a server being reset");
    // server_idle_timeout (4 s) ends the reset's wait well before its 30 s.
    crate::harness::eventually_async("the hung reset given up", || async {
        app_pool(crate::harness::show_rows(&console, "POOLS").await)["sv_tested"] == "0"
    })
    .await;
    assert!(
        !crate::harness::show_rows(&console, "SERVERS").await.iter().any(|s| s["remote_pid"] == pid.to_string()),
        "the server whose reset hung is closed"
    );
    // The slot is back: the pool's one server is a new one.
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), backend_pid(&c)).await.expect("a server");
    assert_ne!(next, pid);
    let direct = pg.connect_direct().await;
    direct.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    direct.execute("SELECT pg_terminate_backend($1)", &[&next]).await.unwrap();
}

/// A server running server_check_query before its client gets it is PgBouncer's `tested` too:
/// in `sv_tested`, not `sv_login` (nor `sv_active`: no client is on it yet), and `tested` in
/// SHOW SERVERS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_running_its_check_query_is_tested() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(
        pg,
        "default_pool_size = 1\nadmin_users = scram_user\nserver_check_delay = 0\n\
         server_check_query = SELECT pg_sleep(3)",
    );
    let console = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    // The first checkout logs in (no check); the next one checks the server first.
    let pid = backend_pid(&c).await;
    let next = tokio::spawn(async move { backend_pid(&c).await });
    let app = |rows: Vec<std::collections::HashMap<String, String>>| {
        rows.into_iter().find(|r| r["database"] == "app").expect("the app pool")
    };
    crate::harness::eventually_async("the check under way", || async {
        app(crate::harness::show_rows(&console, "POOLS").await)["sv_tested"] == "1"
    })
    .await;
    let pool = app(crate::harness::show_rows(&console, "POOLS").await);
    let counts = ["sv_active", "sv_tested", "sv_login", "sv_idle"].map(|c| pool[c].as_str());
    assert_eq!(counts, ["0", "1", "0", "0"], "{pool:?}");
    let server = app(crate::harness::show_rows(&console, "SERVERS").await);
    assert_eq!((server["state"].as_str(), server["remote_pid"].as_str()), ("tested", pid.to_string().as_str()));
    assert_eq!(next.await.unwrap(), pid, "the checked server serves the client");
    // Back in the pool; with server_check_delay = 0 every idle server is due for a check, so
    // `used`, as PgBouncer's janitor marks it.
    let pool = app(crate::harness::show_rows(&console, "POOLS").await);
    let counts = ["sv_active", "sv_tested", "sv_login", "sv_used"].map(|c| pool[c].as_str());
    assert_eq!(counts, ["0", "0", "0", "1"], "{pool:?}");
}
