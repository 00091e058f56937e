//! Real drivers other than Rust's, through pgmux: psycopg 3 and asyncpg, the Python drivers
//! most PgBouncer users run, node-postgres and postgres.js, the Node.js ones, and PgJDBC, each a script
//! in tests/drivers/ that asserts what it reads and exits non-zero otherwise. A `.py` script
//! runs with `PGMUX_TEST_PYTHON`, a virtualenv with both Python drivers that scripts/test.sh
//! makes (from PyPI); a `.js` one with `node`, its modules found through NODE_PATH set to
//! `PGMUX_TEST_NODE_PATH`, the node_modules that scripts/test.sh installs from
//! tests/drivers/package-lock.json (from npm); a `.java` one with `java` and PgJDBC, the jar
//! `PGMUX_TEST_JDBC_JAR` names (Debian's package). Without the variable a test says so and passes,
//! so that `cargo test` works on a machine without Python, Node.js or Java.

use std::path::Path;
use std::process::Command;

use crate::harness::{Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

/// Runs `tests/drivers/<script>` against pgmux (transaction mode, `pool_size` servers) and
/// PostgreSQL straight, on table `table`; returns its output. The interpreter is chosen by the
/// script's extension.
fn run_script(script: &str, pool_size: u32, table: &str) -> Option<String> {
    run_script_with(script, &format!("default_pool_size = {pool_size}"), table)
}

/// As [`run_script`], with `pgbouncer` as the `[pgbouncer]` settings.
fn run_script_with(script: &str, pgbouncer: &str, table: &str) -> Option<String> {
    let kind = script.rsplit_once('.').map_or("", |(_, ext)| ext);
    let var = match kind {
        "js" => "PGMUX_TEST_NODE_PATH",
        "java" => "PGMUX_TEST_JDBC_JAR",
        _ => "PGMUX_TEST_PYTHON",
    };
    let Some(value) = std::env::var_os(var) else {
        eprintln!("{var} is not set (scripts/test.sh sets it): {script} not run");
        return None;
    };
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, pgbouncer);
    let mux_dsn = format!("postgresql://{SCRAM_USER}:{SCRAM_PASS}@127.0.0.1:{}/app", mux.port);
    let direct_dsn = format!("postgresql://postgres@/app?host={}&port={}", pg.socket_dir.display(), pg.port);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers").join(script);
    let mut command = Command::new("timeout");
    command.arg("120");
    match kind {
        "js" => command.arg("node").env("NODE_PATH", &value),
        // A single-file program, compiled in memory (Java 11+).
        "java" => command.arg("java").arg("-cp").arg(&value),
        _ => command.arg(&value),
    };
    command.arg(&path).args([&mux_dsn, &direct_dsn, table]);
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed ({}):\n{stdout}\n{stderr}", out.status);
    Some(stdout.into_owned())
}

#[test]
fn psycopg_unnamed_statements_run_through_migrations_made_straight_on_postgres() {
    for (pool_size, table) in [(1, "drv_psycopg_1"), (3, "drv_psycopg_3")] {
        if let Some(out) = run_script("psycopg_ddl_behind.py", pool_size, table) {
            let want = "ok psycopg: 12 runs across 4 migrations, no error; 2 pipelines, no error; 2 blocks, no error";
            assert!(out.contains(want), "pool {pool_size}: {out}");
        }
    }
}

#[test]
fn asyncpg_reads_every_value_as_its_column_is_typed_now() {
    for (pool_size, table) in [(1, "drv_asyncpg_1"), (3, "drv_asyncpg_3")] {
        if let Some(out) = run_script("asyncpg_types.py", pool_size, table) {
            assert!(
                out.contains("ok asyncpg: 4 type changes, every value as its column's type, cached or not"),
                "pool {pool_size}: {out}"
            );
        }
    }
}

#[test]
fn node_postgres_queries_run_through_migrations_made_straight_on_postgres() {
    for (pool_size, table) in [(1, "drv_node_pg_1"), (3, "drv_node_pg_3")] {
        if let Some(out) = run_script("node_pg_ddl_behind.js", pool_size, table) {
            assert!(out.contains("ok node-postgres: 12 runs across 4 migrations, no error"), "pool {pool_size}: {out}");
        }
    }
}

#[test]
fn postgres_js_reads_every_value_as_its_column_is_typed_now() {
    for (pool_size, table) in [(1, "drv_postgres_js_1"), (3, "drv_postgres_js_3")] {
        if let Some(out) = run_script("postgres_js_types.js", pool_size, table) {
            assert!(out.contains("ok postgres.js: 4 type changes"), "pool {pool_size}: {out}");
            // The unnamed statement, described in the batch that runs it: no error after DDL
            // made straight on PostgreSQL, as direct.
            assert!(
                out.contains("prepare: false: 45 runs, 0 error(s) through pgmux as 0 direct"),
                "pool {pool_size}: {out}"
            );
        }
    }
}

#[test]
fn pgjdbc_named_statements_batches_and_cursors_in_transaction_and_session_modes() {
    // PgJDBC sends extra_float_digits at login: PgBouncer users list it in
    // ignore_startup_parameters, as here. 20 statements per server: the test's 62 distinct
    // ones are evicted and prepared again.
    // In session mode with 2 servers, two connections wait for the first two to leave and get
    // their servers after the reset (DISCARD ALL): their own `S_1` is not there any more.
    for (mode, pool_size, table) in
        [("transaction", 1, "drv_jdbc_1"), ("transaction", 3, "drv_jdbc_3"), ("session", 2, "drv_jdbc_s")]
    {
        let ini = format!(
            "pool_mode = {mode}\ndefault_pool_size = {pool_size}\n\
             ignore_startup_parameters = extra_float_digits\nmax_prepared_statements = 20"
        );
        if let Some(out) = run_script_with("jdbc_transaction_mode.java", &ini, table) {
            let want = "ok jdbc: 1000 rows in one batch, 600 transactions on 4 connections, \
                        a cursor read of 1000 rows in fetches of 50, a query timeout canceled";
            assert!(out.contains(want), "{mode} pool {pool_size}: {out}");
        }
    }
}
