//! Start-up parameters and sessions as PgBouncer handles them (its test_misc.py): `options` in
//! the forms libpq sends, equivalent values that must not cause a SET on every transaction, auto
//! databases, the welcome NOTICE (login_notify_message), the queued NOTICE (query_wait_notify),
//! server_fast_close on RECONNECT, and a server that refuses logins while it restarts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::harness::pgmux::Setup;
use crate::harness::{db_error, Cluster, Pgmux, PgmuxProcess, MD5_USER, SCRAM_PASS, SCRAM_USER};

async fn show(c: &Client, what: &str) -> String {
    c.query_one(&format!("SHOW {what}"), &[]).await.unwrap().get(0)
}

/// Connects with `options` passed as is (no conninfo quoting in the way).
async fn connect_with_options(mux: &Pgmux, options: &str) -> Result<Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = mux.url(SCRAM_USER, SCRAM_PASS, "app").parse().unwrap();
    config.options(options);
    let (c, conn) = config.connect(NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

/// Connects and keeps every NOTICE the connection receives.
async fn connect_collecting(url: &str) -> (Client, Arc<Mutex<Vec<String>>>) {
    let (client, mut conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let notices = Arc::new(Mutex::new(Vec::new()));
    let kept = notices.clone();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notice(n) = m {
                kept.lock().unwrap().push(n.message().to_owned());
            }
        }
    });
    (client, notices)
}

fn userlist(pg: &Cluster) -> String {
    format!("\"{SCRAM_USER}\" \"{}\"\n\"{MD5_USER}\" \"{}\"\n", pg.secret_of(SCRAM_USER), pg.secret_of(MD5_USER))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_in_every_form_libpq_sends() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "ignore_startup_parameters = extra_float_digits");
    let c = connect_with_options(&mux, "  -c    datestyle=German,\\ YMD").await.unwrap();
    assert_eq!(show(&c, "DateStyle").await, "German, YMD");
    for options in [
        "-c timezone=Europe/Lisbon  -c    datestyle=German,\\ YMD",
        "-ctimezone=Europe/Lisbon  -cdatestyle=German,\\ YMD",
        "--timezone=Europe/Lisbon  --datestyle=German,\\ YMD",
        "-c t\\imezone=\\E\\u\\r\\o\\pe/Lisbon  -c    dat\\estyle\\=\\Ge\\rman,\\ YMD",
    ] {
        let c = connect_with_options(&mux, options).await.unwrap();
        assert_eq!(show(&c, "TimeZone").await, "Europe/Lisbon", "{options}");
        assert_eq!(show(&c, "DateStyle").await, "German, YMD", "{options}");
    }
    // Ignored names are dropped, however long (a startup packet larger than pkt_buf).
    let long = format!("-c extra_float_digits={}", "1".repeat(4096));
    let c = connect_with_options(&mux, &long).await.unwrap();
    assert_eq!(show(&c, "extra_float_digits").await, "1");
    let only = "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed";
    for (options, message) in [
        ("-d", only.to_owned()),
        ("-c timezone", only.to_owned()),
        ("-c enable_seqscan=false", "unsupported startup parameter in options: enable_seqscan".to_owned()),
    ] {
        let Err(e) = connect_with_options(&mux, options).await else { panic!("{options} was accepted") };
        assert_eq!(db_error(&e), ("08P01".to_owned(), message), "{options}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivalent_values_are_set_once_and_auto_databases_are_logged() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        "auth_type = trust\npool_mode = statement\nverbose = 1",
        &userlist(pg),
    );
    let url = format!("{} options='-c DateStyle=ISO'", mux.url(MD5_USER, "", "app"));
    let (c, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        c.simple_query("SELECT 1").await.unwrap();
    }
    mux.wait_for_log("registered new auto-database: app");
    let other = mux.connect(MD5_USER, "", "app").await.unwrap();
    other.simple_query("SELECT 1").await.unwrap();
    let log = mux.log();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    // The server reports `ISO, MDY` for `ISO`: that spelling is taken, so no SET follows.
    assert_eq!(count("varcache_apply: ") - count("varcache_apply: SET client_encoding='UTF8';"), 1, "{log}");
    assert_eq!(count("SET DateStyle='ISO';"), 1, "{log}");
    assert_eq!(count("varcache_set_canonical: setting DateStyle to its canonical version ISO -> ISO, MDY"), 1, "{log}");
    assert_eq!(count("registered new auto-database: app"), 1, "{log}");
}

#[test]
fn login_notify_message_is_a_notice_before_ready_for_query() {
    let pg = Cluster::shared();
    for (setting, expected) in [
        ("", ""),
        ("login_notify_message = You are now connected to pgbouncer", "NOTICE:  You are now connected to pgbouncer\n"),
    ] {
        let mux = Pgmux::start(pg, &format!("pool_mode = session\n{setting}"));
        let out = std::process::Command::new("psql")
            .args(["-X", "-h", "127.0.0.1", "-p", &mux.port.to_string(), "-U", SCRAM_USER, "-d", "app"])
            .args(["-c", "SELECT 1;"])
            .env("PGPASSWORD", SCRAM_PASS)
            .output()
            .expect("psql");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
        assert_eq!(String::from_utf8_lossy(&out.stdout), " ?column? \n----------\n        1\n(1 row)\n\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_client_is_told_once_per_wait() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "default_pool_size = 1\nquery_wait_notify = 1");
    let holder = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let (waiter, notices) = connect_collecting(&mux.url(SCRAM_USER, SCRAM_PASS, "app")).await;
    let waiter = Arc::new(waiter);
    let expected = "No server connection available in postgres backend, client being queued";
    for round in 1..=2 {
        holder.batch_execute("BEGIN").await.unwrap();
        let w = waiter.clone();
        let queued = tokio::spawn(async move { w.simple_query("SELECT 2").await.map(|_| ()) });
        crate::harness::eventually(Duration::from_secs(10), "the NOTICE of a wait past query_wait_notify", || {
            notices.lock().unwrap().len() == round
        })
        .await;
        holder.batch_execute("COMMIT").await.unwrap();
        queued.await.unwrap().expect("served once the holder commits");
        assert_eq!(*notices.lock().unwrap(), vec![expected; round], "one NOTICE per wait");
    }
    // A short wait is not reported.
    waiter.simple_query("SELECT 3").await.unwrap();
    assert_eq!(notices.lock().unwrap().len(), 2);
}

/// The relay keeps its timer armed from one wait to the next (moving it in tokio's wheel at
/// every wait cost more than the wait): a wait that starts while the timer is still set for
/// the previous wait's notice must be woken early for nothing, and told at its own time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_after_a_short_one_is_told_at_its_own_time() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "default_pool_size = 1\nquery_wait_notify = 3");
    let holder = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let (waiter, notices) = connect_collecting(&mux.url(SCRAM_USER, SCRAM_PASS, "app")).await;
    let waiter = Arc::new(waiter);
    let queue = |w: &Arc<tokio_postgres::Client>| {
        let w = w.clone();
        tokio::spawn(async move { w.simple_query("SELECT 2").await.map(|_| ()) })
    };
    // A short wait: the timer is armed for its notice, three seconds after it began.
    holder.batch_execute("BEGIN").await.unwrap();
    let short = queue(&waiter);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    short.await.unwrap().expect("served once the holder commits");
    // The next wait begins about 1.6 s in; that timer would fire 1.4 s into it, its own at 3 s.
    holder.batch_execute("BEGIN").await.unwrap();
    let long = queue(&waiter);
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(notices.lock().unwrap().is_empty(), "told before its own query_wait_notify");
    crate::harness::eventually(Duration::from_secs(10), "told once its own query_wait_notify passed", || {
        notices.lock().unwrap().len() == 1
    })
    .await;
    holder.batch_execute("COMMIT").await.unwrap();
    long.await.unwrap().expect("served once the holder commits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_fast_close_ends_idle_sessions_on_reconnect() {
    let pg = Cluster::shared();
    let console_users = "admin_users = scram_user\nauth_type = md5\npool_mode = session";
    for fast_close in [false, true] {
        let mux = Pgmux::start(pg, &format!("{console_users}\nserver_fast_close = {}", u8::from(fast_close)));
        let idle = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        idle.simple_query("SELECT 1").await.unwrap();
        let in_tx = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        in_tx.batch_execute("BEGIN").await.unwrap();
        let console = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
        console.simple_query("RECONNECT app").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        in_tx.simple_query("SELECT 2").await.expect("a transaction in progress is not cut");
        in_tx.batch_execute("COMMIT").await.expect("and commits");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = idle.simple_query("SELECT 3").await;
        let after_tx = in_tx.simple_query("SELECT 4").await;
        if fast_close {
            assert!(after.is_err(), "the idle session was closed with its server");
            assert!(after_tx.is_err(), "the session that was in a transaction closes once it ends");
        } else {
            after.expect("without server_fast_close the session keeps its server");
            after_tx.expect("without server_fast_close the session keeps its server");
        }
    }
}

/// A fake PostgreSQL that answers the first login with FATAL `body` (the fields after the
/// severity: SQLSTATE and message) and later ones with a trust login, counting attempts.
async fn restarting_server(refusal: &'static [u8]) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = attempts.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = [0u8; 8];
                s.read_exact(&mut head).await?;
                let len = i32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
                let mut rest = vec![0u8; len - 8];
                s.read_exact(&mut rest).await?;
                let mut out = Vec::new();
                if n == 0 {
                    let body = [b"SFATAL\0".as_slice(), refusal, b"\0"].concat();
                    out.push(b'E');
                    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
                    out.extend_from_slice(&body);
                } else {
                    out.extend_from_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
                    out.extend_from_slice(&[b'K', 0, 0, 0, 12, 0, 0, 0, 7, 0, 0, 0, 9]);
                    out.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
                }
                s.write_all(&out).await?;
                // Hold the connection open until pgmux closes it.
                let mut sink = [0u8; 64];
                while s.read(&mut sink).await? > 0 {}
                Ok::<_, std::io::Error>(())
            });
        }
    });
    (port, attempts)
}

/// A login refused because the postmaster is ending every session is tried again, not passed
/// on: `57P03` (starting up, shutting down, in recovery) as in PgBouncer, and the `57P01` of a
/// fast shutdown and `57P02` of the reset after a backend crashed, which reach a login that
/// was under way when the postmaster ended its sessions (PgBouncer refuses its waiting
/// clients with those two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_shutting_down_is_retried_not_passed_on() {
    let pg = Cluster::shared();
    let refusals: [&'static [u8]; 3] = [
        b"C57P03\0Mthe database system is shutting down\0",
        b"C57P01\0Mterminating connection due to administrator command\0",
        b"C57P02\0Mterminating connection because of crash of another server process\0",
    ];
    let mut databases = String::new();
    let mut counters = Vec::new();
    for (i, refusal) in refusals.into_iter().enumerate() {
        let (port, attempts) = restarting_server(refusal).await;
        databases += &format!("restarting{i} = host=127.0.0.1 port={port} dbname=app user=x pool_size=1\n");
        counters.push(attempts);
    }
    let mux = Pgmux::start_with(
        pg,
        Setup {
            databases: &databases,
            pgbouncer: "auth_type = trust\nserver_login_retry = 0.2\nserver_tls_sslmode = disable",
            ..Setup::default()
        },
    );
    for (i, attempts) in counters.iter().enumerate() {
        let db = format!("restarting{i}");
        mux.connect(SCRAM_USER, "", &db).await.unwrap_or_else(|e| panic!("{db}: not logged in after the retry: {e}"));
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 2, "{db}");
    }
}
