//! Following the Patroni leader with a scripted Patroni REST API (the cluster it reports, the
//! switchover it performs) in front of two real PostgreSQL servers: the pools move to the
//! leader, SWITCHOVER holds transactions and loses none, a refused switchover leaves
//! everything in place, a leader-less cluster holds transactions up to query_wait_timeout, the
//! role checks and the agent answer for what pgmux can serve, and a server lost under a
//! transaction leaves its client connected. The real thing (etcd, Patroni, HAProxy) is
//! scripts/ha/ (docs/HA.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Cluster, PgmuxProcess, SCRAM_PASS, SCRAM_USER};

/// What the scripted Patroni reports and does.
struct State {
    /// Member name and PostgreSQL port, in order.
    members: Vec<(&'static str, u16)>,
    leader: Option<&'static str>,
    refuse: bool,
    /// How long a switchover leaves the cluster without a leader.
    gap: Duration,
    switchovers: Vec<String>,
}

struct FakePatroni {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakePatroni {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn cluster_json(s: &State, addr: SocketAddr) -> String {
    let members: Vec<String> = s
        .members
        .iter()
        .map(|(name, port)| {
            let role = if s.leader == Some(*name) { "leader" } else { "replica" };
            let lag = if role == "replica" { ", \"lag\": 0" } else { "" };
            format!(
                r#"{{"name": "{name}", "role": "{role}", "state": "running", "api_url": "http://{addr}/patroni", "host": "127.0.0.1", "port": {port}, "timeline": 1{lag}}}"#
            )
        })
        .collect();
    format!(r#"{{"members": [{}]}}"#, members.join(", "))
}

impl FakePatroni {
    async fn start(members: Vec<(&'static str, u16)>, leader: &'static str) -> FakePatroni {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            members,
            leader: Some(leader),
            refuse: false,
            gap: Duration::from_millis(400),
            switchovers: Vec::new(),
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, st.clone(), addr));
            }
        });
        FakePatroni { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_leader(&self, leader: Option<&'static str>) {
        self.state.lock().leader = leader;
    }
}

async fn serve(mut s: tokio::net::TcpStream, state: Arc<Mutex<State>>, addr: SocketAddr) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = s.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let Ok(n) = s.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, text) = match (method, path) {
        ("GET", "/cluster") => (200, cluster_json(&state.lock(), addr)),
        ("GET", "/patroni") => {
            (200, r#"{"state": "running", "patroni": {"version": "3.0.2", "scope": "fake"}}"#.into())
        }
        ("POST", "/switchover") => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let to = v["candidate"].as_str().unwrap_or("").to_owned();
            let (refuse, gap) = {
                let mut st = state.lock();
                st.switchovers.push(body.clone());
                (st.refuse, st.gap)
            };
            if refuse {
                (503, "Switchover failed".into())
            } else {
                // Patroni stops the old primary, then the candidate takes over.
                state.lock().leader = None;
                tokio::time::sleep(gap).await;
                let mut st = state.lock();
                st.leader = st.members.iter().map(|(n, _)| *n).find(|n| *n == to);
                (200, format!("Successfully switched over to \"{to}\""))
            }
        }
        _ => (404, "not found".into()),
    };
    let reply =
        format!("HTTP/1.0 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{text}", text.len());
    let _ = s.write_all(reply.as_bytes()).await;
}

/// Two servers (pg1 = the shared cluster, this node; pg2 = a cluster of the test's own), a
/// scripted Patroni naming pg1 the leader, and pgmux following it for `app`.
struct Node {
    patroni: FakePatroni,
    mux: PgmuxProcess,
    pg1: u16,
    pg2: u16,
    metrics: u16,
    agent: u16,
    _other: Cluster,
}

async fn node(extra: &str) -> Node {
    let pg = Cluster::shared();
    let other = Cluster::start();
    let patroni = FakePatroni::start(vec![("pg1", pg.port), ("pg2", other.port)], "pg1").await;
    let (metrics, agent) = (crate::metrics::free_port(), crate::metrics::free_port());
    let mux = PgmuxProcess::start(
        pg,
        "app = host=$SOCKET port=$PORT dbname=app\nlocal = host=$SOCKET port=$PORT dbname=app",
        &format!(
            "auth_type = scram-sha-256\npool_mode = transaction\npatroni_url = {}\npatroni_member = pg1\n\
             patroni_databases = app\npatroni_poll_interval = 0.1\nexporter_port = {metrics}\nhealth_agent_port = {agent}\n{extra}",
            patroni.url()
        ),
        &format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n"),
    );
    mux.wait_for_log("patroni: following leader pg1");
    Node { pg1: pg.port, pg2: other.port, patroni, mux, metrics, agent, _other: other }
}

async fn port_of(c: &tokio_postgres::Client) -> Result<u16, tokio_postgres::Error> {
    let rows = c.simple_query("SELECT current_setting('port')").await?;
    Ok(rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v.parse().unwrap()),
            _ => None,
        })
        .unwrap())
}

async fn http_status(port: u16, path: &str) -> u16 {
    http_get(port, path).await.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn agent(port: u16, word: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(word.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_moves_the_pools_and_loses_no_transaction() {
    let n = node("").await;
    let c = n.mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(port_of(&c).await.unwrap(), n.pg1, "the leader is local");
    assert_eq!(http_status(n.metrics, "/primary").await, 200);
    assert_eq!(http_status(n.metrics, "/replica").await, 503);
    assert_eq!(agent(n.agent, "primary\n").await, "ready up 100%\n");
    assert_eq!(agent(n.agent, "replica\n").await, "down\n");

    // Four clients run transactions all through the switchover.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let c = n.mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let mut done = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.simple_query("BEGIN; SELECT 1; COMMIT").await?;
                done += 1;
            }
            Ok::<_, tokio_postgres::Error>((done, port_of(&c).await?))
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let console = n.mux.console().await;
    let rows = console.simple_query("SWITCHOVER pg2").await.expect("SWITCHOVER succeeds");
    let row = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!((row.get("old_leader"), row.get("new_leader")), (Some("pg1"), Some("pg2")));
    let held: u64 = row.get("held_ms").unwrap().parse().unwrap();
    assert!(held >= 400, "held through Patroni's gap: {held} ms");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loops {
        let (done, port) = l.await.unwrap().expect("no transaction failed");
        assert!(done > 0);
        assert_eq!(port, n.pg2, "the same connection now reaches the new leader");
    }
    assert_eq!(port_of(&c).await.unwrap(), n.pg2);
    let asked = n.patroni.state.lock().switchovers.clone();
    assert_eq!(asked.len(), 1);
    assert!(asked[0].contains(r#""leader":"pg1""#) && asked[0].contains(r#""candidate":"pg2""#), "{asked:?}");

    // This node forwards to the leader on another node: HAProxy should send new sessions there.
    assert_eq!(http_status(n.metrics, "/primary").await, 200);
    assert_eq!(agent(n.agent, "primary\n").await, "drain\n");
    assert_eq!(http_status(n.metrics, "/replica").await, 200, "this node is a replica now");
    assert_eq!(http_status(n.metrics, "/replica?lag=1MB").await, 200);
    // A database that does not follow the leader stays local.
    let local = n.mux.connect(SCRAM_USER, SCRAM_PASS, "local").await.unwrap();
    assert_eq!(port_of(&local).await.unwrap(), n.pg1);

    let show = console.simple_query("SHOW PATRONI").await.unwrap();
    let rows: Vec<_> = show
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some((
                r.get("member").unwrap().to_owned(),
                r.get("role").unwrap().to_owned(),
                r.get("followed").unwrap().to_owned(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        rows,
        vec![("pg1".into(), "replica".into(), "no".into()), ("pg2".into(), "leader".into(), "yes".into())]
    );
    let metrics = http_get(n.metrics, "/metrics").await;
    assert!(metrics.contains("pgmux_patroni_switchovers_total{} 1"), "{metrics}");
    assert!(metrics.contains("pgmux_patroni_followed_info{member=\"pg2\"} 1"), "{metrics}");
}

async fn http_get(port: u16, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_elsewhere_is_followed_and_a_leaderless_cluster_holds() {
    let n = node("query_wait_timeout = 4").await;
    let c = n.mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(port_of(&c).await.unwrap(), n.pg1);
    // Patroni reports no leader (the primary died): new transactions wait, bounded.
    n.patroni.set_leader(None);
    n.mux.wait_for_log("leader changing, holding new transactions");
    let started = Instant::now();
    let e = port_of(&c).await.expect_err("no leader within query_wait_timeout");
    let msg = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| e.to_string());
    assert!(msg.contains("query_wait_timeout"), "{msg}");
    assert!(started.elapsed() >= Duration::from_millis(3500), "{:?}", started.elapsed());
    // As in PgBouncer, query_wait_timeout closes that client. One waiting when the new
    // leader comes is served.
    let waiting = {
        let c2 = n.mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        tokio::spawn(async move { port_of(&c2).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    n.patroni.set_leader(Some("pg2"));
    assert_eq!(waiting.await.unwrap().unwrap(), n.pg2);
    let c = n.mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(port_of(&c).await.unwrap(), n.pg2);
    // And back: the pools go local again.
    n.patroni.set_leader(Some("pg1"));
    crate::harness::eventually_async("the client back on pg1", || async { port_of(&c).await.ok() == Some(n.pg1) })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_switchover_changes_nothing() {
    let n = node("").await;
    n.patroni.state.lock().refuse = true;
    let c = n.mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let console = n.mux.console().await;
    let e = console.simple_query("SWITCHOVER").await.expect_err("Patroni refuses");
    let msg = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
    assert!(msg.contains("SWITCHOVER failed: Patroni refused the switchover (503)"), "{msg}");
    let e = console.simple_query("SWITCHOVER nobody").await.expect_err("no such member");
    assert!(e.as_db_error().unwrap().message().contains("no member named nobody"));
    // Not held, still local.
    assert_eq!(tokio::time::timeout(Duration::from_secs(2), port_of(&c)).await.expect("not held").unwrap(), n.pg1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_lost_mid_query_leaves_the_client_connected() {
    let n = node("").await;
    let c = n.mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let sleeper = {
        let c = n.mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        tokio::spawn(async move {
            let r = c.simple_query("SELECT pg_sleep(30)").await.map(|_| ());
            (r, c)
        })
    };
    crate::harness::eventually_async("the sleep running", || async {
        let rows =
            c.simple_query("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'").await.unwrap();
        rows.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("1")))
    })
    .await;
    c.simple_query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'")
        .await
        .unwrap();
    let (r, sleeper) = tokio::time::timeout(Duration::from_secs(10), sleeper).await.unwrap().unwrap();
    let e = r.expect_err("the query in flight fails");
    let db = e.as_db_error().expect("an ErrorResponse");
    assert_eq!((db.severity(), db.code().code()), ("ERROR", "08006"), "an ERROR, not the server's FATAL");
    assert!(db.message().contains("terminating connection due to administrator command"), "{}", db.message());
    assert!(!sleeper.is_closed(), "the client connection stays open");
    assert_eq!(port_of(&sleeper).await.expect("the next transaction is served"), n.pg1);
    assert!(n.mux.log().contains("the client stays"));

    // Inside a transaction block the block is aborted: statements fail (25P02) until the
    // client ends it, and then it goes on, on a new server.
    let in_block = {
        let c = n.mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        tokio::spawn(async move {
            c.simple_query("BEGIN").await.unwrap();
            c.simple_query("CREATE TEMP TABLE IF NOT EXISTS lost (x int)").await.ok();
            let r = c.simple_query("SELECT pg_sleep(31)").await.map(|_| ());
            let next = c.simple_query("SELECT 1").await.map(|_| ());
            let prepared = c.prepare("SELECT 2").await.map(|_| ());
            let end = c.simple_query("COMMIT").await;
            let after = port_of(&c).await;
            (r, next, prepared, end, after)
        })
    };
    crate::harness::eventually_async("the sleep in a block running", || async {
        let rows =
            c.simple_query("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(31)'").await.unwrap();
        rows.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("1")))
    })
    .await;
    c.simple_query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(31)'")
        .await
        .unwrap();
    let (r, next, prepared, end, after) =
        tokio::time::timeout(Duration::from_secs(10), in_block).await.unwrap().unwrap();
    let code = |e: &tokio_postgres::Error| e.as_db_error().map(|d| d.code().code().to_owned());
    assert_eq!(code(&r.unwrap_err()).as_deref(), Some("08006"), "the statement in flight says why");
    assert_eq!(code(&next.unwrap_err()).as_deref(), Some("25P02"), "then the block is aborted");
    assert_eq!(code(&prepared.unwrap_err()).as_deref(), Some("25P02"), "in the extended protocol too");
    let end = end.expect("COMMIT ends the block");
    assert!(end.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(_))), "{end:?}");
    assert_eq!(after.expect("the session goes on"), n.pg1);
}
