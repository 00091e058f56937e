//! Several worker threads (`worker_threads = 3`), each with its own runtime: clients dealt to
//! the threads at accept (`worker_busy_percent = 0`) or moved between them by load, the pool's
//! servers shared by all of them (moving between threads as clients on other threads lease
//! them) within the pool's size, and SHOW STATS adding up every thread's counters.

use std::time::Duration;

use crate::harness::{Cluster, PgmuxProcess, SCRAM_PASS, SCRAM_USER};
use crate::metrics::{free_port, scrape};

const CLIENTS: usize = 24;
const ROUNDS: usize = 60;
const POOL: i64 = 3;

/// CPU time each of the process's threads has run so far, in ns, by thread name.
fn thread_cpu(pid: u32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_owned();
        let ns = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0);
        out.push((name, ns));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_threads_share_one_pool_within_its_size() {
    let pg = Cluster::shared();
    if pg.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'workers'") == "0" {
        pg.psql("postgres", "CREATE DATABASE workers");
    }
    let userlist = format!("\"{SCRAM_USER}\" \"{}\"\n", pg.secret_of(SCRAM_USER));
    let mux = PgmuxProcess::start(
        pg,
        "workers = host=$SOCKET port=$PORT",
        &format!(
            "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = {POOL}\nworker_threads = 3\n\
             worker_busy_percent = 0"
        ),
        &userlist,
    );
    // The listener may be up a moment before the last worker thread has started.
    let workers = |threads: &[(String, u64)]| threads.iter().filter(|(n, _)| n.starts_with("pgmux-worker-")).count();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut before = thread_cpu(mux.pid());
    while workers(&before) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        before = thread_cpu(mux.pid());
    }
    assert_eq!(workers(&before), 2, "the main thread and two more run clients: {before:?}");

    // All logged in first, then all at once, each query holding its server for 2 ms: the pool
    // is busy from the first round.
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(mux.connect(SCRAM_USER, SCRAM_PASS, "workers").await.unwrap());
    }
    let mut tasks = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            // Client backends only: an autovacuum worker visiting the new database shows there too.
            let sql = "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = 'workers' \
                       AND backend_type = 'client backend') FROM pg_sleep(0.002)";
            let statement = c.prepare(sql).await.unwrap();
            let mut most = 0i64;
            for _ in 0..ROUNDS {
                // Half the clients use the simple protocol, half the extended one.
                let seen: i64 = if i % 2 == 0 {
                    let answer = c.simple_query(sql).await.unwrap();
                    let row = answer.iter().find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                        _ => None,
                    });
                    row.expect("a row").get(0).unwrap().parse().unwrap()
                } else {
                    c.query_one(&statement, &[]).await.unwrap().get(0)
                };
                most = most.max(seen);
            }
            // Kept until the counts are read: dropping the statement sends a Close.
            (most, c, statement)
        }));
    }
    let mut most = 0;
    let mut kept = Vec::new();
    for t in tasks {
        let (seen, c, statement) = tokio::time::timeout(Duration::from_secs(60), t).await.unwrap().unwrap();
        most = most.max(seen);
        kept.push((c, statement));
    }
    assert!(most <= POOL, "PostgreSQL saw {most} connections of a pool of {POOL}");
    assert!(most >= 2, "24 busy clients used at most {most} server");

    // Every worker ran clients: each thread's CPU time grew by more than a millisecond.
    let after = thread_cpu(mux.pid());
    for (name, ns) in &before {
        if name == "pgmux" || name.starts_with("pgmux-worker-") {
            let grown = after.iter().find(|(n, _)| n == name).map(|(_, a)| a - ns).unwrap_or(0);
            assert!(grown > 1_000_000, "thread {name} ran {grown} ns: {before:?} -> {after:?}");
        }
    }

    // SHOW STATS adds up the threads' counters: one transaction and one query per round, and
    // one for each client's prepare (Parse, Describe, Sync).
    let console = mux.console().await;
    let rows = console.simple_query("SHOW STATS").await.unwrap();
    let row = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("workers") => Some(r),
            _ => None,
        })
        .expect("a SHOW STATS row for the database");
    let total = (CLIENTS * ROUNDS + CLIENTS).to_string();
    assert_eq!(row.get("total_xact_count"), Some(total.as_str()));
    assert_eq!(row.get("total_query_count"), Some(total.as_str()));
    // The extended-protocol half sent one Bind per round.
    let binds = (CLIENTS / 2 * ROUNDS).to_string();
    assert_eq!(row.get("total_bind_count"), Some(binds.as_str()));
}

/// A server reached over TLS moves between the worker threads too (its socket swapped under the
/// TLS session): one server, clients on three threads taking turns, every query answered over
/// the same encrypted connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_serves_the_clients_of_every_worker_thread_in_turn() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(
        pg,
        "tlsw = host=127.0.0.1 port=$PORT dbname=app",
        "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 1\nworker_threads = 3\n\
         worker_busy_percent = 0\nserver_tls_sslmode = require",
        &format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n"),
    );
    // Dealt in turn: two clients per thread.
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(mux.connect(SCRAM_USER, SCRAM_PASS, "tlsw").await.unwrap());
    }
    let mut backends = std::collections::BTreeSet::new();
    for round in 0..20 {
        for c in &clients {
            let row = c
                .query_one(
                    "SELECT ssl, pg_backend_pid(), $1::int FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[&round],
                )
                .await
                .unwrap();
            assert!(row.get::<_, bool>(0), "the server connection is encrypted");
            assert_eq!(row.get::<_, i32>(2), round);
            backends.insert(row.get::<_, i32>(1));
        }
    }
    assert_eq!(backends.len(), 1, "one server served them all: {backends:?}");
}

/// Clients placed by load (`worker_busy_percent = 1`: the first thread is over the mark from
/// the first transactions) start on the first thread and half of them move to the second one
/// between transactions; each keeps its session as it moves: the settings it made, its prepared
/// statement, its answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_threads_hand_clients_over_between_transactions_and_the_sessions_go_on() {
    const MOVERS: usize = 8;
    let pg = Cluster::shared();
    let userlist = format!("\"{SCRAM_USER}\" \"{}\"\n", pg.secret_of(SCRAM_USER));
    let exporter = free_port();
    let mux = PgmuxProcess::start(
        pg,
        "movers = host=$SOCKET port=$PORT dbname=postgres",
        &format!(
            "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 3\nworker_threads = 2\n\
             worker_busy_percent = 1\nexporter_port = {exporter}\nexporter_listen_addr = 127.0.0.1"
        ),
        &userlist,
    );
    let before = thread_cpu(mux.pid());
    let mut tasks = Vec::new();
    for i in 0..MOVERS {
        let c = mux.connect(SCRAM_USER, SCRAM_PASS, "movers").await.unwrap();
        tasks.push(tokio::spawn(async move {
            let name = format!("mover-{i}");
            c.simple_query(&format!("SET application_name = '{name}'")).await.unwrap();
            let statement = c.prepare("SELECT $1::int * 2, current_setting('application_name')").await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            let mut rounds = 0i32;
            while tokio::time::Instant::now() < deadline || rounds < 100 {
                let row = c.query_one(&statement, &[&rounds]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), rounds * 2);
                assert_eq!(row.get::<_, &str>(1), name, "the client's setting went with it");
                if rounds % 10 == 0 {
                    c.simple_query("SELECT 1").await.unwrap();
                }
                rounds += 1;
            }
            c
        }));
    }
    let mut kept = Vec::new();
    for t in tasks {
        kept.push(tokio::time::timeout(Duration::from_secs(60), t).await.unwrap().unwrap());
    }
    let m = scrape(exporter).await;
    let moves = m["pgmux_worker_client_moves_total{worker=\"0\"}"] + m["pgmux_worker_client_moves_total{worker=\"1\"}"];
    assert!(moves >= 1.0, "no client moved: {m:?}");
    let clients = m["pgmux_worker_clients{worker=\"0\"}"] + m["pgmux_worker_clients{worker=\"1\"}"];
    assert_eq!(clients, MOVERS as f64, "every client is counted on one thread");
    // Both threads ran clients' transactions.
    let after = thread_cpu(mux.pid());
    for (name, ns) in &before {
        if name == "pgmux" || name.starts_with("pgmux-worker-") {
            let grown = after.iter().find(|(n, _)| n == name).map(|(_, a)| a - ns).unwrap_or(0);
            assert!(grown > 1_000_000, "thread {name} ran {grown} ns: {before:?} -> {after:?}");
        }
    }
}
