//! Clients that try to exhaust pgmux, and what the others see: a client that asks for a huge
//! result and never reads it (pgmux stops reading from that server; its memory stays bounded),
//! a flood of cancel requests with random keys (no other client's query is cancelled), and
//! hundreds of connections that never finish logging in (closed at client_login_timeout while
//! new logins are served), a huge COPY stream and a huge query text (streamed, not buffered),
//! a client that floods requests pgmux answers itself and never reads, a message PostgreSQL
//! would drop the connection over, long unnamed statements (passed on, not kept).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgmux_protocol::{build, extended};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::raw::{send_startup, startup};
use crate::harness::{Cluster, PgmuxProcess, MD5_USER, SCRAM_PASS, SCRAM_USER};

fn userlist(pg: &Cluster) -> String {
    format!("\"{SCRAM_USER}\" \"{}\"\n\"{MD5_USER}\" \"{}\"\n", pg.secret_of(SCRAM_USER), pg.secret_of(MD5_USER))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn one(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT 1", &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_result_costs_bounded_memory() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 2",
        &userlist(pg),
    );
    let before = rss_kib(mux.pid());
    // Logged in with trust (the md5 user's stored secret logs pgmux in), a query whose result is
    // about 2 GB, and then nothing is read.
    let mut s = TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
    let mut out = startup(MD5_USER);
    build::query(&mut out, "SELECT repeat('x', 2000) FROM generate_series(1, 1000000)");
    s.write_all(&out).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = rss_kib(mux.pid()).saturating_sub(before);
    assert!(grown < 16 * 1024, "pgmux grew by {grown} KiB for a client that reads nothing");
    // Others are served meanwhile (trust: the md5 user, as above).
    let other = mux.connect(MD5_USER, "", "app").await.unwrap();
    assert_eq!(one(&other).await, 1);
    drop(s);
    assert_eq!(one(&other).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_cancel_keys_cancels_nobody() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        "auth_type = scram-sha-256\npool_mode = transaction",
        &userlist(pg),
    );
    let victim = Arc::new(mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap());
    // The victim has a query running for the whole flood, however long the flood takes on a
    // loaded machine: short sleeps, one after another, until the flood is over.
    let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let running = {
        let (v, flooding) = (victim.clone(), flooding.clone());
        tokio::spawn(async move {
            let mut queries = 0;
            while flooding.load(std::sync::atomic::Ordering::Relaxed) || queries == 0 {
                v.simple_query("SELECT pg_sleep(0.2)").await?;
                queries += 1;
            }
            Ok::<_, tokio_postgres::Error>(queries)
        })
    };
    let port = mux.port;
    let mut sent = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    while sent < 1000 {
        let mut batch = Vec::new();
        for _ in 0..50 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let (pid, secret) = ((seed >> 32) as i32, seed as i32);
            batch.push(tokio::spawn(async move {
                if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
                    let mut msg = Vec::with_capacity(16);
                    msg.extend_from_slice(&16i32.to_be_bytes());
                    msg.extend_from_slice(&80877102i32.to_be_bytes());
                    msg.extend_from_slice(&pid.to_be_bytes());
                    msg.extend_from_slice(&secret.to_be_bytes());
                    let _ = s.write_all(&msg).await;
                }
            }));
        }
        for b in batch {
            let _ = b.await;
        }
        sent += 50;
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let result = tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap();
    assert!(result.is_ok(), "the victim's query was cancelled: {result:?} after {sent} random keys");
    assert_eq!(one(&victim).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_finished_logins_are_closed_and_do_not_block_others() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        "auth_type = scram-sha-256\npool_mode = transaction\nclient_login_timeout = 3\nmax_client_conn = 2000",
        &userlist(pg),
    );
    // 500 connections: some say nothing, some send half a startup packet, some start SCRAM
    // and stop.
    let mut idle = Vec::new();
    for i in 0..500 {
        let mut s = TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
        match i % 3 {
            0 => {}
            1 => s.write_all(&[0, 0, 0, 40, 0, 3]).await.unwrap(),
            _ => {
                let mut out = BytesMut::new();
                build::startup_message(&mut out, &[("user", SCRAM_USER), ("database", "app")]);
                s.write_all(&out).await.unwrap();
            }
        }
        idle.push(s);
    }
    // A real client logs in and works while they hang.
    let started = Instant::now();
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(one(&c).await, 1);
    assert!(started.elapsed() < Duration::from_secs(3), "a login waited {:?}", started.elapsed());
    // After client_login_timeout every one of them is closed by pgmux.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut closed = 0;
    for mut s in idle {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_millis(200), tokio::io::AsyncReadExt::read(&mut s, &mut buf))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed += 1;
                    break;
                }
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
    }
    assert_eq!(closed, 500, "connections left open past client_login_timeout");
    let console = mux.console().await;
    let rows = console.simple_query("SHOW CLIENTS").await.unwrap();
    let clients = rows.iter().filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))).count();
    assert_eq!(clients, 2, "the real client and the console");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_flood_on_the_metrics_port_is_bounded() {
    let pg = Cluster::shared();
    let port = crate::metrics::free_port();
    let mux = crate::harness::Pgmux::start(pg, &format!("exporter_port = {port}\nexporter_listen_addr = 127.0.0.1"));
    // Connections that send half a request line and then nothing, from one address: only
    // MAX_PER_ADDRESS of them are kept.
    let from = |n: u8| std::net::Ipv4Addr::new(127, 0, 0, n);
    let mut held = Vec::new();
    for _ in 0..pgmux_exporter::MAX_PER_ADDRESS + 20 {
        held.push(half_request(from(1), port).await);
    }
    assert_eq!(closed_within(&mut held, 20).await, 20, "one address keeps at most MAX_PER_ADDRESS");
    // Another host's check is served meanwhile.
    assert!(check_from(from(99), port).await.starts_with("HTTP/1.1 200"), "a check from elsewhere is served");
    // From many addresses: the global limit.
    let flood = pgmux_exporter::MAX_CONNECTIONS + 200;
    let mut more = Vec::new();
    for i in 0..flood {
        more.push(half_request(from(2 + (i / pgmux_exporter::MAX_PER_ADDRESS) as u8), port).await);
    }
    let flooded = Instant::now();
    let closed_more = closed_within(&mut more, 200).await;
    assert!((200..flood).contains(&closed_more), "{closed_more} of {flood} closed at the limit");
    // The pooler serves clients throughout, and scrapes work again once the held ones time out
    // (the exporter's request timeout is 5 s).
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(one(&c).await, 1);
    tokio::time::sleep_until((flooded + Duration::from_secs(7)).into()).await;
    let m = crate::metrics::scrape(port).await;
    assert!(!m.is_empty());
    drop(held);
    drop(more);
}

/// A connection from `ip` that sends half a request line and then nothing.
async fn half_request(ip: std::net::Ipv4Addr, port: u16) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind((ip, 0).into()).unwrap();
    let mut s = sock.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let _ = s.write_all(b"GET /metr").await;
    s
}

/// How many of `held` the server closed (a reset or an end of stream, the request unread).
/// How many of `held` pgmux has closed, looked at until `expected` are or 3 s have passed
/// (well inside the exporter's 5 s request timeout, which would close them all).
async fn closed_within(held: &mut [TcpStream], expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let reads = held.iter_mut().map(|s| async move {
            let mut b = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_millis(20), tokio::io::AsyncReadExt::read(s, &mut b)).await;
            matches!(read, Ok(Ok(0)) | Ok(Err(_)))
        });
        let n = futures_util::future::join_all(reads).await.into_iter().filter(|&c| c).count();
        if n >= expected || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET /health from `ip`.
async fn check_from(ip: std::net::Ipv4Addr, port: u16) -> String {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind((ip, 0).into()).unwrap();
    let mut s = sock.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out).await.unwrap();
    out
}

/// A client that sends requests pgmux answers itself (Syncs with no server attached) and
/// never reads the answers: pgmux stops reading from it once its answers back up, as it does
/// for a server's, so its memory stays bounded and the others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_pgmuxs_own_answers_costs_bounded_memory() {
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 2",
        &userlist(pg),
    );
    let before = rss_kib(mux.pid());
    let mut s = send_startup(mux.port, MD5_USER).await;
    // 1 MiB of Syncs per write, up to 256 MiB or 10 s: each is answered with a ReadyForQuery.
    let mut syncs = BytesMut::new();
    while syncs.len() < 1 << 20 {
        build::sync(&mut syncs);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 0usize;
    while sent < 256 << 20 {
        match tokio::time::timeout_at(deadline.into(), s.write_all(&syncs)).await {
            Ok(r) => r.unwrap(),
            Err(_) => break,
        }
        sent += syncs.len();
    }
    let grown = rss_kib(mux.pid()).saturating_sub(before);
    eprintln!("sent {} MiB of Syncs; pgmux grew by {grown} KiB", sent >> 20);
    assert!(grown < 32 * 1024, "pgmux grew by {grown} KiB for a client that reads nothing");
    let other = mux.connect(MD5_USER, "", "app").await.unwrap();
    assert_eq!(one(&other).await, 1);
}

/// A message longer than PostgreSQL reads (a Query announcing 1 GiB) is refused by pgmux with
/// PostgreSQL's words: no backend is made to drop its connection over it, and the pool's idle
/// servers stay (a backend gone without a word is taken for a crash of the whole PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_postgres_would_drop_its_connection_over_costs_no_server() {
    use tokio::io::AsyncReadExt;
    let pg = Cluster::shared();
    let mux = crate::harness::Pgmux::start(pg, "auth_type = trust\ndefault_pool_size = 4");
    let clients: Vec<_> = futures_util::future::join_all((0..3).map(|_| mux.connect(MD5_USER, "", "app"))).await;
    let clients: Vec<_> = clients.into_iter().map(Result::unwrap).collect();
    futures_util::future::join_all(clients.iter().map(|c| c.simple_query("BEGIN; SELECT 1"))).await;
    futures_util::future::join_all(clients.iter().map(|c| c.simple_query("COMMIT"))).await;
    let pool = mux.shared.pools.all().into_iter().find(|p| p.db == "app").unwrap();
    let mut idle = pool.idle_servers().iter().map(|s| s.id).collect::<Vec<_>>();
    idle.sort_unstable();
    assert_eq!(idle.len(), 3, "three idle servers to begin with");

    let mut raw = send_startup(mux.port, MD5_USER).await;
    raw.write_all(b"Q\x40\x00\x00\x00SELECT").await.unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut seen)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("08P01") && text.contains("invalid message length"), "{text}");

    // A Describe longer than PostgreSQL's 10,000 bytes is fine when it names a statement
    // pgmux tracks (the server sees pgmux's short name), and refused when it names a portal.
    let name = "a".repeat(16 << 10);
    let mut raw = TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
    let mut out = startup(MD5_USER);
    build::parse(&mut out, &name, "SELECT 1");
    extended::target_message(&mut out, b'D', extended::STATEMENT, name.as_bytes());
    build::sync(&mut out);
    raw.write_all(&out).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while seen.windows(6).filter(|w| w == b"Z\0\0\0\x05I").count() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(!String::from_utf8_lossy(&seen).contains("SERROR"), "{:?}", String::from_utf8_lossy(&seen));
    // Just over the limit, so that pgmux has read all of it when it closes (unread bytes
    // would make the close a reset, which can lose the FATAL).
    let portal = "p".repeat(10_000);
    out.clear();
    extended::target_message(&mut out, b'D', extended::PORTAL, portal.as_bytes());
    raw.write_all(&out).await.unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut seen)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&seen).contains("invalid message length"));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut after = pool.idle_servers().iter().map(|s| s.id).collect::<Vec<_>>();
    after.sort_unstable();
    assert_eq!(after, idle, "the idle servers stayed");
    assert_eq!(one(&clients[0]).await, 1);
}

/// Clients that each Parse a 32 MiB unnamed statement (the text is its length) and then stay:
/// the statement runs and the next (short) unnamed statement too, and pgmux does not keep the
/// long texts for the rest of the sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_unnamed_statements_are_passed_on_not_kept() {
    use tokio::io::AsyncReadExt;
    let pg = Cluster::shared();
    let mux = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 4",
        &userlist(pg),
    );
    let before = rss_kib(mux.pid());
    let text = format!("SELECT length('{}')", "y".repeat(32 << 20));
    let mut kept = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
        let mut out = startup(MD5_USER);
        for sql in [text.as_str(), "SELECT 7"] {
            build::parse(&mut out, "", sql);
            build::bind(&mut out, "", "", &[]);
            build::execute(&mut out, "");
            build::sync(&mut out);
        }
        s.write_all(&out).await.unwrap();
        // Login's ReadyForQuery, then one per Sync.
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while seen.windows(6).filter(|w| w == b"Z\0\0\0\x05I").count() < 3 {
            let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "closed");
            seen.extend_from_slice(&buf[..n]);
        }
        let answers = String::from_utf8_lossy(&seen);
        assert!(answers.contains(&(32 << 20).to_string()), "the long statement ran");
        // The short one's DataRow: one column, 1 byte long, "7".
        assert!(answers.contains("\0\x01\0\0\0\x017"), "the short one ran");
        assert!(!answers.contains("SERROR"), "{answers}");
        kept.push(s);
    }
    let grown = rss_kib(mux.pid()).saturating_sub(before);
    eprintln!("pgmux grew by {grown} KiB with 4 clients idle after 32 MiB unnamed statements");
    assert!(grown < 48 * 1024, "pgmux grew by {grown} KiB: the statements were kept");
}

/// Peak resident memory of process `pid` (VmHWM), KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A 256 MiB COPY FROM STDIN and a 64 MiB query text (simple protocol) go through pgmux
/// streamed: its peak memory grows by a small fraction of what passed, and everything arrives.
/// (A Parse of a named statement is the exception: its text is kept to prepare it on other
/// servers, as PgBouncer keeps it, so it is held whole, up to max_packet_size.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_copy_stream_and_a_huge_query_are_streamed_not_buffered() {
    use futures_util::SinkExt;
    let pg = Cluster::shared();
    pg.psql(
        "app",
        &format!("CREATE TABLE IF NOT EXISTS huge_copy (line text); ALTER TABLE huge_copy OWNER TO {SCRAM_USER}"),
    );
    let mux = PgmuxProcess::start(
        pg,
        "* = host=$SOCKET port=$PORT",
        "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 2",
        &userlist(pg),
    );
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    c.simple_query("TRUNCATE huge_copy").await.unwrap();
    let before = peak_kib(mux.pid());
    // 4,096 chunks of 64 KiB: 1,024 lines of 63 bytes each.
    let line = format!("{}\n", "x".repeat(63));
    let chunk = bytes::Bytes::from(line.repeat(1024));
    let sink = c.copy_in::<_, bytes::Bytes>("COPY huge_copy FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    for _ in 0..4096 {
        sink.send(chunk.clone()).await.unwrap();
    }
    let rows = sink.finish().await.unwrap();
    assert_eq!(rows, 4096 * 1024);
    let after_copy = peak_kib(mux.pid());
    // A 64 MiB statement text, simple protocol.
    let text = format!("SELECT length('{}')", "y".repeat(64 << 20));
    let rows = c.simple_query(&text).await.unwrap();
    let Some(tokio_postgres::SimpleQueryMessage::Row(row)) = rows.get(1) else { panic!("{rows:?}") };
    assert_eq!(row.get(0), Some((64 << 20).to_string().as_str()));
    let after_query = peak_kib(mux.pid());
    eprintln!("pgmux peak RSS: {before} KiB before, {after_copy} KiB after 256 MiB of COPY, {after_query} KiB after a 64 MiB query");
    // VmHWM is refreshed lazily (the kernel's RSS counters are batched): it can read a few
    // pages lower than a moment before.
    let (copy_grew, query_grew) = (after_copy.saturating_sub(before), after_query.saturating_sub(after_copy));
    assert!(copy_grew < 32 * 1024, "COPY grew the peak by {copy_grew} KiB");
    assert!(query_grew < 32 * 1024, "the query grew the peak by {query_grew} KiB");
}
