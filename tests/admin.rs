//! The admin console on database `pgbouncer`: column names and order of every SHOW against
//! PgBouncer 1.25's, values against a known workload, control commands under load, RELOAD with
//! a good and a bad ini, access rules for admin_users and stats_users.

use std::process::Command;
use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::pgmux::Setup;
use crate::harness::{db_error, run, Cluster, Pgmux, PgmuxProcess, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER};

pub(crate) const CONSOLE: &str = "admin_users = scram_user\nstats_users = md5_user\nauth_type = md5";

pub(crate) async fn console(mux: &Pgmux) -> Client {
    mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.expect("admin console login")
}

/// Column names and rows (as text) of one console command.
pub(crate) async fn query(
    c: &Client,
    sql: &str,
) -> Result<(Vec<String>, Vec<Vec<Option<String>>>), tokio_postgres::Error> {
    let mut cols = Vec::new();
    let mut rows = Vec::new();
    for m in c.simple_query(sql).await? {
        match m {
            SimpleQueryMessage::RowDescription(d) => cols = d.iter().map(|c| c.name().to_owned()).collect(),
            SimpleQueryMessage::Row(r) => rows.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect()),
            _ => {}
        }
    }
    Ok((cols, rows))
}

pub(crate) fn col<'a>(cols: &[String], row: &'a [Option<String>], name: &str) -> &'a str {
    let i = cols.iter().position(|c| c == name).unwrap_or_else(|| panic!("no column {name} in {cols:?}"));
    row[i].as_deref().unwrap_or("")
}

fn split(s: &str) -> Vec<String> {
    s.split(", ").map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_show_has_pgbouncer_columns_in_order() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, CONSOLE);
    let c = console(&mux).await;
    let sockets = "type, user, database, replication, state, addr, port, local_addr, local_port, connect_time, request_time, wait, wait_us, close_needed, ptr, link, remote_pid, tls, application_name, prepared_statements, id";
    let expected: &[(&str, String)] = &[
        ("POOLS", "database, user, cl_active, cl_waiting, cl_active_cancel_req, cl_waiting_cancel_req, sv_active, sv_active_cancel, sv_being_canceled, sv_idle, sv_used, sv_tested, sv_login, maxwait, maxwait_us, pool_mode, load_balance_hosts".into()),
        ("STATS", "database, total_server_assignment_count, total_xact_count, total_query_count, total_received, total_sent, total_xact_time, total_query_time, total_wait_time, total_client_parse_count, total_server_parse_count, total_bind_count, total_client_login_count, avg_server_assignment_count, avg_xact_count, avg_query_count, avg_recv, avg_sent, avg_xact_time, avg_query_time, avg_wait_time, avg_client_parse_count, avg_server_parse_count, avg_bind_count, avg_client_login_count".into()),
        ("STATS_TOTALS", "database, server_assignment_count, xact_count, query_count, bytes_received, bytes_sent, xact_time, query_time, wait_time, client_parse_count, server_parse_count, bind_count, client_login_count".into()),
        ("STATS_AVERAGES", "database, server_assignment_count, xact_count, query_count, bytes_received, bytes_sent, xact_time, query_time, wait_time, avg_client_parse_count, avg_server_parse_count, avg_bind_count, avg_client_login_count".into()),
        ("TOTALS", "name, value".into()),
        ("CLIENTS", sockets.into()),
        ("SERVERS", sockets.into()),
        ("SOCKETS", format!("{sockets}, recv_pos, pkt_pos, pkt_remain, send_pos, send_remain, pkt_avail, send_avail")),
        ("ACTIVE_SOCKETS", format!("{sockets}, recv_pos, pkt_pos, pkt_remain, send_pos, send_remain, pkt_avail, send_avail")),
        ("DATABASES", "name, host, port, database, force_user, pool_size, min_pool_size, reserve_pool_size, server_lifetime, pool_mode, load_balance_hosts, max_connections, current_connections, max_client_connections, current_client_connections, paused, disabled".into()),
        ("USERS", "name, pool_size, reserve_pool_size, pool_mode, max_user_connections, current_connections, max_user_client_connections, current_client_connections".into()),
        ("PEERS", "peer_id, host, port, pool_size".into()),
        ("PEER_POOLS", "peer_id, cl_active_cancel_req, cl_waiting_cancel_req, sv_active_cancel, sv_login".into()),
        ("LISTS", "list, items".into()),
        ("CONFIG", "key, value, default, changeable".into()),
        ("MEM", "name, size, used, free, memtotal".into()),
        ("FDS", "fd, task, user, database, addr, port, cancel, link, client_encoding, std_strings, datestyle, timezone, password, scram_client_key, scram_server_key".into()),
        ("DNS_HOSTS", "hostname, ttl, addrs".into()),
        ("DNS_ZONES", "zonename, serial, count".into()),
        ("VERSION", "version".into()),
        ("STATE", "key, value".into()),
    ];
    // Make every list non-empty where it can be.
    let app = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    app.simple_query("SELECT 1").await.unwrap();
    for (what, cols) in expected {
        let (got, _) = query(&c, &format!("SHOW {what}")).await.unwrap_or_else(|e| panic!("SHOW {what}: {e}"));
        assert_eq!(got, split(cols), "SHOW {what}");
    }
    let (_, rows) = query(&c, "show version;").await.unwrap();
    assert_eq!(rows[0][0].as_deref().unwrap(), pgmux::version_string());
    let (cols, rows) = query(&c, "SHOW LISTS").await.unwrap();
    let lists: Vec<&str> = rows.iter().map(|r| col(&cols, r, "list")).collect();
    assert_eq!(
        lists,
        [
            "databases",
            "users",
            "peers",
            "pools",
            "peer_pools",
            "free_clients",
            "used_clients",
            "login_clients",
            "free_servers",
            "used_servers",
            "dns_names",
            "dns_zones",
            "dns_queries",
            "dns_pending"
        ]
    );
    let (cols, rows) = query(&c, "SHOW CONFIG").await.unwrap();
    let admin = rows.iter().find(|r| col(&cols, r, "key") == "admin_users").unwrap();
    assert_eq!(col(&cols, admin, "value"), "scram_user");
    assert_eq!(col(&cols, admin, "changeable"), "yes");
    let (_, rows) = query(&c, "SHOW STATE").await.unwrap();
    assert_eq!(rows[0], vec![Some("active".into()), Some("yes".into())]);
    // The client and its server are listed.
    let (cols, rows) = query(&c, "SHOW CLIENTS").await.unwrap();
    assert!(rows.iter().any(|r| col(&cols, r, "user") == SCRAM_USER && col(&cols, r, "database") == "app"));
    let (cols, rows) = query(&c, "SHOW SERVERS").await.unwrap();
    assert!(rows.iter().any(|r| col(&cols, r, "database") == "app" && col(&cols, r, "state") == "idle"));
    // Errors keep the console usable.
    assert!(query(&c, "SHOW nonsense").await.is_err());
    assert!(query(&c, "DROP TABLE x").await.is_err());
    assert_eq!(query(&c, "SHOW VERSION").await.unwrap().1.len(), 1);
}

#[test]
fn show_stats_counts_what_pgbench_ran() {
    let pg = Cluster::shared();
    pg.psql("postgres", &format!("CREATE DATABASE adm_stats OWNER {SCRAM_USER}"));
    pg.psql("adm_stats", "CREATE TABLE t(x int); INSERT INTO t VALUES (1)");
    let mux = Pgmux::start(pg, &format!("{CONSOLE}\nstats_period = 1"));
    std::fs::write(mux.dir.path().join("bench.sql"), "SELECT x FROM t;\n").unwrap();
    let out = run(Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &mux.port.to_string(), "-U", SCRAM_USER, "-n", "-c", "4", "-t", "250"])
        .args(["-f", mux.dir.path().join("bench.sql").to_str().unwrap(), "adm_stats"])
        .env("PGPASSWORD", SCRAM_PASS));
    assert!(out.contains("number of transactions actually processed: 1000/1000"), "{out}");
    let psql = |sql: &str| {
        run(Command::new("psql")
            .args([
                "-X",
                "-At",
                "-F",
                ",",
                "-h",
                "127.0.0.1",
                "-p",
                &mux.port.to_string(),
                "-U",
                SCRAM_USER,
                "-d",
                "pgbouncer",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", SCRAM_PASS))
    };
    let stats = psql("SHOW STATS");
    let row = stats.lines().find(|l| l.starts_with("adm_stats,")).unwrap_or_else(|| panic!("{stats}"));
    let f: Vec<u64> = row.split(',').skip(1).map(|x| x.parse().unwrap()).collect();
    // pgbench runs the 1,000 transactions plus a few statements of its own at start-up.
    assert!((1000..=1010).contains(&f[1]), "total_xact_count {} in {row}", f[1]);
    assert!((1000..=1010).contains(&f[2]), "total_query_count {} in {row}", f[2]);
    assert!(f[3] > 1000 * 20 && f[4] > 1000 * 20, "bytes in {row}");
    // After one stats_period the averages are filled in.
    std::thread::sleep(Duration::from_millis(2200));
    let pools = psql("SHOW POOLS");
    assert!(pools.lines().any(|l| l.starts_with("adm_stats,scram_user,")), "{pools}");
    let totals = psql("SHOW TOTALS");
    assert!(totals.lines().any(|l| l.starts_with("total_xact_count,")), "{totals}");
}

fn pgbench_in_background(mux: &Pgmux, secs: u32) -> std::thread::JoinHandle<String> {
    let port = mux.port.to_string();
    std::thread::spawn(move || {
        run(Command::new("pgbench")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                SCRAM_USER,
                "-n",
                "-S",
                "-c",
                "8",
                "-j",
                "2",
                "-T",
                &secs.to_string(),
                "bench_adm",
            ])
            .env("PGPASSWORD", SCRAM_PASS))
    })
}

fn init_bench_db(pg: &Cluster) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        pg.psql("postgres", &format!("CREATE DATABASE bench_adm OWNER {SCRAM_USER}"));
        run(Command::new("pgbench").args([
            "-h",
            pg.socket_dir.to_str().unwrap(),
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "-i",
            "-q",
            "bench_adm",
        ]));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_reload_under_load_fail_nothing() {
    let pg = Cluster::shared();
    init_bench_db(pg);
    let mux = Pgmux::start(pg, &format!("{CONSOLE}\ndefault_pool_size = 4"));
    let c = console(&mux).await;
    let bench = pgbench_in_background(&mux, 4);
    crate::harness::eventually_async("pgbench under way", || async {
        let (cols, rows) = query(&c, "SHOW POOLS").await.unwrap();
        rows.iter().any(|r| col(&cols, r, "database") == "bench_adm" && col(&cols, r, "sv_active") != "0")
    })
    .await;
    c.simple_query("PAUSE bench_adm").await.unwrap();
    // Paused: no client holds a server; the queued ones wait without error.
    let (cols, rows) = query(&c, "SHOW POOLS").await.unwrap();
    let row = rows.iter().find(|r| col(&cols, r, "database") == "bench_adm").unwrap();
    assert_eq!(col(&cols, row, "sv_active"), "0");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (cols, rows) = query(&c, "SHOW DATABASES").await.unwrap();
    let row = rows.iter().find(|r| col(&cols, r, "name") == "bench_adm").unwrap();
    assert_eq!(col(&cols, row, "paused"), "1");
    // A client held by the pause shows as waiting, with a real maxwait.
    let held = mux.connect(SCRAM_USER, SCRAM_PASS, "bench_adm").await.unwrap();
    let held_query = tokio::spawn(async move { held.simple_query("SELECT 1").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (cols, rows) = query(&c, "SHOW POOLS").await.unwrap();
    let row = rows.iter().find(|r| col(&cols, r, "database") == "bench_adm").unwrap();
    assert!(col(&cols, row, "cl_waiting").parse::<i32>().unwrap() >= 1, "{row:?}");
    assert!(col(&cols, row, "maxwait").parse::<i32>().unwrap() >= 1, "{row:?}");
    c.simple_query("RESUME bench_adm").await.unwrap();
    held_query.await.unwrap().expect("the held query runs after RESUME");
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.simple_query("RELOAD").await.unwrap();
    c.simple_query("RECONNECT bench_adm").await.unwrap();
    let out = tokio::task::spawn_blocking(move || bench.join().unwrap()).await.unwrap();
    assert!(out.contains("number of failed transactions: 0 "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reload_keeps_the_old_config_and_good_reload_applies() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, &format!("{CONSOLE}\ndefault_pool_size = 3"));
    let c = console(&mux).await;
    let ini_path = mux.dir.path().join("pgmux.ini");
    let good = std::fs::read_to_string(&ini_path).unwrap();
    std::fs::write(&ini_path, format!("{good}\npool_mode = sometimes\n")).unwrap();
    // As PgBouncer 1.25: F0000 with a pointer to the log, where the reason (file:line) goes.
    let err = c.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(db_error(&err), ("F0000".into(), "RELOAD failed, see logs for additional details".into()));
    let app = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    app.simple_query("SELECT 1").await.expect("still serving on the old config");
    let value = |rows: Vec<Vec<Option<String>>>, cols: Vec<String>, key: &str| {
        rows.iter().find(|r| col(&cols, r, "key") == key).map(|r| col(&cols, r, "value").to_owned()).unwrap()
    };
    let (cols, rows) = query(&c, "SHOW CONFIG").await.unwrap();
    assert_eq!(value(rows, cols, "default_pool_size"), "3");
    std::fs::write(&ini_path, good.replace("default_pool_size = 3", "default_pool_size = 7")).unwrap();
    c.simple_query("RELOAD").await.unwrap();
    let (cols, rows) = query(&c, "SHOW CONFIG").await.unwrap();
    assert_eq!(value(rows, cols, "default_pool_size"), "7");
    c.simple_query("SET default_pool_size = 9").await.unwrap();
    let (cols, rows) = query(&c, "SHOW CONFIG").await.unwrap();
    assert_eq!(value(rows, cols, "default_pool_size"), "9");
    assert!(c.simple_query("SET listen_port = 1").await.is_err(), "restart-only parameters are refused");
    assert!(c.simple_query("SET default_pool_size = lots").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_users_can_look_but_not_touch() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, CONSOLE);
    let s = mux.connect(MD5_USER, MD5_PASS, "pgbouncer").await.unwrap();
    query(&s, "SHOW POOLS").await.unwrap();
    // KILL_CLIENT too: PgBouncer before 1.25.2 let stats users run it (CVE-2026-6667).
    let own_id = query(&s, "SHOW CLIENTS").await.unwrap().1.len();
    let kill_client = format!("KILL_CLIENT {own_id}");
    for cmd in
        ["PAUSE", "RESUME", "RELOAD", "SHUTDOWN", "KILL app", "SHOW FDS", "SET default_pool_size = 1", &kill_client]
    {
        let err = s.simple_query(cmd).await.unwrap_err();
        assert_eq!(err.as_db_error().unwrap().message(), "admin access needed", "{cmd}");
    }
    // Someone in neither list cannot log in to the console at all.
    let other = Pgmux::start_with(pg, Setup { pgbouncer: "admin_users = nobody\nauth_type = md5", ..Setup::default() });
    let err = other.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().message(), "not allowed");
    let err = other.connect(SCRAM_USER, "wrong", "pgbouncer").await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().message(), "SASL authentication failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_disable_enable_and_kill_client() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, CONSOLE);
    let c = console(&mux).await;
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    a.simple_query("SELECT 1").await.unwrap();
    let (cols, rows) = query(&c, "SHOW CLIENTS").await.unwrap();
    let id = col(&cols, rows.iter().find(|r| col(&cols, r, "database") == "app").unwrap(), "id").to_owned();
    c.simple_query(&format!("KILL_CLIENT {id}")).await.unwrap();
    // KILL_CLIENT answers once the client is gone, as PgBouncer's does.
    let (cols, rows) = query(&c, "SHOW CLIENTS").await.unwrap();
    assert!(rows.iter().all(|r| col(&cols, r, "id") != id), "killed client still listed: {rows:?}");
    let err = a.simple_query("SELECT 1").await.unwrap_err();
    assert!(err.to_string().contains("admin forced disconnect") || err.is_closed(), "{err}");
    // PgBouncer's words for a missing and an unreadable id, a database that does not exist
    // (ENABLE and RESUME look for one; KILL, PAUSE and the like would make it from `*`), and
    // KILL of what cannot be killed.
    for (cmd, msg) in [
        ("KILL_CLIENT 999999", "client not found"),
        ("KILL_CLIENT non_existant_client_id", "invalid client pointer supplied"),
        ("ENABLE nosuchdb", "no such database: nosuchdb"),
        ("KILL pgbouncer", "cannot kill admin db: pgbouncer"),
    ] {
        let e = c.simple_query(cmd).await.unwrap_err();
        assert_eq!(db_error(&e), ("08P01".into(), msg.into()), "{cmd}");
    }

    c.simple_query("DISABLE app").await.unwrap();
    let err = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().message(), "database \"app\" is disabled");
    c.simple_query("ENABLE app").await.unwrap();
    let b = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    b.simple_query("SELECT 1").await.unwrap();
    c.simple_query("KILL app").await.unwrap();
    let (cols, rows) = query(&c, "SHOW CLIENTS").await.unwrap();
    assert!(rows.iter().all(|r| col(&cols, r, "database") != "app"), "KILL answers after the clients left");
    assert_eq!(rows.len(), 1, "the console itself stays: {rows:?}");
    // As PgBouncer frees a killed pool: SHOW POOLS no longer lists it.
    let (cols, rows) = query(&c, "SHOW POOLS").await.unwrap();
    assert!(rows.iter().all(|r| col(&cols, r, "database") != "app"), "{rows:?}");
    assert!(b.simple_query("SELECT 1").await.is_err(), "KILL closes the database's clients");
    c.simple_query("RESUME app").await.unwrap();
    let d = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    d.simple_query("SELECT 1").await.expect("RESUME after KILL serves again");
    assert!(c.simple_query("RESUME nosuchdb").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wait_for_clients_then_exit() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, CONSOLE);
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let c = console(&mux).await;
    c.simple_query("SHUTDOWN WAIT_FOR_CLIENTS").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.is_err(), "no new clients");
    a.simple_query("SELECT 1").await.expect("existing clients keep working");
    drop(a);
    drop(c);
    for _ in 0..50 {
        if mux.is_finished() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pgmux did not exit after the last client left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_holds_new_connections_until_resume() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, CONSOLE);
    let c = console(&mux).await;
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    c.simple_query("SUSPEND").await.unwrap();
    let (_, rows) = query(&c, "SHOW STATE").await.unwrap();
    assert_eq!(rows[2], vec![Some("suspended".into()), Some("yes".into())]);
    let url = mux.url(SCRAM_USER, SCRAM_PASS, "app");
    let newcomer = tokio::spawn(async move {
        let (b, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        b.simple_query("SELECT 1").await.map(|_| ())
    });
    let held = tokio::spawn(async move { a.simple_query("SELECT 1").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!newcomer.is_finished() && !held.is_finished(), "nothing proceeds while suspended");
    assert!(c.simple_query("SUSPEND").await.is_err(), "already suspended");
    c.simple_query("RESUME").await.unwrap();
    newcomer.await.unwrap().expect("the waiting connection completes after RESUME");
    held.await.unwrap().expect("the held transaction runs after RESUME");
}

#[test]
fn psql_as_pgbouncer_over_the_unix_socket_needs_no_password() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, CONSOLE);
    let out = run(Command::new("psql")
        .args(["-X", "-At", "-h", mux.socket_dir().to_str().unwrap(), "-p", &mux.port.to_string()])
        .args(["-U", "pgbouncer", "-d", "pgbouncer", "-c", "SHOW VERSION"]));
    assert_eq!(out.trim(), pgmux::version_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wait_for_servers_lets_the_transaction_finish() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, CONSOLE);
    let busy = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let idle = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    idle.simple_query("SELECT 1").await.unwrap();
    busy.batch_execute("BEGIN").await.unwrap();
    let c = console(&mux).await;
    c.simple_query("SHUTDOWN WAIT_FOR_SERVERS").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(idle.simple_query("SELECT 1").await.is_err(), "a client without a server is closed");
    // The shutdown pauses, as PgBouncer's: no more pausing, killing or suspending.
    for q in ["PAUSE", "KILL", "SUSPEND"] {
        let e = c.simple_query(q).await.unwrap_err();
        assert_eq!(db_error(&e), ("08P01".into(), "already suspended/paused".into()), "{q}");
    }
    busy.simple_query("SELECT 1").await.expect("the open transaction goes on");
    busy.batch_execute("COMMIT").await.expect("and commits");
    for _ in 0..50 {
        if mux.is_finished() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pgmux did not exit once the last server was released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_clients_are_listed_and_counted_in_stats() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, CONSOLE);
    let c = console(&mux).await;
    // As PgBouncer: the console is a client of database pgbouncer, idle (no server linked).
    let (cols, rows) = query(&c, "SHOW CLIENTS").await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (col(&cols, &rows[0], "user"), col(&cols, &rows[0], "database"), col(&cols, &rows[0], "state")),
        (SCRAM_USER, "pgbouncer", "idle")
    );
    let id: u64 = col(&cols, &rows[0], "id").parse().unwrap();
    assert_eq!(col(&cols, &rows[0], "ptr"), format!("0x{id:x}"));
    // Its login and its connection count in the pgbouncer row, as PgBouncer's: 1 login, and
    // one query and one transaction for the connection however many commands it sends.
    let (cols, rows) = query(&c, "SHOW STATS").await.unwrap();
    let admin = rows.iter().find(|r| col(&cols, r, "database") == "pgbouncer").unwrap();
    assert_eq!(col(&cols, admin, "total_client_login_count"), "1");
    assert_eq!(col(&cols, admin, "total_query_count"), "1");
    assert_eq!(col(&cols, admin, "total_xact_count"), "1");
    let (_, rows) = query(&c, "SHOW TOTALS").await.unwrap();
    assert!(rows.contains(&vec![Some("total_client_login_count".into()), Some("1".into())]), "{rows:?}");
    assert!(rows.contains(&vec![Some("total_query_count".into()), Some("1".into())]), "{rows:?}");
    // A console client can be killed like any other.
    let other = console(&mux).await;
    let (cols, rows) = query(&other, "SHOW CLIENTS").await.unwrap();
    assert_eq!(rows.len(), 2);
    let other_id = rows.iter().map(|r| col(&cols, r, "id")).find(|i| *i != id.to_string()).unwrap().to_owned();
    c.simple_query(&format!("KILL_CLIENT {other_id}")).await.unwrap();
    let e = other.simple_query("SHOW VERSION").await.unwrap_err();
    let killed = e.as_db_error().is_some_and(|d| d.message() == "admin forced disconnect");
    assert!(killed || e.is_closed(), "{e:?}");
}

/// A RELOAD that fails answers F0000 and leaves the reason, with file and line, in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reload_puts_the_reason_in_the_log() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(pg, "app = host=$SOCKET port=$PORT", "auth_type = trust", "");
    let c = mux.console().await;
    let ini = mux.dir.path().join("pgmux.ini");
    let good = std::fs::read_to_string(&ini).unwrap();
    std::fs::write(&ini, format!("{good}server_lifetime = invalid_server_lifetime\n")).unwrap();
    let err = c.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(db_error(&err), ("F0000".into(), "RELOAD failed, see logs for additional details".into()));
    let reason = mux.wait_for_log("invalid_server_lifetime");
    assert!(reason.contains(" ERROR ") && reason.contains("pgmux.ini:"), "{reason}");
    mux.wait_for_log("ERROR RELOAD Failed, see logs for more details");
    c.simple_query("SHOW VERSION").await.expect("the console still works on the old config");
    // A key PgBouncer does not know (a typo) fails the reload as it does.
    std::fs::write(&ini, format!("{good}defualt_pool_size = 5\n")).unwrap();
    let err = c.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(db_error(&err).0, "F0000");
    let reason = mux.wait_for_log("unknown parameter: pgbouncer/defualt_pool_size");
    assert!(reason.contains("pgmux.ini:"), "{reason}");
}
