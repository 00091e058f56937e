//! Replication connections through pgmux (PgBouncer 1.23+): logical (`replication=database`)
//! and physical (`replication=yes`, pg_basebackup) clients get a server of their own, logged in
//! with their startup parameters, closed when they leave; the pool's size still bounds them.

use std::process::Command;

use crate::harness::pgmux::Setup;
use crate::harness::{run, Cluster, Pgmux};

fn replication_pgmux(pg: &Cluster, extra: &str) -> Pgmux {
    Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: &format!("auth_type = trust\npool_mode = transaction\n{extra}"),
            // libpq names the database `replication` for physical replication, whatever dbname
            // says: an entry of that name (or `*`) routes it, as with PgBouncer.
            databases: "app = host=$SOCKET port=$PORT\nreplication = host=$SOCKET port=$PORT pool_size=1\n\
                        rep1 = host=$SOCKET port=$PORT dbname=app pool_size=1",
            userlist: Some("\"postgres\" \"\"\n"),
        },
    )
}

fn psql(mux: &Pgmux, conninfo: &str, sql: &str) -> String {
    let conninfo = format!("host=127.0.0.1 port={} user=postgres {conninfo}", mux.port);
    run(Command::new("psql").args(["-X", "-At", &conninfo, "-c", sql])).trim().to_owned()
}

/// Waits (up to 5 s) until PostgreSQL has no walsender left of those whose application_name
/// is LIKE `apps`: each replication client's server is closed when the client leaves. Each test
/// names its own clients, so that another test's walsender (a basebackup of the shared cluster
/// may run for seconds) is not counted.
fn walsenders(pg: &Cluster, apps: &str) -> i64 {
    let count = || -> i64 {
        pg.psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' AND application_name LIKE '{apps}'"),
        )
        .parse()
        .unwrap()
    };
    for _ in 0..50 {
        if count() == 0 {
            return 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    count()
}

#[test]
fn logical_replication_connections_pass_their_parameters_through() {
    let pg = Cluster::shared();
    let mux = replication_pgmux(pg, "");
    let system = psql(&mux, "dbname=app replication=database application_name=rep_logical", "IDENTIFY_SYSTEM");
    let direct = pg.psql("postgres", "SELECT system_identifier FROM pg_control_system()");
    assert!(system.starts_with(&format!("{direct}|")), "{system} vs {direct}");
    // options and application_name reach the server as the client sent them.
    let conninfo = "dbname=app replication=database application_name=rep_logical_abc options='-c enable_seqscan=off'";
    assert_eq!(psql(&mux, conninfo, "SHOW enable_seqscan"), "off");
    assert_eq!(psql(&mux, conninfo, "SHOW application_name"), "rep_logical_abc");
    // Its server is closed with it, and a normal client of the same pool is not disturbed.
    assert_eq!(psql(&mux, "dbname=app", "SELECT 1"), "1");
    assert_eq!(walsenders(pg, "rep_logical%"), 0, "no walsender left behind");
}

#[test]
fn pg_basebackup_through_pgmux() {
    let pg = Cluster::shared();
    let mux = replication_pgmux(pg, "");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("copy");
    let conninfo = format!("host=127.0.0.1 port={} user=postgres application_name=rep_basebackup", mux.port);
    run(Command::new("pg_basebackup")
        .args(["-d", &conninfo, "-D", target.to_str().unwrap(), "-X", "none"])
        .args(["--checkpoint=fast", "--no-sync"]));
    assert!(target.join("PG_VERSION").exists(), "a copy of the cluster was made");
    assert_eq!(walsenders(pg, "rep_basebackup"), 0);
}

#[test]
fn a_replication_refusal_is_login_failed() {
    let pg = Cluster::shared();
    pg.psql("postgres", "DROP ROLE IF EXISTS rep_plain; CREATE ROLE rep_plain LOGIN");
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: "auth_type = trust",
            databases: "app = host=$SOCKET port=$PORT user=postgres",
            userlist: Some("\"rep_plain\" \"\"\n"),
        },
    );
    // The forced user may replicate; a db entry without one would log in as rep_plain, which
    // PostgreSQL refuses for replication: pgmux says `login failed` to that client only.
    let ok = psql(&mux, "dbname=app user=rep_plain replication=database", "IDENTIFY_SYSTEM");
    assert!(!ok.is_empty());
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: "auth_type = trust",
            databases: "app = host=$SOCKET port=$PORT",
            userlist: Some("\"rep_plain\" \"\"\n\"postgres\" \"\"\n"),
        },
    );
    let conninfo = format!("host=127.0.0.1 port={} user=rep_plain dbname=app replication=database", mux.port);
    let out = Command::new("psql").args(["-X", "-At", &conninfo, "-c", "IDENTIFY_SYSTEM"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("login failed"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(psql(&mux, "dbname=app", "SELECT 1"), "1", "normal logins are not failed by it");
}

#[test]
fn replication_clients_take_pool_slots() {
    let pg = Cluster::shared();
    let mux = replication_pgmux(pg, "");
    // rep1 has pool_size = 1: two logical clients run one after the other.
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                psql(&mux, "dbname=rep1 replication=database application_name=rep_slots", "SELECT pg_sleep(0.5)")
            });
        }
    });
    assert!(started.elapsed() >= std::time::Duration::from_millis(1000), "{:?}", started.elapsed());
    assert_eq!(walsenders(pg, "rep_slots"), 0);
}

/// pg_receivewal streams until SIGINT, then ends the COPY and exits 0, with PostgreSQL reached
/// over TCP and the ini PgBouncer's suite uses (`tcp_socket_buffer = 4096`, which stalled this
/// stream when pgmux applied it to connected sockets; pgmux now leaves buffers to the kernel).
#[test]
fn pg_receivewal_stops_cleanly_over_small_socket_buffers() {
    let pg = Cluster::shared();
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: "auth_type = trust\ntcp_socket_buffer = 4096\ntcp_keepalive = 0",
            databases: "replication = host=127.0.0.1 port=$PORT",
            userlist: Some("\"postgres\" \"\"\n"),
        },
    );
    pg.psql("postgres", "SELECT pg_create_physical_replication_slot('pgmux_receivewal') WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pgmux_receivewal')");
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("pg_receivewal")
        .args(["--dbname", &format!("host=127.0.0.1 port={} user=postgres application_name=stream_test", mux.port)])
        .args(["--slot=pgmux_receivewal", "--no-loop", "--directory"])
        .arg(dir.path())
        .spawn()
        .expect("pg_receivewal runs");
    // Streaming has begun once the first (partial) segment file is there.
    let started = std::time::Instant::now();
    while std::fs::read_dir(dir.path()).unwrap().next().is_none() {
        assert!(started.elapsed() < std::time::Duration::from_secs(15), "pg_receivewal received nothing");
        if let Some(s) = child.try_wait().unwrap() {
            panic!("pg_receivewal exited early: {s}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("pg_receivewal did not stop within 10 s of SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_some(), "WAL was received");
    pg.psql("postgres", "SELECT pg_drop_replication_slot('pgmux_receivewal')");
}

/// pg_basebackup with its WAL streamed alongside (two replication connections at once, one
/// sending the tar stream, one the WAL), PostgreSQL over TCP, with PgBouncer's suite's ini
/// (`tcp_socket_buffer = 4096`: applied, it made this take over 30 s).
#[test]
fn pg_basebackup_with_wal_streaming_over_small_socket_buffers() {
    let pg = Cluster::shared();
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: "auth_type = trust\ntcp_socket_buffer = 4096\ntcp_keepalive = 0",
            databases: "replication = host=127.0.0.1 port=$PORT",
            userlist: Some("\"postgres\" \"\"\n"),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("copy");
    let mut child = Command::new("pg_basebackup")
        .args(["-d", &format!("host=127.0.0.1 port={} user=postgres application_name=stream_test", mux.port)])
        .args(["-D", target.to_str().unwrap(), "-X", "stream", "--checkpoint=fast", "--no-sync"])
        .spawn()
        .expect("pg_basebackup runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let out = Command::new("ss").args(["-tn"]).output().unwrap();
            let _ = child.kill();
            panic!("pg_basebackup did not finish within 15 s:\n{}", String::from_utf8_lossy(&out.stdout));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(target.join("PG_VERSION").exists());
}

/// SHOW CLIENTS and SHOW SERVERS print a replication connection's kind, as PgBouncer does:
/// `logical` for `replication=database`, `physical` for a true value, `none` otherwise, for the
/// client and for its own server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_and_servers_print_the_replication_kind() {
    use bytes::BytesMut;
    use pgmux_protocol::build;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pg = Cluster::shared();
    let mux = replication_pgmux(pg, "admin_users = postgres");
    let console = mux.connect("postgres", "", "pgbouncer").await.unwrap();
    let mut held = Vec::new();
    for (db, replication) in [("app", None), ("rep1", Some("database")), ("replication", Some("true"))] {
        let mut out = BytesMut::new();
        let mut params = vec![("user", "postgres"), ("database", db), ("application_name", "rep_kinds")];
        params.extend(replication.map(|r| ("replication", r)));
        build::startup_message(&mut out, &params);
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
        s.write_all(&out).await.unwrap();
        // Up to ReadyForQuery: the login is done.
        let mut got = Vec::new();
        while !got.windows(6).any(|w| w == [b'Z', 0, 0, 0, 5, b'I']) {
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(10), s.read_buf(&mut got)).await.unwrap().unwrap();
            assert!(n > 0, "closed during login: {}", String::from_utf8_lossy(&got));
        }
        held.push(s);
    }
    let kinds = |what: &'static str| {
        let console = &console;
        async move {
            let mut k: Vec<(String, String)> = crate::harness::show_rows(console, what)
                .await
                .iter()
                .filter(|r| r["database"] != "pgbouncer")
                .map(|r| (r["database"].clone(), r["replication"].clone()))
                .collect();
            k.sort();
            k
        }
    };
    let expected: Vec<(String, String)> =
        [("app", "none"), ("rep1", "logical"), ("replication", "physical")].map(|(d, k)| (d.into(), k.into())).into();
    assert_eq!(kinds("CLIENTS").await, expected);
    // A replication client's server is its own from the login; the normal client's first login
    // to its pool opened the pool's first server (for the parameters it welcomes clients with).
    assert_eq!(kinds("SERVERS").await, expected);
    drop(held);
    assert_eq!(walsenders(pg, "rep_kinds"), 0);
}
