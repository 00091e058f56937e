//! SHOW rows in detail on the admin console: TOTALS' averages over every database, USERS' pool
//! sizes as PgBouncer prints them, and the ids that link SHOW CLIENTS, SERVERS and SOCKETS rows.

use std::time::Duration;

use tokio_postgres::Client;

use crate::admin::{col, console, query, CONSOLE};
use crate::harness::{Cluster, Pgmux, PgmuxProcess, MD5_USER, SCRAM_PASS, SCRAM_USER};

/// SHOW TOTALS averages over every database together, as PgBouncer's: the summed times over the
/// summed counts, not the databases' own averages added up (a slow and a fast database must not
/// read as twice as slow as the slow one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_totals_averages_all_databases_together() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, CONSOLE);
    let slow = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    for _ in 0..3 {
        slow.simple_query("SELECT pg_sleep(0.03)").await.unwrap();
    }
    let fast = mux.connect(SCRAM_USER, SCRAM_PASS, "postgres").await.unwrap();
    for _ in 0..9 {
        fast.simple_query("SELECT 1").await.unwrap();
    }
    let c = console(&mux).await;
    let (_, rows) = query(&c, "SHOW TOTALS").await.unwrap();
    let get = |name: &str| -> u64 {
        let r = rows.iter().find(|r| r[0].as_deref() == Some(name)).unwrap_or_else(|| panic!("{name}: {rows:?}"));
        r[1].as_deref().unwrap().parse().unwrap()
    };
    // The console's own connection counts one transaction of no time (its averages are not kept).
    let xacts = get("total_xact_count") - 1;
    assert_eq!(xacts, 12, "{rows:?}");
    assert_eq!(get("avg_xact_time"), get("total_xact_time") / xacts, "{rows:?}");
    assert_eq!(get("avg_query_time"), get("total_query_time") / xacts, "{rows:?}");
    // The mean over both lies between the databases' own (SHOW STATS totals), below the slow
    // one's, where their sum would be above it.
    let (cols, stats) = query(&c, "SHOW STATS").await.unwrap();
    let own = |db: &str| -> u64 {
        let r = stats.iter().find(|r| col(&cols, r, "database") == db).unwrap_or_else(|| panic!("{db}: {stats:?}"));
        let n: u64 = col(&cols, r, "total_xact_count").parse().unwrap();
        col(&cols, r, "total_xact_time").parse::<u64>().unwrap() / n
    };
    let (slow_avg, fast_avg) = (own("app"), own("postgres"));
    assert!(slow_avg > fast_avg, "app {slow_avg} postgres {fast_avg}");
    assert!(get("avg_xact_time") <= slow_avg, "one slow database in four times as many transactions: {rows:?}");
    assert!(get("avg_xact_time") >= fast_avg, "{rows:?}");
    // Each login waited for its new pool's first server (a connect and a SCRAM exchange), and
    // that counts as waiting, as in PgBouncer; the queries found their servers idle.
    assert!(get("total_wait_time") > 1_000, "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_users_prints_pool_sizes_as_pgbouncer() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(
        pg,
        &format!("{CONSOLE}\n[users]\n{SCRAM_USER} = pool_size=1 reserve_pool_size=2\n{MD5_USER} =\n"),
    );
    let c = console(&mux).await;
    let (cols, rows) = query(&c, "SHOW USERS").await.unwrap();
    let get = |user: &str, column: &str| {
        let r = rows.iter().find(|r| col(&cols, r, "name") == user).unwrap_or_else(|| panic!("{user}: {rows:?}"));
        r[cols.iter().position(|c| c == column).unwrap()].clone()
    };
    // Text "%9d" when set, an empty string (not NULL) when inherited.
    assert_eq!(get(SCRAM_USER, "pool_size").as_deref(), Some("        1"));
    assert_eq!(get(SCRAM_USER, "reserve_pool_size").as_deref(), Some("        2"));
    assert_eq!(get(MD5_USER, "pool_size").as_deref(), Some(""));
    assert_eq!(get(MD5_USER, "reserve_pool_size").as_deref(), Some(""));
}

/// The ids of SHOW SOCKETS rows.
async fn socket_ids(c: &Client) -> Vec<u64> {
    let (cols, rows) = query(c, "SHOW SOCKETS").await.unwrap();
    let mut ids: Vec<u64> = rows.iter().map(|r| col(&cols, r, "id").parse().unwrap()).collect();
    ids.sort_unstable();
    ids
}

/// One id sequence for clients and servers (a process of its own, so no other test takes ids);
/// SHOW SERVERS lists the active server with its id, ptr and link, which match the client's row
/// and the `S-0x..` log prefix; server_lifetime = 0 uses a server once, the first one included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_servers_share_one_id_sequence_and_link_to_each_other() {
    let pg = Cluster::shared();
    let userlist = format!("\"{SCRAM_USER}\" \"{}\"\n", pg.secret_of(SCRAM_USER));
    let mux = PgmuxProcess::start(
        pg,
        "app = host=$SOCKET port=$PORT",
        "auth_type = scram-sha-256\npool_mode = session\nserver_lifetime = 0",
        &userlist,
    );
    let c = mux.console().await;
    let start = socket_ids(&c).await;
    assert_eq!(start.len(), 1, "only the console: {start:?}");
    let first = start[0];
    for round in 1..=2u64 {
        let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        a.simple_query("SELECT 1").await.unwrap();
        let (client, server) = (first + 2 * round - 1, first + 2 * round);
        assert_eq!(socket_ids(&c).await, vec![first, client, server], "round {round}");
        let (cols, rows) = query(&c, "SHOW SERVERS").await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let s = &rows[0];
        assert_eq!(col(&cols, s, "id"), server.to_string());
        assert_eq!(col(&cols, s, "state"), "active");
        assert_eq!(col(&cols, s, "ptr"), format!("0x{server:x}"));
        assert_eq!(col(&cols, s, "link"), format!("0x{client:x}"));
        let (cols, rows) = query(&c, "SHOW CLIENTS").await.unwrap();
        let cl = rows.iter().find(|r| col(&cols, r, "database") == "app").unwrap();
        assert_eq!(
            (col(&cols, cl, "ptr"), col(&cols, cl, "link")),
            (format!("0x{client:x}").as_str(), format!("0x{server:x}").as_str())
        );
        assert_eq!(col(&cols, cl, "state"), "active");
        mux.wait_for_log(&format!("S-0x{server:x}: app/{SCRAM_USER}@"));
        drop(a);
        // Closed on release (server_lifetime = 0), and the client is gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while socket_ids(&c).await != vec![first] {
            assert!(std::time::Instant::now() < deadline, "{:?}", socket_ids(&c).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A fake PostgreSQL that takes a login and answers it only when `gate` is opened, then welcomes
/// with backend pid 4242, answers the SETs pgmux sends, and holds anything else.
async fn server_slow_to_log_in(gate: std::sync::Arc<tokio::sync::Notify>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let gate = gate.clone();
            tokio::spawn(async move {
                crate::harness::raw::accept_startup(&mut s).await?;
                gate.notified().await;
                crate::harness::raw::welcome(&mut s, (4242, 7)).await?;
                crate::harness::raw::answer_sets_hold_the_rest(&mut s).await
            });
        }
    });
    port
}

/// A server still logging in is listed in SHOW SERVERS as PgBouncer lists it, `new`, with no
/// backend pid yet (SHOW SOCKETS: `sv_login`), as SHOW POOLS counts it in `sv_login`; once its
/// pool has it, the same row shows its state and the pid the server sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_logging_in_is_listed_as_new() {
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let port = server_slow_to_log_in(gate.clone()).await;
    let mux = Pgmux::start_with(
        Cluster::shared(),
        crate::harness::pgmux::Setup {
            pgbouncer: "admin_users = scram_user",
            databases: &format!("app = host=$SOCKET port=$PORT\nslowlogin = host=127.0.0.1 port={port}"),
            ..Default::default()
        },
    );
    let console = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    let rows = |what: &'static str| {
        let console = &console;
        async move {
            let all = crate::harness::show_rows(console, what).await;
            all.into_iter().filter(|r| r["database"] == "slowlogin").collect::<Vec<_>>()
        }
    };
    // The first client of the pool waits for its first server's login.
    let url = mux.url(SCRAM_USER, SCRAM_PASS, "slowlogin");
    let client = tokio::spawn(async move {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok::<_, tokio_postgres::Error>(c)
    });
    crate::harness::eventually_async("a server logging in", || async { !rows("SERVERS").await.is_empty() }).await;
    let servers = rows("SERVERS").await;
    assert_eq!(servers.len(), 1, "{servers:?}");
    let new = &servers[0];
    assert_eq!([&new["state"], &new["remote_pid"], &new["link"]], ["new", "0", ""]);
    assert_eq!([&new["user"], &new["addr"], &new["port"]], [SCRAM_USER, "127.0.0.1", &port.to_string()]);
    assert!(!new["local_port"].is_empty(), "its own end: {new:?}");
    assert_eq!(rows("POOLS").await[0]["sv_login"], "1");
    let sockets = rows("SOCKETS").await;
    assert!(sockets.iter().any(|r| r["id"] == new["id"] && r["state"] == "sv_login"), "{sockets:?}");
    gate.notify_one();
    let _client = tokio::time::timeout(Duration::from_secs(10), client).await.unwrap().unwrap().unwrap();
    let servers = rows("SERVERS").await;
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!([&servers[0]["id"], &servers[0]["state"], &servers[0]["remote_pid"]], [&new["id"], "idle", "4242"]);
    assert_eq!(rows("POOLS").await[0]["sv_login"], "0");
}

/// A listener whose accept queue is full, so that a connect to it hangs (its SYN is dropped):
/// the port and the connections that fill it (kept open).
async fn listener_that_never_answers() -> (u16, tokio::net::TcpListener, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let l = socket.listen(0).unwrap();
    let addr = l.local_addr().unwrap();
    let mut fill = Vec::new();
    // Connects that complete fill the queue; the first that does not shows it is full.
    while let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(300), tokio::net::TcpStream::connect(addr)).await {
        fill.push(s);
        assert!(fill.len() < 16, "the accept queue does not fill");
    }
    (addr.port(), l, fill)
}

/// A server pgmux is still connecting to is `new` too, as in PgBouncer, with its address and no
/// local end yet; when the connect fails (server_connect_timeout) its row goes (a later attempt
/// is listed under an id of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_still_connecting_is_listed_as_new_until_the_connect_fails() {
    let (port, _listener, _fill) = listener_that_never_answers().await;
    let mux = Pgmux::start_with(
        Cluster::shared(),
        crate::harness::pgmux::Setup {
            pgbouncer: "admin_users = scram_user\nserver_connect_timeout = 2",
            databases: &format!("app = host=$SOCKET port=$PORT\nnoanswer = host=127.0.0.1 port={port}"),
            ..Default::default()
        },
    );
    let console = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    let servers = || async {
        let all = crate::harness::show_rows(&console, "SERVERS").await;
        all.into_iter().filter(|r| r["database"] == "noanswer").collect::<Vec<_>>()
    };
    let url = mux.url(SCRAM_USER, SCRAM_PASS, "noanswer");
    let client = tokio::spawn(async move { tokio_postgres::connect(&url, tokio_postgres::NoTls).await.map(|_| ()) });
    crate::harness::eventually_async("a server connecting", || async { !servers().await.is_empty() }).await;
    let rows = servers().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let s = &rows[0];
    assert_eq!([&s["state"], &s["addr"], &s["port"], &s["remote_pid"]], ["new", "127.0.0.1", &port.to_string(), "0"]);
    assert_eq!([&s["local_addr"], &s["local_port"]], ["", ""], "not connected yet: {s:?}");
    // The connect times out after 2 s; the next attempt (server_login_retry) is a row of its own.
    let first = s["id"].clone();
    crate::harness::eventually_async("the failed connect's row gone", || async {
        servers().await.iter().all(|r| r["id"] != first)
    })
    .await;
    client.abort();
}

/// SHOW CLIENTS goes pool by pool as PgBouncer's: pools by name, and in a pool the clients
/// active or idle before those waiting for a server, whatever order they connected in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_lists_pool_by_pool_active_before_waiting() {
    let mux = Pgmux::start_with(
        Cluster::shared(),
        crate::harness::pgmux::Setup {
            pgbouncer: "admin_users = scram_user\ndefault_pool_size = 1",
            databases: "zz = host=$SOCKET port=$PORT dbname=app\naa = host=$SOCKET port=$PORT dbname=app",
            ..Default::default()
        },
    );
    let console = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    // Connected first, so lower ids: the client that will wait, then one of pool `zz`.
    let waiter = mux.connect(SCRAM_USER, SCRAM_PASS, "aa").await.unwrap();
    let _other = mux.connect(SCRAM_USER, SCRAM_PASS, "zz").await.unwrap();
    let holder = mux.connect(SCRAM_USER, SCRAM_PASS, "aa").await.unwrap();
    holder.simple_query("BEGIN").await.unwrap();
    let queued = tokio::spawn(async move { waiter.simple_query("SELECT 1").await.map(|_| ()) });
    crate::harness::eventually_async("a client waiting", || async {
        crate::harness::show_rows(&console, "CLIENTS").await.iter().any(|r| r["state"] == "waiting")
    })
    .await;
    let rows = crate::harness::show_rows(&console, "CLIENTS").await;
    let order: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r["database"] != "pgbouncer")
        .map(|r| (r["database"].as_str(), r["state"].as_str()))
        .collect();
    assert_eq!(order, [("aa", "active"), ("aa", "waiting"), ("zz", "idle")], "{rows:?}");
    holder.simple_query("COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), queued).await.unwrap().unwrap().unwrap();
}

/// SHOW CLIENTS' `wait` / `wait_us` are how long the client's current request has been under
/// way, its wait for a server included, as PgBouncer's: a client a second into its query
/// shows it; an idle client, and the same client once its query is done, show 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_wait_is_the_age_of_the_running_query() {
    let mux = Pgmux::start_with(
        Cluster::shared(),
        crate::harness::pgmux::Setup { pgbouncer: "admin_users = scram_user", ..Default::default() },
    );
    let console = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    let busy = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let idle = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    idle.simple_query("SELECT 1").await.unwrap();
    let waits = || async {
        let rows = crate::harness::show_rows(&console, "CLIENTS").await;
        let mut w: Vec<(String, u64, u64)> = rows
            .iter()
            .filter(|r| r["database"] == "app")
            .map(|r| (r["state"].clone(), r["wait"].parse().unwrap(), r["wait_us"].parse().unwrap()))
            .collect();
        w.sort();
        w
    };
    let sleeper = tokio::spawn(async move {
        busy.simple_query("SELECT pg_sleep(1.5)").await.unwrap();
        busy
    });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let during = waits().await;
    assert_eq!(during.len(), 2, "{during:?}");
    assert_eq!((during[0].0.as_str(), during[0].1), ("active", 1), "a second into its query: {during:?}");
    assert_eq!(during[1], ("idle".to_owned(), 0, 0));
    let _busy = sleeper.await.unwrap();
    assert_eq!(waits().await, [("idle".to_owned(), 0, 0), ("idle".to_owned(), 0, 0)]);
}

/// A request closed by a Flush instead of a Sync shows its age in `wait` as one closed by a
/// Sync does (PgBouncer's query_start is set by any message the client sends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_wait_counts_a_batch_closed_by_a_flush() {
    use pgmux_protocol::build;

    use crate::harness::raw::{trusting_pgmux, Raw};
    let mux = trusting_pgmux(&format!("admin_users = {SCRAM_USER}"));
    let console = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    let mut raw = Raw::connect(&mux).await;
    raw.send(|o| build::query(o, "BEGIN")).await;
    assert_eq!(raw.until_ready().await, ["C", "Z"]);
    raw.send(|o| {
        build::parse(o, "", "SELECT pg_sleep(1.5)");
        build::bind(o, "", "", &[]);
        build::execute(o, "");
        build::flush(o);
    })
    .await;
    // The clock runs until the Sync: at 1.5 s `wait` is 1 with half a second to spare.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rows = crate::harness::show_rows(&console, "CLIENTS").await;
    let waits: Vec<(&str, &str)> =
        rows.iter().filter(|r| r["database"] == "app").map(|r| (r["state"].as_str(), r["wait"].as_str())).collect();
    assert_eq!(waits, [("active", "1")], "a second into its batch");
    assert_eq!(raw.until(b'C').await, ["1", "2", "D:", "C"]);
    raw.send(build::sync).await;
    assert_eq!(raw.until_ready().await, ["Z"]);
    let rows = crate::harness::show_rows(&console, "CLIENTS").await;
    let app: Vec<&str> = rows.iter().filter(|r| r["database"] == "app").map(|r| r["wait"].as_str()).collect();
    assert_eq!(app, ["0"], "answered: no request under way");
}
