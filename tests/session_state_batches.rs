//! Session state from extended-protocol batches: which settings count depends on the server's
//! answers to the whole batch, including those that came before the first statement worth
//! tracking was sent (a batch sent in pieces, a Flush between), those to a Query sent inside the
//! batch and to a COPY its Execute started; on what each statement name stands for when it is
//! executed (a Parse too long to read replaces what the name did; a Parse or Close that a failed
//! batch or a lost server may have skipped does not); and on a Query skipped after an error.

use bytes::{BufMut, BytesMut};
use pgmux_protocol::build;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::harness::pgmux::Setup;
use crate::harness::raw::Raw;
use crate::harness::{Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

/// What `myapp.tenant` is for `c`, '' when unset.
async fn tenant(c: &Client) -> String {
    let rows = c.simple_query("SELECT coalesce(current_setting('myapp.tenant', true), '')").await.unwrap();
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
            _ => None,
        })
        .unwrap()
}

/// Bind of the prepared statement `name` to the unnamed portal, Execute.
fn execute_prepared(out: &mut BytesMut, name: &str) {
    build::bind(out, "", name, &[]);
    build::execute(out, "");
}

/// Close of the prepared statement `name`.
fn close_statement(out: &mut BytesMut, name: &str) {
    out.put_u8(b'C');
    out.put_i32(4 + 1 + name.len() as i32 + 1);
    out.put_u8(b'S');
    out.put_slice(name.as_bytes());
    out.put_u8(0);
}

/// What `myapp.tenant` is for the raw client `a`, as the answers to a simple query.
async fn raw_tenant(a: &mut Raw) -> Vec<String> {
    a.send(|o| build::query(o, "SELECT coalesce(current_setting('myapp.tenant', true), '')")).await;
    a.until_ready().await
}

/// Parse of `sql` as `name`, Bind to the unnamed portal, Execute.
fn run(out: &mut BytesMut, name: &str, sql: &str) {
    build::parse(out, name, sql);
    build::bind(out, "", name, &[]);
    build::execute(out, "");
}

/// One server for `raw` and `other`: each turn of one after the other is a switch, and pgmux
/// replays onto the server what it believes each client's settings are. So a setting pgmux
/// wrongly counts comes back to `raw`, and one it wrongly misses stays for `other`.
async fn two_clients() -> (Pgmux, Raw, Client) {
    two_clients_with("").await
}

/// [`two_clients`] with more settings.
async fn two_clients_with(extra: &str) -> (Pgmux, Raw, Client) {
    let userlist = format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n");
    let ini = format!("auth_type = trust\ndefault_pool_size = 1\n{extra}");
    let setup = Setup { pgbouncer: &ini, userlist: Some(&userlist), ..Setup::default() };
    let mux = Pgmux::start_with(Cluster::shared(), setup);
    let raw = Raw::connect(&mux).await;
    let (other, conn) = tokio_postgres::connect(&mux.url(SCRAM_USER, SCRAM_PASS, "app"), NoTls).await.unwrap();
    tokio::spawn(conn);
    (mux, raw, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_came_before_tracking_began_still_count() {
    let (_mux, mut a, b) = two_clients().await;

    // An error answered before the SET was sent: PostgreSQL skips the SET, up to the Sync.
    a.send(|o| {
        run(o, "", "SELECT 1/0");
        build::flush(o);
    })
    .await;
    assert!(a.until(b'E').await.last().unwrap().starts_with("E:22012"));
    a.send(|o| {
        run(o, "", "SET myapp.tenant = 'ghost'");
        build::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await, ["Z"], "skipped after the error");
    assert_eq!(tenant(&b).await, "");
    assert_eq!(raw_tenant(&mut a).await, ["T", "D:", "C", "Z"], "a SET that never ran is not replayed");

    // A CommandComplete answered before the SET was sent: the SET is the batch's second
    // statement, and the savepoint behind it the third; ROLLBACK TO that savepoint keeps it.
    a.send(|o| build::query(o, "BEGIN")).await;
    a.until_ready().await;
    a.send(|o| {
        run(o, "", "SELECT 1");
        build::flush(o);
    })
    .await;
    assert_eq!(a.until(b'C').await, ["1", "2", "D:1", "C"]);
    a.send(|o| {
        run(o, "", "SET myapp.tenant = 'kept'");
        run(o, "", "SAVEPOINT sp");
        run(o, "", "SELECT 1/0");
        build::sync(o);
    })
    .await;
    let answers = a.until_ready().await;
    assert_eq!(answers.iter().filter(|m| *m == "C").count(), 2, "{answers:?}");
    a.send(|o| build::query(o, "ROLLBACK TO sp; COMMIT")).await;
    assert_eq!(a.until_ready().await, ["C", "C", "Z"]);
    assert_eq!(tenant(&b).await, "", "the committed SET stays with its own client");
    a.send(|o| build::query(o, "SELECT current_setting('myapp.tenant')")).await;
    assert_eq!(a.until_ready().await, ["T", "D:kept", "C", "Z"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_does_what_its_latest_parse_says_even_one_too_long_to_read() {
    let (_mux, mut a, b) = two_clients().await;
    // A SELECT longer than any text pgmux reads (64 KiB).
    let long = format!("SELECT 1 /* {} */", "x".repeat(70_000));

    // The unnamed statement: parsed as a SET and never executed, then parsed again.
    a.send(|o| {
        build::parse(o, "", "SET myapp.tenant = 'stale'");
        build::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await, ["1", "Z"]);
    a.send(|o| {
        run(o, "", &long);
        build::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await, ["1", "2", "D:1", "C", "Z"]);

    // A named one: closed, then parsed again under its name.
    a.send(|o| {
        build::parse(o, "s1", "SET myapp.tenant = 'closed'");
        build::sync(o);
        close_statement(o, "s1");
        build::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await, ["1", "Z"]);
    assert_eq!(a.until_ready().await, ["3", "Z"]);
    a.send(|o| {
        run(o, "s1", &long);
        build::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await, ["1", "2", "D:1", "C", "Z"]);

    assert_eq!(tenant(&b).await, "");
    assert_eq!(raw_tenant(&mut a).await, ["T", "D:", "C", "Z"], "no SET ran");
}

/// A Query sent inside an extended batch before its Sync: PostgreSQL answers the batch's
/// Executes first, so the Query's statements are numbered after them. Counted from 0, the
/// COMMIT below was matched to the SET's CommandComplete, and the SET of the aborted
/// transaction came back to the client at its next server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_inside_an_extended_batch_is_numbered_after_its_executes() {
    let (_mux, mut a, b) = two_clients().await;
    a.send(|o| {
        run(o, "", "SELECT 1");
        run(o, "", "SELECT 2");
        build::query(o, "BEGIN; SET myapp.tenant = 'aborted'; SELECT 1/0; COMMIT");
    })
    .await;
    let answers = a.until_ready().await;
    assert_eq!(answers[..8], ["1", "2", "D:1", "C", "1", "2", "D:2", "C"]);
    assert_eq!(answers[8..10], ["C", "C"], "{answers:?}");
    assert!(answers[10].starts_with("E:22012"), "{answers:?}");
    a.send(|o| build::query(o, "ROLLBACK")).await;
    assert_eq!(a.until_ready().await, ["C", "Z"]);
    // The other client takes the server; then this one's settings are made again on it.
    assert_eq!(tenant(&b).await, "");
    assert_eq!(raw_tenant(&mut a).await, ["T", "D:", "C", "Z"], "the aborted SET is not replayed");
}

/// A Close that PostgreSQL skipped (an earlier message of its batch failed) leaves the
/// statement there, and the client may still bind it: its SET must still be seen. With
/// max_prepared_statements = 0 the Close reaches PostgreSQL, which skips it; with it above 0
/// pgmux answers the Close itself and takes it back after the error, as PostgreSQL would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_skipped_after_an_error_leaves_the_name_doing_what_it_did() {
    for extra in ["max_prepared_statements = 0", ""] {
        close_skipped_after_an_error(extra).await;
    }
}

async fn close_skipped_after_an_error(extra: &str) {
    let (_mux, mut a, b) = two_clients_with(extra).await;
    a.send(|o| {
        build::parse(o, "s1", "SET myapp.tenant = 'kept'");
        build::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await, ["1", "Z"]);
    a.send(|o| {
        run(o, "", "SELECT 1/0");
        close_statement(o, "s1");
        build::sync(o);
    })
    .await;
    let answers = a.until_ready().await;
    // (1/0 is folded when the unnamed statement is planned, at its Bind.)
    assert!(answers.len() == 3 && answers[1].starts_with("E:22012"), "{answers:?}");
    a.send(|o| {
        execute_prepared(o, "s1");
        build::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await, ["2", "C", "Z"], "s1 is still there");
    assert_eq!(tenant(&b).await, "", "the SET stays with its client");
    assert_eq!(raw_tenant(&mut a).await, ["T", "D:kept", "C", "Z"]);
}

/// The same for a Parse of the unnamed statement skipped after an error (pgmux passing the
/// client's statements through as they are, max_prepared_statements = 0): the unnamed
/// statement is still the SET, and a Bind of it without a new Parse runs it. (Only
/// extended-protocol messages here: a simple Query drops the unnamed statement.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parse_skipped_after_an_error_leaves_the_name_doing_what_it_did() {
    let (_mux, mut a, b) = two_clients_with("max_prepared_statements = 0").await;
    a.send(|o| {
        run(o, "", "SET myapp.tenant = 'unnamed'");
        build::sync(o);
        run(o, "named", "SET myapp.tenant = 'named'");
        build::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await, ["1", "2", "C", "Z"]);
    assert_eq!(a.until_ready().await, ["1", "2", "C", "Z"]);
    a.send(|o| {
        run(o, "failing", "SELECT 1/0");
        build::parse(o, "", "SELECT 2");
        build::sync(o);
    })
    .await;
    let answers = a.until_ready().await;
    assert!(answers.len() == 3 && answers[1].starts_with("E:22012"), "{answers:?}");
    a.send(|o| {
        execute_prepared(o, "");
        build::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await, ["2", "C", "Z"], "the unnamed statement is still the SET");
    // The other client takes the server; then this one's settings are made again on it.
    assert_eq!(tenant(&b).await, "");
    assert_eq!(raw_tenant(&mut a).await, ["T", "D:unnamed", "C", "Z"], "the last SET that ran");
}

/// The server lost with a Close in flight: which of the batch's messages it saw is not known,
/// and pgmux gives the client its statement back (max_prepared_statements above 0), so the
/// name's SET must still be seen when the client binds it on the next server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_in_flight_when_the_server_is_lost_is_taken_back() {
    let (_mux, mut a, b) = two_clients().await;
    let pg = Cluster::shared();
    let direct = pg.connect_direct().await;
    a.send(|o| {
        build::parse(o, "s1", "SET myapp.tenant = 'kept'");
        build::sync(o);
        run(o, "", "SELECT pg_backend_pid()");
        build::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await, ["1", "Z"]);
    let answers = a.until_ready().await;
    let pid: i32 = answers[2].strip_prefix("D:").unwrap().parse().unwrap();
    a.send(|o| {
        run(o, "", "SELECT pg_sleep(5)");
        close_statement(o, "s1");
        build::sync(o);
    })
    .await;
    crate::harness::eventually_async("the sleep running on the client's server", || async {
        let sql = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query = 'SELECT pg_sleep(5)'";
        direct.query_one(sql, &[&pid]).await.unwrap().get::<_, i64>(0) == 1
    })
    .await;
    direct.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    let answers = a.until_ready().await;
    assert!(answers.iter().any(|m| m.starts_with("E:08006")), "{answers:?}");
    a.send(|o| {
        execute_prepared(o, "s1");
        build::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await, ["2", "C", "Z"], "s1 is the client's still");
    assert_eq!(tenant(&b).await, "", "the SET stays with its client");
    assert_eq!(raw_tenant(&mut a).await, ["T", "D:kept", "C", "Z"]);
}

/// A Query sent inside an extended batch after its error, before its Sync: PostgreSQL skips it
/// (everything up to the Sync is), so no ReadyForQuery answers it. pgmux waited for one and
/// kept the server for this client forever; now it counts the Query as skipped (and its SET as
/// not run), and the server goes back to the pool at the Sync's ReadyForQuery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_skipped_after_an_error_in_a_batch_is_owed_no_ready() {
    let (_mux, mut a, b) = two_clients().await;
    // A statement of the client's own first, so that the batch's messages are tracked.
    a.send(|o| {
        build::parse(o, "s1", "SELECT 1");
        build::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await, ["1", "Z"]);
    a.send(|o| {
        run(o, "", "SELECT 1/0");
        build::query(o, "SET myapp.tenant = 'skipped'");
        execute_prepared(o, "s1");
        build::sync(o);
    })
    .await;
    let answers = a.until_ready().await;
    assert!(answers.len() == 3 && answers[1].starts_with("E:22012"), "{answers:?}");
    // The only server is free for the other client.
    let other = tokio::time::timeout(std::time::Duration::from_secs(3), tenant(&b)).await;
    assert_eq!(other.expect("the server went back to the pool"), "");
    assert_eq!(raw_tenant(&mut a).await, ["T", "D:", "C", "Z"], "the skipped SET is not replayed");
}

/// COPY FROM STDIN started by an Execute: PostgreSQL ignores the Sync sent behind it, and the
/// batch goes on after CopyDone, its Executes numbered after the COPY's. Numbered from that
/// ignored Sync, the COMMIT below was matched to the SET's CommandComplete, and the SET of the
/// aborted transaction came back to the client at its next server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_goes_on_after_copy_numbers_its_executes_after_the_copy() {
    let (_mux, mut a, b) = two_clients().await;
    b.batch_execute("CREATE TABLE IF NOT EXISTS batches_copy_target (v int)").await.unwrap();
    a.send(|o| {
        run(o, "", "BEGIN");
        run(o, "", "COPY batches_copy_target FROM STDIN");
        build::sync(o);
    })
    .await;
    assert_eq!(a.until(b'G').await, ["1", "2", "C", "1", "2", "G"]);
    a.send(|o| {
        o.put_u8(b'd');
        o.put_i32(4 + 2);
        o.put_slice(b"1\n");
        o.put_u8(b'c');
        o.put_i32(4);
        run(o, "", "SET myapp.tenant = 'aborted'");
        run(o, "", "SELECT 1/0");
        run(o, "", "COMMIT");
        build::sync(o);
    })
    .await;
    let answers = a.until_ready().await;
    assert_eq!(answers[..5], ["C", "1", "2", "C", "1"], "{answers:?}");
    assert!(answers[5].starts_with("E:22012") && answers[6] == "Z", "{answers:?}");
    a.send(|o| build::query(o, "ROLLBACK")).await;
    assert_eq!(a.until_ready().await, ["C", "Z"]);
    assert_eq!(tenant(&b).await, "");
    assert_eq!(raw_tenant(&mut a).await, ["T", "D:", "C", "Z"], "the aborted SET is not replayed");
}

/// The same Query skipped, and the client gone before its Sync: the server still skips up to a
/// Sync, so it is not clean, and the next client must not get it as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_after_a_skipped_query_leaves_no_stuck_server() {
    let (_mux, mut a, b) = two_clients().await;
    a.send(|o| {
        build::parse(o, "s1", "SELECT 1");
        build::sync(o);
    })
    .await;
    assert_eq!(a.until_ready().await, ["1", "Z"]);
    a.send(|o| {
        run(o, "", "SELECT 1/0");
        build::flush(o);
    })
    .await;
    assert!(a.until(b'E').await.last().unwrap().starts_with("E:22012"));
    a.send(|o| build::query(o, "SELECT 1")).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    drop(a);
    let other = tokio::time::timeout(std::time::Duration::from_secs(8), tenant(&b)).await;
    assert_eq!(other.expect("the other client is served"), "");
}
