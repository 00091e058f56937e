//! PgBouncer's log lines, read from the logfile of a pgmux process: the line format, the
//! connection prefixes (`C-0x..`/`S-0x..` matching SHOW CLIENTS ids), the events operators grep
//! for, signals, the periodic stats line and `log_format = json`.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{Cluster, PgmuxProcess, MD5_USER, SCRAM_PASS, SCRAM_USER};

fn userlist(pg: &Cluster) -> String {
    format!("\"{SCRAM_USER}\" \"{}\"\n\"{MD5_USER}\" \"{}\"\n", pg.secret_of(SCRAM_USER), pg.secret_of(MD5_USER))
}

/// Splits `2026-12-03 06:08:23.548 UTC [123] LOG rest` into (level, rest), checking the head.
fn parse(line: &str) -> (&str, &str) {
    let parts: Vec<&str> = line.splitn(6, ' ').collect();
    assert_eq!(parts.len(), 6, "{line}");
    let (date, time, zone, pid, level, rest) = (parts[0], parts[1], parts[2], parts[3], parts[4], parts[5]);
    assert!(date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-', "{line}");
    assert!(time.len() == 12 && time.as_bytes()[8] == b'.', "milliseconds: {line}");
    assert_eq!(zone, "UTC", "{line}");
    assert!(pid.starts_with('[') && pid.ends_with(']') && pid[1..pid.len() - 1].parse::<u32>().is_ok(), "{line}");
    (level, rest)
}

/// The ids of SHOW CLIENTS rows of database `db`.
fn client_ids(rows: &[tokio_postgres::SimpleQueryMessage], db: &str) -> Vec<u64> {
    rows.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some(db) => {
                r.get("id").map(|v| v.parse().unwrap())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_read_like_pgbouncer() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(pg, "* = host=$SOCKET port=$PORT", "auth_type = scram-sha-256", &userlist(pg));
    let up = mux.wait_for_log("process up: PgBouncer 1.25.2");
    let (level, rest) = parse(&up);
    assert_eq!(level, "LOG");
    assert!(rest.ends_with(&format!("tls: {}", pgmux::TLS_LIBRARY)), "{rest}");
    mux.wait_for_log(&format!("LOG listening on 127.0.0.1:{}", mux.port));

    let client = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let console = mux.console().await;
    let rows = console.simple_query("SHOW CLIENTS").await.unwrap();
    let ids = client_ids(&rows, "app");
    assert_eq!(ids.len(), 1, "{rows:?}");
    let prefix = format!("C-0x{:x}: app/{SCRAM_USER}@127.0.0.1:", ids[0]);
    let login = mux.wait_for_log(&prefix);
    let (level, rest) = parse(&login);
    assert_eq!(level, "LOG");
    assert!(
        rest.ends_with(&format!("login attempt: db=app user={SCRAM_USER} tls=no replication=no")),
        "the id in the log is the SHOW CLIENTS id: {rest}"
    );
    let server = mux.wait_for_log("new connection to server");
    assert!(parse(&server).1.starts_with("S-0x"), "{server}");
    assert!(server.contains(&format!(": app/{SCRAM_USER}@unix:{} new connection to server", pg.port)), "{server}");

    drop(client);
    let closed = mux.wait_for_log("closing because: client close request (age=");
    assert!(closed.contains(&prefix), "{closed}");

    assert!(mux.connect(SCRAM_USER, "wrong", "app").await.is_err());
    let refused = mux.wait_for_log("closing because: SASL authentication failed (age=0s)");
    assert_eq!(parse(&refused).0, "LOG");
    let warned = mux.wait_for_log("pooler error: SASL authentication failed");
    assert_eq!(parse(&warned).0, "WARNING");
    let failed = mux.wait_for_log("password authentication failed");
    let (level, rest) = parse(&failed);
    assert_eq!((level, rest.starts_with("C-0x")), ("ERROR", true), "{rest}");

    // A console client's end is logged as any client's (log-based auditing of console
    // sessions): killed, and closed by the client.
    let other = mux.console().await;
    let rows = other.simple_query("SHOW CLIENTS").await.unwrap();
    let mut ids = client_ids(&rows, "pgbouncer");
    ids.sort_unstable();
    assert_eq!(ids.len(), 2, "{rows:?}");
    let line_of = |id: u64, why: &str| {
        let prefix = format!("C-0x{id:x}: pgbouncer/pgbouncer@unix");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if mux.log().lines().any(|l| l.contains(&prefix) && l.contains(why)) {
                return true;
            }
            // A blocking wait in an async test: short, and the runtime has a second thread.
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    // A console error is logged as PgBouncer's admin_error logs it: an ERROR line, and a
    // pooler error under the client's prefix.
    let e = other.simple_query("SHOW nosuchthing").await.unwrap_err();
    let msg = e.as_db_error().expect("an ErrorResponse").message().to_owned();
    let error = mux.wait_for_log(&format!(" ERROR {msg}"));
    assert!(!error.contains("C-0x"), "{error}");
    assert!(line_of(ids[1], &format!("pooler error: {msg}")), "{}", mux.log());
    other.simple_query(&format!("KILL_CLIENT {}", ids[0])).await.unwrap();
    assert!(line_of(ids[0], "closing because: admin forced disconnect (age="), "{}", mux.log());
    drop(console);
    drop(other);
    assert!(line_of(ids[1], "closing because: client close request (age="), "{}", mux.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_are_logged_in_pgbouncer_words() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(pg, "* = host=$SOCKET port=$PORT", "auth_type = trust", &userlist(pg));
    mux.signal(Signal::SIGUSR1);
    mux.wait_for_log("LOG got SIGUSR1, pausing all activity");
    mux.signal(Signal::SIGUSR1);
    mux.wait_for_log("LOG got SIGUSR1, but already paused/suspended");
    mux.signal(Signal::SIGUSR2);
    mux.wait_for_log("LOG got SIGUSR2, continuing from PAUSE");
    mux.signal(Signal::SIGUSR2);
    mux.wait_for_log("LOG got SIGUSR2, but not paused/suspended");
    mux.signal(Signal::SIGHUP);
    mux.wait_for_log("LOG got SIGHUP, re-reading config");
    // Trust: the md5 secret in userlist.txt logs in to the server.
    let held = mux.connect(MD5_USER, "", "app").await.unwrap();
    mux.signal(Signal::SIGTERM);
    mux.wait_for_log("LOG got SIGTERM, shutting down, waiting for all clients disconnect");
    mux.signal(Signal::SIGUSR2);
    mux.wait_for_log("LOG got SIGUSR2 while shutting down, ignoring");
    held.simple_query("SELECT 1").await.expect("a connected client is served until it leaves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_and_the_stats_line() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        "auth_type = trust\nlog_format = json\nstats_period = 1",
        &userlist(pg),
    );
    let client = mux.connect(MD5_USER, "", "app").await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let login = mux.wait_for_log("\"msg\":\"login attempt: db=app");
    assert!(login.starts_with("{\"time\":\"") && login.ends_with('}'), "{login}");
    assert!(login.contains("\"level\":\"LOG\",\"conn\":\"C-0x"), "{login}");
    assert!(login.contains(&format!("\"db\":\"app\",\"user\":\"{MD5_USER}\",\"addr\":\"127.0.0.1:")), "{login}");
    let stats = mux.wait_for_log("\"msg\":\"stats: ");
    assert!(stats.contains("xacts/s,") && stats.contains("client logins/s, in "), "{stats}");
}

/// A fake PostgreSQL that refuses every login with 28P01 after `delay`, counting attempts.
async fn slow_refusing_server(delay: Duration) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = attempts.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = [0u8; 8];
                s.read_exact(&mut head).await?;
                let len = i32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
                let mut rest = vec![0u8; len - 8];
                s.read_exact(&mut rest).await?;
                tokio::time::sleep(delay).await;
                let body = b"SFATAL\0C28P01\0Mpassword authentication failed for user \"md5_user\"\0\0";
                let mut out = vec![b'E'];
                out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
                out.extend_from_slice(body);
                s.write_all(&out).await
            });
        }
    });
    (port, attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_server_login_fails_every_waiting_client_once() {
    let pg = Cluster::shared();
    let (port, attempts) = slow_refusing_server(Duration::from_millis(500)).await;
    let mux = PgmuxProcess::start(
        pg,
        &format!("bad = host=127.0.0.1 port={port} dbname=app user={MD5_USER} password=wrong pool_size=1"),
        "auth_type = trust\nserver_login_retry = 30\nserver_tls_sslmode = disable",
        &userlist(pg),
    );
    // Three clients wait for the pool's one login, which the server refuses after 500 ms.
    let attempts_now = || attempts.load(std::sync::atomic::Ordering::SeqCst);
    let clients: Vec<_> = (0..3).map(|_| mux.connect(SCRAM_USER, "", "bad")).collect();
    let expected = ("28P01".to_owned(), format!("password authentication failed for user \"{MD5_USER}\""));
    for r in futures_util::future::join_all(clients).await {
        let Err(e) = r else { panic!("the server refuses the pool's login") };
        assert_eq!(crate::harness::db_error(&e), expected, "the server's own error, passed on to every waiter");
    }
    assert_eq!(attempts_now(), 1, "one login attempt for all waiting clients");
    // A client arriving now gets the same refusal, the server's SQLSTATE and words as PgBouncer
    // passes them to clients waiting for a pool's first welcome, at once and without a new
    // attempt (PgBouncer makes it wait for its next attempt, server_login_retry later).
    let Err(late) = mux.connect(SCRAM_USER, "", "bad").await else { panic!("still refused") };
    assert_eq!(crate::harness::db_error(&late), expected);
    assert_eq!(attempts_now(), 1);
    mux.wait_for_log("WARNING server login failed: FATAL password authentication failed");
    mux.wait_for_log(&format!("closing because: password authentication failed for user \"{MD5_USER}\" (age=0s)"));
}

#[test]
fn reserved_auth_dbname_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("bad.ini");
    std::fs::write(&ini, "[databases]\n[pgbouncer]\nlisten_port = 0\nauth_dbname = pgbouncer\n").unwrap();
    let out = std::process::Command::new(crate::harness::process::binary()).arg(&ini).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.ini:4") && err.contains("cannot use the reserved \"pgbouncer\" database as an auth_dbname"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_logs_file_line_and_reason() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(pg, "* = host=$SOCKET port=$PORT", "auth_type = trust", &userlist(pg));
    let ini = mux.dir.path().join("pgmux.ini");
    let good = std::fs::read_to_string(&ini).unwrap();
    std::fs::write(&ini, format!("{good}pool_mode = sometimes\n")).unwrap();
    let console = mux.console().await;
    let err = console.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "F0000");
    mux.wait_for_log("LOG RELOAD command issued");
    let reason = mux.wait_for_log("invalid pool_mode");
    assert!(reason.contains(" ERROR ") && reason.contains("pgmux.ini:"), "file and line in the log: {reason}");
    mux.wait_for_log("ERROR RELOAD Failed, see logs for more details");
    // The old configuration is still in force.
    mux.connect(MD5_USER, "", "app").await.unwrap().simple_query("SELECT 1").await.unwrap();
}

/// A session closed by one of pgmux's rules keeps PgBouncer's `closing because:` line word for
/// word, and at verbose = 1 a line of its own says whose fault it was (client, server or pgmux).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whose_fault_a_closed_session_was_is_logged_beside_pgbouncers_line() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        "auth_type = scram-sha-256\npool_mode = transaction\nquery_timeout = 1\nverbose = 1",
        &userlist(pg),
    );
    let client = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let err = client.simple_query("SELECT pg_sleep(5)").await.unwrap_err();
    assert_eq!(crate::harness::db_error(&err), ("08P01".to_owned(), "query timeout".to_owned()));
    let closing = mux.wait_for_log("closing because: query timeout (age=");
    assert!(closing.ends_with("s)"), "PgBouncer's line, nothing appended: {closing}");
    let side = mux.wait_for_log("session ended by pgmux: query timeout");
    assert!(side.contains(" DEBUG ") && side.ends_with("sqlstate=08P01"), "{side}");
}

/// A client whose TLS handshake fails gets PgBouncer's warning with the reason in words, and a
/// client gone before its startup packet (a probe, psql retrying) leaves no line at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_client_handshake_is_one_warning_and_a_probe_is_nothing() {
    let pg = Cluster::shared();
    let tls = crate::tls::client_tls("verify-ca");
    let mux = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        &format!("auth_type = scram-sha-256\n{tls}"),
        &userlist(pg),
    );
    mux.wait_for_log("LOG listening on 127.0.0.1:");
    // A TCP connection closed before any byte.
    drop(std::net::TcpStream::connect(("127.0.0.1", mux.port)).unwrap());
    // verify-ca: a client without a certificate fails the handshake.
    let out = std::process::Command::new("psql")
        .args(["-X", "-At", "-c", "SELECT 1", "-d"])
        .arg(format!("host=127.0.0.1 port={} user={SCRAM_USER} dbname=app sslmode=require", mux.port))
        .env("PGPASSWORD", SCRAM_PASS)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let warning = mux.wait_for_log("TLS handshake error");
    let (level, rest) = parse(&warning);
    assert_eq!(level, "WARNING");
    assert!(
        rest.starts_with("C-0x")
            && rest.ends_with("TLS handshake error: handshake failed: peer did not return a certificate"),
        "{rest}"
    );
    // A plain client is refused (SSL required) and logged: every line before it is there too.
    mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap_err();
    mux.wait_for_log("closing because: SSL required");
    let log = mux.log();
    assert!(!log.contains("client unexpected eof"), "{log}");
    let handshake = rest.split(' ').next().unwrap();
    assert_eq!(log.lines().filter(|l| l.contains(handshake)).count(), 1, "one line for the handshake: {log}");
}

/// A client that goes away during its login leaves no line, as with PgBouncer: psql closing
/// to ask for a password (every interactive login), a reset before any byte or after the
/// authentication request. A refused login is still logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_during_its_login_is_not_logged() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(pg, "* = host=$SOCKET port=$PORT", "auth_type = scram-sha-256", &userlist(pg));
    mux.wait_for_log("LOG listening on 127.0.0.1:");
    // psql without a password: it reads the SCRAM request and closes.
    let out = std::process::Command::new("psql")
        .args(["-X", "-w", "-At", "-c", "SELECT 1", "-d"])
        .arg(format!("host=127.0.0.1 port={} user={SCRAM_USER} dbname=app", mux.port))
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no password supplied"), "{out:?}");
    let reset = |s: tokio::net::TcpStream| s.set_zero_linger().unwrap();
    // Reset before any byte.
    reset(tokio::net::TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap());
    // Reset after the authentication request.
    let mut s = crate::harness::raw::send_startup(mux.port, SCRAM_USER).await;
    let mut request = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut s, &mut request).await.unwrap();
    assert_eq!(&request, b"R");
    reset(s);
    // A wrong password is logged, and so after all of the above.
    mux.connect(SCRAM_USER, "wrong", "app").await.unwrap_err();
    mux.wait_for_log("closing because: SASL authentication failed");
    let log = mux.log();
    assert_eq!(log.lines().filter(|l| l.contains("closing because")).count(), 1, "{log}");
}
