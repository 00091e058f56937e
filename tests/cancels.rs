//! Cancels against scripted backends, for timings a real PostgreSQL does not produce on demand:
//! a cancel the server never takes (SHOW POOLS while it is under way), and one whose second
//! signal comes late (the client's next request waits for it).

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::NoTls;

use crate::harness::{db_error, Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

/// A fake PostgreSQL that logs anyone in, never answers a query, and takes a CancelRequest's
/// connection without ever closing it: a cancel to it stays in flight until
/// cancel_wait_timeout.
async fn server_slow_to_cancel() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let head = crate::harness::raw::accept_startup(&mut s).await?;
                if !crate::harness::raw::is_cancel(&head) {
                    crate::harness::raw::welcome(&mut s, (7, 8)).await?;
                }
                // pgmux's SETs (the client's parameters) are answered; the client's query, or
                // the cancel, is held until the peer goes.
                crate::harness::raw::answer_sets_hold_the_rest(&mut s).await
            });
        }
    });
    port
}

/// A cancel under way shows as PgBouncer shows it: SHOW POOLS counts a cancel client whose
/// request is forwarded (`cl_active_cancel_req`) on a connection carrying it
/// (`sv_active_cancel`), and SHOW CLIENTS and SHOW SERVERS list the two, linked to each other,
/// until the cancel ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_under_way_shows_in_show_pools_clients_and_servers() {
    let port = server_slow_to_cancel().await;
    let mux = Pgmux::start_with(
        Cluster::shared(),
        crate::harness::pgmux::Setup {
            pgbouncer: "admin_users = scram_user\ncancel_wait_timeout = 2",
            databases: &format!("app = host=$SOCKET port=$PORT\nslowcancel = host=127.0.0.1 port={port}"),
            ..Default::default()
        },
    );
    let console = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    let cancel_columns = || async {
        let rows = console.simple_query("SHOW POOLS").await.unwrap();
        rows.into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some("slowcancel") => Some(
                    ["cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active_cancel", "sv_being_canceled"]
                        .map(|c| r.get(c).unwrap().to_owned()),
                ),
                _ => None,
            })
            .unwrap()
    };
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "slowcancel").await.unwrap();
    let token = c.cancel_token();
    let stuck = tokio::spawn(async move { c.simple_query("SELECT 1").await });
    // A cancel before the query has its server would find nothing to forward.
    crate::harness::eventually_async("the query on its server", || async {
        let rows = console.simple_query("SHOW POOLS").await.unwrap();
        rows.iter().any(|m| {
            matches!(m, tokio_postgres::SimpleQueryMessage::Row(r)
                if r.get("database") == Some("slowcancel") && r.get("sv_active") == Some("1"))
        })
    })
    .await;
    assert_eq!(cancel_columns().await, ["0", "0", "0", "0"]);
    let cancel = tokio::spawn(async move { token.cancel_query(NoTls).await });
    let mut seen = None;
    for _ in 0..50 {
        let now = cancel_columns().await;
        if now[0] == "1" {
            seen = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, Some(["1", "0", "1", "0"].map(String::from)));
    let cancel_rows = |what: &'static str, state: &'static str| {
        let console = &console;
        async move {
            crate::harness::show_rows(console, what)
                .await
                .into_iter()
                .filter(|r| r["state"] == state)
                .collect::<Vec<_>>()
        }
    };
    let requests = cancel_rows("CLIENTS", "active_cancel_req").await;
    let carriers = cancel_rows("SERVERS", "active_cancel").await;
    assert_eq!((requests.len(), carriers.len()), (1, 1), "{requests:?} {carriers:?}");
    let (request, carrier) = (&requests[0], &carriers[0]);
    assert_eq!([&request["database"], &request["user"]], ["slowcancel", "(nouser)"]);
    assert_eq!([&carrier["database"], &carrier["user"]], ["slowcancel", SCRAM_USER]);
    assert_eq!([&carrier["addr"], &carrier["port"]], ["127.0.0.1", &port.to_string()]);
    assert!(!carrier["local_port"].is_empty(), "its own end once connected: {carrier:?}");
    assert_eq!(request["link"], carrier["ptr"]);
    assert_eq!(carrier["link"], request["ptr"]);
    // cancel_wait_timeout (2 s) ends it.
    let _ = tokio::time::timeout(Duration::from_secs(5), cancel).await.expect("the cancel ends");
    let mut left = Vec::new();
    for _ in 0..100 {
        left = cancel_columns().await.to_vec();
        if left == ["0", "0", "0", "0"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, ["0", "0", "0", "0"]);
    assert!(cancel_rows("CLIENTS", "active_cancel_req").await.is_empty());
    assert!(cancel_rows("SERVERS", "active_cancel").await.is_empty());
    stuck.abort();
}

/// What [`server_signalling_late`] saw: when the cancel's connection closed, and when each query
/// that came after the cancelled one arrived.
#[derive(Default)]
struct LateSignal {
    cancel_closed: Option<std::time::Instant>,
    later_queries: Vec<std::time::Instant>,
}

/// A fake PostgreSQL that cancels as PostgreSQL can under load: a CancelRequest ends the query
/// at once (57014) but its connection stays open `hold` more, the time PostgreSQL may take to
/// send its second signal, which would cancel whatever the backend runs by then.
async fn server_signalling_late(
    seen: Arc<parking_lot::Mutex<LateSignal>>,
    running: Arc<tokio::sync::Notify>,
    hold: Duration,
) -> u16 {
    use pgmux_protocol::build;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let cancelled = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (seen, cancelled, running) = (seen.clone(), cancelled.clone(), running.clone());
            tokio::spawn(async move {
                let head = crate::harness::raw::accept_startup(&mut s).await?;
                if crate::harness::raw::is_cancel(&head) {
                    cancelled.notify_one();
                    tokio::time::sleep(hold).await;
                    seen.lock().cancel_closed = Some(std::time::Instant::now());
                    return Ok(());
                }
                crate::harness::raw::welcome(&mut s, (7, 8)).await?;
                // The transaction status: BEGIN opens a block, the cancel fails it, ROLLBACK
                // ends it.
                let (mut status, mut buf) = (b'I', bytes::BytesMut::new());
                while s.read_buf(&mut buf).await? > 0 {
                    while let Ok(Some(f)) = pgmux_protocol::split_frame(&mut buf, 1 << 20) {
                        let mut out = bytes::BytesMut::new();
                        if f.body().starts_with(b"SET") {
                            build::command_complete(&mut out, "SET");
                        } else if f.body().starts_with(b"BEGIN") {
                            status = b'T';
                            build::command_complete(&mut out, "BEGIN");
                        } else if f.body().starts_with(b"SELECT long") {
                            if status == b'T' {
                                status = b'E';
                            }
                            running.notify_one();
                            cancelled.notified().await;
                            build::error_response(
                                &mut out,
                                build::Severity::Error,
                                "57014",
                                "canceling statement due to user request",
                            );
                        } else {
                            seen.lock().later_queries.push(std::time::Instant::now());
                            if f.body().starts_with(b"ROLLBACK") {
                                status = b'I';
                                build::command_complete(&mut out, "ROLLBACK");
                            } else {
                                build::command_complete(&mut out, "SELECT 0");
                            }
                        }
                        build::ready_for_query(&mut out, status);
                        s.write_all(&out).await?;
                    }
                }
                Ok::<(), std::io::Error>(())
            });
        }
    });
    port
}

/// pgmux with `pgbouncer` lines in front of [`server_signalling_late`] on `port` (database
/// `late`).
fn late_pgmux(port: u16, pgbouncer: &str) -> Pgmux {
    Pgmux::start_with(
        Cluster::shared(),
        crate::harness::pgmux::Setup {
            pgbouncer,
            databases: &format!("late = host=127.0.0.1 port={port}"),
            ..Default::default()
        },
    )
}

/// [`server_signalling_late`] holding each cancel's connection `hold`, pgmux in front of it
/// ([`late_pgmux`] with `pgbouncer` lines, scram_user an admin) and its console open: what the
/// server saw, its signal that the long query runs, pgmux and the console.
async fn late_with_console(
    hold: Duration,
    pgbouncer: &str,
) -> (Arc<parking_lot::Mutex<LateSignal>>, Arc<tokio::sync::Notify>, Pgmux, tokio_postgres::Client) {
    let seen = Arc::new(parking_lot::Mutex::new(LateSignal::default()));
    let running = Arc::new(tokio::sync::Notify::new());
    let port = server_signalling_late(seen.clone(), running.clone(), hold).await;
    let mux = late_pgmux(port, &format!("{pgbouncer}\nadmin_users = scram_user"));
    let console = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    (seen, running, mux, console)
}

/// The rows of a console `SHOW what` for database `late`.
async fn late_rows(console: &tokio_postgres::Client, what: &str) -> Vec<std::collections::HashMap<String, String>> {
    crate::harness::show_rows(console, what).await.into_iter().filter(|r| r["database"] == "late").collect()
}

/// [`late_rows`] without the cancel's own connections (the one that brought the CancelRequest,
/// and pgmux's that carries it), which stay while the cancel is in flight.
async fn late_rows_but_cancels(
    console: &tokio_postgres::Client,
    what: &str,
) -> Vec<std::collections::HashMap<String, String>> {
    let own = ["active_cancel_req", "active_cancel"];
    late_rows(console, what).await.into_iter().filter(|r| !own.contains(&r["state"].as_str())).collect()
}

/// Runs `SELECT long` on `c`, cancels it once the backend has it (`running`), and returns the
/// SQLSTATE it ended with. tokio-postgres sends the cancel and hangs up without waiting for
/// the server.
async fn cancelled_long_query(c: &tokio_postgres::Client, running: &tokio::sync::Notify) -> String {
    let long = c.simple_query("SELECT long");
    let cancel = async {
        running.notified().await;
        c.cancel_token().cancel_query(NoTls).await.unwrap();
    };
    let (result, ()) =
        tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(long, cancel) }).await.expect("cancelled");
    db_error(&result.unwrap_err()).0
}

/// A client that keeps its server after a cancelled query (session mode, or a transaction block
/// in transaction mode) sends nothing more to it until the cancel's connection to PostgreSQL is
/// closed: a late second signal would cancel its next query. In transaction mode outside a
/// block the server is not given back before then either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_after_a_cancel_waits_until_the_cancel_is_done() {
    for (mode, in_block) in [("transaction", true), ("session", false), ("transaction", false)] {
        let seen = Arc::new(parking_lot::Mutex::new(LateSignal::default()));
        let running = Arc::new(tokio::sync::Notify::new());
        let port = server_signalling_late(seen.clone(), running.clone(), Duration::from_millis(400)).await;
        let mux = late_pgmux(port, &format!("pool_mode = {mode}\ndefault_pool_size = 1"));
        let c = mux.connect(SCRAM_USER, SCRAM_PASS, "late").await.unwrap();
        if in_block {
            c.simple_query("BEGIN").await.unwrap();
        }
        assert_eq!(cancelled_long_query(&c, &running).await, "57014", "{mode}");
        c.simple_query(if in_block { "ROLLBACK" } else { "SELECT 1" }).await.unwrap();
        let seen = seen.lock();
        let closed = seen.cancel_closed.expect("the cancel reached the server");
        assert!(
            seen.later_queries[0] >= closed,
            "{mode} (in a block: {in_block}): the next query reached the server before the cancel was done"
        );
    }
}

/// In transaction mode a client does not wait for its cancel to be done: the server the query
/// was cancelled on is kept apart until then (the test above, with one server), and the
/// client's next transaction takes another server at once, as with PgBouncer. Meanwhile that
/// server is PgBouncer's `being_canceled` in SHOW POOLS and SHOW SERVERS, not active, and the
/// connection carrying the cancel is `active_cancel`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_goes_on_while_the_server_of_its_cancelled_query_waits_for_the_cancel() {
    let (seen, running, mux, console) =
        late_with_console(Duration::from_secs(4), "pool_mode = transaction\ndefault_pool_size = 2").await;
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "late").await.unwrap();
    assert_eq!(cancelled_long_query(&c, &running).await, "57014");
    // Each of the next transactions runs on the other server, which no cancel concerns, and
    // gives it back at once: a pool of two is enough for all of them.
    for _ in 0..3 {
        c.simple_query("SELECT 1").await.unwrap();
    }
    {
        let seen = seen.lock();
        assert_eq!(seen.later_queries.len(), 3, "the next queries reached a server");
        assert!(seen.cancel_closed.is_none(), "the client waited for its cancel to be done");
    }
    let servers = || async {
        let mut states: Vec<String> =
            late_rows(&console, "SERVERS").await.into_iter().map(|r| r["state"].clone()).collect();
        states.sort();
        states
    };
    let pool = late_rows(&console, "POOLS").await.remove(0);
    let counts = ["sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle"].map(|c| pool[c].as_str());
    assert_eq!(counts, ["0", "1", "1", "1"], "{pool:?}");
    // The cancel's own connection is listed too while it is open.
    assert_eq!(servers().await, ["active_cancel", "being_canceled", "idle"]);
    // Once the cancel's connection closes, the server is back in the pool.
    crate::harness::eventually_async("the canceled server back in the pool", || async {
        servers().await == ["idle", "idle"]
    })
    .await;
    assert!(seen.lock().cancel_closed.is_some());
}

/// A KILL of a client waiting for its cancel to be done (it keeps its server, and has sent its
/// next query) ends it at once: its server, with that query not sent, is closed rather than
/// waited for (and were the query not read yet, the server would wait for the cancel and its
/// reset beside, without the client). Before, the KILL waited as long as the cancel (up to
/// cancel_wait_timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_ends_a_client_waiting_for_its_cancel_at_once() {
    let (seen, running, mux, console) =
        late_with_console(Duration::from_secs(30), "pool_mode = session\ncancel_wait_timeout = 20").await;
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "late").await.unwrap();
    assert_eq!(cancelled_long_query(&c, &running).await, "57014");
    let next = tokio::spawn(async move { c.simple_query("SELECT 1").await.map(|_| ()) });
    // The query is read and held: the client is waiting for its cancel.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!next.is_finished(), "the next query waits for the cancel");
    let killed = std::time::Instant::now();
    console.simple_query("KILL late").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), next).await.expect("the KILL ends the client at once");
    assert!(ended.unwrap().is_err(), "the client's query fails");
    assert!(killed.elapsed() < Duration::from_secs(5));
    let seen = seen.lock();
    assert!(seen.later_queries.is_empty(), "the query held for the cancel was not sent");
    assert!(seen.cancel_closed.is_none(), "the cancel is still in flight");
}

/// A client that leaves while a cancel of its query is in flight (session mode: it held its
/// server) is gone at once; its server waits for the cancel apart, as PgBouncer's
/// `being_canceled`, and is reset and back in the pool after. Before, the client's task (and
/// its SHOW CLIENTS row) stayed until the cancel was done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_during_its_cancel_is_gone_at_once() {
    let (seen, running, mux, console) =
        late_with_console(Duration::from_secs(30), "pool_mode = session\ncancel_wait_timeout = 20").await;
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "late").await.unwrap();
    assert_eq!(cancelled_long_query(&c, &running).await, "57014");
    drop(c);
    crate::harness::eventually_async("the client gone", || async {
        late_rows_but_cancels(&console, "CLIENTS").await.is_empty()
    })
    .await;
    let servers = late_rows_but_cancels(&console, "SERVERS").await;
    assert_eq!(servers.iter().map(|s| s["state"].as_str()).collect::<Vec<_>>(), ["being_canceled"]);
    let pool = late_rows(&console, "POOLS").await.remove(0);
    assert_eq!(["sv_active", "sv_being_canceled"].map(|c| pool[c].as_str()), ["0", "1"], "{pool:?}");
    assert!(seen.lock().cancel_closed.is_none(), "the cancel is still in flight");
}

/// A client that leaves while it waits for its cancel to be done (it sent its next query, held
/// until then) is gone at once, and the held query never reaches the server. Before, its task
/// waited up to cancel_wait_timeout and then sent the query of a client no longer there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_while_its_next_query_waits_for_the_cancel_is_gone_at_once() {
    let (seen, running, mux, console) =
        late_with_console(Duration::from_secs(30), "pool_mode = session\ncancel_wait_timeout = 20").await;
    let (c, conn) = tokio_postgres::connect(&mux.url(SCRAM_USER, SCRAM_PASS, "late"), NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    assert_eq!(cancelled_long_query(&c, &running).await, "57014");
    let next = tokio::spawn(async move { c.simple_query("SELECT 1").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The connection's task dropped: its socket closes under the query that waits.
    conn.abort();
    next.abort();
    let left = std::time::Instant::now();
    crate::harness::eventually_async("the client gone", || async {
        late_rows_but_cancels(&console, "CLIENTS").await.is_empty()
    })
    .await;
    assert!(left.elapsed() < Duration::from_secs(5), "gone in {:?}", left.elapsed());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = seen.lock();
    assert!(seen.later_queries.is_empty(), "the held query of a client gone was sent");
    assert!(seen.cancel_closed.is_none(), "the cancel is still in flight");
}

/// A server that its release would close anyway (RECONNECT made it stale) is closed when its
/// client leaves, not first held for a cancel in flight to it and reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_server_is_closed_without_waiting_for_its_cancel() {
    let (seen, running, mux, console) =
        late_with_console(Duration::from_secs(30), "pool_mode = session\ncancel_wait_timeout = 20").await;
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "late").await.unwrap();
    assert_eq!(cancelled_long_query(&c, &running).await, "57014");
    console.simple_query("RECONNECT late").await.unwrap();
    drop(c);
    crate::harness::eventually_async("the stale server closed", || async {
        late_rows_but_cancels(&console, "SERVERS").await.is_empty()
    })
    .await;
    assert!(seen.lock().later_queries.is_empty(), "no reset ran on a server about to close");
}

/// PAUSE waits for servers in use and for resets, as PgBouncer, not for a server that waits
/// apart for a cancel to it: that one is closed when its cancel is done, since the pause lets
/// servers go. Before, PAUSE waited for the cancel (up to cancel_wait_timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_does_not_wait_for_a_server_being_canceled() {
    let (_seen, running, mux, console) =
        late_with_console(Duration::from_secs(30), "pool_mode = transaction\ncancel_wait_timeout = 20").await;
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "late").await.unwrap();
    assert_eq!(cancelled_long_query(&c, &running).await, "57014");
    let pool = late_rows(&console, "POOLS").await.remove(0);
    assert_eq!(pool["sv_being_canceled"], "1", "{pool:?}");
    tokio::time::timeout(Duration::from_secs(5), console.simple_query("PAUSE late"))
        .await
        .expect("PAUSE does not wait for the cancel")
        .unwrap();
    console.simple_query("RESUME late").await.unwrap();
}
