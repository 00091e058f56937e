//! The console on the wire, message by message against PgBouncer 1.25's: its welcome (the fake
//! server parameters, the tracked ones the client set, login_notify_message), and what it does
//! with messages that are not a simple Query (the extended protocol refused, stray COPY
//! messages dropped, an unknown type closed).

use std::time::Duration;

use crate::admin::{console, CONSOLE};
use crate::harness::{db_error, eventually, Cluster, Pgmux};

/// A raw connection to the console over the unix socket (user pgbouncer needs no password
/// there) with a startup packet of `params` sent.
async fn console_raw(mux: &Pgmux, params: &[(&str, &str)]) -> tokio::net::UnixStream {
    use tokio::io::AsyncWriteExt;
    let path = mux.socket_dir().join(format!(".s.PGSQL.{}", mux.port));
    let mut s = tokio::net::UnixStream::connect(path).await.unwrap();
    let mut out = bytes::BytesMut::new();
    pgmux_protocol::build::startup_message(&mut out, params);
    s.write_all(&out).await.unwrap();
    s
}

/// Messages read as text (`S name=value`, `N message`, `E SEVERITY message`, or the tag) up
/// to a ReadyForQuery, or to the end of the connection when `to_end`.
async fn read_messages(s: &mut tokio::net::UnixStream, to_end: bool) -> Vec<String> {
    use tokio::io::AsyncReadExt;
    let (mut seen, mut buf) = (Vec::new(), bytes::BytesMut::new());
    loop {
        while let Some(f) = pgmux_protocol::split_frame(&mut buf, 1 << 16).unwrap() {
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            seen.push(match f.tag {
                b'S' => {
                    let (k, v) = pgmux_protocol::backend::parameter_status(f.body()).unwrap();
                    format!("S {}={}", text(k), text(v))
                }
                b'N' | b'E' => {
                    let e = pgmux_protocol::backend::ErrorFields::new(f.body());
                    let severity = text(e.field(b'S').unwrap_or_default());
                    format!("{} {severity} {}", f.tag as char, e.message())
                }
                tag => (tag as char).to_string(),
            });
            if f.tag == b'Z' && !to_end {
                return seen;
            }
        }
        if s.read_buf(&mut buf).await.unwrap() == 0 {
            assert!(to_end, "closed: {seen:?}");
            return seen;
        }
    }
}

/// The console's welcome as PgBouncer's: its fake server parameters, then the tracked ones the
/// client set (its application_name only when it gave one), and login_notify_message as a
/// NOTICE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_welcome_echoes_the_clients_application_name() {
    let mux = Pgmux::start(Cluster::shared(), &format!("{CONSOLE}\nlogin_notify_message = welcome, operator"));
    let welcome = |params: &'static [(&'static str, &'static str)]| async {
        let mut s = console_raw(&mux, params).await;
        read_messages(&mut s, false).await
    };
    let mut expected: Vec<String> = [
        "R",
        "S server_version=1.25.2/bouncer",
        "S client_encoding=UTF8",
        "S server_encoding=UTF8",
        "S DateStyle=ISO",
        "S TimeZone=GMT",
        "S standard_conforming_strings=on",
        "S is_superuser=on",
        "K",
        "N NOTICE welcome, operator",
        "Z",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(welcome(&[("user", "pgbouncer"), ("database", "pgbouncer")]).await, expected);
    expected.insert(8, "S application_name=ops-script".into());
    let with_app = welcome(&[("user", "pgbouncer"), ("database", "pgbouncer"), ("application_name", "ops-script")]);
    assert_eq!(with_app.await, expected);
    // What psql sends is echoed after the fixed ones, in PgBouncer's order, whatever the
    // client's.
    let psql_like = welcome(&[
        ("user", "pgbouncer"),
        ("database", "pgbouncer"),
        ("application_name", "psql"),
        ("client_encoding", "SQL_ASCII"),
        ("TimeZone", "UTC"),
        ("DateStyle", "ISO, MDY"),
    ])
    .await;
    let echoed: Vec<&str> = psql_like[8..12].iter().map(String::as_str).collect();
    assert_eq!(
        echoed,
        ["S DateStyle=ISO, MDY", "S client_encoding=SQL_ASCII", "S TimeZone=UTC", "S application_name=psql"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extended_protocol_is_refused_and_the_console_closed() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, CONSOLE);
    let c = console(&mux).await;
    let e = c.query("SHOW VERSION", &[]).await.unwrap_err();
    assert_eq!(db_error(&e), ("08P01".into(), "extended query protocol not supported by admin console".into()));
    eventually(Duration::from_secs(5), "the console connection stayed open", || c.is_closed()).await;
    // As PgBouncer's: the error with its ReadyForQuery, then the FATAL and the end.
    let mut s = console_raw(&mux, &[("user", "pgbouncer"), ("database", "pgbouncer")]).await;
    read_messages(&mut s, false).await;
    let mut out = bytes::BytesMut::new();
    pgmux_protocol::build::parse(&mut out, "", "SHOW VERSION");
    pgmux_protocol::build::sync(&mut out);
    tokio::io::AsyncWriteExt::write_all(&mut s, &out).await.unwrap();
    assert_eq!(
        read_messages(&mut s, true).await,
        ["E ERROR extended query protocol not supported by admin console", "Z", "E FATAL bad packet"]
    );
    // COPY messages with no COPY are dropped unanswered; a type no client sends ends it.
    let raw = |tag: u8, body: &[u8]| {
        let mut m = vec![tag];
        m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    };
    let mut s = console_raw(&mux, &[("user", "pgbouncer"), ("database", "pgbouncer")]).await;
    read_messages(&mut s, false).await;
    let stray = [raw(b'd', b"xyz"), raw(b'c', b""), raw(b'Q', b"SHOW VERSION\0")].concat();
    tokio::io::AsyncWriteExt::write_all(&mut s, &stray).await.unwrap();
    assert_eq!(read_messages(&mut s, false).await, ["T", "D", "C", "Z"]);
    tokio::io::AsyncWriteExt::write_all(&mut s, &raw(b'z', b"ab")).await.unwrap();
    assert_eq!(read_messages(&mut s, true).await, ["E FATAL unknown pkt"]);
}
