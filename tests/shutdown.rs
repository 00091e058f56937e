//! SHUTDOWN WAIT_FOR_CLIENTS / WAIT_FOR_SERVERS as PgBouncer runs them (its test_misc.py): TCP
//! listeners close at once, the unix socket stays for the console until the process exits,
//! databases refuse new logins, RESUME is refused, SIGUSR2 is ignored; WAIT_FOR_SERVERS closes
//! clients that wait for or ask for a server and lets open transactions finish.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio_postgres::NoTls;

use crate::harness::{db_error, Cluster, PgmuxProcess, MD5_USER, SCRAM_USER};

fn userlist(pg: &Cluster) -> String {
    format!("\"{SCRAM_USER}\" \"{}\"\n\"{MD5_USER}\" \"{}\"\n", pg.secret_of(SCRAM_USER), pg.secret_of(MD5_USER))
}

fn socket_file(mux: &PgmuxProcess) -> std::path::PathBuf {
    mux.dir.path().join(format!(".s.PGSQL.{}", mux.port))
}

/// Waits up to 10 s for `cond`.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A database login over the unix socket.
async fn unix_login(mux: &PgmuxProcess) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let url = format!("host={} port={} user={MD5_USER} dbname=app", mux.dir.path().display(), mux.port);
    let (c, conn) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_clients_keeps_the_unix_socket_for_the_console() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(pg, "* = host=$SOCKET port=$PORT", "auth_type = trust", &userlist(pg));
    let a = mux.connect(MD5_USER, "", "app").await.unwrap();
    a.simple_query("SELECT 1").await.unwrap();
    let console = mux.console().await;
    console.simple_query("SHUTDOWN WAIT_FOR_CLIENTS").await.unwrap();
    mux.wait_for_log("SHUTDOWN WAIT_FOR_CLIENTS command issued");
    wait_until("the TCP listener is closed", || std::net::TcpStream::connect(("127.0.0.1", mux.port)).is_err()).await;
    let Err(refused) = unix_login(&mux).await else { panic!("databases refuse new clients") };
    assert_eq!(db_error(&refused), ("08P01".to_owned(), "pooler is shutting down".to_owned()));
    let second = mux.console().await;
    second.simple_query("SHOW VERSION").await.expect("the console is reachable until the end");
    let resume = console.simple_query("RESUME").await.unwrap_err();
    assert_eq!(db_error(&resume), ("08P01".to_owned(), "pooler is shutting down".to_owned()));
    mux.signal(Signal::SIGUSR2);
    mux.wait_for_log("LOG got SIGUSR2 while shutting down, ignoring");
    a.simple_query("SELECT 2").await.expect("existing clients keep working");
    assert!(socket_file(&mux).exists());
    drop((a, console, second));
    mux.wait_for_log("client connections dropped, exiting");
    wait_until("the unix socket is removed", || !socket_file(&mux).exists()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_servers_closes_waiting_and_asking_clients_and_lets_transactions_end() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(
        pg,
        "app = host=$SOCKET port=$PORT pool_size=1",
        "auth_type = trust\npool_mode = transaction",
        &userlist(pg),
    );
    let idle = mux.connect(MD5_USER, "", "app").await.unwrap();
    idle.simple_query("SELECT 1").await.unwrap();
    let holder = mux.connect(MD5_USER, "", "app").await.unwrap();
    holder.batch_execute("BEGIN").await.unwrap();
    let waiter = mux.connect(MD5_USER, "", "app").await.unwrap();
    let queued = tokio::spawn(async move { waiter.simple_query("SELECT 2").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!queued.is_finished(), "the waiter is queued behind the holder");

    let console = mux.console().await;
    console.simple_query("SHUTDOWN WAIT_FOR_SERVERS").await.unwrap();
    let e = queued.await.unwrap().expect_err("a waiting client is closed");
    assert_eq!(db_error(&e).1, "server shutting down");
    holder.simple_query("SELECT 3").await.expect("the open transaction goes on");
    let e = idle.simple_query("SELECT 4").await.expect_err("a client asking for a server is closed");
    assert_eq!(db_error(&e).1, "server shutting down");
    assert!(socket_file(&mux).exists(), "the unix socket stays while a server is in use");
    holder.batch_execute("COMMIT").await.expect("and commits");
    mux.wait_for_log("server connections dropped, exiting");
    wait_until("the unix socket is removed", || !socket_file(&mux).exists()).await;
    let log = mux.log();
    assert!(log.matches("closing because: server shutting down").count() >= 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_signal_while_suspended_goes_down_at_once() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(pg, "* = host=$SOCKET port=$PORT", "auth_type = trust", &userlist(pg));
    // A client in no transaction would hold off a SIGTERM shutdown for as long as it stays.
    let idle = mux.connect(MD5_USER, "", "app").await.unwrap();
    idle.simple_query("SELECT 1").await.unwrap();
    let console = mux.console().await;
    console.simple_query("SUSPEND").await.unwrap();
    mux.signal(Signal::SIGTERM);
    mux.wait_for_log("FATAL suspend was in progress, going down immediately");
    wait_until("the process is gone", || std::net::TcpStream::connect(("127.0.0.1", mux.port)).is_err()).await;
    assert!(idle.simple_query("SELECT 2").await.is_err(), "its clients went with it");
}
