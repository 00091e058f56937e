//! Soak: mixed load with churn against a pgmux process for PGMUX_SOAK_SECS seconds (20 in the
//! test run; `PGMUX_SOAK_SECS=600 cargo test --test integration soak -- --nocapture` for the
//! ten-minute run): steady transactions, connect/query/disconnect churn, pipelines, COPY in
//! and out, cancels, RELOAD every 3 s, PAUSE/RESUME every 5 s, and a backend terminated every
//! 7 s. At the end: no unexpected error, the descriptors back to what they were before the load,
//! resident memory flat over the run, and SHOW STATS agreeing with what the load counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_postgres::SimpleQueryMessage;

use crate::harness::{Cluster, PgmuxProcess, MD5_USER, SCRAM_PASS, SCRAM_USER};

/// What the load saw.
#[derive(Default)]
struct Tally {
    /// Query messages answered by the server (results, SQL errors, cancels).
    answered: AtomicU64,
    /// Statements lost with their server (ERROR 08006 from pgmux; the server was terminated).
    lost: AtomicU64,
    /// Queries cancelled on purpose (57014).
    cancelled: AtomicU64,
    /// Logins of the churn task.
    logins: AtomicU64,
    /// Backends terminated.
    kills: AtomicU64,
    /// COPY clients replaced after tokio-postgres fell out of step (see the COPY task).
    out_of_step: AtomicU64,
    unexpected: Mutex<Vec<String>>,
}

impl Tally {
    /// Sorts the outcome of one Query message.
    fn note(&self, r: Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>, expect_cancel: bool) {
        match r {
            Ok(_) => {
                self.answered.fetch_add(1, Relaxed);
            }
            Err(e) => match e.as_db_error().map(|d| d.code().code().to_owned()) {
                Some(c) if c == "08006" => {
                    self.lost.fetch_add(1, Relaxed);
                }
                Some(c) if c == "57014" && expect_cancel => {
                    self.answered.fetch_add(1, Relaxed);
                    self.cancelled.fetch_add(1, Relaxed);
                }
                _ => self.unexpected.lock().unwrap().push(describe(&e)),
            },
        }
    }
}

/// An error with its SQLSTATE and message when it is an ErrorResponse.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}: {}", d.severity(), d.code().code(), d.message()),
        None => e.to_string(),
    }
}

fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

async fn stats_of(console: &tokio_postgres::Client, db: &str) -> (u64, u64) {
    for m in console.simple_query("SHOW STATS").await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            if r.get("database") == Some(db) {
                let n = |c: &str| r.get(c).unwrap().parse::<u64>().unwrap();
                return (n("total_xact_count"), n("total_query_count"));
            }
        }
    }
    (0, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_with_churn_leaves_nothing_behind() {
    let secs: u64 = std::env::var("PGMUX_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let pg = Arc::new(Cluster::start());
    pg.psql(
        "app",
        &format!(
            "CREATE TABLE soak (client int, n int); CREATE TABLE soak_copy (line text); \
             ALTER TABLE soak OWNER TO {SCRAM_USER}; ALTER TABLE soak_copy OWNER TO {SCRAM_USER}"
        ),
    );
    let userlist =
        format!("\"{SCRAM_USER}\" \"{}\"\n\"{MD5_USER}\" \"{}\"\n", pg.secret_of(SCRAM_USER), pg.secret_of(MD5_USER));
    let mux = Arc::new(PgmuxProcess::start(
        &pg,
        "app = host=$SOCKET port=$PORT dbname=app",
        "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 6\nserver_idle_timeout = 2\n\
         server_login_retry = 0.2\nlog_connections = 0\nlog_disconnections = 0",
        &userlist,
    ));
    let pid = mux.pid();
    let console = mux.console().await;
    let fds_before = open_fds(pid);
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();

    // Steady transactions: four clients, one Query message per transaction.
    for id in 0..4 {
        let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        let (tally, stop) = (tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Relaxed) {
                let sql = format!(
                    "BEGIN; INSERT INTO soak VALUES ({id}, {n}); SELECT count(*) FROM soak WHERE client = {id}; COMMIT"
                );
                tally.note(c.simple_query(&sql).await, false);
                n += 1;
                if c.is_closed() {
                    tally.unexpected.lock().unwrap().push(format!("client {id} closed"));
                    break;
                }
            }
        }));
    }
    // Connect storms: log in, one query, leave.
    {
        let (tally, stop, mux) = (tally.clone(), stop.clone(), mux.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let mut storm = Vec::new();
                for _ in 0..10 {
                    storm.push(mux.connect(SCRAM_USER, SCRAM_PASS, "app"));
                }
                for c in futures_util::future::join_all(storm).await {
                    match c {
                        Ok(c) => {
                            tally.logins.fetch_add(1, Relaxed);
                            tally.note(c.simple_query("SELECT 1").await, false);
                        }
                        Err(e) => tally.unexpected.lock().unwrap().push(format!("login: {e}")),
                    }
                }
            }
        }));
    }
    // Pipelines: five queries in flight at once on one connection.
    {
        let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        let (tally, stop) = (tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let batch: Vec<_> =
                    (0..5).map(|i| c.simple_query(if i % 2 == 0 { "SELECT 1" } else { "SELECT 2" })).collect();
                for r in futures_util::future::join_all(batch).await {
                    tally.note(r, false);
                }
                if c.is_closed() {
                    tally.unexpected.lock().unwrap().push("pipelining client closed".into());
                    break;
                }
            }
        }));
    }
    // COPY in and out. When the server dies between tokio-postgres's Bind/Execute/Sync of a
    // COPY and the CopyInResponse, the request gets its ERROR and ReadyForQuery, and then
    // tokio-postgres itself sends CopyFail and Sync for the COPY it gave up; that Sync's
    // ReadyForQuery is one it does not expect, and its connection is out of step from then on
    // (it does the same when PostgreSQL refuses a COPY at Execute). Such a client is counted
    // apart and replaced.
    {
        let (tally, stop, mux) = (tally.clone(), stop.clone(), mux.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
            let chunk = bytes::Bytes::from("copied line\n".repeat(1000));
            while !stop.load(Relaxed) {
                let copied = async {
                    let sink = c.copy_in::<_, bytes::Bytes>("COPY soak_copy FROM STDIN").await?;
                    futures_util::pin_mut!(sink);
                    sink.send(chunk.clone()).await?;
                    sink.finish().await
                };
                let mut out_of_step = false;
                match copied.await {
                    Ok(1000) => {
                        // tokio-postgres prepares the COPY statement, runs it, and closes it:
                        // three requests, each ending in a Sync.
                        tally.answered.fetch_add(3, Relaxed);
                    }
                    Ok(n) => tally.unexpected.lock().unwrap().push(format!("COPY took {n} rows")),
                    Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "08006") => {
                        tally.lost.fetch_add(1, Relaxed);
                    }
                    Err(e) if e.to_string() == "unexpected message from server" => out_of_step = true,
                    Err(e) => tally.unexpected.lock().unwrap().push(format!("COPY: {}", describe(&e))),
                }
                if !out_of_step {
                    let r = c.simple_query("SELECT count(*) FROM soak_copy").await;
                    out_of_step = matches!(&r, Err(e) if e.to_string() == "unexpected message from server");
                    if !out_of_step {
                        tally.note(r, false);
                    }
                }
                if out_of_step {
                    tally.out_of_step.fetch_add(1, Relaxed);
                    c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
                    continue;
                }
                if c.is_closed() {
                    tally.unexpected.lock().unwrap().push("COPY client closed".into());
                    break;
                }
            }
        }));
    }
    // Cancels: a long query cancelled after 100 ms, once a second.
    {
        let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        let (tally, stop) = (tally.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let token = c.cancel_token();
                let cancel = tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = token.cancel_query(tokio_postgres::NoTls).await;
                });
                tally.note(c.simple_query("SELECT pg_sleep(5)").await, true);
                let _ = cancel.await;
                if c.is_closed() {
                    tally.unexpected.lock().unwrap().push("cancelling client closed".into());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(900)).await;
            }
        }));
    }

    // The operator: RELOAD every 3 s, PAUSE/RESUME every 5 s, a backend terminated every 7 s.
    let started = Instant::now();
    let mut rss = Vec::new();
    let mut tick = 0u64;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        rss.push(proc_status(pid, "VmRSS:"));
        if tick.is_multiple_of(3) {
            console.simple_query("RELOAD").await.unwrap();
        }
        if tick.is_multiple_of(5) {
            console.simple_query("PAUSE app").await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            console.simple_query("RESUME app").await.unwrap();
        }
        if tick.is_multiple_of(7) {
            let pg = pg.clone();
            let killed = tokio::task::spawn_blocking(move || {
                pg.psql(
                    "postgres",
                    &format!(
                        "SELECT count(pg_terminate_backend(pid)) FROM (SELECT pid FROM pg_stat_activity \
                         WHERE usename = '{SCRAM_USER}' AND datname = 'app' \
                         AND backend_type = 'client backend' LIMIT 1) k"
                    ),
                )
            })
            .await
            .unwrap();
            tally.kills.fetch_add(killed.parse::<u64>().unwrap_or(0), Relaxed);
        }
    }
    stop.store(true, Relaxed);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t).await.expect("a load task hung").unwrap();
    }
    let elapsed = started.elapsed();
    let (xacts, queries) = stats_of(&console, "app").await;
    // Servers close after server_idle_timeout (2 s); clients are gone.
    let fds_deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut fds_after = open_fds(pid);
    while fds_after > fds_before && std::time::Instant::now() < fds_deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        fds_after = open_fds(pid);
    }
    let t = &*tally;
    let (answered, lost, kills) = (t.answered.load(Relaxed), t.lost.load(Relaxed), t.kills.load(Relaxed));
    let out_of_step = t.out_of_step.load(Relaxed);
    eprintln!(
        "soak {elapsed:?}: {answered} answered ({} cancelled), {lost} lost with {kills} terminated backends, \
         {out_of_step} COPY clients out of step, \
         {} logins; SHOW STATS: {queries} queries, {xacts} transactions; fds {fds_before} -> {fds_after}; \
         RSS KiB first {} max {} last {}",
        t.cancelled.load(Relaxed),
        t.logins.load(Relaxed),
        rss.first().unwrap_or(&0),
        rss.iter().max().unwrap_or(&0),
        rss.last().unwrap_or(&0),
    );
    let unexpected = t.unexpected.lock().unwrap();
    if !unexpected.is_empty() {
        let log = mux.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARNING") || l.contains("cannot go on") || l.contains("crashed"))
            .collect();
        eprintln!("pgmux log, warnings:\n{}", lines[lines.len().saturating_sub(60)..].join("\n"));
    }
    assert!(
        unexpected.is_empty(),
        "{} unexpected errors: {:?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(10)]
    );
    assert!(lost + out_of_step <= kills * 5, "{lost} statements lost for {kills} terminated backends");
    assert!(t.cancelled.load(Relaxed) > 0 && t.logins.load(Relaxed) > 0 && answered > 0);
    // Every Query message the server answered is counted once, and each was one transaction
    // (statements lost with their server may or may not have been counted).
    assert!(
        queries >= answered && queries <= answered + lost,
        "SHOW STATS {queries} queries, load {answered} + {lost}"
    );
    assert!(xacts >= answered && xacts <= answered + lost, "SHOW STATS {xacts} transactions, load {answered} + {lost}");
    assert!(fds_after <= fds_before, "descriptors {fds_before} before the load, {fds_after} after");
    // Memory flat: the last quarter of the run no higher than the first quarter's peak + 8 MiB.
    let quarter = (rss.len() / 4).max(1);
    let early = rss[..quarter].iter().max().copied().unwrap_or(0);
    let late = rss[rss.len() - quarter..].iter().max().copied().unwrap_or(0);
    assert!(late <= early + 8 * 1024, "RSS grew from {early} KiB to {late} KiB");
}
