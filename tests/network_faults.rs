//! Network faults between pgmux and a PostgreSQL reached over TCP: the server runs in its own
//! network namespace (harness/netns.rs) and iptables there drops its traffic. For each fault:
//! what the client sees, that nobody waits past the configured timeouts, that the pool
//! recovers by itself once the network heals, and that nothing acknowledged is lost.

use std::time::{Duration, Instant};

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
    let running = tokio::spawn(async move { a.simple_query("SELECT pg_sleep(1)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cut = Instant::now();
    ns.partition();
    let e = running.await.unwrap().unwrap_err();
    let (code, msg) = db_error(&e);
    // PgBouncer's words for a running query (`query_timeout` is for a wait for a server).
    assert_eq!((code.as_str(), msg.as_str()), ("08P01", "query timeout"));
    assert!(cut.elapsed() < Duration::from_secs(4), "the client waited {:?}", cut.elapsed());
    ns.heal();
    let healed = Instant::now();
    let b = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(b.query_one("SELECT 7", &[]).await.unwrap().get::<_, i32>(0), 7);
    assert!(healed.elapsed() < Duration::from_secs(5), "recovery took {:?}", healed.elapsed());
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
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(c.query_one("SELECT 8", &[]).await.unwrap().get::<_, i32>(0), 8);
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
    let after = backend_pid(&a).await;
    assert_ne!(before, after, "the dead server was handed out again");
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
}
