//! Peering: a cancel request that reaches the wrong pgmux of a peered group (`peer_id`,
//! `[peers]`) is forwarded to the process that issued the key, at most three hops, and a key
//! of an unknown peer is dropped with PgBouncer's log line.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::NoTls;

use crate::harness::{db_error, Cluster, PgmuxProcess, MD5_USER, SCRAM_PASS, SCRAM_USER};

fn userlist(pg: &Cluster) -> String {
    format!("\"{SCRAM_USER}\" \"{}\"\n\"{MD5_USER}\" \"{}\"\n", pg.secret_of(SCRAM_USER), pg.secret_of(MD5_USER))
}

/// Sends a CancelRequest with a key of our choosing and waits for the pooler to hang up.
async fn raw_cancel(port: u16, pid: i32, secret: i32) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut pkt = Vec::with_capacity(16);
    pkt.extend_from_slice(&16i32.to_be_bytes());
    pkt.extend_from_slice(&80_877_102i32.to_be_bytes());
    pkt.extend_from_slice(&pid.to_be_bytes());
    pkt.extend_from_slice(&secret.to_be_bytes());
    s.write_all(&pkt).await.unwrap();
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink))
        .await
        .expect("the pooler closes a cancel connection")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_another_peer_reaches_the_query() {
    let pg = Cluster::shared();
    let users = userlist(pg);
    let first =
        PgmuxProcess::start(pg, "* = host=$SOCKET port=$PORT", "auth_type = scram-sha-256\npeer_id = 1", &users);
    // The second knows the first by its unix socket directory (as PgBouncer's own example), and
    // lists itself too: an entry for one's own id is allowed and ignored.
    let second = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        &format!(
            "auth_type = scram-sha-256\npeer_id = 2\n[peers]\n1 = host={} port={}\n2 = host=127.0.0.1 port=1\n",
            first.dir.path().display(),
            first.port
        ),
        &users,
    );

    let client = Arc::new(first.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap());
    let token = client.cancel_token();
    let sleep_query = || {
        let c = client.clone();
        tokio::spawn(async move { c.simple_query("/* peering */ SELECT pg_sleep(20)").await.map(|_| ()) })
    };
    for round in 0..3 {
        let sleep = sleep_query();
        pg.wait_until_running("/* peering */ SELECT pg_sleep(20)").await;
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", second.port)).await.unwrap();
        token.cancel_query_raw(stream, NoTls).await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), sleep)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the cancel did not reach the first pgmux"))
            .unwrap()
            .expect_err("cancelled");
        assert_eq!(db_error(&err).0, "57014", "round {round}: {err}");
    }
    // Sent to the issuer itself, the same key works as without peering.
    let sleep = sleep_query();
    pg.wait_until_running("/* peering */ SELECT pg_sleep(20)").await;
    token.cancel_query(NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), sleep).await.unwrap().unwrap().unwrap_err();
    assert_eq!(db_error(&err).0, "57014");
    assert_eq!(client.simple_query("SELECT 1").await.unwrap().len(), 3, "the client goes on");

    // The last forward's connection closes once the first pgmux is done with the cancel, which
    // may be just after the client saw its error.
    let console = second.console().await;
    let peer_pools = || async {
        let rows = console.simple_query("SHOW PEER_POOLS").await.unwrap();
        rows.iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some(format!("{}:{}", r.get(0).unwrap(), r.get(1).unwrap()))
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    crate::harness::eventually_async("no forward in flight", || async { peer_pools().await == ["1:0", "2:0"] }).await;
    assert_eq!(peer_pools().await, ["1:0", "2:0"], "one row per configured peer, nothing left in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_stops_after_three_hops_and_at_unknown_peers() {
    let pg = Cluster::shared();
    let mux =
        PgmuxProcess::start(pg, "* = host=$SOCKET port=$PORT", "auth_type = scram-sha-256\npeer_id = 2", &userlist(pg));
    // Peer 3 is, by mistake, this very process: a key of peer 3 would loop without the hop
    // count. Its port is known only now: add it and reload.
    let ini_path = mux.dir.path().join("pgmux.ini");
    let mut ini = std::fs::read_to_string(&ini_path).unwrap();
    ini.push_str(&format!("[peers]\n3 = host=127.0.0.1 port={}\n", mux.port));
    std::fs::write(&ini_path, ini).unwrap();
    mux.console().await.simple_query("RELOAD").await.unwrap();

    // pid bytes [0, 3, 0, 0] name peer 3; the secret's low bits are the hops left (3).
    raw_cancel(mux.port, 0x0003_0000, 0x0000_0003).await;
    let line = mux.wait_for_log("closing because: failed to forward cancel request because its TTL was exhausted");
    assert!(line.contains(" LOG C-0x"), "{line}");
    // Peer 9 is not configured.
    raw_cancel(mux.port, 0x0009_0000, 0x0000_0003).await;
    mux.wait_for_log("closing because: could not find peer to forward request to");
    // The process still serves.
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(c.simple_query("SELECT 1").await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_wait_timeout_bounds_a_forward_to_a_peer_that_never_answers() {
    let pg = Cluster::shared();
    // A peer that takes the connection and then says nothing, ever.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let mux = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        &format!("auth_type = scram-sha-256\npeer_id = 1\ncancel_wait_timeout = 1\n[peers]\n2 = host=127.0.0.1 port={silent_port}\n"),
        &userlist(pg),
    );
    let started = std::time::Instant::now();
    // pid bytes [0, 2, 0, 0]: a key of peer 2, hops left in the secret's low bits.
    raw_cancel(mux.port, 0x0002_0000, 0x0000_0003).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
    // PgBouncer's line when it gives up on a cancel.
    mux.wait_for_log("closing because: cancel_wait_timeout (age=1s)");
    drop(silent);
}
