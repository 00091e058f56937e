//! Real drivers other than Rust's, through pgmux: psycopg 3 and asyncpg, the Python drivers
//! most PgBouncer users run, and node-postgres and postgres.js, the Node.js ones, each a script
//! in tests/drivers/ that asserts what it reads and exits non-zero otherwise. A `.py` script
//! runs with `PGMUX_TEST_PYTHON`, a virtualenv with both Python drivers that scripts/test.sh
//! makes (from PyPI); a `.js` one with `node`, its modules found through NODE_PATH set to
//! `PGMUX_TEST_NODE_PATH`, the node_modules that scripts/test.sh installs from
//! tests/drivers/package-lock.json (from npm). Without the variable a test says so and passes,
//! so that `cargo test` works on a machine without Python or Node.js.

use std::path::Path;
use std::process::Command;

use crate::harness::{Cluster, Pgmux, SCRAM_PASS, SCRAM_USER};

/// Runs `tests/drivers/<script>` against pgmux (transaction mode, `pool_size` servers) and
/// PostgreSQL straight, on table `table`; returns its output. The interpreter is chosen by the
/// script's extension.
fn run_script(script: &str, pool_size: u32, table: &str) -> Option<String> {
    let js = script.ends_with(".js");
    let var = if js { "PGMUX_TEST_NODE_PATH" } else { "PGMUX_TEST_PYTHON" };
    let Some(value) = std::env::var_os(var) else {
        eprintln!("{var} is not set (scripts/test.sh sets it): {script} not run");
        return None;
    };
    let pg = Cluster::shared();
    let mux = Pgmux::start(pg, &format!("default_pool_size = {pool_size}"));
    let mux_dsn = format!("postgresql://{SCRAM_USER}:{SCRAM_PASS}@127.0.0.1:{}/app", mux.port);
    let direct_dsn = format!("postgresql://postgres@/app?host={}&port={}", pg.socket_dir.display(), pg.port);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers").join(script);
    let mut command = Command::new("timeout");
    command.arg("120");
    if js {
        command.arg("node").env("NODE_PATH", &value);
    } else {
        command.arg(&value);
    }
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
