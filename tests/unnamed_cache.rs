//! The unnamed statement served from the servers' caches of named statements
//! (`cache_unnamed_statements`, on by default): PostgreSQL parses and plans a text once per
//! server, whatever client sends it; DDL through pgmux or behind its back; the setting off; and
//! pgbench -M extended (the unnamed statement with parameters) with fewer servers than clients.

use pgmux_protocol::build;

use crate::harness::pgmux::Setup;
use crate::harness::raw::Raw;
use crate::harness::{pgbench_three_statements, Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

/// pgmux with trust auth, one server for `app`, and `extra` settings.
fn one_server(pg: &Cluster, extra: &str) -> Pgmux {
    let conf = format!("auth_type = trust\ndefault_pool_size = 1\nadmin_users = {SCRAM_USER}\n{extra}");
    Pgmux::start_with(
        pg,
        Setup { pgbouncer: &conf, userlist: Some(&format!("\"{SCRAM_USER}\" \"{SCRAM_PASS}\"\n")), ..Setup::default() },
    )
}

/// Table `name` in `app`, made anew with one column `a` and one row (1), owned by scram_user.
fn fresh_table(pg: &Cluster, name: &str) {
    pg.psql(
        "app",
        &format!(
            "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (a int); INSERT INTO {name} VALUES (1); \
             ALTER TABLE {name} OWNER TO scram_user"
        ),
    );
}

/// Schemas `<prefix>_a` and `<prefix>_b` in `app`, made anew, each with a table `t` of other
/// columns: `(a int)` holding 1, and `(a text, b int)` holding ('b', 2).
fn two_schemas(pg: &Cluster, prefix: &str) {
    pg.psql(
        "app",
        &format!(
            "DROP SCHEMA IF EXISTS {p}_a CASCADE; DROP SCHEMA IF EXISTS {p}_b CASCADE; \
             CREATE SCHEMA {p}_a; CREATE SCHEMA {p}_b; \
             CREATE TABLE {p}_a.t (a int); INSERT INTO {p}_a.t VALUES (1); \
             CREATE TABLE {p}_b.t (a text, b int); INSERT INTO {p}_b.t VALUES ('b', 2); \
             GRANT USAGE ON SCHEMA {p}_a, {p}_b TO scram_user; \
             GRANT SELECT ON {p}_a.t, {p}_b.t TO scram_user",
            p = prefix
        ),
    );
}

/// Parse of the unnamed statement, Bind with one text parameter, Describe, Execute, Sync.
async fn run_unnamed(c: &mut Raw, sql: &str, param: Option<&str>) -> Vec<String> {
    c.send(|m| {
        build::parse(m, "", sql);
        let params: Vec<Option<&[u8]>> = param.map(|p| p.as_bytes()).into_iter().map(Some).collect();
        build::bind(m, "", "", &params);
        pgmux_protocol::extended::target_message(m, b'D', b'P', b"");
        build::execute(m, "");
        build::sync(m);
    })
    .await;
    c.until_ready().await
}

/// As postgres.js sends a query: Parse of the unnamed statement, Describe of it, Bind (one text
/// parameter), Execute, Sync, in one write.
pub(crate) async fn run_unnamed_described(c: &mut Raw, sql: &str, param: &str) -> Vec<String> {
    c.send(|m| {
        build::parse(m, "", sql);
        pgmux_protocol::extended::target_message(m, b'D', b'S', b"");
        build::bind(m, "", "", &[Some(param.as_bytes())]);
        build::execute(m, "");
        build::sync(m);
    })
    .await;
    c.until_ready().await
}

/// Runs the named statement `name` of `sql`, parsing it first when `parse`.
async fn run_named(c: &mut Raw, name: &str, sql: &str, parse: bool) -> Vec<String> {
    c.send(|m| {
        if parse {
            build::parse(m, name, sql);
        }
        build::bind(m, "", name, &[]);
        build::execute(m, "");
        build::sync(m);
    })
    .await;
    c.until_ready().await
}

/// The statements prepared on the only server, as pgmux named them.
async fn server_statements(c: &mut Raw) -> Vec<String> {
    c.send(|m| build::query(m, "SELECT statement FROM pg_prepared_statements ORDER BY 1")).await;
    c.until_ready().await.into_iter().filter_map(|s| s.strip_prefix("D:").map(str::to_owned)).collect()
}

/// SHOW STATS counters of the prepared-statement mapping for `app`.
async fn parse_counts(mux: &Pgmux) -> (u64, u64, u64) {
    let admin = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    for m in admin.simple_query("SHOW STATS").await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            if r.get("database") == Some("app") {
                let n = |k: &str| r.get(k).unwrap().parse::<u64>().unwrap();
                return (n("total_client_parse_count"), n("total_server_parse_count"), n("total_bind_count"));
            }
        }
    }
    panic!("no SHOW STATS row for app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_parses_an_unnamed_text_once_whoever_sends_it() {
    let pg = Cluster::shared();
    let mux = one_server(pg, "");
    let (mut a, mut b) = (Raw::connect(&mux).await, Raw::connect(&mux).await);
    for i in 0..5 {
        let n = i.to_string();
        let want = format!("D:{}", i + 1);
        assert_eq!(run_unnamed(&mut a, "SELECT $1::int + 1", Some(&n)).await, ["1", "2", "T", want.as_str(), "C", "Z"]);
        assert_eq!(run_unnamed(&mut b, "SELECT $1::int + 1", Some(&n)).await, ["1", "2", "T", want.as_str(), "C", "Z"]);
    }
    // One statement on the server, by pgmux's name, prepared by a's first Parse.
    let on_server = server_statements(&mut a).await;
    assert_eq!(on_server.len(), 1, "{on_server:?}");
    assert!(on_server[0].contains("SELECT $1::int + 1"), "{on_server:?}");
    assert_eq!(parse_counts(&mux).await, (10, 1, 10));
    // A Describe of the unnamed statement is answered from the cached one.
    a.send(|m| {
        build::parse(m, "", "SELECT $1::int + 1");
        pgmux_protocol::extended::target_message(m, b'D', b'S', b"");
        build::sync(m);
    })
    .await;
    assert_eq!(a.until_ready().await, ["1", "t", "T", "Z"]);
    // The unnamed statement is still the client's own: another text replaces it for a only.
    assert_eq!(run_unnamed(&mut a, "SELECT 'a:' || $1", Some("x")).await, ["1", "2", "T", "D:a:x", "C", "Z"]);
    b.send(|m| {
        build::bind(m, "", "", &[Some(b"41")]);
        build::execute(m, "");
        build::sync(m);
    })
    .await;
    assert_eq!(b.until_ready().await, ["2", "D:42", "C", "Z"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_through_pgmux_makes_cached_statements_prepared_again() {
    let pg = Cluster::shared();
    fresh_table(pg, "cache_ddl");
    let mux = one_server(pg, "");
    let mut c = Raw::connect(&mux).await;
    assert_eq!(run_unnamed(&mut c, "SELECT * FROM cache_ddl", None).await, ["1", "2", "T", "D:1", "C", "Z"]);
    c.send(|m| build::query(m, "ALTER TABLE cache_ddl ADD COLUMN b text DEFAULT 'new'")).await;
    assert_eq!(c.until_ready().await, ["C", "Z"]);
    // PostgreSQL would refuse the old plan (`cached plan must not change result type`): pgmux
    // closed it and prepared the text again, as PostgreSQL does for the unnamed statement.
    assert_eq!(run_unnamed(&mut c, "SELECT * FROM cache_ddl", None).await, ["1", "2", "T", "D:1,new", "C", "Z"]);
    assert_eq!(parse_counts(&mux).await.1, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_behind_pgmux_is_met_by_preparing_the_text_again_unseen() {
    let pg = Cluster::shared();
    fresh_table(pg, "cache_ddl_direct");
    let mux = one_server(pg, "");
    let mut c = Raw::connect(&mux).await;
    let sql = "SELECT * FROM cache_ddl_direct WHERE a = $1";
    let one = Some("1");
    assert_eq!(run_unnamed(&mut c, sql, one).await, ["1", "2", "T", "D:1", "C", "Z"]);
    assert_eq!(run_unnamed(&mut c, sql, one).await, ["1", "2", "T", "D:1", "C", "Z"], "served from the cache");
    assert_eq!(parse_counts(&mux).await, (2, 1, 2));
    // Straight to PostgreSQL: pgmux cannot see it. The server refuses the cached statement
    // (0A000, or 42883 where `a = $1` has no operator for the new type and $1's old one);
    // pgmux prepares the text again and sends the batch again, as PostgreSQL parses an unnamed
    // statement afresh: the client sees the new columns and no error.
    for (i, alter) in ["ADD COLUMN b int DEFAULT 2", "ALTER COLUMN a TYPE text"].into_iter().enumerate() {
        pg.psql("app", &format!("ALTER TABLE cache_ddl_direct {alter}"));
        assert_eq!(run_unnamed(&mut c, sql, one).await, ["1", "2", "T", "D:1,2", "C", "Z"], "{alter}");
        assert_eq!(parse_counts(&mux).await, (3 + i as u64 * 2, 2 + i as u64, 3 + i as u64 * 2), "{alter}");
        assert_eq!(run_unnamed(&mut c, sql, one).await, ["1", "2", "T", "D:1,2", "C", "Z"], "{alter}: cached");
    }
    // The statement described in the batch (postgres.js): PostgreSQL sends its
    // ParameterDescription before it finds the statement stale; pgmux holds it back with the
    // refusal, and the batch sent again describes the statement anew.
    pg.psql("app", "ALTER TABLE cache_ddl_direct ADD COLUMN described int DEFAULT 9");
    assert_eq!(run_unnamed_described(&mut c, sql, "1").await, ["1", "t", "T", "2", "D:1,2,9", "C", "Z"]);
    assert_eq!(run_unnamed_described(&mut c, sql, "1").await, ["1", "t", "T", "2", "D:1,2,9", "C", "Z"], "cached");
    pg.psql("app", "ALTER TABLE cache_ddl_direct DROP COLUMN described");
    // Where the batch cannot be sent again (a second text parsed in it), the ParameterDescription
    // is not held back: the client gets it, then the refusal.
    assert_eq!(run_unnamed_described(&mut c, sql, "1").await, ["1", "t", "T", "2", "D:1,2", "C", "Z"]);
    pg.psql("app", "ALTER TABLE cache_ddl_direct ADD COLUMN second int DEFAULT 6");
    c.send(|m| {
        build::parse(m, "", sql);
        pgmux_protocol::extended::target_message(m, b'D', b'S', b"");
        build::bind(m, "", "", &[Some(b"1")]);
        build::execute(m, "");
        build::parse(m, "", "SELECT 2");
        build::bind(m, "", "", &[]);
        build::execute(m, "");
        build::sync(m);
    })
    .await;
    assert_eq!(c.until_ready().await, ["1", "t", "E:0A000:cached plan must not change result type", "Z"]);
    assert_eq!(run_unnamed_described(&mut c, sql, "1").await, ["1", "t", "T", "2", "D:1,2,6", "C", "Z"]);
    pg.psql("app", "ALTER TABLE cache_ddl_direct DROP COLUMN second");
    // Prepared in a batch of its own, still open (asyncpg with its caches off: Parse, Describe,
    // Flush; Bind, Execute and Sync once it has the columns): the refusal comes before any
    // Sync, so pgmux sends a Sync of its own ahead of the batch sent again.
    pg.psql("app", "ALTER TABLE cache_ddl_direct ADD COLUMN open int DEFAULT 8");
    c.send(|m| {
        build::parse(m, "", sql);
        pgmux_protocol::extended::target_message(m, b'D', b'S', b"");
        m.extend_from_slice(&[b'H', 0, 0, 0, 4]);
    })
    .await;
    assert_eq!(c.until(b'T').await, ["1", "t", "T"], "described with the new columns, no error");
    c.send(|m| {
        build::bind(m, "", "", &[Some(b"1")]);
        build::execute(m, "");
        build::sync(m);
    })
    .await;
    assert_eq!(c.until_ready().await, ["2", "D:1,2,8", "C", "Z"]);
    // A Flush behind the batch's Sync (psycopg's pipeline) asks for nothing: sent again too.
    pg.psql("app", "ALTER TABLE cache_ddl_direct DROP COLUMN open");
    c.send(|m| {
        build::parse(m, "", sql);
        build::bind(m, "", "", &[Some(b"1")]);
        pgmux_protocol::extended::target_message(m, b'D', b'P', b"");
        build::execute(m, "");
        build::sync(m);
        m.extend_from_slice(&[b'H', 0, 0, 0, 4]);
    })
    .await;
    assert_eq!(c.until_ready().await, ["1", "2", "T", "D:1,2", "C", "Z"]);
    // In a transaction block that holds only its BEGIN (psycopg's default, SQLAlchemy's), the
    // refusal aborted nothing of the client's: pgmux rolls the block back, begins it again with
    // the client's own BEGIN, and sends the batch again. The block goes on as the client began it.
    for (alter, row) in [("ADD COLUMN c int DEFAULT 3", "D:1,2,3"), ("ALTER COLUMN a TYPE int USING a::int", "D:1,2,3")]
    {
        pg.psql("app", &format!("ALTER TABLE cache_ddl_direct {alter}"));
        c.send(|m| build::query(m, "begin isolation level repeatable read;")).await;
        assert_eq!(c.until_ready().await, ["C", "Z"]);
        assert_eq!(run_unnamed(&mut c, sql, one).await, ["1", "2", "T", row, "C", "Z"], "{alter}: no error");
        c.send(|m| build::query(m, "SHOW transaction_isolation")).await;
        assert_eq!(c.until_ready().await, ["T", "D:repeatable read", "C", "Z"], "{alter}: the client's BEGIN");
        // No "there is no transaction in progress" notice: the block is still open.
        c.send(|m| build::query(m, "COMMIT")).await;
        assert_eq!(c.until_ready().await, ["C", "Z"], "{alter}");
    }
    // Where more ran in the block before the refused batch, it cannot be sent again (what ran
    // would be lost): the refusal reaches the client, and tells pgmux that the text must be
    // prepared afresh, so the next batch is fine.
    for (alter, refusal) in [
        ("DROP COLUMN c", "E:0A000:cached plan must not change result type"),
        ("ALTER COLUMN a TYPE text", "E:42883:operator does not exist: text = integer"),
    ] {
        pg.psql("app", &format!("ALTER TABLE cache_ddl_direct {alter}"));
        c.send(|m| build::query(m, "BEGIN")).await;
        assert_eq!(c.until_ready().await, ["C", "Z"]);
        c.send(|m| build::query(m, "SELECT 1")).await;
        assert_eq!(c.until_ready().await, ["T", "D:1", "C", "Z"]);
        assert_eq!(run_unnamed(&mut c, sql, one).await, ["1", refusal, "Z"], "{alter}");
        c.send(|m| build::query(m, "ROLLBACK")).await;
        assert_eq!(c.until_ready().await, ["C", "Z"]);
        assert_eq!(run_unnamed(&mut c, sql, one).await, ["1", "2", "T", "D:1,2", "C", "Z"], "{alter}");
    }
}

/// postgres.js's way back after a migration made straight on PostgreSQL: its named statement is
/// refused, and it describes the text again as the unnamed statement. That refusal told pgmux
/// the schema changed, so the unnamed Parse gets a fresh statement, not the refused one of the
/// same text from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_refused_named_statement_the_same_text_unnamed_is_prepared_afresh() {
    let pg = Cluster::shared();
    fresh_table(pg, "cache_ddl_named");
    let mux = one_server(pg, "");
    let mut c = Raw::connect(&mux).await;
    let sql = "SELECT * FROM cache_ddl_named";
    assert_eq!(run_named(&mut c, "js1", sql, true).await, ["1", "2", "D:1", "C", "Z"]);
    let refused = ["E:0A000:cached plan must not change result type", "Z"];
    // Twice: each change is seen afresh by the statement prepared after the one before.
    for (i, (alter, name)) in [("TYPE text", "js2"), ("TYPE int USING a::int", "js3")].into_iter().enumerate() {
        pg.psql("app", &format!("ALTER TABLE cache_ddl_named ALTER COLUMN a {alter}"));
        let old = if i == 0 { "js1" } else { "js2" };
        assert_eq!(run_named(&mut c, old, sql, false).await, refused, "{alter}");
        assert_eq!(run_unnamed(&mut c, sql, None).await, ["1", "2", "T", "D:1", "C", "Z"], "{alter}: no error");
        assert_eq!(run_named(&mut c, name, sql, true).await, ["1", "2", "D:1", "C", "Z"], "{alter}");
    }
}

/// A client that keeps retrying statements that can no longer work (their columns changed, so
/// PostgreSQL refuses them each time) raises the statement epoch once per statement and server,
/// for the change: not at each try, which would make every other client prepare every text
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_refused_statement_raises_the_epoch_once() {
    let pg = Cluster::shared();
    fresh_table(pg, "cache_retry");
    let mux = one_server(pg, "");
    let mut retrier = Raw::connect(&mux).await;
    let mut other = Raw::connect(&mux).await;
    let sql = "SELECT * FROM cache_retry";
    // Two statements the change breaks, retried in turn.
    let sql2 = "SELECT a, 2 FROM cache_retry";
    assert_eq!(run_named(&mut retrier, "doomed", sql, true).await, ["1", "2", "D:1", "C", "Z"]);
    assert_eq!(run_named(&mut retrier, "doomed2", sql2, true).await, ["1", "2", "D:1,2", "C", "Z"]);
    pg.psql("app", "ALTER TABLE cache_retry ALTER COLUMN a TYPE text");
    let refused = ["E:0A000:cached plan must not change result type", "Z"];
    assert_eq!(run_named(&mut retrier, "doomed", sql, false).await, refused);
    assert_eq!(run_named(&mut retrier, "doomed2", sql2, false).await, refused);
    // The other client's text, prepared after the change.
    assert_eq!(run_unnamed(&mut other, "SELECT 42", None).await, ["1", "2", "T", "D:42", "C", "Z"]);
    let (_, parses_before, _) = parse_counts(&mux).await;
    for i in 0..10 {
        assert_eq!(run_named(&mut retrier, "doomed", sql, false).await, refused, "try {i}");
        assert_eq!(run_named(&mut retrier, "doomed2", sql2, false).await, refused, "try {i}");
        assert_eq!(run_unnamed(&mut other, "SELECT 42", None).await, ["1", "2", "T", "D:42", "C", "Z"], "try {i}");
    }
    let (_, parses_after, _) = parse_counts(&mux).await;
    assert_eq!(parses_after, parses_before, "the retries made the other client's text be prepared again");
    // A statement named since is refused for a change of its own: that raises it again.
    assert_eq!(run_named(&mut retrier, "again", sql, true).await, ["1", "2", "D:1", "C", "Z"]);
    pg.psql("app", "ALTER TABLE cache_retry ALTER COLUMN a TYPE int USING a::int");
    assert_eq!(run_named(&mut retrier, "again", sql, false).await, refused);
    assert_eq!(run_unnamed(&mut other, "SELECT 42", None).await, ["1", "2", "T", "D:42", "C", "Z"]);
    let (_, parses_last, _) = parse_counts(&mux).await;
    assert_eq!(parses_last, parses_after + 2, "`again`, and the other text in the new epoch");
    // A parameter's value its type refuses (`'nosuch'::regclass`, 42P01 at Bind) says nothing
    // of the schema: the cached text fails as on a direct connection, and nothing is raised.
    let lookup = "SELECT pg_relation_size($1::regclass)";
    for i in 0..5 {
        let got = run_unnamed(&mut retrier, lookup, Some("nosuch")).await;
        assert_eq!(got, ["1", "E:42P01:relation \"nosuch\" does not exist", "Z"], "try {i}");
        assert_eq!(run_unnamed(&mut other, "SELECT 42", None).await, ["1", "2", "T", "D:42", "C", "Z"], "try {i}");
    }
    let (_, parses_end, _) = parse_counts(&mux).await;
    assert_eq!(parses_end, parses_last + 1, "the lookup's text, once: nothing prepared again");
}

/// The same text means other tables to clients with other search_paths: each gets a statement
/// of its own. Sharing one, PostgreSQL would analyse it again for the other search_path and
/// refuse it (`cached plan must not change result type`: the tables have other columns).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_with_other_search_paths_get_statements_of_their_own() {
    let pg = Cluster::shared();
    two_schemas(pg, "cache_sp");
    let mux = one_server(pg, "");
    let (mut a, mut b, mut plain) = (Raw::connect(&mux).await, Raw::connect(&mux).await, Raw::connect(&mux).await);
    for (c, path) in [(&mut a, "cache_sp_a"), (&mut b, "cache_sp_b")] {
        c.send(|m| build::query(m, &format!("SET search_path = {path}"))).await;
        assert_eq!(c.until_ready().await, ["C", "Z"]);
    }
    for _ in 0..3 {
        assert_eq!(run_unnamed(&mut a, "SELECT * FROM t", None).await, ["1", "2", "T", "D:1", "C", "Z"]);
        assert_eq!(run_unnamed(&mut b, "SELECT * FROM t", None).await, ["1", "2", "T", "D:b,2", "C", "Z"]);
    }
    // One statement per search_path on the one server; a client without a search_path of its
    // own shares the statements of the others like it.
    assert_eq!(server_statements(&mut plain).await.len(), 2);
    for _ in 0..2 {
        run_unnamed(&mut plain, "SELECT 1", None).await;
        run_unnamed(&mut a, "SELECT 1", None).await;
    }
    assert_eq!(server_statements(&mut plain).await.len(), 4);
    // Back to the default: a's statements are those of clients without a search_path.
    a.send(|m| build::query(m, "RESET search_path")).await;
    assert_eq!(a.until_ready().await, ["C", "Z"]);
    run_unnamed(&mut a, "SELECT 1", None).await;
    assert_eq!(server_statements(&mut plain).await.len(), 4);
}

/// A search_path set inside a transaction, or sent in the same batch just before the statement,
/// counts for the statement at once: it is not given the statement prepared under the old
/// search_path, which PostgreSQL would analyse again and refuse (the tables have other columns).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_path_not_yet_settled_counts_for_the_statements_behind_it() {
    let pg = Cluster::shared();
    two_schemas(pg, "cache_tx");
    let mux = one_server(pg, "");
    let mut c = Raw::connect(&mux).await;
    let sql = "SELECT * FROM t";
    // Prepared under cache_tx_b.
    c.send(|m| build::query(m, "SET search_path = cache_tx_b")).await;
    assert_eq!(c.until_ready().await, ["C", "Z"]);
    assert_eq!(run_unnamed(&mut c, sql, None).await, ["1", "2", "T", "D:b,2", "C", "Z"]);
    // In a transaction: the new search_path is not settled until COMMIT, and counts already.
    c.send(|m| build::query(m, "BEGIN; SET search_path = cache_tx_a")).await;
    assert_eq!(c.until_ready().await, ["C", "C", "Z"]);
    assert_eq!(run_unnamed(&mut c, sql, None).await, ["1", "2", "T", "D:1", "C", "Z"]);
    c.send(|m| build::query(m, "COMMIT")).await;
    assert_eq!(c.until_ready().await, ["C", "Z"]);
    assert_eq!(run_unnamed(&mut c, sql, None).await, ["1", "2", "T", "D:1", "C", "Z"]);
    // A SET rolled back leaves the settled one.
    c.send(|m| build::query(m, "BEGIN; SET search_path = cache_tx_b; ROLLBACK")).await;
    assert_eq!(c.until_ready().await, ["C", "C", "C", "Z"]);
    assert_eq!(run_unnamed(&mut c, sql, None).await, ["1", "2", "T", "D:1", "C", "Z"]);
    // The SET and the statement in one batch: the statement is meant under the new one.
    c.send(|m| {
        build::query(m, "SET search_path = cache_tx_b");
        build::parse(m, "", sql);
        build::bind(m, "", "", &[]);
        pgmux_protocol::extended::target_message(m, b'D', b'P', b"");
        build::execute(m, "");
        build::sync(m);
    })
    .await;
    assert_eq!(c.until_ready().await, ["C", "Z"]);
    assert_eq!(c.until_ready().await, ["1", "2", "T", "D:b,2", "C", "Z"]);
    // SET LOCAL, the way to pick a schema per transaction under transaction pooling: it counts
    // while its transaction lasts, and the settled search_path after.
    c.send(|m| build::query(m, "BEGIN; SET LOCAL search_path = cache_tx_a")).await;
    assert_eq!(c.until_ready().await, ["C", "C", "Z"]);
    assert_eq!(run_unnamed(&mut c, sql, None).await, ["1", "2", "T", "D:1", "C", "Z"]);
    c.send(|m| build::query(m, "COMMIT")).await;
    assert_eq!(c.until_ready().await, ["C", "Z"]);
    assert_eq!(run_unnamed(&mut c, sql, None).await, ["1", "2", "T", "D:b,2", "C", "Z"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_cache_off_the_unnamed_statement_goes_to_postgres_as_sent() {
    let pg = Cluster::shared();
    let mux = one_server(pg, "cache_unnamed_statements = 0");
    let mut c = Raw::connect(&mux).await;
    for _ in 0..3 {
        assert_eq!(run_unnamed(&mut c, "SELECT $1::int * 3", Some("2")).await, ["1", "2", "T", "D:6", "C", "Z"]);
    }
    assert!(server_statements(&mut c).await.is_empty());
    assert_eq!(parse_counts(&mux).await, (0, 0, 0));
    // Switched on from the console: the next transaction uses the cache.
    let admin = mux.connect(SCRAM_USER, SCRAM_PASS, "pgbouncer").await.unwrap();
    admin.simple_query("SET cache_unnamed_statements = 1").await.unwrap();
    for _ in 0..3 {
        assert_eq!(run_unnamed(&mut c, "SELECT $1::int * 3", Some("2")).await, ["1", "2", "T", "D:6", "C", "Z"]);
    }
    assert_eq!(server_statements(&mut c).await.len(), 1);
    assert_eq!(parse_counts(&mux).await, (3, 1, 3));
}

#[test]
fn pgbench_extended_with_fewer_servers_than_clients_parses_each_text_once_per_server() {
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, "default_pool_size = 2\nmax_client_conn = 100\nadmin_users = scram_user");
    pgbench_three_statements(mux.port, "extended");
    let (client, server, binds) = tokio::runtime::Runtime::new().unwrap().block_on(parse_counts(&mux));
    assert_eq!((client, binds), (2400, 2400));
    assert!((3..=6).contains(&server), "three texts on at most two servers, got {server}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_larger_than_a_read_stream_through_with_statements_tracked() {
    let pg = Cluster::shared();
    let mux = one_server(pg, "");
    let mut c = Raw::connect(&mux).await;
    for _ in 0..3 {
        let got = run_unnamed(&mut c, "SELECT length(repeat('x', $1::int))", Some("300000")).await;
        assert_eq!(got, ["1", "2", "T", "D:300000", "C", "Z"]);
        c.send(|m| build::query(m, "SELECT repeat('y', 300000) AS big, 'after'")).await;
        let got = c.until_ready().await;
        assert_eq!(got.len(), 4, "T, D, C, Z");
        assert!(got[1].ends_with("yyyy,after"), "{}", &got[1][got[1].len() - 20..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_pipelined_before_a_cached_text_is_seen_by_it() {
    let pg = Cluster::shared();
    fresh_table(pg, "cache_pipe");
    let mux = one_server(pg, "");
    let mut c = Raw::connect(&mux).await;
    let sql = "SELECT * FROM cache_pipe";
    assert_eq!(run_unnamed(&mut c, sql, None).await, ["1", "2", "T", "D:1", "C", "Z"]);
    // The DDL and the cached text in one pipeline: PostgreSQL analyses the second Parse after
    // the ALTER ran, so pgmux must not answer it from the cache.
    c.send(|m| {
        build::parse(m, "", "ALTER TABLE cache_pipe ADD COLUMN b int DEFAULT 5");
        build::bind(m, "", "", &[]);
        build::execute(m, "");
        build::parse(m, "", sql);
        build::bind(m, "", "", &[]);
        pgmux_protocol::extended::target_message(m, b'D', b'P', b"");
        build::execute(m, "");
        build::sync(m);
    })
    .await;
    assert_eq!(c.until_ready().await, ["1", "2", "C", "1", "2", "T", "D:1,5", "C", "Z"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_in_a_transaction_invalidates_when_it_commits() {
    let pg = Cluster::shared();
    fresh_table(pg, "cache_tx");
    let mux = one_server(pg, "");
    let mut c = Raw::connect(&mux).await;
    let sql = "SELECT * FROM cache_tx";
    assert_eq!(run_unnamed(&mut c, sql, None).await, ["1", "2", "T", "D:1", "C", "Z"]);
    c.send(|m| build::query(m, "BEGIN; ALTER TABLE cache_tx ADD COLUMN b int DEFAULT 7")).await;
    assert_eq!(c.until_ready().await, ["C", "C", "Z"]);
    c.send(|m| build::query(m, "COMMIT")).await;
    assert_eq!(c.until_ready().await, ["C", "Z"]);
    // The transaction's end raised the epoch: the text is prepared again, no error.
    assert_eq!(run_unnamed(&mut c, sql, None).await, ["1", "2", "T", "D:1,7", "C", "Z"]);
}

/// pgbench -M extended (one batch per query, outside transaction blocks) in rounds, with a
/// column added or dropped straight on PostgreSQL between them: each round meets statements the
/// servers prepared in the round before, now of another shape, and no transaction fails.
#[test]
fn pgbench_extended_runs_through_migrations_made_behind_pgmux() {
    let pg = Cluster::shared();
    fresh_table(pg, "cache_ddl_pgbench");
    let mux = Pgmux::start(pg, "default_pool_size = 2\nmax_client_conn = 100\nadmin_users = scram_user");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("select.sql");
    std::fs::write(&script, "\\set a random(1, 3)\nSELECT * FROM cache_ddl_pgbench WHERE a <= :a;\n").unwrap();
    // A column added and dropped (0A000), `a` retyped under `a <= $1` (42883).
    let alters = ["ADD COLUMN b int DEFAULT 2", "ALTER COLUMN a TYPE text", "DROP COLUMN b", "ADD COLUMN c text"];
    for (round, alter) in std::iter::once(None).chain(alters.map(Some)).enumerate() {
        if let Some(alter) = alter {
            pg.psql("app", &format!("ALTER TABLE cache_ddl_pgbench {alter}"));
        }
        let out = crate::harness::run(
            std::process::Command::new("pgbench")
                .args(["-h", "127.0.0.1", "-p", &mux.port.to_string(), "-U", SCRAM_USER, "-n", "-M", "extended"])
                .args(["-c", "4", "-j", "2", "-t", "50", "-f"])
                .arg(&script)
                .arg("app")
                .env("PGPASSWORD", SCRAM_PASS),
        );
        assert!(out.contains("number of transactions actually processed: 200/200"), "round {round}: {out}");
        assert!(out.contains("number of failed transactions: 0 "), "round {round}: {out}");
    }
    // Each change made the servers' statements stale: the text was prepared afresh after each
    // (on each of at most two servers, twice where both servers' refusals raised the epoch).
    let (_, server, _) = tokio::runtime::Runtime::new().unwrap().block_on(parse_counts(&mux));
    assert!((5..=18).contains(&server), "one text, five shapes, at most two servers: {server} Parses");
}

/// JDBC with autocommit off sends its BEGIN in the same batch as the block's first query
/// (Parse, Bind, Execute of BEGIN, then the query's Parse, Bind, Describe, Execute, Sync). The
/// query's Parse comes behind requests in flight, so it goes to the server as it came and
/// PostgreSQL analyses it afresh: a migration made straight on PostgreSQL costs that batch no
/// error, though the same text was served from the cache before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_behind_its_begin_in_one_batch_meets_a_migration_unseen() {
    let pg = Cluster::shared();
    fresh_table(pg, "cache_ddl_jdbc");
    let mux = one_server(pg, "");
    let mut c = Raw::connect(&mux).await;
    let sql = "SELECT * FROM cache_ddl_jdbc WHERE a = $1";
    let jdbc_block = |m: &mut bytes::BytesMut| {
        build::parse(m, "", "BEGIN");
        build::bind(m, "", "", &[]);
        build::execute(m, "");
        build::parse(m, "", sql);
        build::bind(m, "", "", &[Some(b"1")]);
        pgmux_protocol::extended::target_message(m, b'D', b'P', b"");
        build::execute(m, "");
        build::sync(m);
    };
    for _ in 0..2 {
        assert_eq!(run_unnamed(&mut c, sql, Some("1")).await, ["1", "2", "T", "D:1", "C", "Z"]);
    }
    pg.psql("app", "ALTER TABLE cache_ddl_jdbc ADD COLUMN b int DEFAULT 2");
    c.send(jdbc_block).await;
    assert_eq!(c.until_ready().await, ["1", "2", "C", "1", "2", "T", "D:1,2", "C", "Z"]);
    c.send(|m| build::query(m, "COMMIT")).await;
    assert_eq!(c.until_ready().await, ["C", "Z"]);
    assert_eq!(run_unnamed(&mut c, sql, Some("1")).await, ["1", "2", "T", "D:1,2", "C", "Z"], "out of the block");
}
