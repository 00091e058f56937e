//! Network faults between pgmux and a PostgreSQL reached over TCP: the server runs in its own
//! network namespace (harness/netns.rs) and iptables there drops its traffic; latency comes
//! from a delaying relay (no netem qdisc in this kernel), a silent server from a bare listener. For each fault:
//! what the client sees, that nobody waits past the configured timeouts, that the pool
//! recovers by itself once the network heals, and that nothing acknowledged is lost.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::harness::pgmux::Setup;
use crate::harness::{db_error, Cluster, Netns, Pgmux, PgmuxProcess, MD5_USER, SCRAM_PASS, SCRAM_USER};

fn databases(pg: &Cluster) -> String {
    format!("* = host={} port={}", pg.host, pg.port)
}

async fn backend_pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0)
}

/// A partition while a query runs: the client gets `query timeout` at query_timeout, and once
/// the network heals new transactions are served without anybody's help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_during_a_query_ends_at_query_timeout_and_the_pool_recovers() {
    let ns = Netns::create();
    let pg = Cluster::start_in(&ns);
    let dbs = databases(&pg);
    let mux = Pgmux::start_with(
        &pg,
        Setup { pgbouncer: "query_timeout = 2\nserver_login_retry = 0.5", databases: &dbs, ..Setup::default() },
    );
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    a.simple_query("SELECT 1").await.unwrap();
    // Shorter than query_timeout, long enough for the partition to come first on a slow machine.
    let running = tokio::spawn(async move { a.simple_query("SELECT pg_sleep(1.8)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cut = Instant::now();
    ns.partition();
    let e = running.await.unwrap().unwrap_err();
    let e_at = cut.elapsed();
    let (code, msg) = db_error(&e);
    // PgBouncer's words for a running query (`query_timeout` is for a wait for a server).
    assert_eq!((code.as_str(), msg.as_str()), ("08P01", "query timeout"));
    assert!(cut.elapsed() < Duration::from_secs(4), "the client waited {:?}", cut.elapsed());
    ns.heal();
    let healed = Instant::now();
    let b = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(b.query_one("SELECT 7", &[]).await.unwrap().get::<_, i32>(0), 7);
    assert!(healed.elapsed() < Duration::from_secs(5), "recovery took {:?}", healed.elapsed());
    eprintln!(
        "partition during a query: error after {:?}; a login and query after healing took {:?}",
        e_at,
        healed.elapsed()
    );
}

/// A partition before the server connection exists: the connect never completes, pgmux logs
/// PgBouncer's `connect failed` after server_connect_timeout and retries; the client waiting
/// at login gets `query_timeout` at query_timeout; after healing a login is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_at_connect_is_bounded_by_the_timeouts() {
    let ns = Netns::create();
    let pg = Cluster::start_in(&ns);
    let userlist = format!("\"{SCRAM_USER}\" \"{}\"\n\"{MD5_USER}\" \"x\"\n", pg.secret_of(SCRAM_USER));
    let mux = PgmuxProcess::start(
        &pg,
        &databases(&pg),
        "auth_type = scram-sha-256\nquery_timeout = 3\nserver_connect_timeout = 1\nserver_login_retry = 0.2",
        &userlist,
    );
    ns.partition();
    let started = Instant::now();
    let e = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap_err();
    let (code, msg) = db_error(&e);
    assert_eq!((code.as_str(), msg.as_str()), ("08P01", "query_timeout"));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2900) && took < Duration::from_secs(5), "{took:?}");
    let line = mux.wait_for_log("closing because: connect failed (age=1s)");
    assert!(line.contains(&format!("@{}:{}", pg.host, pg.port)), "{line}");
    ns.heal();
    let healed = Instant::now();
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(c.query_one("SELECT 8", &[]).await.unwrap().get::<_, i32>(0), 8);
    eprintln!("partition at connect: query_timeout after {took:?}; served {:?} after healing", healed.elapsed());
}

/// A partition while the servers sit idle in the pool: TCP keepalive (tcp_keepidle,
/// tcp_keepintvl, tcp_keepcnt) ends the dead connection, and the client's next transaction
/// after healing gets a fresh server without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_while_idle_is_noticed_by_keepalive_and_costs_nothing() {
    let ns = Netns::create();
    let pg = Cluster::start_in(&ns);
    let dbs = databases(&pg);
    let mux = Pgmux::start_with(
        &pg,
        Setup {
            pgbouncer:
                "tcp_keepalive = 1\ntcp_keepidle = 1\ntcp_keepintvl = 1\ntcp_keepcnt = 2\nserver_login_retry = 0.5",
            databases: &dbs,
            ..Setup::default()
        },
    );
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let before = backend_pid(&a).await;
    ns.partition();
    // Keepalive gives up after 1 s idle + 2 unanswered probes 1 s apart.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    ns.heal();
    let healed = Instant::now();
    let after = backend_pid(&a).await;
    assert_ne!(before, after, "the dead server was handed out again");
    eprintln!("partition while idle: no error; the next query took {:?} on a fresh server", healed.elapsed());
}

/// 10% of the packets lost both ways: every statement still completes (TCP retransmits), and
/// every acknowledged insert is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_loss_slows_but_loses_nothing() {
    let ns = Netns::create();
    let pg = Cluster::start_in(&ns);
    pg.psql("app", &format!("CREATE TABLE lossy (client int, n int); ALTER TABLE lossy OWNER TO {SCRAM_USER}"));
    let dbs = databases(&pg);
    let mux = Pgmux::start_with(&pg, Setup { pgbouncer: "default_pool_size = 4", databases: &dbs, ..Setup::default() });
    ns.lose(0.1);
    let mut tasks = Vec::new();
    for id in 0..8 {
        let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        tasks.push(tokio::spawn(async move {
            for n in 0..25 {
                c.simple_query(&format!("INSERT INTO lossy VALUES ({id}, {n})")).await.unwrap();
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t).await.expect("bounded").unwrap();
    }
    let took = started.elapsed();
    ns.heal();
    assert_eq!(pg.psql("app", "SELECT count(*) FROM lossy"), "200", "after {took:?}");
    eprintln!("10% loss: 200 inserts by 8 clients in {took:?}, none failed");
}

/// A partition while a client sends its query on an idle server: the query's bytes are never
/// acknowledged, tcp_user_timeout ends the server connection, and the client gets one ERROR
/// (08006) and stays connected; after healing it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_user_timeout_ends_a_server_that_stopped_acknowledging() {
    let ns = Netns::create();
    let pg = Cluster::start_in(&ns);
    let dbs = databases(&pg);
    let mux = Pgmux::start_with(
        &pg,
        Setup { pgbouncer: "tcp_user_timeout = 1000\nserver_login_retry = 0.2", databases: &dbs, ..Setup::default() },
    );
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    a.simple_query("SELECT 1").await.unwrap();
    ns.partition();
    let cut = Instant::now();
    let e = a.simple_query("SELECT 2").await.unwrap_err();
    let took = cut.elapsed();
    let (code, msg) = db_error(&e);
    assert_eq!(code, "08006", "{msg}");
    assert!(took < Duration::from_secs(4), "the client waited {took:?}");
    ns.heal();
    assert_eq!(a.query_one("SELECT 9", &[]).await.unwrap().get::<_, i32>(0), 9);
    eprintln!("tcp_user_timeout 1 s: 08006 after {took:?}, client kept");
}

/// A server that accepts the connection and then says nothing: the login is abandoned at
/// server_connect_timeout (`connect timeout`, the connection was made), and the client waiting
/// at login gets `query_timeout` at query_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_but_never_answers_is_bounded_by_the_timeouts() {
    let pg = Cluster::shared();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let userlist = format!("\"{SCRAM_USER}\" \"{}\"\n\"{MD5_USER}\" \"x\"\n", pg.secret_of(SCRAM_USER));
    let mux = PgmuxProcess::start(
        pg,
        &format!("* = host=127.0.0.1 port={port}"),
        "auth_type = scram-sha-256\nquery_timeout = 3\nserver_connect_timeout = 1\nserver_login_retry = 0.2",
        &userlist,
    );
    let started = Instant::now();
    let e = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap_err();
    let took = started.elapsed();
    let (code, msg) = db_error(&e);
    assert_eq!((code.as_str(), msg.as_str()), ("08P01", "query_timeout"));
    assert!(took >= Duration::from_millis(2900) && took < Duration::from_secs(5), "{took:?}");
    mux.wait_for_log("closing because: connect timeout (age=1s)");
    eprintln!("silent server: query_timeout after {took:?}");
    drop(silent);
}

/// A TCP relay to PostgreSQL that holds every chunk for the current delay before passing it on
/// (this kernel has no netem qdisc, so latency is added in user space).
async fn delaying_relay(to: std::net::SocketAddr, delay_ms: Arc<AtomicU64>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(to).await else { continue };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            for (mut from, mut into) in [
                (Box::new(cr) as Box<dyn AsyncRead + Send + Unpin>, Box::new(sw) as Box<dyn AsyncWrite + Send + Unpin>),
                (Box::new(sr), Box::new(cw)),
            ] {
                let delay_ms = delay_ms.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = from.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let d = delay_ms.load(Relaxed);
                        if d > 0 {
                            tokio::time::sleep(Duration::from_millis(d)).await;
                        }
                        if into.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });
    port
}

/// One `SELECT 1` on every client at once; how long the slowest took.
async fn round(clients: &[tokio_postgres::Client]) -> Duration {
    let t = Instant::now();
    let all: Vec<_> = clients.iter().map(|c| c.simple_query("SELECT 1")).collect();
    for r in futures_util::future::join_all(all).await {
        r.expect("no statement fails under latency");
    }
    t.elapsed()
}

/// A latency spike of 300 ms each way under load: transactions slow down and nothing fails;
/// when it passes, round trips are fast again on the same servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_spike_slows_but_breaks_nothing() {
    let pg = Cluster::shared();
    let delay = Arc::new(AtomicU64::new(0));
    let relay = delaying_relay(([127, 0, 0, 1], pg.port).into(), delay.clone()).await;
    let dbs = format!("* = host=127.0.0.1 port={relay}");
    let mux = Pgmux::start_with(
        pg,
        Setup { pgbouncer: "default_pool_size = 2\nquery_timeout = 10", databases: &dbs, ..Setup::default() },
    );
    let mut clients = Vec::new();
    for _ in 0..4 {
        let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        c.simple_query("SELECT 1").await.unwrap();
        clients.push(c);
    }
    let before = round(&clients).await;
    delay.store(300, Relaxed);
    let during = round(&clients).await;
    delay.store(0, Relaxed);
    // Chunks already held finish their delay first.
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The best of three rounds: one stall of this machine is not the spike staying on.
    let mut after = round(&clients).await;
    for _ in 0..2 {
        after = after.min(round(&clients).await);
    }
    assert!(during >= Duration::from_millis(600), "the spike did not apply: {during:?}");
    assert!(after < during / 2, "before {before:?}, during {during:?}, after {after:?}");
    eprintln!("latency spike: a round of 4 clients took {before:?} before, {during:?} during, {after:?} after");
}
