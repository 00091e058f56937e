//! Limits as PgBouncer enforces and counts them: clients per database and per user (their own
//! values over the global ones, the console's exemption for admin_users, counting from startup to
//! disconnect), pool_size and reserve_pool_size precedence, the reserve pool's timing and log
//! line, servers shared under max_db_connections / max_user_connections (eviction, waiters of
//! one pool served when another frees a server), min_pool_size for forced users.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::pgmux::Setup;
use crate::harness::{db_error, Cluster, Pgmux, PgmuxProcess, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER};

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

fn userlist(pg: &Cluster) -> String {
    format!("\"{SCRAM_USER}\" \"{}\"\n\"{MD5_USER}\" \"{}\"\n", pg.secret_of(SCRAM_USER), pg.secret_of(MD5_USER))
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Rows of a console SHOW as column -> text, keyed by the first column.
async fn show(c: &Client, what: &str) -> HashMap<String, HashMap<String, String>> {
    let mut cols = Vec::new();
    let mut rows = HashMap::new();
    for m in c.simple_query(&format!("SHOW {what}")).await.unwrap() {
        match m {
            SimpleQueryMessage::RowDescription(d) => cols = d.iter().map(|c| c.name().to_owned()).collect(),
            SimpleQueryMessage::Row(r) => {
                let row: HashMap<String, String> =
                    cols.iter().enumerate().map(|(i, c)| (c.clone(), r.get(i).unwrap_or("").to_owned())).collect();
                rows.insert(row[&cols[0]].clone(), row);
            }
            _ => {}
        }
    }
    rows
}

fn exceeded(what: &str) -> (String, String) {
    ("08P01".into(), format!("client connections exceeded ({what})"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_client_connections_database_value_over_global() {
    let pg = Cluster::shared();
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: "auth_type = md5\nadmin_users = scram_user\nmax_db_client_connections = 1",
            databases: "two = host=$SOCKET port=$PORT dbname=app max_db_client_connections=2\n\
                        one = host=$SOCKET port=$PORT dbname=app",
            ..Setup::default()
        },
    );
    let first = mux.connect(MD5_USER, MD5_PASS, "two").await.unwrap();
    let _second = mux.connect(MD5_USER, MD5_PASS, "two").await.unwrap();
    let e = mux.connect(MD5_USER, MD5_PASS, "two").await.unwrap_err();
    assert_eq!(db_error(&e), exceeded("max_db_client_connections"));
    let _only = mux.connect(MD5_USER, MD5_PASS, "one").await.unwrap();
    let e = mux.connect(MD5_USER, MD5_PASS, "one").await.unwrap_err();
    assert_eq!(db_error(&e), exceeded("max_db_client_connections"), "the global value applies");

    // The console is a database too, but admin_users pass its limit (and are counted).
    let console = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    let _console2 = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.expect("admin_users are exempt");
    let dbs = show(&console, "DATABASES").await;
    let got = |db: &str| (dbs[db]["max_client_connections"].clone(), dbs[db]["current_client_connections"].clone());
    assert_eq!(got("two"), ("2".into(), "2".into()));
    assert_eq!(got("one"), ("1".into(), "1".into()));
    assert_eq!(got("pgbouncer"), ("1".into(), "2".into()));

    // A client that leaves frees its place.
    drop(first);
    eventually("the count to drop", || mux.shared.client_counts.db("two") == 1).await;
    mux.connect(MD5_USER, MD5_PASS, "two").await.expect("a place is free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_user_client_connections_user_value_over_global_and_console_exemption() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(
        pg,
        "auth_type = md5\nadmin_users = scram_user\nstats_users = md5_user\nmax_user_client_connections = 1\n\
         [users]\nscram_user = max_user_client_connections=2",
    );
    let md5 = mux.connect(MD5_USER, MD5_PASS, "app").await.unwrap();
    let e = mux.connect(MD5_USER, MD5_PASS, "app").await.unwrap_err();
    assert_eq!(db_error(&e), exceeded("max_user_client_connections"), "the global value applies");
    let e = mux.connect(MD5_USER, MD5_PASS, "pgbouncer").await.unwrap_err();
    assert_eq!(db_error(&e), exceeded("max_user_client_connections"), "stats_users are not exempt");

    let _a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let _b = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let e = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap_err();
    assert_eq!(db_error(&e), exceeded("max_user_client_connections"), "the [users] value applies");
    let console = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.expect("admin_users pass on the console");
    let users = show(&console, "USERS").await;
    let got =
        |u: &str| (users[u]["max_user_client_connections"].clone(), users[u]["current_client_connections"].clone());
    assert_eq!(got(SCRAM_USER), ("2".into(), "3".into()));
    assert_eq!(got(MD5_USER), ("1".into(), "1".into()));

    // Counted from startup to disconnect, whether the login succeeds or not.
    drop(md5);
    eventually("md5_user to leave", || mux.shared.client_counts.user(MD5_USER) == 0).await;
    let e = mux.connect(MD5_USER, "wrong", "app").await.unwrap_err();
    assert!(db_error(&e).1.contains("authentication failed"), "{e:?}");
    eventually("a failed login to be uncounted", || mux.shared.client_counts.user(MD5_USER) == 0).await;
    let users = show(&console, "USERS").await;
    assert_eq!(users[MD5_USER]["current_client_connections"], "0");
    let _ = mux.connect("nobody", "x", "app").await.unwrap_err();
    assert!(!show(&console, "USERS").await.contains_key("nobody"), "unknown users are not listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_passes_max_client_conn() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "auth_type = md5\nadmin_users = scram_user\nmax_client_conn = 1");
    let _app = mux.connect(MD5_USER, MD5_PASS, "app").await.unwrap();
    let e = mux.connect(MD5_USER, MD5_PASS, "app").await.unwrap_err();
    assert_eq!(db_error(&e).1, "no more connections allowed (max_client_conn)");
    mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.expect("the console is not limited");
}

/// Runs `n` concurrent `pg_sleep(secs)` as `user` on `db`, each on its own connection.
async fn sleepers(url: String, n: usize, secs: f64) {
    let tasks = (0..n).map(|_| {
        let url = url.clone();
        async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            c.simple_query(&format!("SELECT pg_sleep({secs})")).await.unwrap();
        }
    });
    join_all(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_pool_size_and_reserve_over_database_with_the_reserve_logged() {
    let pg = Cluster::shared();
    own_db(pg, "lim_reserve");
    let mux = PgmuxProcess::start(
        pg,
        "r = host=$SOCKET port=$PORT dbname=lim_reserve pool_size=3 reserve_pool_size=3",
        "auth_type = md5\npool_mode = transaction\nreserve_pool_timeout = 1.5\n\
         [users]\nscram_user = pool_size=1 reserve_pool_size=1",
        &userlist(pg),
    );
    // Logged in first (SCRAM is slow in debug builds), so that only the queries wait.
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(mux.connect(SCRAM_USER, SCRAM_PASS, "r").await.unwrap());
    }
    assert_eq!(servers(pg, "lim_reserve"), 1);
    let started = Instant::now();
    let work = tokio::spawn(async move {
        join_all(clients.iter().map(|c| c.simple_query("SELECT pg_sleep(4)"))).await.into_iter().for_each(|r| {
            r.unwrap();
        })
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(servers(pg, "lim_reserve"), 1, "the user's pool_size, not the database's");
    // One more from the user's reserve once a client has waited reserve_pool_timeout, and no
    // more: the user's reserve_pool_size, not the database's.
    let (mut most, mut second_at) = (1, None);
    while started.elapsed() < Duration::from_millis(3500) {
        let n = servers(pg, "lim_reserve");
        if n == 2 && second_at.is_none() {
            second_at = Some(started.elapsed());
        }
        most = most.max(n);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(most, 2, "{}", mux.log());
    assert!(second_at.is_some_and(|t| t >= Duration::from_millis(1500)), "{second_at:?}");
    work.await.unwrap();
    let lines: Vec<String> =
        mux.log().lines().filter(|l| l.contains("taking connection from reserve_pool")).map(str::to_owned).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(" WARNING C-0x") && lines[0].contains(" r/scram_user@127.0.0.1:"), "{}", lines[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reserve_without_a_reserve_pool_timeout() {
    let pg = Cluster::shared();
    own_db(pg, "lim_noreserve");
    let mux = Pgmux::start(pg, "default_pool_size = 1\nreserve_pool_size = 2\nreserve_pool_timeout = 0");
    let work = tokio::spawn(sleepers(mux.url(SCRAM_USER, SCRAM_PASS, "lim_noreserve"), 3, 0.6));
    crate::harness::eventually(Duration::from_secs(10), "the first sleeper served", || {
        servers(pg, "lim_noreserve") >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(servers(pg, "lim_noreserve"), 1, "PgBouncer: a zero reserve_pool_timeout means no reserve");
    work.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_evicts_an_idle_server_of_another_pool() {
    let pg = Cluster::shared();
    own_db(pg, "lim_evict");
    let mux = PgmuxProcess::start(
        pg,
        "e = host=$SOCKET port=$PORT dbname=lim_evict max_db_connections=1",
        "auth_type = md5\npool_mode = transaction\nserver_idle_timeout = 600\nquery_wait_timeout = 30",
        &userlist(pg),
    );
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "e").await.unwrap();
    a.simple_query("SELECT 1").await.unwrap();
    // scram_user's server now sits idle in its pool; md5_user's pool needs the database's only
    // place, and gets it at once, not after server_idle_timeout.
    let started = Instant::now();
    let b = mux.connect(MD5_USER, MD5_PASS, "e").await.unwrap();
    b.simple_query("SELECT 1").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(mux.log().contains("closing because: evicted"), "{}", mux.log());
    eventually("the evicted server to be gone", || servers(pg, "lim_evict") == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_user_connections_serves_a_waiter_of_another_database_when_a_server_frees() {
    let pg = Cluster::shared();
    own_db(pg, "lim_user_a");
    own_db(pg, "lim_user_b");
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: "max_user_connections = 1\nserver_idle_timeout = 600\nquery_wait_timeout = 30",
            databases: "ua = host=$SOCKET port=$PORT dbname=lim_user_a\nub = host=$SOCKET port=$PORT dbname=lim_user_b",
            ..Setup::default()
        },
    );
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "ua").await.unwrap();
    a.batch_execute("BEGIN; SELECT 1").await.unwrap();
    // The user's only server is held by a transaction on ua: ub's client waits ...
    let url = mux.url(SCRAM_USER, SCRAM_PASS, "ub");
    let waiter = tokio::spawn(async move {
        let (b, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        b.simple_query("SELECT 1").await.unwrap();
        Instant::now()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "max_user_connections = 1 holds the second client back");
    // ... and is served as soon as ua's server is free.
    let freed = Instant::now();
    a.batch_execute("COMMIT").await.unwrap();
    let served = waiter.await.unwrap();
    assert!(served.duration_since(freed) < Duration::from_secs(2), "took {:?}", served.duration_since(freed));
    let total = || servers(pg, "lim_user_a") + servers(pg, "lim_user_b");
    eventually("one server for the user", || total() == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_fills_a_forced_user_pool_without_clients_up_to_pool_size() {
    let pg = Cluster::shared();
    own_db(pg, "lim_minforced");
    let _mux = Pgmux::start_with(
        pg,
        Setup {
            databases: &format!(
                "mf = host=$SOCKET port=$PORT dbname=lim_minforced user={SCRAM_USER} password={SCRAM_PASS} \
                 min_pool_size=3 pool_size=2"
            ),
            ..Setup::default()
        },
    );
    eventually("servers for min_pool_size", || servers(pg, "lim_minforced") == 2).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(servers(pg, "lim_minforced"), 2, "min_pool_size never opens more than pool_size");
}
