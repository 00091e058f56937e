//! Online restart (`pgmux -R`): a new process takes the listeners and the clients of the
//! running one. Clients keep their connection, prepared statements, tracked parameters and
//! cancel key; one in a transaction finishes it first and moves after; SCRAM pass-through keeps
//! working for servers the new process opens.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::harness::{db_error, Cluster, PgmuxProcess, MD5_USER, SCRAM_PASS, SCRAM_USER};

fn userlist(pg: &Cluster) -> String {
    format!("\"{SCRAM_USER}\" \"{}\"\n\"{MD5_USER}\" \"{}\"\n", pg.secret_of(SCRAM_USER), pg.secret_of(MD5_USER))
}

async fn value(c: &tokio_postgres::Client, sql: &str) -> String {
    let rows = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
            _ => None,
        })
        .expect("a row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_survive_an_online_restart() {
    clients_survive_an_online_restart_with("").await;
}

/// The same with two worker threads in both processes: the old one gathers the clients of
/// every thread, the new one adopts them and deals new ones to its threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_every_worker_thread_survive_an_online_restart() {
    clients_survive_an_online_restart_with("\nworker_threads = 2").await;
}

async fn clients_survive_an_online_restart_with(extra: &str) {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        &format!("auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 2{extra}"),
        &userlist(pg),
    );
    let old_pid = mux.pid();
    let idle = Arc::new(mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap());
    let stmt = idle.prepare("SELECT $1::int * 2").await.unwrap();
    idle.simple_query("SET application_name = 'moved'").await.unwrap();
    let backend_before = value(&idle, "SELECT pg_backend_pid()").await;
    let url = format!(
        "host={} port={} user={SCRAM_USER} password={SCRAM_PASS} dbname=app",
        mux.dir.path().display(),
        mux.port
    );
    let (over_unix, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let in_tx = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    in_tx.simple_query("BEGIN").await.unwrap();
    let xid = value(&in_tx, "SELECT txid_current()").await;

    let rebooting = tokio::task::spawn_blocking(move || {
        let mut mux = mux;
        mux.reboot();
        mux
    });
    // The old process waits for the open transaction; it goes on there meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!rebooting.is_finished(), "the old process left while a client was in a transaction");
    assert_eq!(value(&in_tx, "SELECT txid_current()").await, xid, "same transaction, same server");
    in_tx.simple_query("COMMIT").await.unwrap();
    let mux = tokio::time::timeout(Duration::from_secs(30), rebooting).await.expect("reboot finishes").unwrap();
    assert_ne!(mux.pid(), old_pid);

    // Every client is still connected, now to the new process.
    let rows = idle.query(&stmt, &[&21i32]).await.unwrap();
    assert_eq!(rows[0].get::<_, i32>(0), 42, "the prepared statement moved with the client");
    assert_eq!(value(&idle, "SHOW application_name").await, "moved", "tracked parameters moved");
    assert_ne!(value(&idle, "SELECT pg_backend_pid()").await, backend_before, "a server of the new process");
    assert_eq!(value(&over_unix, "SELECT 1").await, "1");
    assert_eq!(value(&in_tx, "SELECT 2").await, "2");
    // The listeners moved too.
    let fresh = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(value(&fresh, "SELECT 3").await, "3");
    // The cancel key moved with the client.
    let token = idle.cancel_token();
    let sleeper = {
        let c = idle.clone();
        tokio::spawn(async move { c.simple_query("/* takeover idle */ SELECT pg_sleep(20)").await.map(|_| ()) })
    };
    pg.wait_until_running("/* takeover idle */ SELECT pg_sleep(20)").await;
    token.cancel_query(NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), sleeper).await.unwrap().unwrap().unwrap_err();
    assert_eq!(db_error(&err).0, "57014");

    let console = mux.console().await;
    let rows = console.simple_query("SHOW CLIENTS").await.unwrap();
    let apps: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            // The cancel's own row may stay a moment, until PostgreSQL closes its connection.
            SimpleQueryMessage::Row(r)
                if r.get("database") == Some("app") && r.get("state") != Some("active_cancel_req") =>
            {
                Some(r.get("application_name").unwrap_or("").to_owned())
            }
            _ => None,
        })
        .collect();
    assert_eq!(apps.len(), 4, "three clients moved, one new: {apps:?}");
    let log = mux.log();
    assert!(log.contains("takeover: 3 clients handed over, exiting"), "{log}");
    assert!(log.contains("takeover finished: 3 clients taken over from the previous process"), "{log}");
    assert!(mux.dir.path().join(format!(".s.PGSQL.{}", mux.port)).exists(), "the unix socket file stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_is_refused_to_anyone_but_pgmux_r() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        &format!("auth_type = scram-sha-256\nadmin_users = pgbouncer, {SCRAM_USER}"),
        &userlist(pg),
    );
    // An admin over TCP may not: sockets pass only over the unix socket, to the same OS user.
    let url = format!("host=127.0.0.1 port={} user={SCRAM_USER} password={SCRAM_PASS} dbname=pgbouncer", mux.port);
    let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    let err = c.simple_query("TAKEOVER").await.unwrap_err();
    assert_eq!(db_error(&err).0, "42501", "{err}");
    assert!(c.simple_query("SHOW VERSION").await.is_ok(), "the console goes on");
    let app = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(value(&app, "SELECT 1").await, "1", "the process goes on serving");
    assert!(!mux.log().contains("takeover:"), "nothing was handed over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restart_leaves_the_old_process_serving() {
    let pg = Cluster::shared();
    // The old process writes the pidfile as root; a new process running as nobody cannot.
    let pidfile = std::env::temp_dir().join(format!("pgmux-failed-restart-{}.pid", std::process::id()));
    let mut mux = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        &format!("auth_type = scram-sha-256\npool_mode = transaction\npidfile = {}", pidfile.display()),
        &userlist(pg),
    );
    let old_pid = mux.pid();
    let idle = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    // The new process takes the listeners, then fails before it serves (as nobody it cannot
    // write the pidfile): the old one must go on accepting.
    let (status, err) = tokio::task::block_in_place(|| mux.failed_reboot(&["-u", "nobody"]));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cannot write pidfile"), "{err}");
    mux.wait_for_log("the new process did not start");
    assert_eq!(value(&idle, "SELECT 1").await, "1", "the idle client stays");
    let fresh = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(value(&fresh, "SELECT 2").await, "2", "TCP still accepted");
    let url = format!(
        "host={} port={} user={SCRAM_USER} password={SCRAM_PASS} dbname=app",
        mux.dir.path().display(),
        mux.port
    );
    let (over_unix, conn) = tokio_postgres::connect(&url, NoTls).await.expect("unix socket still accepted");
    tokio::spawn(conn);
    assert_eq!(value(&over_unix, "SELECT 3").await, "3");
    // And a takeover can be tried again.
    tokio::task::block_in_place(|| mux.reboot());
    assert_ne!(mux.pid(), old_pid);
    assert_eq!(value(&idle, "SELECT 4").await, "4", "moved on the second try");
    let _ = std::fs::remove_file(&pidfile);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_left_on_the_old_process_are_cancelled_and_its_exit_leaves_the_files() {
    let pg = Cluster::shared();
    let piddir = tempfile::tempdir().unwrap();
    let pidfile = piddir.path().join("pgmux.pid");
    let mut mux = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        &format!("auth_type = scram-sha-256\npool_mode = transaction\npidfile = {}", pidfile.display()),
        &userlist(pg),
    );
    let in_tx = Arc::new(mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap());
    in_tx.simple_query("BEGIN").await.unwrap();
    let mut old = mux.start_reboot();
    let old_pid = old.id();
    tokio::task::block_in_place(|| mux.wait_for_log("the new process serves"));

    // The client in a transaction is still on the old process; its cancel request reaches the
    // new one (which alone accepts now) and is passed back.
    let token = in_tx.cancel_token();
    let sleeper = {
        let c = in_tx.clone();
        tokio::spawn(async move { c.simple_query("/* takeover in tx */ SELECT pg_sleep(20)").await.map(|_| ()) })
    };
    pg.wait_until_running("/* takeover in tx */ SELECT pg_sleep(20)").await;
    token.cancel_query(NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), sleeper).await.unwrap().unwrap().unwrap_err();
    assert_eq!(db_error(&err).0, "57014", "cancelled on the old process");

    // SIGTERM twice to the old process (the second is a fast exit): the socket file and the
    // pidfile are the new process's and stay.
    for _ in 0..2 {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(old_pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exited = tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if old.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    if !exited {
        let _ = old.kill();
    }
    let _ = old.wait();
    assert!(exited, "the old process exits:\n{}", mux.log());
    assert!(mux.dir.path().join(format!(".s.PGSQL.{}", mux.port)).exists(), "the unix socket file stays");
    let pid_text = std::fs::read_to_string(&pidfile).expect("the pidfile stays");
    assert_eq!(pid_text.trim(), mux.pid().to_string(), "the pidfile names the new process");
    let url = format!(
        "host={} port={} user={SCRAM_USER} password={SCRAM_PASS} dbname=app",
        mux.dir.path().display(),
        mux.port
    );
    let (over_unix, conn) = tokio_postgres::connect(&url, NoTls).await.expect("the new process serves the unix socket");
    tokio::spawn(conn);
    assert_eq!(value(&over_unix, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_restart_with_nothing_running_starts_normally() {
    let pg = Cluster::shared();
    let mut mux = PgmuxProcess::start(pg, "* = host=$SOCKET port=$PORT", "auth_type = scram-sha-256", &userlist(pg));
    // The process ends (SIGINT: at once, no client); its unix socket file stays behind.
    mux.signal(nix::sys::signal::Signal::SIGINT);
    let gone = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", mux.port)).is_ok() {
        assert!(std::time::Instant::now() < gone, "pgmux did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut old = mux.start_reboot();
    tokio::task::block_in_place(|| old.wait()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let client = loop {
        if let Ok(c) = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "pgmux -R did not start:\n{}", mux.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(value(&client, "SELECT 1").await, "1");
    assert!(mux.log().contains("old process not found, try to continue normally"), "{}", mux.log());
}
