//! Hostile and broken input on raw sockets: every case gets an ErrorResponse with 08P01 and a
//! closed socket, and a client doing real work at the same time is not disturbed.

use bytes::{BufMut, BytesMut};
use pgmux_protocol::backend::ErrorFields;
use pgmux_protocol::{build, split_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::pgmux::Setup;
use crate::harness::{Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

fn start(pg: &Cluster) -> Pgmux {
    Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: "auth_type = trust\nmax_packet_size = 65536\nclient_login_timeout = 2",
            userlist: Some(&format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n")),
            ..Setup::default()
        },
    )
}

/// Reads to EOF and returns the SQLSTATE and message of the first ErrorResponse.
async fn error_then_eof(s: &mut TcpStream) -> (String, String) {
    let mut all = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "pgmux must close the socket");
    let mut buf = BytesMut::from(&all[..]);
    while let Ok(Some(f)) = split_frame(&mut buf, 1 << 24) {
        if f.tag == b'E' {
            let e = ErrorFields::new(f.body());
            return (String::from_utf8_lossy(e.sqlstate()).into(), e.message());
        }
    }
    panic!("no ErrorResponse in {all:?}");
}

async fn logged_in(mux: &Pgmux) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
    let mut out = BytesMut::new();
    build::startup_message(&mut out, &[("user", SCRAM_USER), ("database", "app")]);
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    loop {
        if let Some(f) = split_frame(&mut buf, 1 << 20).unwrap() {
            assert_ne!(f.tag, b'E', "login failed");
            if f.tag == b'Z' {
                return s;
            }
            continue;
        }
        assert!(s.read_buf(&mut buf).await.unwrap() > 0, "closed during login");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_packets_get_08p01_and_a_closed_socket() {
    let pg = Cluster::shared();
    let mux = start(pg);
    let bystander = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    // PgBouncer's words for each (its header check shows the first eight bytes).
    let layout = "invalid startup packet layout: expected terminator as last byte";
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "bad packet header: '474554202f204854'"),
        (vec![0, 1, 0, 0, 0, 3, 0, 0], "bad packet header: '0001000000030000'"), // over the startup limit
        (vec![0, 0, 0, 4, 0, 3, 0, 0], "bad packet header: '0000000400030000'"), // below the minimum
        (vec![0, 0, 0, 8, 0, 9, 0, 0], "bad packet header: '0000000800090000'"), // protocol 9.0
        (vec![0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'], layout),         // unterminated parameter
        (vec![0, 0, 0, 11, 0, 3, 0, 0, 0, 0, b'x'], layout),                     // bytes after the terminator
    ];
    for (case, words) in cases {
        let mut s = TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
        s.write_all(&case).await.unwrap();
        let (code, msg) = error_then_eof(&mut s).await;
        assert_eq!((code.as_str(), msg.as_str()), ("08P01", words), "{case:?}");
    }
    // A cancel request that is not a code and a key is dropped without a word, as PgBouncer
    // drops it.
    let mut s = TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
    s.write_all(&[0, 0, 0, 12, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1]).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    let v: i32 = bystander.query_one("SELECT 3", &[]).await.unwrap().get(0);
    assert_eq!(v, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_after_login_close_only_that_client() {
    let pg = Cluster::shared();
    let mux = start(pg);
    let bystander = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    // Each with PgBouncer's words.
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (
            {
                // A Query claiming to be 1 GB long: over max_packet_size.
                let mut b = BytesMut::new();
                b.put_u8(b'Q');
                b.put_i32(1 << 30);
                b.put_slice(b"SELECT 1");
                b.to_vec()
            },
            "max_packet_size exceeded",
        ),
        (vec![b'Q', 0, 0, 0, 2], "bad packet header: '5100000002'"), // length below 4
        (vec![b'z', 0, 0, 0, 4], "unknown pkt"),                     // no such message type
        (vec![b'p', 0, 0, 0, 9, b'p', b'w', b'd', 0], "unknown pkt"), // a password message after login
    ];
    for (msg, words) in bad {
        let mut s = logged_in(&mux).await;
        s.write_all(&msg).await.unwrap();
        let (code, text) = error_then_eof(&mut s).await;
        assert_eq!((code.as_str(), text.as_str()), ("08P01", words), "{msg:?}");
    }
    // Counted as the client's fault (pgmux_pool_sessions_closed_total{side="client"}).
    let pool = mux.shared.pools.all().into_iter().find(|p| p.db == "app" && p.user == SCRAM_USER).unwrap();
    let closed = [0, 1, 2].map(|i| pool.counters.sum(|s| &s.sessions_closed[i]));
    assert_eq!(closed, [4, 0, 0], "client, server, pgmux");
    // A message that stops short of its announced length is simply waited for; the client is
    // cut off by the server's read of a broken pipe only when it goes away.
    let mut s = logged_in(&mux).await;
    s.write_all(&[b'Q', 0, 0, 0, 100, b'S']).await.unwrap();
    drop(s);
    let v: i32 = bystander.query_one("SELECT 4", &[]).await.unwrap().get(0);
    assert_eq!(v, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_startup_parameter_and_login_timeout() {
    let pg = Cluster::shared();
    let mux = start(pg);
    let mut s = TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
    let mut out = BytesMut::new();
    build::startup_message(&mut out, &[("user", SCRAM_USER), ("database", "app"), ("search_path", "x")]);
    s.write_all(&out).await.unwrap();
    let (code, msg) = error_then_eof(&mut s).await;
    assert_eq!((code.as_str(), msg.as_str()), ("08P01", "unsupported startup parameter: search_path"));

    // A client that sends half a startup packet is closed after client_login_timeout.
    let mut s = TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
    s.write_all(&[0, 0, 0, 40, 0, 3]).await.unwrap();
    let (code, msg) = error_then_eof(&mut s).await;
    assert_eq!((code.as_str(), msg.as_str()), ("08P01", "client_login_timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_pqexec_refuses_simple_queries_only() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "disable_pqexec = 1");
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    // A statement kept alive: tokio-postgres would otherwise send its Close just before the Query.
    let stmt = c.prepare("SELECT 1").await.unwrap();
    let v: i32 = c.query_one(&stmt, &[]).await.unwrap().get(0);
    assert_eq!(v, 1, "the extended protocol works");
    let err = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(err.as_db_error().map(|e| e.message()), Some("PQexec disallowed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gssenc_requests_are_declined() {
    let pg = Cluster::shared();
    let mux = start(pg);
    let mut s = TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]).await.unwrap(); // GSSENCRequest
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"N");
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await.unwrap(); // SSLRequest
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"N");
    // Bytes behind either request, sent before its answer, are refused even when the answer
    // is no (as PostgreSQL and PgBouncer refuse them).
    for (request, what) in [(0x2f, "SSL request"), (0x30, "GSSAPI encryption request")] {
        let mut s = TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
        let mut out = BytesMut::from(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, request][..]);
        build::startup_message(&mut out, &[("user", SCRAM_USER), ("database", "app")]);
        s.write_all(&out).await.unwrap();
        let (code, msg) = error_then_eof(&mut s).await;
        assert_eq!(
            (code.as_str(), msg.as_str()),
            ("08P01", format!("received unencrypted data after {what}").as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_2_and_unknown_pq_options_are_negotiated_down_to_3_0() {
    let pg = Cluster::shared();
    let mux = start(pg);
    let mut s = TcpStream::connect(("127.0.0.1", mux.port)).await.unwrap();
    // A PostgreSQL 18 libpq asking for 3.2 with a protocol extension pgmux does not know.
    let mut body = BytesMut::new();
    body.put_i32(196_610);
    for (k, v) in [("user", SCRAM_USER), ("database", "app"), ("_pq_.future_thing", "on")] {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut pkt = BytesMut::new();
    pkt.put_i32(4 + body.len() as i32);
    pkt.put_slice(&body);
    s.write_all(&pkt).await.unwrap();
    let mut buf = BytesMut::new();
    let mut tags = Vec::new();
    let mut negotiated = None;
    while !tags.contains(&b'Z') {
        if let Some(f) = split_frame(&mut buf, 1 << 20).unwrap() {
            if f.tag == b'v' {
                negotiated = Some(f.body().to_vec());
            }
            tags.push(f.tag);
            continue;
        }
        assert!(s.read_buf(&mut buf).await.unwrap() > 0, "closed during login: {tags:?}");
    }
    assert_eq!(tags.first(), Some(&b'v'), "NegotiateProtocolVersion first, as PostgreSQL and PgBouncer: {tags:?}");
    let v = negotiated.unwrap();
    assert_eq!(&v[..4], &196_608i32.to_be_bytes(), "the newest version offered is 3.0");
    assert_eq!(&v[4..8], &1i32.to_be_bytes(), "one option not understood");
    assert_eq!(&v[8..], b"_pq_.future_thing\0");
    // The session works at 3.0.
    let mut q = BytesMut::new();
    build::query(&mut q, "SELECT 1");
    s.write_all(&q).await.unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&b'Z') {
        if let Some(f) = split_frame(&mut buf, 1 << 20).unwrap() {
            seen.push(f.tag);
            continue;
        }
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
    }
    assert_eq!(seen, [b'T', b'D', b'C', b'Z']);
}
