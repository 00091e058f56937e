//! The console's grammar and its one pause mode, against PgBouncer 1.25's admin.c: what it
//! calls an invalid command, SET's quoting, `TO` and reply, PAUSE / RESUME / SUSPEND refused in
//! the states PgBouncer refuses them, SUSPEND answering at once and ending with the last console
//! client, and the extended protocol refused with the connection closed.

use std::process::Command;
use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::{db_error, eventually, Cluster, Pgmux, MD5_PASS, MD5_USER, SCRAM_PASS, SCRAM_USER};

const CONSOLE: &str = "admin_users = scram_user\nstats_users = md5_user\nauth_type = md5";

async fn console(mux: &Pgmux) -> Client {
    mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.expect("admin console login")
}

/// pgmux with the console set up, a client of database `app` that has run a query (so that
/// `app` has a pool, as it must for RESUME and ENABLE to know it), and a console client.
async fn with_app_pool() -> (Pgmux, Client, Client) {
    let mux = Pgmux::start(Cluster::shared(), CONSOLE);
    let app = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    app.simple_query("SELECT 1").await.unwrap();
    let c = console(&mux).await;
    (mux, app, c)
}

/// SQLSTATE and message of a console command that must fail.
async fn refused(c: &Client, sql: &str) -> (String, String) {
    match c.simple_query(sql).await {
        Ok(_) => panic!("{sql}: accepted"),
        Err(e) => db_error(&e),
    }
}

/// The `key` row's value of SHOW STATE or SHOW CONFIG.
async fn value_of(c: &Client, show: &str, key: &str) -> String {
    for m in c.simple_query(show).await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            if r.get(0) == Some(key) {
                return r.get(1).unwrap_or("").to_owned();
            }
        }
    }
    panic!("no {key} in {show}")
}

/// psql as `pgbouncer` over the unix socket (no password): its stdout and stderr together,
/// where psql prints tags it does not know (`SET key=value`) and notices.
fn psql(mux: &Pgmux, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-h", mux.socket_dir().to_str().unwrap(), "-p", &mux.port.to_string()])
        .args(["-U", "pgbouncer", "-d", "pgbouncer", "-c", sql])
        .output()
        .expect("psql runs");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_pgbouncer_refuses_is_refused_in_its_words() {
    let (mux, _app, c) = with_app_pool().await;
    let invalid = |q: &str| ("08P01".to_owned(), format!("invalid command '{q}', use SHOW HELP;"));
    for q in [
        "SHOW FOO",
        "SHOW",
        "SHOW POOLS; SHOW STATE",
        "show pools;;",
        "SELECT 1",
        "SUSPEND now",
        "RELOAD x",
        "SHUTDOWN later",
        "KILL_CLIENT -1",
        "PAUSE weird-db",
        "SET default_pool_size = 1 2",
        "BEGIN",
    ] {
        assert_eq!(refused(&c, q).await, invalid(q), "{q}");
    }
    let err = |m: &str| ("08P01".to_owned(), m.to_owned());
    assert_eq!(refused(&c, &format!("PAUSE {}", "a".repeat(70))).await, err("bad arguments"));
    assert_eq!(refused(&c, "DISABLE").await, err("a database is required"));
    assert_eq!(refused(&c, "ENABLE").await, err("a database is required"));
    for cmd in ["reconnect", "disable", "enable"] {
        let q = format!("{} pgbouncer", cmd.to_uppercase());
        assert_eq!(refused(&c, &q).await, err(&format!("cannot {cmd} admin db: pgbouncer")));
    }
    assert_eq!(refused(&c, "RESUME").await, err("pooler is not paused/suspended"));
    assert_eq!(refused(&c, "RESUME app").await, err("database app is not paused"));
    assert_eq!(refused(&c, "SET nosuch = 1").await, err("SET failed"));
    assert_eq!(refused(&c, "SET default_pool_size = 'abc'").await, err("SET failed"));
    // A stats user: a syntax error still comes first, then the access check.
    let stats = mux.connect(MD5_USER, MD5_PASS, "pgbouncer").await.unwrap();
    assert_eq!(refused(&stats, "SUSPEND now").await, invalid("SUSPEND now"));
    assert_eq!(refused(&stats, "DISABLE").await, err("admin access needed"));
    c.simple_query("SHOW VERSION").await.expect("the console is still usable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_unquotes_takes_to_and_names_what_it_set() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, CONSOLE);
    assert!(psql(&mux, "SET default_pool_size TO 8").contains("SET default_pool_size=8"));
    assert!(psql(&mux, "SET \"default_pool_size\" = \"9\"").contains("SET default_pool_size=9"));
    assert!(psql(&mux, "SET server_reset_query = 'SELECT ''x'''").contains("SET server_reset_query=SELECT 'x'"));
    // Double quotes are a name's, not part of it: the admin can still log in afterwards.
    assert!(psql(&mux, "SET admin_users = \"scram_user\"").contains("SET admin_users=scram_user"));
    let c = console(&mux).await;
    assert_eq!(value_of(&c, "SHOW CONFIG", "admin_users").await, "scram_user");
    assert_eq!(value_of(&c, "SHOW CONFIG", "default_pool_size").await, "9");
    assert_eq!(value_of(&c, "SHOW CONFIG", "server_reset_query").await, "SELECT 'x'");
    // What drivers SET on connect is ignored with a notice, as PgBouncer does.
    let out = psql(&mux, "SET client_encoding TO 'UTF8'");
    assert!(out.contains("NOTICE:  SET ignored") && out.contains("SET"), "{out}");
    let out = psql(&mux, "SET nosuch = 1");
    assert!(out.contains("ERROR:  SET failed") && out.contains("DETAIL:"), "{out}");
}

/// SHOW CONFIG prints what PgBouncer parsed, not what was written: integers as C's strtol
/// reads them (`010` is octal 8) in decimal, times in seconds as `%g`, booleans as 1/0, words in
/// lower case; a string setting with no default is NULL until set, and so is its default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_config_prints_what_was_parsed() {
    let pg = Cluster::shared();
    let ini = format!(
        "{CONSOLE}\nquery_wait_timeout = 90.0\nserver_lifetime = 3600.50\nclient_idle_timeout = 010\n\
         max_client_conn = 0200\nmin_pool_size = 0x3\nlog_connections = on\npool_mode = Transaction\n\
         dns_max_ttl = 15.0\nlog_pooler_errors = 2"
    );
    let mux = Pgmux::start(pg, &ini);
    assert_eq!(mux.shared.config().general.max_client_conn, 128, "0200 is octal, as PgBouncer reads it");
    let c = console(&mux).await;
    let config = || async {
        let mut rows = std::collections::HashMap::new();
        for m in c.simple_query("SHOW CONFIG").await.unwrap() {
            if let SimpleQueryMessage::Row(r) = m {
                let cell = |i: usize| r.get(i).map(str::to_owned);
                rows.insert(cell(0).unwrap(), (cell(1), cell(2)));
            }
        }
        rows
    };
    let rows = config().await;
    let value = |key: &str| rows[key].0.clone();
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(value("query_wait_timeout"), some("90"));
    assert_eq!(value("server_lifetime"), some("3600.5"));
    assert_eq!(value("client_idle_timeout"), some("10"), "a time is read by strtod: decimal");
    assert_eq!(value("max_client_conn"), some("128"));
    assert_eq!(value("min_pool_size"), some("3"));
    assert_eq!(value("log_connections"), some("1"));
    assert_eq!(value("pool_mode"), some("transaction"));
    assert_eq!(rows["auth_user"], (None, None), "unset, with no default");
    assert_eq!(rows["verbose"], (some("0"), None));
    assert_eq!(rows["conffile"].1, None, "no default");
    assert_eq!(value("dns_max_ttl"), some("15"), "read though pgmux keeps no DNS cache");
    assert_eq!(value("log_pooler_errors"), some("2"), "a switch is an integer, as PgBouncer's");
    assert_eq!(value("unix_socket_mode"), some("511"));
    // Through SET the same.
    for (set, key, shown) in [
        ("SET default_pool_size = '007'", "default_pool_size", "7"),
        ("SET default_pool_size = '+5'", "default_pool_size", "5"),
        ("SET query_wait_timeout = '  5'", "query_wait_timeout", "5"),
        ("SET query_wait_timeout = '2min'", "query_wait_timeout", "120"),
        ("SET auth_user = 'md5_user'", "auth_user", "md5_user"),
    ] {
        c.simple_query(set).await.unwrap_or_else(|e| panic!("{set}: {e}"));
        assert_eq!(config().await[key].0, some(shown), "{set}");
    }
    // Nothing may follow a number, as PgBouncer's strtol check refuses.
    let (code, message) = refused(&c, "SET default_pool_size = '3 '").await;
    assert_eq!((code.as_str(), message.as_str()), ("08P01", "SET failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_suspend_share_pgbouncers_one_pause_mode() {
    let (mux, _app, c) = with_app_pool().await;
    let err = |m: &str| ("08P01".to_owned(), m.to_owned());

    // A database paused by name stays paused through a global RESUME, which has nothing to undo.
    c.simple_query("PAUSE app").await.unwrap();
    assert_eq!(refused(&c, "RESUME").await, err("pooler is not paused/suspended"));
    assert_eq!(refused(&c, "SUSPEND").await, err("cannot suspend with paused databases"));
    assert!(mux.shared.pools.is_paused("app"));
    c.simple_query("RESUME app").await.unwrap();
    assert!(!mux.shared.pools.is_paused("app"));

    // A global PAUSE refuses more pausing and a SUSPEND.
    c.simple_query("PAUSE").await.unwrap();
    for q in ["PAUSE", "PAUSE app", "SUSPEND", "KILL"] {
        assert_eq!(refused(&c, q).await, err("already suspended/paused"), "{q}");
    }
    assert_eq!(value_of(&c, "SHOW STATE", "paused").await, "yes");
    // SHOW DATABASES' `paused` is a database's own pause, not the global one.
    let row = rows(&c, "SHOW DATABASES").await.into_iter().find(|r| r[0].as_deref() == Some("app")).unwrap();
    assert_eq!(row[15].as_deref(), Some("0"));
    c.simple_query("RESUME").await.unwrap();

    // SUSPEND is its own mode: not "paused".
    c.simple_query("SUSPEND").await.unwrap();
    assert_eq!(value_of(&c, "SHOW STATE", "active").await, "no");
    assert_eq!(value_of(&c, "SHOW STATE", "paused").await, "no");
    assert_eq!(value_of(&c, "SHOW STATE", "suspended").await, "yes");
    assert_eq!(refused(&c, "SUSPEND").await, err("already suspended/paused"));
    c.simple_query("RESUME").await.unwrap();
    assert_eq!(value_of(&c, "SHOW STATE", "active").await, "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_answers_at_once_and_a_transaction_under_way_runs_on() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, CONSOLE);
    let busy = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    busy.simple_query("BEGIN; SELECT 1").await.unwrap();
    let idle = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    idle.simple_query("SELECT 1").await.unwrap();
    let c = console(&mux).await;
    // The transaction is still open when SUSPEND answers: it did not wait for it.
    tokio::time::timeout(Duration::from_secs(5), c.simple_query("SUSPEND"))
        .await
        .expect("SUSPEND answers with a transaction open")
        .unwrap();
    busy.simple_query("SELECT 2").await.expect("the open transaction goes on");
    busy.simple_query("COMMIT").await.expect("and ends");
    let next = tokio::spawn(async move { idle.simple_query("SELECT 3").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!next.is_finished(), "a new transaction waits while suspended");
    c.simple_query("RESUME").await.unwrap();
    next.await.unwrap().expect("and runs after RESUME");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_console_client_leaving_ends_a_suspend() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, CONSOLE);
    let out = psql(&mux, "SUSPEND");
    assert!(out.contains("SUSPEND"), "{out}");
    // psql has left: nobody could RESUME, so pgmux does.
    let client = tokio::time::timeout(Duration::from_secs(10), mux.connect(SCRAM_USER, SCRAM_PASS, "app"))
        .await
        .expect("a new client is accepted after the console left")
        .unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    assert!(!mux.shared.is_suspended());
    // While another console client stays, the suspend stays too.
    let keeper = console(&mux).await;
    assert!(psql(&mux, "SUSPEND").contains("SUSPEND"));
    assert!(mux.shared.is_suspended());
    drop(keeper);
    eventually(Duration::from_secs(5), "the suspend outlived every console client", || !mux.shared.is_suspended())
        .await;
}

/// Rows of a SHOW, as text.
async fn rows(c: &Client, show: &str) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    for m in c.simple_query(show).await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            out.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_ordered_by_name_with_the_consoles_row_in_its_place() {
    let (_mux, _app, c) = with_app_pool().await;
    for show in ["SHOW DATABASES", "SHOW POOLS", "SHOW STATS"] {
        let names: Vec<String> = rows(&c, show).await.into_iter().map(|r| r[0].clone().unwrap()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "{show}");
        assert!(
            names.first().map(String::as_str) == Some("app") && names.contains(&"pgbouncer".into()),
            "{show}: {names:?}"
        );
    }
    // One host: no load_balance_hosts (column 10 of DATABASES, 16 of POOLS).
    assert!(rows(&c, "SHOW DATABASES").await.iter().all(|r| r[10].is_none()));
    assert!(rows(&c, "SHOW POOLS").await.iter().all(|r| r[16].is_none()));
    let users: Vec<String> = rows(&c, "SHOW USERS").await.into_iter().map(|r| r[0].clone().unwrap()).collect();
    assert!(users.contains(&"pgbouncer".into()), "the console's own user is listed: {users:?}");
    // Integers in decimal, as PgBouncer prints them (the default column keeps its text).
    let mode = rows(&c, "SHOW CONFIG").await.into_iter().find(|r| r[0].as_deref() == Some("unix_socket_mode")).unwrap();
    assert_eq!((mode[1].as_deref(), mode[2].as_deref()), (Some("511"), Some("0777")));
}

/// SHOW CLIENTS' rows as column -> value (NULL spelled out).
async fn client_rows(c: &Client) -> Vec<std::collections::HashMap<String, String>> {
    let mut out = Vec::new();
    for m in c.simple_query("SHOW CLIENTS").await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            let names = r.columns().iter().map(|c| c.name().to_owned());
            out.push(names.zip((0..r.len()).map(|i| r.get(i).unwrap_or("NULL").to_owned())).collect());
        }
    }
    out
}

/// SHOW CLIENTS' row of the client whose application_name is `app`.
async fn client_row(c: &Client, app: &str) -> std::collections::HashMap<String, String> {
    let rows = client_rows(c).await;
    rows.into_iter().find(|r| r["application_name"] == app).unwrap_or_else(|| panic!("no client {app}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_gives_each_clients_own_end_its_process_and_its_wait() {
    let mux = Pgmux::start(Cluster::shared(), &format!("{CONSOLE}\ndefault_pool_size = 1"));
    let c = console(&mux).await;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(mux.port).user(SCRAM_USER).password(SCRAM_PASS).dbname("app");
    let (tcp, conn) = cfg.application_name("over_tcp").connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    // Over TCP: pgmux's end is the address and port it listens on; no process id.
    let row = client_row(&c, "over_tcp").await;
    assert_eq!((row["local_addr"].as_str(), row["local_port"].parse::<u16>().unwrap()), ("127.0.0.1", mux.port));
    assert_eq!(row["remote_pid"], "0");
    // The TCP client holds the pool's one server; psql over the unix socket waits for it.
    tcp.simple_query("BEGIN").await.unwrap();
    let mut psql = Command::new("psql")
        .args(["-X", "-h", mux.socket_dir().to_str().unwrap(), "-p", &mux.port.to_string()])
        .args(["-U", SCRAM_USER, "-d", "app", "-c", "SELECT 1"])
        .env("PGPASSWORD", SCRAM_PASS)
        .env("PGAPPNAME", "over_unix")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let row = loop {
        if let Some(row) = client_rows(&c).await.into_iter().find(|r| r["application_name"] == "over_unix") {
            if row["state"] == "waiting" {
                break row;
            }
        }
        assert!(std::time::Instant::now() < deadline, "psql never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Its own process, as PgBouncer reads it from the socket.
    assert_eq!(row["remote_pid"], psql.id().to_string());
    assert_eq!((row["addr"].as_str(), row["local_addr"].as_str()), ("unix", "unix"));
    // How long it has waited; the client holding the server waits for nothing.
    let waited_us = |row: &std::collections::HashMap<String, String>| {
        row["wait"].parse::<u64>().unwrap() * 1_000_000 + row["wait_us"].parse::<u64>().unwrap()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let row = client_row(&c, "over_unix").await;
    assert!(waited_us(&row) >= 300_000, "a wait of 300 ms or more: {row:?}");
    assert_eq!(waited_us(&client_row(&c, "over_tcp").await), 0);
    tcp.simple_query("COMMIT").await.unwrap();
    assert!(psql.wait().unwrap().success(), "psql is served once the server is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_lets_go_of_the_servers_and_suspend_keeps_them() {
    let pg = Cluster::shared();
    pg.psql("postgres", &format!("CREATE DATABASE pause_lets_go OWNER {SCRAM_USER}"));
    let mux = Pgmux::start(pg, &format!("{CONSOLE}\ndefault_pool_size = 1"));
    let backends = || {
        let sql =
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'pause_lets_go' AND backend_type = 'client backend'";
        pg.psql("postgres", sql).parse::<i64>().unwrap()
    };
    let busy = mux.connect(SCRAM_USER, SCRAM_PASS, "pause_lets_go").await.unwrap();
    busy.simple_query("BEGIN").await.unwrap();
    let c = console(&mux).await;
    // SUSPEND keeps the server (PgBouncer hands suspended servers to its successor).
    c.simple_query("SUSPEND").await.unwrap();
    assert_eq!(backends(), 1);
    c.simple_query("RESUME").await.unwrap();

    // The pool's one server is busy; a second client queues for it.
    let queued = mux.connect(SCRAM_USER, SCRAM_PASS, "pause_lets_go").await.unwrap();
    let queued = tokio::spawn(async move { queued.simple_query("SELECT 1").await.map(|_| queued) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // PAUSE waits for the transaction; the server it releases is closed, not handed to the
    // queued client, so that PostgreSQL can be restarted under the pause.
    let pause = tokio::spawn(async move { c.simple_query("PAUSE").await.map(|_| c) });
    eventually(Duration::from_secs(10), "PAUSE in force", || mux.shared.pools.all_paused()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pause.is_finished(), "PAUSE waits for the transaction under way");
    busy.simple_query("COMMIT").await.unwrap();
    let c = pause.await.unwrap().unwrap();
    eventually(Duration::from_secs(5), "the server released under PAUSE is closed", || backends() == 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!queued.is_finished(), "the queued client waits while paused");
    assert_eq!(backends(), 0, "no server opened while paused");
    c.simple_query("RESUME").await.unwrap();
    let queued = queued.await.unwrap().expect("served after RESUME");

    // An idle server is closed as soon as PAUSE comes, a database paused by name too.
    assert_eq!(backends(), 1);
    c.simple_query("PAUSE pause_lets_go").await.unwrap();
    eventually(Duration::from_secs(5), "PAUSE db closes its idle server", || backends() == 0).await;
    c.simple_query("RESUME pause_lets_go").await.unwrap();
    queued.simple_query("SELECT 2").await.expect("a new server after RESUME");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_waiting_at_a_pause_for_its_first_server_gets_pgbouncers_timeouts() {
    for (extra, db, want) in [
        ("query_wait_timeout = 1\nclient_login_timeout = 20", "paused_login_qwt", "query_wait_timeout"),
        // 2 s: the client's own SCRAM exchange comes out of the login's time first.
        ("query_wait_timeout = 20\nclient_login_timeout = 2", "paused_login_clt", "client_login_timeout (server down)"),
    ] {
        let mux = Pgmux::start(Cluster::shared(), &format!("{CONSOLE}\n{extra}"));
        let c = console(&mux).await;
        // The database has no pool yet: the login needs a server to learn the welcome from.
        c.simple_query(&format!("PAUSE {db}")).await.unwrap();
        let started = std::time::Instant::now();
        // Meanwhile SHOW POOLS lists it as a waiting client (what queue alerts watch).
        let watch = async {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                let listed = c.simple_query("SHOW POOLS").await.unwrap().into_iter().any(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        r.get("database") == Some(db)
                            && r.get("cl_waiting") == Some("1")
                            && r.get("cl_active") == Some("0")
                    }
                    _ => false,
                });
                if listed {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        };
        let (login, listed) =
            tokio::join!(tokio::time::timeout(Duration::from_secs(10), mux.connect(SCRAM_USER, SCRAM_PASS, db)), watch);
        let err = login.expect("the login ends before the other timeout").unwrap_err();
        assert_eq!(db_error(&err), ("08P01".to_owned(), want.to_owned()), "{extra}");
        assert!(started.elapsed() < Duration::from_secs(5), "{extra}: {:?}", started.elapsed());
        assert!(listed, "{extra}: the waiting login is in cl_waiting");
    }
}
