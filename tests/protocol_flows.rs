//! Protocol flows through the relay: COPY in and out, extended-protocol pipelining, notices and
//! NOTIFY in session mode, and results larger than any buffer.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::harness::{Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let pg = Cluster::shared();
    pg.psql("app", "CREATE TABLE IF NOT EXISTS copied(id int, name text)");
    let mux = Pgmux::start(pg, "pool_mode = transaction\ndefault_pool_size = 1\nquery_wait_timeout = 5");
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    c.batch_execute("TRUNCATE copied").await.unwrap();
    let sink = c.copy_in("COPY copied FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    for chunk in 0..50 {
        let rows: String = (0..200).map(|i| format!("{}\tname-{}\n", chunk * 200 + i, i)).collect();
        sink.send(Bytes::from(rows)).await.unwrap();
    }
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 10_000);
    let out = c.copy_out("COPY (SELECT * FROM copied ORDER BY id) TO STDOUT").await.unwrap();
    let chunks: Vec<Bytes> = out.try_collect().await.unwrap();
    let text: Vec<u8> = chunks.concat();
    assert_eq!(text.iter().filter(|&&b| b == b'\n').count(), 10_000);
    assert!(text.starts_with(b"0\tname-0\n"));
    // A failed COPY leaves the server usable for the next transaction.
    let sink = c.copy_in::<_, Bytes>("COPY copied FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"not-a-number\tx\n")).await.unwrap();
    assert!(sink.finish().await.is_err());
    assert_eq!(c.query_one("SELECT count(*) FROM copied", &[]).await.unwrap().get::<_, i64>(0), 10_000);
    // After both COPYs the only server went back to the pool: another client can use it.
    let other = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(other.query_one("SELECT count(*) FROM copied", &[]).await.unwrap().get::<_, i64>(0), 10_000);
    assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_extended_queries_in_transaction_mode() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "pool_mode = transaction\ndefault_pool_size = 2");
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let stmt = c.prepare("SELECT $1::int * 2").await.unwrap();
    // tokio-postgres pipelines these: many Bind/Execute/Sync in flight at once.
    let futs = (0..200).map(|i| {
        let c = &c;
        let stmt = stmt.clone();
        async move { c.query_one(&stmt, &[&i]).await.map(|r| r.get::<_, i32>(0)) }
    });
    let results = futures_util::future::join_all(futs).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i as i32 * 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_and_queries_stream_through() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "");
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let big: String = c.query_one("SELECT repeat('x', 8000000)", &[]).await.unwrap().get(0);
    assert_eq!(big.len(), 8_000_000);
    let literal = "y".repeat(3_000_000);
    let n: i32 = c.query_one(&format!("SELECT length('{literal}')"), &[]).await.unwrap().get(0);
    assert_eq!(n, 3_000_000);
    let rows = c.query("SELECT g, md5(g::text) FROM generate_series(1, 50000) g", &[]).await.unwrap();
    assert_eq!(rows.len(), 50_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_and_notices_in_session_mode() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "pool_mode = session");
    let (listener, mut conn) = tokio_postgres::connect(&mux.url(SCRAM_USER, SCRAM_PASS, "app"), NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(stream.for_each(move |m| {
        if let Ok(m) = m {
            let _ = tx.send(m);
        }
        async {}
    }));
    listener.batch_execute("LISTEN pgmux_chan").await.unwrap();
    listener.batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$").await.unwrap();
    let talker = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    talker.batch_execute("NOTIFY pgmux_chan, 'ping'").await.unwrap();
    let (mut notice, mut notification) = (false, false);
    while !(notice && notification) {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("message in time").unwrap();
        match m {
            AsyncMessage::Notice(n) => notice |= n.message() == "hello from plpgsql",
            AsyncMessage::Notification(n) => notification |= n.channel() == "pgmux_chan" && n.payload() == "ping",
            _ => {}
        }
    }
}
