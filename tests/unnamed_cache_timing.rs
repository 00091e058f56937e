//! The cache of unnamed statements against a scripted backend, for answer timings a real
//! PostgreSQL does not produce on demand: a refusal read apart from the ParameterDescription in
//! front of it (client/prepared/replay.rs).

use pgmux_protocol::build;

use crate::harness::pgmux::Setup;
use crate::harness::raw::Raw;
use crate::harness::{Cluster, Pgmux};
use crate::unnamed_cache::run_unnamed_described;

/// A backend that answers the extended protocol by rule and, once `migrated`, refuses the
/// statements prepared before it the way PostgreSQL does when the Describe of one is what
/// analyses it again: the ParameterDescription first, in a write of its own, and the refusal
/// 300 ms later. Rows have one column before the migration, two after.
async fn backend_refusing_after_a_pause(migrated: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u16 {
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let migrated = migrated.clone();
            tokio::spawn(async move {
                crate::harness::raw::accept_startup(&mut s).await?;
                let mut out = bytes::BytesMut::new();
                build::auth_ok(&mut out);
                build::parameter_status(&mut out, b"server_version", b"15.0");
                build::backend_key_data(&mut out, 7, 8);
                build::ready_for_query(&mut out, b'I');
                s.write_all(&out).await?;
                let (mut before, mut skipping, mut buf) = (Vec::new(), false, bytes::BytesMut::new());
                while s.read_buf(&mut buf).await? > 0 {
                    while let Ok(Some(f)) = pgmux_protocol::split_frame(&mut buf, 1 << 20) {
                        let body = f.body();
                        let name = || body.split(|b| *b == 0).next().unwrap_or_default().to_vec();
                        let new = migrated.load(Relaxed);
                        let mut out = bytes::BytesMut::new();
                        match f.tag {
                            b'Q' => {
                                build::command_complete(&mut out, "SET");
                                build::ready_for_query(&mut out, b'I');
                            }
                            b'S' => {
                                skipping = false;
                                build::ready_for_query(&mut out, b'I');
                            }
                            _ if skipping => {}
                            b'P' => {
                                if !new {
                                    before.push(name());
                                }
                                out.extend_from_slice(&[b'1', 0, 0, 0, 4]);
                            }
                            b'D' if new && before.contains(&body[1..body.len() - 1].to_vec()) => {
                                s.write_all(&[b't', 0, 0, 0, 6, 0, 0]).await?;
                                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
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

/// The refusal comes in a later read than the ParameterDescription in front of it: pgmux waits
/// for it (never long: PostgreSQL writes both in one answer; here 300 ms apart), drops the
/// ParameterDescription and sends the batch again, and the client sees one of each answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_description_read_apart_from_the_refusal_behind_it_is_held_until_it_comes() {
    let migrated = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = backend_refusing_after_a_pause(migrated.clone()).await;
    let mux = Pgmux::start_with(
        Cluster::shared(),
        Setup {
            pgbouncer: "auth_type = trust\ndefault_pool_size = 1",
            databases: &format!("app = host=127.0.0.1 port={port}"),
            ..Setup::default()
        },
    );
    let mut c = Raw::connect(&mux).await;
    let sql = "SELECT * FROM t WHERE a = $1";
    assert_eq!(run_unnamed_described(&mut c, sql, "1").await, ["1", "t", "T", "2", "D:1", "C", "Z"]);
    assert_eq!(run_unnamed_described(&mut c, sql, "1").await, ["1", "t", "T", "2", "D:1", "C", "Z"], "cached");
    migrated.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(run_unnamed_described(&mut c, sql, "1").await, ["1", "t", "T", "2", "D:1,2", "C", "Z"]);
    assert_eq!(run_unnamed_described(&mut c, sql, "1").await, ["1", "t", "T", "2", "D:1,2", "C", "Z"], "cached again");
}
