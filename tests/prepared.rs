//! Prepared statements in transaction mode with fewer servers than clients, as PgBouncer 1.21+
//! handles them: statements follow clients across servers, DEALLOCATE ALL / DISCARD ALL are
//! tracked, errors and aborted transactions leave pgmux's view right, eviction keeps every
//! client working, Close / name reuse / unknown names as PgBouncer answers them, the unnamed
//! statement never leaks between clients, and the SHOW STATS counters.

use bytes::BytesMut;
use pgmux_protocol::build;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::pgmux::Setup;
use crate::harness::raw::Raw;
use crate::harness::{db_error, pgbench_three_statements, Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

/// The console row of SHOW STATS for `db`, by column name.
async fn stats(mux: &Pgmux, db: &str) -> std::collections::HashMap<String, String> {
    let admin = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    for m in admin.simple_query("SHOW STATS").await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            if r.get("database") == Some(db) {
                return r
                    .columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), r.get(i).unwrap_or("").to_owned()))
                    .collect();
            }
        }
    }
    panic!("no SHOW STATS row for {db}");
}

async fn set(mux: &Pgmux, key: &str, value: &str) {
    let admin = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    admin.simple_query(&format!("SET {key} = {value}")).await.unwrap();
}

/// Holds one server inside a transaction until dropped (commits), forcing the others to move.
async fn hold_a_server(mux: &Pgmux) -> Client {
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    c.batch_execute("BEGIN; SELECT 1").await.unwrap();
    c
}

async fn prepared_count(c: &Client) -> i64 {
    // Simple protocol: counting must not prepare anything itself.
    for m in c.simple_query("SELECT count(*) FROM pg_prepared_statements").await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            return r.get(0).unwrap().parse().unwrap();
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_follow_six_clients_over_two_servers_and_are_counted() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "default_pool_size = 2\nadmin_users = scram_user\nmax_prepared_statements = 10");
    let mut clients = Vec::new();
    for _ in 0..6 {
        let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        let double = c.prepare("SELECT $1::int * 2").await.unwrap();
        let concat = c.prepare("SELECT $1::text || '!'").await.unwrap();
        clients.push((c, double, concat));
    }
    let mut binds = 0;
    for round in 0..4 {
        // Every other round one server is held in a transaction: all clients share the other.
        let holder = if round % 2 == 1 { Some(hold_a_server(&mux).await) } else { None };
        for (i, (c, double, concat)) in clients.iter().enumerate() {
            let n = (round * 10 + i) as i32;
            assert_eq!(c.query_one(double, &[&n]).await.unwrap().get::<_, i32>(0), n * 2);
            let s: String = c.query_one(concat, &[&format!("c{i}")]).await.unwrap().get(0);
            assert_eq!(s, format!("c{i}!"));
            binds += 2;
        }
        if let Some(h) = holder {
            h.batch_execute("COMMIT").await.unwrap();
        }
    }
    let s = stats(&mux, "app").await;
    assert_eq!(s["total_client_parse_count"], "12", "{s:?}");
    assert_eq!(s["total_bind_count"], binds.to_string(), "{s:?}");
    let server_parses: u64 = s["total_server_parse_count"].parse().unwrap();
    assert!((2..=4).contains(&server_parses), "two statements on at most two servers, got {server_parses}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_and_discard_all_forget_statements_for_everyone() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "default_pool_size = 1");
    for reset in ["DEALLOCATE ALL", "DISCARD ALL"] {
        let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        let b = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        let sa = a.prepare("SELECT $1::int + 1").await.unwrap();
        let sb = b.prepare("SELECT $1::int + 1").await.unwrap();
        a.batch_execute(reset).await.unwrap();
        assert_eq!(prepared_count(&a).await, 0, "{reset} ran on the only server");
        // b's statement is prepared again on the server behind its back.
        assert_eq!(b.query_one(&sb, &[&1i32]).await.unwrap().get::<_, i32>(0), 2, "{reset}");
        // a's names are gone, as PgBouncer: the client is closed, not left with a wrong answer.
        let e = a.query_one(&sa, &[&1i32]).await.unwrap_err();
        assert_eq!(db_error(&e), ("08P01".into(), "prepared statement did not exist".into()), "{reset}");
        // A new client prepares the same text without trouble.
        let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        let sc = c.prepare("SELECT $1::int + 1").await.unwrap();
        assert_eq!(c.query_one(&sc, &[&41i32]).await.unwrap().get::<_, i32>(0), 42);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_transactions_and_failed_parses_leave_no_ghost_statements() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "default_pool_size = 1");
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let other = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let early = c.prepare("SELECT $1::int - 1").await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(db_error(&c.batch_execute("SELECT 1/0").await.unwrap_err()).0, "22012");
    // In the aborted transaction neither a new Parse nor an old statement runs.
    assert_eq!(db_error(&c.prepare("SELECT $1::int * 3").await.unwrap_err()).0, "25P02");
    assert_eq!(db_error(&c.query_one(&early, &[&1i32]).await.unwrap_err()).0, "25P02");
    c.batch_execute("ROLLBACK").await.unwrap();
    // The same query prepared again after ROLLBACK, and used from another client on the server.
    let triple = c.prepare("SELECT $1::int * 3").await.unwrap();
    assert_eq!(c.query_one(&triple, &[&3i32]).await.unwrap().get::<_, i32>(0), 9);
    assert_eq!(c.query_one(&early, &[&3i32]).await.unwrap().get::<_, i32>(0), 2);
    let t2 = other.prepare("SELECT $1::int * 3").await.unwrap();
    assert_eq!(other.query_one(&t2, &[&4i32]).await.unwrap().get::<_, i32>(0), 12);
    // A Parse that fails leaves nothing behind: the table created afterwards is found.
    c.batch_execute("DROP TABLE IF EXISTS later_table").await.unwrap();
    assert_eq!(db_error(&c.prepare("SELECT count(*) FROM later_table").await.unwrap_err()).0, "42P01");
    c.batch_execute("CREATE TABLE later_table(x int)").await.unwrap();
    let n = c.prepare("SELECT count(*) FROM later_table").await.unwrap();
    assert_eq!(other.query_one("SELECT count(*) FROM later_table", &[]).await.unwrap().get::<_, i64>(0), 0);
    assert_eq!(c.query_one(&n, &[]).await.unwrap().get::<_, i64>(0), 0);
    c.batch_execute("DROP TABLE later_table").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_cache_evicts_least_recently_used_and_follows_set() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "default_pool_size = 1\nmax_prepared_statements = 2\nadmin_users = scram_user");
    let mut clients = Vec::new();
    for i in 0..3 {
        let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
        let mut stmts = Vec::new();
        for k in 0..4 {
            stmts.push(c.prepare(&format!("SELECT $1::int + {}", i * 100 + k)).await.unwrap());
        }
        clients.push((c, stmts));
    }
    for round in 0..3i32 {
        for (i, (c, stmts)) in clients.iter().enumerate() {
            for (k, s) in stmts.iter().enumerate() {
                let v: i32 = c.query_one(s, &[&round]).await.unwrap().get(0);
                assert_eq!(v, round + (i * 100 + k) as i32);
            }
        }
    }
    let c = &clients[0].0;
    assert_eq!(prepared_count(c).await, 2, "the only server holds max_prepared_statements");
    // A console SET applies to connected clients at their next transaction.
    set(&mux, "max_prepared_statements", "20").await;
    for (c, stmts) in &clients {
        for s in stmts {
            c.query_one(s, &[&0i32]).await.unwrap();
        }
    }
    assert_eq!(prepared_count(c).await, 12);
}

fn close_stmt(b: &mut BytesMut, name: &[u8]) {
    pgmux_protocol::extended::target_message(b, b'C', b'S', name);
}

fn describe_stmt(b: &mut BytesMut, name: &[u8]) {
    pgmux_protocol::extended::target_message(b, b'D', b'S', name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_name_reuse_and_unknown_names_as_pgbouncer() {
    let pg = Cluster::shared();
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: "auth_type = trust\ndefault_pool_size = 1",
            userlist: Some(&format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n")),
            ..Setup::default()
        },
    );
    let mut a = Raw::connect(&mux).await;
    // Close of a statement nobody prepared: CloseComplete, as PostgreSQL.
    a.send(|b| {
        close_stmt(b, b"never");
        build::sync(b);
    })
    .await;
    assert_eq!(a.until_ready().await, ["3", "Z"]);
    a.send(|b| {
        build::parse(b, "x", "SELECT 1");
        describe_stmt(b, b"x");
        build::bind(b, "", "x", &[]);
        build::execute(b, "");
        close_stmt(b, b"x");
        close_stmt(b, b"x");
        build::sync(b);
    })
    .await;
    assert_eq!(a.until_ready().await, ["1", "t", "T", "2", "D:1", "C", "3", "3", "Z"]);
    // Closed: the name can be prepared again, and reusing it without Close ends the session.
    a.send(|b| {
        build::parse(b, "x", "SELECT 2");
        build::sync(b);
    })
    .await;
    assert_eq!(a.until_ready().await, ["1", "Z"]);
    a.send(|b| {
        build::parse(b, "x", "SELECT 3");
        build::sync(b);
    })
    .await;
    assert_eq!(a.until_ready().await, ["E:08P01:prepared statement name is already in use", "EOF"]);

    let mut b = Raw::connect(&mux).await;
    b.send(|m| {
        describe_stmt(m, b"doesnotexist");
        build::sync(m);
    })
    .await;
    assert_eq!(b.until_ready().await, ["E:08P01:prepared statement did not exist", "EOF"]);
}

/// A Describe or Close whose kind is neither `S` nor `P` goes to PostgreSQL as PgBouncer sends
/// it: an ERROR, not the end of the session, and named statements still work after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_describe_or_close_of_an_unknown_kind_gets_postgresqls_error() {
    let pg = Cluster::shared();
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: "auth_type = trust
default_pool_size = 1",
            userlist: Some(&format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n")),
            ..Setup::default()
        },
    );
    let mut a = Raw::connect(&mux).await;
    for tag in [b'D', b'C'] {
        a.send(|b| {
            build::parse(b, "k", "SELECT 7");
            pgmux_protocol::extended::target_message(b, tag, b'X', b"k");
            build::sync(b);
        })
        .await;
        let got = a.until_ready().await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], "1");
        assert!(got[1].starts_with("E:08P01:invalid"), "{got:?}");
        a.send(|b| {
            build::bind(b, "", "k", &[]);
            build::execute(b, "");
            build::sync(b);
        })
        .await;
        assert_eq!(a.until_ready().await, ["2", "D:7", "C", "Z"]);
        a.send(|b| {
            close_stmt(b, b"k");
            build::sync(b);
        })
        .await;
        assert_eq!(a.until_ready().await, ["3", "Z"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unnamed_statement_never_comes_from_another_client() {
    let pg = Cluster::shared();
    let mux = Pgmux::start_with(
        pg,
        Setup {
            pgbouncer: "auth_type = trust\ndefault_pool_size = 1",
            userlist: Some(&format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n")),
            ..Setup::default()
        },
    );
    let (mut a, mut b, mut c) = (Raw::connect(&mux).await, Raw::connect(&mux).await, Raw::connect(&mux).await);
    a.send(|m| {
        build::parse(m, "", "SELECT 'mine'");
        build::sync(m);
    })
    .await;
    assert_eq!(a.until_ready().await, ["1", "Z"]);
    // Another client replaces the unnamed statement on the only server.
    b.send(|m| {
        build::parse(m, "", "SELECT 'theirs'");
        build::sync(m);
    })
    .await;
    assert_eq!(b.until_ready().await, ["1", "Z"]);
    // a binds its unnamed statement in a later transaction: it gets its own query back, and no
    // extra ParseComplete.
    a.send(|m| {
        build::bind(m, "", "", &[]);
        build::execute(m, "");
        build::sync(m);
    })
    .await;
    assert_eq!(a.until_ready().await, ["2", "D:mine", "C", "Z"]);
    // Re-sending Parse with Bind (what drivers do) is passed through untouched.
    a.send(|m| {
        build::parse(m, "", "SELECT 'again'");
        build::bind(m, "", "", &[]);
        build::execute(m, "");
        build::sync(m);
    })
    .await;
    assert_eq!(a.until_ready().await, ["1", "2", "D:again", "C", "Z"]);
    // A client that never prepared one gets PostgreSQL's error, not a's statement.
    c.send(|m| {
        build::bind(m, "", "", &[]);
        build::execute(m, "");
        build::sync(m);
    })
    .await;
    let got = c.until_ready().await;
    assert!(got[0].starts_with("E:26000:unnamed prepared statement does not exist"), "{got:?}");
}

#[test]
fn pgbench_prepared_with_eviction_and_fewer_servers_than_clients() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "default_pool_size = 2\nmax_prepared_statements = 2\nmax_client_conn = 100");
    pgbench_three_statements(mux.port, "prepared");
}

/// DDL that changes a prepared statement's result columns, through pgmux: the client that
/// prepared it before gets PostgreSQL's `cached plan must not change result type`, as on a
/// direct connection and through PgBouncer, never rows of the new shape (tokio-postgres, like
/// asyncpg and JDBC, decodes them with the columns it was told at prepare: an int4 column
/// changed to text read back as 825241648 for '1000'). DDL that leaves its columns alone costs
/// nothing, and a statement prepared after the DDL has the new shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_before_ddl_keeps_its_shape_or_is_refused() {
    let pg = Cluster::shared();
    pg.psql(
        "app",
        &format!(
            "DROP TABLE IF EXISTS prep_ddl; CREATE TABLE prep_ddl (id int, a int); \
             INSERT INTO prep_ddl VALUES (1, 1000); ALTER TABLE prep_ddl OWNER TO {SCRAM_USER}"
        ),
    );
    let mux = Pgmux::start(pg, "default_pool_size = 1");
    let a = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let other = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    let sql = "SELECT a FROM prep_ddl WHERE id = $1";
    let before = a.prepare(sql).await.unwrap();
    assert_eq!(a.query_one(&before, &[&1i32]).await.unwrap().get::<_, i32>(0), 1000);
    // Another table's columns, and a column the statement does not read: it goes on.
    other.batch_execute("ALTER TABLE prep_ddl ADD COLUMN b int").await.unwrap();
    assert_eq!(a.query_one(&before, &[&1i32]).await.unwrap().get::<_, i32>(0), 1000);
    // Its own column's type.
    other.batch_execute("ALTER TABLE prep_ddl ALTER COLUMN a TYPE text").await.unwrap();
    for _ in 0..3 {
        let e = a.query_one(&before, &[&1i32]).await.expect_err("the old statement is refused");
        assert_eq!(db_error(&e), ("0A000".to_owned(), "cached plan must not change result type".to_owned()));
    }
    let after = a.prepare(sql).await.unwrap();
    assert_eq!(a.query_one(&after, &[&1i32]).await.unwrap().get::<_, String>(0), "1000");
    // The other client, preparing the text for the first time, gets the new shape too.
    let theirs = other.prepare(sql).await.unwrap();
    assert_eq!(other.query_one(&theirs, &[&1i32]).await.unwrap().get::<_, String>(0), "1000");
    // A migration that prepares the text inside its transaction, after its DDL: a statement of
    // its own with the new columns (the server holds the text's statement from before the
    // DDL), and the statements prepared before stay as they were described.
    let mut other = other;
    let tx = other.transaction().await.unwrap();
    tx.batch_execute("ALTER TABLE prep_ddl ALTER COLUMN a TYPE bigint USING a::bigint").await.unwrap();
    let in_tx = tx.prepare(sql).await.expect("prepared in the migration's transaction");
    assert_eq!(tx.query_one(&in_tx, &[&1i32]).await.unwrap().get::<_, i64>(0), 1000);
    tx.commit().await.unwrap();
    let e = a.query_one(&after, &[&1i32]).await.expect_err("described as text before the migration");
    assert_eq!(db_error(&e).0, "0A000");
}

/// SHOW CLIENTS and SHOW SERVERS count prepared statements as PgBouncer does: a client's
/// `prepared_statements` are the names it holds, a server's the statements pgmux prepared on it.
/// A Close takes the client's name away; the server keeps the statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_and_servers_count_prepared_statements() {
    let mux = Pgmux::start_with(
        Cluster::shared(),
        Setup {
            pgbouncer: &format!("default_pool_size = 1\ncache_unnamed_statements = 0\nadmin_users = {SCRAM_USER}"),
            ..Setup::default()
        },
    );
    let console = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    let counts = || async {
        let of = |what: &'static str| {
            let console = &console;
            async move {
                let rows = crate::harness::show_rows(console, what).await;
                rows.iter()
                    .filter(|r| r["database"] == "app")
                    .map(|r| r["prepared_statements"].parse::<u32>().unwrap())
                    .collect::<Vec<_>>()
            }
        };
        (of("CLIENTS").await, of("SERVERS").await)
    };
    let c = mux.connect(SCRAM_USER, SCRAM_PASS, "app").await.unwrap();
    assert_eq!(counts().await, (vec![0], vec![0]), "nothing prepared yet");
    let one = c.prepare("SELECT 1").await.unwrap();
    let two = c.prepare("SELECT 2").await.unwrap();
    assert_eq!(c.query_one(&one, &[]).await.unwrap().get::<_, i32>(0), 1);
    assert_eq!(c.query_one(&two, &[]).await.unwrap().get::<_, i32>(0), 2);
    assert_eq!(counts().await, (vec![2], vec![2]));
    drop(one);
    // tokio-postgres closes a dropped statement with its next request.
    c.simple_query("SELECT 3").await.unwrap();
    assert_eq!(counts().await, (vec![1], vec![2]), "the server keeps a statement its client closed");
}
