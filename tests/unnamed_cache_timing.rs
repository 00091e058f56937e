//! The cache of unnamed statements against a scripted backend, for answer timings a real
//! PostgreSQL does not produce on demand: a refusal read apart from the ParameterDescription in
//! front of it (client/prepared/replay.rs), and a client that goes in between.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use pgmux_protocol::build;

use crate::harness::pgmux::Setup;
use crate::harness::raw::Raw;
use crate::harness::{Cluster, Pgmux};
use crate::unnamed_cache::run_unnamed_described;

/// What the test sets and sees of [`backend_refusing_after_a_pause`].
#[derive(Default)]
struct Script {
    /// The DDL ran: statements prepared before it are refused.
    migrated: AtomicBool,
    /// Logins (cancel requests apart).
    logins: AtomicUsize,
    /// Told when a refusal's ParameterDescription went out alone.
    held: tokio::sync::Notify,
    /// The refusal waits for a CancelRequest (pgmux's, when it rescues the server of a client
    /// that went) instead of 300 ms.
    hold_until_cancelled: AtomicBool,
    /// Told when a CancelRequest came.
    cancelled: tokio::sync::Notify,
    /// The simple Queries received.
    queries: parking_lot::Mutex<Vec<String>>,
}

/// A backend that answers the extended protocol by rule and, once `migrated`, refuses the
/// statements prepared before it the way PostgreSQL does when the Describe of one is what
/// analyses it again: the ParameterDescription first, in a write of its own, and the refusal
/// 300 ms later. Rows have one column before the migration, two after.
async fn backend_refusing_after_a_pause(script: Arc<Script>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                let head = crate::harness::raw::accept_startup(&mut s).await?;
                if crate::harness::raw::is_cancel(&head) {
                    // A cancel: taken (nothing runs long here), and its connection closed.
                    script.cancelled.notify_one();
                    return Ok(());
                }
                script.logins.fetch_add(1, Relaxed);
                crate::harness::raw::welcome(&mut s, (7, 8)).await?;
                let (mut before, mut skipping, mut buf) = (Vec::new(), false, bytes::BytesMut::new());
                while s.read_buf(&mut buf).await? > 0 {
                    while let Ok(Some(f)) = pgmux_protocol::split_frame(&mut buf, 1 << 20) {
                        let body = f.body();
                        let name = || body.split(|b| *b == 0).next().unwrap_or_default().to_vec();
                        let new = script.migrated.load(Relaxed);
                        let mut out = bytes::BytesMut::new();
                        match f.tag {
                            b'Q' => {
                                let text = String::from_utf8_lossy(&body[..body.len() - 1]).into_owned();
                                script.queries.lock().push(text);
                                build::command_complete(&mut out, "SET");
                                build::ready_for_query(&mut out, b'I');
                            }
                            b'S' => {
                                skipping = false;
                                build::ready_for_query(&mut out, b'I');
                            }
                            _ if skipping => {}
                            b'P' => {
                                // A Parse after the migration analyses the text afresh.
                                if new {
                                    before.retain(|n| *n != name());
                                } else {
                                    before.push(name());
                                }
                                out.extend_from_slice(&[b'1', 0, 0, 0, 4]);
                            }
                            b'D' if new && before.contains(&body[1..body.len() - 1].to_vec()) => {
                                s.write_all(&[b't', 0, 0, 0, 6, 0, 0]).await?;
                                script.held.notify_one();
                                let pause = std::time::Duration::from_millis(300);
                                if script.hold_until_cancelled.load(Relaxed) {
                                    let cancelled = script.cancelled.notified();
                                    let _ = tokio::time::timeout(pause * 30, cancelled).await;
                                } else {
                                    tokio::time::sleep(pause).await;
                                }
                                build::error_response(
                                    &mut out,
                                    build::Severity::Error,
                                    "0A000",
                                    "cached plan must not change result type",
                                );
                                skipping = true;
                            }
                            b'D' => {
                                out.extend_from_slice(&[b't', 0, 0, 0, 6, 0, 0]);
                                let columns: &[(&str, u32)] = if new { &[("a", 23), ("b", 23)] } else { &[("a", 23)] };
                                build::row_description(&mut out, columns);
                            }
                            b'B' => out.extend_from_slice(&[b'2', 0, 0, 0, 4]),
                            b'E' => {
                                let row: &[Option<&[u8]>] = if new { &[Some(b"1"), Some(b"2")] } else { &[Some(b"1")] };
                                build::data_row(&mut out, row);
                                build::command_complete(&mut out, "SELECT 1");
                            }
                            _ => {}
                        }
                        s.write_all(&out).await?;
                    }
                }
                Ok::<(), std::io::Error>(())
            });
        }
    });
    port
}

/// pgmux (trust, one server) in front of [`backend_refusing_after_a_pause`], and its script.
async fn pgmux_before_the_backend() -> (Arc<Script>, Pgmux) {
    let script = Arc::new(Script::default());
    let port = backend_refusing_after_a_pause(script.clone()).await;
    let mux = Pgmux::start_with(
        Cluster::shared(),
        Setup {
            pgbouncer: "auth_type = trust\ndefault_pool_size = 1",
            databases: &format!("app = host=127.0.0.1 port={port}"),
            ..Setup::default()
        },
    );
    (script, mux)
}

/// The refusal comes in a later read than the ParameterDescription in front of it: pgmux waits
/// for it (never long: PostgreSQL writes both in one answer; here 300 ms apart), drops the
/// ParameterDescription and sends the batch again, and the client sees one of each answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_description_read_apart_from_the_refusal_behind_it_is_held_until_it_comes() {
    let (script, mux) = pgmux_before_the_backend().await;
    let mut c = Raw::connect(&mux).await;
    let sql = "SELECT * FROM t WHERE a = $1";
    assert_eq!(run_unnamed_described(&mut c, sql, "1").await, ["1", "t", "T", "2", "D:1", "C", "Z"]);
    assert_eq!(run_unnamed_described(&mut c, sql, "1").await, ["1", "t", "T", "2", "D:1", "C", "Z"], "cached");
    script.migrated.store(true, Relaxed);
    assert_eq!(run_unnamed_described(&mut c, sql, "1").await, ["1", "t", "T", "2", "D:1,2", "C", "Z"]);
    assert_eq!(run_unnamed_described(&mut c, sql, "1").await, ["1", "t", "T", "2", "D:1,2", "C", "Z"], "cached again");
}

/// The client goes while pgmux holds a ParameterDescription for the refusal behind it: the
/// server is rescued (the refusal and its ReadyForQuery drained, the statements it holds
/// deallocated and forgotten) and the next client gets it clean, with no new login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_while_a_parameter_description_is_held_leaves_its_server_clean() {
    let (script, mux) = pgmux_before_the_backend().await;
    let sql = "SELECT * FROM t WHERE a = $1";
    let mut a = Raw::connect(&mux).await;
    assert_eq!(run_unnamed_described(&mut a, sql, "1").await, ["1", "t", "T", "2", "D:1", "C", "Z"]);
    script.migrated.store(true, Relaxed);
    // The refusal comes only once pgmux has seen the client go, however slow this machine is.
    script.hold_until_cancelled.store(true, Relaxed);
    a.send(|m| {
        build::parse(m, "", sql);
        pgmux_protocol::extended::target_message(m, b'D', b'S', b"");
        build::bind(m, "", "", &[Some(b"1")]);
        build::execute(m, "");
        build::sync(m);
    })
    .await;
    tokio::time::timeout(std::time::Duration::from_secs(10), script.held.notified())
        .await
        .expect("the backend never held a ParameterDescription");
    drop(a);
    let mut b = Raw::connect(&mux).await;
    assert_eq!(run_unnamed_described(&mut b, sql, "1").await, ["1", "t", "T", "2", "D:1,2", "C", "Z"]);
    assert_eq!(script.logins.load(Relaxed), 1, "the server was kept");
    assert!(script.queries.lock().iter().any(|q| q == "DEALLOCATE ALL"), "{:?}", script.queries.lock());
    let pool = mux.shared.pools.all().into_iter().find(|p| p.db == "app").unwrap();
    assert_eq!(pool.counters.sum(|s| &s.servers_rescued), 1);
}
