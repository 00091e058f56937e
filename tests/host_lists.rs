//! Connecting to servers that do not work yet: a pool with no working server connects once at
//! a time (a probe) and nobody reconnects before server_login_retry, as PgBouncer; a host list
//! with a bad host first is tried once on the bad host, then on the good one.

use std::time::Duration;

use crate::harness::{Cluster, PgmuxProcess, MD5_USER, SCRAM_PASS, SCRAM_USER};

fn userlist(pg: &Cluster) -> String {
    format!("\"{SCRAM_USER}\" \"{}\"\n\"{MD5_USER}\" \"{}\"\n", pg.secret_of(SCRAM_USER), pg.secret_of(MD5_USER))
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_first_host_is_tried_once_for_two_clients() {
    let pg = Cluster::shared();
    // The first host is a socket that takes a connection and drops it 300 ms later, so that
    // both clients arrive while the first connect is still trying it.
    let bad = tempfile::Builder::new().prefix("pgmux-badhost").tempdir().unwrap();
    let listener = tokio::net::UnixListener::bind(bad.path().join(format!(".s.PGSQL.{}", pg.port))).unwrap();
    let dropper = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                drop(s);
            });
        }
    });
    let mux = PgmuxProcess::start(
        pg,
        &format!("badfirst = host={},127.0.0.1 port=$PORT dbname=app load_balance_hosts=disable", bad.path().display()),
        "auth_type = scram-sha-256\nserver_login_retry = 1\npool_mode = session",
        &userlist(pg),
    );
    let sleeps: Vec<_> = (0..2)
        .map(|_| {
            let url = mux.url(SCRAM_USER, SCRAM_PASS, "badfirst");
            tokio::spawn(async move {
                let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                c.simple_query("SELECT pg_sleep(0.5)").await.map(|_| ())
            })
        })
        .collect();
    for s in sleeps {
        tokio::time::timeout(Duration::from_secs(15), s).await.unwrap().unwrap().expect("both clients are served");
    }
    dropper.abort();
    let log = mux.log();
    assert_eq!(count(&log, "closing because: connect failed"), 1, "the bad host is tried once: {log}");
    let good = log.lines().filter(|l| l.contains("new connection to server") && l.contains("@127.0.0.1:")).count();
    assert_eq!(good, 2, "both servers on the good host: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_server_is_probed_by_one_connect_per_retry_period() {
    let pg = Cluster::shared();
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mux = PgmuxProcess::start(
        pg,
        &format!("down = host=127.0.0.1 port={port} dbname=app"),
        "auth_type = scram-sha-256\nserver_login_retry = 2\nquery_wait_timeout = 3",
        &userlist(pg),
    );
    let started = std::time::Instant::now();
    let logins: Vec<_> = (0..4)
        .map(|_| {
            let url = mux.url(SCRAM_USER, SCRAM_PASS, "down");
            tokio::spawn(async move { tokio_postgres::connect(&url, tokio_postgres::NoTls).await.map(|_| ()) })
        })
        .collect();
    // Half a second after the first attempt failed, still well before the retry 2 s after it.
    tokio::task::block_in_place(|| mux.wait_for_log("closing because: connect failed"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let early = count(&mux.log(), "closing because: connect failed");
    for l in logins {
        let r = tokio::time::timeout(Duration::from_secs(15), l).await.unwrap().unwrap();
        assert!(r.is_err(), "nobody gets in");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(early, 1, "four clients, one connect attempt before server_login_retry:\n{}", mux.log());
}
